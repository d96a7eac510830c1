"""`clipaway-jax data scenes`: write the mini world's data set."""

from __future__ import annotations

import argparse
import textwrap
import time
from pathlib import Path

DESCRIPTION = textwrap.dedent(
    """\
    Writes the mini world's procedural scenes (textured backgrounds, 1-4 shapes, one target object with
    its mask, the ground-truth background without it, captions) as an array_record tensorflow-datasets
    dataset `mini_scenes` with train / validation / test splits, and OUT/preview.png (test scenes:
    image | mask | ground truth). Deterministic from --seed; no TensorFlow needed.

    examples:
      clipaway-jax data scenes --out data/mini                       # 20k / 1k / 1k at 64x64
      clipaway-jax data scenes --out /tmp/small --train 200 --validation 20 --test 20 --size 128
      # then, e.g.: clipaway-jax infer --tfds mini_scenes:test --data-dir data/mini --out results ...
    """
)


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="write data sets (the mini world's scenes)", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    kinds = p.add_subparsers(dest="kind", required=True)
    scenes = kinds.add_parser("scenes", help="the mini world's procedural scenes", description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    scenes.add_argument("--out", type=Path, required=True, help="tfds data_dir to write into")
    scenes.add_argument("--train", type=int, default=20_000)
    scenes.add_argument("--validation", type=int, default=1_000)
    scenes.add_argument("--test", type=int, default=1_000)
    scenes.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    scenes.add_argument("--seed", type=int, default=0)
    scenes.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from clipaway_jax.mini.dataset import NAME, build

    if args.size < 16:
        raise ValueError(f"--size {args.size}: scenes need at least 16 pixels")
    splits = {"train": args.train, "validation": args.validation, "test": args.test}
    start = time.perf_counter()
    builder = build(args.out, seed=args.seed, size=args.size, splits=splits)
    preview = write_preview(builder.as_data_source("test"), args.out / "preview.png")
    counts = ", ".join(f"{k} {v}" for k, v in splits.items())
    print(f"wrote {NAME} ({counts}; {args.size}px, seed {args.seed}) to {args.out} in "
          f"{time.perf_counter() - start:.0f} s; preview {preview}")  # fmt: skip
    return 0


def write_preview(source, path: Path, count: int = 8) -> Path:
    import io

    import numpy as np
    from PIL import Image

    from clipaway_jax.pipelines.images import grid, write_png_atomic

    decode = lambda data: np.asarray(Image.open(io.BytesIO(data)), np.float32) / 255.0
    rows = []
    for i in range(min(count, len(source))):
        record = source[i]
        rows.append(grid([decode(record[k]) for k in ("image", "mask", "background")]))
    return write_png_atomic(path, np.concatenate(rows)) if rows else path
