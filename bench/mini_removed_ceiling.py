"""What the "object painted in?" measure's ceiling is made of (issue #25 asks the ground truth to read as
removed in >= 95% of the scenes), on validation scenes:

    the ground truth, the untouched source and the target's own background texture alone (no objects)
    under the target's mask, read by the measure (clipaway_jax/mini/measures.py), split by how much of
    the mask lies over objects drawn under the target (`Scene.under_target`: there the ground truth shows
    part of another object, and "painted in" is the right answer), and by background kind;
    with --results FOLDER ... (inference outputs of the split's first N records in the data set's order,
    00000000.png ..., e.g. an `evaluate --split validation --count N --out V` run's V/clipaway), the same
    split for each folder.

    python bench/mini_removed_ceiling.py --data-dir runs/mini/data --count 500
    python bench/mini_removed_ceiling.py --data-dir runs/mini/data --count 500 --results runs/val/clipaway
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from clipaway_jax.checkpoint import load_checkpoint
from clipaway_jax.mini import scenes as S
from clipaway_jax.mini.evaluate import source_of
from clipaway_jax.mini.measures import PaintedIn
from clipaway_jax.mini.shipped import checkpoint_or_default


def split(name: str, painted: np.ndarray, under: np.ndarray) -> None:
    parts = [(0, 1e-6, "nothing under the target"), (1e-6, 0.1, "< 10% over objects"),
             (0.1, 0.5, "10-50%"), (0.5, 1.01, ">= 50%")]  # fmt: skip
    cells = [f"{label}: {100 * (1 - painted[(under >= lo) & (under < hi)].mean()):.1f}% "
             f"of {((under >= lo) & (under < hi)).sum()}" for lo, hi, label in parts]  # fmt: skip
    print(f"{name:28s} removed {100 * (1 - painted.mean()):.1f}% | " + " | ".join(cells))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, help="default: the shipped mini model")
    p.add_argument("--data-dir", type=Path, required=True, help="the mini_scenes data set (`data scenes --out`)")
    p.add_argument("--count", type=int, default=500, help="the validation split's first N records")
    p.add_argument("--results", type=Path, nargs="*", default=[])
    args = p.parse_args(argv)
    measure = PaintedIn(load_checkpoint(checkpoint_or_default(args.checkpoint), networks=["alpha_clip", "clip_text"]))
    source = source_of(args.data_dir, "validation")
    seed = source.dataset_info.metadata["seed"]
    indices = [int(source[k]["index"]) for k in range(args.count)]  # the records' order, as `infer` reads them
    scenes = [S.render(seed, i) for i in indices]
    masks = np.stack([s.mask >= 128 for s in scenes]).astype(np.float32)
    under = np.array([s.under_target for s in scenes])
    read = lambda images: measure(np.stack(images).astype(np.float32) / 255.0, masks)
    truth = read([s.background for s in scenes])
    split("ground truth", truth, under)
    split("texture alone", read([s.texture for s in scenes]), under)
    print(f"source painted in: {100 * read([s.image for s in scenes]).mean():.1f}%")
    for folder in args.results:
        images = [np.asarray(Image.open(folder / f"{k:08d}.png").convert("RGB")) for k in range(args.count)]
        split(str(folder), read(images), under)
    for kind in S.BACKGROUNDS:
        sel = np.array([s.background_kind == kind for s in scenes])
        print(f"  {kind:8s} n={sel.sum():3d}: ground truth removed {100 * (1 - truth[sel].mean()):.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
