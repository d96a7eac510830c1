"""What a mini AlphaCLIP knows of the target (issue #25: shape >= 80% zero-shot), on validation scenes:

    zero-shot top-1 with alpha = the object's mask over the 80 colour-shape classes (class / colour / shape),
    and on the object's box crop with alpha = 1 (CLIP@k's input: the object centred and at one scale),
    "object painted in?" on the untouched source and on the ground truth (clipaway_jax/mini/measures.py),
    the text tower's cosines between class prompts that differ only in shape / only in colour, and between
    the shape-only prompts "a star", "a circle", ...,
    a ridge probe of e_f (alpha = mask) for shape and colour, fitted on training scenes: does the image
    embedding carry shape at all, whatever the text says?

With --supervised-steps N it also trains the same architecture from nothing as a shape classifier (AdamW,
batch 64, alpha = mask) and prints its validation accuracy every 100 steps: how fast this ViT can learn
shape with the most direct signal there is. --architecture KEY=VALUE changes the architecture of that run
(the config fields of `CLIPVisionConfig`: patch_size, num_hidden_layers, num_attention_heads, ...).

    python bench/mini_alpha_clip.py [--checkpoint C] [--data-dir runs/mini/data] [--supervised-steps 600]
    python bench/mini_alpha_clip.py --supervised-steps 1000 --supervised-lr 3e-4 --architecture num_attention_heads=8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from clipaway_jax import xla
from clipaway_jax.checkpoint import build_module, load_checkpoint, read_manifest
from clipaway_jax.mini.batches import box_crop, decode, text
from clipaway_jax.mini.evaluate import source_of
from clipaway_jax.mini.measures import PaintedIn, zero_shot_accuracy
from clipaway_jax.mini.scenes import COLOURS, SHAPES
from clipaway_jax.mini.shipped import SHIPPED
from clipaway_jax.models.clip import CLIPVisionTransformer
from clipaway_jax.pipelines.describe import RegionDescriber
from clipaway_jax.preprocess import alpha_clip_inputs


def scenes(data_dir: Path, split: str, count: int) -> dict[str, np.ndarray]:
    source = source_of(data_dir, split)
    examples = [source[i] for i in range(count)]
    column = lambda key, mode="RGB": np.stack([decode(e[key], mode) for e in examples])
    captions = [text(e["caption"]) for e in examples]  # "a red star", "an orange ring"
    named = [caption.split(" ")[1:] for caption in captions]  # ["red", "star"]
    images = column("image")
    crops = np.stack([box_crop(image, e["box"], image.shape[0]) for image, e in zip(images, examples)])
    truth = column("background").astype(np.float32) / 255
    return {"images": images.astype(np.float32) / 255, "crops": crops, "truth": truth,
            "masks": (column("mask", "L") >= 128).astype(np.float32), "captions": captions,
            "colour": np.array([list(COLOURS).index(c) for c, _ in named]),
            "shape": np.array([SHAPES.index(s) for _, s in named])}  # fmt: skip


def with_clip_text(checkpoint: Path):
    """The checkpoint's AlphaCLIP and its text tower as the describer reads them (a training export names the
    text tower `text_encoder` only; the shipped set has the `clip_text` alias)."""
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    name = "clip_text" if "clip_text" in manifest["networks"] else "text_encoder"
    loaded = load_checkpoint(checkpoint, networks=["alpha_clip", name])
    loaded.params.setdefault("clip_text", loaded.params[name])
    loaded.manifest["networks"].setdefault("clip_text", loaded.manifest["networks"][name])
    return loaded


def text_cosines(describer) -> tuple[float, float]:
    """Mean cosine of the class prompts' features: same colour and another shape; same shape, another colour."""
    features, labels = describer.objects.features, describer.objects.labels
    colour = np.array([label.split()[0] for label in labels])
    shape = np.array([label.split()[-1] for label in labels])
    cos = features @ features.T
    same_colour, same_shape = colour[:, None] == colour[None], shape[:, None] == shape[None]
    return float(cos[same_colour & ~same_shape].mean()), float(cos[same_shape & ~same_colour].mean())


def shape_prompt_cosine(checkpoint) -> float:
    """Mean cosine between the text features of "a circle", "a square", ... (the `shape_p` captions)."""
    from clipaway_jax.tokenizer import load_tokenizer, tokenize

    ids = tokenize(load_tokenizer(checkpoint.tokenizer_path), [f"a {shape}" for shape in SHAPES])
    e = np.asarray(checkpoint.module("clip_text").apply({"params": checkpoint.params["clip_text"]}, ids).text_embeds)
    e = e / np.linalg.norm(e, axis=-1, keepdims=True)
    return float((e @ e.T)[~np.eye(len(SHAPES), dtype=bool)].mean())


def in_chunks(run, images: np.ndarray, masks: np.ndarray, batch: int = 100) -> np.ndarray:
    """`run(images, masks)` over chunks of `batch`, concatenated."""
    return np.concatenate([np.asarray(run(images[s : s + batch], masks[s : s + batch]))
                           for s in range(0, len(images), batch)])  # fmt: skip


