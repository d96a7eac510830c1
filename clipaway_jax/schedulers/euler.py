"""Euler discrete (Karras et al. Algorithm 2 without churn), as diffusers' EulerDiscreteScheduler."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from clipaway_jax.schedulers.base import Sampler, SamplerState, SchedulerConfig, alphas_cumprod, at, table

DEFAULTS = dict(beta_start=0.0001, beta_end=0.02, beta_schedule="linear", steps_offset=0,
                timestep_spacing="linspace", interpolation_type="linear", final_sigmas_type="zero")  # fmt: skip


@dataclasses.dataclass(frozen=True, eq=False)
class Euler(Sampler):
    sigmas: np.ndarray = None  # [S + 1]

    def scale_model_input(self, state: SamplerState, sample):
        sigma = at(self.sigmas, state.step, sample)
        return (sample / jnp.sqrt(sigma**2 + 1)).astype(sample.dtype)

    def step(self, state: SamplerState, model_output, sample, key=None):
        i = state.step
        sigma, sigma_next = at(self.sigmas, i, sample), at(self.sigmas, i + 1, sample)
        x = sample.astype(sigma.dtype)
        if self.config.prediction_type == "epsilon":
            x0 = x - sigma * model_output
        else:  # v_prediction
            x0 = model_output * (-sigma / jnp.sqrt(sigma**2 + 1)) + x / (sigma**2 + 1)
        prev = x + (x - x0) / sigma * (sigma_next - sigma)
        return state._replace(step=i + 1), prev.astype(sample.dtype)


def make_euler(config: dict, num_inference_steps: int) -> Euler:
    cfg = SchedulerConfig.from_dict(config, DEFAULTS)
    if cfg.use_karras_sigmas or cfg.interpolation_type != "linear" or cfg.timestep_type != "discrete":
        raise ValueError("Euler: only linear interpolation of discrete sigmas (no Karras sigmas) is supported")
    n = cfg.num_train_timesteps
    if cfg.timestep_spacing == "linspace":
        timesteps = np.linspace(0, n - 1, num_inference_steps, dtype=np.float32)[::-1].copy()
    elif cfg.timestep_spacing == "leading":
        ratio = n // num_inference_steps
        timesteps = (np.arange(0, num_inference_steps) * ratio).round()[::-1].astype(np.float32) + cfg.steps_offset
    else:
        timesteps = np.arange(n, 0, -n / num_inference_steps).round().astype(np.float32) - 1
    ac = alphas_cumprod(cfg)
    all_sigmas = ((1 - ac) / ac) ** 0.5
    sigmas = np.interp(timesteps, np.arange(0, len(all_sigmas)), all_sigmas)
    last = ((1 - ac[0]) / ac[0]) ** 0.5 if cfg.final_sigmas_type == "sigma_min" else 0.0
    sigmas = np.concatenate([sigmas, [last]]).astype(np.float32)
    max_sigma = float(sigmas.max())
    init = max_sigma if cfg.timestep_spacing in ("linspace", "trailing") else float((max_sigma**2 + 1) ** 0.5)
    return Euler(cfg, num_inference_steps, timesteps, init, 1, table(sigmas))
