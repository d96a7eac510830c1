"""`evaluate`: samples -> per-image records (features and image metrics), cached per sample.

For each sample: the source image and mask, the result and the ground truth are read once; the
image metrics (PSNR, SSIM, MAE, whole and inside the mask) are computed on the host in float64; the
network features go through the devices in batches. A sample's record is stored in the cache
(`.npz`, written atomically, keyed by its files and the metric networks), so a second run over the
same results reads the records and only recomputes the statistics.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from clipaway_jax.atomic import write_atomic
from clipaway_jax.eval import features as F
from clipaway_jax.eval import stats
from clipaway_jax.eval.samples import Labels, Sample, object_box
from clipaway_jax.pipelines.images import ImageError, read_image

VERSION = 1  # bump when a record's meaning changes: older cache entries are then ignored
NETWORKS = ("inception", "lpips", "eval_clip_vision", "eval_clip_text", "cmmd_clip_vision")


@dataclass(frozen=True)
class EvalOptions:
    per_device_batch: int = 8
    inception_resize: str = "tf1"
    chunk: int = 64  # samples read per step (host memory), rounded up to a whole device batch
    workers: int = max(2, min(16, os.cpu_count() or 2))  # host threads: decoding, SSIM and crops release the GIL


class Evaluator:
    """The metric networks of a checkpoint (those it has), placed on this process's devices."""

    def __init__(self, checkpoint_path: Path, options: EvalOptions = EvalOptions(), cache_dir: Path | None = None):
        from clipaway_jax.checkpoint import load_checkpoint, read_manifest

        manifest = read_manifest(checkpoint_path)
        present = [n for n in NETWORKS if n in manifest["networks"]]
        self.mesh = F.local_mesh()
        self.checkpoint = load_checkpoint(checkpoint_path, mesh=self.mesh, networks=present)
        self.options, self.cache_dir = options, cache_dir
        self.runner = F.DeviceRunner(self.mesh, options.per_device_batch)
        self.missing = [n for n in NETWORKS if n not in present]
        self.identity = _identity(manifest, present, options)
        self.seconds: dict[str, float] = defaultdict(float)  # per stage, compile included (`eval` prints it)

    @contextlib.contextmanager
    def timed(self, stage: str):
        start = time.perf_counter()
        yield
        self.seconds[stage] += time.perf_counter() - start

    def has(self, network: str) -> bool:
        return network in self.checkpoint.params

    def params(self, network: str):
        return {"params": self.checkpoint.params[network]}

    def module(self, network: str):
        if network == "inception":
            from clipaway_jax.models.inception import FIDInceptionV3

            return FIDInceptionV3(self.options.inception_resize)
        return self.checkpoint.module(network)

    def evaluate(self, samples: list[Sample], labels: Labels | None, progress: bool = True):
        """(records by name, problems): this process's share of `samples`. The host work of a chunk
        (decoding, image metrics, Pillow crops) runs in threads while the devices process the previous one."""
        records, problems, todo = {}, [], []
        for sample in samples:
            cached = self.cached_record(sample)
            if cached is not None:
                records[sample.name] = cached
            else:
                todo.append(sample)
        chunk = max(self.runner.batch, self.options.chunk // self.runner.batch * self.runner.batch)
        groups = list(F.batches(todo, chunk))
        bar = tqdm(total=len(todo), desc="eval features", unit="img", disable=not progress)
        with ThreadPoolExecutor(self.options.workers) as pool:
            submit = lambda group: [pool.submit(self._prepare, sample, labels) for sample in group]
            pending = submit(groups[0]) if groups else []
            for index, group in enumerate(groups):
                current, pending = pending, submit(groups[index + 1]) if index + 1 < len(groups) else []
                loaded = []
                with self.timed("host (read, psnr/ssim/mae, crops)"):
                    for sample, future in zip(group, current):
                        try:
                            loaded.append((sample, future.result()))
                        except (ImageError, ValueError, OSError) as err:
                            problems.append((sample.name, str(err)))
                for (sample, _), record in zip(loaded, self._device_features([data for _, data in loaded])):
                    records[sample.name] = record
                    self._store(sample, record)
                bar.update(len(group))
        bar.close()
        return records, problems

    def _prepare(self, sample: Sample, labels: Labels | None) -> dict:
        """Host side of one sample (thread-safe): its arrays, image metrics and fixed-size network inputs."""
        data = _load(sample, labels)
        data["record"] = _host_metrics(data)
        if self.has("eval_clip_vision"):
            size = self.checkpoint.module("eval_clip_vision").config.image_size
            for role in ("source", "result"):
                data[f"clip_{role}_input"] = F.clip_crop_input(data[role], data["box"], size)
        if self.has("cmmd_clip_vision"):
            size = self.checkpoint.module("cmmd_clip_vision").config.image_size
            for role in ("result", "reference"):
                data[f"cmmd_{role}_input"] = F.cmmd_input(data[role], size)
        return data

    def _device_features(self, loaded: list[dict]) -> list[dict]:
        records = [data["record"] for data in loaded]
        if not loaded:
            return records
        with self.timed("inception"):
            self._inception(loaded, records)
        with self.timed("cmmd clip"):
            self._embed(loaded, records, "cmmd", "cmmd_clip_vision", ("result", "reference"))
        with self.timed("clip crops"):
            self._embed(loaded, records, "clip", "eval_clip_vision", ("source", "result"))
        with self.timed("lpips"):
            self._lpips(loaded, records)
        return records

    def _inception(self, loaded, records):
        if self.has("inception"):
            fn, params = F.inception_fn(self.module("inception")), self.params("inception")
            for role in ("result", "reference"):
                values = F.run_by_shape(self.runner, "inception", fn, params, [d[role] for d in loaded])
                for record, value in zip(records, values):
                    record[f"inception_{role}"] = value

    def _embed(self, loaded, records, key, network, roles):
        """L2-normalized CLIP image embeddings of the prepared `{key}_{role}_input` arrays."""
        if not self.has(network):
            return
        embed = F.clip_embed_fn(self.module(network))
        for role in roles:
            values = self.runner(key, embed, self.params(network), np.stack([d[f"{key}_{role}_input"] for d in loaded]))
            for record, value in zip(records, values):
                record[f"{key}_{role}"] = value

    def _lpips(self, loaded, records):
        with_truth = [i for i, d in enumerate(loaded) if d["truth"] is not None]
        if self.has("lpips") and with_truth:
            fn = F.lpips_fn(self.module("lpips"))
            pairs = [loaded[i]["result"] for i in with_truth], [loaded[i]["truth"] for i in with_truth]
            for i, value in zip(with_truth, F.run_by_shape(self.runner, "lpips", fn, self.params("lpips"), *pairs)):
                records[i]["lpips"] = float(value)

    # --- the per-sample cache ---

    def _path(self, sample: Sample) -> Path | None:
        if self.cache_dir is None:
            return None
        parts = [self.identity, sample.name, _file_id(sample.result), _file_id(sample.ground_truth), sample.source]
        parts += [_file_id(f) for f in sample.source_files]
        digest = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]
        return Path(self.cache_dir) / f"{sample.name}.{digest}.npz"

    def cached_record(self, sample: Sample) -> dict | None:
        path = self._path(sample)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: (data[k].item() if data[k].ndim == 0 else data[k]) for k in data.files}
        except (OSError, ValueError):
            return None  # a torn entry: recompute it

    def _store(self, sample: Sample, record: dict) -> None:
        path = self._path(sample)
        if path is None:
            return
        buffer = io.BytesIO()
        np.savez(buffer, **{k: np.asarray(v) for k, v in record.items() if v is not None})
        write_atomic(path, lambda f: f.write(buffer.getvalue()))


