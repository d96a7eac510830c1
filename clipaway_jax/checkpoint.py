"""The checkpoint format: one Orbax item per network plus `manifest.json` (configs, sources, dtype).

    NAME/
      manifest.json      every network's class and config, scheduler config, sources + sha256
      tokenizer/         the CLIP tokenizer files, copied
      params/<network>/  an Orbax StandardCheckpoint of that network's params

`load_checkpoint` restores straight into sharded arrays (abstract targets carry NamedShardings),
so a mesh never sees a full unsharded copy on one device. No torch needed.
"""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from clipaway_jax import __version__, hostmem
from clipaway_jax.atomic import write_atomic
from clipaway_jax.models import (
    AutoencoderKL,
    CLIPAwayMLP,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
    CLIPVisionTransformer,
    ImageProjection,
    MLPConfig,
    UNet2DConditionModel,
    UNetConfig,
    VAEConfig,
    abstract_params,
)
from clipaway_jax.sharding import REPLICATED, param_shardings

FORMAT = "clipaway-jax/1"
MANIFEST = "manifest.json"


class CheckpointError(ValueError):
    """A checkpoint directory is missing, incomplete or of another format."""


def build_module(entry: dict, dtype=jnp.float32):
    """The Flax module (and its init inputs) a manifest entry describes."""
    kind, cfg = entry["class"], entry.get("config", {})
    if kind == "UNet2DConditionModel":
        module = UNet2DConditionModel(UNetConfig.from_dict(cfg), dtype)
        extra = (jnp.zeros((1, 1, module.config.cross_attention_dim)),) if entry.get("ip_adapter") else ()
        from clipaway_jax.models import example_inputs

        return module, (*example_inputs(module), *extra)
    if kind == "ImageProjection":
        module = ImageProjection(cfg["num_tokens"], cfg["cross_attention_dim"], dtype)
        return module, (jnp.zeros((1, cfg["embed_dim"])),)
    if kind == "LPIPS":
        from clipaway_jax.models.lpips import LPIPS

        image = jnp.zeros((1, 64, 64, 3))
        return LPIPS(dtype), (image, image)
    if kind == "FIDInceptionV3":
        from clipaway_jax.models.inception import FIDInceptionV3

        return FIDInceptionV3(cfg.get("resize", "tf1"), dtype), (jnp.zeros((1, 75, 75, 3)),)
    builders = {
        "AutoencoderKL": lambda: AutoencoderKL(VAEConfig.from_dict(cfg), dtype),
        "CLIPTextModel": lambda: CLIPTextModel(
            CLIPTextConfig.from_dict(cfg), entry.get("with_projection", False), dtype
        ),
        "CLIPVisionTransformer": lambda: CLIPVisionTransformer(CLIPVisionConfig.from_dict(cfg), dtype),
        "CLIPAwayMLP": lambda: CLIPAwayMLP(MLPConfig.from_dict(cfg), dtype),
    }
    if kind not in builders:
        raise CheckpointError(f"unknown network class {kind!r} in manifest")
    module = builders[kind]()
    return module, ()


@dataclass
class Checkpoint:
    path: Path
    manifest: dict
    params: dict[str, Any] = field(default_factory=dict)

    def module(self, name: str, dtype=jnp.float32):
        return build_module(self.manifest["networks"][name], dtype)[0]

    @property
    def tokenizer_path(self) -> Path:
        return self.path / "tokenizer"

    def __contains__(self, name: str) -> bool:
        return name in self.params


def save_network(root: Path, name: str, params: Any) -> None:
    """Write one network's params as an Orbax StandardCheckpoint under `root/params/name`."""
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save((root / "params" / name).absolute(), params)


def write_manifest(root: Path, manifest: dict) -> None:
    manifest = {"format": FORMAT, "package_version": __version__, **manifest}
    write_atomic(root / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=2, sort_keys=True).encode()))


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint directory not found")
    file = path / MANIFEST
    if not file.is_file():
        raise CheckpointError(f"{path}: not a complete clipaway-jax checkpoint (no {MANIFEST})")
    try:
        manifest = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{file}: damaged checkpoint: its manifest is not valid JSON ({err}); "
                              "convert or export it again") from None  # fmt: skip
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise CheckpointError(f"{file}: format {found!r}, expected {FORMAT!r}")
    return manifest


