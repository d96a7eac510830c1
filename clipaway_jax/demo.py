"""`clipaway-jax demo`: the built-in tiny model set, through the real convert -> load path, every
network run compiled on this machine. Random weights remove nothing; this shows the stages work.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def build_tiny_checkpoint(out: Path) -> Path:
    """Write the tiny published-layout files and convert them, exactly as a user's real files would be."""
    from clipaway_jax.convert.published import Sources, convert
    from clipaway_jax.tiny import write_published

    files = write_published(out / "tiny-published")
    checkpoint = out / "tiny-checkpoint"
    sources = Sources(**{name: files[name] for name in Sources.__dataclass_fields__})
    convert(sources, checkpoint, force=True, progress=lambda msg: print(f"  {msg}"))
    return checkpoint


def _timed(label: str, fn, *args):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    print(f"  {label:<44} {time.perf_counter() - start:6.2f} s (incl. compile)")
    return out


def run_networks(checkpoint_path: Path) -> dict[str, np.ndarray]:
    """One forward of every inference network on the checkpoint; returns the shapes it produced."""
    from clipaway_jax.checkpoint import load_checkpoint
    from clipaway_jax.models import focused_embeddings, projection_block
    from clipaway_jax.tokenizer import load_tokenizer, tokenize

    ckpt = load_checkpoint(checkpoint_path)
    p = {name: {"params": tree} for name, tree in ckpt.params.items()}
    unet, vae, text = ckpt.module("unet"), ckpt.module("vae"), ckpt.module("text_encoder")
    alpha_clip, mlp, image_proj = ckpt.module("alpha_clip"), ckpt.module("mlp"), ckpt.module("image_proj")
    ids = tokenize(load_tokenizer(ckpt.tokenizer_path), ["", "monochrome, lowres, bad anatomy"])
    size = 8 * unet.config.sample_size
    rng = np.random.RandomState(0)
    images = rng.rand(2, size, size, 3).astype(np.float32)
    masks = np.zeros((2, size, size), np.float32)
    masks[:, size // 4 : size // 2, size // 4 : 3 * size // 4] = 1.0

    context = _timed("text encoder", jax.jit(text.apply), p["text_encoder"], ids).last_hidden_state
    e_f, e_b = _timed(
        "AlphaCLIP focused embeddings (e_f, e_b)",
        jax.jit(focused_embeddings, static_argnums=0),
        alpha_clip,
        p["alpha_clip"],
        images,
        masks,
    )
    f, b = jnp.split(_timed("MLP", jax.jit(mlp.apply), p["mlp"], jnp.concatenate([e_f, e_b])), 2)
    e = _timed("projection block", projection_block, b, f)
    tokens = _timed("IP-Adapter image projection", jax.jit(image_proj.apply), p["image_proj"], e)
    encode = jax.jit(lambda params, x: vae.apply(params, x, method="encode").mean)
    latents = _timed("VAE encode", encode, p["vae"], images * 2 - 1) * vae.config.scaling_factor
    sample = jnp.concatenate([latents, latents[..., :1] * 0, latents], axis=-1)
    eps = _timed("UNet (9-ch, IP-Adapter tokens)", jax.jit(unet.apply), p["unet"], sample, 981, context, tokens)
    decode = jax.jit(lambda params, z: vae.apply(params, z, method="decode"))
    pixels = _timed("VAE decode", decode, p["vae"], latents / vae.config.scaling_factor)
    return {
        "text tokens": context,
        "e_f": e_f,
        "projected e": e,
        "image tokens": tokens,
        "noise estimate": eps,
        "decoded": pixels,
    }


def main(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"[1/2] building the tiny built-in model set (seeded random weights) in {out}")
    checkpoint = build_tiny_checkpoint(out)
    print(f"[2/2] loading {checkpoint} and running every network (jit-compiled)")
    shapes = run_networks(checkpoint)
    for name, value in shapes.items():
        print(f"  {name:<16} {tuple(value.shape)}  finite={bool(np.isfinite(np.asarray(value)).all())}")
    print(
        "done. These are random weights: they remove nothing. Convert your real files with "
        "`clipaway-jax convert --help` to use the published models."
    )
    return 0
