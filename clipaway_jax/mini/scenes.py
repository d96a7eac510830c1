"""The mini world's scenes: procedural images with exact ground truth for object removal.

A scene is a textured background with 1-4 flat-coloured shapes. One of them is the target: its mask
is the target's visible pixels, and the ground truth is the same scene rendered without it (the other
objects stay, including the ones it occluded). Everything derives from (seed, index), so any example
can be regenerated alone. Shapes are drawn 4x supersampled and box-filtered down, so edges are
anti-aliased the way photographs are.

    scene = render(seed=0, index=7, size=64)
    scene.image, scene.mask, scene.background    # uint8 [S, S, 3], uint8 [S, S] (255 = target), uint8
    scene.caption, scene.scene_caption           # "a red star", "a red star and a blue ring on bricks"
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

BACKGROUNDS = ("wood", "tiles", "grass", "bricks", "stripes", "sky", "water", "sand")
SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "diamond", "heart")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
    "orange": (245, 140, 30), "purple": (140, 60, 180), "white": (245, 245, 245), "black": (25, 25, 25),
    "pink": (240, 130, 180), "cyan": (40, 200, 210),
}  # fmt: skip
# The share of its bounding square that each shape covers (sets a shape's size from a wanted area).
FILL = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.433, "star": 0.32, "ring": 0.42, "cross": 0.44,
        "diamond": 0.5, "heart": 0.6}  # fmt: skip
SUPERSAMPLE = 4
RETRY = 1_000_003  # index offset for a scene whose target ended up mostly occluded (deterministic)


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    centre: tuple[float, float]  # (x, y) in [0, 1]
    side: float  # bounding-square side, fraction of the image
    angle: float  # degrees


@dataclass
class Scene:
    image: np.ndarray
    mask: np.ndarray
    background: np.ndarray  # the ground truth: the scene without the target
    texture: np.ndarray  # the background texture alone, no object on it
    target: SceneObject
    objects: list[SceneObject]
    background_kind: str
    box: tuple[int, int, int, int]  # (x, y, w, h) of the target's visible pixels
    lookalike: bool  # another object has the target's shape and colour
    objects_map: np.ndarray  # uint8 [H, W]: 1 + the index in `objects` of the object most visible in each
    #                          pixel (its soft edge included), 0 where only the texture shows

    @property
    def caption(self) -> str:
        return describe(self.target)

    @property
    def scene_caption(self) -> str:
        names = [describe(o) for o in self.objects]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        return f"{listed} on {self.background_kind}"

    @property
    def area(self) -> float:
        return float((self.mask >= 128).mean())

    @property
    def under_target(self) -> float:
        """Share of the target's mask over objects drawn before it: what the ground truth shows there is
        partly another object, which any measure of "is an object in the hole?" rightly reports."""
        below = self.objects[: next(i for i, o in enumerate(self.objects) if o is self.target)]
        hole = self.mask >= 128
        covered = 1 - np.prod([1 - _layer(o, self.mask.shape[0]) for o in below], axis=0) if below else 0 * hole
        return float((covered * hole).sum() / hole.sum())


def describe(obj: SceneObject) -> str:
    article = "an" if obj.colour[0] in "aeiou" else "a"
    return f"{article} {obj.colour} {obj.shape}"


def render(seed: int, index: int, size: int = 64) -> Scene:
    rng = np.random.default_rng([seed, index])
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    background = texture(kind, size, rng)
    objects, target_at = _objects(rng)
    layers = [_layer(o, size) for o in objects]  # coverage in [0, 1] at full resolution
    image = _composite(background, objects, layers)
    others = [(o, c) for i, (o, c) in enumerate(zip(objects, layers)) if i != target_at]
    clean = _composite(background, [o for o, _ in others], [c for _, c in others])
    shown = _visible(layers)
    visible = shown[target_at]
    mask = (visible > 0).astype(np.uint8) * 255  # every pixel the target shows in, its soft edge too
    if visible.sum() < 0.5 * layers[target_at].sum() or not mask.any():
        return render(seed, index + RETRY, size)  # mostly hidden: not a removal anyone would ask for
    target = objects[target_at]
    lookalike = any(o.shape == target.shape and o.colour == target.colour for o, _ in others)
    objects_map = np.where(np.max(shown, 0) > 0, np.argmax(shown, 0) + 1, 0).astype(np.uint8)
    return Scene(image, mask, clean, background, target, objects, kind, _box(mask), lookalike, objects_map)


def _visible(layers: list[np.ndarray]) -> np.ndarray:
    """Each object's visible coverage [N, H, W]: its layer under every object drawn after it."""
    shown = []
    for i, layer in enumerate(layers):
        visible = layer.copy()
        for later in layers[i + 1 :]:
            visible *= 1 - later
        shown.append(visible)
    return np.stack(shown)


