"""DCGD's region descriptions: zero-shot CLIP choice over vocabularies, batched in JAX.

The masked region is encoded by AlphaCLIP with alpha = mask (optionally also by plain CLIP on the
mask's bounding-box crop); the rest of the image by AlphaCLIP with alpha = 1 - mask. Vocabulary
text features come from the CLIP ViT-L/14 text tower with its projection, in the same joint space
as AlphaCLIP's `proj`, ensembled over prompt templates; they are computed once and cached.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from clipaway_jax import xla
from clipaway_jax.atomic import write_atomic
from clipaway_jax.models import focused_embeddings
from clipaway_jax.preprocess import alpha_clip_inputs

VOCAB_DIR = Path(__file__).resolve().parent.parent / "assets" / "vocab"
TEMPLATES = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a good photo of a {}.",
    "a close-up photo of a {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a blurry photo of a {}.",
)
DEFAULT_LOGIT_SCALE = math.log(100.0)  # CLIP's trained value (exp = 100)


def read_vocab(path: str | Path) -> list[str]:
    """One label per line; blank lines and '#' comments skipped; duplicates removed, order kept."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: vocabulary file not found")
    labels = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    labels = list(dict.fromkeys(label for label in labels if label))
    if not labels:
        raise ValueError(f"{path}: vocabulary is empty")
    return labels


@dataclass(frozen=True)
class VocabFeatures:
    labels: tuple[str, ...]
    features: np.ndarray  # [N, D], L2-normalized template ensembles


@dataclass
class Description:
    t_mask: str  # the negative prompt: what the mask covers
    t_info: str  # the positive prompt: the scene and what else is there
    mask_scores: list[tuple[str, float]]  # top objects for the masked region, with probabilities
    scene_scores: list[tuple[str, float]]
    object_scores: list[tuple[str, float]]  # top objects in the rest of the image

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def encode_vocab(text_model, params, tokenizer, labels, templates=TEMPLATES, chunk: int = 512) -> VocabFeatures:
    """Mean of normalized template features per label, renormalized (CLIP's prompt ensembling)."""
    from clipaway_jax.tokenizer import tokenize

    prompts = [template.format(label) for label in labels for template in templates]
    encode = jax.jit(lambda p, ids: text_model.apply(p, ids).text_embeds)
    feats = []
    for start in range(0, len(prompts), chunk):
        ids = tokenize(tokenizer, prompts[start : start + chunk])
        feats.append(np.asarray(encode(params, ids), np.float32))
    feats = np.concatenate(feats).reshape(len(labels), len(templates), -1)
    feats /= np.linalg.norm(feats, axis=-1, keepdims=True)
    mean = feats.mean(axis=1)
    return VocabFeatures(tuple(labels), mean / np.linalg.norm(mean, axis=-1, keepdims=True))


def cached_vocab(cache_dir: str | Path | None, key_parts: list, compute) -> VocabFeatures:
    """`compute()` once per (model, labels, templates); stored as .npz, written atomically."""
    if not cache_dir:
        return compute()
    key = hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()[:24]
    path = Path(os.path.expanduser(str(cache_dir))) / f"{key}.npz"
    if path.is_file():
        data = np.load(path, allow_pickle=False)
        return VocabFeatures(tuple(data["labels"].tolist()), data["features"])
    result = compute()
    write_atomic(path, lambda f: np.savez(f, labels=np.asarray(result.labels), features=result.features))
    return result


def region_probabilities(alpha_clip, params, images, masks, objects, scenes, logit_scale):
    """Softmax scores [B, N]: masked region over objects; the rest over scenes and over objects."""
    e_mask, e_rest = focused_embeddings(alpha_clip, params, images, masks)
    norm = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    scale = jnp.exp(logit_scale)
    probs = lambda e, vocab: jax.nn.softmax(scale * norm(e) @ vocab.T, axis=-1)
    return probs(e_mask, objects), probs(e_rest, scenes), probs(e_rest, objects)


