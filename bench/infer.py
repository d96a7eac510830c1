"""Per-image time of the compiled removal program at batch 1, 2, 4, 8 (tiny and mid-size random models).

    python bench/infer.py                       # both sizes, 10 PNDM steps
    python bench/infer.py --sizes mid --steps 50

Steady state: each batch size is compiled and run once before timing; the median of --runs runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import pixel_size, random_checkpoint  # noqa: E402

from clipaway_jax.pipelines.clipaway import CLIPAwayPipeline, RemovalOptions  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "mid"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print("| model | image px | steps | batch | compile s | s / batch | s / image |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        pipe = CLIPAwayPipeline(random_checkpoint(size))
        px = pixel_size(pipe.checkpoint)
        options = RemovalOptions(steps=args.steps)
        for batch in args.batches:
            rng = np.random.RandomState(0)
            images = rng.rand(batch, px, px, 3).astype(np.float32)
            masks = np.zeros((batch, px, px), np.float32)
            masks[:, px // 4 : px // 2, px // 4 : 3 * px // 4] = 1
            start = time.perf_counter()
            pipe.remove(images, masks, options=options)
            first = time.perf_counter() - start
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                pipe.remove(images, masks, options=options)
                times.append(time.perf_counter() - start)
            t = statistics.median(times)
            print(
                f"| {size} | {px} | {args.steps} | {batch} | {first - t:.1f} | {t:.3f} | {t / batch:.3f} |", flush=True
            )


if __name__ == "__main__":
    main()
