"""Hugging Face Hub ids for `convert`'s inputs: `owner/name[@revision][:path/in/repo]`.

A value that names an existing local file or folder is used as it is. Otherwise a repo id is resolved
through `huggingface_hub`, downloading only the files that `convert` reads (one weights file per
component, chosen with the same preference as for local folders). The usual variables apply
(`HF_HOME`, `HF_HUB_CACHE`, `HF_HUB_OFFLINE`); offline, or when the Hub cannot be reached, the files
come from the local cache.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from clipaway_jax.convert.readers import WEIGHT_NAMES, WeightFileError

REPO_ID = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(@(?P<revision>[\w./-]+?))?(:(?P<path>.+))?$")

# What each input kind reads inside its repo folder: (config-like files, {component folder: weights kind}).
SD_FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "unet/config.json",
    "vae/config.json",
    "text_encoder/config.json",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer_config.json",
    "tokenizer/special_tokens_map.json",
)
SD_WEIGHTS = {"unet": "diffusers", "vae": "diffusers", "text_encoder": "transformers"}

# Where the published files sit when only the repo is named (h94/IP-Adapter holds both).
DEFAULT_PATHS = {"ip_adapter": "models/ip-adapter_sd15.bin", "image_encoder": "models/image_encoder"}


@dataclass(frozen=True)
class HubId:
    repo: str
    revision: str | None
    path: str  # a file or folder inside the repo; "" = the repo root


def parse(value: str, kind: str) -> HubId | None:
    """The hub id `value` names, or None when it is a local path (existing, or not repo-shaped)."""
    if Path(value).expanduser().exists() or value.startswith((".", "/", "~")):
        return None
    match = REPO_ID.match(value)
    if match is None:
        return None
    path = (match["path"] or DEFAULT_PATHS.get(kind, "")).strip("/")
    return HubId(match["repo"], match["revision"], path)


def resolve(value: str | Path | None, kind: str) -> Path | None:
    """A local path for `value`: itself, or the downloaded/cached files of the hub id it names.
    `kind`: "sd" (a diffusers SD folder), "transformers" (a model folder) or "file" kinds
    ("ip_adapter", "alpha_clip", "mlp")."""
    if value is None:
        return None
    hub_id = parse(str(value), kind)
    if hub_id is None:
        return Path(value).expanduser()
    return _download(hub_id, kind, str(value))


def _download(hub_id: HubId, kind: str, given: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise WeightFileError(f"{given}: not a local path; reading Hub ids needs huggingface_hub") from None
    files = _listing(hub_id, given)
    if files is None:
        folder = _cached(hub_id, given)
    else:
        wanted = _wanted(hub_id.path, kind, files)
        folder = Path(snapshot_download(hub_id.repo, revision=hub_id.revision, allow_patterns=wanted))
    return folder / hub_id.path if hub_id.path else folder


def _listing(hub_id: HubId, given: str) -> list[str] | None:
    """The repo's files from the Hub, or None offline / unreachable (the cache decides then)."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        return None
    try:
        return HfApi().list_repo_files(hub_id.repo, revision=hub_id.revision)
    except Exception as err:  # no network, gated repo: fall back to the cache
        if type(err).__name__ in ("RepositoryNotFoundError", "RevisionNotFoundError"):
            raise WeightFileError(f"{given}: no such local path, and the Hub has no {hub_id.repo!r} "
                                  f"(revision {hub_id.revision or 'main'})") from None  # fmt: skip
        return None


def _cached(hub_id: HubId, given: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(hub_id.repo, revision=hub_id.revision, local_files_only=True))
    except Exception as err:
        raise WeightFileError(
            f"{given}: no such local path, and {hub_id.repo!r} is neither reachable on the Hub nor in the "
            f"local Hugging Face cache ({type(err).__name__}); download it first, or pass a folder"
        ) from None


def _wanted(path: str, kind: str, files: list[str]) -> list[str]:
    """The repo files `convert` reads for this kind."""
    prefix = f"{path}/" if path else ""
    if kind == "sd":
        return [prefix + f for f in SD_FILES] + [_choose(prefix + part, w, files) for part, w in SD_WEIGHTS.items()]
    if kind == "transformers":
        return [prefix + "config.json", _choose(path, "transformers", files)]
    return [path]


def _choose(folder: str, weights: str, files: list[str]) -> str:
    """The one weights file to fetch, preferring safetensors and full precision (as `find_weights`)."""
    names = WEIGHT_NAMES[weights]
    candidates = [f"{folder}/{n}" if folder else n for n in (*names, *(n.replace(".", ".fp16.", 1) for n in names))]
    return next((c for c in candidates if c in files), candidates[0])  # absent: the folder check names it
