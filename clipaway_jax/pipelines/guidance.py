"""Guidance modes: what the positive and negative branches see. Every mode runs in the same compiled
program (one UNet call on [negative; positive]); a mode only picks the texts and the image-token scale.

    clipaway        positive ("", CLIPAway image tokens)   negative (IP-Adapter negative text, uncond tokens)
    dcgd            positive (T_info, no image tokens)     negative (T_mask, no image tokens)
    clipaway+dcgd   positive (T_info, CLIPAway tokens)      negative (T_mask, uncond tokens)

With weight w, eps = w * eps(positive) + (1 - w) * eps(negative)  (DCGD eq. 6; CFG with scale w).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MODES = ("clipaway", "dcgd", "clipaway+dcgd")


@dataclass(frozen=True)
class Branches:
    prompts: list[str]  # positive text per image
    negatives: list[str]  # negative text per image
    ip_scale: float  # 0 switches the image tokens off (the UNet is then exactly the plain UNet)


def branches(mode: str, count: int, descriptions: Sequence | None, negative_prompt: str, ip_scale: float) -> Branches:
    if mode not in MODES:
        raise ValueError(f"unknown guidance mode {mode!r}; choose one of {MODES}")
    if mode == "clipaway":
        return Branches([""] * count, [negative_prompt] * count, ip_scale)
    if descriptions is None or len(descriptions) != count:
        raise ValueError(f"guidance mode {mode!r} needs one region description per image")
    infos, masks = [d.t_info for d in descriptions], [d.t_mask for d in descriptions]
    return Branches(infos, masks, 0.0 if mode == "dcgd" else ip_scale)


def describe_and_choose(mode, describer, images, masks, negative_prompt: str, ip_scale: float):
    """Region descriptions (when the mode needs them) and the branches they give: (Branches, descriptions)."""
    descriptions = describer.describe(images, masks) if describer is not None else None
    return branches(mode, len(images), descriptions, negative_prompt, ip_scale), descriptions


def needs_descriptions(mode: str) -> bool:
    return mode != "clipaway"
