"""Mini recipe, stage 6: DCGD's 12-channel UNet fine-tuned from the mini inpainting UNet (Adam, lr 1e-4,
as the paper), on random masks only (strokes and boxes, as DCGD's fine-tune and DESIGN.md) with their
scene captions. Not the object's own silhouette: the fourth input block is z(x0 * o), the object itself,
and a fine-tune that reconstructs x0 under the object's mask learns to hand the object back (on 200
validation scenes, DCGD 10.56 -> 11.50 dB, removed 21 -> 40%: bench/RESULTS.md, the DCGD probe). For the
same reason the masks spare the objects they would hide (`spare_objects=0.5`, as the inpainting stage) and
the fine-tune is short: the target is x0 itself, so the longer it trains, the more it copies the masked
region's block, which at inference holds the object. 75 steps of 32 on 200 validation scenes: DCGD 13.09
dB (25 / 150 / 300 steps: 12.23 / 12.78 / 12.47; 300 steps without sparing 11.52), CLIPAway + DCGD 14.29
(bench/RESULTS.md, "DCGD's fine-tune, shorter")."""

from clipaway_jax.mini.configs import mini_stage


def get_config():
    c = mini_stage("unet", unet_variant="dcgd12", steps=75, batch_size=32, learning_rate=1e-4, size=64,
                   captions=True)  # fmt: skip
    c.inpaint_masks.update(object=0.0, spare_objects=0.5)
    return c
