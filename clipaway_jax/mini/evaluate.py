"""The mini world's evaluation table (python -m clipaway_jax.mini.evaluate): every guidance on the test
split (or, for diagnosis, the validation split) with our own `infer` and `eval`, in both papers'
layouts, beside what a person would use instead and with the ground truth as the upper bound.

    rows:   CLIPAway (published guidance; the checkpoint's paste-back, and without it) |
            plain inpainting with MLP(e_b) tokens (no projection) |
            no image tokens (empty prompt) | DCGD (12-channel UNet, T_info vs T_mask) | CLIPAway + DCGD |
            Blended (Blended Latent Diffusion on the text-to-image UNet, no image tokens) |
            Blended + CLIPAway (the same base with CLIPAway's tokens: the plug-and-play rows) |
            OpenCV Telea | OpenCV NS | flat fill (ring mean) | do nothing (the classical baselines) |
            oracle tokens (diagnostic: the ground-truth background as the input, tokens MLP(e_f) of it:
            what fills the hole when the tokens say exactly what belongs there) | ground truth
    metrics (mini AlphaCLIP space): FD-CLIP, CMMD, CLIP Dist, CLIP@1/3/5, "removed" (the masked region's
            top-1 class is a background: clipaway_jax/mini/measures.py; over all the scenes, and over those
            with no object under the target, where the ground truth is bare background and the measure
            reads it as removed: its calibrated ceiling); against the ground truth: PSNR /
            SSIM / MAE inside the mask, whole-image PSNR, the share of scenes filled better than OpenCV
            Telea (PSNR inside the mask), DCGD's whole-image figures by mask-area bucket, and the fill split
            by what lies under the target (bare background, or part of the objects it hid: `by_cover`)

Each method's results and eval outputs land in OUT/<method>/ (rerunning skips finished results).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from clipaway_jax.mini.baselines import CLASSICAL, write_results

METHODS = {
    "CLIPAway": [],
    "CLIPAway, no paste-back": ["--paste-back", "0"],
    "MLP(e_b), no projection": ["--image-tokens", "background"],
    "no image tokens": ["--ip-scale", "0"],
    "DCGD": ["--guidance-mode", "dcgd", "--unet-variant", "dcgd12"],
    "CLIPAway + DCGD": ["--guidance-mode", "clipaway+dcgd", "--unet-variant", "dcgd12"],
    "Blended": ["--base", "blended", "--ip-scale", "0"],
    "Blended + CLIPAway": ["--base", "blended"],
}
ORACLE = "oracle tokens (diagnostic)"
ORACLE_ARGS = ["--image-tokens", "focused"]
SLUG = {"CLIPAway": "clipaway", "CLIPAway, no paste-back": "clipaway_no_paste_back",
        "MLP(e_b), no projection": "mlp_eb", "no image tokens": "no_image_tokens",
        "DCGD": "dcgd", "CLIPAway + DCGD": "clipaway_dcgd", "Blended": "blended",
        "Blended + CLIPAway": "blended_clipaway", "OpenCV Telea": "telea", "OpenCV NS": "navier_stokes",
        "flat fill (ring mean)": "flat_fill", "do nothing": "do_nothing", ORACLE: "oracle_tokens",
        "ground truth": "ground_truth"}  # fmt: skip
ALL = [*METHODS, *CLASSICAL, ORACLE, "ground truth"]


def source_of(data_dir: Path, split: str):
    import tensorflow_datasets as tfds

    return tfds.data_source("mini_scenes", split=split, data_dir=str(data_dir))


def write_truth(data_dir: Path, out: Path, count: int | None, split: str = "test") -> tuple[Path, Path, int]:
    """The split's ground-truth backgrounds (named as `infer --tfds` names results) and a labels CSV
    (name, class, box) for CLIP@k."""
    from clipaway_jax.mini.batches import decode, text

    source = source_of(data_dir, split)
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


def run_method(name: str, checkpoint: Path, data_dir: Path, out: Path, truth: Path, labels: Path, count: int,
               split: str = "test") -> dict:  # fmt: skip
    from clipaway_jax.mini.recipe import run as main

    folder = out / SLUG[name]
    inputs = ["--tfds", f"mini_scenes:{split}", "--data-dir", str(data_dir)]
    if name in METHODS:
        main(["infer", *inputs, "--out", str(folder), "--checkpoint", str(checkpoint), "--per-device-batch", "50",
              "--limit", str(count), *METHODS[name]])  # fmt: skip
    elif name in CLASSICAL:  # the object's mask as given, as a user would call cv2.inpaint
        write_results(name, source_of(data_dir, split), folder, count)
    elif name == ORACLE:  # the ground-truth background goes in where the scene would
        images = write_results("do nothing", source_of(data_dir, split), out / "oracle_inputs", count,
                               image_key="background")  # fmt: skip
        masks = _write_masks(source_of(data_dir, split), out / "oracle_masks", count)
        main(["infer", "--images", str(images), "--masks", str(masks), "--out", str(folder), "--checkpoint",
              str(checkpoint), "--per-device-batch", "50", *ORACLE_ARGS])  # fmt: skip
    results = truth if name == "ground truth" else folder
    args = ["eval", "--results", str(results), *inputs, "--ground-truth", str(truth), "--labels", str(labels),
            "--metrics", str(checkpoint), "--out", str(folder / "eval"), "--kid-subsets", "10", "--limit",
            str(count)]  # fmt: skip
    main(args)
    metrics = json.loads((folder / "eval" / "metrics.json").read_text())
    with open(folder / "eval" / "per_image.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for metric in ("psnr_mask", "ssim_mask", "mae_mask", "psnr"):
        values = [float(r[metric]) for r in rows if r.get(metric) not in (None, "")]
        metrics[metric] = float(np.mean(values)) if values else float("nan")  # the ground truth's PSNR is inf
    metrics["per_image_psnr_mask"] = {r["name"]: float(r["psnr_mask"]) for r in rows if r.get("psnr_mask")}
    return metrics


def _write_masks(source, out: Path, count: int) -> Path:
    from PIL import Image

    from clipaway_jax.mini.batches import decode

    out.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        if not (out / f"{index:08d}.png").is_file():
            Image.fromarray(decode(source[index]["mask"], "L")).save(out / f"{index:08d}.png")
    return out


def bare_targets(source, count: int) -> np.ndarray:
    """bool [count]: nothing lies under the record's target (`Scene.under_target == 0`), so its ground truth
    is bare background there; elsewhere it shows part of the objects the target covered, which the
    "removed" measure rightly reads as painted in (bench/RESULTS.md, "What the removed ceiling is made of")."""
    from clipaway_jax.mini.scenes import render

    seed, size = (source.dataset_info.metadata[key] for key in ("seed", "size"))
    return np.array([render(seed, int(source[i]["index"]), size).under_target == 0 for i in range(count)])


def removed_shares(painted_in, folder: Path, source, bare: np.ndarray) -> dict[str, float]:
    """% of results whose masked region's top-1 class is a background (clipaway_jax/mini/measures.py): over
    all the scenes, and over those with nothing under the target (`bare_targets`)."""
    from clipaway_jax.mini.batches import decode

    paths = [folder / f"{i:08d}.png" for i in range(len(bare))]
    present = np.array([p.is_file() for p in paths])
    if not present.any():
        return {"removed": float("nan"), "removed_bare": float("nan")}
    found = np.flatnonzero(present)
    images = np.stack([decode(paths[i].read_bytes()) for i in found]).astype(np.float32) / 255.0
    masks = np.stack([decode(source[i]["mask"], "L") >= 128 for i in found]).astype(np.float32)
    removed = ~painted_in(images, masks)
    return {"removed": 100.0 * float(removed.mean()), "removed_bare": 100.0 * float(removed[bare[present]].mean())}


CLIPAWAY_COLUMNS = ("FD-CLIP", "CMMD", "CLIP Dist", "CLIP@1", "CLIP@3", "CLIP@5")
MASK_COLUMNS = (("removed", "removed"), ("removed (bare)", "removed_bare"), ("PSNR (mask)", "psnr_mask"),
                ("SSIM (mask)", "ssim_mask"), ("MAE (mask)", "mae_mask"), ("PSNR (whole)", "psnr"),
                ("beats Telea", "beats_telea"))  # fmt: skip


def fmt(value) -> str:
    if value is None or np.isnan(value):
        return "-"
    if np.isinf(value):
        return "∞"  # PSNR of the ground truth against itself
    return f"{value:.2f}" if abs(value) >= 1 or value == 0 else f"{value:.4f}"


def beats(per_image: dict[str, float], reference: dict[str, float]) -> float:
    """% of the scenes both have whose PSNR inside the mask is above the reference's."""
    names = sorted(set(per_image) & set(reference))
    return 100.0 * float(np.mean([per_image[n] > reference[n] for n in names])) if names else float("nan")


