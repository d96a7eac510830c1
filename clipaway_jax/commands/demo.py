"""`clipaway-jax demo`: the removal pipeline at work, with no downloads.

Without `--checkpoint` it uses the shipped mini model (trained by `make mini` on the mini world) on
held-out test scenes, beside their ground truth and CLIPAway's embedding panels. `--tiny` builds the
tiny random model set instead (published file layouts, converted through `convert`): it runs every
stage but removes nothing. With `--checkpoint`, the shipped sample photos are used.
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
    With no --checkpoint, the shipped mini model removes the target object from held-out test scenes of
    the mini world and writes demo_out/grid.png: input | mask | result | ground truth | the whole-image
    generations from MLP(e_f), MLP(e_b) and CLIPAway's projection (upscaled 4x).

    With --checkpoint (a converted checkpoint, see `clipaway-jax convert --help`), or --tiny (the tiny
    random model set, built and converted first: every stage runs, nothing is removed), it runs on the
    sample images shipped with the package: input | mask | result.

    examples:
      clipaway-jax demo                                   # the mini model on 8 test scenes
      clipaway-jax demo --num-scenes 16 --guidance-mode clipaway+dcgd
      clipaway-jax demo --tiny --steps 2
      clipaway-jax demo --checkpoint checkpoints/clipaway --keep-aspect
    """
)


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="remove objects from the shipped sample images", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    p.add_argument("--checkpoint", type=Path, help="a converted checkpoint; default: the shipped mini model")
    p.add_argument("--tiny", action="store_true", help="the tiny random model set (removes nothing)")
    p.add_argument("--num-scenes", type=int, default=8, help="mini model: how many test scenes (default 8)")
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
    from clipaway_jax.mini import shipped
    from clipaway_jax.pipelines.run import enable_compilation_cache

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    enable_compilation_cache(args.cache_dir)
    if args.checkpoint is None and not args.tiny and shipped.available():
        print(f"[1/2] the shipped mini model ({shipped.SHIPPED}); {args.num_scenes} held-out test scenes")
        return mini_demo(args, out)
    checkpoint = args.checkpoint
    if checkpoint is None:
        print(f"[1/2] building the tiny built-in model set (seeded random weights) in {out}")
        checkpoint = build_tiny_checkpoint(out)
    sample_demo(args, out, checkpoint)
    if args.checkpoint is None:
        print("These are random weights: they remove nothing. Run `clipaway-jax demo` without --tiny for the "
              "trained mini model, or convert the published files (`clipaway-jax convert --help`).")  # fmt: skip
    return 0


def sample_demo(args, out: Path, checkpoint: Path) -> None:
    from clipaway_jax.pipelines.run import comparison_grid
    from clipaway_jax.samples import sample_pairs

    pipe, describer = pipeline_args.load_pipeline(args, checkpoint)
    rows = [comparison_grid(p, result) for p, result in _remove_all(args, pipe, describer, sample_pairs(), out)]
    _write_sheet(out, rows, "input | mask | result")


def mini_demo(args, out: Path) -> int:
    from PIL import Image

    from clipaway_jax.mini import shipped
    from clipaway_jax.pipelines.run import embedding_panels, resize_panel

    pipe, describer = pipeline_args.load_pipeline(args, shipped.SHIPPED)
    inputs, truths = out / "inputs", {}
    inputs.mkdir(exist_ok=True)
    pairs = []
    for name, scene in shipped.test_scenes(args.num_scenes):
        Image.fromarray(scene.image).save(inputs / f"{name}.png")
        Image.fromarray(scene.mask).save(inputs / f"{name}_mask.png")
        pairs.append((inputs / f"{name}.png", inputs / f"{name}_mask.png"))
        truths[name] = scene.background.astype(np.float32) / 255.0
    rows = []
    for prepared, result in _remove_all(args, pipe, describer, pairs, out):
        panels = embedding_panels(pipe, prepared, pipeline_args.options(args), **pipeline_args.call_kwargs(args))
        row = [prepared.original, prepared.original_mask, result, truths[prepared.name], *panels]
        rows.append(_grid_row([resize_panel(p, result.shape[:2]) for p in row], scale=4))
    _write_sheet(out, rows, "input | mask | result | ground truth | MLP(e_f) | MLP(e_b) | projection")
    return 0


def _remove_all(args, pipe, describer, pairs, out: Path):
    """(prepared, result) per input pair, each result written as OUT/NAME.png."""
    from tqdm import tqdm

    from clipaway_jax.pipelines.images import write_png_atomic
    from clipaway_jax.pipelines.run import default_size, finish, prepare

    size = args.size or default_size(pipe)
    print(f"[2/2] removing objects from {len(pairs)} images at {size[1]}x{size[0]}, "
          f"{args.steps} {args.scheduler} steps, guidance {args.guidance_scale}")  # fmt: skip
    options = pipeline_args.options(args)
    for i, (image_path, mask_path) in enumerate(tqdm(pairs, unit="image")):
        prepared = prepare(image_path, mask_path, size, args.keep_aspect, base=args.base)
        start = time.perf_counter()
        output, descriptions = pipeline_args.guided_call(pipe, describer, [prepared], options, args)
        result = finish(prepared, output[0], options)
        if descriptions:
            tqdm.write(f"  {prepared.name}: T_mask {descriptions[0].t_mask!r}, T_info {descriptions[0].t_info!r}")
        write_png_atomic(out / f"{prepared.name}.png", result)
        first = " (includes compilation)" if i == 0 else ""
        tqdm.write(f"  {prepared.name}: {time.perf_counter() - start:.1f} s{first}")
        yield prepared, result


def _grid_row(panels: list[np.ndarray], scale: int) -> np.ndarray:
    from clipaway_jax.pipelines.images import grid

    big = [np.repeat(np.repeat(p, scale, 0), scale, 1) for p in panels]  # nearest: the 64 px pixels stay visible
    return grid(big)


def _write_sheet(out: Path, rows: list[np.ndarray], columns: str) -> None:
    from clipaway_jax.pipelines.images import write_png_atomic

    width = max(r.shape[1] for r in rows)
    sheet = np.concatenate([np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])
    write_png_atomic(out / "grid.png", sheet)
    print(f"wrote {len(rows)} results and {out / 'grid.png'} ({columns} per row)")