AREA_BUCKETS = ((0.01, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4))  # DCGD's table; the target is drawn evenly


def _objects(rng: np.random.Generator) -> tuple[list[SceneObject], int]:
    """1-4 objects and the target's position among them. The target's area falls in each of DCGD's
    mask-area buckets equally often; the others' are log-uniform in 1-40%; a quarter of the objects after
    the first repeat its shape and colour (DCGD's look-alike case)."""
    count = int(rng.integers(1, 5))
    target_at = int(rng.integers(count))
    objects = []
    for i in range(count):
        if i == target_at:
            area = float(rng.uniform(*AREA_BUCKETS[rng.integers(len(AREA_BUCKETS))]))
        else:
            area = float(np.exp(rng.uniform(np.log(0.01), np.log(0.4))))
        shape = SHAPES[rng.integers(len(SHAPES))]
        colour = list(COLOURS)[rng.integers(len(COLOURS))]
        if i > 0 and rng.random() < 0.25:
            shape, colour = objects[0].shape, objects[0].colour
        side = min(0.95, math.sqrt(area / FILL[shape]))
        centre = tuple(float(v) for v in rng.uniform(side / 3, 1 - side / 3, 2))
        objects.append(SceneObject(shape, colour, centre, side, float(rng.uniform(0, 360))))
    return objects, target_at


def _composite(background: np.ndarray, objects: list[SceneObject], layers: list[np.ndarray]) -> np.ndarray:
    out = background.astype(np.float32)
    for obj, layer in zip(objects, layers):
        out = out * (1 - layer[..., None]) + np.asarray(COLOURS[obj.colour], np.float32) * layer[..., None]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _layer(obj: SceneObject, size: int) -> np.ndarray:
    """The object's anti-aliased coverage [size, size] in [0, 1]."""
    big = size * SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy, r = obj.centre[0] * big, obj.centre[1] * big, obj.side * big / 2
    for polygon, fill in _outline(obj.shape, cx, cy, r, math.radians(obj.angle)):
        draw.polygon(polygon, fill=fill)
    coverage = np.asarray(canvas, np.float32).reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))
    return coverage / 255.0


def _outline(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[list, int]]:
    """Polygons (and their fill, 0 = cut out) for a shape inside the square of half-side r."""

    def turn(points):
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]

    circle = lambda radius, n=64: [(radius * math.cos(2 * math.pi * k / n), radius * math.sin(2 * math.pi * k / n))
                                   for k in range(n)]  # fmt: skip
    if shape == "circle":
        return [(turn(circle(r)), 255)]
    if shape == "ring":
        return [(turn(circle(r)), 255), (turn(circle(0.6 * r)), 0)]
    if shape == "square":
        return [(turn([(-r, -r), (r, -r), (r, r), (-r, r)]), 255)]
    if shape == "diamond":
        return [(turn([(0, -r), (r, 0), (0, r), (-r, 0)]), 255)]
    if shape == "triangle":
        return [(turn([(0, -r), (r * 0.866, r * 0.5), (-r * 0.866, r * 0.5)]), 255)]
    if shape == "star":
        radius = lambda k: r if k % 2 == 0 else 0.4 * r  # outer and inner corners alternate
        phase = lambda k: math.pi / 2 + math.pi * k / 5
        points = [(radius(k) * math.cos(phase(k)), -radius(k) * math.sin(phase(k))) for k in range(10)]
        return [(turn(points), 255)]
    if shape == "cross":
        w = r / 3
        return [(turn([(-r, -w), (r, -w), (r, w), (-r, w)]), 255), (turn([(-w, -r), (w, -r), (w, r), (-w, r)]), 255)]
    if shape == "heart":
        t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        x, y = 16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return [(turn(list(zip(x * r / 17, (y + 2) * r / 17))), 255)]
    raise ValueError(f"unknown shape {shape!r}")


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


