"""`clipaway-jax infer`: same pixels on 1 and 8 devices and on 2 hosts, the batch split inside the loop,
resume after SIGKILL, and bad inputs reported while the rest finishes."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

from clipaway_jax.cli import main as cli_main
from clipaway_jax.eval.samples import result_files

N = 12
ARGS = ["--steps", "2", "--size", "64", "--cache-dir", ""]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.RandomState(0)
    for i in range(N):
        Image.fromarray(rng.randint(0, 256, (64, 64, 3), np.uint8)).save(root / "images" / f"img{i:02d}.png")
        mask = np.zeros((64, 64), np.uint8)
        mask[10 + i : 40, 15:50] = 255
        Image.fromarray(mask).save(root / "masks" / f"img{i:02d}.png")
    return root


def _cmd(folders, out, checkpoint, *extra):
    return ["infer", "--images", str(folders / "images"), "--masks", str(folders / "masks"), "--out", str(out),
            "--checkpoint", str(checkpoint), *ARGS, *extra]  # fmt: skip


def _subprocess(args, devices, extra_env=None, **kwargs):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env.update(extra_env or {})
    script = "import sys; from clipaway_jax.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", script, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)  # fmt: skip


def _pixels(folder):
    return {p.stem: np.asarray(Image.open(p), np.int16) for p in sorted(folder.glob("*.png"))}


def _assert_same_pixels(a, b):
    """Equal images; XLA may reorder reductions between layouts (~1e-6), which can flip a rare rounding."""
    assert sorted(a) == sorted(b)
    diffs = np.concatenate([np.abs(a[k] - b[k]).ravel() for k in a])
    assert diffs.max() <= 1 and (diffs > 0).mean() < 1e-3, f"max {diffs.max()}, differing {(diffs > 0).mean():.2e}"


@pytest.fixture(scope="module")
def reference(folders, tiny_checkpoint, tmp_path_factory):
    """One process, one device, one image per step."""
    out = tmp_path_factory.mktemp("ref")
    assert cli_main(_cmd(folders, out, tiny_checkpoint)) == 0
    return out


def test_single_process_writes_everything(reference):
    records = [json.loads(line) for line in (reference / "results.jsonl").read_text().splitlines()]
    assert len(records) == N and {r["status"] for r in records} == {"done"} and records[0]["seed"] == 42
    assert {r["base"] for r in records} == {"inpaint"}  # what eval reports the metrics are of
    assert len(list(reference.glob("*.png"))) == N


def test_eight_devices_match_and_keep_the_batch_split(folders, tiny_checkpoint, reference, tmp_path):
    out = tmp_path / "out8"
    proc = _subprocess(_cmd(folders, out, tiny_checkpoint), devices=8)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-2000:]
    assert "(8 devices, 1 processes)" in stdout
    _assert_same_pixels(_pixels(reference), _pixels(out))


def test_sampling_loop_runs_on_per_device_slices(tiny_checkpoint):
    """The compiled HLO of an 8-image batch on 8 devices: inside the loop the UNet sees 2 rows per device
    (one image, both guidance branches), never the whole batch. The arguments are built as `infer` builds
    them for the 8-device test above, so this is the program that ran there (read back from the cache)."""
    script = textwrap.dedent(
        f"""
        import jax, jax.numpy as jnp, numpy as np
        from clipaway_jax.pipelines.clipaway import CLIPAwayPipeline, RemovalOptions, image_keys
        from clipaway_jax.sharding import make_mesh, batch_sharding
        mesh = make_mesh()
        pipe = CLIPAwayPipeline.from_checkpoint({str(tiny_checkpoint)!r}, mesh=mesh)
        put = lambda x: jax.device_put(np.asarray(x), batch_sharding(mesh, np.ndim(x)))
        ids = pipe.text_ids([""] * 8, ["neg"] * 8)
        keys = jax.random.wrap_key_data(put(jax.random.key_data(image_keys(0, list(range(8))))))
        args = (pipe.params, put(np.zeros((8, 64, 64, 3), np.float32)), put(np.ones((8, 64, 64), np.float32)),
                put(ids), keys, jnp.float32(7.5), jnp.float32(1.0), (jnp.int32(0), jnp.bool_(False)))
        compiled = pipe.compiled(RemovalOptions(steps=2), args)
        out = compiled(*args)
        print("OUT_SHARDING", out.sharding.spec)
        print("HLO_HAS_PER_DEVICE_UNET_INPUT", "f32[2,8,8,9]" in compiled.as_text())
        print("HLO_HAS_FULL_UNET_INPUT", "f32[16,8,8,9]" in compiled.as_text())
        """
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    spec = next(line for line in result.stdout.splitlines() if line.startswith("OUT_SHARDING"))
    assert "'data'" in spec.split(",")[0], spec  # batch axis split over the data axis (fsdp has size 1 here)
    assert "HLO_HAS_PER_DEVICE_UNET_INPUT True" in result.stdout
    assert "HLO_HAS_FULL_UNET_INPUT False" in result.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_do_every_image_once(folders, tiny_checkpoint, reference, tmp_path):
    out, port = tmp_path / "out2", _free_port()
    procs = [
        _subprocess(
            _cmd(
                folders,
                out,
                tiny_checkpoint,
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ),
            devices=4,
        )  # fmt: skip
        for i in range(2)
    ]
    results = [p.communicate(timeout=600) for p in procs]
    for proc, (_, stderr) in zip(procs, results):
        assert proc.returncode == 0, stderr[-2000:]
    assert "(8 devices, 2 processes)" in results[0][0]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["name"] for r in records if r["status"] == "done") == [f"img{i:02d}" for i in range(N)]
    _assert_same_pixels(_pixels(reference), _pixels(out))


def test_killed_run_resumes_without_corrupt_outputs(folders, tiny_checkpoint, tmp_path):
    out = tmp_path / "killed"
    args = _cmd(folders, out, tiny_checkpoint, "--per-device-batch", "1")
    args[args.index("--steps") + 1] = "40"  # slow enough to be caught midway
    proc = _subprocess(args, devices=1)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(out.glob("img*.png"))) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = sorted(p.stem for p in out.glob("img*.png"))
    assert 2 <= len(first) < N, "the job should have been killed midway"
    for path in out.glob("img*.png"):
        Image.open(path).verify()  # complete, never half-written
    assert cli_main(_cmd(folders, out, tiny_checkpoint)) == 0
    records = {json.loads(line)["name"]: json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()}
    assert {n for n, r in records.items() if r["status"] == "skipped"} == set(first)
    assert len([r for r in records.values() if r["status"] == "done"]) == N - len(first)
    assert not list(out.glob(".*.tmp"))
    assert len(result_files(out)[0]) == N  # `eval` reads the killed run's outputs too


def test_a_rerun_keeps_the_records_of_the_outputs_it_skips(folders, tiny_checkpoint, tmp_path):
    """Resuming loses nothing: a rerun that skips finished outputs keeps the records that made them (seed,
    base: what `eval` reads), and a rerun over fewer inputs keeps the others' records."""
    out = tmp_path / "out"
    assert cli_main(_cmd(folders, out, tiny_checkpoint, "--seed", "7")) == 0
    first = (out / "results.jsonl").read_text()
    assert cli_main(_cmd(folders, out, tiny_checkpoint, "--seed", "7")) == 0
    assert (out / "results.jsonl").read_text() == first
    (out / "img03.png").unlink()
    assert cli_main(_cmd(folders, out, tiny_checkpoint, "--seed", "7", "--limit", "5")) == 0
    records = {json.loads(line)["name"]: json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()}
    assert len(records) == N and all(r["status"] == "done" and r["seed"] == 7 for r in records.values())
    assert len(result_files(out)[0]) == N


