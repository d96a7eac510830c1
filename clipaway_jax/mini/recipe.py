"""`make mini` (python -m clipaway_jax.mini.recipe): the whole mini model set from nothing, with our own
`data` and `train` commands, seeded; on a 2-core CPU, timed from nothing as committed: 109.2 minutes
(2026-12-07; about 115-117 at the slowest rates measured, bench/RESULTS.md "The recipe's time,
shorter") before the vae-decoder stage, which took 4.0 minutes more when timed alone (about 113 in all).

    data scenes -> skeleton -> train alpha-clip -> train alpha-clip-classes -> train image-encoder
                -> train vae -> train vae-decoder -> train inpaint -> train mlp -> train unet (dcgd12)
                -> train t2i (the blended base's UNet) -> the shipped checkpoint (float16, model card)

Every stage is a `clipaway-jax train --config train/configs/mini_STAGE.py` command line (printed before it
runs; the config file holds the stage's whole setting, the recipe sets only the paths, the seed and the
steps) that adds its networks to OUT/checkpoint, or continues them (alpha-clip-classes continues
alpha-clip's vision tower, vae-decoder the VAE's decoder on noisy latents); a finished stage is skipped
(`record`: its networks' manifest entry records the settings it ran with), unless its config file, the
seed or the steps have changed since, and an interrupted stage resumes from its workdir if that was
started with the same settings, so running the recipe again continues where it stopped. Every stage after
one that ran is trained again from nothing (it may read the networks that changed: the MLP reads
AlphaCLIP). A stage that continues networks and must train again needs them as the stage before left them:
where the checkpoint holds its own output instead, that stage runs again first (`CONTINUES`; its finished
run, if kept, exports again without a step).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from clipaway_jax.training.config import changes

CONFIGS = Path(__file__).resolve().parents[2] / "train" / "configs"  # the repository's train/configs/
# stage: (networks it adds, its config file in train/configs/)
STAGES = {
    "alpha-clip": (["alpha_clip", "text_encoder"], "mini_alpha_clip.py"),
    "alpha-clip-classes": (["alpha_clip"], "mini_alpha_clip_classes.py"),
    "image-encoder": (["image_encoder"], "mini_image_encoder.py"),
    "vae": (["vae"], "mini_vae.py"),
    "vae-decoder": (["vae"], "mini_vae_decoder.py"),  # the encoder frozen: no later stage reads the decoder
    "inpaint": (["unet", "image_proj"], "mini_inpaint.py"),
    "mlp": (["mlp"], "mini_mlp.py"),
    "unet": (["unet_dcgd12"], "mini_dcgd12.py"),
    "t2i": (["unet_t2i"], "mini_t2i.py"),
}
# a stage that continues the networks of an earlier one: to run again it needs that stage's output, which the
# checkpoint no longer holds, so the stage it continues runs again first
CONTINUES = {"alpha-clip-classes": "alpha-clip", "vae-decoder": "vae"}
# the world's one CLIP space serves the describer and the metrics
ALIASES = {"clip_text": "text_encoder", "eval_clip_text": "text_encoder", "eval_clip_vision": "alpha_clip",
           "cmmd_clip_vision": "alpha_clip"}  # fmt: skip


# glibc's malloc in the stages' processes: XLA:CPU allocates a step's temporaries anew in every step, and
# each fresh 4 kB page faults; in transparent huge pages, with freed memory kept, a mini inpainting step runs
# 1.3x faster, bit for bit the same (bench/RESULTS.md, "Page faults"). Other C libraries ignore the
# variable; a GLIBC_TUNABLES of the user's own is kept as it is.
MALLOC_TUNABLES = "glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"


def run(argv: list[str]) -> None:
    """One `clipaway-jax` command in its own process (its memory is returned when the stage ends)."""
    import subprocess

    print("$ clipaway-jax " + " ".join(argv), flush=True)
    env = {"GLIBC_TUNABLES": MALLOC_TUNABLES, **os.environ}
    if subprocess.run([sys.executable, "-m", "clipaway_jax.cli", *argv], env=env).returncode != 0:
        raise SystemExit(f"stage failed: clipaway-jax {' '.join(argv)}")


def networks(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "manifest.json").read_text())["networks"]


def history(entry: dict) -> list[dict]:
    """A network's training records, the latest first (a stage that continues it keeps the earlier ones under
    `continues`)."""
    return [entry["training"], *entry.get("continues", [])] if "training" in entry else []


def trained_by(training: dict, config_name: str) -> bool:
    """Whether a training record is a run of this config file (named as `STAGES` names it)."""
    return Path(training.get("config_file", "")).name == config_name


def record(checkpoint: Path, stage: str) -> dict | None:
    """The training record of `stage`'s run: its networks are trained and one of them was trained by its
    config file, last or before a stage that continued it (a stage that continues networks finds them
    trained by the stage before it); else None."""
    adds, name = STAGES[stage]
    entries = [networks(checkpoint).get(n, {}) for n in adds]
    ours = [r for e in entries for r in history(e) if trained_by(r, name)]
    return ours[0] if ours and all(e.get("trained") for e in entries) else None


def stage_settings(config_file: Path, seed: int, steps_scale: float) -> dict:
    """The resolved config a stage's `train` command records (paths aside): its file, the seed and the steps."""
    from clipaway_jax.training.config import load_config, resolved

    config = load_config(config_file)
    config.seed, config.steps = seed, max(2, int(config.steps * steps_scale))
    return resolved(config, config_file)


def resumable(workdir: Path, settings: dict) -> bool:
    """Whether `workdir` holds a run started with these settings (an interrupted stage continues it)."""
    path = workdir / "config.json"
    return path.is_file() and not changes(json.loads(path.read_text()), settings)


