"""Published CLIPAway files -> one checkpoint directory (see `clipaway_jax.checkpoint`).

Every input is checked for presence before anything is converted; networks are converted and
saved one at a time (host numpy, tensor by tensor) so peak memory stays near the largest network;
the output is written under a temporary name and renamed only when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipaway_jax.checkpoint import copy_tokenizer, save_network, sha256, write_manifest
from clipaway_jax.convert import networks as nets
from clipaway_jax.convert.readers import Subset, WeightFileError, describe, find_weights, open_weights
from clipaway_jax.models import CLIPTextConfig, CLIPVisionConfig, MLPConfig, UNetConfig, VAEConfig
from clipaway_jax.models.dcgd import dcgd12_from_inpaint


class InputError(ValueError):
    """A user-given input is missing or of the wrong kind."""


@dataclass
class Sources:
    sd_inpaint: Path | None = None
    sd_base: Path | None = None  # a text-to-image SD-1.5 folder: its UNet as `unet_t2i`, the blended base
    ip_adapter: Path | None = None
    alpha_clip: Path | None = None
    mlp: Path | None = None
    image_encoder: Path | None = None
    clip: Path | None = None
    dcgd12: bool = False  # also store DCGD's 12-channel UNet, initialized from the inpainting UNet
    dcgd12_from_base: bool = False  # sd_inpaint is a text-to-image SD: store only the 12-channel UNet from it
    # evaluation networks (`clipaway-jax eval`)
    inception: Path | None = None  # pt_inception-2015-12-05-6726825d.pth (FID, KID)
    lpips: Path | None = None  # the lpips package's weights/v0.1/alex.pth (its 1x1 `lin` layers)
    alexnet: Path | None = None  # torchvision's alexnet-owt-7be5be79.pth (LPIPS trunk)
    eval_clip: Path | None = None  # CLIP ViT-B/32 CLIPModel folder (CLIP@k, CLIP distance)
    cmmd_clip: Path | None = None  # CLIP ViT-L/14@336 CLIPModel folder (CMMD; vision tower only)


@dataclass
class Job:
    """One network to convert: its name, the files it reads and how to make (params, manifest entry)."""

    name: str
    files: list[Path]
    run: Callable[[np.dtype], tuple[dict, dict]]


SD_PARTS = {"unet": "diffusers", "vae": "diffusers", "text_encoder": "transformers"}


def check_sources(sources: Sources) -> None:
    """Fail before converting anything, listing what was expected where."""
    problems = []
    if sources.sd_inpaint is not None:
        problems += _missing_sd_parts(sources.sd_inpaint)
        problems += _not_inpainting(sources.sd_inpaint, sources.dcgd12_from_base)
    if sources.sd_base is not None:
        problems += _missing_sd_parts(sources.sd_base)
        problems += _not_text_to_image(sources.sd_base)
        if sources.sd_inpaint is not None:  # the base's UNet reads the inpainting folder's text encoder
            problems += _mismatched_sd_parts(sources.sd_base, sources.sd_inpaint)
    for label, path in (
        ("--ip-adapter", sources.ip_adapter),
        ("--alpha-clip", sources.alpha_clip),
        ("--mlp", sources.mlp),
    ):
        if path is not None and not path.is_file():
            problems.append(f"{path} ({label}: file not found)")
    for label, path in (("--image-encoder", sources.image_encoder), ("--clip", sources.clip)):
        if path is not None:
            if not (path / "config.json").is_file():
                problems.append(f"{path / 'config.json'} ({label} folder)")
            else:
                try:
                    find_weights(path, "transformers")
                except WeightFileError as err:
                    problems.append(str(err))
    for label, path in (("--inception", sources.inception), ("--lpips", sources.lpips), ("--alexnet", sources.alexnet)):
        if path is not None and not path.is_file():
            problems.append(f"{path} ({label}: file not found)")
    for label, path in (("--eval-clip", sources.eval_clip), ("--cmmd-clip", sources.cmmd_clip)):
        if path is not None and not (path / "config.json").is_file():
            problems.append(f"{path / 'config.json'} ({label} folder)")
    if (sources.lpips is None) != (sources.alexnet is None):
        problems.append("LPIPS needs both --lpips (the lpips package's alex.pth) and --alexnet (torchvision's weights)")
    if sources.ip_adapter is not None and sources.sd_inpaint is None and sources.sd_base is None:
        problems.append("--ip-adapter needs --sd-inpaint or --sd-base (its weights go into the UNet)")
    if problems:
        raise InputError("missing inputs: " + "; ".join(problems))


def _missing_sd_parts(root: Path) -> list[str]:
    problems = []
    for part, kind in SD_PARTS.items():
        if not (root / part / "config.json").is_file():
            problems.append(f"{root / part / 'config.json'}")
        try:
            find_weights(root / part, kind)
        except WeightFileError as err:
            problems.append(str(err))
    for need in ("tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json"):
        if not (root / need).is_file():
            problems.append(str(root / need))
    return problems + _mismatched_sd_parts(root, root)


def _mismatched_sd_parts(unet_root: Path, text_root: Path) -> list[str]:
    """The UNet's cross-attention reads the text encoder's hidden states: their widths must agree."""
    unet_file, text_file = unet_root / "unet" / "config.json", text_root / "text_encoder" / "config.json"
    unet, text = _read_json(unet_file), _read_json(text_file)
    if not unet or not text:
        return []
    cross, hidden = unet.get("cross_attention_dim", 768), text.get("hidden_size", 512)
    if cross == hidden:
        return []
    return [f"{unet_file} has cross_attention_dim {cross} but {text_file} has hidden_size {hidden}: "
            "not parts of one model"]  # fmt: skip


INPAINT_HINT = "an SD-1.5 inpainting folder such as botp/stable-diffusion-v1-5-inpainting"


def _not_inpainting(root: Path, from_base: bool) -> list[str]:
    """A text-to-image UNet (4 input channels) cannot inpaint: say so now, not when `remove` loads it."""
    config = _read_json(root / "unet" / "config.json") or {}
    channels = config.get("in_channels", 9)
    if from_base:
        return [] if channels == 4 else [
            f"{root / 'unet' / 'config.json'} has in_channels {channels}: --dcgd12-from-base takes a "
            "text-to-image SD-1.5 folder (4 input channels); for an inpainting folder use --dcgd12"]  # fmt: skip
    if channels == 9:
        return []
    what = "a text-to-image Stable Diffusion UNet, not an inpainting one" if channels == 4 else "not SD inpainting"
    return [f"{root / 'unet' / 'config.json'} has in_channels {channels}: {what}. --sd-inpaint expects "
            f"{INPAINT_HINT} (9 input channels = latent 4 + mask 1 + masked-image latent 4); a text-to-image "
            "folder goes to --sd-base (the blended base, --base blended), or with --dcgd12-from-base initializes "
            "only DCGD's 12-channel UNet"]  # fmt: skip


def _not_text_to_image(root: Path) -> list[str]:
    channels = (_read_json(root / "unet" / "config.json") or {}).get("in_channels", 4)
    if channels == 4:
        return []
    return [f"{root / 'unet' / 'config.json'} has in_channels {channels}: --sd-base expects a text-to-image "
            "SD-1.5 folder such as stable-diffusion-v1-5/stable-diffusion-v1-5 (4 input channels) for Blended "
            "Latent Diffusion; an inpainting folder goes to --sd-inpaint"]  # fmt: skip


def plan(sources: Sources) -> list[Job]:
    check_sources(sources)
    return list(_jobs(sources))


def _jobs(sources: Sources) -> Iterator[Job]:
    if sources.sd_inpaint is not None:
        yield from _sd_jobs(sources.sd_inpaint, sources.ip_adapter, sources.dcgd12, sources.dcgd12_from_base)
    if sources.sd_base is not None:
        yield _unet_job("unet_t2i", sources.sd_base, sources.ip_adapter)
        if sources.sd_inpaint is None:
            yield from _sd_shared_jobs(sources.sd_base)
    if sources.ip_adapter is not None:
        yield _image_proj_job(sources.ip_adapter)
    if sources.alpha_clip is not None:
        yield _alpha_clip_job(sources.alpha_clip)
    if sources.mlp is not None:
        yield _mlp_job(sources.mlp)
    if sources.image_encoder is not None:
        yield _image_encoder_job(sources.image_encoder)
    if sources.clip is not None:
        yield from _clip_jobs(sources.clip)
    yield from _eval_jobs(sources)


def _unet_job(name: str, root: Path, ip_adapter: Path | None) -> Job:
    """A diffusers UNet folder, with the IP-Adapter's decoupled cross-attention when given."""
    unet_file = find_weights(root / "unet", "diffusers")

    def unet(dtype):
        config = UNetConfig.from_json(root / "unet" / "config.json")
        ip = None
        if ip_adapter is not None:
            ip_file = _open_ip_adapter(ip_adapter)
            ip = Subset(ip_file, "ip_adapter.")
        params = nets.convert_unet(open_weights(unet_file), config, ip_adapter=ip, name=str(unet_file), dtype=dtype)
        entry = {"class": "UNet2DConditionModel", "config": config.to_dict(), "ip_adapter": ip is not None}
        return params, entry

    return Job(name, [unet_file] + ([ip_adapter] if ip_adapter else []), unet)


