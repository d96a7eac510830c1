"""Mini recipe, stage 6: DCGD's 12-channel UNet fine-tuned from the mini inpainting UNet (Adam, lr 1e-4,
as the paper), on the mini scenes' object and random masks with their scene captions."""

from clipaway_jax.mini.configs import mini_stage


def get_config():
    return mini_stage("unet", unet_variant="dcgd12", steps=300, batch_size=32, learning_rate=1e-4, size=64,
                      captions=True)  # fmt: skip
