"""Records -> both papers' tables, `metrics.json`, `per_image.csv` and best/worst grids.

CLIPAway's Table 1: FID, KID, CMMD (photorealism: results vs real images), CLIP Dist, CLIP@1/3/5
(removal). DCGD's table: PSNR, SSIM, MAE, LPIPS against the ground truth, by mask-area bucket.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from clipaway_jax.atomic import write_atomic
from clipaway_jax.eval import stats

TOPK = (1, 3, 5)
BUCKETS = ((0.01, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4))
DCGD_METRICS = ("psnr", "ssim", "mae", "lpips")


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 1.0 - np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def l2_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
    return np.linalg.norm(unit(a) - unit(b), axis=-1)


# The paper does not define "CLIP distance"; these are the plausible readings (--clip-distance).
CLIP_DISTANCES = {
    "cosine": (cosine_distance, "1 - cos(CLIP ViT-B/32 embedding of the source's object crop, of the result's crop)"),
    "l2": (l2_distance, "|| unit(CLIP ViT-B/32 embedding of the source crop) - unit(... of the result crop) ||_2"),
}


def clip_removal(records: dict, names: list[str], text_features: np.ndarray, classes: list[str], distance: str):
    """Per image: the source crop's top-1 class c*, removed@k (c* not in the result crop's top k) and
    the CLIP distance between the two crops."""
    source = np.stack([records[n]["clip_source"] for n in names])
    result = np.stack([records[n]["clip_result"] for n in names])
    top_source = np.argmax(source @ text_features.T, axis=-1)
    ranked = np.argsort(-(result @ text_features.T), axis=-1)
    distances = CLIP_DISTANCES[distance][0](source, result)
    for i, name in enumerate(names):
        records[name]["clip_class"] = classes[top_source[i]]
        records[name]["clip_distance"] = float(distances[i])
        for k in TOPK:
            records[name][f"removed@{k}"] = bool(top_source[i] not in ranked[i, :k])


def clipaway_table(records: dict, names: list[str], kid_subsets: int, kid_subset_size: int) -> tuple[dict, list]:
    table, notes = {}, []
    if names and "inception_result" in records[names[0]]:
        result, reference = (np.stack([records[n][f"inception_{r}"] for n in names]) for r in ("result", "reference"))
        table["FID"] = stats.fid(result, reference) if len(names) > 1 else float("nan")
        try:
            table["KID"], table["KID_std"] = stats.kid(result, reference, kid_subsets, kid_subset_size)
        except stats.TooFewSamples as err:
            notes.append(f"KID skipped: {err}")
    if names and "cmmd_result" in records[names[0]]:
        result, reference = (np.stack([records[n][f"cmmd_{r}"] for n in names]) for r in ("result", "reference"))
        table["CMMD"] = stats.cmmd(result, reference)
        if len(names) > result.shape[1]:  # a full-rank covariance: more images than embedding dimensions
            table["FD-CLIP"] = stats.fid(result, reference)  # Frechet distance in the CMMD CLIP space
    if names and "clip_distance" in records[names[0]]:
        table["CLIP Dist"] = float(np.mean([records[n]["clip_distance"] for n in names]))
        for k in TOPK:
            table[f"CLIP@{k}"] = 100.0 * float(np.mean([records[n][f"removed@{k}"] for n in names]))
    return table, notes


def dcgd_table(records: dict, names: list[str]) -> dict:
    rows = {}
    for low, high in BUCKETS:
        inside = [n for n in names if "psnr" in records[n] and low <= records[n]["mask_area"] < high]
        row = {"images": len(inside)}
        for metric in DCGD_METRICS:
            values = [records[n][metric] for n in inside if metric in records[n]]
            row[metric.upper()] = float(np.mean(values)) if values else float("nan")
        rows[f"{low:g}-{high:g}"] = row
    return rows


def markdown_tables(clipaway: dict, dcgd: dict, count: int) -> str:
    lines = [f"CLIPAway Table 1 layout ({count} images)", ""]
    columns = [c for c in ("FID", "KID", "FD-CLIP", "CMMD", "CLIP Dist", "CLIP@1", "CLIP@3", "CLIP@5") if c in clipaway]
    if columns:
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines.append("| " + " | ".join(_fmt(c, clipaway[c]) for c in columns) + " |")
    else:
        lines.append("(no metric networks for this table)")
    lines += ["", "DCGD table layout (mask-area buckets; against the ground truth)", ""]
    lines += ["| mask area | images | PSNR | SSIM | MAE | LPIPS |", "|---|---|---|---|---|---|"]
    for bucket, row in dcgd.items():
        values = " | ".join(_fmt(m, row[m.upper()]) for m in DCGD_METRICS)
        lines.append(f"| {bucket} | {row['images']} | {values} |")
    return "\n".join(lines)


def _fmt(name: str, value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if name in ("KID",):
        return f"{value:.4f}"
    return f"{value:.2f}" if abs(value) >= 1 or name.startswith("CLIP@") else f"{value:.4f}"


PER_IMAGE = ("name", "mask_area", "label", "clip_class", "removed@1", "removed@3", "removed@5", "clip_distance",
             "psnr", "ssim", "mae", "lpips", "psnr_mask", "ssim_mask", "mae_mask")  # fmt: skip


def write_outputs(out: Path, metrics: dict, records: dict, names: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_finite(metrics), indent=2, default=_json, allow_nan=False)
    write_atomic(out / "metrics.json", lambda f: f.write(text.encode()))
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(PER_IMAGE)
    for name in names:
        row = records[name] | {"name": name}
        writer.writerow([_cell(row.get(column)) for column in PER_IMAGE])
    write_atomic(out / "per_image.csv", lambda f: f.write(text.getvalue().encode()))


def _cell(value):
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else value


def _finite(value):
    """NaN (a metric with no images) as null: metrics.json stays strict JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating) and not math.isfinite(float(value)):
        return None
    return value


def _json(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def rank(records: dict, names: list[str], metric: str) -> tuple[list[str], list[str]]:
    """(best, worst) names by `metric` (higher is better for PSNR, SSIM and removal; lower otherwise)."""
    scored = [n for n in names if metric in records[n] and np.isfinite(float(records[n][metric]))]
    higher_better = metric in ("psnr", "ssim", "psnr_mask", "ssim_mask", "clip_distance")
    ordered = sorted(scored, key=lambda n: float(records[n][metric]), reverse=higher_better)
    return ordered[:8], ordered[::-1][:8]