def _load(sample: Sample, labels: Labels | None) -> dict:
    image, mask = sample.load_source()
    result = read_image(sample.result)
    if result.shape != image.shape:
        raise ImageError(f"{sample.result}: result {result.shape[1]}x{result.shape[0]} but source "
                         f"{sample.source} is {image.shape[1]}x{image.shape[0]}")  # fmt: skip
    if mask.shape != image.shape[:2]:
        raise ImageError(f"{sample.source}: its mask is {mask.shape[1]}x{mask.shape[0]}, the image "
                         f"{image.shape[1]}x{image.shape[0]}")  # fmt: skip
    truth = read_image(sample.ground_truth) if sample.ground_truth is not None else None
    if truth is not None and truth.shape != result.shape:
        raise ImageError(f"{sample.ground_truth}: ground truth {truth.shape[1]}x{truth.shape[0]} but the result "
                         f"is {result.shape[1]}x{result.shape[0]}")  # fmt: skip
    mask = (mask >= 0.5).astype(np.float32)
    box, label = object_box(mask, labels.boxes.get(sample.name) if labels else None)
    reference = truth if truth is not None else image  # FID/KID/CMMD: results vs real images
    return dict(source=image, mask=mask, result=result, truth=truth, reference=reference, box=box, label=label)


def _host_metrics(data: dict) -> dict:
    record = {"mask_area": float(data["mask"].mean()), "box": np.asarray(data["box"] or (0, 0, 0, 0))}
    if data["label"]:
        record["label"] = data["label"]
    truth = data["truth"]
    if truth is not None:
        result, mask = data["result"], data["mask"]
        for name, fn in (("psnr", stats.psnr), ("ssim", stats.ssim), ("mae", stats.mae)):
            record[name] = fn(result, truth)
            record[f"{name}_mask"] = fn(result, truth, mask)
    return record


def _file_id(path: Path | None) -> str | None:
    if path is None or not Path(path).is_file():
        return None
    st = os.stat(path)
    return f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}"


def _identity(manifest: dict, present: list[str], options: EvalOptions) -> str:
    """The metric networks (their source files' hashes) and the options that change a record."""
    sources = {n: [s.get("sha256") for s in manifest["networks"][n].get("sources", [])] for n in present}
    return json.dumps([VERSION, sources, options.inception_resize, jax.__version__], sort_keys=True)
