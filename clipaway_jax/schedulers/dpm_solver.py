"""DPM-Solver++ 2M (multistep, second order, midpoint), as diffusers' DPMSolverMultistepScheduler."""

from __future__ import annotations

import dataclasses

import numpy as np

from clipaway_jax.schedulers.base import Sampler, SamplerState, SchedulerConfig, alphas_cumprod, at, table

DEFAULTS = dict(beta_start=0.0001, beta_end=0.02, beta_schedule="linear", steps_offset=0, timestep_spacing="linspace",
                solver_order=2, algorithm_type="dpmsolver++", solver_type="midpoint", lower_order_final=True,
                euler_at_final=False, final_sigmas_type="zero", set_alpha_to_one=True)  # fmt: skip


@dataclasses.dataclass(frozen=True, eq=False)
class DPMSolverPP2M(Sampler):
    alpha: np.ndarray = None  # [S] alpha_t of the step's own sigma (for the x0 conversion)
    sigma: np.ndarray = None  # [S]
    sample_coeff: np.ndarray = None  # [S]
    current_coeff: np.ndarray = None  # [S] on this step's x0 prediction
    previous_coeff: np.ndarray = None  # [S] on the previous step's x0 prediction (0 for first order)

    def step(self, state: SamplerState, model_output, sample, key=None):
        i = state.step
        alpha, sigma = at(self.alpha, i, sample), at(self.sigma, i, sample)
        x = sample.astype(alpha.dtype)
        if self.config.prediction_type == "epsilon":
            x0 = (x - sigma * model_output) / alpha
        else:  # v_prediction
            x0 = alpha * x - sigma * model_output
        coeffs = (at(c, i, sample) for c in (self.sample_coeff, self.current_coeff, self.previous_coeff))
        c_sample, c_current, c_previous = coeffs
        prev = c_sample * x + c_current * x0 + c_previous * state.history[0]
        return SamplerState(i + 1, self.push(state.history, x0), state.saved), prev.astype(sample.dtype)


def make_dpm_solver(config: dict, num_inference_steps: int) -> DPMSolverPP2M:
    cfg = SchedulerConfig.from_dict(config, DEFAULTS)
    if (cfg.algorithm_type, cfg.solver_type, cfg.solver_order) != ("dpmsolver++", "midpoint", 2):
        raise ValueError("DPM-Solver: only dpmsolver++ / midpoint / solver_order 2 (DPM++ 2M) is supported")
    if cfg.use_karras_sigmas or cfg.lambda_min_clipped != -np.inf:
        raise ValueError("DPM-Solver: Karras sigmas and lambda_min_clipped are not supported")
    ac = alphas_cumprod(cfg)
    timesteps = _timesteps(cfg, num_inference_steps)
    all_sigmas = ((1 - ac) / ac) ** 0.5
    sigmas = np.interp(timesteps, np.arange(0, len(all_sigmas)), all_sigmas)
    last = ((1 - ac[0]) / ac[0]) ** 0.5 if cfg.final_sigmas_type == "sigma_min" else 0.0
    sigmas = np.concatenate([sigmas, [last]]).astype(np.float32).astype(np.float64)
    alpha = 1 / np.sqrt(sigmas**2 + 1)
    sig = sigmas * alpha
    with np.errstate(divide="ignore"):
        lam = np.log(alpha) - np.log(sig)  # -inf... at sigma 0: lambda = +inf
    n = len(timesteps)
    rows = []
    for i in range(n):
        h = lam[i + 1] - lam[i]
        exp_m1 = np.expm1(-h) if np.isfinite(h) else -1.0
        c_x = sig[i + 1] / sig[i]
        c0 = -alpha[i + 1] * exp_m1
        last_step = i == n - 1 and (cfg.euler_at_final or (cfg.lower_order_final and n < 15)
                                    or cfg.final_sigmas_type == "zero")  # fmt: skip
        if i == 0 or last_step:
            rows.append((c_x, c0, 0.0))
        else:
            r0 = (lam[i] - lam[i - 1]) / h
            d1 = -0.5 * alpha[i + 1] * exp_m1 / r0  # D1 = (m0 - m1) / r0, folded into the two weights
            rows.append((c_x, c0 + d1, -d1))
    sc, cc, pc = zip(*rows)
    return DPMSolverPP2M(cfg, num_inference_steps, timesteps, 1.0, 1, table(alpha[:n]), table(sig[:n]),
                         table(sc), table(cc), table(pc))  # fmt: skip


def _timesteps(cfg: SchedulerConfig, n: int) -> np.ndarray:
    last = cfg.num_train_timesteps  # lambda_min_clipped = -inf clips nothing
    if cfg.timestep_spacing == "linspace":
        return np.linspace(0, last - 1, n + 1).round()[::-1][:-1].astype(np.int64)
    if cfg.timestep_spacing == "leading":
        ratio = last // (n + 1)
        return (np.arange(0, n + 1) * ratio).round()[::-1][:-1].astype(np.int64) + cfg.steps_offset
    return (np.arange(last, 0, -cfg.num_train_timesteps / n).round() - 1).astype(np.int64)
