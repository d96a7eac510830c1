"""`clipaway-jax eval` end to end on small results folders: both tables, the outputs, the cache, the
same metrics on 8 devices as on 1, and every bad input (reported, never written to)."""

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from eval_references import fid_inception, lpips_alex
from fixtures import numpy_state
from PIL import Image

from clipaway_jax.cli import main as cli_main
from clipaway_jax.convert.published import Sources, convert
from clipaway_jax.eval import stats

N = 12


@pytest.fixture(scope="module")
def metrics_checkpoint(published, tmp_path_factory):
    """Random metric networks in their published file layouts, converted by `convert`."""
    folder = tmp_path_factory.mktemp("metric-files")
    torch.save({k: torch.from_numpy(v) for k, v in numpy_state(fid_inception()).items()},
               folder / "pt_inception-2015-12-05-6726825d.pth")  # fmt: skip
    lpips = lpips_alex()
    torch.save({k: torch.as_tensor(v) for k, v in lpips.torchvision_state().items()}, folder / "alexnet-owt.pth")
    torch.save({k: torch.from_numpy(v) for k, v in lpips.lin_state().items()}, folder / "alex.pth")
    clip = folder / "clip-vit-base-patch32"
    shutil.copytree(published["clip"], clip)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(published["sd_inpaint"] / "tokenizer" / name, clip / name)  # a CLIP repo carries its tokenizer
    out = tmp_path_factory.mktemp("metrics") / "ckpt"
    sources = Sources(inception=folder / "pt_inception-2015-12-05-6726825d.pth", alexnet=folder / "alexnet-owt.pth",
                      lpips=folder / "alex.pth", eval_clip=clip, cmmd_clip=clip)  # fmt: skip
    convert(sources, out, progress=lambda _: None)
    return out


