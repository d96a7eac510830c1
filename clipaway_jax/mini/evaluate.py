"""The mini world's evaluation table (python -m clipaway_jax.mini.evaluate): every guidance on the test
split with our own `infer` and `eval`, in both papers' layouts, with the ground truth as the upper bound.

    rows:   CLIPAway (published guidance) | plain inpainting with MLP(e_b) tokens (no projection) |
            no image tokens (empty prompt) | DCGD (12-channel UNet, T_info vs T_mask) | CLIPAway + DCGD |
            Blended (Blended Latent Diffusion on the text-to-image UNet, no image tokens) |
            Blended + CLIPAway (the same base with CLIPAway's tokens: the plug-and-play rows) | ground truth
    metrics (mini AlphaCLIP space): FD-CLIP, CMMD, CLIP Dist, CLIP@1/3/5; against the ground truth:
            PSNR / SSIM / MAE inside the mask, and DCGD's whole-image PSNR by mask-area bucket

Each method's results and eval outputs land in OUT/<method>/ (rerunning skips finished results).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

METHODS = {
    "CLIPAway": [],
    "MLP(e_b), no projection": ["--image-tokens", "background"],
    "no image tokens": ["--ip-scale", "0"],
    "DCGD": ["--guidance-mode", "dcgd", "--unet-variant", "dcgd12"],
    "CLIPAway + DCGD": ["--guidance-mode", "clipaway+dcgd", "--unet-variant", "dcgd12"],
    "Blended": ["--base", "blended", "--ip-scale", "0"],
    "Blended + CLIPAway": ["--base", "blended"],
}
SLUG = {"CLIPAway": "clipaway", "MLP(e_b), no projection": "mlp_eb", "no image tokens": "no_image_tokens",
        "DCGD": "dcgd", "CLIPAway + DCGD": "clipaway_dcgd", "Blended": "blended",
        "Blended + CLIPAway": "blended_clipaway", "ground truth": "ground_truth"}  # fmt: skip


def write_truth(data_dir: Path, out: Path, count: int | None) -> tuple[Path, Path, int]:
    """The test split's ground-truth backgrounds (named as `infer --tfds` names results) and a labels CSV
    (name, class, box) for CLIP@k."""
    import tensorflow_datasets as tfds

    from clipaway_jax.mini.batches import decode, text

    source = tfds.data_source("mini_scenes", split="test", data_dir=str(data_dir))
    count = min(count or len(source), len(source))
    truth, labels = out / "ground_truth", out / "labels.csv"
    if not labels.is_file():
        from PIL import Image

        truth.mkdir(parents=True, exist_ok=True)
        rows = [("name", "class", "x", "y", "w", "h")]
        for index in range(count):
            example = source[index]
            Image.fromarray(decode(example["background"])).save(truth / f"{index:08d}.png")
            rows.append((f"{index:08d}", text(example["caption"]).split(" ", 1)[1], *map(int, example["box"])))
        with open(labels.with_suffix(".partial"), "w", newline="") as f:
            csv.writer(f).writerows(rows)
        labels.with_suffix(".partial").rename(labels)
    return truth, labels, count


def run_method(name: str, extra: list[str], checkpoint: Path, data_dir: Path, out: Path, truth: Path, labels: Path,
               count: int) -> dict:  # fmt: skip
    from clipaway_jax.mini.recipe import run as main

    folder = out / SLUG[name]
    inputs = ["--tfds", "mini_scenes:test", "--data-dir", str(data_dir)]
    if name != "ground truth":
        args = ["infer", *inputs, "--out", str(folder), "--checkpoint", str(checkpoint), "--per-device-batch",
                "50", "--limit", str(count), *extra]  # fmt: skip
        main(args)
    results = truth if name == "ground truth" else folder
    args = ["eval", "--results", str(results), *inputs, "--ground-truth", str(truth), "--labels", str(labels),
            "--metrics", str(checkpoint), "--out", str(folder / "eval"), "--kid-subsets", "10", "--limit",
            str(count)]  # fmt: skip
    main(args)
    metrics = json.loads((folder / "eval" / "metrics.json").read_text())
    with open(folder / "eval" / "per_image.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for metric in ("psnr_mask", "ssim_mask", "mae_mask"):
        values = [float(r[metric]) for r in rows if r.get(metric) not in (None, "")]
        metrics[metric] = float(np.mean(values)) if values else float("nan")  # the ground truth's PSNR is inf
    return metrics


CLIPAWAY_COLUMNS = ("FD-CLIP", "CMMD", "CLIP Dist", "CLIP@1", "CLIP@3", "CLIP@5")
MASK_COLUMNS = (("PSNR (mask)", "psnr_mask"), ("SSIM (mask)", "ssim_mask"), ("MAE (mask)", "mae_mask"))


def fmt(value) -> str:
    if value is None or np.isnan(value):
        return "-"
    if np.isinf(value):
        return "∞"  # PSNR of the ground truth against itself
    return f"{value:.2f}" if abs(value) >= 1 or value == 0 else f"{value:.4f}"


def tables(results: dict[str, dict], count: int) -> str:
    head = ["method", *CLIPAWAY_COLUMNS, *(c for c, _ in MASK_COLUMNS)]
    lines = [f"CLIPAway layout ({count} test scenes; mini AlphaCLIP space; the mask columns against the ground "
             "truth)", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    for name, m in results.items():
        cells = [fmt(m["clipaway_table"].get(c)) for c in CLIPAWAY_COLUMNS] + [fmt(m[k]) for _, k in MASK_COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    buckets = list(next(iter(results.values()))["dcgd_table"])
    lines += ["", "DCGD layout (whole-image PSNR / SSIM / MAE against the ground truth, by mask area)", "",
              "| method | " + " | ".join(buckets) + " |", "|---|" + "---|" * len(buckets)]  # fmt: skip
    for name, m in results.items():
        cells = [" / ".join(fmt(row[k]) for k in ("PSNR", "SSIM", "MAE")) for row in m["dcgd_table"].values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="example: python -m clipaway_jax.mini.evaluate --data-dir runs/mini/data "
                                       "--out runs/mini/eval --count 200")  # fmt: skip
    p.add_argument("--checkpoint", type=Path, help="default: the shipped mini model")
    p.add_argument("--data-dir", type=Path, required=True, help="the mini_scenes data set (`data scenes --out`)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--count", type=int, help="the first N test scenes (default: all)")
    p.add_argument("--methods", nargs="+", choices=[*METHODS, "ground truth"], default=[*METHODS, "ground truth"])
    args = p.parse_args(argv)
    from clipaway_jax.mini.shipped import checkpoint_or_default

    checkpoint = checkpoint_or_default(args.checkpoint)
    truth, labels, count = write_truth(args.data_dir, args.out, args.count)
    results = {name: run_method(name, METHODS.get(name, []), checkpoint, args.data_dir, args.out, truth, labels,
                                count) for name in args.methods}  # fmt: skip
    text = tables(results, count)
    (args.out / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
