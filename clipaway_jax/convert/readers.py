"""Lazy, torch-free-where-possible readers of published weight files.

Every reader returns a `Mapping[str, np.ndarray]` that loads one tensor per lookup, so a
converter streams tensor by tensor. Errors name the file and say what is wrong with it.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np


class WeightFileError(ValueError):
    """A weight file is missing, corrupt, truncated or unsafe."""


class SafetensorsFile(Mapping):
    """A `.safetensors` file through safetensors' numpy API (no torch needed)."""

    def __init__(self, path: str | Path, prefix: str = ""):
        from safetensors import safe_open

        self.path, self.prefix = Path(path), prefix
        if not self.path.is_file():
            raise WeightFileError(f"{self.path}: file not found")
        try:
            self._file = safe_open(str(self.path), framework="numpy")
            names = list(self._file.keys())
        except Exception as err:  # safetensors raises its own error types for bad headers
            raise WeightFileError(f"{self.path}: not a readable .safetensors file ({err})") from None
        self._check_complete()
        self._keys = [n[len(prefix) :] for n in names if n.startswith(prefix)]
        self._key_set = set(self._keys)

    def _check_complete(self):
        """A truncated file has a valid header but its data ends early; safe_open does not notice."""
        with open(self.path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(header_len))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        size, needed = self.path.stat().st_size, 8 + header_len + end
        if size < needed:
            raise WeightFileError(f"{self.path}: truncated ({size} bytes, its header needs {needed})")

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._key_set:
            raise KeyError(key)
        try:
            return self._file.get_tensor(self.prefix + key)
        except Exception as err:
            raise WeightFileError(f"{self.path}: cannot read tensor {key!r} ({err})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


class TorchFile(Mapping):
    """A torch pickle (`.bin`, `.pth`), loaded with `weights_only=True` and memory-mapped."""

    def __init__(self, path: str | Path, prefix: str = "", state: dict | None = None):
        self.path, self.prefix = Path(path), prefix
        self._state = state if state is not None else load_torch_pickle(self.path)
        self._keys = [k[len(prefix) :] for k in self._state if k.startswith(prefix)]

    def __getitem__(self, key: str) -> np.ndarray:
        tensor = self._state[self.prefix + key]  # KeyError for a missing key, as a Mapping should
        if not hasattr(tensor, "numpy"):
            raise WeightFileError(f"{self.path}: entry {key!r} is not a tensor ({type(tensor).__name__})")
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        return tensor.detach().cpu().numpy()

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def load_torch_pickle(path: Path) -> dict:
    """A flat {key: tensor} dict; nested dicts (IP-Adapter's) are flattened with dots."""
    try:
        import torch
    except ImportError:
        raise WeightFileError(
            f"{path}: reading torch pickles needs torch (pip install 'clipaway-jax[torch]'); "
            "converted checkpoints do not"
        ) from None
    if not path.is_file():
        raise WeightFileError(f"{path}: file not found")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as err:
        raise WeightFileError(_explain_torch_error(path, err)) from None
    if not isinstance(state, dict):
        raise WeightFileError(f"{path}: holds a {type(state).__name__}, not a state dict")
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return _flatten(state)


def _explain_torch_error(path: Path, err: Exception) -> str:
    text = str(err)
    if "weights_only" in text or "Unsupported global" in text or "UnpicklingError" in type(err).__name__:
        first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
        return f"{path}: unsafe pickle: loading it would run code, refused (weights_only=True): {first[:200]}"
    return f"{path}: corrupt or truncated torch file ({type(err).__name__}: {text.strip()[:200]})"


def _flatten(state: Mapping, prefix: str = "") -> dict:
    flat = {}
    for key, value in state.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def open_weights(path: str | Path, prefix: str = "") -> Mapping[str, np.ndarray]:
    """A safetensors or torch file as a lazy mapping (keys with `prefix` stripped), read by what its
    bytes are, whatever its name says (a `.pth` that is really safetensors is read as safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"{path}: file not found")
    kind = sniff_format(path)
    if kind == "safetensors":
        return SafetensorsFile(path, prefix)
    if kind in TORCH_FORMATS:
        return TorchFile(path, prefix)
    raise WeightFileError(f"{path}: not a weights file: {kind} (expected safetensors or a torch .bin/.pth)")


TORCH_FORMATS = ("torch zip", "torch legacy pickle")
SUFFIX_FORMATS = {".safetensors": ("safetensors",), ".bin": TORCH_FORMATS, ".pth": TORCH_FORMATS, ".pt": TORCH_FORMATS}


def describe(path: Path) -> str:
    """The path, plus what the file really is when its name says otherwise (for error messages)."""
    path = Path(path)
    expected = SUFFIX_FORMATS.get(path.suffix)
    if expected is None or not path.is_file():
        return str(path)
    kind = sniff_format(path)
    return str(path) if kind in expected else f"{path} (a {kind} file despite its {path.suffix} name)"


def sniff_format(path: Path) -> str:
    """What a weights file is by its first bytes: "safetensors", "torch zip", "torch legacy pickle",
    or a short description of something else."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04":
        return "torch zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocol 2-5
        return "torch legacy pickle"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"
    if not head:
        return "an empty file"
    return f"unknown format (starts with {head[:8]!r})"


WEIGHT_NAMES = {
    "diffusers": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "transformers": ("model.safetensors", "pytorch_model.bin"),
}


def find_weights(folder: Path, kind: str) -> Path:
    """The weights file of a diffusers/transformers component folder, preferring safetensors and
    full precision over `.fp16.` variants."""
    names = WEIGHT_NAMES[kind]
    candidates = [*names, *(n.replace(".", ".fp16.", 1) for n in names)]
    for name in candidates:
        if (folder / name).is_file():
            return folder / name
    if not folder.is_dir():
        raise WeightFileError(f"{folder}: folder not found (expected one of: {', '.join(candidates)})")
    raise WeightFileError(f"{folder}: no weights file; expected one of: {', '.join(candidates)}")


class Subset(Mapping):
    """The keys of `source` under `prefix`, with the prefix stripped (one sub-dict of a file); `keep`
    narrows them further to keys starting with one of those strings."""

    def __init__(self, source: Mapping, prefix: str, keep: tuple[str, ...] = ("",)):
        self._source, self._prefix = source, prefix
        self._keys = [k[len(prefix) :] for k in source if k.startswith(prefix) and k[len(prefix) :].startswith(keep)]

    def __getitem__(self, key: str):
        return self._source[self._prefix + key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)
