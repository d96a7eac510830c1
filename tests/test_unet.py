"""The Flax UNet (with IP-Adapter) equals diffusers' UNet2DConditionModel on the same weights."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from fixtures import assert_close, ip_adapter_state_dict, nchw, nhwc, numpy_state, torch_unet

from clipaway_jax import xla
from clipaway_jax.convert.engine import ConversionError
from clipaway_jax.convert.networks import convert_image_proj, convert_unet
from clipaway_jax.models import ImageProjection, UNet2DConditionModel, UNetConfig


@pytest.fixture(scope="module")
def reference():
    unet = torch_unet()
    ip = ip_adapter_state_dict(unet)
    config = UNetConfig.from_dict(dict(unet.config))
    rng = np.random.RandomState(0)
    inputs = dict(
        sample=rng.randn(2, 9, 16, 16).astype(np.float32),
        context=rng.randn(2, 7, 32).astype(np.float32),
        embeds=rng.randn(2, ip["image_proj"]["proj.weight"].shape[1]).astype(np.float32),
    )
    return unet, ip, config, inputs


def _torch_forward(unet, inputs, t, embeds=None):
    kwargs = {}
    if embeds is not None:
        kwargs["added_cond_kwargs"] = {"image_embeds": [torch.from_numpy(embeds)[:, None]]}
    with torch.no_grad():
        out = unet(torch.from_numpy(inputs["sample"]), torch.tensor(t), torch.from_numpy(inputs["context"]), **kwargs)
    return out.sample.numpy()


@pytest.mark.parametrize("timesteps", [[1, 1], [999, 250]])
def test_unet_equals_diffusers(reference, timesteps):
    unet, _, config, inputs = reference
    params = convert_unet(numpy_state(unet), config)
    out = xla.jit(UNet2DConditionModel(config).apply)(
        {"params": params}, nhwc(inputs["sample"]), jnp.asarray(timesteps), inputs["context"]
    )
    assert_close(nchw(out), _torch_forward(unet, inputs, timesteps), "unet")


@pytest.mark.parametrize("timesteps", [[1, 1], [999, 250]])
def test_unet_with_ip_adapter_equals_diffusers(reference, timesteps):
    unet, ip, config, inputs = reference
    ip_unet = torch_unet()
    ip_unet._load_ip_adapter_weights([ip])
    expected = _torch_forward(ip_unet, inputs, timesteps, inputs["embeds"])
    plain = _torch_forward(unet, inputs, timesteps)
    assert np.abs(expected - plain).max() > 1e-2, "the image tokens must change the output for this test to bite"

    state = {k: v.numpy() for k, v in ip["ip_adapter"].items()}
    params = convert_unet(numpy_state(unet), config, ip_adapter=state)
    proj_params, (embed_dim, cross) = convert_image_proj({k: v.numpy() for k, v in ip["image_proj"].items()})
    tokens = ImageProjection(4, cross).apply({"params": proj_params}, inputs["embeds"])
    out = xla.jit(UNet2DConditionModel(config).apply)(
        {"params": params}, nhwc(inputs["sample"]), jnp.asarray(timesteps), inputs["context"], tokens, 1.0
    )
    assert_close(nchw(out), expected, "unet + ip-adapter")


def test_unet_at_latents_not_divisible_by_its_downsampling_equals_diffusers(reference):
    """9x11 latents (a 72x88 image): diffusers upsamples to each skip's size; so must we."""
    unet, _, config, _ = reference
    rng = np.random.RandomState(1)
    inputs = dict(sample=rng.randn(2, 9, 9, 11).astype(np.float32), context=rng.randn(2, 7, 32).astype(np.float32))
    params = convert_unet(numpy_state(unet), config)
    out = xla.jit(UNet2DConditionModel(config).apply)(
        {"params": params}, nhwc(inputs["sample"]), jnp.asarray([999, 250]), inputs["context"]
    )
    assert_close(nchw(out), _torch_forward(unet, inputs, [999, 250]), "unet at 9x11 latents")


def test_ip_scale_zero_is_the_plain_unet(reference):
    unet, ip, config, inputs = reference
    state = {k: v.numpy() for k, v in ip["ip_adapter"].items()}
    params = {"params": convert_unet(numpy_state(unet), config, ip_adapter=state)}
    apply = xla.jit(UNet2DConditionModel(config).apply)
    tokens = jnp.ones((2, 4, 32))
    args = (nhwc(inputs["sample"]), jnp.asarray([5, 5]), inputs["context"])
    np.testing.assert_allclose(apply(params, *args, tokens, 0.0), apply(params, *args), atol=1e-6)


def test_published_config_json_loads(tmp_path, reference):
    unet = reference[0]
    unet.save_config(tmp_path)
    config = UNetConfig.from_json(tmp_path / "config.json")
    assert config.in_channels == 9 and config.heads == (4, 4, 4)


def test_unsupported_config_value_is_refused():
    with pytest.raises(ValueError, match="class_embed_type"):
        UNetConfig.from_dict({"class_embed_type": "timestep"})


def test_conversion_reports_missing_and_unexpected_keys(reference):
    unet, _, config, _ = reference
    state = numpy_state(unet)
    state.pop("conv_in.weight")
    state["mystery.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ConversionError) as err:
        convert_unet(state, config, name="unet/diffusion_pytorch_model.safetensors")
    message = str(err.value)
    assert "unet/diffusion_pytorch_model.safetensors" in message
    assert "mystery.weight" in message and "conv_in/kernel" in message


def test_text_to_image_unet_is_explained(reference):
    unet, _, config, _ = reference
    state = numpy_state(torch_unet(in_channels=4))
    with pytest.raises(ConversionError, match=r"conv_in.weight: expected .*found .*4 input channels.*inpainting"):
        convert_unet(state, config)


@pytest.mark.slow
@pytest.mark.parametrize("latents", [64, 65])
def test_full_size_unet_equals_diffusers(latents):
    """SD-1.5 inpainting config at 64x64 latents (512 px) and 65x65 (520 px), batch 2, 77 tokens."""
    from diffusers import UNet2DConditionModel as TorchUNet

    torch.manual_seed(0)
    unet = TorchUNet(**UNetConfig().to_dict()).eval()
    config = UNetConfig.from_dict(json.loads(json.dumps(dict(unet.config))))
    rng = np.random.RandomState(0)
    sample = rng.randn(2, 9, latents, latents).astype(np.float32)
    inputs = dict(sample=sample, context=rng.randn(2, 77, 768).astype(np.float32))
    expected = _torch_forward(unet, inputs, [999, 500])
    params = convert_unet(numpy_state(unet), config)
    del unet
    out = xla.jit(UNet2DConditionModel(config).apply)(
        {"params": params}, nhwc(inputs["sample"]), jnp.asarray([999, 500]), inputs["context"]
    )
    err = assert_close(nchw(out), expected, f"full-size unet at {latents}x{latents} latents")
    print(f"full-size UNet, {latents}x{latents} latents: max abs error {err:.3g} (scale {np.abs(expected).max():.3g})")
