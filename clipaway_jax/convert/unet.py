"""Tables for the diffusers UNet, the IP-Adapter weights and the VAE."""

from __future__ import annotations

from clipaway_jax.convert.engine import Rule, kernel
from clipaway_jax.models.unet import CROSS_ATTN_DOWN, CROSS_ATTN_UP, UNetConfig

# diffusers module names are our Flax names, so one generic table serves UNet and VAE alike.
DIFFUSERS_RULES = (
    Rule(r"(.*norm[^.]*)\.weight", r"\1.scale"),  # GroupNorm / LayerNorm (norm1, norm, conv_norm_out...)
    Rule(r"(.*)\.weight", r"\1.kernel", kernel),  # Linear and Conv2d
    Rule(r"(.*)\.bias", r"\1.bias"),
)

# IP-Adapter `image_proj` (keys without the file's `image_proj.` prefix)
IMAGE_PROJ_RULES = (
    Rule(r"proj\.weight", "proj.kernel", kernel),
    Rule(r"proj\.bias", "proj.bias"),
    Rule(r"norm\.weight", "norm.scale"),
    Rule(r"norm\.bias", "norm.bias"),
)


def cross_attention_paths(config: UNetConfig) -> list[str]:
    """Every `attn2` of the UNet in diffusers' `attn_processors` order: down, up, then mid."""
    layers, n = config.transformer_layers, len(config.block_out_channels)
    paths = []

    def add(block: str, num_attentions: int, num_layers: int):
        for j in range(num_attentions):
            for k in range(num_layers):
                paths.append(f"{block}.attentions.{j}.transformer_blocks.{k}.attn2")

    for i, block_type in enumerate(config.down_block_types):
        if block_type == CROSS_ATTN_DOWN:
            add(f"down_blocks.{i}", config.layers_per_block, layers[i])
    for i, block_type in enumerate(config.up_block_types):
        if block_type == CROSS_ATTN_UP:
            add(f"up_blocks.{i}", config.layers_per_block + 1, layers[n - 1 - i])
    add("mid_block", 1, layers[-1])
    return paths


def ip_adapter_rules(config: UNetConfig) -> tuple[Rule, ...]:
    """`{i}.to_k_ip.weight` of the file's `ip_adapter` dict (i odd: the i-th attention processor)
    -> that attn2's params."""
    rules = []
    for n, path in enumerate(cross_attention_paths(config)):
        index = 2 * n + 1  # even processors are the self-attentions, which carry no IP weights
        for name in ("to_k_ip", "to_v_ip"):
            rules.append(Rule(rf"{index}\.{name}\.weight", f"{path}.{name}.kernel", kernel))
    return tuple(rules)


def unet_hint(path: str, expected: tuple, found: tuple) -> str:
    """Say in plain words when a text-to-image UNet is given where the inpainting one is needed."""
    if path == "conv_in/kernel" and len(found) == 4 and found[2] != expected[2]:
        return (
            f" (a UNet with {found[2]} input channels; this model needs {expected[2]}: "
            "an SD-1.5 *inpainting* UNet takes 9 = latent 4 + mask 1 + masked-image latent 4)"
        )
    return ""
