"""Batch removal over many images, data-parallel over every device of every host, resumable.

Each host takes its share of the (sorted) work list, loads and fits its images, and contributes its
slice of each global batch (`jax.make_array_from_process_local_data`); the compiled program keeps
the batch split over the mesh at every sampling step; each host writes only its own outputs,
atomically. Per-image keys derive from (seed, name), so pixels do not depend on the device count,
host count, batch size or which images share a batch.
"""

from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from clipaway_jax.batch.sources import Item
from clipaway_jax.pipelines.clipaway import TOKEN_SOURCES, CLIPAwayPipeline, RemovalOptions, image_keys
from clipaway_jax.pipelines.images import (
    INPUT_FILTER,
    ImageError,
    apply_fit,
    paste_at_input_size,
    plan_fit,
    undo_fit,
    write_png_atomic,
)
from clipaway_jax.sharding import DATA, FSDP, batch_sharding


@dataclass
class BatchSettings:
    out: Path
    size: tuple[int, int] | None  # None: each image's own size rounded down to 8 (bucketed by shape)
    keep_aspect: bool = False
    per_device_batch: int = 1
    overwrite: bool = False
    grid: bool = False
    resize_masks: bool = False
    seed: int = 42
    guidance_scale: float = 7.5
    ip_scale: float = 1.0
    workers: int = 4
    image_tokens: str = "projected"  # or "focused" / "background": MLP(e_f) / MLP(e_b) without the projection
    negative_prompt: str = "monochrome, lowres, bad anatomy, worst quality, low quality"  # IP-Adapter's default


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    compile_seconds: float = 0.0
    run_seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.done / self.run_seconds if self.run_seconds else 0.0


def output_path(out: Path, item: Item) -> Path:
    return out / f"{item.name}.png"


def is_complete(path: Path) -> bool:
    """An output counts as done if it exists and decodes (outputs are written atomically anyway)."""
    if not path.is_file():
        return False
    try:
        from PIL import Image

        with Image.open(path) as image:
            image.verify()
        return True
    except Exception:
        return False


def load_item(item: Item, size, keep_aspect: bool, resize_masks: bool, base: str = "inpaint"):
    """(image fitted, mask fitted, fit, original image) or an ImageError naming the input."""
    from PIL import Image

    try:
        image, mask = item.load()
    except ImageError:
        raise
    except Exception as err:
        raise ImageError(f"{item.source}: cannot read ({err})") from None
    if mask.shape != image.shape[:2]:
        if not resize_masks:
            raise ImageError(f"{item.source}: mask is {mask.shape[1]}x{mask.shape[0]}, image {image.shape[1]}x"
                             f"{image.shape[0]} (use --resize-masks to resize masks)")  # fmt: skip
        mask = np.asarray(Image.fromarray(mask).resize(image.shape[1::-1], Image.NEAREST), np.float32)
    mask = (mask >= 0.5).astype(np.float32)
    fit = plan_fit(image.shape[:2], size, keep_aspect)
    fitted_mask = (apply_fit(mask, fit, Image.NEAREST) >= 0.5).astype(np.float32)
    return apply_fit(image, fit, INPUT_FILTER[base]), fitted_mask, fit, image, mask


def bucket_key(item: Item, size, keep_aspect: bool) -> tuple[int, int]:
    if size is not None:
        return tuple(size)
    if item.size_hint is None:
        raise ValueError(f"{item.source}: --size is needed for inputs whose size is unknown before decoding")
    return plan_fit(item.size_hint(), None, keep_aspect).size


