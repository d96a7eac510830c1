"""Peak RSS of full-size inference: ours (fp32, bf16) and diffusers' inpaint pipeline with the same
components, each in a fresh process (the ViT-H image encoder is not loaded for inference).

    python bench/memory.py --checkpoint checkpoints/full --sd-folder path/to/sd-inpaint --steps 2

Both sides run one 512x512 removal; --steps only shortens the run, not the memory.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

OURS = """
import resource, numpy as np, jax.numpy as jnp
from clipaway_jax.pipelines.clipaway import CLIPAwayPipeline, RemovalOptions
pipe = CLIPAwayPipeline.from_checkpoint({ckpt!r}, dtype={dtype!r})
images, masks = np.zeros((1, 512, 512, 3), np.float32), np.zeros((1, 512, 512), np.float32)
masks[:, 100:300, 100:300] = 1
pipe.remove(images, masks, options=RemovalOptions(steps={steps}))
print("PEAK", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""

DIFFUSERS = """
import resource, torch
from diffusers import StableDiffusionInpaintPipeline
pipe = StableDiffusionInpaintPipeline.from_pretrained({sd!r}, safety_checker=None, requires_safety_checker=False,
                                                      torch_dtype=getattr(torch, {dtype!r}))
image, mask = torch.zeros(1, 3, 512, 512), torch.zeros(1, 1, 512, 512)
mask[:, :, 100:300, 100:300] = 1
with torch.no_grad():
    pipe(prompt="", image=image, mask_image=mask, num_inference_steps={steps}, height=512, width=512)
print("PEAK", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def peak(script: str) -> float:
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return int(next(line for line in out.splitlines() if line.startswith("PEAK")).split()[1]) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a full-size converted checkpoint")
    parser.add_argument("--sd-folder", help="the diffusers SD-inpaint folder it was converted from")
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    for dtype in ("float32", "bfloat16"):
        ours = peak(OURS.format(ckpt=args.checkpoint, dtype=dtype, steps=args.steps))
        print(f"ours      {dtype:9s} peak RSS {ours:.2f} GB")
        if args.sd_folder:
            script = DIFFUSERS.format(sd=args.sd_folder, dtype=dtype, steps=args.steps)
            print(f"diffusers {dtype:9s} peak RSS {peak(script):.2f} GB")


if __name__ == "__main__":
    main()
