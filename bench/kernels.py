"""Single kernels at UNet shapes, fp32 and bf16: torch vs JAX with XLA's default CPU options vs JAX with
ours (`clipaway_jax/xla.py`). Best of N runs, GFLOP/s.

    python bench/kernels.py
    python bench/kernels.py --runs 20
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

from clipaway_jax import xla

NHWC = ("NHWC", "HWIO", "NHWC")
CASES = {  # name: (jax fn, torch fn, shapes in JAX layout, FLOPs)
    "matmul 8192x320 @ 320x1280": (lambda a, b: a @ b, lambda a, b: a @ b, [(8192, 320), (320, 1280)],
                                   2 * 8192 * 320 * 1280),
    "conv3x3 2x64x64x320 -> 320": (None, None, [(2, 64, 64, 320), (3, 3, 320, 320)], 2 * 2 * 64 * 64 * 320 * 320 * 9),
    "conv3x3 2x8x8x1280 -> 1280": (None, None, [(2, 8, 8, 1280), (3, 3, 1280, 1280)], 2 * 2 * 8 * 8 * 1280**2 * 9),
}  # fmt: skip


def _conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC)


def _torch_conv(x, w):
    return torch.nn.functional.conv2d(x, w, padding=1)


def _best(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def rates(jax_fn, torch_fn, shapes, flops, dtype, runs: int, rng) -> list[float]:
    """GFLOP/s of torch, JAX with XLA's defaults, JAX with our options."""
    arrays = [rng.randn(*shape).astype(np.float32) for shape in shapes]
    xs = [jnp.asarray(a, dtype) for a in arrays]
    tdt = torch.float32 if dtype == jnp.float32 else torch.bfloat16
    if jax_fn is None:  # a conv: torch wants NCHW / OIHW
        jax_fn, torch_fn = _conv, _torch_conv
        arrays = [arrays[0].transpose(0, 3, 1, 2), arrays[1].transpose(3, 2, 0, 1)]
    ts = [torch.from_numpy(a.copy()).to(tdt) for a in arrays]
    with torch.no_grad():
        result = [flops / _best(lambda: torch_fn(*ts), runs) / 1e9]
    for compiled in (jax.jit(jax_fn), xla.jit(jax_fn)):
        result.append(flops / _best(lambda c=compiled: c(*xs).block_until_ready(), runs) / 1e9)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.RandomState(0)
    print(f"{'kernel':30s} {'dtype':9s} {'torch':>7s} {'XLA default':>12s} {'ours':>7s}  GFLOP/s")
    for name, (jax_fn, torch_fn, shapes, flops) in CASES.items():
        for dtype in (jnp.float32, jnp.bfloat16):
            r = rates(jax_fn, torch_fn, shapes, flops, dtype, args.runs, rng)
            print(f"{name:30s} {jnp.dtype(dtype).name:9s} {r[0]:7.0f} {r[1]:12.0f} {r[2]:7.0f}")


if __name__ == "__main__":
    main()
