"""CLIPAway's MLP, projection block and focused embeddings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from fixtures import TINY_MLP, alpha_clip_reference, assert_close, numpy_state, torch_mlp

from clipaway_jax.convert.networks import alpha_clip_config, convert_alpha_clip, convert_mlp
from clipaway_jax.models import (
    CLIPAwayMLP,
    CLIPVisionTransformer,
    MLPConfig,
    focused_embeddings,
    projection_block,
)
from clipaway_jax.preprocess import alpha_clip_inputs


def test_mlp_equals_torch_sequential():
    reference = torch_mlp()
    state = numpy_state(reference)
    assert sorted({int(k.split(".")[0]) for k in state}) == [0, 1, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16, 18]
    config = MLPConfig(**TINY_MLP)
    params = convert_mlp(state, config)
    x = np.random.RandomState(0).randn(5, TINY_MLP["alpha_clip_embed_dim"]).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    assert_close(CLIPAwayMLP(config).apply({"params": params}, x), expected, "mlp")


def test_published_mlp_widths():
    assert MLPConfig().widths() == [(768, 768)] * 3 + [(768, 1024)] + [(1024, 1024)] * 2


def _projection_reference(b, f):
    b, f = b.astype(np.float64), f.astype(np.float64)
    return b - (np.sum(b * f, -1, keepdims=True) / np.sum(f * f, -1, keepdims=True)) * f


@pytest.mark.parametrize("batch", [1, 8])
def test_projection_block_per_row(batch):
    rng = np.random.RandomState(batch)
    b, f = rng.randn(batch, 1024).astype(np.float32), rng.randn(batch, 1024).astype(np.float32)
    e = np.asarray(projection_block(b, f), np.float64)
    np.testing.assert_allclose(e, _projection_reference(b, f), atol=1e-5)
    cosine = np.abs(np.sum(e * f, -1)) / (np.linalg.norm(e, axis=-1) * np.linalg.norm(f, axis=-1))
    assert cosine.max() < 1e-5


def test_projection_block_zero_focus_returns_background():
    b = np.random.RandomState(0).randn(3, 16).astype(np.float32)
    f = np.random.RandomState(1).randn(3, 16).astype(np.float32)
    f[1] = 0.0
    e = np.asarray(projection_block(b, f))
    assert np.isfinite(e).all()
    np.testing.assert_array_equal(e[1], b[1])
    grads = jax.grad(lambda f: projection_block(jnp.asarray(b), f).sum())(jnp.asarray(f))
    assert np.isfinite(np.asarray(grads)).all()


def test_alpha_inputs_are_cropped_like_the_image():
    """A mask that marks the left third of a wide image: after the centre crop it must still mark the
    same pixels as the image's own left-third content (the original's square resize would not)."""
    images = np.zeros((1, 56, 112, 3), np.float32)
    images[:, :, :40] = 1.0
    masks = (images[..., 0] > 0.5).astype(np.float32)
    pixels, alpha = alpha_clip_inputs(images, masks, size=28)
    bright = np.asarray(pixels)[0, :, :, 0] > 0
    marked = np.asarray(alpha)[0, :, :, 0] > 0
    assert (bright == marked).mean() > 0.95
    assert np.isclose(float(np.asarray(alpha).max()), 0.5 / 0.26, atol=1e-4)


def test_focused_embeddings_equal_two_reference_calls():
    reference = alpha_clip_reference(resolution=28)
    state = numpy_state(reference)
    config = alpha_clip_config(state)
    params = {"params": convert_alpha_clip(state, config)}
    rng = np.random.RandomState(0)
    images = rng.rand(2, 28, 28, 3).astype(np.float32)
    masks = np.zeros((2, 28, 28), np.float32)
    masks[0, 5:20, 3:15], masks[1, 10:27, 10:27] = 1.0, 1.0

    e_f, e_b = jax.jit(focused_embeddings, static_argnums=0)(CLIPVisionTransformer(config), params, images, masks)
    pixels, alpha = alpha_clip_inputs(images, masks, 28)
    _, inverted = alpha_clip_inputs(images, 1 - masks, 28)
    to_torch = lambda x: torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        ref_f = reference(to_torch(pixels), to_torch(alpha)).numpy()
        ref_b = reference(to_torch(pixels), to_torch(inverted)).numpy()
    assert_close(e_f, ref_f, "e_f")
    assert_close(e_b, ref_b, "e_b")
    assert np.abs(ref_f - ref_b).max() > 1e-2
