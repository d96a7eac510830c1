"""One whole removal at 512x512, 50 PNDM steps with CFG: our pipeline vs diffusers'
`StableDiffusionInpaintPipeline` with the same IP-Adapter image embeddings, on the same machine,
one after the other, each in a fresh process (time and peak RSS).

    python bench/full_checkpoint.py /tmp/full       # once: full-size files (random weights) + checkpoint
    python bench/pipeline.py --full /tmp/full        # ours, then diffusers, then the ratio

Ours is compiled ahead of time before the clock starts (a served model compiles once); diffusers gets
one warm-up step. Ours also runs AlphaCLIP twice, the MLP and the projection inside the timed program;
diffusers receives the finished image embeddings.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

OURS = """
import resource, time, numpy as np, jax, jax.numpy as jnp
from clipaway_jax.pipelines.clipaway import CLIPAwayPipeline, RemovalOptions, image_keys
pipe = CLIPAwayPipeline.from_checkpoint({ckpt!r})
images, masks = np.random.RandomState(0).rand(1, 512, 512, 3).astype(np.float32), np.zeros((1, 512, 512), np.float32)
masks[:, 100:300, 100:300] = 1
options = RemovalOptions(steps={steps})
args = (pipe.params, images, masks, pipe.text_ids([""], ["n"]), image_keys(0, [0]), jnp.float32(7.5),
        jnp.float32(1.0), (jnp.int32(0), jnp.bool_(False)))
pipe.compiled(options, args)
start = time.perf_counter()
pipe.remove(images, masks, options=options)
print("SECONDS", time.perf_counter() - start)
print("PEAK", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""

DIFFUSERS = """
import resource, time, torch
from diffusers import StableDiffusionInpaintPipeline
pipe = StableDiffusionInpaintPipeline.from_pretrained({sd!r}, safety_checker=None, requires_safety_checker=False)
pipe.unet._load_ip_adapter_weights([torch.load({ip!r}, weights_only=True)])
pipe.set_progress_bar_config(disable=True)
torch.manual_seed(0)
image, mask = torch.rand(1, 3, 512, 512), torch.zeros(1, 1, 512, 512)
mask[:, :, 100:300, 100:300] = 1
embeds = [torch.randn(2, 1, 1024)]  # [uncond; cond] image embeddings, as CLIPAway hands them over
kwargs = dict(prompt="", negative_prompt="n", image=image, mask_image=mask, height=512, width=512,
              ip_adapter_image_embeds=embeds, guidance_scale=7.5)
with torch.no_grad():
    pipe(num_inference_steps=1, **kwargs)
    start = time.perf_counter()
    pipe(num_inference_steps={steps}, **kwargs)
print("SECONDS", time.perf_counter() - start)
print("PEAK", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def run(script: str) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    value = lambda key: float(next(line for line in out.stdout.splitlines() if line.startswith(key)).split()[1])
    return value("SECONDS"), value("PEAK") / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", required=True, help="the folder bench/full_checkpoint.py wrote (files/, ckpt/)")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    files = f"{args.full}/files"
    ours = run(OURS.format(ckpt=f"{args.full}/ckpt", steps=args.steps))
    print(f"ours      {ours[0]:.1f} s, peak RSS {ours[1]:.2f} GB", flush=True)
    theirs = run(DIFFUSERS.format(sd=f"{files}/stable-diffusion-inpainting", ip=f"{files}/ip-adapter_sd15.bin",
                                  steps=args.steps))  # fmt: skip
    print(f"diffusers {theirs[0]:.1f} s, peak RSS {theirs[1]:.2f} GB")
    print(f"512x512, {args.steps} PNDM steps, CFG, fp32: ours / diffusers = {ours[0] / theirs[0]:.2f}")


if __name__ == "__main__":
    main()
