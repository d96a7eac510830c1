"""`clipaway-jax demo`: the removal pipeline on the shipped sample images.

Without `--checkpoint` it first builds the tiny built-in model set (seeded random weights) in the
published file layouts and converts it through the same `convert` path as real weights. Random
weights remove nothing: the demo shows every stage running, compiled, on this machine.
"""

from __future__ import annotations

import argparse
import textwrap
import time
from pathlib import Path

import numpy as np

from clipaway_jax.commands import pipeline_args

DESCRIPTION = textwrap.dedent(
    """\
    Runs CLIPAway removal on the sample images shipped with the package and writes each result and
    a comparison grid (input | mask | result) to --out.

    With no --checkpoint, the tiny built-in model set (seeded random weights) is built and converted
    first: it exercises every stage but removes nothing. Point --checkpoint at a converted checkpoint
    (see `clipaway-jax convert --help`) to see the published model at work.

    examples:
      clipaway-jax demo
      clipaway-jax demo --steps 20 --out demo_out
      clipaway-jax demo --checkpoint checkpoints/clipaway --keep-aspect
    """
)


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="remove objects from the shipped sample images", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    p.add_argument("--checkpoint", type=Path, help="a converted checkpoint; default: the tiny built-in model set")
    pipeline_args.add(p)
    p.set_defaults(run=main)


def build_tiny_checkpoint(out: Path) -> Path:
    """Write the tiny published-layout files and convert them, exactly as a user's real files would be."""
    from clipaway_jax.convert.published import Sources, convert
    from clipaway_jax.tiny import write_published

    files = write_published(out / "tiny-published")
    checkpoint = out / "tiny-checkpoint"
    convert(Sources(**files), checkpoint, force=True, progress=lambda msg: print(f"  {msg}"))
    return checkpoint


def main(args) -> int:
    from tqdm import tqdm

    from clipaway_jax.pipelines.images import write_png_atomic
    from clipaway_jax.pipelines.run import comparison_grid, default_size, enable_compilation_cache, finish, prepare
    from clipaway_jax.samples import sample_pairs

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    enable_compilation_cache(args.cache_dir)
    checkpoint = args.checkpoint
    if checkpoint is None:
        print(f"[1/2] building the tiny built-in model set (seeded random weights) in {out}")
        checkpoint = build_tiny_checkpoint(out)
    pipe, describer = pipeline_args.load_pipeline(args, checkpoint)
    size = args.size or default_size(pipe)
    print(f"[2/2] removing objects from {len(sample_pairs())} sample images at {size[1]}x{size[0]}, "
          f"{args.steps} {args.scheduler} steps, guidance {args.guidance_scale}")  # fmt: skip
    options = pipeline_args.options(args)
    rows = []
    for image_path, mask_path in tqdm(sample_pairs(), unit="image"):
        prepared = prepare(image_path, mask_path, size, args.keep_aspect)
        start = time.perf_counter()
        output, descriptions = pipeline_args.guided_call(pipe, describer, [prepared], options, args)
        result = finish(prepared, output[0])
        if descriptions:
            tqdm.write(f"  {prepared.name}: T_mask {descriptions[0].t_mask!r}, T_info {descriptions[0].t_info!r}")
        write_png_atomic(out / f"{prepared.name}.png", result)
        rows.append(comparison_grid(prepared, result))
        tqdm.write(f"  {prepared.name}: {time.perf_counter() - start:.1f} s (first one includes compilation)")
    width = max(r.shape[1] for r in rows)
    sheet = np.concatenate([np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])
    write_png_atomic(out / "grid.png", sheet)
    print(f"wrote {len(rows)} results and {out / 'grid.png'} (input | mask | result per row)")
    if args.checkpoint is None:
        print("These are random weights: they remove nothing. Convert the published files with "
              "`clipaway-jax convert --help`, then run `clipaway-jax demo --checkpoint checkpoints/NAME`.")  # fmt: skip
    return 0
