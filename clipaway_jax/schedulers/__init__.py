"""Samplers as pure functions over precomputed schedules: `make_sampler(name, scheduler_config, steps)`."""

from __future__ import annotations

from clipaway_jax.schedulers.base import Sampler, SamplerState, SchedulerConfig
from clipaway_jax.schedulers.ddim import make_ddim
from clipaway_jax.schedulers.dpm_solver import make_dpm_solver
from clipaway_jax.schedulers.euler import make_euler
from clipaway_jax.schedulers.pndm import make_pndm

SAMPLERS = {"pndm": make_pndm, "ddim": make_ddim, "dpm++2m": make_dpm_solver, "euler": make_euler}

__all__ = ["SAMPLERS", "Sampler", "SamplerState", "SchedulerConfig", "make_sampler"]


def make_sampler(name: str, config: dict, num_inference_steps: int, *, eta: float = 0.0) -> Sampler:
    """`config` is a diffusers scheduler_config.json (any class): the sampler keeps the keys it knows."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {sorted(SAMPLERS)}")
    if num_inference_steps < 1:
        raise ValueError(f"steps must be >= 1, got {num_inference_steps}")
    if name == "ddim":
        return make_ddim(config, num_inference_steps, eta)
    if eta:
        raise ValueError(f"eta applies to ddim only, not {name}")
    return SAMPLERS[name](config, num_inference_steps)
