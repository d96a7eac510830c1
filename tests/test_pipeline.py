"""End-to-end: the JAX CLIPAway pipeline equals diffusers' StableDiffusionInpaintPipeline run with the
published algorithm (IP-Adapter embeds from torch AlphaCLIP + MLP + projection) on the same weights."""

import dataclasses

import numpy as np
import pytest
import torch
from fixtures import torch_clipaway_embeds

from clipaway_jax.pipelines.clipaway import DEFAULT_NEGATIVE_PROMPT, CLIPAwayPipeline, RemovalOptions
from clipaway_jax.pipelines.images import seamless, smooth_fill

SIZE = 128  # the tiny UNet's sample_size 16 x 8


@pytest.fixture(scope="module")
def setup(published, tiny_checkpoint):
    return published, CLIPAwayPipeline.from_checkpoint(tiny_checkpoint)


def _inputs(batch=2, size=(SIZE, SIZE)):
    rng = np.random.RandomState(0)
    h, w = size
    yy, xx = np.mgrid[:h, :w] / max(h, w)
    images = np.stack([np.stack([np.sin(6 * xx + i), np.cos(5 * yy - i), xx * yy], -1) for i in range(batch)])
    images = np.clip(0.5 + 0.4 * images + 0.05 * rng.randn(batch, h, w, 3), 0, 1).astype(np.float32)
    masks = np.zeros((batch, h, w), np.float32)
    masks[0, h // 4 : 5 * h // 8, w // 3 : 4 * w // 5] = 1.0
    masks[1, h // 2 : 15 * h // 16, w // 12 : 2 * w // 5] = 1.0
    latents = rng.randn(batch, h // 8, w // 8, 4).astype(np.float32)
    return images, masks, latents


def _torch_pipeline(files, scheduler_name, with_ip_adapter=True):
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        PNDMScheduler,
        StableDiffusionInpaintPipeline,
        UNet2DConditionModel,  # fmt: skip
    )
    from transformers import CLIPTextModel, CLIPTokenizer

    sd = files["sd_inpaint"]
    scheduler_cls = {"pndm": PNDMScheduler, "ddim": DDIMScheduler}[scheduler_name]
    pipe = StableDiffusionInpaintPipeline(
        vae=AutoencoderKL.from_pretrained(sd / "vae"),
        text_encoder=CLIPTextModel.from_pretrained(sd / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(sd / "tokenizer"),
        unet=UNet2DConditionModel.from_pretrained(sd / "unet"),
        scheduler=scheduler_cls.from_pretrained(sd / "scheduler"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    if with_ip_adapter:
        pipe.unet._load_ip_adapter_weights([torch.load(files["ip_adapter"], weights_only=True)])
    pipe.set_progress_bar_config(disable=True)
    return pipe


# DDIM end to end also runs in tests/test_blended.py against diffusers' DDIMScheduler: its case here is slow.
# The published 50 steps are slow too: the default run has the 20-step case end to end (also DCGD's, in
# tests/test_dcgd.py, on the same compiled program) and the samplers' 50 steps in tests/test_schedulers.py.
@pytest.mark.parametrize("scheduler, size, steps", [pytest.param("pndm", (SIZE, SIZE), 50, marks=pytest.mark.slow),
                                                    pytest.param("ddim", (SIZE, SIZE), 20, marks=pytest.mark.slow),
                                                    ("pndm", (72, 88), 20)])  # fmt: skip
def test_removal_equals_diffusers_inpaint_pipeline(setup, scheduler, size, steps, monkeypatch):
    """72x88: any multiple of the VAE factor, as diffusers (9x11 latents, not divisible by the UNet's 4)."""
    import diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_inpaint as inpaint

    files, pipe = setup
    images, masks, latents = _inputs(size=size)
    # The masked image's VAE posterior is sampled from framework-specific RNGs; both sides use its mean here.
    original = inpaint.retrieve_latents
    monkeypatch.setattr(inpaint, "retrieve_latents", lambda out, generator=None, sample_mode="sample":
                        original(out, generator, "argmax"))  # fmt: skip
    reference = _torch_pipeline(files, scheduler)
    embeds = torch_clipaway_embeds(files, images, masks)  # [uncond x B; cond x B, 1, E]
    expected = []
    for i in range(len(images)):  # diffusers repeats ip embeds across a prompt batch: one image per call
        with torch.no_grad():
            expected.append(reference(
                prompt="",
                negative_prompt=DEFAULT_NEGATIVE_PROMPT,
                image=torch.from_numpy(images[i : i + 1].transpose(0, 3, 1, 2).copy()),
                mask_image=torch.from_numpy(masks[i : i + 1, None].copy()),
                ip_adapter_image_embeds=[embeds[[i, len(images) + i]]],
                latents=torch.from_numpy(latents[i : i + 1].transpose(0, 3, 1, 2).copy()),
                height=size[0],
                width=size[1],
                num_inference_steps=steps,
                guidance_scale=7.5,
                strength=1.0,
                output_type="np",
            ).images[0])  # fmt: skip
    expected = np.stack(expected)
    options = RemovalOptions(steps=steps, scheduler=scheduler, dilate_iterations=0, posterior="mode")
    out = pipe.remove(images, masks, latents=latents, guidance_scale=7.5, options=options)
    diff = np.abs(out - expected)
    print(f"{scheduler} {size}: mean abs diff {diff.mean():.2e}, max {diff.max():.2e}")
    assert diff.mean() <= 1e-3 and diff.max() <= 1e-2
    assert np.abs(expected - images).mean() > 0.05, "the reference must actually repaint for this to test anything"
    assert ((expected > 0.02) & (expected < 0.98)).mean() > 0.2, "mostly saturated pixels would hide differences"


def test_strength_equals_diffusers_inpaint_pipeline_from_the_prefilled_input(setup, monkeypatch):
    """strength < 1: diffusers' inpainting pipeline given our pre-filled input as its `image` (the known pixels
    are the input's, so its masked image is the same), started as its prepare_latents starts, from the
    filled image's latents noised to the first run timestep, and run over its get_timesteps' tail."""
    import diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_inpaint as inpaint
    import jax.numpy as jnp

    files, pipe = setup
    steps, strength, size = 10, 0.6, (72, 88)
    images, masks, latents = _inputs(size=size)
    original = inpaint.retrieve_latents
    monkeypatch.setattr(inpaint, "retrieve_latents", lambda out, generator=None, sample_mode="sample":
                        original(out, generator, "argmax"))  # fmt: skip
    reference = _torch_pipeline(files, "ddim")
    filled = np.asarray(smooth_fill(jnp.asarray(images), jnp.asarray(masks)))
    nchw = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    reference.scheduler.set_timesteps(steps)
    first = reference.scheduler.timesteps[steps - int(steps * strength)]
    with torch.no_grad():
        start = reference.vae.encode(nchw(filled * 2 - 1)).latent_dist.mode() * reference.vae.config.scaling_factor
        start = reference.scheduler.add_noise(start, nchw(latents), first)
    embeds = torch_clipaway_embeds(files, images, masks)
    expected = []
    for i in range(len(images)):
        with torch.no_grad():
            expected.append(reference(
                prompt="", negative_prompt=DEFAULT_NEGATIVE_PROMPT, image=nchw(filled[i : i + 1]),
                mask_image=torch.from_numpy(masks[i : i + 1, None].copy()),
                ip_adapter_image_embeds=[embeds[[i, len(images) + i]]], latents=start[i : i + 1],
                height=size[0], width=size[1], num_inference_steps=steps, guidance_scale=7.5,
                strength=strength, output_type="np").images[0])  # fmt: skip
    expected = np.stack(expected)
    options = RemovalOptions(steps=steps, scheduler="ddim", dilate_iterations=0, posterior="mode", strength=strength)
    out = pipe.remove(images, masks, latents=latents, guidance_scale=7.5, options=options)
    diff = np.abs(out - expected)
    print(f"strength {strength}: mean abs diff {diff.mean():.2e}, max {diff.max():.2e}")
    assert diff.mean() <= 1e-3 and diff.max() <= 1e-2
    from_noise = pipe.remove(images, masks, latents=latents, guidance_scale=7.5,
                             options=dataclasses.replace(options, strength=1.0))  # fmt: skip
    assert np.abs(from_noise - out).mean() > 0.02, "the pre-filled start must change the result to test anything"


def test_smooth_fill_keeps_the_context_and_carries_it_into_the_hole():
    """Known pixels unchanged; a constant context fills a hole of any shape with itself; a ramp's hole
    stays within the values near it and follows the ramp."""
    import jax.numpy as jnp

    h, w = 40, 56
    masks = np.zeros((2, h, w), np.float32)
    masks[0, 10:31, 21:40] = 1  # odd sizes, off the pyramid's grid
    masks[1, :, :30] = 1  # touching the border
    ramp = np.broadcast_to(np.linspace(0, 1, w, dtype=np.float32)[None, None, :, None], (2, h, w, 3)).copy()
    with_object = np.where(masks[..., None] > 0, 0.9, ramp)
    filled = np.asarray(smooth_fill(jnp.asarray(with_object), jnp.asarray(masks)))
    np.testing.assert_array_equal(filled[masks < 0.5], with_object[masks < 0.5])
    hole = masks[0] > 0
    near = ramp[0, 0, [21 - 8, 39 + 8], 0]  # the context within 8 px of the hole, where the fill's means reach
    assert near[0] <= filled[0][hole].min() and filled[0][hole].max() <= near[1]
    assert np.abs(filled[0][hole] - ramp[0][hole]).mean() < 0.03  # follows the ramp (flat: 0.08)
    constant = np.asarray(smooth_fill(jnp.full((2, h, w, 3), 0.3), jnp.asarray(masks)))
    np.testing.assert_allclose(constant, 0.3, atol=1e-6)


def test_seamless_takes_the_colour_offset_out_of_the_fill_and_keeps_its_detail():
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    h, w = 48, 40
    images = np.broadcast_to(np.linspace(0.2, 0.7, w, dtype=np.float32)[None, None, :, None], (1, h, w, 3)).copy()
    masks = np.zeros((1, h, w), np.float32)
    masks[0, 12:33, 9:30] = 1
    detail = 0.05 * rng.standard_normal((1, h, w, 3)).astype(np.float32) * masks[..., None]
    result = images + detail + np.float32(0.15)  # the fill's own detail, everything off by one colour
    out = np.asarray(seamless(jnp.asarray(images), jnp.asarray(masks), jnp.asarray(result)))
    np.testing.assert_allclose(out[masks < 0.5], images[masks < 0.5], atol=1e-6)
    np.testing.assert_allclose(out, np.clip(images + detail, 0, 1), atol=1e-5)


def test_seamless_paste_back_is_the_program_s_last_step(setup):
    """In the program: the raw result's fill shifted by `seamless`, then pasted back with the feather."""
    import jax.numpy as jnp

    from clipaway_jax.pipelines.images import feather

    _, pipe = setup
    images, masks, latents = _inputs(size=(64, 72))
    options = RemovalOptions(steps=3, scheduler="ddim", dilate_iterations=0, posterior="mode")
    run = lambda **kw: pipe.remove(images, masks, latents=latents, options=dataclasses.replace(options, **kw))
    raw, out = run(), run(paste_back=2, seamless=True)
    soft = np.asarray(feather(jnp.asarray(masks), 2))[..., None]
    expected = images * (1 - soft) + np.asarray(seamless(jnp.asarray(images), jnp.asarray(masks), raw)) * soft
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert np.abs(out - run(paste_back=2)).max() > 0.01
    with pytest.raises(ValueError, match="paste_back > 0"):
        RemovalOptions(seamless=True)


def test_bfloat16_inference_stays_near_float32(tiny_checkpoint):
    """The accelerators' default compute dtype (--dtype auto): measured at the tiny config with random
    weights, 10 steps: mean 0.017, 99th percentile 0.10 of the pixel range; bounds 0.04 and 0.2."""
    images, masks, latents = (x[:1] for x in _inputs())
    options = RemovalOptions(steps=10, dilate_iterations=0, posterior="mode")
    outputs = {dtype: CLIPAwayPipeline.from_checkpoint(tiny_checkpoint, dtype).remove(images, masks, latents=latents,
                                                                                     options=options)
               for dtype in ("float32", "bfloat16")}  # fmt: skip
    diff = np.abs(outputs["float32"] - outputs["bfloat16"])
    assert np.isfinite(outputs["bfloat16"]).all()
    print(f"bf16 vs fp32: mean {diff.mean():.4f}, p99 {np.percentile(diff, 99):.4f}, max {diff.max():.4f}")
    assert diff.mean() < 0.04 and np.percentile(diff, 99) < 0.2, (diff.mean(), np.percentile(diff, 99))


def test_compute_dtype_is_bfloat16_on_accelerators_only(monkeypatch):
    import jax

    from clipaway_jax.commands.pipeline_args import compute_dtype

    assert compute_dtype("float32") == "float32" and compute_dtype("bfloat16") == "bfloat16"
    for backend, expected in (("cpu", "float32"), ("gpu", "bfloat16"), ("tpu", "bfloat16")):
        monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
        assert compute_dtype("auto") == expected


def test_training_is_mixed_precision_on_accelerators_only(monkeypatch):
    """config.precision "auto" (the default): bfloat16 activations on GPU/TPU, float32 on CPU; "float32" and
    "bfloat16" force either."""
    import jax
    import jax.numpy as jnp

    from clipaway_jax.commands import train
    from clipaway_jax.training.config import base_config

    config = base_config()
    for backend, expected in (("cpu", jnp.float32), ("gpu", jnp.bfloat16), ("tpu", jnp.bfloat16)):
        monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
        for precision, dtype in (("auto", expected), ("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
            config.precision = precision
            assert train._activation_dtype(config) == dtype
