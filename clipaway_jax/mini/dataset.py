"""The mini world as a tensorflow-datasets builder (array_record; no TensorFlow needed to build or read).

Splits are disjoint index ranges of the same generator (train first, then validation, then test), so
`render(seed, index)` regenerates any example. Images are PNG bytes, the format every reader of this
project takes: `infer --tfds mini_scenes:test` (image + mask), `train --tfds mini_scenes:train`.

    builder = build(data_dir, seed=0, size=64, splits={"train": 20000, "validation": 1000, "test": 1000})
    source = builder.as_data_source("test")   # or tfds.data_source("mini_scenes", split="test", data_dir=...)
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from clipaway_jax.mini.scenes import Scene, render

NAME = "mini_scenes"
DEFAULT_SPLITS = {"train": 20_000, "validation": 1_000, "test": 1_000}
VERSION = "1.1.0"  # 1.1.0: the objects map
TEXT_FIELDS = ("shape", "colour", "caption", "scene_caption", "background_kind")


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def example(scene: Scene, index: int) -> dict:
    return {
        "image": png(scene.image),
        "mask": png(scene.mask),
        "background": png(scene.background),  # the ground truth: the scene without the target
        "objects": png(scene.objects_map),  # which object shows in each pixel (0: none): the scene's segmentation
        "shape": scene.target.shape,
        "colour": scene.target.colour,
        "caption": scene.caption,
        "scene_caption": scene.scene_caption,
        "background_kind": scene.background_kind,
        "box": np.asarray(scene.box, np.int32),
        "area": np.float32(scene.area),
        "lookalike": scene.lookalike,
        "index": index,
    }


def split_ranges(splits: dict[str, int]) -> dict[str, tuple[int, int]]:
    ranges, start = {}, 0
    for name, count in splits.items():
        ranges[name] = (start, count)
        start += count
    return ranges


_CLASSES: dict[str, type] = {}


def _builder_class():
    if NAME in _CLASSES:  # tfds registers builder classes by name: define it once per process
        return _CLASSES[NAME]
    import tensorflow_datasets as tfds

    class MiniScenes(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """Procedural object-removal scenes with ground-truth backgrounds (see clipaway_jax.mini.scenes)."""

        name = NAME
        VERSION = tfds.core.Version(VERSION)
        code_path = None  # no checksums file beside the code (tfds' lookup of it needs importlib_resources)

        def __init__(self, *, seed: int = 0, size: int = 64, splits: dict[str, int] | None = None, **kwargs):
            self.seed, self.size, self.splits = seed, size, dict(splits or DEFAULT_SPLITS)
            super().__init__(**kwargs)

        def _info(self):
            raw = lambda: tfds.features.Tensor(shape=(), dtype=np.object_)
            features = {name: raw() for name in ("image", "mask", "background", "objects", *TEXT_FIELDS)}
            features |= {
                "box": tfds.features.Tensor(shape=(4,), dtype=np.int32),
                "area": tfds.features.Tensor(shape=(), dtype=np.float32),
                "lookalike": tfds.features.Tensor(shape=(), dtype=np.bool_),
                "index": tfds.features.Tensor(shape=(), dtype=np.int64),
            }
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features),
                                         metadata=tfds.core.MetadataDict(seed=self.seed, size=self.size))  # fmt: skip

        def _split_generators(self, dl_manager):
            return {name: self._generate_examples(start, count) for name, (start, count) in
                    split_ranges(self.splits).items()}  # fmt: skip

        def _generate_examples(self, start: int, count: int):
            for index in range(start, start + count):
                yield index, example(render(self.seed, index, self.size), index)

    _CLASSES[NAME] = MiniScenes
    return MiniScenes


def build(data_dir, seed: int = 0, size: int = 64, splits: dict[str, int] | None = None):
    """Generate (once) and return the builder; `builder.as_data_source(split)` reads it."""
    builder = _builder_class()(seed=seed, size=size, splits=splits, data_dir=str(data_dir),
                               file_format="array_record")  # fmt: skip
    builder.download_and_prepare()
    found = dict(builder.info.metadata or {})
    sizes = {name: info.num_examples for name, info in builder.info.splits.items()}
    if found.get("seed") != seed or found.get("size") != size or sizes != dict(splits or DEFAULT_SPLITS):
        raise ValueError(f"{data_dir}: already holds {NAME} with seed {found.get('seed')}, size {found.get('size')} "
                         f"and splits {sizes}; give another folder for seed {seed}, size {size}")  # fmt: skip
    return builder
