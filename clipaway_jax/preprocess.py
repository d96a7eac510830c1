"""Image preprocessing in JAX (jit-able): AlphaCLIP's resize/crop/normalize and SD's inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ALPHA_MEAN, ALPHA_STD = 0.5, 0.26


def resize_shorter_and_crop(x: jax.Array, size: int, method: str) -> jax.Array:
    """[B, H, W, C]: resize so the shorter side is `size` (antialiased), then take the centre square,
    as torchvision's Resize(size) + CenterCrop(size)."""
    _, h, w, c = x.shape
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    x = jax.image.resize(x, (x.shape[0], new_h, new_w, c), method=method, antialias=True)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return x[:, top : top + size, left : left + size]


def alpha_clip_inputs(
    images: jax.Array,  # [B, H, W, 3] in [0, 1]
    masks: jax.Array,  # [B, H, W] in [0, 1]
    size: int = 224,
    *,
    pixels_too: bool = True,
) -> tuple[jax.Array | None, jax.Array]:
    """Normalized pixels [B, size, size, 3] and alpha [B, size, size, 1]; the alpha is cropped
    exactly as the image (the original resizes it to a square, misaligned for non-square inputs)."""
    pixels = None
    if pixels_too:
        pixels = resize_shorter_and_crop(images.astype(jnp.float32), size, "bicubic")
        pixels = (jnp.clip(pixels, 0.0, 1.0) - jnp.asarray(CLIP_MEAN)) / jnp.asarray(CLIP_STD)
    alpha = resize_shorter_and_crop(masks.astype(jnp.float32)[..., None], size, "linear")
    return pixels, (alpha - ALPHA_MEAN) / ALPHA_STD
