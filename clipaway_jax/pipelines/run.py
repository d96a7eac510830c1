"""Files in, files out: read and check an image/mask pair, fit it to the model, remove, map back, write.

Shared by `clipaway-jax remove`, the demo and batch inference. Every problem with an input is
either fixed with a note (mask of another size, non-binary mask, alpha/grayscale image) or
reported as an `ImageError` naming the file; user files are never written to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from clipaway_jax.pipelines.images import (
    INPUT_FILTER,
    Fit,
    ImageError,
    apply_fit,
    grid,
    paste_at_input_size,
    plan_fit,
    read_image,
    read_mask,
    undo_fit,
)


@dataclass
class Prepared:
    name: str
    image: np.ndarray  # [H, W, 3] in [0, 1], fitted to the model size
    mask: np.ndarray  # [H, W] in {0, 1}, fitted
    original: np.ndarray  # the input image as read
    original_mask: np.ndarray  # the mask as used (resized to the image, binarized)
    fit: Fit
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.original_mask.any()


def prepare(image_path, mask_path, size: tuple[int, int] | None, keep_aspect: bool, name: str | None = None,
            base: str = "inpaint") -> Prepared:  # fmt: skip
    image, raw_mask = read_image(image_path), read_mask(mask_path)
    return prepare_arrays(image, raw_mask, size, keep_aspect, name or Path(image_path).stem, base)


def prepare_arrays(image: np.ndarray, raw_mask: np.ndarray, size: tuple[int, int] | None, keep_aspect: bool,
                   name: str, base: str = "inpaint") -> Prepared:  # fmt: skip
    """`prepare` on arrays already read: image [H, W, 3] and mask [h, w] in [0, 1]; the image is resized
    with the base's own filter (`INPUT_FILTER`)."""
    notes = []
    if np.any((raw_mask > 0) & (raw_mask < 1)):
        notes.append("mask is not binary: binarized at 0.5")
    raw_mask = (raw_mask >= 0.5).astype(np.float32)
    mask = raw_mask
    if mask.shape != image.shape[:2]:
        notes.append(f"mask {mask.shape[1]}x{mask.shape[0]} resized to the image's {image.shape[1]}x{image.shape[0]}")
        mask = np.asarray(Image.fromarray(mask).resize(image.shape[1::-1], Image.NEAREST), np.float32)
    if not mask.any():
        notes.append("mask is empty: output = input")
    fit = plan_fit(image.shape[:2], size, keep_aspect)
    fitted_image = apply_fit(image, fit, INPUT_FILTER[base])
    if keep_aspect:
        fitted_mask = apply_fit(mask, fit, Image.NEAREST)
    else:  # squashed, the mask file goes to the model size directly, as the original's
        fitted_mask = apply_fit(raw_mask, plan_fit(raw_mask.shape, fit.size, keep_aspect=False), Image.NEAREST)
    fitted_mask = (fitted_mask >= 0.5).astype(np.float32)
    return Prepared(name, fitted_image, fitted_mask, image, mask, fit, notes)


def finish(prepared: Prepared, output: np.ndarray | None, options=None) -> np.ndarray:
    """The result at the input's size ([H, W, 3] float); the input itself when the mask is empty. With
    `options.paste_back`, the input's own pixels outside the mask (see `paste_at_input_size`)."""
    if output is None or prepared.empty:
        return prepared.original
    if prepared.fit.content == (0, 0, *prepared.fit.size) and prepared.fit.size == prepared.fit.original:
        return output
    result = undo_fit(output, prepared.fit)
    if options is None:
        return result
    return paste_at_input_size(prepared.original, prepared.original_mask, result, prepared.fit.size, options)


def comparison_grid(prepared: Prepared, result: np.ndarray, extra: list[np.ndarray] = ()) -> np.ndarray:
    """input | mask | [extra panels] | result, all at the result's size."""
    h, w = result.shape[:2]
    panels = [prepared.original, prepared.original_mask, *extra, result]
    return grid([resize_panel(p, (h, w)) for p in panels])


def resize_panel(panel: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A picture panel at (h, w): bicubic for images, nearest for masks ([H, W])."""
    if panel.shape[:2] == size:
        return panel
    mode = Image.NEAREST if panel.ndim == 2 else Image.BICUBIC
    image = Image.fromarray((np.clip(panel, 0, 1) * 255).astype(np.uint8))
    return np.asarray(image.resize(size[::-1], mode), np.float32) / 255.0


def check_output(path: Path, overwrite: bool, inputs: tuple[Path, ...] = ()) -> None:
    if any(path.resolve() == Path(p).resolve() for p in inputs):
        raise ImageError(f"{path}: the output would overwrite an input; choose another -o")
    if path.exists() and not overwrite:
        raise ImageError(f"{path}: already exists (use --overwrite to replace it)")


def default_size(pipe) -> tuple[int, int]:
    side = pipe.nets.unet.config.sample_size * pipe.nets.vae.config.scale_factor
    return side, side


def enable_compilation_cache(directory: str | None) -> str | None:
    """JAX's persistent compilation cache, so a second process start does not recompile."""
    import jax

    if not directory:
        return None
    directory = os.path.expanduser(directory)
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory


DEFAULT_CACHE_DIR = os.environ.get("CLIPAWAY_JAX_CACHE", "~/.cache/clipaway-jax/xla")


def embedding_panels(pipe, prepared: Prepared, options, **kwargs) -> list[np.ndarray]:
    """The original's diagnostic: whole-image generations from MLP(e_f), MLP(e_b) and the projection."""
    panels = []
    for source in ("focused", "background", "projected"):
        out = pipe.remove(prepared.image[None], prepared.mask[None], names=[prepared.name], options=options,
                          token_source=source, inpaint_full=True, **kwargs)  # fmt: skip
        panels.append(finish(prepared, out[0]))
    return panels
