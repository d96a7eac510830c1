"""Training batches from the mini world's tfds source (`mini_scenes`). Each example's random choices
come from (seed, example index), so a resumed run sees the same batches.

    contrastive pairs (AlphaCLIP):  alpha = object mask      <-> "a red star" (or "a photo of a red star.")
                                    alpha = 1 - object mask  <-> "a blue ring on bricks" (the rest)
                                    alpha = ones             <-> the scene caption
                                    the object's box crop    <-> "a red star" (what CLIP@k classifies)
                                    optionally (`background_p`): a fresh texture of the scene's kind under
                                    the object's mask <-> "bricks" (a region with nothing in it; the
                                    texture is drawn anew, never the scene's ground-truth background)
                                    optionally (`shape_p`): the object's pairs named by shape alone,
                                    "a star" (colour alone already tells most captions in a batch apart)
                                    (`PairRecipe`; `pair_kinds` weighs the first four kinds)
    inpainting:  the ORIGINAL image under a random mask (the whole image, the object's dilated 0-2 px,
                 that silhouette moved off the object, or strokes and boxes: `MaskRecipe`), the scene
                 caption 30% of the time (else ""), the image embedding kept 85% (`InpaintRecipe`; the
                 training config sets both).
"""

from __future__ import annotations

import dataclasses
import functools
import io

import numpy as np
from PIL import Image

from clipaway_jax.pipelines.describe import TEMPLATES
from clipaway_jax.training.data import random_mask

TEMPLATE_P = 0.5


@dataclasses.dataclass(frozen=True)
class MaskRecipe:
    """How an inpainting example's training mask is drawn. SD-inpainting trained on synthetic masks and "in
    25% mask everything" (its model card): with the whole image masked, only the text and the image tokens
    say what to paint, which is what makes the tokens matter."""

    whole: float = 0.0  # share of examples with everything masked
    object: float = 0.5  # share of the others with the object's own mask, dilated 0-2 px
    elsewhere: float = 0.0  # share of the rest with that silhouette moved off the object (what is under it
    #                         is the scene's background or other objects, not the object)
    random_area: tuple[float, float] = (0.02, 0.4)  # the rest: strokes and boxes covering this much
    wrap: bool = True  # the moved silhouette may wrap around the border (split into pieces at the edges); False:
    #                    it lands in one piece (cut where its box passes the border), as a removal's mask
    spare_objects: float = 0.0  # > 0: a mask (not a whole one) leaves out each object it would hide more than this
    #                             share of: object-aware masks (CM-GAN), no hole hides an object; 0 = off
    overlap: float = 0.0  # share of the moved silhouettes placed over 10-50% of one of the scene's objects, as a
    #                       removal's target hides part of the objects behind it (the hole continues their rest);
    #                       0.5 filled 0.25 dB worse at the recipe's length (bench/RESULTS.md): off in the recipe


@dataclasses.dataclass(frozen=True)
class PairRecipe:
    """How AlphaCLIP's contrastive pairs are drawn (the module docstring lists the kinds)."""

    background: float = 0.0  # share of pairs with a fresh background texture under the object's mask
    shape: float = 0.0  # share of the object's pairs named by shape alone
    kinds: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)  # relative weights of the object under its mask, the rest,
    #                                                  the whole scene, the object's box crop


@dataclasses.dataclass(frozen=True)
class InpaintRecipe:
    masks: MaskRecipe = MaskRecipe()
    caption: float = 0.3  # share of examples conditioned on the scene caption (else "")
    keep_image: float = 0.85  # share keeping the image embedding (else zeros: IP-Adapter's condition dropout)
    empty: float = 0.0  # share of examples whose image is a fresh texture of the scene's background kind
    #                     and nothing on it, captioned with the kind: the world's empty scenes (every scene
    #                     of the data set holds an object, so tokens of an object-free image are never seen)


def decode(data: bytes, mode: str = "RGB") -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert(mode))


