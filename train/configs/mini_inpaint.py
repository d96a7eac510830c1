"""Mini recipe, stage 4: the 9-channel inpainting UNet with IP-Adapter (its image_proj and attention),
from nothing, reconstructing the image with the image encoder's tokens (v-prediction: the checkpoint's
scheduler). No mask is the object's own: a quarter mask everything (SD-inpainting's "25% mask
everything"); of the rest, half are an object's silhouette moved off it, half strokes and boxes up to half
the image, so the tokens, not the hole's shape, decide the fill (bench/RESULTS.md, trial T3). The frozen VAE's
posteriors and the image embeddings are computed once (`cache_latents`)."""

from clipaway_jax.mini.configs import mini_stage
from clipaway_jax.training.config import from_scratch


def get_config():
    c = from_scratch(mini_stage("inpaint", steps=1800, batch_size=32, learning_rate=5e-4, cache_latents=True))
    c.inpaint_masks.update(whole=0.25, object=0.0, elsewhere=0.5, random_area=(0.02, 0.5))
    return c
