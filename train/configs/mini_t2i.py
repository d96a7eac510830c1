"""Mini recipe, stage 7: the blended base's text-to-image UNet (unet_t2i): the inpainting UNet with its
mask inputs folded into a 4-channel conv_in, of which conv_in alone trains on whole-image denoising
(stored as an overlay of the inpainting UNet). 100 steps (95 s) instead of 300 (287 s), for the recipe's
time: on 300 validation scenes Blended kept its 11.04 dB inside the mask (paired -0.00 +- 0.01) and Blended
+ CLIPAway went 13.74 -> 13.70 dB (paired -0.04 +- 0.02; bench/RESULTS.md, "The recipe's time")."""

from clipaway_jax.mini.configs import mini_stage


def get_config():
    return mini_stage("t2i", steps=100, batch_size=32, learning_rate=1e-3, schedule="warmup_cosine", warmup_steps=30,
                      clip_grad_norm=1.0)  # fmt: skip
