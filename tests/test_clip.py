"""CLIP text encoder, text features, the ViT-H image encoder and AlphaCLIP equal their torch originals."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from fixtures import (
    TINY_ALPHA_CLIP,
    TINY_TEXT,
    alpha_clip_reference,
    assert_close,
    nhwc,
    numpy_state,
    torch_image_encoder,
    torch_text_model,
    write_tokenizer,
)

from clipaway_jax import xla
from clipaway_jax.convert.networks import alpha_clip_config, convert_alpha_clip, convert_text, convert_vision
from clipaway_jax.models import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionTransformer
from clipaway_jax.models.clip import zero_shot_logits
from clipaway_jax.tokenizer import load_tokenizer, tokenize

PROMPTS = ["", "monochrome, lowres, bad anatomy, worst quality, low quality", "a photo of a giraffe."]


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    write_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def tokenizer(tokenizer_folder):
    return load_tokenizer(tokenizer_folder)


def _text_pair(tokenizer, with_projection):
    reference = torch_text_model(len(tokenizer), with_projection=with_projection)
    config = CLIPTextConfig.from_dict(reference.config.to_dict())
    params = convert_text(numpy_state(reference), config, with_projection=with_projection)
    return reference, CLIPTextModel(config, with_projection), {"params": params}


def test_text_encoder_equals_transformers(tokenizer):
    reference, model, params = _text_pair(tokenizer, with_projection=False)
    ids = tokenize(tokenizer, PROMPTS)
    with torch.no_grad():
        expected = reference(torch.from_numpy(ids).long())
    out = xla.jit(model.apply)(params, ids)
    assert_close(out.last_hidden_state, expected.last_hidden_state.numpy(), "last_hidden_state")
    assert_close(out.pooler_output, expected.pooler_output.numpy(), "pooler_output")


def test_text_encoder_with_padding_mask_equals_transformers(tokenizer, tokenizer_folder):
    from transformers import CLIPTokenizer

    reference, model, params = _text_pair(tokenizer, with_projection=False)
    batch = CLIPTokenizer.from_pretrained(tokenizer_folder)(PROMPTS, padding="longest")
    ids, mask = np.asarray(batch.input_ids, np.int32), np.asarray(batch.attention_mask, np.int32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask))
    out = model.apply(params, ids, mask)
    assert_close(out.last_hidden_state * mask[..., None], expected.last_hidden_state.numpy() * mask[..., None])
    assert_close(out.pooler_output, expected.pooler_output.numpy(), "pooled with mask")


def test_text_features_equal_get_text_features(tokenizer):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    text = dict(TINY_TEXT, vocab_size=len(tokenizer), eos_token_id=len(tokenizer) - 1)
    config = CLIPConfig(
        text_config=text,
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
        },
        projection_dim=24,
    )
    from fixtures import randomize_

    clip = randomize_(CLIPModel(config))
    ids = tokenize(tokenizer, PROMPTS)
    with torch.no_grad():
        expected = clip.get_text_features(torch.from_numpy(ids).long())
    expected = getattr(expected, "pooler_output", expected).numpy()
    state = {k: v for k, v in numpy_state(clip).items() if k.startswith("text_") or k == "text_projection.weight"}
    text_config = CLIPTextConfig.from_dict({**config.text_config.to_dict(), "projection_dim": 24})
    params = convert_text(state, text_config, with_projection=True)
    out = CLIPTextModel(text_config, with_projection=True).apply({"params": params}, ids)
    assert_close(out.text_embeds, expected, "text features")


def test_zero_shot_logits_equal_clip_model_formula():
    rng = np.random.RandomState(0)
    image, text = rng.randn(3, 8).astype(np.float32), rng.randn(5, 8).astype(np.float32)
    scale = np.log(100.0)
    ni = image / np.linalg.norm(image, axis=-1, keepdims=True)
    nt = text / np.linalg.norm(text, axis=-1, keepdims=True)
    np.testing.assert_allclose(zero_shot_logits(image, text, scale), 100.0 * ni @ nt.T, rtol=1e-5)


def test_image_encoder_equals_transformers():
    """ViT-H style (gelu) CLIPVisionModelWithProjection: image_embeds and last_hidden_state."""
    reference = torch_image_encoder()
    config = CLIPVisionConfig.from_dict(reference.config.to_dict())
    params = convert_vision(numpy_state(reference), config)
    pixels = np.random.RandomState(0).randn(2, 3, 28, 28).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(pixels))
    out = CLIPVisionTransformer(config).apply({"params": params}, nhwc(pixels))
    assert_close(out.image_embeds, expected.image_embeds.numpy(), "image_embeds")
    assert_close(out.last_hidden_state, expected.last_hidden_state.numpy(), "last_hidden_state")


def _mask_alpha(batch, size, seed=0):
    """A real object mask (a filled ellipse), normalized as AlphaCLIP's mask_transform does."""
    yy, xx = np.mgrid[:size, :size] / size
    masks = [((yy - 0.5 - 0.1 * i) ** 2 / 0.08 + (xx - 0.4) ** 2 / 0.04 < 1).astype(np.float32) for i in range(batch)]
    return (np.stack(masks)[:, None] - 0.5) / 0.26


