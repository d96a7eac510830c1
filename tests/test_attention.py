"""The blockwise CPU attention equals softmax attention (and torch's SDPA); the dispatcher uses it for long
self-attention only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from fixtures import assert_close

from clipaway_jax.models import attention as attn


@pytest.mark.parametrize("lq, lk", [(1024, 1024), (960, 960), (1000, 77), (64, 4)])
def test_blockwise_equals_torch_sdpa(lq, lk):
    rng = np.random.RandomState(lq)
    q = rng.randn(2, lq, 4, 40).astype(np.float32)
    k, v = (rng.randn(2, lk, 4, 40).astype(np.float32) for _ in range(2))
    to_torch = lambda x: torch.from_numpy(x).transpose(1, 2)
    expected = torch.nn.functional.scaled_dot_product_attention(to_torch(q), to_torch(k), to_torch(v))
    out = jax.jit(attn.blockwise_attention)(q, k, v)
    assert_close(out, expected.transpose(1, 2).numpy(), f"blockwise {lq}x{lk}")


def test_blockwise_in_bfloat16_stays_close():
    rng = np.random.RandomState(0)
    q, k, v = (jnp.asarray(rng.randn(1, 512, 2, 32), jnp.bfloat16) for _ in range(3))
    exact = jax.nn.dot_product_attention(*(x.astype(jnp.float32) for x in (q, k, v)))
    out = attn.blockwise_attention(q, k, v)
    assert out.dtype == jnp.bfloat16 and float(jnp.abs(out.astype(jnp.float32) - exact).max()) < 2e-2


def test_dispatcher_goes_blockwise_only_for_long_unmasked_attention():
    long = jnp.zeros((1, 1024, 2, 8))
    short = jnp.zeros((1, 64, 2, 8))
    uses_map = lambda *a, **k: "scan" in str(jax.make_jaxpr(lambda *x: attn.attention(*x, **k))(*a))
    assert uses_map(long, long, long)
    assert not uses_map(short, short, short)
    assert not uses_map(long, long, long, is_causal=True)


def test_block_size_divides_the_length():
    assert attn._block_size(4096, 256) == 256
    assert attn._block_size(960, 256) == 240
    assert attn._block_size(1009, 256) == 1009  # a prime: one block


@pytest.mark.parametrize(
    "platform, dtype, head, expected",
    [
        ("cpu", jnp.float32, 40, "blockwise"),
        ("cpu", jnp.bfloat16, 64, "blockwise"),
        ("tpu", jnp.float32, 40, "pallas_tpu"),
        ("tpu", jnp.bfloat16, 160, "pallas_tpu"),
        ("gpu", jnp.bfloat16, 40, "cudnn"),
        ("gpu", jnp.float16, 128, "cudnn"),
        ("gpu", jnp.float32, 40, "blockwise"),  # cuDNN's fused attention takes half precision only
        ("gpu", jnp.bfloat16, 160, "blockwise"),  # a head size it does not take
        ("gpu", jnp.bfloat16, 36, "blockwise"),
    ],
)
def test_long_attention_kernel_per_platform(platform, dtype, head, expected):
    long = jnp.zeros((1, 1024, 2, head), dtype)
    assert attn.choose(long, long, platform=platform) == expected
    with attn.for_platform(platform):
        assert attn.choose(long, long) == expected


@pytest.mark.parametrize("platform", ["cpu", "gpu", "tpu"])
def test_short_or_masked_attention_takes_xla_everywhere(platform):
    long, short = jnp.zeros((1, 1024, 2, 64), jnp.bfloat16), jnp.zeros((1, 77, 2, 64), jnp.bfloat16)
    assert attn.choose(long, short, platform=platform) == "xla"
    assert attn.choose(long, long, masked=True, platform=platform) == "xla"


def test_pallas_tpu_kernel_equals_reference_attention_in_interpret_mode():
    """The TPU kernel, run by the Pallas interpreter on this CPU, at the UNet's head size 40."""
    from jax.experimental.pallas import tpu as pltpu

    rng = np.random.RandomState(0)
    q, k, v = (jnp.asarray(rng.randn(2, 256, 2, 40), jnp.float32) for _ in range(3))
    with pltpu.force_tpu_interpret_mode():
        out = attn.pallas_tpu_attention(q, k, v)
    exact = jax.nn.dot_product_attention(q, k, v)
    assert float(jnp.abs(out - exact).max()) <= 1e-5
