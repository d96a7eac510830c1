"""The classical rows of the mini table: each fills exactly the mask it is given (the pipeline's dilation
of the object's mask) and nothing else; Telea continues a smooth surround into the hole."""

import numpy as np
import pytest

from clipaway_jax.mini.baselines import CLASSICAL, dilated, fill


@pytest.fixture
def scene():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:48]
    image = np.stack([4 * x, 4 * y, np.full_like(x, 90)], -1).astype(np.uint8)  # a smooth ramp
    mask = (x - 24) ** 2 + (y - 20) ** 2 < 36
    painted = image.copy()
    painted[mask] = rng.integers(0, 256, (mask.sum(), 3))  # an "object" of noise
    return image, painted, mask


@pytest.mark.parametrize("method", CLASSICAL)
def test_only_the_mask_changes(scene, method):
    _, painted, mask = scene
    out = fill(method, painted, mask)
    assert out.dtype == np.uint8 and out.shape == painted.shape
    np.testing.assert_array_equal(out[~mask], painted[~mask])


def test_telea_and_ns_recover_a_smooth_surround_better_than_a_flat_fill(scene):
    image, painted, mask = scene
    error = {m: np.abs(fill(m, painted, mask).astype(float) - image)[mask].mean() for m in CLASSICAL}
    assert error["OpenCV Telea"] < 6 and error["OpenCV NS"] < 6, error
    assert error["flat fill (ring mean)"] < error["do nothing"]
    assert error["OpenCV Telea"] < error["flat fill (ring mean)"]


def test_the_dilation_is_the_pipelines():
    import jax.numpy as jnp

    from clipaway_jax.pipelines.images import dilate

    mask = (np.random.default_rng(1).random((40, 40)) > 0.97).astype(np.float32)
    expected = np.asarray(dilate(jnp.asarray(mask[None]), 5, 2))[0] >= 0.5
    np.testing.assert_array_equal(dilated(mask, 5, 2), expected)
