"""Scale-attentional U-Net (Kim, Yu, Kim, Yoon & Baek, Ultrasonography 2022;41:706-717).

Kim et al. replace every convolution of U-Net with a "scale-attentional convolution": cascaded
linear convolutions whose intermediate outputs (receptive fields 1, 3, ..., 2N-1) are concatenated
and weighted by efficient channel attention (ECA, Wang et al., CVPR 2020).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from .blocks import Encoder
from .padding import pad_to_multiple

__all__ = ["EfficientChannelAttention", "ScaleAttentionalConv2d", "ScaleAttentionalUNet"]


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA-Net's adaptive kernel size: the odd number nearest ``|(log2(C) + b) / gamma|``."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class EfficientChannelAttention(nn.Module):
    """ECA weights ``G(z) = sigmoid(Conv1D_k(GAP(z)))``, shape (B, C, 1, 1); multiply them with ``z``."""

    def __init__(self, channels: int, gamma: int = 2, b: int = 1):
        super().__init__()
        k = eca_kernel_size(channels, gamma, b)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=k // 2, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        pooled = z.mean(dim=(2, 3)).unsqueeze(1)  # (B, 1, C): channels are the 1D axis
        return torch.sigmoid(self.conv(pooled)).transpose(1, 2).unsqueeze(-1)


class ScaleAttentionalConv2d(nn.Module):
    """Scale-attentional convolution of Kim et al. 2022 (their Fig. 2), a drop-in for a 3x3 conv layer.

    ``F(n) = H(n) o ... o H(1)(x)`` for n = 1..N, with H(1) a 1x1 convolution (bottleneck) and H(2..N)
    depthwise-separable 3x3 convolutions (depthwise 3x3, then pointwise 1x1), all linear
    (``H(x) = W x``: no bias, normalisation or nonlinearity in between). ``z = concat(F(1..N))``,
    ``y = G(z) * z`` with ECA weights ``G``, then BatchNorm and ReLU.

    Channel bookkeeping (not spelt out in the paper's text): every branch has ``out_channels / N``
    channels, so ``z`` and the output have ``out_channels``; this is the reading consistent with the
    paper's 491K parameters and its 19x saving over a 9.4M U-Net. The paper does not give the ECA
    kernel size k; ECA-Net's adaptive rule (gamma=2, b=1) is used. BatchNorm + ReLU after the
    attention are assumed (the paper only says there is none *between* the cascaded convolutions).

    Args:
        in_channels: input channels.
        out_channels: output channels; must be divisible by ``num_scales``.
        num_scales: N, the number of cascaded convolutions (receptive fields 1 .. 2N-1); paper: 4.
        eca_gamma: ECA-Net gamma of the adaptive kernel size.
        eca_b: ECA-Net b of the adaptive kernel size.
    """

    def __init__(self, in_channels: int, out_channels: int, num_scales: int = 4, eca_gamma: int = 2,
                 eca_b: int = 1):
        super().__init__()
        if num_scales < 1 or out_channels % num_scales:
            raise ValueError(f"out_channels={out_channels} must be a positive multiple of num_scales={num_scales}")
        branch = out_channels // num_scales
        self.bottleneck = nn.Conv2d(in_channels, branch, kernel_size=1, bias=False)
        self.cascade = nn.ModuleList([
            nn.Sequential(nn.Conv2d(branch, branch, kernel_size=3, padding=1, groups=branch, bias=False),
                          nn.Conv2d(branch, branch, kernel_size=1, bias=False))
            for _ in range(num_scales - 1)
        ])
        self.attention = EfficientChannelAttention(out_channels, eca_gamma, eca_b)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)

    def scales(self, x: torch.Tensor) -> torch.Tensor:
        """``z``: the N cascaded linear outputs F(1..N), concatenated along channels."""
        x = self.bottleneck(x)
        outputs = [x]
        for conv in self.cascade:
            x = conv(x)
            outputs.append(x)
        return torch.cat(outputs, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.scales(x)
        return self.act(self.norm(z * self.attention(z)))


def _double_conv(in_channels: int, out_channels: int, num_scales: int) -> nn.Sequential:
    return nn.Sequential(ScaleAttentionalConv2d(in_channels, out_channels, num_scales),
                         ScaleAttentionalConv2d(out_channels, out_channels, num_scales))


class _UpBlock(nn.Module):
    """Nearest-neighbour x2 + scale-attentional conv (halving channels), concat skip, two SA convs."""

    def __init__(self, in_channels: int, out_channels: int, num_scales: int):
        super().__init__()
        self.up = nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest"),
                                ScaleAttentionalConv2d(in_channels, out_channels, num_scales))
        self.convs = _double_conv(2 * out_channels, out_channels, num_scales)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([skip, self.up(x)], dim=1))


class ScaleAttentionalUNet(nn.Module):
    """Scale-attentional U-Net of Kim et al. 2022 for 2D segmentation; returns logits.

    Ronneberger's U-Net (two convolutions per level, 2x2 max-pool down) with every convolution
    replaced by :class:`ScaleAttentionalConv2d` and up-sampling by nearest neighbour + convolution
    (paper). Any H, W: the input is zero-padded to a multiple of ``2 ** (len(features) - 1)`` and the
    output cropped back.

    Assumptions (the paper's figures give no layer table): U-Net's 5 levels with features (32, 64,
    128, 256, 512), which comes near the paper's 491K parameters (this model: 449.6K, -8.4%; 16 or 64
    base features give 120K or 1.74M, and (64, 128, 256, 512) over 4 levels a similar 445K); the
    up-sampling convolution halves the channels as in U-Net; the classifier is a plain 1x1
    convolution with bias and no sigmoid (logits). See
    :class:`ScaleAttentionalConv2d` for the layer's own assumptions.

    Args:
        in_channels: input channels (1: grayscale ultrasound).
        out_channels: output logit channels.
        features: channels per level, shallowest first.
        num_scales: N of every scale-attentional convolution (paper: 4).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1,
                 features: Sequence[int] = (32, 64, 128, 256, 512), num_scales: int = 4):
        super().__init__()
        features = list(features)
        self.multiple = 2 ** (len(features) - 1)
        self.encoder = Encoder([
            _double_conv(c_in, c_out, num_scales) for c_in, c_out in zip([in_channels] + features[:-1], features)
        ])
        self.decoder = nn.ModuleList([
            _UpBlock(c_in, c_out, num_scales) for c_in, c_out in zip(features[:0:-1], features[-2::-1])
        ])
        self.head = nn.Conv2d(features[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = pad_to_multiple(x, self.multiple)
        skips = self.encoder(x)
        x = skips.pop()
        for block in self.decoder:
            x = block(x, skips.pop())
        return self.head(x)[..., :height, :width]
