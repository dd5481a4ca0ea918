"""Lightweight U-Net of DeepNerve (Horng et al. 2020) as used by Melnic et al. 2022 (DL-UNet paper)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .blocks import Decoder, DoubleConv, Encoder
from .padding import pad_to_multiple

__all__ = ["LUNet", "lunet_block"]


def lunet_block(in_channels: int, out_channels: int) -> DoubleConv:
    """Two 3x3 conv + ReLU with batch norm after the first only."""
    return DoubleConv(in_channels, out_channels, norm_second=False)


class LUNet(nn.Module):
    """Lightweight U-Net (L-UNet): Horng, Yang, Sun & Yang, "DeepNerve: a new convolutional neural
    network for the localization and segmentation of the median nerve in ultrasound image
    sequences", Ultrasound Med. Biol. 46(9), 2020, as described by Melnic, Conti & Federici,
    "DL-UNet" (2022), Section III-G; paper: 1,952,485 parameters.

    U-Net reduced from five to four levels, with batch norm after the first of the two 3x3
    convolutions of each level; 2x2 max-pooling down, 2x bilinear up-sampling and concatenation
    up, and a 1x1 output convolution.

    Assumptions (the paper gives no widths): 32 filters doubling to 256, up-sampling without a
    learnt up-convolution, as in the authors' U-Net (see :class:`UNet`). Their Keras count
    1,952,485 is reproduced exactly with batch norm after both convolutions (4 numbers per channel)
    and a 3x3 conv to 2 channels before the 1x1 output; here batch norm follows only the first
    convolution as the text says, the 1x1 output conv follows the last level directly, and only
    trainable parameters are counted: 1,947,009 (-0.3%). Inputs of any size are zero-padded to a
    multiple of 8 and the logits cropped back. Returns logits (the paper ends with a sigmoid).

    Args:
        in_channels: input channels (1: grayscale ultrasound).
        out_channels: output channels (1: the nerve logit).
        features: filters of the four levels, shallowest first.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1,
                 features: Sequence[int] = (32, 64, 128, 256)):
        super().__init__()
        widths = [in_channels] + list(features)
        self.multiple = 2 ** (len(features) - 1)
        self.encoder = Encoder([lunet_block(widths[i], widths[i + 1]) for i in range(len(features))])
        self.decoder = Decoder(features[-1], features[-2::-1], features[-2::-1], lunet_block)
        self.head = nn.Conv2d(features[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2], x.shape[3]
        features = self.encoder(pad_to_multiple(x, self.multiple))
        return self.head(self.decoder(features[-1], features[:-1]))[:, :, :height, :width]