def text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def rest_caption(scene_caption: str, caption: str) -> str:
    """The scene caption without (one occurrence of) the target: "a blue ring on bricks", or "bricks"."""
    listed, _, background = scene_caption.rpartition(" on ")
    names = [n for part in listed.split(", ") for n in part.split(" and ")]
    names.remove(caption)
    if not names:
        return background
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{listed} on {background}"


class Tokens:
    """Token ids of captions, cached (a world of a few thousand distinct captions)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    @functools.cache  # noqa: B019 - one instance per training run
    def __call__(self, caption: str) -> np.ndarray:
        from clipaway_jax.tokenizer import tokenize

        return tokenize(self.tokenizer, [caption])[0]


def box_crop(image: np.ndarray, box, size: int) -> np.ndarray:
    """CLIP@k's crop (Pillow bicubic shorter side to `size`, centre crop), in [0, 1] before normalizing."""
    from clipaway_jax.eval.features import clip_crop

    crop = clip_crop(image.astype(np.float32) / 255.0, tuple(int(v) for v in box), size)
    return np.asarray(crop, np.float32) / 255.0


def contrastive_pair(example: dict, rng: np.random.Generator, tokens: Tokens, alpha: bool,
                     recipe: PairRecipe = PairRecipe(), classes: dict[str, int] | None = None):  # fmt: skip
    """(pixels, alpha, token ids) of one pair; with `classes` ({"red star": 0, ..., "bricks": 80, ...}) also
    the class the pair shows: the object under its mask or in its box crop, the background under the
    mask; -1 for the rest and the whole scene."""
    image, mask = decode(example["image"]), decode(example["mask"], "L") >= 128
    caption, scene = text(example["caption"]), text(example["scene_caption"])
    size = image.shape[0]
    if alpha and recipe.background and rng.random() < recipe.background:  # (no draw at 0: the default stays)
        pixels, alpha_map, ids, kind_name = background_region(scene, mask, rng, tokens)
        return (pixels, alpha_map, ids) + ((classes[kind_name],) if classes else ())
    label = caption.split(" ", 1)[1]  # "a red star" -> "red star"
    kind = pair_kind(rng, recipe.kinds) if alpha else 2
    if kind in (0, 3) and recipe.shape and rng.random() < recipe.shape:  # (no draw at 0, as above)
        caption = "a " + caption.rsplit(" ", 1)[1]  # every shape's name starts with a consonant
    if kind in (0, 3) and rng.random() < TEMPLATE_P:  # the zero-shot prompts of CLIP@k and the describer
        caption = TEMPLATES[rng.integers(len(TEMPLATES))].format(caption.split(" ", 1)[1])
    ones = np.ones((size, size), np.float32)
    if kind == 0:
        pair = image / 255.0, mask.astype(np.float32), caption
    elif kind == 1:
        pair = image / 255.0, 1.0 - mask, rest_caption(scene, caption)
    elif kind == 2:
        pair = image / 255.0, ones, scene
    else:
        pair = box_crop(image, example["box"], size), ones, caption
    pixels, alpha_map, words = pair
    out = pixels.astype(np.float32), alpha_map.astype(np.float32), tokens(words)
    return out + ((classes[label] if kind in (0, 3) else -1,) if classes else ())


def pair_kind(rng: np.random.Generator, weights) -> int:
    if len(set(weights)) == 1:  # equal weights: the draw of the recipe before `kinds` existed
        return int(rng.integers(len(weights)))
    return int(rng.choice(len(weights), p=np.asarray(weights, np.float64) / sum(weights)))


def background_region(scene_caption: str, mask: np.ndarray, rng: np.random.Generator, tokens: Tokens):
    """A new texture of the scene's background kind, alpha = the object's mask, captioned with the kind;
    returns the kind too."""
    pixels, kind = empty_scene(scene_caption, mask.shape[0], rng)
    words = TEMPLATES[rng.integers(len(TEMPLATES))].format(kind) if rng.random() < TEMPLATE_P else kind
    return pixels, mask.astype(np.float32), tokens(words), kind


