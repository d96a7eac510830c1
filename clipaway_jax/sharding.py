"""Meshes and logical-axis rules: the model code names axes, this file maps them onto devices.

Two rule sets: `REPLICATED` (data parallel, every param on every device) and `FSDP` (each
kernel's output axis split over the `fsdp` mesh axis). A param axis whose size the mesh axis
does not divide stays replicated, so tiny configs shard as well as full ones.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA, FSDP = "data", "fsdp"

REPLICATED: tuple[tuple[str, str | None], ...] = (
    ("batch", (DATA, FSDP)),
    ("embed", None),
    ("mlp", None),
    ("heads", None),
    ("conv_in", None),
    ("conv_out", None),
    ("vocab", None),
    ("norm", None),
)

FSDP_RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", (DATA, FSDP)),
    ("embed", None),
    ("mlp", FSDP),
    ("heads", FSDP),
    ("conv_in", None),
    ("conv_out", FSDP),
    ("vocab", FSDP),
    ("norm", None),
)


def make_mesh(data: int = -1, fsdp: int = 1, devices=None) -> Mesh:
    """A (data, fsdp) mesh over all (or the given) devices; -1 takes what is left."""
    devices = list(jax.devices() if devices is None else devices)
    if data == -1:
        if len(devices) % fsdp:
            raise ValueError(f"fsdp={fsdp} does not divide the {len(devices)} devices")
        data = len(devices) // fsdp
    if data * fsdp != len(devices):
        raise ValueError(f"mesh data={data} x fsdp={fsdp} needs {data * fsdp} devices, found {len(devices)}")
    return Mesh(np.asarray(devices).reshape(data, fsdp), (DATA, FSDP))


def _fit(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """Drop mesh axes that do not divide the param's dimension (replicate that dimension instead)."""
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        size = math.prod(mesh.shape[n] for n in names)
        fitted.append(axes if names and dim % size == 0 else None)
    return PartitionSpec(*fitted)


def param_shardings(abstract_params, mesh: Mesh, rules=REPLICATED):
    """NamedShardings for a boxed abstract param tree (from `jax.eval_shape(model.init)`), unboxed."""
    logical = nn.get_partition_spec(abstract_params)
    with nn.logical_axis_rules(rules):
        mesh_specs = nn.logical_to_mesh(logical)
    shapes = nn.unbox(abstract_params)
    return jax.tree_util.tree_map(
        lambda spec, leaf: NamedSharding(mesh, _fit(spec, leaf.shape, mesh)),
        mesh_specs,
        shapes,
        is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Split the leading (batch) axis over every mesh axis."""
    return NamedSharding(mesh, PartitionSpec((DATA, FSDP), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())