def _sd_jobs(root: Path, ip_adapter: Path | None, dcgd12: bool = False, from_base: bool = False) -> Iterator[Job]:
    unet = _unet_job("unet", root, ip_adapter)
    if not from_base:  # a text-to-image UNet is stored only as the 12-channel initialization
        yield unet
    if dcgd12 or from_base:

        def unet12(dtype):
            params, entry = unet.run(dtype)
            params, config = dcgd12_from_inpaint(params, UNetConfig.from_dict(entry["config"]))
            source = "text-to-image unet (4-channel)" if from_base else "unet (9-channel inpainting)"
            return params, {**entry, "config": config.to_dict(), "initialized_from": source}

        yield Job("unet_dcgd12", unet.files, unet12)
    yield from _sd_shared_jobs(root)


def _sd_shared_jobs(root: Path) -> Iterator[Job]:
    """The VAE and the text encoder (one set serves every UNet: SD-1.5's and its inpainting model's are one)."""
    vae_file = find_weights(root / "vae", "diffusers")

    def vae(dtype):
        config = VAEConfig.from_json(root / "vae" / "config.json")
        params = nets.convert_vae(open_weights(vae_file), config, name=str(vae_file), dtype=dtype)
        return params, {"class": "AutoencoderKL", "config": config.to_dict()}

    yield Job("vae", [vae_file], vae)
    text_file = find_weights(root / "text_encoder", "transformers")

    def text(dtype):
        config = CLIPTextConfig.from_json(root / "text_encoder" / "config.json")
        params = nets.convert_text(open_weights(text_file), config, name=str(text_file), dtype=dtype)
        return params, {"class": "CLIPTextModel", "config": config.to_dict()}

    yield Job("text_encoder", [text_file], text)