def load_checkpoint(
    path: str | Path,
    mesh: jax.sharding.Mesh | None = None,
    shardings: dict | None = None,
    dtype: Any = None,
    networks: list[str] | None = None,
    rules=REPLICATED,
) -> Checkpoint:
    """Restore params (all networks, or `networks`). With `mesh`, each array is restored directly
    into its NamedSharding from the logical rules (or `shardings[name]` when given); `dtype` casts
    floating params on restore (e.g. bfloat16 for inference)."""
    path = Path(path)
    manifest = read_manifest(path)
    names = networks or list(manifest["networks"])
    checkpoint = Checkpoint(path, manifest)
    hostmem.mmap_large_allocations()  # freed staging copies go back to the OS instead of staying resident
    with ocp.StandardCheckpointer() as checkpointer:
        for name in names:
            if name not in manifest["networks"]:
                raise CheckpointError(f"{path}: no network {name!r}; it has {sorted(manifest['networks'])}")
            entry = manifest["networks"][name]
            target = _restore_target(entry, mesh, (shardings or {}).get(name), dtype, rules)
            if "overlay" in entry:
                checkpoint.params[name] = _restore_overlay(checkpointer, path, manifest["networks"], name, target,
                                                           mesh, dtype, rules)  # fmt: skip
                continue
            stored = entry.get("params_of", name)  # e.g. an eval tower that IS alpha_clip
            checkpoint.params[name] = checkpointer.restore((path / "params" / stored).absolute(), target)
    hostmem.release_freed()
    return checkpoint


def _restore_overlay(checkpointer, path: Path, networks: dict, name: str, target, mesh, dtype, rules):
    """A network stored as another's params with some top-level modules of its own (`params_of` +
    `overlay`: e.g. a text-to-image UNet that is an inpainting UNet with another conv_in)."""
    entry = networks[name]
    base = checkpointer.restore((path / "params" / entry["params_of"]).absolute(),
                                _restore_target(networks[entry["params_of"]], mesh, None, dtype, rules))  # fmt: skip
    own = checkpointer.restore((path / "params" / name).absolute(), {k: target[k] for k in entry["overlay"]})
    merged = {**base, **own}
    if set(merged) != set(target):
        raise CheckpointError(f"{path}: {name} (overlay of {entry['params_of']}) has modules {sorted(merged)}, "
                              f"its config needs {sorted(target)}")  # fmt: skip
    for key, (got, want) in _leaf_shapes(merged, target).items():
        if got != want:
            raise CheckpointError(f"{path}: {name}/{key}: shape {got} from {entry['params_of']}, expected {want}")
    return merged


def _leaf_shapes(tree, target) -> dict:
    flat = lambda t: {"/".join(str(getattr(k, "key", k)) for k in keys): leaf.shape
                      for keys, leaf in jax.tree_util.tree_flatten_with_path(t)[0]}  # fmt: skip
    got, want = flat(tree), flat(target)
    return {k: (got.get(k), want.get(k)) for k in want}


ARCHITECTURE_KEYS = ("class", "config", "ip_adapter", "with_projection")  # what `build_module` reads


def entry_abstract_params(entry: dict):
    """The boxed abstract params of a manifest entry's network, traced once per architecture and process
    (tracing a UNet's init takes ~0.4 s; a process may load the same checkpoint many times)."""
    return _abstract_params_of(json.dumps({k: entry[k] for k in ARCHITECTURE_KEYS if k in entry}, sort_keys=True))


@functools.lru_cache(maxsize=64)
def _abstract_params_of(architecture: str):
    module, inputs = build_module(json.loads(architecture))
    return abstract_params(module, *inputs)


def _restore_target(entry: dict, mesh, shardings, dtype, rules):
    """Abstract arrays (shape, dtype, sharding) for Orbax to restore into."""
    import flax

    abstract = entry_abstract_params(entry)
    if shardings is None and mesh is not None:
        shardings = param_shardings(abstract, mesh, rules)["params"]
    tree = flax.core.meta.unbox(abstract)["params"]
    if shardings is None:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        shardings = jax.tree_util.tree_map(lambda _: device, tree)
    want = jnp.dtype(dtype if dtype is not None else _stored_dtype(entry))
    return jax.tree_util.tree_map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(
            leaf.shape, want if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf.dtype, sharding=sharding
        ),
        tree,
        shardings,
    )


def _stored_dtype(entry: dict):
    return jnp.bfloat16 if entry.get("dtype") == "bfloat16" else jnp.float32


TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json")


def copy_tokenizer(source: Path, root: Path) -> None:
    """The CLIP tokenizer's files only (a CLIPModel folder also holds weights)."""
    (root / "tokenizer").mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, root / "tokenizer" / name)


def sha256(path: Path, chunk: int = 1 << 24) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def params_bytes(params: Any) -> int:
    return sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(params))
