"""The demo's sample images: shapes on textured backgrounds, made procedurally (seeded) with their masks.

`python -m clipaway_jax.samples` rewrites `clipaway_jax/assets/samples/`; the PNGs are committed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SAMPLES_DIR = Path(__file__).parent / "assets" / "samples"
SIZE = 256


def _texture(kind: str, rng: np.random.RandomState) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    if kind == "wood":
        rings = np.sin(40 * np.hypot(xx - 0.3, yy + 0.2) + 3 * rng.rand(SIZE, SIZE) * 0.3)
        base = np.stack([0.55 + 0.12 * rings, 0.38 + 0.08 * rings, 0.22 + 0.05 * rings], -1)
    elif kind == "tiles":
        checker = ((np.floor(xx * 8) + np.floor(yy * 8)) % 2)[..., None]
        base = 0.35 + 0.3 * checker * np.array([0.9, 0.95, 1.0])
    else:  # grass
        base = np.stack([0.2 + 0.1 * yy, 0.45 + 0.2 * (1 - yy), 0.15 + 0.05 * xx], -1)
    return np.clip(base + 0.04 * rng.randn(SIZE, SIZE, 3), 0, 1)


def _shape(draw: ImageDraw.ImageDraw, kind: str, color, grow: int = 0):
    box = (80 - grow, 70 - grow, 180 + grow, 170 + grow)
    if kind == "circle":
        draw.ellipse(box, fill=color)
    elif kind == "square":
        draw.rectangle(box, fill=color)
    else:
        draw.polygon([(130, 60 - grow), (190 + grow, 180 + grow), (70 - grow, 180 + grow)], fill=color)


SCENES = (("ball_on_wood", "wood", "circle", (200, 30, 40)),
          ("box_on_tiles", "tiles", "square", (40, 70, 200)),
          ("cone_on_grass", "grass", "triangle", (240, 200, 30)))  # fmt: skip


def write_samples(folder: Path = SAMPLES_DIR) -> list[tuple[Path, Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i, (name, texture, shape, color) in enumerate(SCENES):
        image = Image.fromarray((_texture(texture, np.random.RandomState(i)) * 255).astype(np.uint8))
        _shape(ImageDraw.Draw(image), shape, color)
        mask = Image.new("L", (SIZE, SIZE), 0)
        _shape(ImageDraw.Draw(mask), shape, 255, grow=4)
        image.save(folder / f"{name}.png")
        mask.save(folder / f"{name}_mask.png")
        pairs.append((folder / f"{name}.png", folder / f"{name}_mask.png"))
    return pairs


def sample_pairs(folder: Path = SAMPLES_DIR) -> list[tuple[Path, Path]]:
    return [(folder / f"{name}.png", folder / f"{name}_mask.png") for name, *_ in SCENES]


if __name__ == "__main__":
    for image, mask in write_samples():
        print(image, mask)