def _open_ip_adapter(path: Path):
    source = open_weights(path)
    stray = [k for k in source if not k.startswith(("image_proj.", "ip_adapter."))]
    if stray or not len(source):
        raise WeightFileError(
            f"{describe(path)}: not an IP-Adapter file (expected image_proj.* and ip_adapter.* keys; "
            f"found {', '.join(sorted(stray)[:5]) or 'no keys'})"
        )
    return source


def _image_proj_job(path: Path) -> Job:
    def run(dtype):
        source = Subset(_open_ip_adapter(path), "image_proj.")
        params, (embed_dim, cross) = nets.convert_image_proj(source, name=f"{path} [image_proj]", dtype=dtype)
        config = {"num_tokens": 4, "embed_dim": embed_dim, "cross_attention_dim": cross}
        return params, {"class": "ImageProjection", "config": config}

    return Job("image_proj", [path], run)


def _alpha_clip_job(path: Path) -> Job:
    def run(dtype):
        source = open_weights(path)
        if any(k.startswith("visual.") for k in source):
            source = Subset(source, "visual.")  # a whole-CLIP state dict: take the visual tower
        config = nets.alpha_clip_config(source, name=describe(path))
        params = nets.convert_alpha_clip(source, config, name=describe(path), dtype=dtype)
        return params, {"class": "CLIPVisionTransformer", "config": config.to_dict()}

    return Job("alpha_clip", [path], run)