def crop_features(clip_vision, params, images, masks, size: int) -> jax.Array:
    """Plain CLIP on each mask's bounding-box crop (host-side crop, batched encode)."""
    crops = []
    for image, mask in zip(np.asarray(images), np.asarray(masks)):
        ys, xs = np.nonzero(mask >= 0.5)
        box = image if ys.size == 0 else image[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        crops.append(np.asarray(jax.image.resize(box, (size, size, 3), "bicubic")))
    pixels, _ = alpha_clip_inputs(np.stack(crops), np.ones((len(crops), size, size)), size)
    return clip_vision.apply(params, pixels).image_embeds


def _top(probs: np.ndarray, labels, k: int, exclude=()) -> list[tuple[str, float]]:
    order = [i for i in np.argsort(-probs) if labels[i] not in exclude]
    return [(labels[i], float(probs[i])) for i in order[:k]]


def build_description(p_mask, p_scene, p_objects, objects, scenes, top_k_mask=1, n_objects=2) -> Description:
    mask_top = _top(p_mask, objects, max(5, top_k_mask))
    t_mask_labels = [label for label, _ in mask_top[:top_k_mask]]
    scene_top = _top(p_scene, scenes, 5)
    object_top = _top(p_objects, objects, max(5, n_objects), exclude=set(t_mask_labels))
    t_info = ", ".join([scene_top[0][0], *(label for label, _ in object_top[:n_objects])])
    return Description(", ".join(t_mask_labels), t_info, mask_top, scene_top, object_top)


class RegionDescriber:
    """Describe masked and unmasked regions of images with the checkpoint's AlphaCLIP and CLIP text tower."""

    def __init__(self, checkpoint, objects=None, scenes=None, templates=TEMPLATES, cache_dir=None, tokenizer=None):
        from clipaway_jax.tokenizer import load_tokenizer

        for name in ("alpha_clip", "clip_text"):
            if name not in checkpoint.params:
                raise ValueError(f"{checkpoint.path}: region descriptions need the '{name}' network "
                                 "(convert with --alpha-clip and --clip)")  # fmt: skip
        self.checkpoint = checkpoint
        self.alpha_clip = checkpoint.module("alpha_clip")
        tokenizer = tokenizer or load_tokenizer(checkpoint.tokenizer_path)
        own = checkpoint.path / "vocab"  # a checkpoint of another world (the mini one) brings its own words
        vocab_dir = own if (own / "objects.txt").is_file() else VOCAB_DIR
        objects = objects or read_vocab(vocab_dir / "objects.txt")
        scenes = scenes or read_vocab(vocab_dir / "scenes.txt")
        networks = checkpoint.manifest["networks"]
        vision_entry = networks.get("clip_vision", networks["alpha_clip"])
        self.logit_scale = float(vision_entry.get("logit_scale", DEFAULT_LOGIT_SCALE))
        self.objects = self._vocab(objects, templates, tokenizer, cache_dir)
        self.scenes = self._vocab(scenes, templates, tokenizer, cache_dir)
        self._score = xla.jit(region_probabilities, static_argnums=0)

    def _vocab(self, labels, templates, tokenizer, cache_dir) -> VocabFeatures:
        entry = self.checkpoint.manifest["networks"]["clip_text"]
        key = [[s["sha256"] for s in entry.get("sources", [])], entry["config"], list(labels), list(templates)]
        params = {"params": self.checkpoint.params["clip_text"]}
        text = self.checkpoint.module("clip_text")
        return cached_vocab(cache_dir, key, lambda: encode_vocab(text, params, tokenizer, labels, templates))

    def describe(self, images, masks, top_k_mask: int = 1, n_objects: int = 2, use_crop: bool = False):
        """images [B, H, W, 3] in [0, 1], masks [B, H, W] -> one Description per image."""
        params = {"params": self.checkpoint.params["alpha_clip"]}
        p_mask, p_scene, p_objects = (
            np.asarray(p)
            for p in self._score(
                self.alpha_clip, params, images, masks, self.objects.features, self.scenes.features, self.logit_scale
            )  # fmt: skip
        )
        if use_crop:
            p_mask = (p_mask + self._crop_probabilities(images, masks)) / 2
        return [
            build_description(m, s, o, self.objects.labels, self.scenes.labels, top_k_mask, n_objects)
            for m, s, o in zip(p_mask, p_scene, p_objects)
        ]

    def _crop_probabilities(self, images, masks) -> np.ndarray:
        if "clip_vision" not in self.checkpoint.params:
            raise ValueError(
                f"{self.checkpoint.path}: --use-crop needs the 'clip_vision' network (convert with --clip)"
            )
        vision = self.checkpoint.module("clip_vision")
        feats = crop_features(vision, {"params": self.checkpoint.params["clip_vision"]}, images, masks,
                              vision.config.image_size)  # fmt: skip
        feats = feats / jnp.linalg.norm(feats, axis=-1, keepdims=True)
        return np.asarray(jax.nn.softmax(np.exp(self.logit_scale) * feats @ self.objects.features.T, axis=-1))