class BatchRunner:
    def __init__(self, pipe: CLIPAwayPipeline, mesh, options: RemovalOptions, settings: BatchSettings,
                 describer=None, guidance_mode: str = "clipaway", progress: bool = True):  # fmt: skip
        self.pipe, self.mesh, self.options, self.settings = pipe, mesh, options, settings
        self.describer, self.guidance_mode = describer, guidance_mode
        self.progress = progress and jax.process_index() == 0
        self.summary = Summary()
        self.records: list[dict] = []

    # --- planning -------------------------------------------------------------------------------

    def plan(self, items: list[Item]) -> dict[tuple[int, int], list[Item]]:
        """Skip finished outputs, then group the rest by model input shape (each compiles once)."""
        s = self.settings
        buckets: dict[tuple[int, int], list[Item]] = {}
        for item in sorted(items, key=lambda i: i.name):
            if not s.overwrite and is_complete(output_path(s.out, item)):
                self.summary.skipped += 1
                self.records.append({"name": item.name, "status": "skipped", "output": str(output_path(s.out, item))})
                continue
            try:
                key = bucket_key(item, s.size, s.keep_aspect)
            except Exception as err:
                self._fail(item.name, str(err))
                continue
            buckets.setdefault(key, []).append(item)
        return dict(sorted(buckets.items()))

    # --- running --------------------------------------------------------------------------------

    def run(self, items: list[Item]) -> Summary:
        from tqdm import tqdm

        buckets = self.plan(items)
        local_batch = self.settings.per_device_batch * jax.local_device_count()
        total = sum(math.ceil(len(b) / jax.process_count()) for b in buckets.values())
        bar = tqdm(total=total, unit="img", disable=not self.progress, dynamic_ncols=True)
        with ThreadPoolExecutor(self.settings.workers) as pool:
            for shape, bucket in buckets.items():
                share = bucket[jax.process_index() :: jax.process_count()]
                steps = math.ceil(math.ceil(len(bucket) / jax.process_count()) / local_batch)
                compiled = None
                for step in range(steps):
                    chunk = share[step * local_batch : (step + 1) * local_batch]
                    loaded = list(pool.map(self._load, chunk))
                    args, real = self._global_batch(chunk, loaded, shape, local_batch)
                    if compiled is None:
                        start = time.perf_counter()
                        compiled = self.pipe.compiled(self.options, args)
                        self.summary.compile_seconds += time.perf_counter() - start
                    start = time.perf_counter()
                    pixels = self._local(compiled(*args))
                    elapsed = time.perf_counter() - start
                    self.summary.run_seconds += elapsed
                    for slot, item, data, description in real:
                        self._write(item, data, pixels[slot], elapsed / max(1, len(real)), description)
                    bar.update(len(chunk))
                    bar.set_postfix(img_per_s=f"{self.summary.images_per_second:.2f}")
        bar.close()
        return self.summary

    def _load(self, item: Item):
        try:
            s = self.settings
            return load_item(item, self._size_for(item), s.keep_aspect, s.resize_masks, self.options.base)
        except Exception as err:
            return err

    def _size_for(self, item: Item):
        return self.settings.size or bucket_key(item, None, self.settings.keep_aspect)

    def _global_batch(self, chunk, loaded, shape, local_batch):
        """Local slices padded to the per-host batch, assembled into globally sharded arrays.
        Returns (program args, [(slot, item, loaded data, description)] for the real images)."""
        h, w = shape
        images = np.zeros((local_batch, h, w, 3), np.float32)
        masks = np.zeros((local_batch, h, w), np.float32)
        names: list[str] = [f"__padding_{i}" for i in range(local_batch)]
        real = []
        for slot, (item, data) in enumerate(zip(chunk, loaded)):
            if isinstance(data, Exception):
                self._fail(item.name, str(data))
                continue
            images[slot], masks[slot], names[slot] = data[0], data[1], item.name
            real.append((slot, item, data))
        text_ids, ip_scale, descriptions = self._texts(images, masks)
        keys = jax.random.key_data(image_keys(self.settings.seed, names))
        to_global = lambda x: jax.make_array_from_process_local_data(batch_sharding(self.mesh, x.ndim), np.asarray(x))
        args = (
            self.pipe.params,
            to_global(images),
            to_global(masks),
            to_global(text_ids),
            jax.random.wrap_key_data(to_global(keys)),
            jnp.float32(self.settings.guidance_scale),
            jnp.float32(ip_scale),
            (jnp.int32(TOKEN_SOURCES.index(self.settings.image_tokens)), jnp.bool_(False)),
        )
        return args, [(slot, item, data, descriptions and descriptions[slot]) for slot, item, data in real]

    def _texts(self, images, masks):
        from clipaway_jax.pipelines.guidance import describe_and_choose

        chosen, descriptions = describe_and_choose(
            self.guidance_mode, self.describer, images, masks, self.settings.negative_prompt, self.settings.ip_scale
        )
        return self.pipe.text_ids(chosen.prompts, chosen.negatives), chosen.ip_scale, descriptions

    def _local(self, pixels: jax.Array) -> np.ndarray:
        spec = jax.sharding.PartitionSpec((DATA, FSDP))
        return np.asarray(multihost_utils.global_array_to_host_local_array(pixels, self.mesh, spec))

    def _write(self, item, data, output, seconds, description):
        _, _, fit, original, mask = data
        path = output_path(self.settings.out, item)
        result = original if not mask.any() else undo_fit(output, fit)
        if mask.any():
            result = paste_at_input_size(original, mask, result, fit.size, self.options)
        write_png_atomic(path, result)
        if self.settings.grid:
            from clipaway_jax.pipelines.images import grid

            write_png_atomic(self.settings.out / "grids" / f"{item.name}.png", grid([original, mask, result]))
        record = {"name": item.name, "status": "done", "output": str(path), "seed": self.settings.seed,
                  "base": self.options.base, "seconds": round(seconds, 4)}  # fmt: skip
        if description:
            record |= {"t_mask": description.t_mask, "t_info": description.t_info}
        self.summary.done += 1
        self.records.append(record)

    def _fail(self, name: str, reason: str):
        self.summary.failed.append((name, reason))
        self.records.append({"name": name, "status": "failed", "reason": reason})