def _alpha_clip_pair(resolution, **kw):
    reference = alpha_clip_reference(resolution=resolution, **kw)
    state = numpy_state(reference)
    config = alpha_clip_config(state)
    return reference, config, {"params": convert_alpha_clip(state, config)}


@pytest.mark.parametrize("resolution", [28, 42])  # the @224 / @336 pair, scaled down: 5 and 10 tokens
@pytest.mark.parametrize("alpha_kind", ["mask", "ones", "zeros"])
def test_alpha_clip_equals_reference(resolution, alpha_kind):
    reference, config, params = _alpha_clip_pair(resolution)
    assert config.num_positions == (resolution // 14) ** 2 + 1
    pixels = np.random.RandomState(0).randn(3, 3, resolution, resolution).astype(np.float32)
    alpha = {
        "mask": _mask_alpha(3, resolution),
        "ones": np.full((3, 1, resolution, resolution), (1 - 0.5) / 0.26, np.float32),
        "zeros": np.full((3, 1, resolution, resolution), (0 - 0.5) / 0.26, np.float32),
    }[alpha_kind].astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(pixels), torch.from_numpy(alpha)).numpy()
    out = xla.jit(CLIPVisionTransformer(config).apply)(params, nhwc(pixels), nhwc(alpha))
    assert_close(out.image_embeds, expected, f"alpha-clip @{resolution} alpha={alpha_kind}")


def test_alpha_clip_reference_with_zero_alpha_conv_is_transformers_clip():
    """Cross-check the hand-written reference: conv1_alpha = 0 must give transformers' CLIP (quick_gelu)."""
    from transformers import CLIPVisionConfig as HFConfig
    from transformers import CLIPVisionModelWithProjection

    reference = alpha_clip_reference(resolution=28)
    with torch.no_grad():
        reference.conv1_alpha.weight.zero_()
    state = numpy_state(reference)
    plain_clip = {k: v for k, v in TINY_ALPHA_CLIP.items() if k != "alpha"}  # the reference's own size
    hf = CLIPVisionModelWithProjection(HFConfig(**plain_clip)).eval()
    hf.load_state_dict(_openai_to_transformers(state), strict=True)
    pixels = torch.randn(2, 3, 28, 28)
    alpha = torch.from_numpy(_mask_alpha(2, 28).astype(np.float32))
    with torch.no_grad():
        np.testing.assert_allclose(reference(pixels, alpha).numpy(), hf(pixels).image_embeds.numpy(), atol=1e-5)


