"""Host memory on Linux/glibc: give freed buffers back to the OS.

glibc raises its mmap threshold each time a large mmapped block is freed (up to 32 MB), so after a
checkpoint restore the staging copies of most weights end up on its heap, freed but still resident:
1.4 GB for the full fp32 model set. The same happens to XLA's compiler memory. Both are measured in
bench/RESULTS.md; elsewhere (no glibc) these calls do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_MMAP_THRESHOLD = -3


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


def mmap_large_allocations(threshold: int = 1 << 20) -> None:
    """Serve allocations of `threshold` bytes or more with mmap, so freeing one returns it at once."""
    if _libc() is not None:
        _libc().mallopt(M_MMAP_THRESHOLD, threshold)


def release_freed() -> None:
    """Return freed heap pages to the OS (after a restore or a compile)."""
    if _libc() is not None:
        _libc().malloc_trim(0)
