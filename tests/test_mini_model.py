"""Behaviour of the shipped mini model through the whole stack (`infer`, then `eval` with the mini
AlphaCLIP as the metric CLIP), on 8 fixed held-out test scenes with the checkpoint's own defaults: the
"object painted in?" measure (clipaway_jax/mini/measures.py) reads the untouched sources as painted in
and the results as removed, and inside the mask the fill comes close to OpenCV Telea's on the same
scenes. A change anywhere in loading, the networks, the sampler, guidance or the metrics that breaks the
trained model's outputs fails here.

Thresholds come from the measured figures (model card, clipaway_jax/assets/mini/README.md) with a margin.
"""

import csv

import numpy as np
import pytest
from PIL import Image

from clipaway_jax.cli import main as cli_main
from clipaway_jax.mini import shipped

SCENES = 8
# Measured with the checkpoint's defaults (the mask as drawn, no dilation; paste-back with the seamless
# colour shift, guidance 1.5), float32 on this CPU, the set shipped 2026-12-07 with the decoder stage: inside
# the mask 17.63 dB against Telea's 17.99 (with the mask dilated by 2 px, as before 2026-12-08: 16.21; the
# set before the decoder stage: 16.36, without the seamless shift 15.14; the 8000-step set: 14.43 dB; the
# set before the first retrain: 10.52 dB, 7.5 dB below); 7 of 8 read as removed, all 5 where the ground
# truth itself reads as removed (the other 3: objects under the target, which the ground truth shows; one
# of them the fill continues and then reads as painted in); the 8 sources all painted in.
MIN_REMOVED_WHERE_BARE = 4  # of the scenes where the ground truth reads as removed (5 here)
MIN_SOURCE_PAINTED = 7
MIN_PSNR_MASK = 16.8  # dB, mean over the 8 scenes
MAX_BELOW_TELEA = 1.0  # dB: Telea's mean PSNR inside the mask minus ours


def load(folder, names):
    from clipaway_jax.pipelines.images import read_image

    return np.stack([read_image(folder / f"{n}.png") for n in names])


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    assert shipped.available(), f"the shipped mini model is missing from {shipped.SHIPPED}"
    root = tmp_path_factory.mktemp("mini-model")
    images, masks, truth = (root / name for name in ("images", "masks", "truth"))
    for folder in (images, masks, truth):
        folder.mkdir()
    rows = [("name", "class", "x", "y", "w", "h")]
    scenes = shipped.test_scenes(SCENES)
    for name, scene in scenes:
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
        return root, dict(scenes), list(csv.DictReader(f))


@pytest.fixture(scope="module")
def painted_in():
    from clipaway_jax.checkpoint import load_checkpoint
    from clipaway_jax.mini.measures import PaintedIn

    return PaintedIn(load_checkpoint(shipped.SHIPPED, networks=["alpha_clip", "clip_text"]))


def test_the_measure_reads_the_sources_as_painted_in_and_the_results_as_removed(evaluated, painted_in):
    root, scenes, _ = evaluated
    names = sorted(scenes)
    masks = np.stack([scenes[n].mask >= 128 for n in names]).astype(np.float32)
    source = painted_in(np.stack([scenes[n].image for n in names]) / 255.0, masks)
    truth = painted_in(np.stack([scenes[n].background for n in names]) / 255.0, masks)
    result = painted_in(load(root / "results", names), masks)
    print(f"painted in: sources {source.sum()} of {len(names)}, ground truths {truth.sum()}, results {result.sum()};"
          f" removed where the ground truth reads as removed: {(~result[~truth]).sum()} of {(~truth).sum()}")
    assert source.sum() >= MIN_SOURCE_PAINTED, dict(zip(names, source, strict=True))
    assert (~result).sum() >= (~truth).sum(), "the fills read as removed at least as often as the ground truth"
    assert (~result[~truth]).sum() >= MIN_REMOVED_WHERE_BARE, dict(zip(names, result, strict=True))


def test_the_mask_is_filled_close_to_classical_inpainting(evaluated):
    from clipaway_jax.eval.stats import psnr
    from clipaway_jax.mini.baselines import fill

    _, scenes, rows = evaluated
    assert len(rows) == SCENES, rows
    ours = np.mean([float(r["psnr_mask"]) for r in rows])
    telea = []
    for scene in scenes.values():
        hole = scene.mask >= 128
        filled = fill("OpenCV Telea", scene.image, hole) / 255.0
        telea.append(psnr(filled, scene.background / 255.0, hole))  # as `eval` scores psnr_mask
    print(f"inside the mask: {ours:.2f} dB, OpenCV Telea {np.mean(telea):.2f}")
    assert ours > MIN_PSNR_MASK and np.mean(telea) - ours < MAX_BELOW_TELEA, (ours, np.mean(telea))
