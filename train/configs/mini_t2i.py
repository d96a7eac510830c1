"""Mini recipe, stage 7: the blended base's text-to-image UNet (unet_t2i): the inpainting UNet with its
mask inputs folded into a 4-channel conv_in, of which conv_in alone trains on whole-image denoising
(stored as an overlay of the inpainting UNet)."""

from clipaway_jax.mini.configs import mini_stage


def get_config():
    return mini_stage("t2i", steps=300, batch_size=32, learning_rate=1e-3, schedule="warmup_cosine", warmup_steps=30,
                      clip_grad_norm=1.0)  # fmt: skip
