"""Table-driven, strict conversion of torch state dicts into Flax param trees.

A table is an ordered tuple of `Rule`s. Each source key must match exactly one rule (the
first that matches); the rule names the param path(s) it fills and how the array is
transformed. Target paths are written dotted, torch-style (`down_blocks.0.conv.kernel`);
`.N` becomes `_N` and `.` becomes `/`, so tables read like the state dicts they convert.

Strict both ways: unused source keys, params nobody filled and shape mismatches are all
collected and reported in one `ConversionError` that names the file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import flax
import numpy as np

Array = np.ndarray
Transform = Callable[[Array], Array | tuple[Array, ...]]


class ConversionError(ValueError):
    """A source file does not fit the network it is converted into."""


def identity(x: Array) -> Array:
    return x


def kernel(x: Array) -> Array:
    """torch Linear [out, in] -> [in, out]; Conv2d OIHW -> HWIO."""
    if x.ndim == 2:
        return x.T
    if x.ndim == 4:
        return x.transpose(2, 3, 1, 0)
    raise ValueError(f"a kernel must be 2-D or 4-D, found shape {tuple(x.shape)}")


def split_qkv_kernel(x: Array) -> tuple[Array, Array, Array]:
    """A fused in_proj weight [3W, W] -> three [W, W] kernels (q, k, v)."""
    return tuple(kernel(part) for part in np.split(x, 3, axis=0))


def split_qkv_bias(x: Array) -> tuple[Array, Array, Array]:
    return tuple(np.split(x, 3, axis=0))


@dataclass(frozen=True)
class Rule:
    pattern: str  # regex, matched against the whole source key
    targets: str | tuple[str, ...]  # dotted param path templates with \1 / \g<name>; () drops the key
    transform: Transform = identity
    _regex: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_regex", re.compile(self.pattern))

    def apply(self, key: str) -> tuple[str, ...] | None:
        match = self._regex.fullmatch(key)
        if match is None:
            return None
        templates = (self.targets,) if isinstance(self.targets, str) else self.targets
        return tuple(param_path(match.expand(t)) for t in templates)


def param_path(dotted: str) -> str:
    """`down_blocks.0.attentions.1.proj_in.kernel` -> `down_blocks_0/attentions_1/proj_in/kernel`."""
    return re.sub(r"\.(\d+)(?=\.|$)", r"_\1", dotted).replace(".", "/")


def target_shapes(abstract_params: Any) -> dict[str, tuple[int, ...]]:
    """Flattened `{path: shape}` of an (abstract, possibly boxed) param tree."""
    tree = flax.core.meta.unbox(abstract_params)
    if "params" in tree and len(tree) == 1:
        tree = tree["params"]
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/")
    return {path: tuple(leaf.shape) for path, leaf in flat.items()}


def _preview(items: Iterable[str], n: int = 6) -> str:
    items = sorted(items)
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def convert_state_dict(
    source: Mapping[str, Any],
    rules: tuple[Rule, ...],
    targets: Mapping[str, tuple[int, ...]],
    *,
    source_name: str,
    dtype: Any = np.float32,
    hint: Callable[[str, tuple, tuple], str] | None = None,
) -> dict:
    """Fill every target param from `source` (a lazy key -> array mapping), one tensor at a time."""
    flat: dict[str, Array] = {}
    unused, unknown, mismatched = [], [], []
    for key in source:
        rule, paths = _match(rules, key)
        if rule is None:
            unused.append(key)
            continue
        if not paths:
            continue  # deliberately dropped (e.g. non-persistent buffers in old checkpoints)
        arrays = rule.transform(np.asarray(source[key]))
        arrays = arrays if isinstance(arrays, tuple) else (arrays,)
        for path, array in zip(paths, arrays, strict=True):
            if path not in targets:
                unknown.append(f"{key} -> {path}")
            elif tuple(array.shape) != targets[path]:
                note = hint(path, targets[path], tuple(array.shape)) if hint else ""
                mismatched.append(f"{key}: expected {targets[path]} (as {path}), found {tuple(array.shape)}{note}")
            elif path in flat:
                unknown.append(f"{key} -> {path} (filled twice)")
            else:
                flat[path] = np.asarray(array, dtype=dtype)
    missing = [path for path in targets if path not in flat and not any(path in m for m in mismatched)]
    _raise_if_errors(source_name, unused, unknown, missing, mismatched)
    return flax.traverse_util.unflatten_dict(flat, sep="/")


def _match(rules: tuple[Rule, ...], key: str) -> tuple[Rule | None, tuple[str, ...] | None]:
    for rule in rules:
        paths = rule.apply(key)
        if paths is not None:
            return rule, paths
    return None, None


def _raise_if_errors(source_name, unused, unknown, missing, mismatched):
    problems = []
    if mismatched:
        problems.append("shape mismatch: " + "; ".join(mismatched[:4]) + (" ..." if len(mismatched) > 4 else ""))
    if unused:
        problems.append(f"{len(unused)} unexpected keys: {_preview(unused)}")
    if unknown:
        problems.append(f"{len(unknown)} keys map to no param: {_preview(unknown)}")
    if missing:
        problems.append(f"{len(missing)} params not filled (missing keys): {_preview(missing)}")
    if problems:
        raise ConversionError(f"{source_name}: " + " | ".join(problems))


def prefixed(rules: tuple[Rule, ...], prefix: str) -> tuple[Rule, ...]:
    """The same table for keys that may carry `prefix` (transformers 4 saved `text_model.embeddings...`,
    transformers 5 saves `embeddings...` for a bare CLIPTextModel)."""
    return tuple(Rule(f"(?:{re.escape(prefix)})?" + r.pattern, r.targets, r.transform) for r in rules)
