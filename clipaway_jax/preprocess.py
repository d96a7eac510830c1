"""Image preprocessing in JAX (jit-able): AlphaCLIP's resize/crop/normalize and SD's inputs.

The pixels follow the original exactly: the original gives AlphaCLIP a PIL image, so torchvision's
`Resize(size, BICUBIC)` is Pillow's 8-bit resize (reproduced bit for bit by `resample`), the long
side is truncated, `CenterCrop` rounds its offsets, then `ToTensor` and `Normalize` in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from clipaway_jax.resample import center_crop_offsets, resize_uint8, to_8bit, torchvision_resize_size

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ALPHA_MEAN, ALPHA_STD = 0.5, 0.26


def _center_crop(x: jax.Array, size: int) -> jax.Array:
    top, left = center_crop_offsets(x.shape[1], x.shape[2], size)
    return x[:, top : top + size, left : left + size]


def clip_pixels(images: jax.Array, size: int) -> jax.Array:
    """CLIP's `_transform(size)` on 8-bit images: [B, H, W, 3] in [0, 1] -> normalized [B, size, size, 3].
    The images are quantized to 8 bits first, as the PIL images the original resizes are."""
    _, h, w, _ = images.shape
    resized = resize_uint8(to_8bit(images), torchvision_resize_size(h, w, size), "bicubic")
    pixels = _center_crop(resized, size).astype(jnp.float32) / 255.0
    return (pixels - jnp.asarray(CLIP_MEAN, jnp.float32)) / jnp.asarray(CLIP_STD, jnp.float32)


def resize_shorter_and_crop(x: jax.Array, size: int, method: str) -> jax.Array:
    """[B, H, W, C] floats: resize so the shorter side is `size` (antialiased, as torch's tensor resize),
    then take the centre square, with torchvision's Resize(size) + CenterCrop(size) geometry."""
    _, h, w, c = x.shape
    new_h, new_w = torchvision_resize_size(h, w, size)
    x = jax.image.resize(x, (x.shape[0], new_h, new_w, c), method=method, antialias=True)
    return _center_crop(x, size)


def alpha_clip_inputs(
    images: jax.Array,  # [B, H, W, 3] in [0, 1]
    masks: jax.Array,  # [B, H, W] in [0, 1]
    size: int = 224,
    *,
    pixels_too: bool = True,
) -> tuple[jax.Array | None, jax.Array]:
    """Normalized pixels [B, size, size, 3] and alpha [B, size, size, 1]. The alpha is resized as the
    original's tensor `Resize` (bilinear, antialiased) but cropped exactly as the image: the original
    squashes it to a square, which is the same for square inputs and misaligned for others."""
    pixels = clip_pixels(images, size) if pixels_too else None
    alpha = resize_shorter_and_crop(masks.astype(jnp.float32)[..., None], size, "linear")
    return pixels, (alpha - ALPHA_MEAN) / ALPHA_STD
