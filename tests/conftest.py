"""Session-wide fixtures: the tiny published files and their converted checkpoint, built once; and one
persistent XLA compilation cache for the whole run (subprocesses inherit it through the environment),
so the many tests that compile the same tiny programs compile them once."""

import os
import tempfile

# Two pytest workers share two cores, and torch's two OpenMP threads spin while they wait for work: a torch
# reference beside a busy worker took 3-4x its time alone, a third of it spinning (the DCGD parity test
# beside a two-thread matmul loop: 19-23 s; 13 s with passive waiting, 10 s with one thread; user CPU 33-38 s
# against 24 and 23 s). The whole run on a fresh clone: 764 s of pytest before, 637 s with passive waiting,
# 617 s with one thread as well (user CPU 20.1 -> 17.7 min). Set before torch is imported (libgomp reads
# them once); subprocesses inherit them. XLA's own threads are not OpenMP's and are not limited by this.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import jax  # noqa: E402
import pytest
from fixtures import write_published

from clipaway_jax.convert.published import Sources, convert

_CACHE = os.environ.get("JAX_COMPILATION_CACHE_DIR") or tempfile.mkdtemp(prefix="clipaway-jax-test-xla-")
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(scope="session")
def published(tmp_path_factory):
    return write_published(tmp_path_factory.mktemp("published"))


@pytest.fixture(scope="session")
def tiny_checkpoint(published, tmp_path_factory):
    out = tmp_path_factory.mktemp("checkpoint") / "tiny"
    convert(Sources(**published), out, progress=lambda _: None)
    return out


# The slowest files first (measured CPU seconds, 2026-11-23): with `--dist loadfile` the two workers then end
# together instead of one finishing a long file alone.
HEAVY_FIRST = ("test_remove", "test_infer", "test_mini_train", "test_train", "test_wheel", "test_pipeline",
               "test_blended", "test_dcgd", "test_eval", "test_convert", "test_app", "test_export",
               "test_unet")  # fmt: skip


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))
