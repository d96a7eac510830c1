"""Host-side image I/O and geometry for the pipelines: read, fit to a multiple of 8, undo the fit,
write atomically. Device-side mask ops (binarize, dilate, latent-grid mask) are JAX functions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, UnidentifiedImageError

from clipaway_jax.atomic import write_atomic


class ImageError(ValueError):
    """An input image or mask cannot be used."""


def read_image(path: str | Path) -> np.ndarray:
    """RGB float32 [H, W, 3] in [0, 1]; alpha is dropped (composited on black) and grayscale expanded."""
    with _open(path) as image:
        if image.mode in ("RGBA", "LA", "P"):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (0, 0, 0, 255))
            image = Image.alpha_composite(background, image)
        return np.asarray(image.convert("RGB"), np.float32) / 255.0


def read_mask(path: str | Path) -> np.ndarray:
    """Float32 [H, W] in [0, 1] from the luminance (white = remove)."""
    with _open(path) as image:
        if image.mode in ("RGBA", "LA"):
            image = image.convert("RGBA").split()[-1] if _is_alpha_only(image) else image.convert("L")
        return np.asarray(image.convert("L"), np.float32) / 255.0


def _is_alpha_only(image: Image.Image) -> bool:
    """A mask drawn as transparency: uniform colour, information in the alpha channel."""
    rgb = np.asarray(image.convert("RGB"))
    return bool(rgb.min() == rgb.max())


def _open(path: str | Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ImageError(f"{path}: not a readable image ({err})") from None
    return image


@dataclass(frozen=True)
class Fit:
    """How an input was fitted to the model's size, so the output can be mapped back exactly."""

    original: tuple[int, int]  # (H, W) of the input
    size: tuple[int, int]  # (H, W) fed to the model, multiples of SIZE_MULTIPLE
    content: tuple[int, int, int, int]  # (top, left, height, width) of the image inside `size`


SIZE_MULTIPLE = 8  # SD's VAE factor: diffusers' inpainting pipeline takes any multiple of it


def plan_fit(original: tuple[int, int], size: tuple[int, int] | None, keep_aspect: bool) -> Fit:
    """`size=None` keeps the input's size rounded down to a multiple of 8, as diffusers (min 8)."""
    h, w = original
    if size is None:
        size = tuple(max(SIZE_MULTIPLE, s - s % SIZE_MULTIPLE) for s in (h, w))
    if any(s % SIZE_MULTIPLE for s in size):
        raise ImageError(f"size {size} must be multiples of {SIZE_MULTIPLE}")
    if not keep_aspect:
        return Fit(original, size, (0, 0, *size))
    scale = min(size[0] / h, size[1] / w)
    ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
    top, left = (size[0] - ch) // 2, (size[1] - cw) // 2
    return Fit(original, size, (top, left, ch, cw))


# How each base resizes an 8-bit input to the model size with Pillow, as its original code: CLIPAway
# resizes with Pillow's default (bicubic), Blended Latent Diffusion's script with BILINEAR.
INPUT_FILTER = {"inpaint": Image.BICUBIC, "blended": Image.BILINEAR}


def apply_fit(array: np.ndarray, fit: Fit, resample: int) -> np.ndarray:
    """Resize into the content box and pad the rest with zeros (black image / keep-out mask)."""
    top, left, ch, cw = fit.content
    resized = _resize(array, (ch, cw), resample)
    out = np.zeros((*fit.size, *array.shape[2:]), np.float32)
    out[top : top + ch, left : left + cw] = resized
    return out


def undo_fit(array: np.ndarray, fit: Fit) -> np.ndarray:
    """Crop the content box and resize back to the input's size."""
    top, left, ch, cw = fit.content
    crop = array[top : top + ch, left : left + cw]
    return crop if (ch, cw) == fit.original else _resize(crop, fit.original, Image.BICUBIC)


def _resize(array: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    if array.shape[:2] == size:
        return array.astype(np.float32)
    if array.ndim == 3 and array.shape[-1] == 3 and _is_8bit(array):
        # An image read from an 8-bit file is resized as the original does: Pillow on the uint8 RGB image.
        resized = Image.fromarray(to_uint8(array)).resize(size[::-1], resample)
        return np.asarray(resized, np.float32) / 255.0
    if array.ndim == 2:
        image = Image.fromarray(array.astype(np.float32), mode="F")
        return np.asarray(image.resize(size[::-1], resample), np.float32)
    channels = [_resize(array[..., c], size, resample) for c in range(array.shape[-1])]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0)


def _is_8bit(array: np.ndarray) -> bool:
    return bool(np.array_equal(to_uint8(array).astype(np.float32) / 255.0, array))


def binarize(masks: jax.Array) -> jax.Array:
    """diffusers' mask processor: 1 where >= 0.5, else 0."""
    return (masks >= 0.5).astype(jnp.float32)


