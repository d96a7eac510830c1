"""Full-size conversion (slow): random weights in the published layouts; peak memory of `convert`."""

import json
import resource
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_full_size_conversion_memory(tmp_path):
    from clipaway_jax.tiny import write_full_size

    paths = write_full_size(tmp_path)
    args = [a for name, path in paths.items() for a in (f"--{name.replace('_', '-')}", path)]
    args += ["--out", tmp_path / "ckpt"]
    script = "import sys; from clipaway_jax.cli import main; sys.exit(main(['convert', *sys.argv[1:]]))"
    result = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024

    manifest = json.loads((tmp_path / "ckpt" / "manifest.json").read_text())
    from clipaway_jax.checkpoint import load_checkpoint, params_bytes

    ckpt = load_checkpoint(tmp_path / "ckpt")
    total = sum(params_bytes(p) for p in ckpt.params.values())
    print(
        f"converted {sorted(manifest['networks'])}: params {total / 1e9:.2f} GB fp32, peak RSS {peak / 1e9:.2f} GB "
        f"({peak / total:.2f}x)"
    )
    assert peak < 2 * total
