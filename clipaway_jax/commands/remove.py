"""`clipaway-jax remove IMAGE MASK -o OUT.png`: remove the masked object from one image."""

from __future__ import annotations

import argparse
import textwrap
import time
from pathlib import Path

from clipaway_jax.commands import pipeline_args

DESCRIPTION = textwrap.dedent(
    """\
    Removes the object under MASK (white = remove) from IMAGE with CLIPAway.

    examples:
      clipaway-jax remove photo.jpg mask.png -o clean.png --checkpoint checkpoints/clipaway
      clipaway-jax remove photo.jpg mask.png -o clean.png --checkpoint checkpoints/clipaway \\
          --keep-aspect --paste-back 8 --grid --steps 30 --scheduler dpm++2m
      clipaway-jax remove photo.jpg mask.png -o panel.png --checkpoint checkpoints/clipaway --show-embeddings
      # Blended Latent Diffusion as the base (convert --sd-base), with CLIPAway's tokens, then without:
      clipaway-jax remove photo.jpg mask.png -o bld.png --checkpoint checkpoints/clipaway --base blended
      clipaway-jax remove photo.jpg mask.png -o bld-plain.png --checkpoint checkpoints/clipaway --base blended \
          --ip-scale 0 --negative-prompt ""
    """
)


def add_parser(sub) -> None:
    p = sub.add_parser("remove", help="remove the masked object from one image", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("image", type=Path, help="input image (any PIL format; alpha and grayscale are converted)")
    p.add_argument("mask", type=Path, help="mask image, white = remove (binarized at 0.5)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output PNG (written atomically)")
    p.add_argument("--checkpoint", type=Path,
                   help="a checkpoint made by `clipaway-jax convert` (default: the shipped mini model)")
    p.add_argument("--grid", action="store_true", help="also write OUT.grid.png: input | mask | result")
    p.add_argument(
        "--show-embeddings",
        action="store_true",
        help="also write OUT.embeddings.png: whole-image generations from e_f, e_b and the projection",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    pipeline_args.add(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from clipaway_jax.mini.shipped import checkpoint_or_default
    from clipaway_jax.pipelines.images import write_png_atomic
    from clipaway_jax.pipelines.run import (
        check_output,
        comparison_grid,
        default_size,
        embedding_panels,
        enable_compilation_cache,  # fmt: skip
        finish,
        prepare,
    )

    check_output(args.output, args.overwrite, (args.image, args.mask))
    args.checkpoint = checkpoint_or_default(args.checkpoint)
    enable_compilation_cache(args.cache_dir)
    pipe, describer = pipeline_args.load_pipeline(args)
    prepared = prepare(args.image, args.mask, args.size or default_size(pipe), args.keep_aspect, base=args.base)
    for note in prepared.notes:
        print(f"note: {args.mask if 'mask' in note else args.image}: {note}")
    options, kwargs = pipeline_args.options(args), pipeline_args.call_kwargs(args)
    start = time.perf_counter()
    output = None
    if not prepared.empty:
        outputs, descriptions = pipeline_args.guided_call(pipe, describer, [prepared], options, args)
        output = outputs[0]
        if descriptions:
            print(f"T_mask (negative): {descriptions[0].t_mask!r}   T_info (positive): {descriptions[0].t_info!r}")
    result = finish(prepared, output, options)
    write_png_atomic(args.output, result)
    print(f"wrote {args.output} ({time.perf_counter() - start:.1f} s incl. compile)")
    if args.grid:
        write_png_atomic(args.output.with_suffix(".grid.png"), comparison_grid(prepared, result))
    if args.show_embeddings and not prepared.empty:
        panels = embedding_panels(pipe, prepared, options, **kwargs)
        write_png_atomic(args.output.with_suffix(".embeddings.png"), comparison_grid(prepared, result, panels))
    return 0
