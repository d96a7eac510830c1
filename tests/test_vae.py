"""The Flax AutoencoderKL equals diffusers' on the same weights."""

import jax
import numpy as np
import pytest
import torch
from fixtures import assert_close, nchw, nhwc, numpy_state, torch_vae

from clipaway_jax import xla
from clipaway_jax.convert.networks import convert_vae
from clipaway_jax.models import AutoencoderKL, VAEConfig


def _pair(vae):
    config = VAEConfig.from_dict(dict(vae.config))
    return AutoencoderKL(config), {"params": convert_vae(numpy_state(vae), config)}


@pytest.fixture(scope="module")
def vae():
    return torch_vae()


def test_encode_equals_diffusers(vae):
    model, params = _pair(vae)
    images = np.random.RandomState(0).uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        dist = vae.encode(torch.from_numpy(images)).latent_dist
    posterior = xla.jit(lambda p, x: model.apply(p, x, method="encode"))(params, nhwc(images))
    assert_close(nchw(posterior.mean), dist.mean.numpy(), "vae mean")
    assert_close(nchw(posterior.logvar), dist.logvar.numpy(), "vae logvar")


def test_decode_equals_diffusers(vae):
    model, params = _pair(vae)
    latents = np.random.RandomState(1).randn(2, 4, 4, 4).astype(np.float32)
    with torch.no_grad():
        expected = vae.decode(torch.from_numpy(latents)).sample.numpy()
    out = xla.jit(lambda p, z: model.apply(p, z, method="decode"))(params, nhwc(latents))
    assert_close(nchw(out), expected, "vae decode")


def test_sampling_uses_mean_and_std():
    mean, logvar = np.zeros((1, 2, 2, 4), np.float32), np.full((1, 2, 2, 4), np.log(4.0), np.float32)
    from clipaway_jax.models.vae import DiagonalGaussian

    samples = DiagonalGaussian(mean, logvar).sample(jax.random.key(0))
    noise = jax.random.normal(jax.random.key(0), mean.shape)
    np.testing.assert_allclose(samples, 2.0 * noise, rtol=1e-6)


@pytest.mark.slow
def test_full_size_vae_equals_diffusers():
    from diffusers import AutoencoderKL as TorchVAE

    torch.manual_seed(0)
    vae = TorchVAE(**VAEConfig().to_dict()).eval()
    model, params = _pair(vae)
    images = np.random.RandomState(0).uniform(-1, 1, (1, 3, 256, 256)).astype(np.float32)
    latents = np.random.RandomState(1).randn(1, 4, 32, 32).astype(np.float32)
    with torch.no_grad():
        mean = vae.encode(torch.from_numpy(images)).latent_dist.mean.numpy()
        decoded = vae.decode(torch.from_numpy(latents)).sample.numpy()
    enc = model.apply(params, nhwc(images), method="encode")
    dec = model.apply(params, nhwc(latents), method="decode")
    e1 = assert_close(nchw(enc.mean), mean, "full vae encode")
    e2 = assert_close(nchw(dec), decoded, "full vae decode")
    print(f"full-size VAE max abs error: encode {e1:.3g}, decode {e2:.3g}")
