"""What a mini inpainting UNet's architecture costs in training on this machine: the gradient of a loss
through the UNet (forward and backward; IP-Adapter tokens and 77 text states as in the inpainting stage)
at the stage's batch and the mini latent size, for the shipped architecture and the variants given.
With --profile, where the shipped architecture's step spends its time (XLA's CPU profile, each HLO op
attributed to the module it came from by its op_name).

    python bench/mini_unet.py
    python bench/mini_unet.py --variants '{"block_out_channels": [80, 128]}' '{"layers_per_block": 2}'
    python bench/mini_unet.py --variants '{"block_out_channels": [80, 128]}' --profile

Each row: parameters (millions, and MB as float16, as the shipped set stores them), the median of --runs
gradient calls, XLA's FLOP count, achieved GFLOP/s. The architectures alternate in rounds, so a drift in
the machine's speed (up to 2x here) lands on all of them alike.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clipaway_jax import xla  # noqa: E402
from clipaway_jax.mini.models import UNET  # noqa: E402
from clipaway_jax.models.unet import UNet2DConditionModel, UNetConfig  # noqa: E402

# the module kinds the profile sums over, from an HLO op's op_name (flax module paths)
KINDS = [("self-attention", r"attn1"), ("cross-attention (text + image tokens)", r"attn2"), ("feed-forward", r"/ff"),
         ("transformer norms and projections", r"attentions_\d"), ("resnets", r"resnets_\d"),
         ("down/upsamplers", r"samplers"), ("conv_in/out, time embedding", r".")]  # fmt: skip


def gradient(overrides: dict, batch: int):
    """The jitted gradient of a squared-output loss through the UNet, its params and inputs."""
    config = UNetConfig.from_dict({**UNET, **overrides})
    unet = UNet2DConditionModel(config)
    keys = jax.random.split(jax.random.key(0), 4)
    size = config.sample_size
    inputs = (jax.random.normal(keys[0], (batch, size, size, config.in_channels)), jnp.arange(batch) * 111,
              jax.random.normal(keys[1], (batch, 77, config.cross_attention_dim)),
              jax.random.normal(keys[2], (batch, 4, config.cross_attention_dim)))  # fmt: skip
    params = jax.jit(unet.init)(keys[3], *inputs)
    grad = xla.jit(jax.grad(lambda p: jnp.mean(unet.apply(p, *inputs) ** 2)))
    return grad, params


def timed(fn, params) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(params))
    return time.perf_counter() - start


def compare(variants: list[dict], batch: int, runs: int) -> None:
    built = [gradient(v, batch) for v in variants]
    rows = []
    for grad, params in built:
        count = sum(x.size for x in jax.tree_util.tree_leaves(params))
        flops = grad.lower(params).compile().cost_analysis().get("flops", float("nan"))
        jax.block_until_ready(grad(params))
        rows.append({"params": count, "flops": flops, "times": []})
    for _ in range(runs):  # rounds: every architecture once per round
        for (grad, params), row in zip(built, rows):
            row["times"].append(timed(grad, params))
    base = statistics.median(rows[0]["times"])
    print("| UNet | params | float16 MB | step s (fwd + bwd) | vs shipped | GFLOP | GFLOP/s |")
    print("|---|---|---|---|---|---|---|")
    for variant, row in zip(variants, rows):
        step = statistics.median(row["times"])
        print(f"| {json.dumps(variant) if variant else 'shipped'} | {row['params'] / 1e6:.2f}M | "
              f"{row['params'] * 2 / 2**20:.1f} | {step:.3f} | {step / base:.2f} | {row['flops'] / 1e9:.1f} | "
              f"{row['flops'] / step / 1e9:.0f} |")  # fmt: skip


def profile(batch: int, runs: int) -> None:
    """Time per module kind of the shipped architecture's step: the ops of a profiled run, attributed through
    the compiled HLO's op_name."""
    grad, params = gradient({}, batch)
    first_level = rf"down_blocks_0|up_blocks_{len(UNET['block_out_channels']) - 1}"  # the 16x16 blocks
    text = grad.lower(params).compile().as_text()
    origin = dict(re.findall(r'%([\w.\-]+) = [^\n]*?op_name="([^"]*)"', text))
    jax.block_until_ready(grad(params))
    with tempfile.TemporaryDirectory() as folder:
        jax.profiler.start_trace(folder, create_perfetto_trace=True)
        for _ in range(runs):
            jax.block_until_ready(grad(params))
        jax.profiler.stop_trace()
        with gzip.open(next(Path(folder).rglob("*perfetto_trace.json.gz"))) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    spent, attention_16 = collections.Counter(), 0.0
    for event in events:
        name = origin.get(event.get("name", "")) if event.get("ph") == "X" else None
        if name is None:
            continue
        kind = next(k for k, pattern in KINDS if re.search(pattern, name))
        spent[kind] += event["dur"]
        if kind == "self-attention" and re.search(first_level, name):
            attention_16 += event["dur"]
    total = sum(spent.values())
    print(f"\nshipped: {total / runs / 1e3:.0f} ms of ops per step")
    print("| module kind | ms per step | share |")
    print("|---|---|---|")
    for kind, _ in KINDS:
        print(f"| {kind} | {spent[kind] / runs / 1e3:.1f} | {spent[kind] / total:.0%} |")
    print(
        f"| (of the self-attention: at the first level, {UNET['sample_size']}x{UNET['sample_size']} tokens) | "
        f"{attention_16 / runs / 1e3:.1f} | {attention_16 / total:.0%} |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="*", type=json.loads, default=[], metavar="JSON",
                   help="UNet config overrides of the shipped mini architecture, one row each")  # fmt: skip
    p.add_argument("--batch", type=int, default=8, help="examples per step (the inpainting stage's: 8)")
    p.add_argument("--runs", type=int, default=12, help="timed rounds")
    p.add_argument("--profile", action="store_true", help="also break the shipped architecture's step down")
    args = p.parse_args()
    compare([{}] + args.variants, args.batch, args.runs)
    if args.profile:
        profile(args.batch, 5)


if __name__ == "__main__":
    main()
