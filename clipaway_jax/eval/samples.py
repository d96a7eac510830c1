"""What is evaluated: each result paired by name with its source image and mask (listed as `infer`
lists them), its optional ground-truth background, and the removed object's box and class.

Results come from `results.jsonl` (status "done", or "skipped": there already) when the folder has one, else from
the PNGs in it.
Nothing in the inputs is ever written; every unpaired or unusable file is reported, not fatal.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipaway_jax.batch.sources import Listing, files_by_stem


@dataclass
class Sample:
    name: str
    load_source: Callable[[], tuple[np.ndarray, np.ndarray]]  # (image [H, W, 3], mask [H, W]) in [0, 1]
    result: Path
    ground_truth: Path | None = None
    box: tuple[int, int, int, int] | None = None  # (x, y, w, h) of the removed object, source pixels
    label: str | None = None
    source: str = ""  # where the source came from (a path or a tfds record), for messages and the cache
    source_files: tuple[Path, ...] = ()


@dataclass
class Labels:
    boxes: dict[str, list[tuple[tuple[int, int, int, int], str]]]  # name -> [(box, class name)]
    classes: list[str]  # the data set's class names (the CLIP@k vocabulary)


def result_files(folder: Path) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """name -> output file, and (name, reason) for the results that failed or are missing."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: results folder not found")
    listing = folder / "results.jsonl"
    if not listing.is_file():
        return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() == ".png"}, []
    found, problems = {}, []
    for number, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            problems.append((f"{listing}:{number}", "not a JSON line"))
            continue
        name, recorded = record.get("name"), Path(record.get("output") or f"{record.get('name')}.png")
        # The folder given wins over the path recorded when it was written (results folders get moved).
        output = folder / recorded.name if (folder / recorded.name).is_file() else recorded
        # "skipped": a complete output was there already, from a run that left no record (it was killed
        # before writing results.jsonl): it is a result like any other
        if record.get("status") not in ("done", "skipped"):
            problems.append((name, f"result {record.get('status')}: {record.get('reason', '')}".strip()))
        elif not output.is_file():
            problems.append((name, f"{output}: result file missing"))
        else:
            found[name] = output
    return found, problems


def recorded_bases(folder: Path) -> list[str]:
    """The base models `infer` recorded for the results (`--base`): what the metrics are of."""
    listing = folder / "results.jsonl"
    if not listing.is_file():
        return []
    bases = set()
    for line in listing.read_text(encoding="utf-8").splitlines():
        try:
            bases.add(json.loads(line).get("base", "inpaint"))
        except (json.JSONDecodeError, AttributeError):
            continue  # reported by result_files
    return sorted(bases)


def pair(results: dict[str, Path], listing: Listing, ground_truth: Path | None, labels: Labels | None,
         known: set[str] = frozenset()):  # fmt: skip
    """Samples for the names present on both sides, and the problems of the rest (`known`: names
    already reported, e.g. failed results)."""
    sources = {item.name: item for item in listing.items}
    problems = list(listing.problems)
    problems += [(name, "result without a source image/mask") for name in sorted(set(results) - set(sources))]
    problems += [(name, "source without a result") for name in sorted(set(sources) - set(results) - known)]
    truths = files_by_stem(ground_truth, "--ground-truth") if ground_truth is not None else {}
    samples = []
    for name in sorted(set(results) & set(sources)):
        truth = truths.get(name)
        if ground_truth is not None and truth is None:
            problems.append((name, f"no ground truth in {ground_truth} (image metrics skipped for it)"))
        item = sources[name]
        samples.append(Sample(name, item.load, results[name], truth, source=item.source, source_files=item.files))
    if labels is not None:
        for sample in samples:
            if sample.name not in labels.boxes:
                problems.append((sample.name, "no box in the labels file: the mask's box is used"))
    return samples, problems


def read_labels(path: Path) -> Labels:
    """COCO instances JSON (images/annotations/categories; names are file stems) or a CSV of
    `name,class[,x,y,w,h]` (header optional)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: labels file not found")
    if path.suffix.lower() == ".json":
        return _coco_labels(path)
    boxes: dict[str, list] = {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r and not r[0].startswith("#")]
    if rows and rows[0][0].strip().lower() == "name":
        rows = rows[1:]
    for number, row in enumerate(rows, start=1):
        if len(row) not in (2, 6):
            raise ValueError(f"{path}:{number}: expected name,class[,x,y,w,h], found {len(row)} columns")
        box = tuple(int(round(float(v))) for v in row[2:6]) if len(row) == 6 else None
        boxes.setdefault(row[0].strip(), []).append((box, row[1].strip()))
    classes = list(dict.fromkeys(label for entries in boxes.values() for _, label in entries))
    return Labels(boxes, classes)


def _coco_labels(path: Path) -> Labels:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        categories = {c["id"]: c["name"] for c in data["categories"]}
        files = {image["id"]: Path(image["file_name"]).stem for image in data["images"]}
        boxes: dict[str, list] = {}
        for ann in data["annotations"]:
            box = tuple(int(round(v)) for v in ann["bbox"])
            boxes.setdefault(files[ann["image_id"]], []).append((box, categories[ann["category_id"]]))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a COCO instances file ({type(err).__name__}: {err})") from None
    return Labels(boxes, list(categories.values()))


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of the mask's set pixels; None for an empty mask."""
    ys, xs = np.nonzero(mask >= 0.5)
    if ys.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def object_box(mask: np.ndarray, candidates) -> tuple[tuple[int, int, int, int] | None, str | None]:
    """The labelled box that overlaps the mask most (the removed object), else the mask's own box."""
    own = mask_box(mask)
    best, best_overlap = (own, None), 0.0
    for box, label in candidates or ():
        if box is None:
            best = (own, label) if best[1] is None else best
            continue
        x, y, w, h = box
        overlap = float((mask[max(y, 0) : y + h, max(x, 0) : x + w] >= 0.5).sum())
        if overlap > best_overlap:
            best, best_overlap = (box, label), overlap
    return best
