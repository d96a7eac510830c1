""""Object painted in?": the mini world's removal measure that is not at its ceiling. CLIP@k asks whether
the removed object's class is still the top class of its box crop; the ground truth itself scores ~96%
there, since a crop of plain background is rarely the object's colour-shape class. This asks instead
what fills the hole: the mini AlphaCLIP with alpha = the object's mask, classified zero-shot over the
world's object classes AND its background classes (DCGD's templates, the describer's vocabularies). A
result counts as removed when the top-1 class is a background.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from clipaway_jax import xla
from clipaway_jax.preprocess import alpha_clip_inputs


def _top_is_object(alpha_clip, params, images, masks, objects, scenes):
    pixels, alpha = alpha_clip_inputs(images, masks, alpha_clip.config.image_size)  # e_f alone, not e_b too
    e_mask = alpha_clip.apply(params, pixels, alpha).image_embeds
    e_mask = e_mask / jnp.linalg.norm(e_mask, axis=-1, keepdims=True)
    best_object = jnp.max(e_mask @ objects.T, axis=-1)
    best_scene = jnp.max(e_mask @ scenes.T, axis=-1)
    return best_object > best_scene


class PaintedIn:
    """`PaintedIn(checkpoint)(images, masks)` -> bool [B]: an object class tops the masked region."""

    def __init__(self, checkpoint, batch: int = 100):
        from clipaway_jax.pipelines.describe import RegionDescriber

        self.describer = RegionDescriber(checkpoint)
        self.batch = batch
        self._run = xla.jit(_top_is_object, static_argnums=0)

    def __call__(self, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """images [B, H, W, 3] in [0, 1], masks [B, H, W] in {0, 1} (the object's own mask)."""
        d = self.describer
        params = {"params": d.checkpoint.params["alpha_clip"]}
        out = []
        for start in range(0, len(images), self.batch):
            chunk = slice(start, start + self.batch)
            pad = self.batch - len(images[chunk])  # one compiled shape
            x = np.concatenate([images[chunk], np.repeat(images[chunk][-1:], pad, 0)])
            m = np.concatenate([masks[chunk], np.repeat(masks[chunk][-1:], pad, 0)])
            top = self._run(d.alpha_clip, params, x, m, d.objects.features, d.scenes.features)
            out.append(np.asarray(jax.device_get(top))[: self.batch - pad])
        return np.concatenate(out)


def zero_shot_accuracy(describer, images: np.ndarray, masks: np.ndarray, captions: list[str],
                       batch: int = 100) -> dict[str, float]:  # fmt: skip
    """Top-1 of the masked region (alpha = the object's mask) over the world's colour-shape classes, against
    the target's caption ("a red star"): % right in full, and by its colour and its shape alone."""
    labels = describer.objects.labels
    top = []
    for start in range(0, len(images), batch):
        chunk = slice(start, start + batch)
        top += [d.mask_scores[0][0] for d in describer.describe(images[chunk], masks[chunk])]
    truth = [c.split(" ", 1)[1] for c in captions]  # "a red star" -> "red star"
    colour = lambda label: label.split(" ")[0]
    shape = lambda label: label.split(" ")[-1]
    assert all(t in labels for t in truth), "captions outside the vocabulary"
    score = lambda same: 100.0 * float(np.mean([same(a, b) for a, b in zip(top, truth, strict=True)]))
    return {"class": score(lambda a, b: a == b), "colour": score(lambda a, b: colour(a) == colour(b)),
            "shape": score(lambda a, b: shape(a) == shape(b))}  # fmt: skip
