"""`pip install clipaway-jax` runs the main job: the built wheel carries the shipped mini model and the
vocabularies, and a fresh venv with the wheel alone (no extras: no torch, no transformers) removes an
object from a mini scene. (pip resolves the base dependencies from its cache or the registry.)"""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel, built from a copy of the sources (a build writes build/ and *.egg-info beside them)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "clipaway_jax", src / "clipaway_jax", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src), "-w",
                    str(tmp / "dist")], check=True, capture_output=True)  # fmt: skip
    return next((tmp / "dist").glob("clipaway_jax-*.whl"))


def test_the_wheel_carries_the_shipped_model_and_the_vocabularies(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assets = ROOT / "clipaway_jax" / "assets"
    expected = {str(p.relative_to(ROOT)) for p in assets.rglob("*") if p.is_file()}
    assert {"clipaway_jax/assets/mini/manifest.json", "clipaway_jax/assets/mini/tokenizer/merges.txt",
            "clipaway_jax/assets/vocab/objects.txt"} <= expected  # fmt: skip
    assert expected - names == set(), "every shipped file is in the wheel"


def test_a_venv_with_the_wheel_alone_removes_an_object(wheel, tmp_path):
    from clipaway_jax.mini.shipped import test_scenes

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python, env = venv / "bin" / "python", {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    # --no-compile: byte-compiling all of jax at install took half the install (40 -> 19 s); the few modules
    # a command imports compile when first imported
    install = subprocess.run([python, "-m", "pip", "install", "-q", "--no-compile", str(wheel)], env=env,
                             capture_output=True, text=True)  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    extras = ("torch", "transformers", "diffusers", "tensorflow_datasets", "gradio", "cv2")
    probe = f"import importlib.util as u; print([n for n in {extras!r} if u.find_spec(n)])"
    found = subprocess.run([python, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    assert found.strip() == "[]", f"came with the base install: {found}"

    _, scene = test_scenes(1)[0]
    Image.fromarray(scene.image).save(tmp_path / "scene.png")
    Image.fromarray(scene.mask).save(tmp_path / "mask.png")
    command = [venv / "bin" / "clipaway-jax", "remove", tmp_path / "scene.png", tmp_path / "mask.png", "-o",
               tmp_path / "out.png"]  # fmt: skip
    run = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "using the shipped mini model" in run.stdout and str(venv) in run.stdout
    out = np.asarray(Image.open(tmp_path / "out.png"))
    inside = scene.mask > 127
    assert out.shape == scene.image.shape and np.abs(out.astype(float) - scene.image)[inside].mean() > 10

    app = subprocess.run([venv / "bin" / "clipaway-jax", "app"], env=env, capture_output=True, text=True)
    assert app.returncode == 1 and "pip install 'clipaway-jax[app]'" in app.stderr + app.stdout
