"""`clipaway-jax remove`: options, per-image determinism, compile reuse, and every bad input."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipaway_jax.cli import main as cli_main
from clipaway_jax.pipelines.clipaway import CLIPAwayPipeline, RemovalOptions
from clipaway_jax.pipelines.images import apply_fit, plan_fit, undo_fit

# The session's compilation cache (tests/conftest.py): a private one here would also become the worker's
# cache for every later test file (the flag sets JAX's process-wide cache directory).
FAST = ["--steps", "3", "--cache-dir", os.environ["JAX_COMPILATION_CACHE_DIR"]]


@pytest.fixture(scope="module")
def pipe(tiny_checkpoint):
    return CLIPAwayPipeline.from_checkpoint(tiny_checkpoint)


def _save(path, array, mode=None):
    Image.fromarray(array, mode).save(path)
    return path


@pytest.fixture
def pair(tmp_path):
    rng = np.random.RandomState(0)
    image = _save(tmp_path / "photo.png", rng.randint(0, 256, (96, 160, 3), np.uint8))
    mask = np.zeros((96, 160), np.uint8)
    mask[20:60, 50:110] = 255
    return image, _save(tmp_path / "mask.png", mask)


def _remove(capsys, *args):
    code = cli_main(["remove", *map(str, args), *FAST])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_remove_writes_output_grid_and_embeddings(tiny_checkpoint, pair, tmp_path, capsys):
    image, mask = pair
    out = tmp_path / "clean.png"
    code, text = _remove(capsys, image, mask, "-o", out, "--checkpoint", tiny_checkpoint, "--grid", "--show-embeddings")
    assert code == 0, text
    assert Image.open(out).size == (160, 96)
    assert Image.open(tmp_path / "clean.grid.png").size[0] > 3 * 160
    assert Image.open(tmp_path / "clean.embeddings.png").size[0] > 6 * 160
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_keep_aspect_round_trip_is_exact():
    image = np.random.RandomState(0).rand(64, 128, 3).astype(np.float32)
    fit = plan_fit((64, 128), (128, 128), keep_aspect=True)
    assert fit.content == (32, 0, 64, 128)
    padded = apply_fit(image, fit, Image.BICUBIC)
    assert padded.shape == (128, 128, 3) and not padded[:32].any()
    np.testing.assert_array_equal(undo_fit(padded, fit), image)


def test_sizes_are_multiples_of_the_vae_factor_as_diffusers():
    import argparse

    from clipaway_jax.commands.pipeline_args import parse_size

    assert parse_size("72x88") == (72, 88) and parse_size("32") == (32, 32)  # a sample_size-4 model's default
    with pytest.raises(argparse.ArgumentTypeError, match="multiples of 8"):
        parse_size("70")
    assert plan_fit((100, 70), None, keep_aspect=False).size == (96, 64)  # rounded down, as diffusers


def test_remove_at_a_size_not_divisible_by_64(tiny_checkpoint, pair, tmp_path, capsys):
    image, mask = pair
    out = tmp_path / "odd.png"
    code, text = _remove(capsys, image, mask, "-o", out, "--checkpoint", tiny_checkpoint, "--size", "72x88")
    assert code == 0, text
    assert Image.open(out).size == Image.open(image).size


def test_keep_aspect_output_has_input_size(tiny_checkpoint, pair, tmp_path, capsys):
    image, mask = pair
    out = tmp_path / "aspect.png"
    code, text = _remove(capsys, image, mask, "-o", out, "--checkpoint", tiny_checkpoint, "--keep-aspect")
    assert code == 0, text
    assert Image.open(out).size == (160, 96)


def _batch_of_three():
    rng = np.random.RandomState(1)
    images = rng.rand(3, 128, 128, 3).astype(np.float32)
    masks = np.zeros((3, 128, 128), np.float32)
    masks[:, 30:90, 40:100] = 1
    return images, masks


# Slow: `infer` checks the same in the default run with the sampling noise and the VAE posterior's draw
# (tests/test_infer.py: one image per step against eight per step on eight devices, and two processes).
@pytest.mark.slow
def test_result_does_not_depend_on_batch_composition(pipe):
    images, masks = _batch_of_three()
    options = RemovalOptions(steps=2)
    alone = pipe.remove(images[1:2], masks[1:2], names=["b"], options=options)
    together = pipe.remove(images, masks, names=["a", "b", "c"], options=options)
    # same noise and same math; XLA may block a batch-3 GEMM differently from batch 1 (~1e-5, far below 1/255)
    np.testing.assert_allclose(together[1], alone[0], atol=1e-4)


def test_another_seed_gives_another_result(pipe):
    images, masks = _batch_of_three()
    options = RemovalOptions(steps=2)
    first = pipe.remove(images[1:2], masks[1:2], names=["b"], options=options)
    np.testing.assert_array_equal(pipe.remove(images[1:2], masks[1:2], names=["b"], options=options), first)
    other_seed = pipe.remove(images[1:2], masks[1:2], names=["b"], options=options, seed=1)
    assert np.abs(other_seed - first).max() > 1e-3


def test_compiled_once_per_shape(pipe):
    options = RemovalOptions(steps=2)  # the seed test's options: its batch-1 program may be there already
    images, masks = np.zeros((1, 128, 128, 3), np.float32), np.ones((1, 128, 128), np.float32)
    pipe.remove(images, masks, options=options)
    pipe.remove(images + 0.5, masks, options=options, guidance_scale=3.0, ip_scale=0.5)
    batch_one = [key for key in pipe._compiled if key[0] == options and key[1][0][0] == images.shape]
    assert len(batch_one) == 1, batch_one


def test_a_new_pipeline_reuses_the_executable_on_disk_without_tracing(tiny_checkpoint, monkeypatch, caplog):
    import jax

    from clipaway_jax.pipelines import executables

    options = RemovalOptions(steps=2)  # the seed test's: its program may be on disk already, which is the point
    images, masks = np.full((1, 128, 128, 3), 0.3, np.float32), np.ones((1, 128, 128), np.float32)
    first = CLIPAwayPipeline.from_checkpoint(tiny_checkpoint).remove(images, masks, options=options)
    folder = executables.cache_folder()
    assert folder == Path(jax.config.jax_compilation_cache_dir) / "clipaway-executables"
    fresh = CLIPAwayPipeline.from_checkpoint(tiny_checkpoint)
    monkeypatch.setattr(fresh, "program", lambda _: pytest.fail("traced although the executable was on disk"))
    np.testing.assert_array_equal(fresh.remove(images, masks, options=options), first)
    for entry in folder.glob("*.pkl"):  # torn entries are rebuilt, with a warning
        entry.write_bytes(b"torn")
    monkeypatch.undo()
    again = CLIPAwayPipeline.from_checkpoint(tiny_checkpoint).remove(images, masks, options=options)
    np.testing.assert_array_equal(again, first)
    assert "recompiling" in caplog.text


def test_a_program_from_jax_own_cache_is_not_stored(tiny_checkpoint):
    """JAX's cache-loaded executables serialize without their code; storing one would break the next run."""
    from clipaway_jax.pipelines import executables

    options = RemovalOptions(steps=2)  # one program for this file's pipeline tests (compiles count, not steps)
    images, masks = np.full((1, 128, 128, 3), 0.6, np.float32), np.ones((1, 128, 128), np.float32)
    first = CLIPAwayPipeline.from_checkpoint(tiny_checkpoint).remove(images, masks, options=options)
    for entry in executables.cache_folder().glob("*.pkl"):
        entry.unlink()  # JAX's cache still holds the program
    second = CLIPAwayPipeline.from_checkpoint(tiny_checkpoint).remove(images, masks, options=options)
    assert not list(executables.cache_folder().glob("*.pkl"))
    np.testing.assert_array_equal(second, first)


