"""The Blended Latent Diffusion base (`--base blended`) against a torch transcription of the authors' loop
(omriav/blended-latent-diffusion, scripts/text_editing_SD2.py, `edit_image`) run with diffusers'
UNet2DConditionModel (+ IP-Adapter attention), AutoencoderKL and DDIMScheduler on the tiny weights."""

import json

import jax
import numpy as np
import pytest
import torch
from fixtures import torch_clipaway_embeds
from PIL import Image

from clipaway_jax.pipelines.clipaway import (
    DEFAULT_NEGATIVE_PROMPT,
    CLIPAwayPipeline,
    RemovalOptions,
    blending_noise,
    image_keys,
    initial_latents,
)

SIZE = 128  # the tiny UNet's sample_size 16 x the VAE's 8


@pytest.fixture(scope="module")
def pipe(tiny_checkpoint):
    return CLIPAwayPipeline.from_checkpoint(tiny_checkpoint, unet="unet_t2i")


def _inputs(batch=2, size=SIZE):
    """8-bit images (the reference reads uint8 and maps x / 127.5 - 1), boxes as masks, initial latents."""
    rng = np.random.RandomState(1)
    yy, xx = np.mgrid[:size, :size] / size
    images = np.stack([np.stack([np.sin(5 * xx + i), np.cos(4 * yy - i), xx * yy], -1) for i in range(batch)])
    images = np.clip(0.5 + 0.4 * images + 0.05 * rng.randn(batch, size, size, 3), 0, 1)
    images = (np.round(images * 255) / 255).astype(np.float32)
    masks = np.zeros((batch, size, size), np.float32)
    k = size / SIZE
    masks[0, int(30 * k) : int(85 * k), int(40 * k) : int(110 * k)] = 1.0
    masks[1:, int(60 * k) + 2 : int(125 * k), int(10 * k) : int(52 * k) + 3] = 1.0  # edges off the 8-pixel grid
    latents = rng.randn(batch, size // 8, size // 8, 4).astype(np.float32)
    return images, masks, latents


def _reference(files, images, masks, latents, noises, *, prompt, negative, embeds, steps, start, previous=False):
    """`edit_image` of the reference, batched over images, with the initial latents and per-step noises given
    (torch.randn on the reference's side), fp32. `embeds`: IP-Adapter image embeds (None: the plain UNet).
    `previous`: re-noise the source to the next timestep (this port's --blend-noise previous)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    sd = files["sd_base"]
    vae = AutoencoderKL.from_pretrained(sd / "vae")
    unet = UNet2DConditionModel.from_pretrained(sd / "unet")
    if embeds is not None:
        unet._load_ip_adapter_weights([torch.load(files["ip_adapter"], weights_only=True)])
    text_encoder, tokenizer = CLIPTextModel.from_pretrained(sd / "text_encoder"), CLIPTokenizer.from_pretrained(
        sd / "tokenizer"
    )
    config = json.loads((sd / "scheduler" / "scheduler_config.json").read_text())
    scheduler = DDIMScheduler(beta_start=config["beta_start"], beta_end=config["beta_end"],
                              beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False)  # fmt: skip
    b = len(images)
    with torch.no_grad():
        source = vae.encode(torch.from_numpy(images.transpose(0, 3, 1, 2) * 2 - 1)).latent_dist.mean
        source = source * vae.config.scaling_factor
        latent_size = (images.shape[2] // 8, images.shape[1] // 8)
        latent_masks = [Image.fromarray((m * 255).astype(np.uint8)).resize(latent_size, Image.NEAREST)
                        for m in masks]  # fmt: skip
        latent_mask = torch.from_numpy((np.stack(latent_masks) / 255 >= 0.5).astype(np.float32))[:, None]

        def encode(texts):
            ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids  # fmt: skip
            return text_encoder(ids)[0]

        text_embeddings = torch.cat([encode([negative] * b), encode([prompt] * b)])
        added = {"image_embeds": [embeds]} if embeds is not None else None
        x = torch.from_numpy(latents.transpose(0, 3, 1, 2).copy())
        scheduler.set_timesteps(steps)
        ratio = scheduler.config.num_train_timesteps // steps
        for t, noise in zip(scheduler.timesteps[int(len(scheduler.timesteps) * start) :], noises):
            model_in = scheduler.scale_model_input(torch.cat([x] * 2), timestep=t)
            pred = unet(model_in, t, encoder_hidden_states=text_embeddings, added_cond_kwargs=added).sample
            uncond, cond = pred.chunk(2)
            x = scheduler.step(uncond + 7.5 * (cond - uncond), t, x).prev_sample
            level = torch.clamp(t - ratio, min=0) if previous else t
            noised = scheduler.add_noise(source, torch.from_numpy(noise.transpose(0, 3, 1, 2).copy()), level)
            x = x * latent_mask + noised * (1 - latent_mask)
        pixels = vae.decode(x / vae.config.scaling_factor).sample
    return (pixels / 2 + 0.5).clamp(0, 1).numpy().transpose(0, 2, 3, 1)


# The parity cases run without given latents, under the names and seed of the `remove` test below, so that
# test reuses their compiled program; the torch side gets our per-image initial latents and noises.
NAMES, SEED = ["other", "in"], 42


def _our_noises(options, names=NAMES, seed=SEED, size=SIZE):
    keys = image_keys(seed, names)
    shape = (size // 8, size // 8, 4)
    return [np.asarray(blending_noise(keys, i, shape)) for i in range(options.first_step, options.steps)]


def _our_latents(names=NAMES, seed=SEED, size=SIZE):
    return np.asarray(initial_latents(image_keys(seed, names), (size // 8, size // 8, 4)))


@pytest.mark.parametrize("variant", ["clipaway", "plain-previous"])
def test_blended_equals_reference_loop(published, pipe, variant):
    """clipaway: CLIPAway's tokens and texts on the text-to-image UNet, the reference's current t; plain: the
    reference itself (text prompt, plain UNet = ip_scale 0), re-noised to the previous timestep. (Fewer steps
    than the reference's 50 keep the test short; 50 were measured, see the README.)"""
    images, masks, _ = _inputs()
    latents = _our_latents()
    if variant == "clipaway":
        options = RemovalOptions(steps=25, scheduler="ddim", dilate_iterations=0, base="blended")
        texts = dict(prompt="", negative=DEFAULT_NEGATIVE_PROMPT)
        embeds, ip_scale = torch_clipaway_embeds(published, images, masks), 1.0
    else:
        options = RemovalOptions(steps=12, scheduler="ddim", dilate_iterations=0, base="blended",
                                 blend_noise="previous")  # fmt: skip
        texts = dict(prompt="a photo of a room", negative="")
        embeds, ip_scale = None, 0.0
    noises = _our_noises(options)
    expected = _reference(published, images, masks, latents, noises, **texts, embeds=embeds, steps=options.steps,
                          start=options.blend_start, previous=options.blend_noise == "previous")  # fmt: skip
    out = pipe.remove(images, masks, names=NAMES, seed=SEED, options=options, prompt=texts["prompt"],
                      negative_prompt=texts["negative"], ip_scale=ip_scale)  # fmt: skip
    diff = np.abs(out - expected)
    print(f"{variant}: mean abs diff {diff.mean():.2e}, max {diff.max():.2e}")
    assert diff.mean() <= 1e-3 and diff.max() <= 1e-2
    inside = masks[..., None].repeat(3, -1) > 0
    assert np.abs(expected - images)[inside].mean() > 0.05, "the reference must repaint the mask to test anything"
    assert ((expected > 0.02) & (expected < 0.98)).mean() > 0.2, "mostly saturated pixels would hide differences"


def test_blending_noise_is_per_image_and_per_step():
    keys = image_keys(0, [0, 1])
    a, b = (np.asarray(blending_noise(keys, i, (4, 4, 4))) for i in (5, 6))
    assert a.shape == (2, 4, 4, 4) and not np.allclose(a, b) and not np.allclose(a[0], a[1])
    assert np.array_equal(np.asarray(blending_noise(keys[1:], 5, (4, 4, 4)))[0], a[1])
    assert abs(float(jax.numpy.std(blending_noise(image_keys(0, list(range(64))), 0, (8, 8, 4)))) - 1) < 0.05


def test_the_base_must_match_the_unet(tiny_checkpoint, pipe):
    images, masks, _ = _inputs(1)
    inpaint = CLIPAwayPipeline.from_checkpoint(tiny_checkpoint)
    with pytest.raises(ValueError, match="unet_t2i"):
        inpaint.remove(images, masks, options=RemovalOptions(steps=2, scheduler="ddim", base="blended"))
    with pytest.raises(ValueError, match="inpainting base"):
        pipe.remove(images, masks, options=RemovalOptions(steps=2, base="inpaint"))
    with pytest.raises(ValueError, match="DDIM"):
        RemovalOptions(base="blended", scheduler="pndm")
    assert RemovalOptions(steps=50, scheduler="ddim", base="blended").first_step == 12  # int(50 * 0.25)


def test_inputs_are_resized_as_each_original(tmp_path):
    """CLIPAway resizes with Pillow's BICUBIC, the Blended Latent Diffusion script with BILINEAR."""
    from clipaway_jax.pipelines.run import prepare

    rng = np.random.RandomState(0)
    pixels = rng.randint(0, 256, (90, 70, 3), np.uint8)
    Image.fromarray(pixels).save(tmp_path / "image.png")
    Image.fromarray(np.full((90, 70), 255, np.uint8)).save(tmp_path / "mask.png")
    for base, pil_filter in (("inpaint", Image.BICUBIC), ("blended", Image.BILINEAR)):
        prepared = prepare(tmp_path / "image.png", tmp_path / "mask.png", (64, 64), keep_aspect=False, base=base)
        expected = np.asarray(Image.fromarray(pixels).resize((64, 64), pil_filter), np.float32) / 255
        assert np.array_equal(prepared.image, expected), base


def test_remove_command_runs_the_blended_base_batch_independently(tiny_checkpoint, pipe, tmp_path, capsys):
    """`remove --base blended` on one image equals that image inside a batch of two (per-image keys). The
    batch of two is the plain parity case's call (options, shapes, no latents given): its program is reused."""
    from clipaway_jax.cli import main

    images, masks, _ = _inputs()
    Image.fromarray((images[1] * 255).round().astype(np.uint8)).save(tmp_path / "in.png")
    Image.fromarray((masks[1] * 255).astype(np.uint8)).save(tmp_path / "mask.png")
    run = lambda out, *extra: main(["remove", str(tmp_path / "in.png"), str(tmp_path / "mask.png"), "-o",
                                    str(tmp_path / out), "--checkpoint", str(tiny_checkpoint), "--base", "blended",
                                    "--cache-dir", "", *extra])  # fmt: skip
    same = ["--steps", "12", "--blend-noise", "previous", "--dilate-iterations", "0", "--ip-scale", "0"]
    assert run("out.png", *same) == 0
    alone = np.asarray(Image.open(tmp_path / "out.png"), np.float32) / 255
    options = RemovalOptions(steps=12, scheduler="ddim", dilate_iterations=0, base="blended", blend_noise="previous")
    together = pipe.remove(images, masks, names=NAMES, options=options, seed=SEED, ip_scale=0.0)
    assert np.abs(together[1] - alone).max() <= 0.5 / 255 + 1e-4  # the PNG's rounding
    assert np.abs(together[0] - together[1]).mean() > 0.01
    assert run("bad.png", "--unet-variant", "dcgd12") == 1
    assert "--unet-variant applies to the inpainting base" in capsys.readouterr().err
    assert run("bad.png", "--scheduler", "pndm") == 1
    assert "samples with DDIM" in capsys.readouterr().err


@pytest.mark.slow
def test_full_size_blended_equals_reference_loop(tmp_path):
    """SD-1.5's published configs (random weights): the text-to-image UNet, VAE and text encoder at 256x256,
    10 steps, image tokens off (ip_scale 0 = the plain UNet; their path is the inpainting
    base's, parity-tested there)."""
    from clipaway_jax.convert.published import Sources, convert
    from clipaway_jax.tiny import write_full_size, write_sd_base

    files = write_full_size(tmp_path)
    files["sd_base"] = write_sd_base(tmp_path / "sd-base", files["sd_inpaint"], seed=8, full_size=True)
    sources = Sources(sd_base=files["sd_base"], ip_adapter=files["ip_adapter"], alpha_clip=files["alpha_clip"],
                      mlp=files["mlp"])  # fmt: skip
    convert(sources, tmp_path / "ckpt", progress=lambda _: None)
    full = CLIPAwayPipeline.from_checkpoint(tmp_path / "ckpt", unet="unet_t2i")
    images, masks, latents = _inputs(size=256)
    options = RemovalOptions(steps=10, scheduler="ddim", dilate_iterations=0, base="blended")
    texts = dict(prompt="a photo of a room", negative="")
    noises = _our_noises(options, [0, 1], seed=0, size=256)
    expected = _reference(files, images, masks, latents, noises, **texts, embeds=None, steps=10, start=0.25)
    out = full.remove(images, masks, latents=latents, options=options, prompt=texts["prompt"],
                      negative_prompt=texts["negative"], ip_scale=0.0)  # fmt: skip
    print(f"finite: reference {np.isfinite(expected).mean():.3f}, ours {np.isfinite(out).mean():.3f}")
    assert np.isfinite(expected).all() and np.isfinite(out).all()
    diff = np.abs(out - expected)
    print(f"full size: mean abs diff {diff.mean():.2e}, max {diff.max():.2e}")
    assert diff.mean() <= 1e-3 and diff.max() <= 1e-2
