"""DCGD: dual text guidance equals diffusers' inpaint pipeline with (T_info, T_mask) prompts; the region
describer picks the right labels; the 12-channel UNet starts equal to the 9-channel one."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from fixtures import assert_close
from test_pipeline import _inputs, _torch_pipeline

from clipaway_jax.checkpoint import load_checkpoint
from clipaway_jax.cli import main as cli_main
from clipaway_jax.models import UNet2DConditionModel
from clipaway_jax.models.dcgd import dcgd12_from_inpaint, dcgd_input
from clipaway_jax.pipelines.clipaway import CLIPAwayPipeline, RemovalOptions
from clipaway_jax.pipelines.describe import (
    RegionDescriber,
    build_description,
    encode_vocab,
    read_vocab,
    region_probabilities,  # fmt: skip
)
from clipaway_jax.pipelines.guidance import branches

T_INFO, T_MASK = ["kitchen, table, chair", "beach, sky"], ["dog", "car tire"]


@pytest.fixture(scope="module")
def pipe(tiny_checkpoint):
    return CLIPAwayPipeline.from_checkpoint(tiny_checkpoint)


def test_dcgd_mode_equals_diffusers_with_dual_prompts(pipe, published, monkeypatch):
    import diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_inpaint as inpaint

    # test_pipeline's 72x88, 20-step case: the same compiled program (prompts and ip_scale are its inputs)
    size, steps = (72, 88), 20
    images, masks, latents = _inputs(size=size)
    original = inpaint.retrieve_latents
    monkeypatch.setattr(inpaint, "retrieve_latents", lambda out, generator=None, sample_mode="sample":
                        original(out, generator, "argmax"))  # fmt: skip
    reference = _torch_pipeline(published, "pndm", with_ip_adapter=False)  # dcgd mode is text guidance only
    with torch.no_grad():
        expected = reference(prompt=T_INFO, negative_prompt=T_MASK, guidance_scale=3.0, num_inference_steps=steps,
                             image=torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
                             mask_image=torch.from_numpy(masks[:, None].copy()),
                             latents=torch.from_numpy(latents.transpose(0, 3, 1, 2).copy()),
                             height=size[0], width=size[1], output_type="np").images  # fmt: skip
    chosen = branches("dcgd", 2, [_desc(i, m) for i, m in zip(T_INFO, T_MASK)], "unused", ip_scale=1.0)
    assert chosen.ip_scale == 0.0
    out = pipe.remove(images, masks, latents=latents, guidance_scale=3.0, prompt=chosen.prompts,
                      negative_prompt=chosen.negatives, ip_scale=chosen.ip_scale,
                      options=RemovalOptions(steps=steps, dilate_iterations=0, posterior="mode"))  # fmt: skip
    diff = np.abs(out - expected)
    print(f"dcgd: mean abs diff {diff.mean():.2e}, max {diff.max():.2e}")
    assert diff.mean() <= 1e-3 and diff.max() <= 1e-2


def _desc(info, mask):
    from clipaway_jax.pipelines.describe import Description

    return Description(mask, info, [], [], [])


def test_modes_choose_texts_and_image_tokens():
    d = [_desc("scene, a", "dog")]
    assert branches("clipaway", 1, None, "neg", 1.0) == branches("clipaway", 1, d, "neg", 1.0)
    both = branches("clipaway+dcgd", 1, d, "neg", 0.7)
    assert (both.prompts, both.negatives, both.ip_scale) == (["scene, a"], ["dog"], 0.7)
    with pytest.raises(ValueError, match="needs one region description"):
        branches("dcgd", 2, d, "neg", 1.0)


def test_describer_finds_the_constructed_labels(tiny_checkpoint):
    """Text features of label k set to the image feature of a region: the right answer is known."""
    ckpt = load_checkpoint(tiny_checkpoint, networks=["alpha_clip"])
    alpha_clip = ckpt.module("alpha_clip")
    params = {"params": ckpt.params["alpha_clip"]}
    images, masks, _ = _inputs()
    from clipaway_jax.models import focused_embeddings

    e_f, e_b = (np.asarray(x) for x in focused_embeddings(alpha_clip, params, images, masks))
    rng = np.random.RandomState(0)
    norm = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
    objects = norm(rng.randn(6, e_f.shape[1]))
    objects[2], objects[4], objects[5] = norm(e_f[0]), norm(e_f[1]), norm(e_b[0])
    scenes = norm(rng.randn(4, e_f.shape[1]))
    scenes[3], scenes[1] = norm(e_b[0]), norm(e_b[1])
    p_mask, p_scene, p_obj = (np.asarray(p) for p in region_probabilities(
        alpha_clip, params, images, masks, objects, scenes, np.log(100.0)))  # fmt: skip
    names, places = ["o0", "o1", "o2", "o3", "o4", "o5"], ["s0", "s1", "s2", "s3"]
    first = build_description(p_mask[0], p_scene[0], p_obj[0], names, places)
    second = build_description(p_mask[1], p_scene[1], p_obj[1], names, places)
    assert first.t_mask == "o2" and second.t_mask == "o4"
    assert first.t_info.startswith("s3, o5") and second.t_info.startswith("s1")
    assert "o2" not in first.t_info  # the masked object is never part of the positive prompt


def test_vocab_features_equal_manual_template_ensemble(tiny_checkpoint, published):
    from transformers import CLIPModel, CLIPTokenizer

    from clipaway_jax.tokenizer import load_tokenizer

    ckpt = load_checkpoint(tiny_checkpoint, networks=["clip_text"])
    tokenizer = CLIPTokenizer.from_pretrained(published["sd_inpaint"] / "tokenizer")
    templates = ("a photo of a {}.", "a blurry photo of the {}.")
    ours = encode_vocab(ckpt.module("clip_text"), {"params": ckpt.params["clip_text"]},
                        load_tokenizer(ckpt.tokenizer_path), ["dog", "traffic light"], templates)  # fmt: skip
    clip = CLIPModel.from_pretrained(published["clip"]).eval()
    expected = []
    for label in ["dog", "traffic light"]:
        batch = tokenizer([t.format(label) for t in templates], padding="max_length", max_length=77)
        with torch.no_grad():
            feats = clip.get_text_features(torch.tensor(batch.input_ids))
        feats = getattr(feats, "pooler_output", feats).numpy()
        feats /= np.linalg.norm(feats, axis=-1, keepdims=True)
        expected.append(feats.mean(0) / np.linalg.norm(feats.mean(0)))
    np.testing.assert_allclose(ours.features, np.stack(expected), atol=1e-5)


def test_vocab_files_are_shipped():
    from clipaway_jax.pipelines.describe import VOCAB_DIR

    objects = read_vocab(VOCAB_DIR / "objects.txt")
    assert objects[:3] == ["person", "bicycle", "car"] and "toothbrush" in objects and len(objects) >= 80
    assert len(read_vocab(VOCAB_DIR / "scenes.txt")) >= 100


def test_twelve_channel_unet_starts_equal_to_nine_channel_without_mask(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint, networks=["unet"])
    unet9 = ckpt.module("unet")
    params12, config12 = dcgd12_from_inpaint(ckpt.params["unet"], unet9.config)
    rng = np.random.RandomState(0)
    x, z_obj, z_bg = (rng.randn(2, 16, 16, 4).astype(np.float32) for _ in range(3))
    ctx = rng.randn(2, 77, 32).astype(np.float32)
    out12 = jax.jit(UNet2DConditionModel(config12).apply)({"params": params12}, dcgd_input(x, z_obj, z_bg), 500, ctx)
    nine = jnp.concatenate([x, jnp.zeros((2, 16, 16, 1)), z_bg], -1)
    out9 = jax.jit(unet9.apply)({"params": ckpt.params["unet"]}, nine, 500, ctx)
    # the same sum with zero terms added: equal up to float reordering in conv_in (the parity bar)
    assert_close(out12, out9, "12-channel vs 9-channel with mask 0")


def test_the_dcgd_unet_of_eight_latent_channels_starts_equal_to_the_inpainting_one():
    """3L channels from 2L + 1 for a VAE of L = 8 latent channels (the mini world's option); the kinds are
    read from the channel counts, and a count that is none of them is refused by name."""
    from clipaway_jax.models.dcgd import unet_kind
    from clipaway_jax.models.unet import UNetConfig

    config = UNetConfig(sample_size=8, in_channels=17, out_channels=8, block_out_channels=(16,), layers_per_block=1,
                        norm_num_groups=8, cross_attention_dim=32, attention_head_dim=2,
                        down_block_types=("CrossAttnDownBlock2D",), up_block_types=("CrossAttnUpBlock2D",))  # fmt: skip
    rng = np.random.RandomState(0)
    x, z_obj, z_bg = (rng.randn(2, 8, 8, 8).astype(np.float32) for _ in range(3))
    ctx = rng.randn(2, 5, 32).astype(np.float32)
    nine = jnp.concatenate([x, jnp.zeros((2, 8, 8, 1)), z_bg], -1)
    params = nn.meta.unbox(UNet2DConditionModel(config).init(jax.random.key(0), nine, 500, ctx)["params"])
    params24, config24 = dcgd12_from_inpaint(params, config)
    assert config24.in_channels == 24 and [unet_kind(c) for c in (config, config24)] == ["inpaint", "dcgd"]
    assert unet_kind(config.replace(in_channels=8)) == "text-to-image"
    out24 = UNet2DConditionModel(config24).apply({"params": params24}, dcgd_input(x, z_obj, z_bg), 500, ctx)
    out17 = UNet2DConditionModel(config).apply({"params": params}, nine, 500, ctx)
    assert_close(out24, out17, "24-channel vs 17-channel with mask 0")
    with pytest.raises(ValueError, match="8 latent channels takes 8 .text-to-image., 17 .inpaint., 24 .dcgd. input "
                                         "channels, not 9"):  # fmt: skip
        unet_kind(config.replace(in_channels=9))


def test_dcgd12_unet_converts_and_runs_in_the_pipeline(published, tmp_path, capsys):
    from clipaway_jax.convert.published import Sources, convert

    convert(Sources(**published, dcgd12=True), tmp_path / "ck", progress=lambda _: None)
    manifest = load_checkpoint(tmp_path / "ck", networks=["unet_dcgd12"]).manifest
    assert manifest["networks"]["unet_dcgd12"]["config"]["in_channels"] == 12
    image, mask = published["sd_inpaint"].parent / "i.png", published["sd_inpaint"].parent / "m.png"
    from PIL import Image

    Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype(np.uint8)).save(image)
    m = np.zeros((64, 64), np.uint8)
    m[10:40, 20:50] = 255
    Image.fromarray(m).save(mask)
    code = cli_main(["remove", str(image), str(mask), "-o", str(tmp_path / "o.png"), "--checkpoint",
                     str(tmp_path / "ck"), "--unet-variant", "dcgd12", "--guidance-mode", "clipaway+dcgd",
                     "--steps", "2", "--cache-dir", ""])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0 and "T_mask (negative)" in text and (tmp_path / "o.png").is_file()


def test_describe_command_prints_texts_and_scores(tiny_checkpoint, published, capsys):
    image = published["sd_inpaint"].parent / "d.png"
    from PIL import Image

    Image.fromarray((np.random.RandomState(1).rand(64, 64, 3) * 255).astype(np.uint8)).save(image)
    code = cli_main(["describe", str(image), str(image), "--checkpoint", str(tiny_checkpoint), "--cache-dir", ""])
    out = capsys.readouterr().out
    assert code == 0 and "T_mask (negative prompt):" in out and "scene:" in out


def test_describer_requires_clip_networks(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint, networks=["alpha_clip"])
    with pytest.raises(ValueError, match="clip_text"):
        RegionDescriber(ckpt)
