"""In-distribution check of a trained mini inpainting UNet (issue #25): noise the source's latents to t,
predict x0 in one step (training-like inputs: the mask, z(x0 without the object), tokens of the source's
embedding), decode, PSNR against the source inside and outside the mask, on 16 validation scenes. A UNet
whose estimate loses the unmasked region at high t repaints the context when sampled.

    python bench/mini_denoise.py CHECKPOINT [DATA_DIR]     # DATA_DIR: `data scenes --out` (runs/mini/data)
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

from clipaway_jax.checkpoint import load_checkpoint
from clipaway_jax.eval import stats
from clipaway_jax.mini.batches import decode
from clipaway_jax.schedulers.base import SchedulerConfig, alphas_cumprod
from clipaway_jax.tokenizer import load_tokenizer, tokenize
from clipaway_jax.training.pretrain import image_embeds

COUNT = 16
TIMESTEPS = (20, 100, 300, 500, 800, 950)
NETWORKS = ("unet", "vae", "text_encoder", "image_encoder", "image_proj")


def psnr(result: np.ndarray, truth: np.ndarray, masks: np.ndarray) -> float:
    """Mean over images of the evaluation's PSNR over the pixels where `masks` [B, H, W] is set."""
    return float(np.mean([stats.psnr(r, t, m > 0.5) for r, t, m in zip(result, truth, masks, strict=True)]))


def one_step_program(ckpt, images, masks):
    """(t, key) -> (x0 estimate decoded, the VAE round trip, the implied noise's MSE) for the batch."""
    unet, vae, text, encoder, proj = (ckpt.module(n) for n in NETWORKS)
    params = {n: {"params": ckpt.params[n]} for n in NETWORKS}
    config = SchedulerConfig.from_dict(ckpt.manifest["scheduler"], {})
    alphas = jnp.asarray(alphas_cumprod(config), jnp.float32)
    scale, down = vae.config.scaling_factor, vae.config.scale_factor
    ids = jnp.asarray(tokenize(load_tokenizer(ckpt.tokenizer_path), [""] * len(images)))

    @jax.jit
    def run(t, key):
        x0 = images * 2 - 1
        latents = vae.apply(params["vae"], x0, method="encode").mean * scale
        condition = vae.apply(params["vae"], x0 * (masks[..., None] < 0.5), method="encode").mean * scale
        a = alphas[t]
        noise = jax.random.normal(key, latents.shape)
        noisy = jnp.sqrt(a) * latents + jnp.sqrt(1 - a) * noise
        context = text.apply(params["text_encoder"], ids).last_hidden_state
        tokens = proj.apply(params["image_proj"], image_embeds(encoder, params["image_encoder"], images))
        inputs = jnp.concatenate([noisy, masks[:, ::down, ::down, None], condition], -1)
        out = unet.apply(params["unet"], inputs, jnp.full((len(images),), t), context, tokens)
        if config.prediction_type == "v_prediction":
            estimate, eps = jnp.sqrt(a) * noisy - jnp.sqrt(1 - a) * out, jnp.sqrt(a) * out + jnp.sqrt(1 - a) * noisy
        else:
            estimate, eps = (noisy - jnp.sqrt(1 - a) * out) / jnp.sqrt(a), out
        decode_ = lambda z: jnp.clip(vae.apply(params["vae"], z / scale, method="decode") / 2 + 0.5, 0, 1)
        return decode_(estimate), decode_(latents), jnp.mean((eps - noise) ** 2)

    return run


def main() -> None:
    ckpt = load_checkpoint(sys.argv[1], networks=list(NETWORKS))
    data_dir = sys.argv[2] if len(sys.argv) > 2 else "runs/mini/data"
    source = tfds.data_source("mini_scenes", split="validation", data_dir=data_dir)
    images = np.stack([decode(source[i]["image"]) for i in range(COUNT)]).astype(np.float32) / 255
    masks = np.stack([decode(source[i]["mask"], "L") >= 128 for i in range(COUNT)]).astype(np.float32)
    run = one_step_program(ckpt, images, masks)
    for t in TIMESTEPS:
        out, round_trip, error = (np.asarray(v) for v in run(t, jax.random.key(t)))
        outside, inside = psnr(out, images, 1 - masks), psnr(out, images, masks)
        print(f"t={t:4d} eps mse {float(error):.4f} | one-step x0: PSNR outside {outside:.2f} inside {inside:.2f} | "
              f"VAE round trip outside {psnr(round_trip, images, 1 - masks):.2f}")


if __name__ == "__main__":
    main()
