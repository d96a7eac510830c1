"""Cold compile of the whole removal program, and the warm start of a second process that finds it in
the persistent compilation cache.

    python bench/compile.py --size tiny
    python bench/compile.py --size mid
    python bench/compile.py --checkpoint /tmp/full/ckpt     # full size (bench/full_checkpoint.py writes one)

"program ready" is the time `CLIPAwayPipeline.compiled` takes: trace and compile when cold, loading the
executable that the cold run stored beside JAX's persistent compilation cache when warm. "process start to
ready" adds the imports and the checkpoint load.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import sys, time
start = time.perf_counter()
sys.path.insert(0, {bench!r})
import jax, numpy as np
jax.config.update("jax_compilation_cache_dir", {cache!r})
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
from common import random_checkpoint, pixel_size
from clipaway_jax.pipelines.clipaway import CLIPAwayPipeline, RemovalOptions, image_keys
import jax.numpy as jnp
if {checkpoint!r}:
    pipe = CLIPAwayPipeline.from_checkpoint({checkpoint!r})
else:
    pipe = CLIPAwayPipeline(random_checkpoint({size!r}))
px = pixel_size(pipe.checkpoint)
batch = (np.zeros((1, px, px, 3), np.float32), np.ones((1, px, px), np.float32), pipe.text_ids([""], ["neg"]))
scalars = (jnp.float32(7.5), jnp.float32(1.0), (jnp.int32(0), jnp.bool_(False)))
args = (pipe.params, *batch, image_keys(0, [0]), *scalars)
ready = time.perf_counter()
pipe.compiled(RemovalOptions(steps={steps}), args)  # cold: trace + XLA compile; warm: the executable from disk
done = time.perf_counter()
print(f"RESULT program ready {{done - ready:.2f}} s, process start to ready {{done - start:.2f}} s")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "mid"), default="tiny")
    parser.add_argument("--checkpoint", default="", help="a converted checkpoint (instead of --size)")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    cache = tempfile.mkdtemp(prefix="clipaway-bench-cache-")
    script = CHILD.format(
        bench=str(Path(__file__).resolve().parent),
        cache=cache,
        size=args.size,
        steps=args.steps,
        checkpoint=args.checkpoint,
    )
    for label in ("cold", "warm"):
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
        print(
            f"{args.checkpoint or args.size} {label}: "
            + next(line for line in out.splitlines() if line.startswith("RESULT"))[7:]
        )


if __name__ == "__main__":
    main()
