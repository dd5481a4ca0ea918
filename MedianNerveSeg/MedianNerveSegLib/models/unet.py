"""U-Net (Ronneberger et al., MICCAI 2015) as configured by Melnic et al. 2022 (DL-UNet paper)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .blocks import Decoder, DoubleConv, Encoder
from .padding import pad_to_multiple

__all__ = ["UNet"]


class UNet(nn.Module):
    """Five-level U-Net, the baseline of Melnic, Conti & Federici, "DL-UNet: A Convolutional Neural
    Network for Median Nerve Segmentation" (2022), Section III-F; paper: 7,858,405 parameters.

    Each level: two 3x3 convolutions, each followed by batch norm and ReLU; 2x2 max-pooling down;
    up: 2x bilinear up-sampling, concatenation with the skip connection, the two convolutions;
    a final 1x1 convolution gives the logits.

    Differences from the papers, chosen from the parameter count (the DL-UNet paper gives no
    widths): 32 filters doubling to 512 (Ronneberger: 64 to 1024). The count 7,858,405 is
    reproduced exactly by the Keras model with batch norm after every convolution (Keras counts
    4 numbers per batch-norm channel), plain up-sampling without the 2x2 "up-convolution" the text
    describes, and a 3x3 conv to 2 channels before the 1x1 output (as in the popular Keras U-Net);
    here the 1x1 output conv of the text follows the last level directly and PyTorch counts only
    the trainable batch-norm parameters, giving 7,849,025 (-0.1%). Convolutions followed by batch
    norm have no bias. Inputs of any size are zero-padded to a multiple of 16 and the logits
    cropped back. Returns logits (the paper ends with a sigmoid).

    Args:
        in_channels: input channels (1: grayscale ultrasound).
        out_channels: output channels (1: the nerve logit).
        features: filters of the five levels, shallowest first.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1,
                 features: Sequence[int] = (32, 64, 128, 256, 512)):
        super().__init__()
        widths = [in_channels] + list(features)
        self.multiple = 2 ** (len(features) - 1)
        self.encoder = Encoder([DoubleConv(widths[i], widths[i + 1]) for i in range(len(features))])
        self.decoder = Decoder(features[-1], features[-2::-1], features[-2::-1])
        self.head = nn.Conv2d(features[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2], x.shape[3]
        features = self.encoder(pad_to_multiple(x, self.multiple))
        return self.head(self.decoder(features[-1], features[:-1]))[:, :, :height, :width]
