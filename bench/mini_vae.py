"""The mini VAE's ceiling (issue #25 asks >= 30 dB): the round trip decode(encode(x).mode) of the first N
records of a split (the source images), PSNR per image as the evaluation computes it, the mean over
images and by background kind, for each checkpoint given (the shipped mini model when none is).

    python bench/mini_vae.py --data-dir runs/mini/data --count 256
    python bench/mini_vae.py --data-dir runs/mini/data --count 256 runs/vae_a/checkpoint runs/vae_b/checkpoint
"""

import argparse
from collections import defaultdict
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from clipaway_jax.checkpoint import load_checkpoint
from clipaway_jax.eval import stats
from clipaway_jax.mini.batches import decode, text
from clipaway_jax.mini.evaluate import source_of
from clipaway_jax.mini.shipped import checkpoint_or_default

BATCH = 64


def round_trip_program(checkpoint: Path):
    ckpt = load_checkpoint(checkpoint, networks=["vae"])
    vae, params = ckpt.module("vae"), {"params": ckpt.params["vae"]}
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), params)

    @jax.jit
    def run(images):  # [B, H, W, 3] in [0, 1]
        mode = vae.apply(params, images * 2 - 1, method="encode").mean
        return jnp.clip(vae.apply(params, mode, method="decode") / 2 + 0.5, 0, 1)

    return run


def records(data_dir: Path, split: str, count: int) -> tuple[np.ndarray, list[str]]:
    source = source_of(data_dir, split)
    rows = [source[i] for i in range(min(count, len(source)))]
    images = np.stack([decode(r["image"]) for r in rows]).astype(np.float32) / 255
    return images, [text(r["background_kind"]) for r in rows]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="*", type=Path, help="default: the shipped mini model")
    p.add_argument("--data-dir", type=Path, required=True, help="the mini_scenes data set (`data scenes --out`)")
    p.add_argument("--split", default="validation")
    p.add_argument("--count", type=int, default=256)
    args = p.parse_args(argv)
    images, kinds = records(args.data_dir, args.split, args.count)
    for checkpoint in args.checkpoints or [checkpoint_or_default(None)]:
        run = round_trip_program(checkpoint)
        out = np.concatenate([np.asarray(run(images[i : i + BATCH])) for i in range(0, len(images), BATCH)])
        scores = np.array([stats.psnr(o, x) for o, x in zip(out, images, strict=True)])
        by_kind = defaultdict(list)
        for kind, score in zip(kinds, scores, strict=True):
            by_kind[kind].append(score)
        cells = " | ".join(f"{k} {np.mean(v):.2f}" for k, v in sorted(by_kind.items()))
        print(f"{checkpoint}: round trip {scores.mean():.2f} dB over {len(scores)} {args.split} scenes | {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
