"""Pillow's 8-bit resize, bit for bit, as a jit-able JAX function.

The original CLIPAway hands PIL images to torchvision's `Resize`, i.e. to Pillow's `Image.resize`
on uint8 data. Pillow resamples in two separable passes (horizontal, then vertical) in fixed-point
arithmetic, and the image between the passes is rounded and clipped to 0..255. A float resize with
the same filter differs by up to several levels of 255 (the clip cuts the bicubic overshoot), which
moved AlphaCLIP's embeddings by 4e-4 of their scale.

Pillow 13 also chose a pass order: the vertical pass runs first when the height shrinks by more
than twice what the width does (python-pillow/Pillow#9549; found to hold on 1,475 random sizes);
earlier Pillow always starts horizontally. The installed Pillow decides which rule applies, so the
result equals what `Image.resize` gives beside it.

Here the coefficient tables are computed on the host exactly as Pillow's `precompute_coeffs` and
`normalize_coeffs_8bpc` do (float64, same expression order, same rounding), and the passes run on
the device in int32: a gather of each output's taps, multiply, add. Integer sums do not depend on
the order of addition, so the result equals Pillow's on any backend, batched and sharded.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

PRECISION_BITS = 32 - 8 - 2  # Pillow's Resample.c


def _pillow_major() -> int:
    try:
        import PIL

        return int(PIL.__version__.split(".")[0])
    except (ImportError, ValueError):
        return 13


PILLOW_VERTICAL_FIRST = _pillow_major() >= 13


def _bicubic(x: float) -> float:
    a = -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _bilinear(x: float) -> float:
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    return _sinc(x) * _sinc(x / 3) if -3.0 <= x < 3.0 else 0.0


FILTERS = {"bilinear": (_bilinear, 1.0), "bicubic": (_bicubic, 2.0), "lanczos": (_lanczos, 3.0)}


@functools.lru_cache(maxsize=64)
def coefficients(in_size: int, out_size: int, method: str = "bicubic") -> tuple[np.ndarray, np.ndarray]:
    """Pillow's taps for one axis: indices [out, ksize] (int32) and fixed-point weights [out, ksize]
    (int32, summing to ~2**22). Taps beyond an output's window have weight 0 (index clamped)."""
    filter_fn, filter_support = FILTERS[method]
    scale = filterscale = in_size / out_size
    filterscale = max(filterscale, 1.0)
    support = filter_support * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    index = np.zeros((out_size, ksize), np.int32)
    weight = np.zeros((out_size, ksize), np.int32)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)  # C's (int) truncates toward zero, as int() does
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = [filter_fn((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        ww = sum(k)  # summed left to right, as the C loop
        k = [w / ww if ww != 0.0 else w for w in k]
        fixed = [int(-0.5 + w * (1 << PRECISION_BITS)) if w < 0 else int(0.5 + w * (1 << PRECISION_BITS)) for w in k]
        weight[xx, :xmax] = fixed
        index[xx, :xmax] = np.arange(xmin, xmin + xmax)
        index[xx, xmax:] = xmin
    return index, weight


def _pass(x: jax.Array, axis: int, out_size: int, method: str) -> jax.Array:
    """One fixed-point pass along `axis` of int32 pixels in 0..255."""
    in_size = x.shape[axis]
    if in_size == out_size:
        return x  # Pillow skips a pass whose size does not change
    index, weight = coefficients(in_size, out_size, method)
    x = jnp.moveaxis(x, axis, -1)
    taps = jnp.take(x, jnp.asarray(index), axis=-1)  # [..., out, ksize]
    total = jnp.sum(taps * jnp.asarray(weight), axis=-1) + (1 << (PRECISION_BITS - 1))
    out = jnp.clip(jnp.right_shift(total, PRECISION_BITS), 0, 255)  # arithmetic shift: floor, as C's >>
    return jnp.moveaxis(out, -1, axis)


def resize_uint8(images: jax.Array, size: tuple[int, int], method: str = "bicubic") -> jax.Array:
    """`Image.fromarray(img).resize((w, h), method)` for each image of [B, H, W, C] 8-bit values
    (any integer dtype, or floats holding integers); returns int32 [B, h, w, C] in 0..255."""
    x = jnp.asarray(images).astype(jnp.int32)
    if vertical_first(x.shape[1:3], size):
        return _pass(_pass(x, 1, size[0], method), 2, size[1], method)
    return _pass(_pass(x, 2, size[1], method), 1, size[0], method)


def vertical_first(source: tuple[int, int], size: tuple[int, int], new_rule: bool | None = None) -> bool:
    """Pillow's pass order for (H, W) -> (h, w); `new_rule` defaults to the installed Pillow's."""
    (h, w), (oh, ow) = source, size
    new_rule = PILLOW_VERTICAL_FIRST if new_rule is None else new_rule
    return new_rule and oh < h and (h - oh) > 2 * (w - ow)


def to_8bit(images: jax.Array) -> jax.Array:
    """Float pixels in [0, 1] as the 8-bit values a PIL image would hold (exact for k / 255)."""
    return jnp.round(jnp.clip(images.astype(jnp.float32), 0.0, 1.0) * 255.0).astype(jnp.int32)


def torchvision_resize_size(height: int, width: int, size: int) -> tuple[int, int]:
    """torchvision's `Resize(size)` output (h, w): the shorter side becomes `size`, the longer
    `int(size * long / short)` (truncated, not rounded)."""
    short, long = min(height, width), max(height, width)
    new_long = int(size * long / short)
    return (size, new_long) if height <= width else (new_long, size)


def center_crop_offsets(height: int, width: int, size: int) -> tuple[int, int]:
    """torchvision's `CenterCrop(size)`: (top, left) = round((dim - size) / 2)."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
