"""The shipped mini model (`clipaway_jax/assets/mini/`): the default checkpoint of every command.

Trained by `make mini` on the mini world's 64x64 procedural scenes; its model card is the folder's
README.md. Commands given no `--checkpoint` use it and say so in one line.
"""

from __future__ import annotations

from pathlib import Path

SHIPPED = Path(__file__).resolve().parent.parent / "assets" / "mini"
TEST_START = 21_000  # the test split's first scene index (after 20k train and 1k validation scenes)


def available() -> bool:
    return (SHIPPED / "manifest.json").is_file()


def checkpoint_or_default(path: str | Path | None, flag: str = "--checkpoint") -> Path:
    if path is not None:
        return Path(path)
    if not available():
        raise FileNotFoundError(f"no {flag} given and the shipped mini model is missing from {SHIPPED} "
                                "(`make mini` rebuilds it)")  # fmt: skip
    print(f"no {flag}: using the shipped mini model {SHIPPED} (64x64 procedural scenes; see its README.md)")
    return SHIPPED


def test_scenes(count: int, seed: int = 0, start: int = TEST_START):
    """The held-out test scenes (the data set's test split, regenerated: no files needed)."""
    from clipaway_jax.mini.scenes import render

    return [(f"scene{start + i:05d}", render(seed, start + i)) for i in range(count)]
