"""Building blocks shared by every network: layers that carry logical axis names.

Kernels are created through `nn.with_logical_partitioning`, so sharding is a matter of
configuration (`clipaway_jax.sharding`): the model code only says what each axis means.
Norms use exact (two-pass) variance, as torch does, so fp32 parity holds to ~1e-6.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = jnp.dtype | type

_default_kernel_init = nn.initializers.lecun_normal()


def _partitioned(init: Callable, axes: Sequence[str | None]) -> Callable:
    return nn.with_logical_partitioning(init, tuple(axes))


def dense(
    features: int,
    name: str | None = None,
    *,
    axes: tuple[str | None, str | None] = ("embed", "mlp"),
    use_bias: bool = True,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
) -> nn.Dense:
    """A Linear layer; `axes` names the (input, output) axes of its kernel."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=_partitioned(_default_kernel_init, axes),
        bias_init=_partitioned(nn.initializers.zeros_init(), axes[1:]),
        name=name,
    )


def conv(
    features: int,
    name: str | None = None,
    *,
    kernel_size: int = 3,
    stride: int = 1,
    padding: int | str | Sequence[tuple[int, int]] = 1,
    use_bias: bool = True,
    in_axis: str | None = "conv_in",
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
) -> nn.Conv:
    """A 2-D convolution on NHWC inputs with torch's symmetric integer padding."""
    if isinstance(padding, int):
        padding = ((padding, padding), (padding, padding))
    return nn.Conv(
        features,
        kernel_size=(kernel_size, kernel_size),
        strides=(stride, stride),
        padding=padding,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=_partitioned(_default_kernel_init, (None, None, in_axis, "conv_out")),
        bias_init=_partitioned(nn.initializers.zeros_init(), ("conv_out",)),
        name=name,
    )


def group_norm(num_groups: int, eps: float, name: str, dtype: Dtype = jnp.float32) -> nn.GroupNorm:
    return nn.GroupNorm(
        num_groups=num_groups,
        epsilon=eps,
        dtype=dtype,
        use_fast_variance=False,
        scale_init=_partitioned(nn.initializers.ones_init(), ("norm",)),
        bias_init=_partitioned(nn.initializers.zeros_init(), ("norm",)),
        name=name,
    )


def layer_norm(eps: float, name: str, dtype: Dtype = jnp.float32) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=eps,
        dtype=dtype,
        use_fast_variance=False,
        scale_init=_partitioned(nn.initializers.ones_init(), ("norm",)),
        bias_init=_partitioned(nn.initializers.zeros_init(), ("norm",)),
        name=name,
    )


def quick_gelu(x: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(1.702 * x)


def gelu_exact(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=False)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "quick_gelu": quick_gelu,
    "gelu": gelu_exact,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]
