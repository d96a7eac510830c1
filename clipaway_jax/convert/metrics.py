"""Tables for the evaluation networks: the FID Inception (pt_inception-2015-12-05-*.pth) and LPIPS
(torchvision's alexnet-owt-*.pth features + the lpips package's weights/v0.1/alex.pth)."""

from __future__ import annotations

from clipaway_jax.convert.engine import Rule, kernel

INCEPTION_RULES = (
    Rule(r"(.*)\.conv\.weight", r"\1.conv.kernel", kernel),
    Rule(r"(.*)\.bn\.weight", r"\1.bn.scale"),
    Rule(r"(.*)\.bn\.bias", r"\1.bn.bias"),
    Rule(r"(.*)\.bn\.running_mean", r"\1.bn.mean"),
    Rule(r"(.*)\.bn\.running_var", r"\1.bn.var"),
    Rule(r"(.*)\.bn\.num_batches_tracked", ()),  # a training counter
    Rule(r"fc\.(weight|bias)", ()),  # the 1008-class logits: FID and KID use the pool features
)

ALEXNET_RULES = (
    Rule(r"features\.(0|3|6|8|10)\.weight", r"features.\1.kernel", kernel),
    Rule(r"features\.(0|3|6|8|10)\.bias", r"features.\1.bias"),
    Rule(r"classifier\..*", ()),  # ImageNet head, not part of LPIPS
)

LPIPS_LIN_RULES = (Rule(r"lin([0-4])\.model\.1\.weight", r"lin\1.kernel", kernel),)
