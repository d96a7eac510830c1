"""What every sampler shares: the diffusers config, the noise schedule and the state pytree.

A sampler is built host-side from a config and a step count; everything that depends only on
the step index (timesteps, coefficients, which history slots to combine) is precomputed as
arrays, so `step(state, model_output, sample)` is branch-free arithmetic that `lax.scan` runs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """diffusers scheduler config keys (the union over the samplers here)."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    trained_betas: tuple | None = None
    set_alpha_to_one: bool = True
    steps_offset: int = 0
    timestep_spacing: str = "leading"
    prediction_type: str = "epsilon"
    clip_sample: bool = False
    clip_sample_range: float = 1.0
    thresholding: bool = False
    skip_prk_steps: bool = False
    # DPM-Solver
    solver_order: int = 2
    algorithm_type: str = "dpmsolver++"
    solver_type: str = "midpoint"
    lower_order_final: bool = True
    euler_at_final: bool = False
    final_sigmas_type: str = "zero"
    lambda_min_clipped: float = -math.inf
    # Euler
    interpolation_type: str = "linear"
    use_karras_sigmas: bool = False
    timestep_type: str = "discrete"

    @classmethod
    def from_dict(cls, data: dict[str, Any], defaults: dict[str, Any]) -> SchedulerConfig:
        """The sampler's own defaults, overridden by the keys a scheduler_config.json has (diffusers'
        `from_config` semantics); bookkeeping keys (`_class_name`...) and unused ones are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        merged = {**defaults, **{k: v for k, v in data.items() if k in names}}
        if merged.get("trained_betas") is not None:
            merged["trained_betas"] = tuple(merged["trained_betas"])
        config = cls(**merged)
        config.validate()
        return config

    def validate(self):
        if self.thresholding:
            raise ValueError("scheduler config: thresholding=True is not supported")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"scheduler config: prediction_type {self.prediction_type!r} is not supported")
        if self.timestep_spacing not in ("linspace", "leading", "trailing"):
            raise ValueError(f"scheduler config: timestep_spacing {self.timestep_spacing!r} is not supported")


def alphas_cumprod(config: SchedulerConfig) -> np.ndarray:
    """The cumulative product of (1 - beta) in float64 (diffusers builds it in float32; the samplers' step
    coefficients derive from it, so they are exact here and rounded once, to the sample's dtype)."""
    n = config.num_train_timesteps
    if config.trained_betas is not None:
        betas = np.asarray(config.trained_betas, np.float64)
    elif config.beta_schedule == "linear":
        betas = np.linspace(config.beta_start, config.beta_end, n)
    elif config.beta_schedule == "scaled_linear":
        betas = np.linspace(config.beta_start**0.5, config.beta_end**0.5, n) ** 2
    elif config.beta_schedule == "squaredcos_cap_v2":
        f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = np.array([min(1 - f((i + 1) / n) / f(i / n), 0.999) for i in range(n)])
    else:
        raise ValueError(f"scheduler config: beta_schedule {config.beta_schedule!r} is not supported")
    return np.cumprod(1.0 - betas)


def spaced_timesteps(config: SchedulerConfig, num_steps: int) -> np.ndarray:
    """Descending integer timesteps by `timestep_spacing` (DDIM/PNDM/Euler conventions)."""
    n = config.num_train_timesteps
    if config.timestep_spacing == "linspace":
        return np.linspace(0, n - 1, num_steps).round()[::-1].astype(np.int64)
    if config.timestep_spacing == "leading":
        ratio = n // num_steps
        return (np.arange(0, num_steps) * ratio).round()[::-1].astype(np.int64) + config.steps_offset
    ratio = n / num_steps
    return (np.round(np.arange(n, 0, -ratio)) - 1).astype(np.int64)


class SamplerState(NamedTuple):
    step: jax.Array  # int32 scalar: how many steps have been taken
    history: jax.Array  # [K, *sample.shape]: earlier (converted) model outputs, newest first
    saved: jax.Array  # [*sample.shape]: a sample kept for a later step (PNDM's first step)


def table(x) -> np.ndarray:
    """A per-step schedule array, kept in float64 on the host; `at` reads it inside jit."""
    return np.asarray(x, np.float64)


def at(values: np.ndarray, i: jax.Array, like: jax.Array) -> jax.Array:
    """values[i] in float32, or float64 when the sample is float64 (x64 parity tests)."""
    dtype = jnp.float64 if like.dtype == jnp.float64 else jnp.float32
    return jnp.asarray(values, dtype)[i]


def add_noise(alpha_bar: jax.Array, x0: jax.Array, noise: jax.Array) -> jax.Array:
    """The forward process at cumulative alpha `alpha_bar`: sqrt(a) x0 + sqrt(1 - a) noise (diffusers'
    `add_noise`)."""
    return jnp.sqrt(alpha_bar) * x0 + jnp.sqrt(1 - alpha_bar) * noise


@dataclasses.dataclass(frozen=True, eq=False)
class Sampler:
    """Common surface: `timesteps` (what the model sees, [S]), `init_noise_sigma`, and pure
    `init_state` / `scale_model_input` / `step` methods."""

    config: SchedulerConfig
    num_inference_steps: int
    timesteps: np.ndarray
    init_noise_sigma: float = 1.0
    history_size: int = 1

    def init_state(self, sample: jax.Array, first_step: int = 0) -> SamplerState:
        """The state before step `first_step` of the schedule (> 0 when a run skips the first steps)."""
        zeros = jnp.zeros_like(sample)
        return SamplerState(
            jnp.asarray(first_step, jnp.int32), jnp.zeros((self.history_size, *sample.shape), sample.dtype), zeros
        )

    def scale_model_input(self, state: SamplerState, sample: jax.Array) -> jax.Array:
        return sample

    def step(self, state: SamplerState, model_output, sample, key=None) -> tuple[SamplerState, jax.Array]:
        raise NotImplementedError

    @staticmethod
    def push(history: jax.Array, value: jax.Array) -> jax.Array:
        return jnp.concatenate([value[None].astype(history.dtype), history[:-1]], axis=0)