def _scene(rng, size=64):
    yy, xx = np.mgrid[:size, :size] / size
    phase = rng.rand(3) * 6
    waves = [np.sin(5 * xx + phase[0]), np.cos(4 * yy + phase[1]), np.sin(3 * (xx + yy) + phase[2])]
    image = 0.5 + 0.4 * np.stack(waves, -1)
    return np.clip(image + 0.03 * rng.randn(size, size, 3), 0, 1)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """images/, masks/, gt/ and results/ (an infer-style folder with results.jsonl) for N scenes whose
    masks cover 2% to 38% of the image, so every DCGD bucket is populated."""
    root = tmp_path_factory.mktemp("eval-run")
    rng = np.random.RandomState(0)
    for sub in ("images", "masks", "gt", "results"):
        (root / sub).mkdir()
    records = []
    for i in range(N):
        truth = _scene(rng)
        image = truth.copy()
        side = int(64 * np.sqrt(0.02 + 0.36 * i / (N - 1)))
        y, x = rng.randint(0, 64 - side + 1, 2)
        image[y : y + side, x : x + side] = rng.rand(3)  # the object
        mask = np.zeros((64, 64), np.uint8)
        mask[y : y + side, x : x + side] = 255
        result = truth.copy()
        noise = 0.1 * rng.randn(side, side, 3)
        result[y : y + side, x : x + side] = np.clip(truth[y : y + side, x : x + side] + noise, 0, 1)
        name = f"scene{i:02d}"
        save = lambda a, p: Image.fromarray(np.round(np.asarray(a) * 255).astype(np.uint8)).save(p)
        save(image, root / "images" / f"{name}.png")
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
        save(truth, root / "gt" / f"{name}.png")
        save(result, root / "results" / f"{name}.png")
        records.append({"name": name, "status": "done", "output": str(root / "results" / f"{name}.png"),
                        "base": "blended"})  # fmt: skip
    (root / "results" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def _eval(root, metrics, out, *extra, capsys=None):
    args = ["eval", "--results", root / "results", "--images", root / "images", "--masks", root / "masks",
            "--ground-truth", root / "gt", "--metrics", metrics, "--out", out, "--kid-subset-size", "6",
            "--kid-subsets", "4", *extra]  # fmt: skip
    if isinstance(capsys, _Capture):
        with capsys:
            code = cli_main([str(a) for a in args])
        capsys._result = argparse.Namespace(out=capsys._out.getvalue(), err=capsys._err.getvalue())
        return code, capsys._result
    code = cli_main([str(a) for a in args])
    return code, capsys.readouterr() if capsys else None


def _tree_digest(folder):
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def evaluated(run_folder, metrics_checkpoint, tmp_path_factory):
    """One 1-device run, shared: (output folder, captured stdout/stderr, input digest before the run)."""
    out = tmp_path_factory.mktemp("evaluated") / "out"
    before = _tree_digest(run_folder)
    code, captured = _eval(run_folder, metrics_checkpoint, out, capsys=_Capture())
    assert code == 0, captured.err
    return out, captured, before


class _Capture:
    """capsys for a module fixture: redirect stdout/stderr around one call."""

    def readouterr(self):
        return self._result

    def __enter__(self):
        import contextlib
        import io

        self._out, self._err = io.StringIO(), io.StringIO()
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(contextlib.redirect_stdout(self._out))
        self._stack.enter_context(contextlib.redirect_stderr(self._err))
        return self

    def __exit__(self, *exc):
        self._stack.close()


def test_eval_writes_both_tables_per_image_csv_and_grids(evaluated, run_folder):
    out, captured, before = evaluated
    metrics = json.loads((out / "metrics.json").read_text())
    table = metrics["clipaway_table"]
    assert set(table) >= {"FID", "KID", "CMMD", "CLIP Dist", "CLIP@1", "CLIP@3", "CLIP@5"}
    assert all(0 <= table[f"CLIP@{k}"] <= 100 for k in (1, 3, 5)) and table["CLIP@5"] <= table["CLIP@1"]
    buckets = metrics["dcgd_table"]
    assert list(buckets) == ["0.01-0.1", "0.1-0.2", "0.2-0.3", "0.3-0.4"]
    assert all(row["images"] > 0 for row in buckets.values()) and sum(r["images"] for r in buckets.values()) == N
    assert "CLIP Dist" in metrics["definitions"] and "1 - cos" in metrics["definitions"]["CLIP Dist"]
    assert metrics["base"] == ["blended"] and "results of base blended" in captured.out  # infer's --base
    with open(out / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == N and rows[0]["name"] == "scene00"
    assert "CLIPAway Table 1 layout (12 images)" in captured.out and "| 0.3-0.4 |" in captured.out
    assert (out / "grid_best.png").is_file() and (out / "grid_worst.png").is_file()
    assert _tree_digest(run_folder) == before, "eval must not write into its inputs"


def test_image_metrics_and_fid_agree_with_direct_computation(evaluated, run_folder):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from clipaway_jax.pipelines.images import read_image

    out = evaluated[0]
    with open(out / "per_image.csv") as f:
        row = next(csv.DictReader(f))
    result, truth = read_image(run_folder / "results" / "scene00.png"), read_image(run_folder / "gt" / "scene00.png")
    assert float(row["psnr"]) == pytest.approx(peak_signal_noise_ratio(truth, result, data_range=1), rel=1e-5)
    wang = dict(channel_axis=-1, data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    expected_ssim = structural_similarity(result.astype(np.float64), truth.astype(np.float64), **wang)
    assert float(row["ssim"]) == pytest.approx(expected_ssim, rel=1e-5)
    cached = [dict(np.load(p)) for p in sorted((out / "cache").glob("*.npz"))]
    features = [np.stack([c[f"inception_{role}"] for c in cached]) for role in ("result", "reference")]
    fid = json.loads((out / "metrics.json").read_text())["clipaway_table"]["FID"]
    assert len(cached) == N and fid == pytest.approx(stats.fid(*features), rel=1e-9)


def test_eval_features_are_the_networks_outputs(evaluated, run_folder, metrics_checkpoint):
    """The cached Inception features of one result equal the network applied to that file directly."""
    import jax

    from clipaway_jax.checkpoint import load_checkpoint
    from clipaway_jax.models.inception import FIDInceptionV3
    from clipaway_jax.pipelines.images import read_image

    params = {"params": load_checkpoint(metrics_checkpoint, networks=["inception"]).params["inception"]}
    image = read_image(run_folder / "results" / "scene05.png")[None]
    direct = np.asarray(jax.jit(FIDInceptionV3().apply)(params, image))[0]
    cached = dict(np.load(next((evaluated[0] / "cache").glob("scene05.*.npz"))))["inception_result"]
    np.testing.assert_allclose(cached, direct, rtol=0, atol=1e-4 * np.abs(direct).max())


def test_a_second_run_reads_the_cache(evaluated, run_folder, metrics_checkpoint, tmp_path, monkeypatch):
    from clipaway_jax.eval.run import Evaluator

    first = json.loads((evaluated[0] / "metrics.json").read_text())

    def no_features(*args, **kwargs):
        raise AssertionError("features recomputed although cached")

    monkeypatch.setattr(Evaluator, "_prepare", no_features)
    monkeypatch.setattr(Evaluator, "_device_features", no_features)
    code, _ = _eval(run_folder, metrics_checkpoint, tmp_path / "second", "--cache-dir", evaluated[0] / "cache")
    assert code == 0
    assert json.loads((tmp_path / "second" / "metrics.json").read_text())["clipaway_table"] == first["clipaway_table"]


def test_eight_devices_give_the_metrics_of_one(evaluated, run_folder, metrics_checkpoint, tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-m", "clipaway_jax.cli", "eval", "--results", run_folder / "results", "--images",
               run_folder / "images", "--masks", run_folder / "masks", "--ground-truth", run_folder / "gt",
               "--metrics", metrics_checkpoint, "--out", tmp_path / "eight", "--kid-subset-size", "6",
               "--kid-subsets", "4", "--per-device-batch", "1"]  # fmt: skip
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    one, eight = (json.loads((d / "metrics.json").read_text()) for d in (evaluated[0], tmp_path / "eight"))
    for name, value in one["clipaway_table"].items():
        assert eight["clipaway_table"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    for bucket, row in one["dcgd_table"].items():
        for key, value in row.items():
            assert eight["dcgd_table"][bucket][key] == pytest.approx(value, rel=1e-5), (bucket, key)


def test_bad_inputs_are_reported_and_the_rest_evaluated(run_folder, metrics_checkpoint, tmp_path, capsys):
    """Unpaired files, a failed result, a result of another size, a metric network that is absent and
    fewer images than KID's subset size: each is one line; the rest is computed; inputs are untouched."""
    root = tmp_path / "run"
    shutil.copytree(run_folder, root)
    (root / "masks" / "scene01.png").unlink()  # unpaired image
    Image.new("RGB", (32, 32)).save(root / "results" / "scene02.png")  # a result of another size
    lines = (root / "results" / "results.jsonl").read_text().splitlines()
    lines[3] = json.dumps({"name": "scene03", "status": "failed", "reason": "out of memory"})
    (root / "results" / "results.jsonl").write_text("\n".join(lines) + "\n")
    partial = tmp_path / "partial"
    shutil.copytree(metrics_checkpoint, partial)
    manifest = json.loads((partial / "manifest.json").read_text())
    del manifest["networks"]["lpips"], manifest["networks"]["cmmd_clip_vision"]
    (partial / "manifest.json").write_text(json.dumps(manifest))
    before = _tree_digest(root)
    code, captured = _eval(root, partial, tmp_path / "out", "--kid-subset-size", "1000", capsys=capsys)
    assert code == 0, captured.err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["images"] == N - 3, metrics["problems"]
    reasons = {p["name"]: p["reason"] for p in metrics["problems"]}
    assert "scene03" in reasons and "out of memory" in reasons["scene03"]
    assert any("no mask" in r for r in reasons.values())
    assert "32x32" in reasons["scene02"] and "64x64" in reasons["scene02"]
    assert "skipped scene02" in captured.err
    assert "has no 'lpips': skipping LPIPS" in captured.out and "skipping CMMD" in captured.out
    assert "KID skipped" in captured.out and "found 9" in captured.out
    assert "FID" in metrics["clipaway_table"] and "CMMD" not in metrics["clipaway_table"]
    assert metrics["dcgd_table"]["0.3-0.4"]["LPIPS"] is None and metrics["dcgd_table"]["0.3-0.4"]["PSNR"] > 0
    assert _tree_digest(root) == before


def test_eval_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        cli_main(["eval", "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "--metrics" in text and "--ground-truth" in text


@pytest.mark.slow
def test_two_processes_give_the_metrics_of_one(evaluated, run_folder, metrics_checkpoint, tmp_path):
    """jax.distributed over two local processes of 4 devices each; each evaluates half, process 0 reports."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    base = [sys.executable, "-m", "clipaway_jax.cli", "eval", "--results", run_folder / "results", "--images",
            run_folder / "images", "--masks", run_folder / "masks", "--ground-truth", run_folder / "gt", "--metrics",
            metrics_checkpoint, "--out", tmp_path / "two", "--kid-subset-size", "6", "--kid-subsets", "4",
            "--per-device-batch", "1", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]  # fmt: skip
    procs = [subprocess.Popen([str(c) for c in [*base, "--process-id", str(i)]], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]  # fmt: skip
    results = [p.communicate(timeout=900) for p in procs]
    for proc, (_, stderr) in zip(procs, results):
        assert proc.returncode == 0, stderr[-2000:]
    assert "(12 images" in results[0][0] and "CLIPAway Table 1" not in results[1][0]  # process 0 reports
    one, two = (json.loads((d / "metrics.json").read_text()) for d in (evaluated[0], tmp_path / "two"))
    for name, value in one["clipaway_table"].items():
        assert two["clipaway_table"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