def write_results(out: Path, records: list[dict]) -> Path:
    """Each process writes its records; process 0 merges them into results.jsonl after a barrier."""
    out.mkdir(parents=True, exist_ok=True)
    mine = out / f".results.p{jax.process_index()}.jsonl"
    mine.write_text("".join(json.dumps(r) + "\n" for r in records))
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("clipaway-jax results written")
    merged = out / "results.jsonl"
    if jax.process_index() == 0:
        parts = sorted(out.glob(".results.p*.jsonl"))
        current = [json.loads(line) for part in parts for line in part.read_text().splitlines()]
        listing = merge_records(read_records(merged), current)
        tmp = out / ".results.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in sorted(listing, key=lambda r: r["name"])))
        os.replace(tmp, merged)
        for part in parts:
            part.unlink()
    return merged


def read_records(listing: Path) -> list[dict]:
    """The records of an earlier run's results.jsonl (none if absent; unreadable lines are dropped)."""
    if not listing.is_file():
        return []
    records = []
    for line in listing.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "name" in record:
            records.append(record)
    return records


def merge_records(previous: list[dict], current: list[dict]) -> list[dict]:
    """A rerun's records over the listing it replaces, so that resuming loses nothing: an output this run
    skipped keeps the record of the run that made it (seed, base, texts), and outputs this run did not
    see (another --limit) keep theirs."""
    by_name = {r["name"]: r for r in previous}
    for record in current:
        earlier = by_name.get(record["name"])
        if record["status"] == "skipped" and earlier is not None and earlier.get("status") == "done":
            continue
        by_name[record["name"]] = record
    return list(by_name.values())


def gather_summary(summary: Summary) -> dict:
    """Counts summed over processes (every process calls this; process 0 prints)."""
    local = np.array([summary.done, summary.skipped, len(summary.failed), summary.run_seconds,
                      summary.compile_seconds], np.float64)  # fmt: skip
    if jax.process_count() > 1:
        local = np.asarray(multihost_utils.process_allgather(local)).reshape(jax.process_count(), -1)
        done, skipped, failed = local[:, :3].sum(0)
        run_seconds, compile_seconds = local[:, 3].max(), local[:, 4].max()
    else:
        done, skipped, failed, run_seconds, compile_seconds = local
    return {"done": int(done), "skipped": int(skipped), "failed": int(failed), "compile_seconds": compile_seconds,
            "images_per_second": done / run_seconds if run_seconds else 0.0}  # fmt: skip


def clean_stale_temporaries(out: Path) -> None:
    """Temporary files of a killed run (never complete outputs); process 0 removes them."""
    if jax.process_index() == 0 and out.is_dir():
        for path in list(out.glob(".*.tmp")) + list(out.glob("grids/.*.tmp")):
            path.unlink(missing_ok=True)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("clipaway-jax stale temporaries removed")
