"""What a person has at hand without any model, as rows of the mini world's table: OpenCV's inpainting
(`cv2.inpaint`, Telea and Navier-Stokes, radius 3), a flat fill with the mean colour of a ring around the
mask, and leaving the object in. Each fills the object's mask as given, as a user would call
`cv2.inpaint` (the pipeline's own dilation would cost Telea 1.2 dB: 17.3 -> 16.1 dB inside the mask on
the first 64 validation scenes), and writes its results as `infer` names them, so that `eval` scores
them like any method.

OpenCV comes from the optional `baselines` extra (opencv-python-headless); the library never imports it
otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSICAL = ("OpenCV Telea", "OpenCV NS", "flat fill (ring mean)", "do nothing")
INPAINT_RADIUS = 3
RING = 3  # px around the (dilated) mask whose mean colour the flat fill uses


def dilated(mask: np.ndarray, kernel: int, iterations: int) -> np.ndarray:
    """The pipeline's dilation (cv2.dilate with ones(kernel, kernel)), of a binary mask [H, W]."""
    from scipy.ndimage import binary_dilation

    grown = mask >= 0.5
    structure = np.ones((kernel, kernel), bool)
    for _ in range(iterations):
        grown = binary_dilation(grown, structure)
    return grown


def fill(method: str, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """image [H, W, 3] uint8, mask [H, W] bool (what to fill) -> the filled image, uint8."""
    if method == "do nothing":
        return image.copy()
    if method == "flat fill (ring mean)":
        return flat_fill(image, mask)
    try:
        import cv2
    except ImportError:
        raise ImportError("the OpenCV baselines need opencv-python-headless: pip install "
                          "'clipaway-jax[baselines]'") from None  # fmt: skip
    flag = {"OpenCV Telea": cv2.INPAINT_TELEA, "OpenCV NS": cv2.INPAINT_NS}[method]
    return cv2.inpaint(np.ascontiguousarray(image), mask.astype(np.uint8) * 255, INPAINT_RADIUS, flag)


def flat_fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    ring = dilated(mask.astype(np.float32), 2 * RING + 1, 1) & ~mask
    colour = image[ring].mean(axis=0) if ring.any() else image[~mask].mean(axis=0)
    out = image.copy()
    out[mask] = np.round(colour).astype(np.uint8)
    return out


def write_results(method: str, source, out: Path, count: int, kernel: int = 5, iterations: int = 0,
                  image_key: str = "image") -> Path:  # fmt: skip
    """OUT/<index:08d>.png for the first `count` examples of a mini_scenes source (as `infer --tfds`
    names them), the mask grown `iterations` times (none by default); a result already there is kept."""
    from PIL import Image

    from clipaway_jax.atomic import write_atomic
    from clipaway_jax.mini.batches import decode

    out.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        path = out / f"{index:08d}.png"
        if path.is_file():
            continue
        example = source[index]
        image, mask = decode(example[image_key]), decode(example["mask"], "L") / 255.0
        result = Image.fromarray(fill(method, image, dilated(mask, kernel, iterations)))
        write_atomic(path, lambda f, r=result: r.save(f, format="PNG"))
    return out
