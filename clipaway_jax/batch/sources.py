"""Where batch inputs come from: a pair of folders (paired by file stem), a list file (CSV or JSONL),
or a tensorflow-datasets data source read randomly by index (no TensorFlow needed)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


@dataclass
class Item:
    """One image/mask pair. `load()` returns (image [H, W, 3] in [0, 1], mask [H, W] in [0, 1])."""

    name: str  # output stem, unique; also what the per-image seed derives from
    load: Callable[[], tuple[np.ndarray, np.ndarray]]
    source: str  # for messages
    size_hint: Callable[[], tuple[int, int]] | None = None  # (H, W) without decoding, when cheap
    files: tuple[Path, ...] = ()  # the image and mask files, when the item comes from files


@dataclass
class Listing:
    items: list[Item]
    problems: list[tuple[str, str]] = field(default_factory=list)  # (name or file, reason)


def _file_loader(image_path: Path, mask_path: Path):
    from clipaway_jax.pipelines.images import read_image, read_mask

    return lambda: (read_image(image_path), read_mask(mask_path))


def _header_size(path: Path):
    def size():
        from PIL import Image

        with Image.open(path) as image:
            return image.size[::-1]

    return size


def files_by_stem(folder: Path, label: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: {label} folder not found")
    files = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            files.setdefault(path.stem, path)
    return files


def from_folders(images: Path, masks: Path) -> Listing:
    """Pairs by stem (`cat.jpg` with `cat.png`), never by sorted position; reports the unpaired."""
    image_files, mask_files = files_by_stem(images, "--images"), files_by_stem(masks, "--masks")
    empty = [f"{folder} ({label}) holds no image files" for folder, label, files in
             ((images, "--images", image_files), (masks, "--masks", mask_files)) if not files]  # fmt: skip
    if empty:  # a wrong folder must not look like a finished job
        raise ValueError(f"no image/mask pairs: {'; '.join(empty)} ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    items = [
        Item(stem, _file_loader(path, mask_files[stem]), str(path), _header_size(path), (path, mask_files[stem]))
        for stem, path in sorted(image_files.items())
        if stem in mask_files
    ]
    problems = [(str(p), "no mask with this stem") for s, p in sorted(image_files.items()) if s not in mask_files]
    problems += [(str(p), "mask without an image") for s, p in sorted(mask_files.items()) if s not in image_files]
    return Listing(items, problems)


def from_list(path: Path) -> Listing:
    """CSV (`image,mask[,output]`, optional header) or JSONL (`{"image":..,"mask":..,"output":..}`);
    relative paths are relative to the list file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: list file not found")
    rows = _jsonl_rows(path) if path.suffix.lower() in (".jsonl", ".json") else _csv_rows(path)
    items, problems, seen = [], [], set()
    for line, row in rows:
        image, mask = row.get("image"), row.get("mask")
        if not image or not mask:
            problems.append((f"{path}:{line}", "needs an image and a mask"))
            continue
        image, mask = (path.parent / image), (path.parent / mask)
        name = Path(row.get("output") or image.stem).stem
        if name in seen:
            problems.append((f"{path}:{line}", f"output name {name!r} used twice"))
            continue
        seen.add(name)
        items.append(Item(name, _file_loader(image, mask), str(image), _header_size(image), (image, mask)))
    return Listing(items, problems)


def _csv_rows(path: Path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r and not r[0].startswith("#")]
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["image", "mask"]:
        header, rows = [c.strip().lower() for c in rows[0]], rows[1:]
        return [(i + 2, dict(zip(header, (c.strip() for c in r)))) for i, r in enumerate(rows)]
    keys = ("image", "mask", "output")
    return [(i + 1, dict(zip(keys, (c.strip() for c in r)))) for i, r in enumerate(rows)]


def _jsonl_rows(path: Path):
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append((i, json.loads(line)))
            except json.JSONDecodeError as err:
                rows.append((i, {"_error": str(err)}))
    return rows


def from_tfds(spec: str, data_dir: str | None, image_key: str = "image", mask_key: str = "mask") -> Listing:
    """`NAME:SPLIT` through `tfds.data_source` (array_record, random access, no TensorFlow)."""
    import tensorflow_datasets as tfds

    name, _, split = spec.partition(":")
    source = tfds.data_source(name, split=split or "train", data_dir=data_dir)
    items = []
    for index in range(len(source)):
        # records are named by index: reading each record's own name would decode the whole dataset
        items.append(Item(f"{index:08d}", _record_loader(source, index, image_key, mask_key), f"{spec}[{index}]"))
    return Listing(items)


def _record_loader(source, index: int, image_key: str, mask_key: str):
    def load():
        record = source[index]
        image = _decode(record[image_key], rgb=True)
        mask = _decode(record[mask_key], rgb=False)
        return image, mask

    return load


def _decode(value, rgb: bool) -> np.ndarray:
    """A record field: encoded bytes (PNG/JPEG) or an array (uint8 0..255 or float 0..1)."""
    if isinstance(value, bytes | bytearray):
        from PIL import Image

        with Image.open(io.BytesIO(value)) as image:
            value = np.asarray(image.convert("RGB" if rgb else "L"))
    array = np.asarray(value)
    array = array.astype(np.float32) / 255.0 if array.dtype == np.uint8 else array.astype(np.float32)
    if rgb and array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if not rgb and array.ndim == 3:
        array = array[..., 0]
    return array