def by_cover(per_image: dict[str, float], telea: dict[str, float], bare: np.ndarray) -> dict[str, float]:
    """PSNR inside the mask and the share beating Telea, on the scenes with nothing under the target (bare) and
    on the others (covering: the ground truth shows there part of the objects the target hid)."""
    found = {}
    for group, chosen in (("bare", bare), ("covering", ~bare)):
        present = {n: per_image[n] for n in (f"{i:08d}" for i in np.flatnonzero(chosen)) if n in per_image}
        found[f"psnr_mask_{group}"] = float(np.mean(list(present.values()))) if present else float("nan")
        found[f"beats_telea_{group}"] = beats(present, telea)
    return found


def tables(results: dict[str, dict], count: int, split: str = "test", bare: np.ndarray | None = None) -> str:
    head = ["method", *CLIPAWAY_COLUMNS, *(c for c, _ in MASK_COLUMNS)]
    lines = [f"CLIPAway layout ({count} {split} scenes; mini AlphaCLIP space; removed: the masked region's top-1 "
             "class is a background; removed (bare): the same on the scenes with no object under the target, "
             "where the ground truth is bare background; the PSNR, SSIM and MAE columns against the ground truth; "
             "beats Telea: % of scenes filled better than OpenCV Telea inside the mask)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    for name, m in results.items():
        cells = [fmt(m["clipaway_table"].get(c)) for c in CLIPAWAY_COLUMNS] + [fmt(m.get(k)) for _, k in MASK_COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    buckets = list(next(iter(results.values()))["dcgd_table"])
    lines += ["", "DCGD layout (whole-image PSNR / SSIM / MAE against the ground truth, by mask area)", "",
              "| method | " + " | ".join(buckets) + " |", "|---|" + "---|" * len(buckets)]  # fmt: skip
    for name, m in results.items():
        cells = [" / ".join(fmt(row[k]) for k in ("PSNR", "SSIM", "MAE")) for row in m["dcgd_table"].values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if bare is not None:
        lines += ["", "By what lies under the target (PSNR inside the mask / % of scenes beating OpenCV Telea; bare: "
                  "nothing, the ground truth is background there; covering: part of the objects the target hid, "
                  "which the ground truth shows)", "",
                  f"| method | bare ({int(bare.sum())} scenes) | covering ({int((~bare).sum())} scenes) |",
                  "|---|---|---|"]  # fmt: skip
        for name, m in results.items():
            cells = [f"{fmt(m[f'psnr_mask_{g}'])} / {fmt(m[f'beats_telea_{g}'])}" for g in ("bare", "covering")]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n  python -m clipaway_jax.mini.evaluate --data-dir runs/mini/data "
                                       "--out runs/mini/eval\n  python -m clipaway_jax.mini.evaluate --data-dir "
                                       "runs/mini/data --out runs/mini/val --split validation --count 64 --methods "
                                       "CLIPAway 'OpenCV Telea' 'oracle tokens (diagnostic)'")  # fmt: skip
    p.add_argument("--checkpoint", type=Path, help="default: the shipped mini model")
    p.add_argument("--data-dir", type=Path, required=True, help="the mini_scenes data set (`data scenes --out`)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--split", choices=("test", "validation"), default="test",
                   help="test (the reported table) or validation (diagnosis and tuning: never the test split)")
    p.add_argument("--count", type=int, help="the first N scenes of the split (default: all)")
    p.add_argument("--methods", nargs="+", choices=ALL, default=ALL)
    args = p.parse_args(argv)
    from clipaway_jax.mini.shipped import checkpoint_or_default

    checkpoint = checkpoint_or_default(args.checkpoint)
    truth, labels, count = write_truth(args.data_dir, args.out, args.count, args.split)
    methods = list(dict.fromkeys(["OpenCV Telea", *args.methods]))  # every row is compared with Telea
    from clipaway_jax.checkpoint import load_checkpoint
    from clipaway_jax.mini.measures import PaintedIn

    painted_in = PaintedIn(load_checkpoint(checkpoint, networks=["alpha_clip", "clip_text"]))  # once for all rows
    source = source_of(args.data_dir, args.split)
    bare = bare_targets(source, count)
    results = {}
    for name in methods:
        results[name] = run_method(name, checkpoint, args.data_dir, args.out, truth, labels, count, args.split)
        folder = truth if name == "ground truth" else args.out / SLUG[name]
        results[name] |= removed_shares(painted_in, folder, source, bare)
    telea = results["OpenCV Telea"]["per_image_psnr_mask"]
    for m in results.values():
        m["beats_telea"] = beats(m["per_image_psnr_mask"], telea)
        m |= by_cover(m["per_image_psnr_mask"], telea, bare)
    results = {name: results[name] for name in args.methods}
    text = tables(results, count, args.split, bare)
    (args.out / "table.md").write_text(text)
    (args.out / "table.json").write_text(json.dumps(results, indent=2, default=float))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
