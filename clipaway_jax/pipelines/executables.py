"""Compiled programs kept on disk beside JAX's persistent compilation cache, keyed by everything that
shapes them, so a new process skips tracing as well as compiling (the full pipeline traces for 5.4 s
before JAX's own cache can even be asked). Single-process only; any unreadable entry is recompiled.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import pickle
from collections.abc import Callable
from pathlib import Path

import jax
from jax.experimental import serialize_executable

from clipaway_jax import xla
from clipaway_jax.atomic import write_atomic

log = logging.getLogger(__name__)


def cache_folder() -> Path | None:
    directory = jax.config.jax_compilation_cache_dir
    if not directory or jax.process_count() > 1:
        return None
    return Path(directory) / "clipaway-executables"


def signature(*parts, args) -> str:
    """A hash of `parts` and of every argument's path, shape, dtype and sharding, plus the jax version,
    the devices and the compiler options."""
    leaves = jax.tree_util.tree_flatten_with_path(args)[0]
    described = [(jax.tree_util.keystr(path), getattr(a, "shape", ()), str(getattr(a, "dtype", type(a))),
                  str(getattr(a, "sharding", ""))) for path, a in leaves]  # fmt: skip
    devices = [(d.platform, d.device_kind) for d in jax.devices()]
    text = repr((parts, described, jax.__version__, devices, xla.compiler_options(), _code_hash()))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _compile_noting_cache_hits(compile_fn) -> tuple[jax.stages.Compiled, bool]:
    hits = []
    listener = lambda event, **_: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None
    jax.monitoring.register_event_listener(listener)
    try:
        return compile_fn(), bool(hits)
    finally:
        jax.monitoring.unregister_event_listener(listener)


@functools.cache
def _code_hash() -> str:
    """The library's own source: a changed model or sampler must not reuse an old program."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parents[1].rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def load_or_compile(key: str, lower_fn: Callable[[], jax.stages.Lowered]) -> jax.stages.Compiled:
    """The executable stored under `key`, else `lower_fn()` compiled (and stored unless JAX's cache gave it)."""
    folder = cache_folder()
    path = folder / f"{key}.pkl" if folder else None
    if path is not None and path.is_file():
        try:
            payload, in_tree, out_tree = pickle.loads(path.read_bytes())
            return serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
        except Exception as err:  # noqa: BLE001 - a stale or torn entry is simply rebuilt
            log.warning("%s: unreadable cached executable (%s); recompiling", path, err)
    # Lowered first: the hits watched must be the program's own, not those of small programs that tracing
    # compiles on the way (another process may have cached those, which would wrongly skip the store)
    compiled, from_jax_cache = _compile_noting_cache_hits(lower_fn().compile)
    if path is None or from_jax_cache:
        # An executable that JAX read back from its own cache serializes without its code ("Function ...
        # not found" when run): leave that program to JAX's cache (a warm start then traces, too)
        return compiled
    write_atomic(path, lambda f: pickle.dump(serialize_executable.serialize(compiled), f))
    return compiled
