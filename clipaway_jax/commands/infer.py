"""`clipaway-jax infer`: batch removal over folders, list files or tfds datasets, on every device and host."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

from clipaway_jax.commands import pipeline_args

DESCRIPTION = textwrap.dedent(
    """\
    Removes the masked objects from many images, data-parallel over all devices (and hosts), resumable:
    a rerun skips outputs that exist (--overwrite redoes them). Writes OUT/<name>.png atomically,
    OUT/results.jsonl (status, seed, timings, DCGD texts) and, with --grid, OUT/grids/<name>.png.

    examples:
      clipaway-jax infer --images coco/val2017 --masks coco/masks --out results --checkpoint checkpoints/clipaway
      clipaway-jax infer --list pairs.csv --out results --checkpoint checkpoints/clipaway --per-device-batch 4
      clipaway-jax infer --images coco/val2017 --masks coco/masks --out results-bld --checkpoint \\
          checkpoints/clipaway --base blended   # Blended Latent Diffusion + CLIPAway (convert --sd-base)
      clipaway-jax infer --tfds my_inpaint_set:validation --data-dir ~/tfds --out results --checkpoint ckpt
      # two hosts (run on each, with its own --process-id):
      clipaway-jax infer --images in --masks m --out shared/out --checkpoint ckpt \\
          --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0
    """
)


def add_parser(sub) -> None:
    p = sub.add_parser("infer", help="batch removal, sharded over devices and hosts, resumable",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_inputs(p)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--checkpoint", type=Path,
                   help="a checkpoint made by `clipaway-jax convert` (default: the shipped mini model)")
    p.add_argument("--per-device-batch", type=pipeline_args.at_least(1), default=1,
                   help="images per device per step (default 1)")  # fmt: skip
    p.add_argument(
        "--native-size",
        action="store_true",
        help="keep each image's size (rounded down to a multiple of 8) instead of --size; shapes are bucketed",
    )
    p.add_argument("--overwrite", action="store_true", help="redo images whose output exists")
    p.add_argument("--grid", action="store_true", help="also write comparison grids to OUT/grids/")
    p.add_argument("--resize-masks", action="store_true", help="resize masks of another size instead of failing")
    p.add_argument("--fsdp", type=pipeline_args.at_least(1), default=1,
                   help="shard params over this many devices (large models)")  # fmt: skip
    add_distributed(p)
    pipeline_args.add(p)
    p.set_defaults(run=run)


def add_inputs(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("inputs (one of)")
    src.add_argument("--images", type=Path, help="folder of images (paired with --masks by file stem)")
    src.add_argument("--masks", type=Path, help="folder of masks, white = remove")
    src.add_argument("--list", type=Path, help="CSV or JSONL of image, mask[, output name]")
    src.add_argument("--tfds", metavar="NAME:SPLIT", help="a tensorflow-datasets dataset with image and mask features")
    src.add_argument("--data-dir", help="tfds data_dir")
    src.add_argument("--limit", type=pipeline_args.at_least(1), help="only the first N inputs (in listing order)")


def add_distributed(p: argparse.ArgumentParser) -> None:
    dist = p.add_argument_group("multi-host (jax.distributed)")
    dist.add_argument("--coordinator", default=os.environ.get("JAX_COORDINATOR_ADDRESS"),
                      help="host:port of process 0, or 'auto' (TPU pods, SLURM: jax finds it)")  # fmt: skip
    dist.add_argument("--num-processes", type=int, default=_env_int("JAX_NUM_PROCESSES"))
    dist.add_argument("--process-id", type=int, default=_env_int("JAX_PROCESS_ID"))


def _env_int(name: str) -> int | None:
    return int(os.environ[name]) if os.environ.get(name) else None


def init_distributed(args: argparse.Namespace) -> None:
    """`jax.distributed.initialize` from flags or the usual variables; CPU hosts use gloo collectives.
    `--coordinator auto` lets JAX find everything itself (TPU pod slices, SLURM, Open MPI)."""
    import jax

    if not args.coordinator:
        return
    if args.coordinator == "auto":
        jax.distributed.initialize()
        return
    if os.environ.get("JAX_PLATFORMS", "").startswith(
        "cpu"
    ) or "--xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(args.coordinator, num_processes=args.num_processes, process_id=args.process_id)


def listing(args: argparse.Namespace):
    found = _listing(args)
    if not found.items and not found.problems:
        raise ValueError(f"{args.list or args.tfds}: no image/mask pairs to remove")
    if args.limit is not None:
        found.items = found.items[: args.limit]
    return found


def _listing(args: argparse.Namespace):
    from clipaway_jax.batch import sources

    chosen = [bool(args.images or args.masks), bool(args.list), bool(args.tfds)]
    if sum(chosen) != 1:
        raise ValueError("give exactly one input: --images DIR --masks DIR, --list FILE, or --tfds NAME:SPLIT")
    if args.images or args.masks:
        if not (args.images and args.masks):
            raise ValueError("--images and --masks go together")
        return sources.from_folders(args.images, args.masks)
    if args.list:
        return sources.from_list(args.list)
    return sources.from_tfds(args.tfds, args.data_dir)


def run(args: argparse.Namespace) -> int:
    init_distributed(args)
    import jax

    from clipaway_jax.batch.runner import (
        BatchRunner,
        BatchSettings,
        clean_stale_temporaries,
        gather_summary,
        write_results,
    )
    from clipaway_jax.mini.shipped import checkpoint_or_default
    from clipaway_jax.pipelines.run import default_size, enable_compilation_cache
    from clipaway_jax.sharding import FSDP_RULES, REPLICATED, make_mesh

    enable_compilation_cache(args.cache_dir)
    args.checkpoint = checkpoint_or_default(args.checkpoint)
    found = listing(args)
    mesh = make_mesh(fsdp=args.fsdp)
    pipe, describer = pipeline_args.load_pipeline(args, mesh=mesh, rules=FSDP_RULES if args.fsdp > 1 else REPLICATED)
    size = None if args.native_size else (args.size or default_size(pipe))
    kwargs = pipeline_args.call_kwargs(args)
    settings = BatchSettings(args.out, size, args.keep_aspect, args.per_device_batch, args.overwrite, args.grid,
                             args.resize_masks, args.seed, kwargs["guidance_scale"], kwargs["ip_scale"],
                             image_tokens=args.image_tokens, negative_prompt=args.negative_prompt)  # fmt: skip
    clean_stale_temporaries(args.out)
    runner = BatchRunner(pipe, mesh, pipeline_args.options(args), settings, describer, args.guidance_mode)
    for source, reason in found.problems:
        runner._fail(Path(source).stem, f"{source}: {reason}")
    runner.run(found.items)
    write_results(args.out, runner.records)
    totals = gather_summary(runner.summary)
    if jax.process_index() == 0:
        rate, compile_s = totals["images_per_second"], totals["compile_seconds"]
        print(f"done {totals['done']}, skipped {totals['skipped']}, failed {totals['failed']}; {rate:.3f} images/s "
              f"excluding compile; compile {compile_s:.1f} s ({jax.device_count()} devices, "
              f"{jax.process_count()} processes)")  # fmt: skip
        for name, reason in runner.summary.failed:
            print(f"  failed {name}: {reason}", file=sys.stderr)
    return 1 if totals["failed"] else 0
