"""Mini recipe, stage 1b (issue #25: the mini AlphaCLIP must know shapes): after `mini_alpha_clip`, its
vision tower continued against its frozen text tower (`vision_only`: the text tower is also the set's SD
text encoder, so every UNet keeps its condition), the object and background pairs also scored against all
88 classes' zero-shot features (`class_weight`: UniCL's image-label term beside image-text), half of the
pairs that are not a background texture an object under its mask (a quarter in stage 1) and a quarter its
box crop (`pair_kinds`), and the pairs without a class (the rest, the whole scene) held at stage 1's
embedding (`anchor_weight`), which CLIPAway's MLP reads. Trial C2 in bench/RESULTS.md ("The vision tower on
the classes"): shape 14 -> 35.8% zero-shot with alpha = mask, the fill kept (CLIPAway 14.67 dB in the mask
against 14.42 on 64 validation scenes); 26 min on two cores. `make mini` runs it after `alpha-clip`; by hand:

    clipaway-jax train --config train/configs/mini_alpha_clip_classes.py --workdir W --export C \\
        --config.checkpoint=C        # C: a checkpoint where mini_alpha_clip has run; then train mini_mlp again
"""

from clipaway_jax.mini.configs import mini_stage
from clipaway_jax.training.config import from_scratch


def get_config():  # (from_scratch: the optimizer of the from-scratch stages, warm-up and cosine decay)
    return from_scratch(mini_stage("alpha-clip", steps=6000, batch_size=32, learning_rate=3e-4, background_p=0.2,
                                  pair_kinds=(4.0, 1.0, 1.0, 2.0), vision_only=True, class_weight=1.0,
                                  anchor_weight=10.0))  # fmt: skip
