"""XLA compiler options by backend, passed to each heavy `jax.jit` (global XLA_FLAGS are left alone).

On CPU (measured on this project's 2-core machine; bench/RESULTS.md):
- XLA routes convolutions through YNNPACK fusions by default, which are slow at the UNet's shapes (a 3x3
  conv on 8x8x1280: 66 vs 282 GFLOP/s with XLA's own emitter). Without them the full SD-1.5 UNet forward
  takes 6.7 s instead of 8.6 s.
- The default scheduler runs independent work early. In bfloat16 that includes XLA's float32 copies of
  every weight (CPU dots and convolutions run in float32), all live at once: 3.5 GB of temporaries for
  one UNet forward. The memory-optimized scheduler brings that to 0.18 GB at the same speed.
- In a sampling loop those conversions are loop-invariant, and XLA hoists them out of the loop, which
  holds the float32 copies for the whole loop (3.4 GB again). Without while-loop invariant code motion
  temporaries stay at 0.18 GB; the only other invariants in the loop (the text's cross-attention keys
  and values) are cheap to recompute, and the fp32 UNet forward time is unchanged (7.21 vs 7.26 s).
Set CLIPAWAY_JAX_XLA_DEFAULTS=1 to compile with XLA's defaults instead.
"""

from __future__ import annotations

import functools
import os

import jax

CPU_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "",
    "xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED",
    "xla_disable_hlo_passes": "while-loop-invariant-code-motion",
}


def compiler_options() -> dict[str, str] | None:
    """Options for programs on JAX's default backend; None means XLA's defaults."""
    if jax.default_backend() != "cpu" or os.environ.get("CLIPAWAY_JAX_XLA_DEFAULTS") or not _cpu_options_known():
        return None
    return dict(CPU_OPTIONS)


def jit(fn, **kwargs):
    """`jax.jit` with this backend's compiler options."""
    return jax.jit(fn, compiler_options=compiler_options(), **kwargs)


@functools.cache
def _cpu_options_known() -> bool:
    """A jaxlib that does not know the option rejects it at compile time: then use the defaults."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=CPU_OPTIONS).lower(1.0).compile()
        return True
    except Exception:  # noqa: BLE001 - any refusal means "not supported here"
        return False