def mlp_config(source) -> MLPConfig:
    """Read the MLP's widths off its keys: Linear `0` (in), the last Linear `3n` (out)."""
    indices = sorted({int(k.split(".")[0]) for k in source if k.split(".")[0].isdigit()})
    if not indices or indices[-1] % 3:
        raise WeightFileError(f"not a CLIPAway MLP (keys {indices[:8]}); expected Linear/LayerNorm at 0,1,3,4,...")
    last = indices[-1]
    return MLPConfig(
        number_of_hidden_layers=last // 3,
        alpha_clip_embed_dim=int(np.asarray(source["0.weight"]).shape[1]),
        ip_adapter_embed_dim=int(np.asarray(source[f"{last}.weight"]).shape[0]),
    )


def _mlp_job(path: Path) -> Job:
    def run(dtype):
        source = open_weights(path)
        try:
            config = mlp_config(source)
        except WeightFileError as err:
            raise WeightFileError(f"{describe(path)}: {err}") from None
        params = nets.convert_mlp(source, config, name=describe(path), dtype=dtype)
        return params, {"class": "CLIPAwayMLP", "config": config.to_dict()}

    return Job("mlp", [path], run)


def _image_encoder_job(folder: Path) -> Job:
    weights = find_weights(folder, "transformers")

    def run(dtype):
        config = CLIPVisionConfig.from_json(folder / "config.json")
        params = nets.convert_vision(open_weights(weights), config, name=str(weights), dtype=dtype)
        return params, {"class": "CLIPVisionTransformer", "config": config.to_dict()}

    return Job("image_encoder", [weights], run)


def _eval_jobs(sources: Sources) -> Iterator[Job]:
    if sources.inception is not None:
        path = sources.inception

        def inception(dtype):
            params = nets.convert_inception(open_weights(path), name=describe(path), dtype=dtype)
            return params, {"class": "FIDInceptionV3", "config": {}}

        yield Job("inception", [path], inception)
    if sources.lpips is not None and sources.alexnet is not None:
        lins, trunk = sources.lpips, sources.alexnet

        def lpips(dtype):
            name = f"{describe(trunk)} + {describe(lins)}"
            params = nets.convert_lpips(open_weights(trunk), open_weights(lins), name=name, dtype=dtype)
            return params, {"class": "LPIPS", "config": {}}

        yield Job("lpips", [trunk, lins], lpips)
    if sources.eval_clip is not None:
        yield from _clip_jobs(sources.eval_clip, "eval_clip")
    if sources.cmmd_clip is not None:
        yield from _clip_jobs(sources.cmmd_clip, "cmmd_clip", towers=("vision",))