def first_to_run(checkpoint: Path, stages, settings: dict) -> int:
    """The index of the first stage to train: one not trained, or trained with other settings; or, where that
    one continues networks (CONTINUES) that the checkpoint no longer holds as the earlier stage left them,
    that earlier stage. It and every stage after it train (a stage may read the networks of those before it:
    the MLP reads AlphaCLIP); len(stages) if none."""
    for index, stage in enumerate(stages):
        recorded = record(checkpoint, stage)
        if recorded is None or changes(recorded, settings[stage]):
            continued = CONTINUES.get(stage)
            if continued in stages[:index] and not left_by(checkpoint, STAGES[stage][0], continued):
                return stages.index(continued)
            return index
    return len(stages)


def left_by(checkpoint: Path, names, stage: str) -> bool:
    """Whether `stage` trained each of these networks last."""
    last = [history(networks(checkpoint).get(n, {}))[:1] for n in names]
    return all(r and trained_by(r[0], STAGES[stage][1]) for r in last)


def as_given(path: Path) -> str:
    """`path` relative to the working directory when it lies under it: the manifest records the config file
    as the command line names it, like the data and checkpoint paths, not the clone's absolute path."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def train_all(out: Path, seed: int = 0, steps_scale: float = 1.0, stages=tuple(STAGES), configs: Path = CONFIGS,
              ) -> Path:  # fmt: skip
    from clipaway_jax.mini.dataset import VERSION
    from clipaway_jax.mini.models import write_skeleton

    data, checkpoint = out / "data", out / "checkpoint"
    if not (data / "mini_scenes" / VERSION).is_dir():  # (a folder of an older version is made again beside it)
        run(["data", "scenes", "--out", str(data), "--seed", str(seed)])
    if not (checkpoint / "manifest.json").is_file():
        write_skeleton(checkpoint)
    settings = {stage: stage_settings(configs / STAGES[stage][1], seed, steps_scale) for stage in stages}
    first = first_to_run(checkpoint, stages, settings)
    for index, stage in enumerate(stages):
        adds, name = STAGES[stage]
        if index < first:
            print(f"[{stage}] done already: {', '.join(adds)}")
            continue
        recorded = None if index > first else record(checkpoint, stage)
        changed = None if recorded is None else changes(recorded, settings[stage])
        if changed:  # trained, by a config file edited since (or another seed or scale)
            print(f"[{stage}] trained with other settings ({'; '.join(changed)}): again")
        elif changed == []:  # its finished run, if kept, exports its networks again without a step
            again = next(s for s in stages if CONTINUES.get(s) == stage)
            print(f"[{stage}] trained as set, again: {again} continues its networks and trains again")
        workdir = out / "runs" / stage
        # a finished or stopped run of other settings, or on the networks before: not continued
        if workdir.exists() and (index > first or not resumable(workdir, settings[stage])):
            print(f"[{stage}] {workdir} holds a run of other settings or networks: cleared, trains from nothing")
            shutil.rmtree(workdir)
        start = time.perf_counter()
        run(["train", "--config", as_given(configs / name), "--workdir", str(workdir), "--export",
             str(checkpoint), f"--config.checkpoint={checkpoint}", f"--config.data_dir={data}",
             f"--config.seed={seed}", f"--config.steps={settings[stage]['steps']}"])  # fmt: skip
        print(f"[{stage}] {time.perf_counter() - start:.0f} s", flush=True)
    return checkpoint


def ship(checkpoint: Path, out: Path, dtype: str = "float16") -> Path:
    """The inference checkpoint to commit: networks in `dtype`, the eval aliases, no training-only towers."""
    import jax
    import numpy as np

    from clipaway_jax.checkpoint import load_checkpoint, read_manifest, save_network, write_manifest

    manifest = read_manifest(checkpoint)
    stored = lambda entry: "params_of" not in entry or "overlay" in entry  # aliases are written again below
    keep = [n for n, entry in manifest["networks"].items() if n != "encoder_text" and stored(entry)]
    loaded = load_checkpoint(checkpoint, networks=keep)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for folder in ("tokenizer", "vocab"):
        shutil.copytree(checkpoint / folder, tmp / folder)
    cast = lambda x: np.asarray(x).astype(dtype) if np.issubdtype(np.asarray(x).dtype, np.floating) else np.asarray(x)
    entries = {}
    for name in keep:
        own = manifest["networks"][name].get("overlay")  # an overlay stores its own modules only
        params = {k: loaded.params[name][k] for k in own} if own else loaded.params[name]
        save_network(tmp, name, jax.tree_util.tree_map(cast, params))
        entries[name] = {**manifest["networks"][name], "dtype": dtype}
    for alias, source in ALIASES.items():
        entries[alias] = {**entries[source], "params_of": source}
    body = {k: v for k, v in manifest.items() if k not in ("format", "package_version", "init", "networks")}
    write_manifest(tmp, {**body, "networks": entries})
    if (out / "README.md").is_file():  # the model card is written by hand: keep it
        shutil.copy(out / "README.md", tmp / "README.md")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="example: python -m clipaway_jax.mini.recipe --out runs/mini "
                                       "--ship clipaway_jax/assets/mini")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("runs/mini"), help="data, runs and the fp32 checkpoint")
    p.add_argument("--ship", type=Path, help="also write the float16 inference checkpoint here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps-scale", type=float, default=1.0, help="multiply every stage's steps (quick trials)")
    p.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES))
    p.add_argument("--configs", type=Path, default=CONFIGS, help="the stages' config files (default train/configs)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    checkpoint = train_all(args.out, args.seed, args.steps_scale, args.stages, args.configs)
    if args.ship:
        print(f"shipped {ship(checkpoint, args.ship)}")
    print(f"mini model set in {checkpoint} ({(time.perf_counter() - start) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
