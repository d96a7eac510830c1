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
from clipaway_jax.mini.batches import decode
from clipaway_jax.schedulers.base import SchedulerConfig, alphas_cumprod
from clipaway_jax.tokenizer import load_tokenizer, tokenize
from clipaway_jax.training.pretrain import image_embeds

ck = load_checkpoint(sys.argv[1], networks=["unet", "vae", "text_encoder", "image_encoder", "image_proj"])
unet, vae, te, ie, ip = (ck.module(n) for n in ["unet", "vae", "text_encoder", "image_encoder", "image_proj"])
P = {n: {"params": ck.params[n]} for n in ck.params}
data_dir = sys.argv[2] if len(sys.argv) > 2 else "runs/mini/data"
src = tfds.data_source("mini_scenes", split="validation", data_dir=data_dir)
x = np.stack([decode(src[i]["image"]) for i in range(16)]).astype(np.float32) / 255
m = np.stack([decode(src[i]["mask"], "L") >= 128 for i in range(16)]).astype(np.float32)
cfg = SchedulerConfig.from_dict(ck.manifest["scheduler"], {})
A = jnp.asarray(alphas_cumprod(cfg), jnp.float32)
sf = vae.config.scaling_factor
ids = jnp.asarray(tokenize(load_tokenizer(ck.tokenizer_path), [""] * 16))
@jax.jit
def run(t, key):
    x0 = x * 2 - 1
    z = vae.apply(P["vae"], x0, method="encode").mean * sf
    c = vae.apply(P["vae"], x0 * (m[..., None] < 0.5), method="encode").mean * sf
    a = A[t]
    n = jax.random.normal(key, z.shape)
    xt = jnp.sqrt(a) * z + jnp.sqrt(1 - a) * n
    ctx = te.apply(P["text_encoder"], ids).last_hidden_state
    tok = ip.apply(P["image_proj"], image_embeds(ie, P["image_encoder"], x))
    eps = unet.apply(P["unet"], jnp.concatenate([xt, m[:, ::4, ::4, None], c], -1), jnp.full((16,), t), ctx, tok)
    if cfg.prediction_type == "v_prediction":
        z0 = jnp.sqrt(a) * xt - jnp.sqrt(1 - a) * eps
        eps = jnp.sqrt(a) * eps + jnp.sqrt(1 - a) * xt
    else:
        z0 = (xt - jnp.sqrt(1 - a) * eps) / jnp.sqrt(a)
    out = jnp.clip(vae.apply(P["vae"], z0 / sf, method="decode") / 2 + 0.5, 0, 1)
    rt = jnp.clip(vae.apply(P["vae"], z / sf, method="decode") / 2 + 0.5, 0, 1)
    return out, rt, jnp.mean((eps - n) ** 2)
def psnr(a, b, w):
    e = (((a - b) ** 2).mean(-1) * w).sum((1, 2)) / w.sum((1, 2))
    return float(np.mean(10 * np.log10(1 / np.maximum(e, 1e-10))))
for t in (20, 100, 300, 500, 800, 950):
    out, rt, error = run(t, jax.random.key(t))
    out, rt = np.asarray(out), np.asarray(rt)
    print(f"t={t:4d} eps mse {float(error):.4f} | one-step x0: PSNR outside {psnr(out, x, 1 - m):.2f} "
          f"inside {psnr(out, x, m):.2f} | VAE round trip outside {psnr(rt, x, 1 - m):.2f}")
