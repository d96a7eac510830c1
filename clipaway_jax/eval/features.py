"""Feature extraction for the metrics: jit-compiled, data-parallel over this process's devices.

Each process evaluates its share of the samples on its own devices (no collective is needed: the
features are per image); they meet in the per-sample cache, which a shared folder makes visible to
process 0 after a barrier. Inputs of a fixed size (CLIP crops at 224, CMMD at 336) are prepared on
the host with Pillow, exactly as the references do; full images keep their size and are batched by
shape (the Inception and LPIPS programs compile once per shape).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from PIL import Image

from clipaway_jax.pipelines.images import to_uint8
from clipaway_jax.preprocess import ALPHA_MEAN, ALPHA_STD, CLIP_MEAN, CLIP_STD
from clipaway_jax.resample import torchvision_resize_size


def local_mesh() -> Mesh:
    return Mesh(np.asarray(jax.local_devices()), ("data",))


class DeviceRunner:
    """Runs `fn(params, *arrays)` over batches split across the local devices, padding the last one."""

    def __init__(self, mesh: Mesh, per_device_batch: int = 8):
        self.mesh, self.batch = mesh, per_device_batch * mesh.size
        self._compiled: dict[str, Callable] = {}

    def __call__(self, name: str, fn: Callable, params, *arrays: np.ndarray) -> np.ndarray:
        if name not in self._compiled:
            self._compiled[name] = jax.jit(fn)
        outputs = []
        for start in range(0, len(arrays[0]), self.batch):
            chunk = [a[start : start + self.batch] for a in arrays]
            real = len(chunk[0])
            padded = [np.concatenate([c, np.repeat(c[-1:], self.batch - real, 0)]) if real < self.batch else c
                      for c in chunk]  # fmt: skip
            sharded = [jax.device_put(p, NamedSharding(self.mesh, PartitionSpec("data"))) for p in padded]
            outputs.append(np.asarray(self._compiled[name](params, *sharded))[:real])
        return np.concatenate(outputs)


def by_shape(arrays: list[np.ndarray]) -> dict[tuple, list[int]]:
    groups = defaultdict(list)
    for index, array in enumerate(arrays):
        groups[array.shape].append(index)
    return groups


def clip_crop_input(image: np.ndarray, box: tuple[int, int, int, int] | None, size: int) -> np.ndarray:
    """CLIP's `_transform(size)` on the box crop of an image in [0, 1]: Pillow bicubic Resize(size)
    (long side truncated), CenterCrop, normalize; [size, size, 3] float32. No box: the whole image."""
    return _clip_normalize(clip_crop(image, box, size))


def clip_crop(image: np.ndarray, box: tuple[int, int, int, int] | None, size: int) -> Image.Image:
    """The crop `clip_crop_input` normalizes (also the mini AlphaCLIP's training crops)."""
    pil = Image.fromarray(to_uint8(image))
    if box is not None:
        x, y, w, h = box
        pil = pil.crop((x, y, x + max(w, 1), y + max(h, 1)))
    new_h, new_w = torchvision_resize_size(pil.height, pil.width, size)
    pil = pil.resize((new_w, new_h), Image.BICUBIC)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return pil.crop((left, top, left + size, top + size))


def cmmd_input(image: np.ndarray, size: int) -> np.ndarray:
    """The CMMD reference's input: centre square (floor offsets), Pillow bicubic to size, CLIP-normalized."""
    pil = Image.fromarray(to_uint8(image))
    side = min(pil.size)
    left, top = (pil.width - side) // 2, (pil.height - side) // 2
    return _clip_normalize(pil.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC))


def _clip_normalize(pil: Image.Image) -> np.ndarray:
    """ToTensor and Normalize with CLIP's mean and std, channels last."""
    pixels = np.asarray(pil, np.float32) / 255.0
    return ((pixels - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)).astype(np.float32)


def inception_fn(module):
    return lambda params, images: module.apply(params, images)


def clip_embed_fn(module):
    def embed(params, pixels):
        alpha = jnp.ones((*pixels.shape[:3], 1), pixels.dtype) if module.config.alpha else None
        if alpha is not None:  # an AlphaCLIP tower (the mini world's metric CLIP): alpha = 1, the whole crop
            alpha = (alpha - ALPHA_MEAN) / ALPHA_STD
        embeds = module.apply(params, pixels, alpha).image_embeds.astype(jnp.float32)
        return embeds / jnp.linalg.norm(embeds, axis=-1, keepdims=True)

    return embed


def lpips_fn(module):
    return lambda params, x, y: module.apply(params, x, y)


def run_by_shape(runner: DeviceRunner, name: str, fn, params, *lists: list[np.ndarray]) -> list[np.ndarray]:
    """Per-item outputs of `fn` over lists of same-shape tuples, one compiled program per shape."""
    out: list = [None] * len(lists[0])
    for shape, indices in by_shape(lists[0]).items():
        arrays = [np.stack([lst[i] for i in indices]).astype(np.float32) for lst in lists]
        values = runner(f"{name}{shape}", fn, params, *arrays)
        for i, value in zip(indices, values):
            out[i] = value
    return out


def batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]
