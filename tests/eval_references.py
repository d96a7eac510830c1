"""Faithful torch references of the evaluation networks, transcribed because their packages import
torchvision, which does not install beside this torch:

- the FID Inception of torch-fidelity 0.4.0 (`feature_extractor_inceptionv3.py`: the TF1 bilinear
  resize of `interpolate_compat_tensorflow.py`, (x - 128) / 128, torchvision's Inception3 blocks with
  the TF patches), which is pytorch-fid 0.3.0's `FIDInceptionA/C/E_1/E_2` network;
- LPIPS v0.1 of the `lpips` package 0.1.4 (`lpips.py`, `pretrained_networks.alexnet`: torchvision's
  AlexNet `features` cut after each ReLU).

Random weights with sane statistics (He-scaled convs, BatchNorm stats near identity), so 50 layers
of Inception stay in range and the fp32 comparison measures the port.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class InceptionA(nn.Module):
    def __init__(self, cin, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([self.branch1x1(x), b5, b3, bp], 1)


class InceptionB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin, c7):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([self.branch1x1(x), b7, bd, bp], 1)


class InceptionD(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin, max_pool_branch):
        super().__init__()
        self.max_pool_branch = max_pool_branch
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.max_pool_branch:  # FIDInceptionE_2
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:  # FIDInceptionE_1
            pooled = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


def tf1_bilinear(x, size):
    """torch-fidelity's `interpolate_bilinear_2d_like_tensorflow1x(..., align_corners=False)`, "slow"."""
    out_h, out_w = size
    grid_x = torch.arange(0, out_w, 1, dtype=x.dtype) * torch.tensor(x.shape[3] / out_w, dtype=torch.float32)
    x_lo = grid_x.long()
    x_hi = (x_lo + 1).clamp_max(x.shape[3] - 1)
    dx = grid_x - x_lo.float()
    grid_y = torch.arange(0, out_h, 1, dtype=x.dtype) * torch.tensor(x.shape[2] / out_h, dtype=torch.float32)
    y_lo = grid_y.long()
    y_hi = (y_lo + 1).clamp_max(x.shape[2] - 1)
    dy = grid_y - y_lo.float()
    in_00, in_01 = x[:, :, y_lo, :][:, :, :, x_lo], x[:, :, y_lo, :][:, :, :, x_hi]
    in_10, in_11 = x[:, :, y_hi, :][:, :, :, x_lo], x[:, :, y_hi, :][:, :, :, x_hi]
    in_0 = in_00 + (in_01 - in_00) * dx.view(1, 1, 1, out_w)
    in_1 = in_10 + (in_11 - in_10) * dx.view(1, 1, 1, out_w)
    return in_0 + (in_1 - in_0) * dy.view(1, 1, out_h, 1)


class FIDInception(nn.Module):
    """forward(uint8 NCHW) -> [B, 2048] (torch-fidelity); `pytorch_fid(float NCHW in [0, 1])` -> the same
    features through pytorch-fid's resize and normalization."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = InceptionA(192, 32), InceptionA(256, 64), InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b, self.Mixed_6c = InceptionC(768, 128), InceptionC(768, 160)
        self.Mixed_6d, self.Mixed_6e = InceptionC(768, 160), InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b, self.Mixed_7c = InceptionE(1280, False), InceptionE(2048, True)
        self.fc = nn.Linear(2048, 1008)

    def trunk(self, x):
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, output_size=(1, 1)).squeeze(-1).squeeze(-1)

    def forward(self, x):
        x = tf1_bilinear(x.to(torch.float32), (299, 299))
        return self.trunk((x - 128) / 128)

    def pytorch_fid(self, x):
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.trunk(2 * x - 1)


def fid_inception(seed: int = 0) -> FIDInception:
    torch.manual_seed(seed)
    model = FIDInception()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.in_channels * math.prod(module.kernel_size)
                module.weight.normal_(0, math.sqrt(2.0 / fan_in))
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


class LPIPSAlex(nn.Module):
    """The lpips package's `LPIPS(net="alex", version="0.1")`, forward(in0, in1, normalize=True)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(  # torchvision.models.alexnet().features
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )  # fmt: skip
        self.lins = nn.ModuleList(
            [nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, bias=False)) for c in (64, 192, 384, 256, 256)]
        )
        self.register_buffer("shift", torch.Tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.Tensor([0.458, 0.448, 0.450])[None, :, None, None])

    def forward(self, in0, in1):
        outs = []
        for x in (2 * in0 - 1, 2 * in1 - 1):
            h, taps = (x - self.shift) / self.scale, []
            for start, stop in ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12)):  # slice1..slice5
                for layer in self.features[start:stop]:
                    h = layer(h)
                taps.append(h)
            outs.append(taps)
        total = 0
        for k, lin in enumerate(self.lins):
            f0, f1 = (t[k] / (torch.sqrt(torch.sum(t[k] ** 2, dim=1, keepdim=True)) + 1e-10) for t in outs)
            total = total + lin((f0 - f1) ** 2).mean([2, 3], keepdim=True)
        return total

    def torchvision_state(self) -> dict[str, np.ndarray]:
        """The alexnet-owt file's keys (features.N.*, plus a classifier that LPIPS ignores)."""
        state = {f"features.{k}": v.numpy() for k, v in self.features.state_dict().items()}
        return state | {"classifier.1.weight": np.zeros((4096, 9216), np.float32), "classifier.1.bias": np.zeros(4096)}

    def lin_state(self) -> dict[str, np.ndarray]:
        """The lpips package's weights/v0.1/alex.pth keys."""
        return {f"lin{k}.model.1.weight": lin[1].weight.detach().numpy() for k, lin in enumerate(self.lins)}


def lpips_alex(seed: int = 0) -> LPIPSAlex:
    torch.manual_seed(seed)
    model = LPIPSAlex()
    with torch.no_grad():
        for lin in model.lins:
            lin[1].weight.uniform_(0, 0.2)  # the published lin weights are non-negative
    return model.eval()
