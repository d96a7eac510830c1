"""Behaviour of the shipped mini model through the whole stack (`infer`, then `eval` with the mini
AlphaCLIP as the metric CLIP): on 8 fixed held-out test scenes the target is removed (CLIP@1) in at
least 6, and the result inside the mask is close to the ground truth. A change anywhere in loading,
the networks, the sampler, guidance or the metrics that breaks the trained model's outputs fails here.

Thresholds come from the measured figures (model card, clipaway_jax/assets/mini/README.md) with a margin.
"""

import csv

import numpy as np
import pytest
from PIL import Image

from clipaway_jax.cli import main as cli_main
from clipaway_jax.mini import shipped

SCENES = 8
# Measured 6 of 8 with the checkpoint's defaults (paste-back, guidance 4), and at guidance 7.5 (7 of 8 without
# paste-back: scene 21004's fill, the same inside the mask, reads as the target once its surroundings are the
# input's own pixels again).
MIN_REMOVED = 6
MIN_PSNR_MASK = 8.5  # dB, mean over the 8 scenes; measured 10.5 (float32, this CPU; 10.2 at guidance 7.5)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    assert shipped.available(), f"the shipped mini model is missing from {shipped.SHIPPED}"
    root = tmp_path_factory.mktemp("mini-model")
    images, masks, truth = (root / name for name in ("images", "masks", "truth"))
    for folder in (images, masks, truth):
        folder.mkdir()
    rows = [("name", "class", "x", "y", "w", "h")]
    for name, scene in shipped.test_scenes(SCENES):
        Image.fromarray(scene.image).save(images / f"{name}.png")
        Image.fromarray(scene.mask).save(masks / f"{name}.png")
        Image.fromarray(scene.background).save(truth / f"{name}.png")
        rows.append((name, scene.caption.split(" ", 1)[1], *scene.box))
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    inputs = ["--images", str(images), "--masks", str(masks)]
    assert cli_main(["infer", *inputs, "--out", str(root / "results"), "--per-device-batch", "8",
                     "--cache-dir", ""]) == 0  # fmt: skip
    assert cli_main(["eval", "--results", str(root / "results"), *inputs, "--ground-truth", str(truth),
                     "--labels", str(root / "labels.csv"), "--out", str(root / "eval")]) == 0  # fmt: skip
    with open(root / "eval" / "per_image.csv", newline="") as f:
        return root, list(csv.DictReader(f))


def test_the_target_is_removed_in_at_least_6_of_8_test_scenes(evaluated):
    _, rows = evaluated
    removed = [r["name"] for r in rows if r["removed@1"] == "True"]
    assert len(rows) == SCENES and len(removed) >= MIN_REMOVED, rows


def test_the_mask_is_filled_close_to_the_ground_truth(evaluated):
    _, rows = evaluated
    psnr = np.mean([float(r["psnr_mask"]) for r in rows])
    assert psnr > MIN_PSNR_MASK, psnr