def dilate(masks: jax.Array, kernel: int, iterations: int) -> jax.Array:
    """cv2.dilate with a ones(kernel, kernel) kernel, `iterations` times ([B, H, W])."""
    pad = kernel // 2
    for _ in range(iterations):
        masks = jax.lax.reduce_window(
            masks, -jnp.inf, jax.lax.max, (1, kernel, kernel), (1, 1, 1), ((0, 0), (pad, pad), (pad, pad))
        )
    return masks


def feather(masks: jax.Array, radius: int) -> jax.Array:
    """A soft version of a binary mask (box blur of the dilated mask) for pasting pixels back."""
    if radius <= 0:
        return masks
    grown = dilate(masks, 2 * radius + 1, 1)
    size = 2 * radius + 1
    summed = jax.lax.reduce_window(
        grown, 0.0, jax.lax.add, (1, size, size), (1, 1, 1), ((0, 0), (radius, radius), (radius, radius))
    )
    return jnp.clip(summed / size**2, 0.0, 1.0)


def smooth_fill(images: jax.Array, masks: jax.Array) -> jax.Array:
    """The hole (masks >= 0.5) filled from its context by push-pull interpolation (Gortler et al. 1996):
    the known pixels' sums and counts on a halving pyramid, each level's means pulled back up into the
    cells of the finer level that hold no known pixel. Outside the hole the images unchanged; inside,
    smooth: the context's colour and no detail. [B, H, W, C], [B, H, W] -> [B, H, W, C]."""
    known = (masks < 0.5).astype(images.dtype)[..., None]
    pyramid = [(images * known, known)]
    while min(pyramid[-1][1].shape[1:3]) > 1:
        values, weights = pyramid[-1]
        pyramid.append((_halve(values), _halve(weights)))
    values, weights = pyramid[-1]
    filled = values / jnp.maximum(weights, 1e-12)
    for values, weights in reversed(pyramid[:-1]):
        coarse = jax.image.resize(filled, values.shape, "linear")
        sure = jnp.minimum(weights, 1.0)  # a cell with any known pixel under it keeps its own mean
        filled = values / jnp.maximum(weights, 1e-12) * sure + coarse * (1 - sure)
    return filled


def seamless(images: jax.Array, masks: jax.Array, result: jax.Array) -> jax.Array:
    """The result's hole shifted by the membrane of the differences between the input and the result
    around it (their smooth fill: Farbman et al. 2009's instant cloning, push-pull for the interpolation),
    so that the fill meets the input's colours at its edge and keeps its own detail; outside the hole the
    input. [B, H, W, 3] in [0, 1], masks [B, H, W] -> [B, H, W, 3]."""
    return jnp.clip(result + smooth_fill(images - result, masks), 0.0, 1.0)


def _halve(x: jax.Array) -> jax.Array:
    """2x2 sum pooling to half the size, an odd edge padded with zeros (zero weight)."""
    b, h, w, c = x.shape
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    return x.reshape(b, (h + 1) // 2, 2, (w + 1) // 2, 2, c).sum((2, 4))


def paste_at_input_size(original: np.ndarray, mask: np.ndarray, result: np.ndarray, model_size: tuple[int, int],
                        options) -> np.ndarray:  # fmt: skip
    """Paste-back at the input's own resolution. The program pastes at the model size; once that result is
    resized back, the input's own pixels return outside the mask grown and feathered as in the program
    (distances scaled to the input size), so unmasked pixels are the input's exactly."""
    if options.paste_back <= 0 or original.shape[:2] == tuple(model_size):
        return result
    scale = max(original.shape[0] / model_size[0], original.shape[1] / model_size[1])
    grow = round(options.dilate_iterations * (options.dilate_kernel // 2) * scale)
    grown = dilate(jnp.asarray(mask, jnp.float32)[None], 2 * grow + 1, 1) if grow else jnp.asarray(mask)[None]
    soft = np.asarray(feather(grown, max(1, round(options.paste_back * scale))))[0, ..., None]
    return original * (1 - soft) + result * soft


def to_uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(images) * 255.0), 0, 255).astype(np.uint8)


def write_png_atomic(path: str | Path, image: np.ndarray) -> Path:
    """Write via a temporary file in the same folder and rename, so a reader never sees half a file."""
    pixels = Image.fromarray(to_uint8(image) if image.dtype != np.uint8 else image)
    return write_atomic(path, lambda f: pixels.save(f, format="PNG"))


def grid(panels: list[np.ndarray], pad: int = 4) -> np.ndarray:
    """Side-by-side panels (float [H, W, 3] or [H, W]) with a white gutter, as uint8."""
    height = max(p.shape[0] for p in panels)
    tiles = []
    for p in panels:
        p = np.repeat(p[..., None], 3, axis=-1) if p.ndim == 2 else p
        tile = np.ones((height, p.shape[1], 3), np.float32)
        tile[: p.shape[0]] = p
        tiles += [tile, np.ones((height, pad, 3), np.float32)]
    return to_uint8(np.concatenate(tiles[:-1], axis=1))
