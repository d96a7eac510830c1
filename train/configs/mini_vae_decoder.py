"""Mini recipe, the VAE's decoder stage (right after `vae`; no later stage reads the decoder): the trained VAE
continued with its encoder frozen, so the latent space, its scaling_factor and every UNet trained on it stay
as they are, while the decoder learns to decode latents with Gaussian noise of std 0.6 (in the UNet's latent
units) added: a sampler ends on latents that are slightly off, and the VAE stage's decoder, trained on
posterior samples of std 0.003, turns small latent errors into coloured speckle. 1000 x 8 steps at 3e-4 on
the vae stage's output (3.8-4.0 min on two cores): CLIPAway's fill +0.75 +- 0.08 dB inside the mask on 300
validation scenes (2000 steps +0.78; noise 0: -0.01, 0.1: +0.31, 0.3: +0.63, 1.0: +0.68), while the round
trip falls from 24.26 to 20.87 dB (bench/RESULTS.md, "The decoder, trained on what a sampler ends on")."""

from clipaway_jax.mini.configs import mini_stage
from clipaway_jax.training.config import from_scratch


def get_config():
    return from_scratch(mini_stage("vae", steps=1000, batch_size=8, learning_rate=3e-4, vae_l2_weight=1.0,
                                  decoder_only=True, latent_noise=0.6))  # fmt: skip
