"""One command for a machine with an accelerator: detects the backend and prints one table, then writes
it as a section of bench/RESULTS.md named after the device.

    python bench/accelerator.py                  # full SD-1.5 sizes on GPU/TPU; a reduced set on CPU
    python bench/accelerator.py --dtype bfloat16 --no-write

Measured (random weights, the real configs): UNet forward at batch 2 and 16; the whole removal
(AlphaCLIP, MLP, text, VAE, 50-step PNDM with CFG, decode) at 512x512 in images/s at batch 1, 8 and
32 on one device and data-parallel over all; the removal program's cold compile and its warm start
from the executable store; peak device memory. On CPU it runs the `mid` set at 256 px, 10 steps and
batches 1/2, so that the script is tested. A measurement that fails (e.g. out of device memory) is
reported as such and the rest goes on; each row is printed as soon as it is measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import pixel_size, random_checkpoint  # noqa: E402

from clipaway_jax import xla  # noqa: E402
from clipaway_jax.pipelines.clipaway import CLIPAwayPipeline, RemovalOptions  # noqa: E402
from clipaway_jax.sharding import make_mesh  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def _timed(fn, runs: int = 3) -> float:
    fn()  # compile / warm up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def unet_forward(pipe: CLIPAwayPipeline, batch: int) -> float:
    unet, params = pipe.nets.unet, pipe.params["unet"]
    cfg, h = unet.config, pixel_size(pipe.checkpoint) // pipe.nets.vae.config.scale_factor
    rng = np.random.RandomState(0)
    x = jnp.asarray(rng.randn(batch, h, h, cfg.in_channels), jnp.float32)
    ctx = jnp.asarray(rng.randn(batch, 77, cfg.cross_attention_dim), jnp.float32)
    tokens = jnp.asarray(rng.randn(batch, 4, cfg.cross_attention_dim), jnp.float32)
    forward = xla.jit(lambda p, x, c, k: unet.apply(p, x, jnp.full((batch,), 500), c, k, 1.0))
    return _timed(lambda: forward(params, x, ctx, tokens).block_until_ready())


def removal(pipe: CLIPAwayPipeline, batch: int, steps: int) -> float:
    """Seconds per call of the whole program on `batch` images (compiled once before timing)."""
    px = pixel_size(pipe.checkpoint)
    rng = np.random.RandomState(1)
    images = rng.rand(batch, px, px, 3).astype(np.float32)
    masks = np.zeros((batch, px, px), np.float32)
    masks[:, px // 4 : px // 2, px // 3 : 2 * px // 3] = 1
    options = RemovalOptions(steps=steps)
    runs = 2 if jax.default_backend() != "cpu" else 1
    return _timed(lambda: pipe.remove(images, masks, options=options), runs=runs)


def compile_times(pipe_factory, steps: int) -> tuple[float, float]:
    """(cold compile, warm start) of the removal program at batch 1; warm = a new pipeline reading the
    executable that the cold one stored."""
    from clipaway_jax.pipelines.clipaway import image_keys

    cache = tempfile.mkdtemp(prefix="clipaway-accel-cache-")
    jax.config.update("jax_compilation_cache_dir", cache)
    seconds = []
    for _ in range(2):
        pipe = pipe_factory()
        px = pixel_size(pipe.checkpoint)
        batch = (np.zeros((1, px, px, 3), np.float32), np.ones((1, px, px), np.float32), pipe.text_ids([""], ["n"]))
        args = (pipe.params, *batch, image_keys(0, [0]), jnp.float32(7.5), jnp.float32(1.0),
                (jnp.int32(0), jnp.bool_(False)))  # fmt: skip
        start = time.perf_counter()
        pipe.compiled(RemovalOptions(steps=steps), args)
        seconds.append(time.perf_counter() - start)
    return seconds[0], seconds[1]


def peak_memory_gb() -> float:
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 1e9
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # CPU: the process's peak RSS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args()
    backend, device = jax.default_backend(), jax.devices()[0].device_kind
    accelerator = backend != "cpu"
    size, steps = ("full", 50) if accelerator else ("mid", 10)
    batches, unet_batches = ((1, 8, 32), (2, 16)) if accelerator else ((1, 2), (2, 4))
    dtype = jnp.dtype(args.dtype)
    factory = lambda mesh=None: CLIPAwayPipeline(random_checkpoint(size), dtype=dtype, mesh=mesh)
    pipe = factory()
    px = pixel_size(pipe.checkpoint)
    rows = []

    def row(name: str, measure) -> None:
        """Measure and print at once (a run cut short by a time limit still shows what it got)."""
        try:
            value = measure()
        except Exception as err:  # noqa: BLE001 - e.g. out of device memory at a large batch: say so, go on
            value = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
        rows.append((name, value))
        print(f"{name}: {value}", flush=True)

    for b in unet_batches:
        row(f"UNet forward, batch {b}", lambda b=b: f"{unet_forward(pipe, b) * 1000:.1f} ms")
    for b in batches:
        row(f"removal {px}x{px}, {steps} steps, batch {b}, 1 device",
            lambda b=b: f"{b / removal(pipe, b, steps):.3f} images/s")  # fmt: skip
    if jax.device_count() > 1:
        b = batches[-1] * jax.device_count()
        row(f"removal, batch {b}, {jax.device_count()} devices",
            lambda: f"{b / removal(factory(make_mesh()), b, steps):.3f} images/s")  # fmt: skip
    cold, warm = compile_times(factory, steps)
    rows += [("removal program: cold compile", f"{cold:.1f} s"), ("removal program: warm start", f"{warm:.1f} s"),
             ("peak device memory" if accelerator else "peak RSS", f"{peak_memory_gb():.2f} GB")]  # fmt: skip
    title = f"## Accelerator benchmark: {device} ({backend}, {args.dtype}, {size} set)"
    table = "\n".join([title, "", "| measurement | result |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)])
    print(table)
    if not args.no_write:
        write_section(title, table)


def write_section(title: str, table: str) -> None:
    """Replace this device's section of RESULTS.md (same title) or append it."""
    text = RESULTS.read_text() if RESULTS.is_file() else "# Benchmark results\n"
    sections = text.split("\n## ")
    head, rest = sections[0], ["## " + s for s in sections[1:]]
    rest = [s for s in rest if s.splitlines()[0] != title]
    RESULTS.write_text("\n\n".join([head.rstrip("\n"), *[s.rstrip("\n") for s in rest], table]) + "\n")


if __name__ == "__main__":
    main()
