"""Preprocessing equals the original CLIPAway's, level for level: Pillow's 8-bit resize (reproduced in
JAX), torchvision's Resize/CenterCrop geometry, and the CLI's 512x512 squash of the input files."""

import jax
import numpy as np
import pytest
import torch
from fixtures import alpha_clip_reference, numpy_state, original_alpha_clip_inputs
from PIL import Image

from clipaway_jax.convert.networks import alpha_clip_config, convert_alpha_clip
from clipaway_jax.models import CLIPVisionTransformer, focused_embeddings
from clipaway_jax.pipelines.run import prepare
from clipaway_jax.preprocess import CLIP_MEAN, CLIP_STD, alpha_clip_inputs
from clipaway_jax.resample import resize_uint8, torchvision_resize_size, vertical_first

FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS}


def _hard_edged_image(h, w, seed=0, channels=3):
    """Noise plus saturated bars: the bicubic overshoot that Pillow clips between its passes."""
    image = np.random.RandomState(seed).randint(0, 256, (h, w, channels), np.uint8)
    image[h // 3 : h // 2] = 255
    image[:, w // 4 : w // 3] = 0
    return image


@pytest.mark.parametrize(
    "source, size",
    [
        ((512, 512), (224, 224)),  # CLIPAway's 512 squash -> AlphaCLIP @224
        ((512, 512), (336, 336)),  # -> @336
        ((480, 640), (224, 298)),  # landscape, shorter side 224
        ((640, 480), (298, 224)),  # portrait
        ((17, 23), (56, 77)),  # upscaling
        ((64, 80), (56, 70)),  # mild downscaling
        ((1000, 333), (224, 672)),  # height shrinks, width grows: Pillow 13 runs the vertical pass first
        ((300, 100), (80, 90)),  # both shrink, the height much more: vertical first too
        ((100, 100), (50, 60)),  # both shrink about equally: horizontal first
        ((7, 9), (20, 3)),
    ],
)
@pytest.mark.parametrize("method", sorted(FILTERS))
def test_resize_equals_pillow_exactly(source, size, method):
    image = _hard_edged_image(*source)
    expected = np.asarray(Image.fromarray(image).resize(size[::-1], FILTERS[method]))
    out = np.asarray(jax.jit(resize_uint8, static_argnums=(1, 2))(image[None], size, method))[0]
    assert out.shape == expected.shape
    assert np.array_equal(out, expected), f"max level difference {np.abs(out - expected.astype(int)).max()}"


def test_pass_order_follows_the_installed_pillow():
    image = Image.fromarray(_hard_edged_image(1000, 333))
    by_pillow = np.asarray(image.resize((672, 224), Image.BICUBIC))
    vertical = np.asarray(image.resize((333, 224), Image.BICUBIC).resize((672, 224), Image.BICUBIC))
    assert np.array_equal(by_pillow, vertical) == vertical_first((1000, 333), (224, 672))
    assert not vertical_first((1000, 333), (224, 672), new_rule=False)  # Pillow < 13: always horizontal first


def test_long_side_is_truncated_as_torchvision():
    assert torchvision_resize_size(480, 640, 224) == (224, 298)  # 298.67 -> 298, not 299
    assert torchvision_resize_size(640, 480, 224) == (298, 224)
    assert torchvision_resize_size(512, 512, 224) == (224, 224)


@pytest.mark.parametrize("shape", [(512, 512), (64, 80), (80, 64), (20, 20), (37, 100)])
def test_alpha_inputs_match_pil_bicubic_and_clip_normalization(shape):
    """0 levels of 255 after the resize and crop; the normalized floats agree to float32 rounding."""
    size = 56
    image = _hard_edged_image(*shape, seed=1)
    mask = Image.fromarray(np.zeros(shape, np.uint8))
    expected, _, expected_u8 = original_alpha_clip_inputs(Image.fromarray(image), mask, size)
    pixels, _ = alpha_clip_inputs(image[None].astype(np.float32) / 255.0, np.zeros((1, *shape)), size)
    levels = np.asarray(pixels)[0] * np.asarray(CLIP_STD) + np.asarray(CLIP_MEAN)
    assert np.array_equal(np.round(levels * 255).astype(np.uint8), expected_u8)
    np.testing.assert_allclose(np.asarray(pixels)[0], expected[0].permute(1, 2, 0).numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("side", [512, 100, 20])
def test_alpha_equals_the_original_mask_transform_for_square_inputs(side):
    mask = np.zeros((side, side), np.uint8)
    mask[side // 5 : side // 2, side // 3 : side - 2] = 255
    _, expected, _ = original_alpha_clip_inputs(Image.new("RGB", (side, side)), Image.fromarray(mask), 28)
    _, alpha = alpha_clip_inputs(np.zeros((1, side, side, 3), np.float32), mask[None] / 255.0, 28)
    np.testing.assert_allclose(np.asarray(alpha)[0, ..., 0], expected[0, 0].numpy(), rtol=0, atol=1e-5)


TINY, FULL = dict(resolution=28), dict(width=1024, layers=24, output_dim=768, resolution=224, scale=0.02)


@pytest.mark.parametrize(
    "side, tower", [(512, TINY), (100, TINY), (20, TINY), pytest.param(512, FULL, marks=pytest.mark.slow)]
)
def test_focused_embeddings_equal_the_original_code_path(side, tower):
    """e_f / e_b from 8-bit files: our compiled path vs the torch AlphaCLIP fed the original's transforms."""
    reference = alpha_clip_reference(**tower)
    size = tower["resolution"]
    state = numpy_state(reference)
    config = alpha_clip_config(state)
    params = {"params": convert_alpha_clip(state, config)}
    image = _hard_edged_image(side, side, seed=2)
    mask = np.zeros((side, side), np.uint8)
    mask[side // 4 : 3 * side // 4, side // 5 : side // 2] = 255
    embeds = []
    for alpha_mask in (mask, 255 - mask):
        pixels, alpha, _ = original_alpha_clip_inputs(Image.fromarray(image), Image.fromarray(alpha_mask), size)
        with torch.no_grad():
            embeds.append(reference(pixels, alpha).numpy())
    e_f, e_b = jax.jit(focused_embeddings, static_argnums=0)(
        CLIPVisionTransformer(config), params, image[None] / 255.0, mask[None] / 255.0
    )
    for ours, theirs, name in ((e_f, embeds[0], "e_f"), (e_b, embeds[1], "e_b")):
        err = np.abs(np.asarray(ours) - theirs).max() / np.abs(theirs).max()
        print(f"{side}px -> @{size} {name}: max abs error {err:.2e} of scale")
        assert err <= 1e-5, f"{name}: {err:.2e} of scale"


def test_cli_squash_equals_the_original_dataset_resize(tmp_path):
    """CLIPAway's TestDataset: image `.convert("RGB").resize((512, 512))`; mask `.convert("L")
    .resize((512, 512), NEAREST)`, ToTensor, round. A mask of another size goes to 512 directly."""
    image = _hard_edged_image(300, 420, seed=3)
    mask = np.zeros((150, 210), np.uint8)
    mask[40:90, 60:170] = 200
    mask[100:110, 10:20] = 100  # below 0.5: dropped by the round
    Image.fromarray(image).save(tmp_path / "image.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    prepared = prepare(tmp_path / "image.png", tmp_path / "mask.png", (512, 512), keep_aspect=False)
    expected_image = np.asarray(Image.open(tmp_path / "image.png").convert("RGB").resize((512, 512)))
    expected_mask = np.asarray(Image.open(tmp_path / "mask.png").convert("L").resize((512, 512), Image.NEAREST))
    assert np.array_equal(np.round(prepared.image * 255).astype(np.uint8), expected_image)
    assert np.array_equal(prepared.mask, np.round(expected_mask / 255.0))
