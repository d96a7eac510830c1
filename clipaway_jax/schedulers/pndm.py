"""PNDM with `skip_prk_steps` (PLMS), SD-1.5 inpainting's published scheduler."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from clipaway_jax.schedulers.base import Sampler, SamplerState, SchedulerConfig, alphas_cumprod, at, table

DEFAULTS = dict(beta_start=0.0001, beta_end=0.02, beta_schedule="linear", set_alpha_to_one=False,
                steps_offset=0, timestep_spacing="leading", skip_prk_steps=False)  # fmt: skip

# Adams-Bashforth weights on (current output, and the 1-3 stored before it, newest first)
_AB = {
    0: (1, 0, 0, 0),
    2: (1.5, -0.5, 0, 0),
    3: (23 / 12, -16 / 12, 5 / 12, 0),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


@dataclasses.dataclass(frozen=True, eq=False)
class PNDM(Sampler):
    weights: np.ndarray = None  # [S, 4]
    push_output: np.ndarray = None  # [S] bool: store the current output in the history
    use_saved: np.ndarray = None  # [S] bool: start from the saved sample (step 1 re-does step 0)
    sqrt_alpha: np.ndarray = None  # [S] at the step's timestep
    sqrt_beta: np.ndarray = None
    sample_coeff: np.ndarray = None  # [S]
    output_coeff: np.ndarray = None  # [S]

    def step(self, state: SamplerState, model_output, sample, key=None):
        i = state.step
        w = at(self.weights, i, sample)
        eps = w[0] * model_output + jnp.tensordot(w[1:], state.history, axes=1)
        x = jnp.where(jnp.asarray(self.use_saved)[i], state.saved, sample)
        if self.config.prediction_type == "v_prediction":
            eps = at(self.sqrt_alpha, i, sample) * eps + at(self.sqrt_beta, i, sample) * x
        prev = at(self.sample_coeff, i, sample) * x - at(self.output_coeff, i, sample) * eps
        push = jnp.asarray(self.push_output)[i]
        history = jnp.where(push, self.push(state.history, model_output), state.history)
        saved = jnp.where(i == 0, sample, state.saved)
        return SamplerState(i + 1, history, saved), prev.astype(sample.dtype)


def make_pndm(config: dict, num_inference_steps: int) -> PNDM:
    cfg = SchedulerConfig.from_dict(config, DEFAULTS)
    if not cfg.skip_prk_steps:
        raise ValueError("PNDM: only skip_prk_steps=True (the SD setting) is supported")
    ratio = cfg.num_train_timesteps // num_inference_steps
    base = _base_timesteps(cfg, num_inference_steps)
    timesteps = np.concatenate([base[:-1], base[-2:-1], base[-1:]])[::-1].astype(np.int64)
    ac = alphas_cumprod(cfg)
    final = 1.0 if cfg.set_alpha_to_one else ac[0]
    rows = []
    for i, t in enumerate(timesteps):
        t_cur, t_prev = (t + ratio, t) if i == 1 else (t, t - ratio)
        a_t, a_prev = ac[t_cur], ac[t_prev] if t_prev >= 0 else final
        b_t, b_prev = 1 - a_t, 1 - a_prev
        denom = a_t * b_prev**0.5 + (a_t * b_t * a_prev) ** 0.5
        weights = (0.5, 0.5, 0, 0) if i == 1 else _AB[min(i, 4)]  # step 1 averages with step 0
        rows.append((weights, i != 1, i == 1, a_t**0.5, b_t**0.5, (a_prev / a_t) ** 0.5, (a_prev - a_t) / denom))
    weights, push, saved, sa, sb, sc, oc = zip(*rows)
    return PNDM(
        cfg, num_inference_steps, timesteps, 1.0, 3,
        table(weights), np.asarray(push), np.asarray(saved), table(sa), table(sb), table(sc), table(oc),
    )  # fmt: skip


def _base_timesteps(cfg: SchedulerConfig, n: int) -> np.ndarray:
    """Ascending, as PNDM's `_timesteps`."""
    if cfg.timestep_spacing == "linspace":
        return np.linspace(0, cfg.num_train_timesteps - 1, n).round().astype(np.int64)
    if cfg.timestep_spacing == "leading":
        return (np.arange(0, n) * (cfg.num_train_timesteps // n)).round().astype(np.int64) + cfg.steps_offset
    ratio = cfg.num_train_timesteps / n
    return (np.round(np.arange(cfg.num_train_timesteps, 0, -ratio))[::-1] - 1).astype(np.int64)