def test_empty_mask_returns_the_input(tiny_checkpoint, pair, tmp_path, capsys):
    image, _ = pair
    empty = _save(tmp_path / "empty.png", np.zeros((96, 160), np.uint8))
    out = tmp_path / "same.png"
    code, text = _remove(capsys, image, empty, "-o", out, "--checkpoint", tiny_checkpoint)
    assert code == 0 and "mask is empty" in text
    np.testing.assert_array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(image)))


def test_full_mask_is_allowed(tiny_checkpoint, pair, tmp_path, capsys):
    image, _ = pair
    full = _save(tmp_path / "full.png", np.full((96, 160), 255, np.uint8))
    code, text = _remove(capsys, image, full, "-o", tmp_path / "o.png", "--checkpoint", tiny_checkpoint)
    assert code == 0, text


def test_mask_of_another_size_and_non_binary_is_fixed_with_notes(tiny_checkpoint, pair, tmp_path, capsys):
    image, _ = pair
    soft = np.zeros((48, 80), np.uint8)
    soft[10:30, 25:55] = 200
    soft[30:35, 25:55] = 90
    mask = _save(tmp_path / "soft.png", soft)
    code, text = _remove(capsys, image, mask, "-o", tmp_path / "o.png", "--checkpoint", tiny_checkpoint)
    assert code == 0, text
    assert "resized to the image's 160x96" in text and "binarized at 0.5" in text