def _openai_to_transformers(state):
    out = {
        "vision_model.embeddings.class_embedding": state["class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": state["conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": state["positional_embedding"],
        "vision_model.pre_layrnorm.weight": state["ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": state["ln_pre.bias"],
        "vision_model.post_layernorm.weight": state["ln_post.weight"],
        "vision_model.post_layernorm.bias": state["ln_post.bias"],
        "visual_projection.weight": state["proj"].T,
    }
    layers = {k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")}
    for i in layers:
        src, dst = f"transformer.resblocks.{i}.", f"vision_model.encoder.layers.{i}."
        for kind in ("weight", "bias"):
            q, k, v = np.split(state[src + f"attn.in_proj.{kind}"], 3)
            out |= {
                dst + f"self_attn.q_proj.{kind}": q,
                dst + f"self_attn.k_proj.{kind}": k,
                dst + f"self_attn.v_proj.{kind}": v,
            }
            out[dst + f"self_attn.out_proj.{kind}"] = state[src + f"attn.out_proj.{kind}"]
            out[dst + f"layer_norm1.{kind}"] = state[src + f"ln_1.{kind}"]
            out[dst + f"layer_norm2.{kind}"] = state[src + f"ln_2.{kind}"]
            out[dst + f"mlp.fc1.{kind}"] = state[src + f"mlp.c_fc.{kind}"]
            out[dst + f"mlp.fc2.{kind}"] = state[src + f"mlp.c_proj.{kind}"]
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}


def test_alpha_clip_accepts_openai_spelling_and_missing_alpha_conv():
    reference, config, _ = _alpha_clip_pair(28)
    state = {k.replace("attn.in_proj.", "attn.in_proj_"): v for k, v in numpy_state(reference).items()}
    state.pop("conv1_alpha.weight")
    with pytest.warns(UserWarning, match="conv1_alpha"):
        params = convert_alpha_clip(state, config)
    assert not np.any(params["patch_embedding_alpha"]["kernel"])


def test_alpha_clip_tiny_config_matches_builtin():
    assert CLIPVisionConfig(**TINY_ALPHA_CLIP).num_positions == 5


@pytest.mark.slow
@pytest.mark.parametrize("resolution", [224, 336])
def test_full_size_alpha_clip_equals_reference(resolution):
    reference, config, params = _alpha_clip_pair(resolution, width=1024, layers=24, output_dim=768, scale=0.02)
    pixels = np.random.RandomState(0).randn(2, 3, resolution, resolution).astype(np.float32)
    alpha = _mask_alpha(2, resolution).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(pixels), torch.from_numpy(alpha)).numpy()
    out = xla.jit(CLIPVisionTransformer(config).apply)(params, nhwc(pixels), nhwc(alpha))
    err = assert_close(out.image_embeds, expected, f"full alpha-clip @{resolution}")
    print(f"full-size AlphaCLIP ViT-L/14@{resolution} max abs error {err:.3g}")


EVAL_CLIPS = {  # the eval towers: CLIP@k (ViT-B/32) and CMMD (ViT-L/14@336), transformers' configs
    "ViT-B/32": dict(hidden_size=768, intermediate_size=3072, projection_dim=512, num_hidden_layers=12,
                     num_attention_heads=12, image_size=224, patch_size=32, hidden_act="quick_gelu"),
    "ViT-L/14@336": dict(hidden_size=1024, intermediate_size=4096, projection_dim=768, num_hidden_layers=24,
                         num_attention_heads=16, image_size=336, patch_size=14, hidden_act="quick_gelu"),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EVAL_CLIPS))
def test_full_size_eval_clip_towers_equal_transformers(name):
    reference = torch_image_encoder(scale=0.02, **EVAL_CLIPS[name])
    config = CLIPVisionConfig.from_dict(reference.config.to_dict())
    params = convert_vision(numpy_state(reference), config)
    size = EVAL_CLIPS[name]["image_size"]
    pixels = np.random.RandomState(0).randn(2, 3, size, size).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(pixels)).image_embeds.numpy()
    out = xla.jit(CLIPVisionTransformer(config).apply)({"params": params}, nhwc(pixels))
    err = assert_close(out.image_embeds, expected, f"full {name}")
    print(f"full-size CLIP {name} image_embeds max abs error {err:.3g}")


@pytest.mark.slow
def test_full_size_vit_h_equals_transformers():
    reference = torch_image_encoder(scale=0.02, **CLIPVisionConfig.VIT_H14, num_attention_heads=16, image_size=224)
    config = CLIPVisionConfig.from_dict(reference.config.to_dict())
    params = convert_vision(numpy_state(reference), config)
    pixels = np.random.RandomState(0).randn(2, 3, 224, 224).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(pixels)).image_embeds.numpy()
    out = xla.jit(CLIPVisionTransformer(config).apply)({"params": params}, nhwc(pixels))
    err = assert_close(out.image_embeds, expected, "full ViT-H/14")
    print(f"full-size ViT-H/14 max abs error {err:.3g}")


@pytest.mark.slow
def test_full_size_text_encoder_equals_transformers(tokenizer):
    from transformers import CLIPTextConfig as HFConfig
    from transformers import CLIPTextModel as HFText

    torch.manual_seed(0)
    config = HFConfig(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        eos_token_id=2,
    )
    reference = HFText(config).eval()
    config = CLIPTextConfig.from_dict(reference.config.to_dict())
    params = convert_text(numpy_state(reference), config)
    ids = tokenize(tokenizer, PROMPTS)
    with torch.no_grad():
        expected = reference(torch.from_numpy(ids).long())
    out = CLIPTextModel(config).apply({"params": params}, jnp.asarray(ids))
    err = assert_close(out.last_hidden_state, expected.last_hidden_state.numpy(), "full text encoder")
    print(f"full-size text encoder max abs error {err:.3g}")