def _clip_jobs(folder: Path, prefix: str = "clip", towers=("text", "vision")) -> Iterator[Job]:
    """An OpenAI CLIP `CLIPModel` folder: text tower + projection, and the vision tower (for crops);
    stored as `{prefix}_text` and `{prefix}_vision`."""
    weights = find_weights(folder, "transformers")
    config = json.loads((folder / "config.json").read_text())
    projection = config.get("projection_dim", 512)

    def text(dtype):
        cfg = CLIPTextConfig.from_dict({**config.get("text_config", {}), "projection_dim": projection})
        source = _only(open_weights(weights), ("text_model.", "text_projection."), weights)
        params = nets.convert_text(source, cfg, with_projection=True, name=f"{weights} [text]", dtype=dtype)
        return params, {"class": "CLIPTextModel", "config": cfg.to_dict(), "with_projection": True}

    def vision(dtype):
        cfg = CLIPVisionConfig.from_dict({**config.get("vision_config", {}), "projection_dim": projection})
        source = _only(open_weights(weights), ("vision_model.", "visual_projection."), weights)
        params = nets.convert_vision(source, cfg, name=f"{weights} [vision]", dtype=dtype)
        logit_scale = float(np.asarray(open_weights(weights)["logit_scale"]))
        return params, {"class": "CLIPVisionTransformer", "config": cfg.to_dict(), "logit_scale": logit_scale}

    if "text" in towers:
        yield Job(f"{prefix}_text", [weights], text)
    if "vision" in towers:
        yield Job(f"{prefix}_vision", [weights], vision)


def _only(source, prefixes: tuple[str, ...], path: Path):
    """The keys of one tower of a CLIPModel file (the other tower's keys are that tower's job)."""
    stray = [k for k in source if not k.startswith((*prefixes, "text_", "vision_", "visual_", "logit_scale"))]
    if stray:
        raise WeightFileError(f"{path}: not a CLIPModel file (unexpected keys {', '.join(sorted(stray)[:5])})")
    return Subset(source, "", keep=prefixes)


def convert(
    sources: Sources,
    out: Path,
    *,
    dtype: str = "float32",
    force: bool = False,
    progress: Callable[[str], None] = print,
) -> dict:
    """Convert everything given in `sources` into the checkpoint directory `out`; returns the manifest."""
    out = Path(out)
    if out.exists() and not force:
        raise InputError(f"{out}: already exists (use --force to replace it)")
    jobs = plan(sources)
    if not jobs:
        raise InputError("nothing to convert: give at least one of --sd-inpaint, --sd-base, --alpha-clip, --mlp, ...")
    np_dtype = np.dtype(_numpy_dtype(dtype))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        manifest = _convert_into(tmp, jobs, sources, np_dtype, dtype, progress)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _convert_into(root, jobs, sources, np_dtype, dtype, progress) -> dict:
    entries, hashes = {}, {}
    for job in jobs:
        progress(f"converting {job.name} from {', '.join(str(f) for f in job.files)}")
        params, entry = job.run(np_dtype)
        save_network(root, job.name, params)
        del params
        for f in job.files:
            hashes.setdefault(str(f), sha256(f))
        entries[job.name] = {
            **entry,
            "dtype": dtype,
            "sources": [{"path": str(f), "sha256": hashes[str(f)]} for f in job.files],
        }
    manifest = {"dtype": dtype, "networks": entries}
    tokenizer = _tokenizer_folder(sources)
    if tokenizer is not None:
        copy_tokenizer(tokenizer, root)
        manifest["tokenizer"] = "tokenizer"
    sd = sources.sd_inpaint or sources.sd_base
    if sd is not None:
        manifest["scheduler"] = json.loads((sd / "scheduler" / "scheduler_config.json").read_text())
        manifest["model_index"] = _read_json(sd / "model_index.json")
    write_manifest(root, manifest)
    return manifest


def _tokenizer_folder(sources: Sources) -> Path | None:
    """SD's tokenizer/, else a CLIPModel folder's own tokenizer files (the same CLIP BPE)."""
    sd = sources.sd_inpaint or sources.sd_base
    if sd is not None:
        return sd / "tokenizer"
    for folder in (sources.eval_clip, sources.clip):
        if folder is not None and (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            return folder
    return None


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _numpy_dtype(name: str):
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    if name not in ("float32", "float16"):
        raise InputError(f"--dtype must be float32 or bfloat16, got {name!r}")
    return name
