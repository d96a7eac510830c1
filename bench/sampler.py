"""Sampling-loop overhead: one compiled N-step program (lax.scan) vs N separately dispatched UNet+CFG+step
calls, and the whole pipeline's time per image.

    python bench/sampler.py --size mid --steps 10
    python bench/sampler.py --size full --steps 50      # SD-1.5 sizes, random weights (slow on CPU)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SETS, pixel_size, random_checkpoint  # noqa: E402

from clipaway_jax import xla  # noqa: E402
from clipaway_jax.models import UNetConfig, VAEConfig  # noqa: E402
from clipaway_jax.pipelines.clipaway import CLIPAwayPipeline, RemovalOptions  # noqa: E402
from clipaway_jax.schedulers import make_sampler  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "mid", "full"), default="mid")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.size == "full":
        SETS["full"] = (UNetConfig().to_dict(), VAEConfig().to_dict(), *SETS["mid"][2:])
    pipe = CLIPAwayPipeline(random_checkpoint(args.size))
    unet, params = pipe.nets.unet, pipe.params["unet"]
    cfg, px = unet.config, pixel_size(pipe.checkpoint)
    h = px // pipe.nets.vae.config.scale_factor
    sampler = make_sampler("pndm", pipe.scheduler_config, args.steps)
    rng = np.random.RandomState(0)
    x = jnp.asarray(rng.randn(1, h, h, 4), jnp.float32)
    extra = jnp.asarray(rng.randn(2, h, h, cfg.in_channels - 4), jnp.float32)
    ctx = jnp.asarray(rng.randn(2, 77, cfg.cross_attention_dim), jnp.float32)
    tokens = jnp.asarray(rng.randn(2, 4, cfg.cross_attention_dim), jnp.float32)

    def one(state, x, t):
        eps = unet.apply(params, jnp.concatenate([jnp.repeat(x, 2, 0), extra], -1), t, ctx, tokens, 1.0)
        return sampler.step(state, eps[:1] + 7.5 * (eps[1:] - eps[:1]), x)

    def loop(x):
        return jax.lax.scan(
            lambda c, t: (one(*c, t), None), (sampler.init_state(x), x), jnp.asarray(sampler.timesteps)
        )[0][1]

    looped, stepped = xla.jit(loop), xla.jit(one)
    looped(x).block_until_ready()
    state = sampler.init_state(x)
    stepped(state, x, sampler.timesteps[0])[1].block_until_ready()

    def python_loop():
        s, y = sampler.init_state(x), x
        for t in sampler.timesteps:
            s, y = stepped(s, y, t)
        return y.block_until_ready()

    loop_times, call_times = [], []
    for _ in range(args.runs):
        start = time.perf_counter()
        looped(x).block_until_ready()
        loop_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        python_loop()
        call_times.append(time.perf_counter() - start)
    a, b = statistics.median(loop_times), statistics.median(call_times)
    images = rng.rand(1, px, px, 3).astype(np.float32)
    masks = np.zeros((1, px, px), np.float32)
    masks[:, px // 4 : px // 2] = 1
    options = RemovalOptions(steps=args.steps)
    pipe.remove(images, masks, options=options)
    start = time.perf_counter()
    pipe.remove(images, masks, options=options)
    whole = time.perf_counter() - start
    print(f"size {args.size} ({px}px), {args.steps} steps: scan loop {a:.3f} s, {args.steps} dispatched calls "
          f"{b:.3f} s, loop overhead {a / b - 1:+.2%}; whole pipeline {whole:.3f} s per image")  # fmt: skip


if __name__ == "__main__":
    main()
