"""MultiResUNet (Ibtehaz & Rahman, Neural Networks 2020;121:74-87), a baseline of Kim et al. 2022."""

from __future__ import annotations

from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import Encoder
from .padding import pad_to_multiple

__all__ = ["MultiResBlock", "ResPath", "MultiResUNet"]


class _ConvBN(nn.Sequential):
    """Bias-free convolution + BatchNorm (+ ReLU): the reference code's ``conv2d_bn``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, relu: bool):
        layers: List[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class MultiResBlock(nn.Module):
    """Three chained 3x3 conv (approximating 3x3, 5x5, 7x7) concatenated, plus a 1x1 residual shortcut.

    With ``W = alpha * filters`` the three convolutions have ``int(0.167 W)``, ``int(0.333 W)`` and
    ``int(0.5 W)`` channels (the reference code's rounding); ``out_channels`` is their sum.
    """

    def __init__(self, in_channels: int, filters: int, alpha: float = 1.67):
        super().__init__()
        width = alpha * filters
        c3, c5, c7 = int(width * 0.167), int(width * 0.333), int(width * 0.5)
        self.out_channels = c3 + c5 + c7
        self.shortcut = _ConvBN(in_channels, self.out_channels, 1, relu=False)
        self.conv3 = _ConvBN(in_channels, c3, 3, relu=True)
        self.conv5 = _ConvBN(c3, c5, 3, relu=True)
        self.conv7 = _ConvBN(c5, c7, 3, relu=True)
        self.norm_cat = nn.BatchNorm2d(self.out_channels)
        self.norm_out = nn.BatchNorm2d(self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv3(x)
        b = self.conv5(a)
        c = self.conv7(b)
        out = self.norm_cat(torch.cat([a, b, c], dim=1)) + self.shortcut(x)
        return self.norm_out(F.relu(out))


class ResPath(nn.Module):
    """``length`` residual units (3x3 conv + 1x1 shortcut, add, ReLU, BatchNorm) on a skip connection."""

    def __init__(self, in_channels: int, filters: int, length: int):
        super().__init__()
        channels = [in_channels] + [filters] * length
        self.convs = nn.ModuleList([_ConvBN(c, filters, 3, relu=True) for c in channels[:-1]])
        self.shortcuts = nn.ModuleList([_ConvBN(c, filters, 1, relu=False) for c in channels[:-1]])
        self.norms = nn.ModuleList([nn.BatchNorm2d(filters) for _ in range(length)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, shortcut, norm in zip(self.convs, self.shortcuts, self.norms):
            x = norm(F.relu(conv(x) + shortcut(x)))
        return x


class _UpBlock(nn.Module):
    """2x2 stride-2 transposed convolution, concatenation with the ResPath output, MultiResBlock."""

    def __init__(self, in_channels: int, skip_channels: int, filters: int, alpha: float):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, filters, kernel_size=2, stride=2)
        self.block = MultiResBlock(filters + skip_channels, filters, alpha)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(x), skip], dim=1))


class MultiResUNet(nn.Module):
    """2D MultiResUNet of Ibtehaz & Rahman 2020, as used as a baseline by Kim et al. 2022; returns logits.

    Five levels of MultiRes blocks (filters 32, 64, 128, 256, 512 times ``alpha`` = 1.67), 2x2 max-pool
    down, 2x2 transposed convolutions up, and Res paths of length 4, 3, 2, 1 on the skips, following
    the authors' Keras code. Kim et al. give no configuration or parameter count for it, so the
    original one is used (7.26M parameters with 3 input channels; 7.26M here with 1).

    Differences from the reference: the classifier is a 1x1 convolution with bias returning logits
    (the original is conv + BatchNorm + sigmoid); PyTorch BatchNorm has a learnt scale everywhere
    (the original's ``conv2d_bn`` uses ``scale=False``); any H, W is accepted by zero-padding to a
    multiple of 16 and cropping the output back.

    Args:
        in_channels: input channels (1: grayscale ultrasound).
        out_channels: output logit channels.
        filters: filters U of the first level, doubled per level.
        alpha: MultiRes block width multiplier.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, filters: int = 32, alpha: float = 1.67):
        super().__init__()
        level_filters = [filters * 2 ** level for level in range(5)]
        encoder_blocks = []
        self.res_paths = nn.ModuleList()
        channels = in_channels
        for level, f in enumerate(level_filters):
            block = MultiResBlock(channels, f, alpha)
            encoder_blocks.append(block)
            channels = block.out_channels
            if level < 4:
                self.res_paths.append(ResPath(channels, f, length=4 - level))
        self.encoder = Encoder(encoder_blocks)
        self.decoder = nn.ModuleList()
        for f in level_filters[-2::-1]:
            up = _UpBlock(channels, f, f, alpha)
            self.decoder.append(up)
            channels = up.block.out_channels
        self.head = nn.Conv2d(channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = pad_to_multiple(x, 16)
        skips = self.encoder(x)
        x = skips.pop()
        for level, path in enumerate(self.res_paths):
            skips[level] = path(skips[level])
        for block in self.decoder:
            x = block(x, skips.pop())
        return self.head(x)[..., :height, :width]