# --- backgrounds: each a function of pixel coordinates with random colours, scale and orientation ---


def texture(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = (np.mgrid[:size, :size] + 0.5) / size
    angle = rng.uniform(0, np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    scale = rng.uniform(0.7, 1.4)
    base, other = _palette(kind, rng)
    noise = _smooth_noise(size, rng, cells=int(rng.integers(3, 7)))
    if kind == "wood":
        cx, cy = rng.uniform(-0.5, 1.5, 2)
        t = (np.sin(np.hypot(xx - cx, yy - cy) * 40 * scale + 3 * noise) + 1) / 2
    elif kind == "tiles":
        n = 4 * scale
        t = ((np.floor(u * n) + np.floor(v * n)) % 2) * 0.8 + 0.2 * noise
        t = np.where((np.abs((u * n) % 1 - 0.5) > 0.45) | (np.abs((v * n) % 1 - 0.5) > 0.45), 1.2, t)
    elif kind == "grass":
        t = np.clip(noise * 0.6 + 0.4 * ((np.sin(v * 90 * scale + 5 * noise) + 1) / 2) ** 3, 0, 1)
    elif kind == "bricks":
        n = 6 * scale
        row = np.floor(yy * n)
        shifted = xx * n / 2 + 0.5 * (row % 2)
        mortar = (np.abs((yy * n) % 1 - 0.5) > 0.42) | (np.abs(shifted % 1 - 0.5) > 0.46)
        t = np.where(mortar, 1.3, 0.15 * noise)
    elif kind == "stripes":
        t = (np.sin(u * 2 * np.pi * 5 * scale) > 0).astype(np.float64) * 0.9 + 0.1 * noise
    elif kind == "sky":
        t = np.clip((noise - 0.45) * 2.5, 0, 1) * (1 - 0.5 * yy)
    elif kind == "water":
        t = (np.sin(v * 30 * scale + 4 * noise) * np.sin(u * 7 * scale) + 1) / 2
    elif kind == "sand":
        t = 0.6 * noise + 0.4 * _smooth_noise(size, rng, cells=size // 4)
    else:
        raise ValueError(f"unknown background {kind!r}")
    t = np.clip(t, 0, 1.3)[..., None]
    image = base * (1 - np.minimum(t, 1)) + other * np.minimum(t, 1)
    image = np.where(t > 1.0, np.asarray((200, 200, 195)), image)  # mortar and grout lines
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


PALETTES = {
    "wood": ((150, 95, 50), (95, 55, 25)), "tiles": ((225, 225, 215), (60, 90, 140)),
    "grass": ((70, 140, 50), (150, 200, 80)), "bricks": ((170, 70, 50), (120, 45, 35)),
    "stripes": ((230, 230, 230), (90, 60, 130)), "sky": ((110, 160, 225), (250, 250, 250)),
    "water": ((30, 90, 150), (110, 180, 210)), "sand": ((220, 195, 140), (190, 160, 105)),
}  # fmt: skip


def _palette(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The kind's two colours, jittered: random but still recognisably that background."""
    jitter = lambda c: np.clip(np.asarray(c, np.float64) + rng.normal(0, 18, 3), 0, 255)
    a, b = PALETTES[kind]
    return jitter(a), jitter(b)


def _smooth_noise(size: int, rng: np.random.Generator, cells: int) -> np.ndarray:
    """Value noise in [0, 1]: a cells x cells grid of random values, bicubically enlarged."""
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    image = Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC)
    return np.clip(np.asarray(image, np.float64), 0, 1)
