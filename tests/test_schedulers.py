"""Every sampler equals its diffusers scheduler: timesteps and 50 successive steps on random outputs."""

import jax
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, PNDMScheduler

from clipaway_jax.schedulers import make_sampler
from clipaway_jax.tiny import SCHEDULER_CONFIG

TORCH = {"pndm": PNDMScheduler, "ddim": DDIMScheduler, "dpm++2m": DPMSolverMultistepScheduler,
         "euler": EulerDiscreteScheduler}  # fmt: skip


def _float64_schedule(reference, config):
    """diffusers' own beta formula evaluated in float64 (it uses float32), so that with x64 on our side the
    comparison sees the sampling algorithm rather than float32 rounding of the schedule."""
    start, end, n = config["beta_start"], config["beta_end"], config.get("num_train_timesteps", 1000)
    if config["beta_schedule"] == "scaled_linear":
        betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float64) ** 2
    else:
        betas = torch.linspace(start, end, n, dtype=torch.float64)
    reference.betas, reference.alphas = betas, 1.0 - betas
    reference.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    if hasattr(reference, "final_alpha_cumprod"):
        one = torch.tensor(1.0, dtype=torch.float64)
        reference.final_alpha_cumprod = one if reference.config.set_alpha_to_one else reference.alphas_cumprod[0]
    if hasattr(reference, "lambda_t"):
        reference.alpha_t = torch.sqrt(reference.alphas_cumprod)
        reference.sigma_t = torch.sqrt(1 - reference.alphas_cumprod)
        reference.lambda_t = torch.log(reference.alpha_t) - torch.log(reference.sigma_t)


def _float64(reference):
    for attr, value in vars(reference).items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            setattr(reference, attr, value.double())
    return reference


def test_schedule_equals_diffusers_float32_schedule():
    from clipaway_jax.schedulers.base import SchedulerConfig, alphas_cumprod

    for config in (SCHEDULER_CONFIG, {**SCHEDULER_CONFIG, "beta_schedule": "linear", "beta_end": 0.02}):
        ours = alphas_cumprod(SchedulerConfig.from_dict(config, {}))
        theirs = PNDMScheduler.from_config(config).alphas_cumprod.numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=0)


def _run_both(name, config, steps=50, prediction_type="epsilon", eta=0.0):
    with jax.enable_x64(True):
        _compare(name, {**config, "prediction_type": prediction_type}, steps, eta)


def _compare(name, config, steps, eta):
    reference = TORCH[name].from_config(config)
    _float64_schedule(reference, config)
    reference.set_timesteps(steps)
    _float64(reference)
    sampler = make_sampler(name, config, steps, eta=eta)
    np.testing.assert_array_equal(np.asarray(sampler.timesteps), reference.timesteps.numpy())
    assert np.isclose(sampler.init_noise_sigma, float(reference.init_noise_sigma), rtol=1e-6)

    rng = np.random.RandomState(0)
    x = rng.randn(2, 4, 8, 8) * float(reference.init_noise_sigma)
    outputs = rng.randn(len(sampler.timesteps), 2, 4, 8, 8)
    x_ref = torch.from_numpy(x)
    expected = []
    for t, out in zip(reference.timesteps, outputs):
        scaled = reference.scale_model_input(x_ref, t)
        x_ref = reference.step(torch.from_numpy(out) + 0 * scaled, t, x_ref).prev_sample
        expected.append((scaled.numpy(), x_ref.numpy()))

    def body(carry, out):
        state, x = carry
        scaled = sampler.scale_model_input(state, x)
        state, x = sampler.step(state, out, x)
        return (state, x), (scaled, x)

    _, (scaled, samples) = jax.jit(lambda x: jax.lax.scan(body, (sampler.init_state(x), x), outputs))(x)
    for i, (ref_scaled, ref_x) in enumerate(expected):
        for what, ours, ref in (("scaled input", scaled[i], ref_scaled), ("sample", samples[i], ref_x)):
            scale = max(1.0, float(np.abs(ref).max()))
            err = float(np.abs(np.asarray(ours) - ref).max())
            assert err <= 1e-6 * scale, f"{name} step {i} {what}: max abs error {err:.3g} (scale {scale:.3g})"


@pytest.mark.parametrize("name", ["pndm", "ddim", "dpm++2m", "euler"])
def test_sampler_equals_diffusers_on_sd_inpaint_config(name):
    _run_both(name, SCHEDULER_CONFIG)


@pytest.mark.parametrize("name", ["pndm", "ddim", "dpm++2m", "euler"])
def test_sampler_v_prediction_and_linear_betas(name):
    config = {**SCHEDULER_CONFIG, "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}
    _run_both(name, config, prediction_type="v_prediction")


@pytest.mark.parametrize("spacing", ["linspace", "trailing"])
@pytest.mark.parametrize("name", ["pndm", "ddim", "dpm++2m", "euler"])
def test_sampler_timestep_spacings(name, spacing):
    _run_both(name, {**SCHEDULER_CONFIG, "timestep_spacing": spacing}, steps=20)


def test_ddim_eta_noise_uses_the_key():
    sampler = make_sampler("ddim", SCHEDULER_CONFIG, 10, eta=1.0)
    x = np.ones((1, 4, 4, 4), np.float32)
    state = sampler.init_state(x)
    _, a = sampler.step(state, x, x, jax.random.key(0))
    _, b = sampler.step(state, x, x, jax.random.key(1))
    _, c = sampler.step(state, x, x, jax.random.key(0))
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3
    np.testing.assert_array_equal(a, c)


def test_unknown_sampler_is_refused():
    with pytest.raises(ValueError, match="unknown scheduler"):
        make_sampler("lms", SCHEDULER_CONFIG, 10)
