"""Mini recipe, stage 4: the 9-channel inpainting UNet with IP-Adapter (its image_proj and attention),
from nothing, reconstructing the image with the image encoder's tokens (v-prediction: the checkpoint's
scheduler). No mask is the object's own: a tenth mask everything (SD-inpainting's "mask everything"); of
the rest, 70% are an object's silhouette moved off it (landing in one piece, not wrapped around the border:
`wrap=False`), 30% strokes and boxes up to half the image, so the tokens, not the hole's shape, decide the
fill; the masked region's loss weighs 4x. Small steps: 4000 x 8 at lr 1e-3 filled +0.4/+0.6 dB over 1800 x 32
at 5e-4 in the same wall time (bench/RESULTS.md, probes Q2 and R3), and 8000 x 8 another +0.64 dB on 500
validation scenes ("Twice the steps"). A drawn mask spares each object it would hide more than half of
(`spare_objects=0.5`, after CM-GAN's object-aware masks): holes over whole objects, which the tokens still
name, taught "paint an object into the hole"; at 8000 steps on 500 validation scenes, 15.67 dB inside the
mask (14.77 without) and 88.4% removed on bare texture (79.4) (bench/RESULTS.md, "Object-aware training
masks"); 11000 steps another +0.45 dB on 300 ("Longer again, objects spared"). The frozen VAE's posteriors
and the image embeddings are computed once (`cache_latents`)."""

from clipaway_jax.mini.configs import mini_stage
from clipaway_jax.training.config import from_scratch


def get_config():
    c = from_scratch(mini_stage("inpaint", steps=11000, batch_size=8, learning_rate=1e-3, mask_weight=4.0,
                                cache_latents=True))  # fmt: skip
    c.inpaint_masks.update(whole=0.1, object=0.0, elsewhere=0.7, random_area=(0.02, 0.5), wrap=False,
                          spare_objects=0.5)
    return c
