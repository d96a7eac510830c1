"""The mini world's scenes: deterministic, exact ground truth, every mask-area bucket, and a tfds data set
that the project's readers take."""

import numpy as np
import pytest

from clipaway_jax.mini import scenes
from clipaway_jax.mini.scenes import render


@pytest.fixture(scope="module")
def many():
    return [render(0, i, 64) for i in range(400)]


def free_of(objects) -> np.ndarray:
    """The pixels no object covers at all, at 64 px."""
    return np.prod([1 - scenes._layer(o, 64) for o in objects], axis=0) == 1


def test_a_scene_is_a_function_of_seed_and_index():
    a, b, c = render(3, 17), render(3, 17), render(4, 17)
    for field in ("image", "mask", "background"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.caption == b.caption and not np.array_equal(a.image, c.image)


def test_ground_truth_differs_from_the_image_exactly_under_the_target(many):
    """The mask covers every pixel the target shows in (anti-aliased edge included): outside it the image
    and its ground truth are identical, inside they differ (but where the colours happen to agree)."""
    shown = []
    for scene in many:
        changed = np.any(scene.image != scene.background, axis=-1)
        assert not (changed & (scene.mask == 0)).any(), scene.caption
        shown.append(changed[scene.mask > 0].mean())
    assert np.median(shown) > 0.9  # a target over a same-coloured look-alike changes nothing where they overlap


def test_under_target_is_the_share_of_the_hole_where_the_ground_truth_shows_an_object(many):
    """Objects are flat-coloured: where one lies under the target, the ground truth shows its exact colour."""
    others = lambda scene: [o for o in scene.objects if o is not scene.target]
    colour_of = lambda scene, o: np.all(scene.background == scenes.COLOURS[o.colour], axis=-1)
    flat = lambda scene: np.any([scene.mask < 0, *(colour_of(scene, o) for o in others(scene))], axis=0)
    shares = [(scene.under_target, flat(scene)[scene.mask >= 128].mean()) for scene in many]
    assert all(0 <= under <= 1 for under, _ in shares)
    assert all(under == 0 for under, _ in (x for x, scene in zip(shares, many) if scene.objects[0] is scene.target))
    bare, covered = [f for u, f in shares if u == 0], [(u, f) for u, f in shares if u >= 0.5]
    assert max(bare) == 0 and len(covered) > 10  # nothing under the target: no flat colour in the hole
    assert all(f >= 0.5 * u for u, f in covered), covered  # (anti-aliased edges are not the flat colour)


def test_texture_is_the_background_where_no_object_lies(many):
    """`Scene.texture` is the scene's own background texture: the image shows it wherever no object covers
    it, and in the ground truth wherever no other object does (the target's hole included)."""
    for scene in many[:50]:
        assert scene.texture.shape == scene.image.shape and scene.texture.dtype == np.uint8
        free = free_of(scene.objects)
        np.testing.assert_array_equal(scene.texture[free], scene.image[free])
        others = free_of([o for o in scene.objects if o is not scene.target])
        np.testing.assert_array_equal(scene.texture[others], scene.background[others])
        assert (others & (scene.mask == 255)).any()


def test_the_objects_map_marks_each_object_where_it_shows(many):
    """`objects_map` is the scene's segmentation: 0 exactly where only the texture shows, else 1 + the index of
    the object most visible there; the target's pixels are mostly its own (it shows in every one of them)."""
    for scene in many[:50]:
        assert scene.objects_map.dtype == np.uint8 and scene.objects_map.shape == scene.mask.shape
        np.testing.assert_array_equal(scene.objects_map == 0, free_of(scene.objects))
        assert set(np.unique(scene.objects_map)) <= set(range(len(scene.objects) + 1))
        target = 1 + next(i for i, o in enumerate(scene.objects) if o is scene.target)
        assert (scene.objects_map[scene.mask == 255] == target).mean() > 0.9
        colour = scenes.COLOURS[scene.target.colour]  # where the map says target, it shows its flat colour
        assert np.all(scene.image[scene.objects_map == target] == colour, axis=-1).mean() > 0.6  # (but its soft edge)


def test_every_mask_area_bucket_is_populated(many):
    areas = np.array([s.area for s in many])
    for low, high in ((0.01, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4)):
        assert ((areas >= low) & (areas < high)).sum() >= 15, (low, high)


def test_the_world_has_its_variety(many):
    assert {s.background_kind for s in many} == set(scenes.BACKGROUNDS)
    assert {s.target.shape for s in many} == set(scenes.SHAPES) and len(scenes.SHAPES) >= 6
    assert len({s.target.colour for s in many}) >= 8
    assert {len(s.objects) for s in many} == {1, 2, 3, 4}
    assert 0.03 < np.mean([s.lookalike for s in many]) < 0.5  # DCGD's repeated-object case


def test_captions_and_box_describe_the_target():
    scene = render(0, 5)
    assert scene.caption in scene.scene_caption and scene.scene_caption.endswith(f"on {scene.background_kind}")
    article = "an" if scene.target.colour[0] in "aeiou" else "a"
    assert scene.caption == f"{article} {scene.target.colour} {scene.target.shape}"
    x, y, w, h = scene.box
    ys, xs = np.nonzero(scene.mask)
    assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max())


def test_tfds_data_set_round_trips_and_infer_reads_it(tmp_path):
    import io

    import tensorflow_datasets as tfds
    from PIL import Image

    from clipaway_jax.batch.sources import from_tfds
    from clipaway_jax.mini.dataset import build

    build(tmp_path, seed=1, size=32, splits={"train": 6, "validation": 2, "test": 3})
    test = tfds.data_source("mini_scenes", split="test", data_dir=str(tmp_path))
    record = test[1]
    scene = render(1, 6 + 2 + 1, 32)  # test indices follow train and validation
    decode = lambda data: np.asarray(Image.open(io.BytesIO(data)))
    np.testing.assert_array_equal(decode(record["background"]), scene.background)
    assert record["caption"] == scene.caption.encode() and int(record["index"]) == 9  # text comes back as bytes
    listing = from_tfds("mini_scenes:test", str(tmp_path))
    image, mask = listing.items[1].load()
    assert image.shape == (32, 32, 3) and np.array_equal(mask > 0.5, scene.mask > 0)
    with pytest.raises(ValueError, match="already holds mini_scenes with seed 1"):
        build(tmp_path, seed=2, size=32, splits={"train": 6, "validation": 2, "test": 3})


def test_data_scenes_command_writes_splits_and_a_preview(tmp_path, capsys):
    from clipaway_jax.cli import main

    code = main(["data", "scenes", "--out", str(tmp_path), "--train", "4", "--validation", "2", "--test", "2"])
    assert code == 0
    assert (tmp_path / "preview.png").is_file() and "train 4, validation 2, test 2" in capsys.readouterr().out
