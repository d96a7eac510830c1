"""One function per network: state dict (lazy mapping) + config -> Flax params (numpy, host memory)."""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from clipaway_jax.convert.clip import ALPHA_CLIP_RULES, HF_TEXT_RULES, HF_VISION_RULES
from clipaway_jax.convert.clipaway import mlp_rules
from clipaway_jax.convert.engine import ConversionError, convert_state_dict, target_shapes
from clipaway_jax.convert.unet import DIFFUSERS_RULES, IMAGE_PROJ_RULES, ip_adapter_rules, unet_hint
from clipaway_jax.models import (
    AutoencoderKL,
    CLIPAwayMLP,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
    CLIPVisionTransformer,
    ImageProjection,
    MLPConfig,
    UNet2DConditionModel,
    UNetConfig,
    VAEConfig,
    abstract_params,
)


class _Merged(Mapping):
    """Several lazy sources seen as one (UNet weights + the IP-Adapter's `ip_adapter.*` keys)."""

    def __init__(self, *sources: Mapping):
        self._sources = sources

    def __getitem__(self, key):
        for source in self._sources:
            if key in source:
                return source[key]
        raise KeyError(key)

    def __iter__(self):
        for source in self._sources:
            yield from source

    def __len__(self):
        return sum(len(s) for s in self._sources)


def convert_unet(
    state: Mapping, config: UNetConfig, *, ip_adapter: Mapping | None = None, name="unet", dtype=np.float32
) -> dict:
    """`ip_adapter`: the IP-Adapter file's `ip_adapter` dict (keys `{i}.to_k_ip.weight`)."""
    model = UNet2DConditionModel(config)
    inputs = _unet_inputs(config, with_ip=ip_adapter is not None)
    targets = target_shapes(abstract_params(model, *inputs))
    source, rules = state, DIFFUSERS_RULES
    if ip_adapter is not None:
        source = _Merged(ip_adapter, state)
        rules = ip_adapter_rules(config) + DIFFUSERS_RULES
    return convert_state_dict(source, rules, targets, source_name=name, dtype=dtype, hint=unet_hint)


def _unet_inputs(config: UNetConfig, with_ip: bool) -> tuple:
    from clipaway_jax.models import example_inputs

    inputs = example_inputs(UNet2DConditionModel(config))
    return (*inputs, jnp.zeros((1, 1, config.cross_attention_dim))) if with_ip else inputs


def convert_image_proj(state: Mapping, *, num_tokens: int = 4, name="image_proj", dtype=np.float32):
    """IP-Adapter `image_proj` dict (keys `proj.weight` ...) -> (params, (embed_dim, cross_attention_dim))."""
    if "proj.weight" not in state:
        raise ConversionError(f"{name}: no image_proj 'proj.weight'; not a plain (4-token) IP-Adapter file")
    out_dim, embed_dim = np.asarray(state["proj.weight"]).shape
    cross = out_dim // num_tokens
    module = ImageProjection(num_tokens, cross)
    targets = target_shapes(abstract_params(module, jnp.zeros((1, embed_dim))))
    params = convert_state_dict(state, IMAGE_PROJ_RULES, targets, source_name=name, dtype=dtype)
    return params, (embed_dim, cross)


def convert_vae(state: Mapping, config: VAEConfig, *, name="vae", dtype=np.float32) -> dict:
    targets = target_shapes(abstract_params(AutoencoderKL(config)))
    return convert_state_dict(state, DIFFUSERS_RULES, targets, source_name=name, dtype=dtype)


def convert_text(
    state: Mapping, config: CLIPTextConfig, *, with_projection=False, name="text_encoder", dtype=np.float32
) -> dict:
    targets = target_shapes(abstract_params(CLIPTextModel(config, with_projection)))
    return convert_state_dict(state, HF_TEXT_RULES, targets, source_name=name, dtype=dtype)


