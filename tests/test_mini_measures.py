"""The mini world's removal measures on the shipped model: "object painted in?" (AlphaCLIP with alpha =
the mask over object and background classes) and the zero-shot accuracy of the masked region."""

import numpy as np
import pytest

from clipaway_jax.mini import shipped

SCENES = 40


@pytest.fixture(scope="module")
def scenes():
    picked = [scene for _, scene in shipped.test_scenes(SCENES)]
    images = np.stack([s.image for s in picked]).astype(np.float32) / 255.0
    truths = np.stack([s.background for s in picked]).astype(np.float32) / 255.0
    masks = np.stack([s.mask >= 128 for s in picked]).astype(np.float32)
    return images, truths, masks, [s.caption for s in picked]


@pytest.fixture(scope="module")
def checkpoint():
    from clipaway_jax.checkpoint import load_checkpoint

    return load_checkpoint(shipped.SHIPPED, networks=["alpha_clip", "clip_text"])


def test_the_untouched_source_reads_as_painted_in(scenes, checkpoint):
    from clipaway_jax.mini.measures import PaintedIn

    images, _, masks, _ = scenes
    assert PaintedIn(checkpoint, batch=16)(images, masks).mean() >= 0.95


@pytest.mark.xfail(strict=True, reason="issue #25: this AlphaCLIP reads the ground truth as removed in 79% of "
                   "500 validation scenes (background pairs in its training; 58% without): not yet 95%")  # fmt: skip
def test_the_ground_truth_reads_as_removed(scenes, checkpoint):
    from clipaway_jax.mini.measures import PaintedIn

    _, truths, masks, _ = scenes
    assert (~PaintedIn(checkpoint, batch=16)(truths, masks)).mean() >= 0.95


def test_zero_shot_accuracy_of_the_masked_region(scenes, checkpoint):
    from clipaway_jax.mini.measures import zero_shot_accuracy
    from clipaway_jax.pipelines.describe import RegionDescriber

    images, _, masks, captions = scenes
    accuracy = zero_shot_accuracy(RegionDescriber(checkpoint), images, masks, captions, batch=16)
    assert set(accuracy) == {"class", "colour", "shape"} and accuracy["class"] <= accuracy["shape"]
    assert accuracy["colour"] >= 90  # measured 99.4% on 500 validation scenes (shape 14%: issue #25)
