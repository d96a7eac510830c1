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
