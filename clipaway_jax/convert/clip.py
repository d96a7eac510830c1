"""Tables for the CLIP towers: transformers' names and AlphaCLIP's (OpenAI CLIP) names."""

from __future__ import annotations

from clipaway_jax.convert.engine import Rule, kernel, prefixed, split_qkv_bias, split_qkv_kernel

_ENCODER_RULES = (
    Rule(r"encoder\.(.*layer_norm\d)\.weight", r"encoder.\1.scale"),
    Rule(r"encoder\.(.*)\.weight", r"encoder.\1.kernel", kernel),
    Rule(r"encoder\.(.*)\.bias", r"encoder.\1.bias"),
)

# transformers CLIPTextModel, keys under `text_model.`
HF_TEXT_RULES = prefixed(
    (
        Rule(r"embeddings\.token_embedding\.weight", "token_embedding.embedding"),
        Rule(r"embeddings\.position_embedding\.weight", "position_embedding"),
        Rule(r"embeddings\.position_ids", ()),  # a buffer that older checkpoints saved
        Rule(r"final_layer_norm\.weight", "final_layer_norm.scale"),
        Rule(r"final_layer_norm\.bias", "final_layer_norm.bias"),
        *_ENCODER_RULES,
    ),
    "text_model.",
) + (Rule(r"text_projection\.weight", "text_projection.kernel", kernel),)

# transformers CLIPVisionModel(WithProjection), keys under `vision_model.`
HF_VISION_RULES = prefixed(
    (
        Rule(r"embeddings\.class_embedding", "class_embedding"),
        Rule(r"embeddings\.patch_embedding\.weight", "patch_embedding.kernel", kernel),
        Rule(r"embeddings\.position_embedding\.weight", "position_embedding"),
        Rule(r"embeddings\.position_ids", ()),
        Rule(r"pre_layrnorm\.weight", "pre_layernorm.scale"),  # sic: transformers' spelling
        Rule(r"pre_layrnorm\.bias", "pre_layernorm.bias"),
        Rule(r"post_layernorm\.weight", "post_layernorm.scale"),
        Rule(r"post_layernorm\.bias", "post_layernorm.bias"),
        *_ENCODER_RULES,
    ),
    "vision_model.",
) + (Rule(r"visual_projection\.weight", "visual_projection.kernel", kernel),)

_BLOCK = r"transformer\.resblocks\.(\d+)\."
_LAYER = r"encoder.layers.\1."
_QKV = tuple(f"{_LAYER}self_attn.{p}_proj" for p in "qkv")

# AlphaCLIP's visual tower (OpenAI CLIP names; `attn.in_proj.*` fused qkv, or the plain OpenAI
# spelling `attn.in_proj_weight`); an optional `visual.` prefix is accepted by the reader.
ALPHA_CLIP_RULES = (
    Rule(r"conv1\.weight", "patch_embedding.kernel", kernel),
    Rule(r"conv1_alpha\.weight", "patch_embedding_alpha.kernel", kernel),
    Rule(r"class_embedding", "class_embedding"),
    Rule(r"positional_embedding", "position_embedding"),
    Rule(r"ln_pre\.weight", "pre_layernorm.scale"),
    Rule(r"ln_pre\.bias", "pre_layernorm.bias"),
    Rule(r"ln_post\.weight", "post_layernorm.scale"),
    Rule(r"ln_post\.bias", "post_layernorm.bias"),
    Rule(r"proj", "visual_projection.kernel"),  # already [width, out]: used as x @ proj
    Rule(_BLOCK + r"attn\.in_proj[._]weight", tuple(p + ".kernel" for p in _QKV), split_qkv_kernel),
    Rule(_BLOCK + r"attn\.in_proj[._]bias", tuple(p + ".bias" for p in _QKV), split_qkv_bias),
    Rule(_BLOCK + r"attn\.out_proj\.weight", _LAYER + "self_attn.out_proj.kernel", kernel),
    Rule(_BLOCK + r"attn\.out_proj\.bias", _LAYER + "self_attn.out_proj.bias"),
    Rule(_BLOCK + r"ln_(\d)\.weight", _LAYER + r"layer_norm\2.scale"),
    Rule(_BLOCK + r"ln_(\d)\.bias", _LAYER + r"layer_norm\2.bias"),
    Rule(_BLOCK + r"mlp\.c_fc\.weight", _LAYER + "mlp.fc1.kernel", kernel),
    Rule(_BLOCK + r"mlp\.c_fc\.bias", _LAYER + "mlp.fc1.bias"),
    Rule(_BLOCK + r"mlp\.c_proj\.weight", _LAYER + "mlp.fc2.kernel", kernel),
    Rule(_BLOCK + r"mlp\.c_proj\.bias", _LAYER + "mlp.fc2.bias"),
)
