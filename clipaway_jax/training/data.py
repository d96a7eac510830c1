"""Training data: a tensorflow-datasets builder for a local image folder (array_record shards, read
with `tfds.data_source`, no TensorFlow), seeded random masks, and a resumable per-host batch iterator.

COCO 2017: with TensorFlow installed, tfds' `coco/2017` works as a source directly; without it, point
`build_folder_dataset` at the unpacked `train2017/` folder. Places: the same, at its image folder.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def _builder_class():
    import tensorflow_datasets as tfds

    class FolderImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """Images (and optional masks, paired by stem) from local folders, stored as encoded bytes."""

        VERSION = tfds.core.Version("1.0.0")

        def __init__(self, *, images_dir=None, masks_dir=None, **kwargs):
            self._images_dir, self._masks_dir = images_dir, masks_dir
            super().__init__(**kwargs)

        def _info(self):
            raw = lambda: tfds.features.Tensor(shape=(), dtype=np.object_)
            features = tfds.features.FeaturesDict({"image": raw(), "mask": raw(), "name": raw()})
            return tfds.core.DatasetInfo(builder=self, features=features)

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            masks = {}
            if self._masks_dir:
                masks = {p.stem: p for p in Path(self._masks_dir).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS}
            for path in sorted(Path(self._images_dir).iterdir()):
                if path.suffix.lower() in IMAGE_EXTENSIONS:
                    mask = masks[path.stem].read_bytes() if path.stem in masks else b""
                    yield path.stem, {"image": path.read_bytes(), "mask": mask, "name": path.stem}

    return FolderImages


_BUILDERS: dict[str, type] = {}


def build_folder_dataset(images_dir, data_dir, masks_dir=None, name: str = "folder_images"):
    """Write the folder as an array_record tfds dataset under data_dir (once); returns its data source,
    readable later without this code as `tfds.data_source(name, data_dir=data_dir)`."""
    if name not in _BUILDERS:  # tfds registers builder classes by name, once per process
        _BUILDERS[name] = type(name.title().replace("_", ""), (_builder_class(),), {"name": name})
    cls = _BUILDERS[name]
    builder = cls(images_dir=images_dir, masks_dir=masks_dir, data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare()
    return builder.as_data_source("train")


def decode_image(data: bytes, size: int) -> np.ndarray:
    """RGB float32 [size, size, 3] in [0, 1]: CLIPAway's training resize (square, aspect not kept)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB").resize((size, size), Image.BICUBIC), np.float32) / 255.0


# --- random masks ---------------------------------------------------------------------------------


def random_mask(rng: np.random.Generator, size: int, area: tuple[float, float] = (0.01, 0.4)) -> np.ndarray:
    """Free-form strokes and boxes, drawn until the covered fraction is inside `area` (seeded)."""
    low, high = area
    target = rng.uniform(low, high)
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(200):
        if rng.random() < 0.5:
            _box(draw, rng, size, target)
        else:
            _stroke(draw, rng, size)
        covered = np.asarray(canvas).mean() / 255.0
        if covered >= target:
            break
    mask = (np.asarray(canvas) > 127).astype(np.float32)
    return _trim(mask, high, rng)


def _box(draw, rng, size, target):
    side = max(2, int(size * np.sqrt(target) * rng.uniform(0.3, 0.9)))
    h, w = side, max(2, int(side * rng.uniform(0.5, 2.0)))
    top, left = rng.integers(0, max(1, size - h)), rng.integers(0, max(1, size - w))
    draw.rectangle((left, top, left + w, top + h), fill=255)


