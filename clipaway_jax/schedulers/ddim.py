"""DDIM (with eta; eta > 0 draws its noise from a JAX key)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from clipaway_jax.schedulers.base import (
    Sampler,
    SamplerState,
    SchedulerConfig,
    alphas_cumprod,
    at,
    spaced_timesteps,
    table,
)

DEFAULTS = dict(beta_start=0.0001, beta_end=0.02, beta_schedule="linear", set_alpha_to_one=True, steps_offset=0,
                timestep_spacing="leading", clip_sample=True, clip_sample_range=1.0)  # fmt: skip


@dataclasses.dataclass(frozen=True, eq=False)
class DDIM(Sampler):
    eta: float = 0.0
    alpha: np.ndarray = None  # [S] alphas_cumprod at t
    alpha_prev: np.ndarray = None  # [S] at t - ratio (or the final alpha)
    std: np.ndarray = None  # [S] eta * sigma_t

    def step(self, state: SamplerState, model_output, sample, key=None):
        i = state.step
        a, a_prev, std = (at(v, i, sample) for v in (self.alpha, self.alpha_prev, self.std))
        if self.config.prediction_type == "epsilon":
            x0 = (sample - jnp.sqrt(1 - a) * model_output) / jnp.sqrt(a)
            eps = model_output
        else:  # v_prediction
            x0 = jnp.sqrt(a) * sample - jnp.sqrt(1 - a) * model_output
            eps = jnp.sqrt(a) * model_output + jnp.sqrt(1 - a) * sample
        if self.config.clip_sample:
            x0 = jnp.clip(x0, -self.config.clip_sample_range, self.config.clip_sample_range)
        prev = jnp.sqrt(a_prev) * x0 + jnp.sqrt(1 - a_prev - std**2) * eps
        if self.eta > 0:
            if key is None:
                raise ValueError("DDIM with eta > 0 needs a PRNG key per step")
            prev = prev + std * jax.random.normal(key, sample.shape, sample.dtype)
        return state._replace(step=i + 1), prev.astype(sample.dtype)


def make_ddim(config: dict, num_inference_steps: int, eta: float = 0.0) -> DDIM:
    cfg = SchedulerConfig.from_dict(config, DEFAULTS)
    timesteps = spaced_timesteps(cfg, num_inference_steps)
    ratio = cfg.num_train_timesteps // num_inference_steps
    ac = alphas_cumprod(cfg)
    final = 1.0 if cfg.set_alpha_to_one else ac[0]
    a = ac[timesteps]
    a_prev = [ac[t - ratio] if t - ratio >= 0 else final for t in timesteps]
    variance = [(1 - ap) / (1 - at) * (1 - at / ap) for at, ap in zip(a, a_prev)]
    std = [eta * v**0.5 for v in variance]
    return DDIM(cfg, num_inference_steps, timesteps, 1.0, 1, eta, table(a), table(a_prev), table(std))