def focused(describer, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """e_f: AlphaCLIP's image_embeds with alpha = mask [N, D]."""
    model, params = describer.alpha_clip, {"params": describer.checkpoint.params["alpha_clip"]}
    run = xla.jit(lambda x, m: model.apply(params, *alpha_clip_inputs(x, m, model.config.image_size)).image_embeds)
    return in_chunks(run, images, masks)


def ridge_probe(train_x, train_y, test_x, test_y, classes: int, ridge: float = 1e-2) -> float:
    """% right of a ridge regression onto one-hot labels (with a bias)."""
    design = lambda x: np.c_[x, np.ones(len(x))]
    a = design(train_x)
    weights = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ np.eye(classes)[train_y])
    return 100.0 * float(np.mean((design(test_x) @ weights).argmax(1) == test_y))


def measure(checkpoint: Path, train: dict, val: dict) -> None:
    loaded = with_clip_text(checkpoint)
    describer = RegionDescriber(loaded)
    print("zero-shot, alpha = mask (%):", zero_shot_accuracy(describer, val["images"], val["masks"], val["captions"]))
    ones = np.ones_like(val["masks"])
    print("zero-shot, box crop (%):", zero_shot_accuracy(describer, val["crops"], ones, val["captions"]))
    painted = PaintedIn(loaded)
    print(f"painted in: source {100 * painted(val['images'], val['masks']).mean():.1f}%, "
          f"ground truth read as removed {100 * (1 - painted(val['truth'], val['masks']).mean()):.1f}%")  # fmt: skip
    other_shape, other_colour = text_cosines(describer)
    print(f"text cosines: same colour, other shape {other_shape:.3f}; same shape, other colour {other_colour:.3f}")
    print(f'"a {{shape}}" prompts: mean cosine {shape_prompt_cosine(loaded):.3f}')
    e_train = focused(describer, train["images"], train["masks"])
    e_val = focused(describer, val["images"], val["masks"])
    for key, classes in (("shape", len(SHAPES)), ("colour", len(COLOURS))):
        accuracy = ridge_probe(e_train, train[key], e_val, val[key], classes)
        print(f"ridge probe of e_f on {len(e_train)} training scenes: {key} {accuracy:.1f}%")


def supervised(checkpoint: Path, train: dict, val: dict, steps: int, learning_rate: float = 1e-3,
               architecture: dict | None = None) -> None:  # fmt: skip
    """The checkpoint's AlphaCLIP architecture (with `architecture`'s changes) from nothing, trained to name the
    target's shape."""
    config = build_module(read_manifest(checkpoint)["networks"]["alpha_clip"])[0].config  # no weights needed
    model = CLIPVisionTransformer(dataclasses.replace(config, **(architecture or {})))
    print(f"supervised: {model.config}")
    size = model.config.image_size
    inputs = lambda x, m: alpha_clip_inputs(x, m, size)
    params = {"vit": model.init(jax.random.PRNGKey(0), *inputs(train["images"][:2], train["masks"][:2])),
              "head": jnp.zeros((model.config.projection_dim, len(SHAPES)))}  # fmt: skip
    optimizer = optax.adamw(learning_rate, weight_decay=1e-4)
    state = optimizer.init(params)

    def logits(p, x, m):
        e = model.apply(p["vit"], *inputs(x, m)).image_embeds
        return 10.0 * (e / jnp.linalg.norm(e, axis=-1, keepdims=True)) @ p["head"]

    def loss(p, x, m, y):
        return optax.softmax_cross_entropy_with_integer_labels(logits(p, x, m), y).mean()

    @xla.jit
    def step(p, s, x, m, y):
        value, grads = jax.value_and_grad(loss)(p, x, m, y)
        updates, s = optimizer.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value

    predict = xla.jit(lambda p, x, m: logits(p, x, m).argmax(-1))
    validation = lambda p: in_chunks(lambda x, m: predict(p, x, m), val["images"], val["masks"])
    rng, start = np.random.default_rng(0), time.perf_counter()
    for i in range(1, steps + 1):
        idx = rng.integers(0, len(train["shape"]), 64)
        params, state, value = step(params, state, train["images"][idx], train["masks"][idx], train["shape"][idx])
        if i % 100 == 0:
            accuracy = 100 * np.mean(validation(params) == val["shape"])
            print(f"supervised step {i}: loss {float(value):.3f}, validation shape {accuracy:.1f}% "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=SHIPPED, help="a mini checkpoint (default: the shipped set)")
    p.add_argument("--data-dir", type=Path, default=Path("runs/mini/data"))
    p.add_argument("--train-count", type=int, default=2000, help="training scenes for the probe")
    p.add_argument("--count", type=int, default=500, help="validation scenes")
    p.add_argument("--supervised-steps", type=int, default=0)
    p.add_argument("--supervised-lr", type=float, default=1e-3)
    p.add_argument("--architecture", nargs="+", default=[], metavar="KEY=VALUE", help="integer config fields")
    args = p.parse_args(argv)
    architecture = {key: int(value) for key, value in (item.split("=", 1) for item in args.architecture)}
    train = scenes(args.data_dir, "train", max(args.train_count, 8000 if args.supervised_steps else 0))
    val = scenes(args.data_dir, "validation", args.count)
    measure(args.checkpoint, {k: v[: args.train_count] for k, v in train.items()}, val)
    if args.supervised_steps:
        supervised(args.checkpoint, train, val, args.supervised_steps, args.supervised_lr, architecture)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
