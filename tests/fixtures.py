"""Tiny configs and seeded torch originals shared by every test (one place, not copied per file)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from clipaway_jax.tiny import (  # noqa: F401  (re-exported for the tests)
    IP_TOKENS,
    TINY_ALPHA_CLIP,
    TINY_IMAGE_ENCODER,
    TINY_MLP,
    TINY_TEXT,
    TINY_UNET,
    TINY_VAE,
    alpha_clip_state_dict,
    ip_adapter_state_dict,
    mlp_module,
    randomize_,
    write_published,
    write_tokenizer,
)

TINY_IMAGE_EMBED_DIM = TINY_IMAGE_ENCODER["projection_dim"]


def seed_torch(seed: int = 0):
    import torch

    torch.manual_seed(seed)
    return torch


def numpy_state(module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def torch_unet(seed: int = 0, **overrides):
    from diffusers import UNet2DConditionModel

    seed_torch(seed)
    return randomize_(UNet2DConditionModel(**{**TINY_UNET, **overrides}), seed)


def torch_vae(seed: int = 0, **overrides):
    from diffusers import AutoencoderKL

    seed_torch(seed)
    return randomize_(AutoencoderKL(**{**TINY_VAE, **overrides}), seed)


def torch_text_model(vocab_size: int, seed: int = 0, with_projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    seed_torch(seed)
    config = CLIPTextConfig(**TINY_TEXT, vocab_size=vocab_size, eos_token_id=vocab_size - 1)
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return randomize_(cls(config), seed)


def torch_image_encoder(seed: int = 0, scale: float = 0.2, **overrides):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    seed_torch(seed)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**{**TINY_IMAGE_ENCODER, **overrides}))
    return randomize_(model, seed, scale)


# --- AlphaCLIP: a faithful torch reference of the published visual tower (SunzeY/AlphaCLIP model.py) ---


def alpha_clip_reference(width=64, layers=2, heads=None, patch=14, resolution=28, output_dim=24, seed=0, scale=0.2):
    """`scale`: std of the random weights; full-size towers need CLIP-like 0.02, or 24 pre-LN layers of
    0.2-scale weights saturate every softmax and the fp32 comparison measures chaos, not the port."""
    torch = seed_torch(seed)
    nn = torch.nn

    class LayerNorm(nn.LayerNorm):
        def forward(self, x):
            return super().forward(x.float()).type(x.dtype)

    class QuickGELU(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(1.702 * x)

    class Attention(nn.Module):
        def __init__(self, dim, num_heads):
            super().__init__()
            self.num_heads, self.head_dim = num_heads, dim // num_heads
            self.scale = self.head_dim**-0.5
            self.in_proj = nn.Linear(dim, dim * 3)
            self.out_proj = nn.Linear(dim, dim)

        def forward(self, x):  # [L, N, C]
            L, N, C = x.shape
            q, k, v = self.in_proj(x).chunk(3, dim=-1)
            q = q.contiguous().view(L, N * self.num_heads, -1).transpose(0, 1)
            k = k.contiguous().view(L, N * self.num_heads, -1).transpose(0, 1)
            v = v.contiguous().view(L, N * self.num_heads, -1).transpose(0, 1)
            attn = torch.bmm(q * self.scale, k.transpose(-2, -1)).softmax(dim=-1)
            x = torch.bmm(attn, v).transpose(0, 1).reshape(L, N, C)
            return self.out_proj(x)

    class Block(nn.Module):
        def __init__(self, d, h):
            super().__init__()
            self.attn = Attention(d, h)
            self.ln_1 = LayerNorm(d)
            self.mlp = nn.Sequential(
                OrderedDict(c_fc=nn.Linear(d, 4 * d), gelu=QuickGELU(), c_proj=nn.Linear(4 * d, d))
            )
            self.ln_2 = LayerNorm(d)

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class Transformer(nn.Module):
        def __init__(self, d, n, h):
            super().__init__()
            self.resblocks = nn.Sequential(*[Block(d, h) for _ in range(n)])

        def forward(self, x):
            return self.resblocks(x)

    class VisionTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, patch, patch, bias=False)
            self.conv1_alpha = nn.Conv2d(1, width, patch, patch, bias=False)
            scale = width**-0.5
            self.class_embedding = nn.Parameter(scale * torch.randn(width))
            self.positional_embedding = nn.Parameter(scale * torch.randn((resolution // patch) ** 2 + 1, width))
            self.ln_pre = LayerNorm(width)
            self.transformer = Transformer(width, layers, heads or width // 64)
            self.ln_post = LayerNorm(width)
            self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

        def forward(self, x, alpha):
            x = self.conv1(x) + self.conv1_alpha(alpha)
            x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
            cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
            x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
            x = self.ln_pre(x).permute(1, 0, 2)
            x = self.transformer(x).permute(1, 0, 2)
            return self.ln_post(x[:, 0, :]) @ self.proj

    return randomize_(VisionTransformer(), seed, scale)


def torch_mlp(config: dict = TINY_MLP, seed: int = 0):
    return mlp_module(config, seed)


def torch_clipaway_embeds(files, images, masks):
    """[MLP(zeros); projection(MLP(e_b), MLP(e_f))], [2B, 1, E], computed with the torch references from the
    published files (diffusers' `ip_adapter_image_embeds` layout: unconditional first)."""
    import torch
    from safetensors.torch import load_file

    from clipaway_jax.preprocess import alpha_clip_inputs

    alpha_clip = alpha_clip_reference(resolution=28)
    alpha_clip.load_state_dict(torch.load(files["alpha_clip"], weights_only=True))
    mlp = mlp_module()
    mlp.load_state_dict(load_file(files["mlp"]))
    to_torch = lambda x: torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
    pixels, alpha = alpha_clip_inputs(images, masks, 28)
    _, inverted = alpha_clip_inputs(images, 1 - masks, 28)
    with torch.no_grad():
        f = mlp(alpha_clip(to_torch(pixels), to_torch(alpha)))
        b = mlp(alpha_clip(to_torch(pixels), to_torch(inverted)))
        projected = torch.stack([bi - (bi @ fi) / (fi @ fi) * fi for bi, fi in zip(b, f)])
        uncond = mlp(torch.zeros(1, 24)).expand_as(projected)
    return torch.cat([uncond, projected])[:, None]


def tolerance(reference: np.ndarray) -> float:
    """The project's parity bar: 1e-4 of the output's scale (at least 1e-4)."""
    return 1e-4 * max(1.0, float(np.abs(reference).max()))


def assert_close(actual, reference, what: str = "output") -> float:
    actual, reference = np.asarray(actual, np.float64), np.asarray(reference, np.float64)
    assert actual.shape == reference.shape, f"{what}: shape {actual.shape} != {reference.shape}"
    err = float(np.abs(actual - reference).max())
    assert err <= tolerance(reference), f"{what}: max abs error {err:.3g} > {tolerance(reference):.3g}"
    return err


def nchw(x) -> np.ndarray:
    return np.asarray(x).transpose(0, 3, 1, 2)


def nhwc(x) -> np.ndarray:
    return np.asarray(x).transpose(0, 2, 3, 1)


# --- The original CLIPAway's preprocessing, transcribed from torchvision (which cannot be installed here) ---


def original_alpha_clip_inputs(image, mask, size: int):
    """What CLIPAway feeds AlphaCLIP for a PIL RGB `image` and PIL L `mask`: AlphaCLIP's `_transform(size)`
    (torchvision Resize(size, BICUBIC) on the PIL image, CenterCrop, ToTensor, Normalize) and its
    `mask_transform` (ToTensor, Resize((size, size)) on the tensor, Normalize(0.5, 0.26)); NCHW tensors."""
    import torch
    from PIL import Image

    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)  # torchvision's _compute_resized_output_size
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    resized = image.resize((new_w, new_h), Image.BICUBIC)  # F_pil.resize
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))  # F.center_crop
    cropped = resized.crop((left, top, left + size, top + size))
    to_tensor = lambda pic: torch.from_numpy(np.array(pic, copy=True)).reshape(pic.size[1], pic.size[0], -1)
    pixels = to_tensor(cropped).permute(2, 0, 1).contiguous().float().div(255)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
    pixels = pixels.sub(mean).div(std)
    alpha = to_tensor(mask).permute(2, 0, 1).float().div(255)
    alpha = torch.nn.functional.interpolate(alpha[None], size=(size, size), mode="bilinear", align_corners=False,
                                            antialias=True)[0]  # fmt: skip
    return pixels[None], alpha.sub(0.5).div(0.26)[None], np.asarray(cropped)