def test_bad_inputs_are_reported_and_the_rest_finishes(folders, tiny_checkpoint, tmp_path, capsys):
    import shutil

    images, masks = tmp_path / "images", tmp_path / "masks"
    shutil.copytree(folders / "images", images)
    shutil.copytree(folders / "masks", masks)
    (images / "img00.png").write_bytes(b"\x89PNG broken")  # corrupt image
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(masks / "img01.png")  # mask of another size
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(masks / "lonely.png")  # mask without image
    out = tmp_path / "out"
    code = cli_main(["infer", "--images", str(images), "--masks", str(masks), "--out", str(out),
                     "--checkpoint", str(tiny_checkpoint), *ARGS])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    records = {json.loads(line)["name"]: json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()}
    assert records["img00"]["status"] == "failed" and "img00.png" in records["img00"]["reason"]
    assert records["img01"]["status"] == "failed" and "mask is 32x32" in records["img01"]["reason"]
    assert records["lonely"]["status"] == "failed" and "mask without an image" in records["lonely"]["reason"]
    assert len([r for r in records.values() if r["status"] == "done"]) == N - 2
    assert "failed img00" in err and (images / "img00.png").read_bytes() == b"\x89PNG broken"


def test_folders_without_pairs_name_the_folder_and_fail(folders, tiny_checkpoint, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    code = cli_main(["infer", "--images", str(empty), "--masks", str(folders / "masks"), "--out", str(tmp_path / "o"),
                     "--checkpoint", str(tiny_checkpoint)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and f"{empty} (--images) holds no image files" in err and "(--masks)" not in err
    assert not (tmp_path / "o" / "results.jsonl").exists()


def test_bad_settings_are_refused_before_anything_runs(folders, tiny_checkpoint, tmp_path, capsys):
    for flag, value in (("--steps", "0"), ("--blend-start", "1.5"), ("--per-device-batch", "0")):
        with pytest.raises(SystemExit) as stop:
            cli_main(["infer", "--images", str(folders / "images"), "--masks", str(folders / "masks"), "--out",
                      str(tmp_path / "o"), "--checkpoint", str(tiny_checkpoint), flag, value])  # fmt: skip
        assert stop.value.code == 2 and f"argument {flag}: must be" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_list_files_pair_rows_and_name_outputs(folders, tmp_path):
    from clipaway_jax.batch.sources import from_list

    images, masks = folders / "images", folders / "masks"
    csv = tmp_path / "pairs.csv"
    rows = "".join(f"{images}/img{i:02d}.png,{masks}/img{i:02d}.png,custom{i}\n" for i in range(3))
    csv.write_text("image,mask,output\n" + rows + "only_an_image.png\n")
    listing = from_list(csv)
    assert [item.name for item in listing.items] == ["custom0", "custom1", "custom2"]
    assert listing.problems == [(f"{csv}:5", "needs an image and a mask")]
    image, mask = listing.items[1].load()
    assert image.shape == (64, 64, 3) and mask.shape == (64, 64)

    rows = [{"image": f"images/img{i:02d}.png", "mask": f"masks/img{i:02d}.png"} for i in range(2)]
    jsonl = folders / "pairs.jsonl"  # relative paths resolve against the list file
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert [item.name for item in from_list(jsonl).items] == ["img00", "img01"]


def test_tfds_data_source_input(folders, tiny_checkpoint, tmp_path):
    """An array_record tfds dataset with image and mask bytes features, read by index without TensorFlow."""
    from clipaway_jax.training.data import build_folder_dataset

    data_dir = tmp_path / "tfds"
    build_folder_dataset(folders / "images", data_dir, masks_dir=folders / "masks", name="inpaint_pairs")
    out = tmp_path / "out"
    code = cli_main(["infer", "--tfds", "inpaint_pairs:train", "--data-dir", str(data_dir), "--out", str(out),
                     "--checkpoint", str(tiny_checkpoint), *ARGS])  # fmt: skip
    assert code == 0
    assert len(list(out.glob("*.png"))) == N


def test_coordinator_auto_lets_jax_find_the_cluster(monkeypatch):
    """`--coordinator auto` calls jax.distributed.initialize() with no arguments (TPU pods, SLURM)."""
    import argparse

    import jax

    from clipaway_jax.commands.infer import init_distributed

    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
    init_distributed(argparse.Namespace(coordinator="auto", num_processes=None, process_id=None))
    assert calls == [((), {})]