def convert_vision(state: Mapping, config: CLIPVisionConfig, *, name="image_encoder", dtype=np.float32) -> dict:
    """transformers `CLIPVisionModelWithProjection` names (`vision_model.*`, `visual_projection.weight`)."""
    targets = target_shapes(abstract_params(CLIPVisionTransformer(config)))
    return convert_state_dict(state, HF_VISION_RULES, targets, source_name=name, dtype=dtype)


def convert_alpha_clip(state: Mapping, config: CLIPVisionConfig, *, name="alpha_clip", dtype=np.float32) -> dict:
    """AlphaCLIP visual state dict (OpenAI names). A missing `conv1_alpha.weight` becomes zeros, as
    AlphaCLIP's own loader does (the tower then equals plain CLIP)."""
    if "conv1_alpha.weight" not in state and "conv1.weight" in state:
        import warnings

        warnings.warn(f"{name}: no conv1_alpha.weight; using zeros (plain CLIP behaviour)", stacklevel=2)
        conv1 = np.asarray(state["conv1.weight"])
        state = _Merged(state, {"conv1_alpha.weight": np.zeros_like(conv1[:, :1])})
    targets = target_shapes(abstract_params(CLIPVisionTransformer(config.replace(alpha=True))))
    return convert_state_dict(state, ALPHA_CLIP_RULES, targets, source_name=name, dtype=dtype)


def alpha_clip_config(state: Mapping, name: str = "alpha_clip", output_dim_key: str = "proj") -> CLIPVisionConfig:
    """Read the tower's size off the state dict, as AlphaCLIP's `build_model` does."""
    try:
        conv1 = np.asarray(state["conv1.weight"]).shape
        positions = np.asarray(state["positional_embedding"]).shape[0]
        out_dim = np.asarray(state[output_dim_key]).shape[1]
    except KeyError as err:
        keys = ", ".join(sorted(state)[:5])
        raise ConversionError(
            f"{name}: not an AlphaCLIP/CLIP visual state dict: no {err.args[0]!r} (found keys: {keys} ...)"
        ) from None
    width, patch = conv1[0], conv1[-1]
    layers = len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")})
    grid = round((positions - 1) ** 0.5)
    return CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=4 * width,
        projection_dim=out_dim,
        num_hidden_layers=layers,
        num_attention_heads=width // 64,
        image_size=grid * patch,
        patch_size=patch,
        hidden_act="quick_gelu",
        alpha=True,
    )


def convert_mlp(state: Mapping, config: MLPConfig, *, name="mlp", dtype=np.float32) -> dict:
    targets = target_shapes(abstract_params(CLIPAwayMLP(config)))
    return convert_state_dict(state, mlp_rules(config), targets, source_name=name, dtype=dtype)


def convert_inception(state: Mapping, *, name="inception", dtype=np.float32) -> dict:
    """pytorch-fid's / torch-fidelity's `pt_inception-2015-12-05-6726825d.pth`."""
    from clipaway_jax.convert.metrics import INCEPTION_RULES
    from clipaway_jax.models.inception import FIDInceptionV3

    targets = target_shapes(abstract_params(FIDInceptionV3(), jnp.zeros((1, 75, 75, 3))))
    return convert_state_dict(state, INCEPTION_RULES, targets, source_name=name, dtype=dtype)


def convert_lpips(alexnet: Mapping, lins: Mapping, *, name="lpips", dtype=np.float32) -> dict:
    """torchvision's AlexNet state dict (`features.*`; the classifier is dropped) and the lpips package's
    `alex.pth` (`lin{k}.model.1.weight`) -> one LPIPS param tree."""
    from clipaway_jax.convert.metrics import ALEXNET_RULES, LPIPS_LIN_RULES
    from clipaway_jax.models.lpips import LPIPS

    image = jnp.zeros((1, 64, 64, 3))
    targets = target_shapes(abstract_params(LPIPS(), image, image))
    return convert_state_dict(_Merged(alexnet, lins), ALEXNET_RULES + LPIPS_LIN_RULES, targets, source_name=name,
                              dtype=dtype)  # fmt: skip