def contrastive_loader(source, tokenizer, seed: int, alpha: bool, recipe: PairRecipe = PairRecipe(),
                       classes: dict[str, int] | None = None):  # fmt: skip
    tokens = Tokens(tokenizer)

    def load(indices: np.ndarray) -> dict:
        pairs = [contrastive_pair(source[int(i)], np.random.default_rng([seed, int(i)]), tokens, alpha, recipe, classes)
                 for i in indices]  # fmt: skip
        columns = [np.stack(column) for column in zip(*pairs)]
        batch = {"images": columns[0], "alpha": columns[1], "text_ids": columns[2]}
        return batch | ({"class_index": columns[3].astype(np.int32)} if classes else {})

    return load


def image_loader(source):
    def load(indices: np.ndarray) -> dict:
        return {"images": np.stack([decode(source[int(i)]["image"]) for i in indices]).astype(np.float32) / 255.0}

    return load


def training_mask(example: dict, rng: np.random.Generator, size: int, recipe: MaskRecipe = MaskRecipe(),
                  empty: bool = False) -> np.ndarray:  # fmt: skip
    """The example's mask drawn as `recipe` says; `empty`: the image is an empty scene (no objects to spare)."""
    mask = _drawn(example, rng, size, recipe)
    if recipe.spare_objects and not empty and not mask.all():
        mask = spared(mask, objects_map(example), recipe.spare_objects)
    return mask


def spared(mask: np.ndarray, objects: np.ndarray, share: float) -> np.ndarray:
    """`mask` without each object of `objects` (a scene's objects map) it covers more than `share` of; the object
    leaves with a 1 px ring, so its soft edge stays in view. Object-aware masks (CM-GAN, Zheng et al. 2022):
    trained on holes that hide whole objects, the UNet learns to paint an object into a hole, the
    hallucination a removal must not make; what is under a hole is then the background, or objects whose
    visible rest says how they continue."""
    for k in np.unique(objects[objects > 0]):
        region = objects == k
        if (mask * region).sum() > share * region.sum():
            mask = mask * (1 - grown(region, 1))
    return mask.astype(np.float32)


def objects_map(example: dict) -> np.ndarray:
    if "objects" not in example:
        raise ValueError("this mini_scenes record has no 'objects' map (the data set was made before version 1.1.0); "
                         "`clipaway-jax data scenes --out DIR` makes it again")  # fmt: skip
    return decode(example["objects"], "L")


def _drawn(example: dict, rng: np.random.Generator, size: int, recipe: MaskRecipe) -> np.ndarray:
    if recipe.whole and rng.random() < recipe.whole:  # (no draw at 0: the default keeps its random stream)
        return np.ones((size, size), np.float32)
    if rng.random() < recipe.object:
        return grown(decode(example["mask"], "L") >= 128, int(rng.integers(0, 3)))
    if recipe.elsewhere and rng.random() < recipe.elsewhere:
        silhouette = decode(example["mask"], "L") >= 128
        if recipe.overlap and rng.random() < recipe.overlap:  # (no draw at 0: the default keeps its stream)
            return over_object(silhouette, objects_map(example), rng)
        return moved_off(silhouette, rng, wrap=recipe.wrap)
    return random_mask(rng, size, tuple(recipe.random_area))


def grown(mask: np.ndarray, pixels: int) -> np.ndarray:
    """The mask dilated by `pixels` (a square max filter), as float32."""
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    if pixels:
        from PIL import ImageFilter

        image = image.filter(ImageFilter.MaxFilter(2 * pixels + 1))
    return (np.asarray(image) >= 128).astype(np.float32)


def moved_off(mask: np.ndarray, rng: np.random.Generator, tries: int = 20, wrap: bool = True) -> np.ndarray:
    """The object's silhouette (dilated 0-2 px, maybe mirrored) shifted to where it covers at most a tenth
    of the object: an object-shaped hole with the object NOT under it, so that a hole's shape alone does not
    say "paint an object" (the image tokens and the visible rest must). With `wrap` the shift wraps around
    the border (most such holes then come in pieces at the edges); without, it lands in one piece, at most
    a third of its box past the border (`_placed`). Falls back to the least overlapping of the tries (a
    large object leaves no room)."""
    shape = _silhouette(mask, rng)
    return _covering(shape, mask, (0.0, 0.1), rng, _rolled if wrap else _placed, tries)


