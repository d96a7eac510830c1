"""Training throughput of the mini recipe's stages on this machine: the stage's own config
(train/configs/mini_*.py) and task, its real loader on the mini world's data, its compiled train step.

    python bench/mini_train.py --data-dir runs/mini/data                       # vae and inpaint
    python bench/mini_train.py --data-dir runs/mini/data --stages vae --vae '{"block_out_channels": [32, 64, 128]}'
    python bench/mini_train.py --data-dir runs/mini/data --stages vae vae-decoder --steps 12
    python bench/mini_train.py --data-dir runs/mini/data --stages inpaint --set cache_latents=True

For each stage: compile seconds, the median step time over --steps steps on one batch (the loader
timed apart: it runs on the host before each step), samples/s, the step's FLOPs (XLA's cost analysis,
forward + backward + update), achieved GFLOP/s and its share of the fp32 GEMM peak measured in the same
run. The frozen networks a stage needs are random (untrained): the step costs the same. "setup s" is
the task's construction, which includes building a cache (`cache_latents`) over the whole training set.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

STAGES = {"vae": "mini_vae.py", "vae-decoder": "mini_vae_decoder.py", "inpaint": "mini_inpaint.py",
          "alpha-clip": "mini_alpha_clip.py", "image-encoder": "mini_image_encoder.py"}  # fmt: skip
# the networks a stage reads and does not train from nothing (vae-decoder continues the VAE, its encoder frozen)
FROZEN = {"inpaint": ("vae", "text_encoder", "image_encoder"), "vae-decoder": ("vae",), "vae": (), "alpha-clip": (),
          "image-encoder": ()}  # fmt: skip


def gemm_peak(sizes=(1024, 2048), repeats: int = 5) -> float:
    """GFLOP/s of square fp32 matmuls (XLA, this project's CPU options): the best over a few sizes."""
    from clipaway_jax import xla

    best = 0.0
    for n in sizes:
        x = jax.numpy.asarray(np.random.rand(n, n).astype(np.float32))
        square = xla.jit(lambda a: a @ a)
        square(x).block_until_ready()
        for _ in range(repeats):
            start = time.perf_counter()
            square(x).block_until_ready()
            best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best / 1e9


def skeleton(folder: Path, overrides: dict[str, dict], frozen: tuple[str, ...]) -> Path:
    """The mini skeleton with architecture overrides, and untrained copies of the frozen networks."""
    from clipaway_jax.checkpoint import read_manifest, write_manifest
    from clipaway_jax.commands.train import export, init_params
    from clipaway_jax.mini.models import write_skeleton

    root = write_skeleton(folder / "skeleton")
    manifest = read_manifest(root)
    for name, config in overrides.items():
        manifest["init"][name]["config"] |= config
    write_manifest(root, {k: v for k, v in manifest.items() if k not in ("format", "package_version")})
    if not frozen:
        return root
    init = manifest["init"]
    params = {n: init_params(init[n], i) for i, n in enumerate(frozen)}
    export(root, folder / "frozen", params, {n: init[n] for n in frozen})
    return folder / "frozen"


def measure(stage: str, checkpoint: Path, data_dir: Path, steps: int, batch: int | None, workdir: Path,
            settings=()) -> dict:  # fmt: skip
    from clipaway_jax.commands.train import TASKS, abstract_tree, train_config
    from clipaway_jax.sharding import REPLICATED, make_mesh
    from clipaway_jax.training.config import parse_config
    from clipaway_jax.training.trainer import Trainer

    overrides = [f"--config.checkpoint={checkpoint}", f"--config.data_dir={data_dir}"]
    overrides += [f"--config.batch_size={batch}"] if batch else []
    overrides += [f"--config.{setting}" for setting in settings]
    config = parse_config(ROOT / "train" / "configs" / STAGES[stage], overrides)
    cfg = train_config(config)
    start = time.perf_counter()
    task = TASKS[config.task](config, workdir, cfg)
    setup_s = time.perf_counter() - start
    trainer = Trainer(cfg, task.loss, abstract_tree(task), task.params, workdir, make_mesh(), REPLICATED, task.frozen)
    indices = np.arange(cfg.global_batch)
    start = time.perf_counter()
    batch_arrays = task.load(indices)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    compiled = trainer.compiled(batch_arrays)
    compile_s = time.perf_counter() - start
    flops = float(compiled.cost_analysis().get("flops", float("nan")))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.train_step(batch_arrays)
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times[1:] if len(times) > 1 else times)
    return {"stage": stage, "batch": cfg.global_batch, "setup_s": setup_s, "compile_s": compile_s, "step_s": step_s,
            "load_s": load_s,
            "samples_per_s": cfg.global_batch / (step_s + load_s), "gflop_per_step": flops / 1e9,
            "gflop_per_s": flops / step_s / 1e9}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True, help="the mini_scenes data set (`data scenes --out`)")
    p.add_argument("--stages", nargs="+", choices=list(STAGES), default=["vae", "inpaint"])
    p.add_argument("--steps", type=int, default=6, help="timed steps per stage (the first is dropped)")
    p.add_argument("--batch", type=int, help="override the stage config's batch size")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides (cache_latents=True)")
    for name in ("vae", "unet", "alpha_clip", "image_encoder"):
        p.add_argument(f"--{name.replace('_', '-')}", type=json.loads, default={}, metavar="JSON",
                       help=f"{name} architecture overrides (the mini skeleton's init config)")  # fmt: skip
    args = p.parse_args()
    overrides = {n: getattr(args, n) for n in ("vae", "unet", "alpha_clip", "image_encoder") if getattr(args, n)}
    peak = gemm_peak()
    print(f"fp32 GEMM peak in this run: {peak:.0f} GFLOP/s; overrides {overrides or 'none'} {' '.join(args.set)}")
    print("| stage | batch | setup s | compile s | step s | loader s | samples/s | GFLOP/step | GFLOP/s | of peak |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for stage in args.stages:
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = skeleton(Path(tmp), overrides, FROZEN[stage])
            r = measure(stage, checkpoint, args.data_dir, args.steps, args.batch, Path(tmp) / "work", args.set)
        print(f"| {r['stage']} | {r['batch']} | {r['setup_s']:.1f} | {r['compile_s']:.1f} | {r['step_s']:.3f} | "
              f"{r['load_s']:.3f} | "
              f"{r['samples_per_s']:.1f} | {r['gflop_per_step']:.1f} | {r['gflop_per_s']:.0f} | "
              f"{r['gflop_per_s'] / peak:.0%} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
