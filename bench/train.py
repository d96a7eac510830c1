"""Training benchmarks: (1) MLP step with cached embeddings vs recomputing the frozen AlphaCLIP and image
encoder every step; (2) peak temporary memory of a UNet train step with and without `--remat`.

    python bench/train.py                 # mid-size towers and UNet
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MID_ALPHA, MID_MLP, MID_UNET  # noqa: E402

from clipaway_jax import xla  # noqa: E402
from clipaway_jax.models import (  # noqa: E402
    CLIPAwayMLP,
    CLIPVisionConfig,
    CLIPVisionTransformer,
    MLPConfig,
    UNet2DConditionModel,
    UNetConfig,
    example_inputs,
)
from clipaway_jax.training.tasks import frozen_embeddings  # noqa: E402


def _init(module, *inputs):
    return flax.core.meta.unbox(jax.jit(module.init)(jax.random.key(0), *inputs))


def _step_time(step, *args, runs=5):
    step(*args)[0].block_until_ready()
    start = time.perf_counter()
    for _ in range(runs):
        out = step(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / runs


def mlp_cache_speedup(batch: int) -> None:
    alpha = CLIPVisionTransformer(CLIPVisionConfig(**MID_ALPHA))
    encoder = CLIPVisionTransformer(CLIPVisionConfig(**{**MID_ALPHA, "alpha": False, "projection_dim": 1024,
                                                        "hidden_act": "gelu"}))  # fmt: skip
    mlp = CLIPAwayMLP(MLPConfig(**MID_MLP))
    frozen = {
        "alpha_clip": _init(alpha, *example_inputs(alpha)),
        "image_encoder": _init(encoder, *example_inputs(encoder)),
    }
    params = _init(mlp, *example_inputs(mlp))
    opt = optax.adam(1e-5)
    state = opt.init(params)
    images = jnp.asarray(np.random.rand(batch, 512, 512, 3), jnp.float32)

    def update(params, state, x, y):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((mlp.apply(p, x) - y) ** 2))(params)
        updates, state = opt.update(grads, state)
        return loss, optax.apply_updates(params, updates), state

    from_images = xla.jit(lambda p, s, f, im: update(p, s, *frozen_embeddings(alpha, encoder, f, im)))
    cached = xla.jit(update)
    x, y = frozen_embeddings(alpha, encoder, frozen, images)
    t_images = _step_time(from_images, params, state, frozen, images)
    t_cached = _step_time(cached, params, state, x, y)
    print(f"MLP step, batch {batch}: recomputing frozen encoders {t_images * 1e3:.1f} ms, cached embeddings "
          f"{t_cached * 1e3:.2f} ms: {t_images / t_cached:.0f}x faster")  # fmt: skip


def unet_remat_memory(batch: int) -> None:
    for remat in (False, True):
        unet = UNet2DConditionModel(UNetConfig.from_dict(MID_UNET), remat=remat)
        inputs = example_inputs(unet)
        params = _init(unet, *inputs)
        size = unet.config.sample_size
        x = jnp.zeros((batch, size, size, unet.config.in_channels))
        ctx = jnp.zeros((batch, 77, unet.config.cross_attention_dim))
        loss = lambda p, unet=unet, x=x, ctx=ctx: jnp.mean(unet.apply(p, x, jnp.zeros((batch,)), ctx) ** 2)
        grad = xla.jit(jax.grad(loss))
        analysis = grad.lower(params).compile().memory_analysis()
        temp = getattr(analysis, "temp_size_in_bytes", float("nan"))
        print(f"UNet train step (mid, batch {batch}, {size}x{size} latents) remat={remat}: "
              f"temporary memory {temp / 1e9:.2f} GB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    mlp_cache_speedup(args.batch)
    for batch in (2, 8):
        unet_remat_memory(batch)


if __name__ == "__main__":
    main()