def over_object(mask: np.ndarray, objects: np.ndarray, rng: np.random.Generator, share=(0.1, 0.5), tries: int = 20,
                ) -> np.ndarray:  # fmt: skip
    """The object's silhouette (dilated 0-2 px, maybe mirrored) placed in one piece over `share` of one object of
    the scene (`objects`: its objects map), drawn at random: what a removal's mask does to the objects behind
    its target, whose hidden part the ground truth shows and the fill must continue from their visible rest.
    Falls back to the try nearest the share (an object too small or too large for the silhouette)."""
    shape = _silhouette(mask, rng)
    ids = np.unique(objects[objects > 0])
    if not len(ids):
        return np.ascontiguousarray(_placed(shape, rng))
    return _covering(shape, objects == ids[rng.integers(len(ids))], share, rng, _placed, tries)


def _covering(shape: np.ndarray, region: np.ndarray, share, rng: np.random.Generator, place, tries: int) -> np.ndarray:
    """`place(shape, rng)` drawn until it covers a share of `region` inside [share[0], share[1]]; else the try
    nearest that range (the first of equals)."""
    best, best_miss = shape, np.inf
    for _ in range(tries):
        placed = place(shape, rng)
        covered = float((placed * region).sum()) / max(float(region.sum()), 1.0)
        miss = max(share[0] - covered, covered - share[1], 0.0)
        if miss == 0.0:
            return np.ascontiguousarray(placed)
        if miss < best_miss:
            best, best_miss = placed, miss
    return np.ascontiguousarray(best)


def _silhouette(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The mask dilated 0-2 px and, half the time, mirrored: the moved masks' shape."""
    shape = grown(mask, int(rng.integers(0, 3)))
    return shape[:, ::-1] if rng.random() < 0.5 else shape


def _rolled(shape: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    dy, dx = rng.integers(0, shape.shape[0], 2)
    return np.roll(shape, (int(dy), int(dx)), axis=(0, 1))


def _placed(shape: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The silhouette's box placed at random, up to a third of it past the border (cut there, as the scenes'
    objects are: their centres lie in [side / 3, 1 - side / 3])."""
    ys, xs = np.nonzero(shape)
    if not len(ys):
        return shape
    piece = shape[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    (h, w), size = piece.shape, shape.shape[0]
    top, left = (int(v) for v in rng.integers([-(h // 3), -(w // 3)], [size - h + h // 3 + 1, size - w + w // 3 + 1]))
    canvas = np.zeros((size + 2 * h, size + 2 * w), shape.dtype)
    canvas[h + top : h + top + h, w + left : w + left + w] = piece
    return canvas[h : h + size, w : w + size]


def empty_scene(scene_caption: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A fresh texture of the scene's background kind with no object on it, and its caption (the kind)."""
    from clipaway_jax.mini.scenes import texture

    kind = scene_caption.rpartition(" on ")[2]
    return texture(kind, size, rng).astype(np.float32) / 255.0, kind


def inpaint_loader(source, tokenizer, seed: int, recipe: InpaintRecipe = InpaintRecipe()):
    tokens = Tokens(tokenizer)

    def load(indices: np.ndarray) -> dict:
        images, masks, ids, keep = [], [], [], []
        for i in indices:
            example, rng = source[int(i)], np.random.default_rng([seed, int(i), 1])
            image = decode(example["image"]).astype(np.float32) / 255.0
            caption = text(example["scene_caption"])
            empty = bool(recipe.empty and rng.random() < recipe.empty)  # (no draw at 0: the default keeps its stream)
            if empty:
                image, caption = empty_scene(caption, image.shape[0], rng)
            images.append(image)
            masks.append(training_mask(example, rng, image.shape[0], recipe.masks, empty))
            ids.append(tokens(caption if rng.random() < recipe.caption else ""))
            keep.append(np.float32(rng.random() < recipe.keep_image))
        return {"images": np.stack(images), "masks": np.stack(masks), "text_ids": np.stack(ids),
                "keep_image": np.asarray(keep, np.float32)}  # fmt: skip

    return load
