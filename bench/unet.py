"""UNet forward, JAX vs diffusers/torch, same config, random weights and inputs, one process, alternating.

    python bench/unet.py                 # full SD-1.5 inpainting config, batch 2, 64x64 latents, 77 tokens
    python bench/unet.py --config tiny   # the tiny test config (quick check of the script)
    python bench/unet.py --weights fan-in --dtype float32   # the weights of bench/full_checkpoint.py

Prints the median steady-state time of each, the ratio JAX/torch, achieved GFLOP/s (FLOPs counted once
with XLA's cost analysis) and the fraction of the fp32 GEMM peak measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

from clipaway_jax import xla


def gemm_peak(sizes=(1024, 2048, 4096), repeats: int = 5) -> float:
    """GFLOP/s of square fp32 matmuls: the best of torch, JAX with XLA's default options and JAX with ours,
    over a few sizes (a single size and library under-reads the peak on this shared machine)."""
    best = 0.0
    for n in sizes:
        a = np.random.rand(n, n).astype(np.float32)
        x, t = jnp.asarray(a), torch.from_numpy(a)
        runs = [lambda mm=mm, x=x: mm(x).block_until_ready() for mm in (jax.jit(_square), xla.jit(_square))]
        runs.append(lambda t=t: t @ t)
        for run in runs:
            run()  # compile / warm up
            best = max(best, 2 * n**3 / min(_time(run) for _ in range(repeats)))
    return best / 1e9


def _square(x):
    return x @ x


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=("full", "tiny"), default="full")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "both"), default="both")
    parser.add_argument("--weights", choices=("torch-init", "fan-in", "flat"), default="torch-init",
                        help="torch's own init; `tiny.randomize_` with fan-in scaling (the whole-pipeline "
                        "bench's weights); or its flat 0.2 (activations overflow at full size)")  # fmt: skip
    args = parser.parse_args()

    from diffusers import UNet2DConditionModel as TorchUNet

    from clipaway_jax.convert.networks import convert_unet
    from clipaway_jax.models import UNetConfig
    from clipaway_jax.tiny import TINY_UNET

    config = UNetConfig() if args.config == "full" else UNetConfig.from_dict(TINY_UNET)
    size, cross = config.sample_size, config.cross_attention_dim
    torch.manual_seed(0)
    reference = TorchUNet(**config.to_dict()).eval()
    if args.weights != "torch-init":
        from clipaway_jax.tiny import randomize_

        randomize_(reference, fan_in=args.weights == "fan-in")
    params = convert_unet({k: v.numpy() for k, v in reference.state_dict().items()}, config)
    rng = np.random.RandomState(0)
    sample = rng.randn(2, size, size, config.in_channels).astype(np.float32)
    context = rng.randn(2, 77, cross).astype(np.float32)
    t = np.array([500, 500])
    peak = gemm_peak()
    print(
        f"weights {args.weights}, devices {jax.devices()}, torch threads {torch.get_num_threads()}, "
        f"fp32 GEMM peak {peak:.0f} GFLOP/s, "
        f"XLA compiler options {xla.compiler_options()}"
    )

    for dtype in ["float32", "bfloat16"] if args.dtype == "both" else [args.dtype]:
        run_one(dtype, config, params, reference, sample, context, t, peak, args.runs)
    print(f"fp32 GEMM peak measured again after the runs: {gemm_peak():.0f} GFLOP/s")


def run_one(dtype, config, params, reference, sample, context, t, peak, runs):
    from clipaway_jax.models import UNet2DConditionModel

    jdt, tdt = (jnp.float32, torch.float32) if dtype == "float32" else (jnp.bfloat16, torch.bfloat16)
    model = UNet2DConditionModel(config, dtype=jdt)
    p = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jdt), {"params": params})
    compiled = xla.jit(model.apply).lower(p, sample, t, context).compile()
    flops = (compiled.cost_analysis() or {}).get("flops", float("nan"))
    out = np.asarray(compiled(p, sample, t, context), np.float32)
    print(f"{dtype}: output finite {np.isfinite(out).mean():.3f}, max |x| {np.nanmax(np.abs(out)):.3g}")
    ref = reference.to(tdt)
    ts = torch.from_numpy(sample.transpose(0, 3, 1, 2).copy()).to(tdt)
    tc, tt = torch.from_numpy(context).to(tdt), torch.from_numpy(t)
    jax_times, torch_times = [], []
    with torch.no_grad():
        ref(ts, tt, tc)
        for _ in range(runs):  # alternate, so both see the same machine state
            jax_times.append(_time(lambda: compiled(p, sample, t, context).block_until_ready()))
            torch_times.append(_time(lambda: ref(ts, tt, tc)))
    j, r = statistics.median(jax_times), statistics.median(torch_times)
    rate = flops / j / 1e9
    print(
        f"{dtype:9s} jax {j:7.3f} s  torch {r:7.3f} s  jax/torch {j / r:5.2f}  jax {rate:6.1f} GFLOP/s "
        f"({rate / peak:5.1%} of peak), {flops / 1e12:.2f} TFLOP per forward"
    )


if __name__ == "__main__":
    main()
