"""The mini table's "removed" columns (clipaway_jax/mini/evaluate.py): which records have nothing under the
target, and the shares over all the results and over those records, in the data set's record order."""

import numpy as np
from PIL import Image

from clipaway_jax.mini.dataset import build
from clipaway_jax.mini.evaluate import bare_targets, removed_shares, source_of
from clipaway_jax.mini.scenes import render


def test_removed_is_counted_over_the_results_present_and_over_the_bare_records(tmp_path):
    build(tmp_path / "data", seed=1, size=32, splits={"train": 2, "validation": 30, "test": 2})
    source = source_of(tmp_path / "data", "validation")
    bare = bare_targets(source, 30)
    expected = [render(1, int(source[i]["index"]), 32).under_target == 0 for i in range(30)]
    assert bare.tolist() == expected and 0 < bare.sum() < 30  # the seed and size come from the data set
    folder = tmp_path / "results"
    folder.mkdir()
    painted = np.arange(30) % 3 == 0  # results written white (painted in) or black (removed); #7 missing
    for i in range(30):
        if i != 7:
            Image.fromarray(np.full((32, 32, 3), 255 if painted[i] else 0, np.uint8)).save(folder / f"{i:08d}.png")
    measure = lambda images, masks: images.mean(axis=(1, 2, 3)) > 0.5
    shares = removed_shares(measure, folder, source, bare)
    present = np.arange(30) != 7
    assert np.isclose(shares["removed"], 100 * (~painted[present]).mean())
    assert np.isclose(shares["removed_bare"], 100 * (~painted[present & bare]).mean())


def test_the_table_splits_the_fill_by_what_lies_under_the_target():
    """`by_cover`: PSNR inside the mask and the share beating Telea over the bare records and over the others,
    results missing from either left out; the third table prints them for each row."""
    from clipaway_jax.mini.evaluate import by_cover, tables

    bare = np.array([True, False, True, False, True])
    telea = {f"{i:08d}": 20.0 for i in range(5)}
    fill = {"00000000": 22.0, "00000001": 10.0, "00000002": 18.0, "00000004": 26.0}  # #3 missing
    found = by_cover(fill, telea, bare)
    assert np.isclose(found["psnr_mask_bare"], 22.0) and np.isclose(found["psnr_mask_covering"], 10.0)
    assert np.isclose(found["beats_telea_bare"], 100 * 2 / 3) and found["beats_telea_covering"] == 0.0
    row = {"clipaway_table": {}, "dcgd_table": {"0.01-0.1": {"PSNR": 1.0, "SSIM": 1.0, "MAE": 0.0}}, **found}
    text = tables({"CLIPAway": row}, 5, "validation", bare)
    assert "| method | bare (3 scenes) | covering (2 scenes) |" in text
    assert "| CLIPAway | 22.00 / 66.67 | 10.00 / 0.00 |" in text