def test_alpha_and_grayscale_images_are_converted(tiny_checkpoint, pair, tmp_path, capsys):
    _, mask = pair
    rgba = _save(tmp_path / "rgba.png", np.random.RandomState(2).randint(0, 256, (96, 160, 4), np.uint8))
    gray = _save(tmp_path / "gray.png", np.random.RandomState(3).randint(0, 256, (96, 160), np.uint8))
    for source in (rgba, gray):
        out = tmp_path / f"{source.stem}.out.png"
        code, text = _remove(capsys, source, mask, "-o", out, "--checkpoint", tiny_checkpoint)
        assert code == 0, text
        assert Image.open(out).mode == "RGB"


def test_corrupt_image_is_one_clear_line(tiny_checkpoint, pair, tmp_path, capsys):
    _, mask = pair
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    code, text = _remove(capsys, bad, mask, "-o", tmp_path / "o.png", "--checkpoint", tiny_checkpoint)
    assert code == 1 and text.strip().count("\n") == 0
    assert text.startswith("clipaway-jax: error:") and "broken.jpg: not a readable image" in text


def test_existing_output_is_refused_without_overwrite(tiny_checkpoint, pair, tmp_path, capsys):
    image, mask = pair
    out = _save(tmp_path / "exists.png", np.zeros((4, 4, 3), np.uint8))
    code, text = _remove(capsys, image, mask, "-o", out, "--checkpoint", tiny_checkpoint)
    assert code == 1 and "already exists" in text
    assert Image.open(out).size == (4, 4)
    code, text = _remove(capsys, image, mask, "-o", out, "--checkpoint", tiny_checkpoint, "--overwrite")
    assert code == 0 and Image.open(out).size == (160, 96)


def test_output_onto_an_input_is_refused(tiny_checkpoint, pair, capsys):
    image, mask = pair
    before = mask.read_bytes()
    code, text = _remove(capsys, image, mask, "-o", mask, "--checkpoint", tiny_checkpoint, "--overwrite")
    assert code == 1 and "would overwrite an input" in text and mask.read_bytes() == before


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    from clipaway_jax.pipelines import images as images_module

    def explode(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(images_module.Image.Image, "save", explode)
    with pytest.raises(OSError):
        images_module.write_png_atomic(tmp_path / "out.png", np.zeros((4, 4, 3), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_remove_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        cli_main(["remove", "--help"])
    assert "examples:" in capsys.readouterr().out


def test_demo_runs_on_the_tiny_model_set(tmp_path, capsys):
    """`make demo`'s command: build the tiny set through convert, remove from the shipped samples, write a grid."""
    assert cli_main(["demo", "--tiny", "--out", str(tmp_path), "--steps", "2", "--cache-dir", ""]) == 0
    assert (tmp_path / "grid.png").is_file() and len(list(tmp_path.glob("*_on_*.png"))) == 3
    assert "random weights" in capsys.readouterr().out