def _stroke(draw, rng, size):
    points = [tuple(rng.integers(0, size, 2))]
    for _ in range(rng.integers(2, 6)):
        angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.3) * size
        x, y = points[-1]
        points.append((int(np.clip(x + length * np.cos(angle), 0, size - 1)),
                       int(np.clip(y + length * np.sin(angle), 0, size - 1))))  # fmt: skip
    draw.line(points, fill=255, width=int(rng.integers(max(2, size // 32), max(3, size // 8))), joint="curve")


def _trim(mask: np.ndarray, high: float, rng) -> np.ndarray:
    """Erase rows from the bottom of the covered area until the fraction is at most `high`."""
    while mask.mean() > high:
        rows = np.nonzero(mask.any(axis=1))[0]
        mask[rows[-1]] = 0
    return mask


# --- resumable per-host batches -------------------------------------------------------------------


class ArrayLoader:
    """Batches indexed out of arrays already in host memory: a cache of what frozen networks make of every
    example (`cache_latents`, `cache_embeddings`)."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays

    def __call__(self, indices: np.ndarray) -> dict:
        return {name: array[np.asarray(indices)] for name, array in self.arrays.items()}


class KeptLoader:
    """`load` with each example's arrays kept in host memory after its first load: from the second epoch on,
    a batch is indexed out of arrays instead of decoded and drawn again (in the mini recipe the contrastive
    pairs' loading took a tenth of each step). Exact, because this project's loaders give an example the
    same arrays at every call (its randomness is seeded by its index). Keeps nothing, and only calls `load`,
    when the whole set would take more than `budget` bytes."""

    def __init__(self, load: Callable[[np.ndarray], dict], size: int, budget: int):
        self.load, self.size, self.budget = load, size, budget
        self.arrays: dict[str, np.ndarray] | None = None
        self.filled = np.zeros(size, bool)
        self.passing = False  # the set is too big to keep

    def __call__(self, indices: np.ndarray) -> dict:
        indices = np.asarray(indices)
        if self.passing:
            return self.load(indices)
        todo = np.unique(indices[~self.filled[indices]])
        if len(todo):
            fresh = self.load(todo)
            if self.arrays is None and not self._allocate(fresh):
                return {name: value[np.searchsorted(todo, indices)] for name, value in fresh.items()}
            for name, value in fresh.items():
                self.arrays[name][todo] = value
            self.filled[todo] = True
        return {name: array[indices] for name, array in self.arrays.items()}

    def _allocate(self, fresh: dict) -> bool:
        needed = sum(value[0].nbytes for value in fresh.values()) * self.size
        self.passing = needed > self.budget
        if not self.passing:  # np.empty: pages are only taken as examples arrive
            self.arrays = {name: np.empty((self.size, *v.shape[1:]), v.dtype) for name, v in fresh.items()}
        return not self.passing


def host_memory() -> int:
    """This host's physical memory in bytes."""
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass
class LoaderState:
    epoch: int = 0
    position: int = 0  # global examples consumed in this epoch


class BatchIterator:
    """Seeded epoch shuffles; each process takes its slice of every global batch; fixed shapes
    (a ragged epoch tail is dropped). `state` is saved with checkpoints, so resuming continues at the
    exact example where training stopped."""

    def __init__(self, size: int, global_batch: int, load: Callable[[np.ndarray], dict], seed: int = 0,
                 process_index: int = 0, process_count: int = 1, state: LoaderState | None = None):  # fmt: skip
        if global_batch % process_count:
            raise ValueError(f"global batch {global_batch} must divide over {process_count} processes")
        if size < global_batch:
            raise ValueError(f"dataset of {size} examples is smaller than one global batch ({global_batch})")
        self.size, self.global_batch, self.load, self.seed = size, global_batch, load, seed
        self.process_index, self.process_count = process_index, process_count
        self.state = state or LoaderState()

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self.state.position + self.global_batch > self.size:
            self.state = LoaderState(self.state.epoch + 1, 0)
        order = self._order(self.state.epoch)
        start = self.state.position
        indices = order[start : start + self.global_batch]
        local = self.global_batch // self.process_count
        mine = indices[self.process_index * local : (self.process_index + 1) * local]
        self.state = LoaderState(self.state.epoch, start + self.global_batch)
        return self.load(mine)
