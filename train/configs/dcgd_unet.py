"""DCGD's fine-tuned UNet: its input is x_t + z(x0 * o) + z(x0 * (1 - o)) (12 channels: the noisy
latent, the latents of the masked and of the unmasked region), trained with the plain noise MSE under
random masks, Adam, lr 1e-4, batch 64 (the DCGD paper; shared/DESIGN.md sections 1 and 5), starting from
SD-1.5 inpainting (the 9-channel UNet's conv_in widened, see clipaway_jax/models/dcgd.py).

    clipaway-jax train --config train/configs/dcgd_unet.py --workdir runs/dcgd --export checkpoints/clipaway-dcgd
"""

from clipaway_jax.training.config import base_config


def get_config():
    c = base_config()
    c.task = "unet"
    c.unet_variant = "dcgd12"  # the 12-channel input
    c.checkpoint = "checkpoints/clipaway"  # the converted SD-1.5 inpainting UNet, VAE and text encoder
    c.images = "places365/train"  # DCGD evaluates on Places; train on its training images
    c.size = 512  # SD-1.5's resolution
    c.batch_size = 64  # paper: batch 64
    c.learning_rate = 1e-4  # paper: Adam, lr 1e-4
    c.optimizer = "adam"
    c.weight_decay = 0.0
    c.mask_area = (0.01, 0.4)  # random masks over the paper's evaluated mask-area range (buckets 0.01-0.4)
    c.prompt = ""  # one text for every image (the paper conditions on its dual prompts; a T_info text fits here)
    c.steps = 20_000  # the paper's step count is not among the facts read here (DESIGN.md): this project's choice
    c.fsdp = 8  # params and Adam state sharded over 8 devices (860M params: ~10 GB in float32 with Adam)
    c.remat = True  # activations of 64 images at 512 px
    return c
