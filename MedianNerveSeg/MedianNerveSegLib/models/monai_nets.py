"""MONAI's own 2D networks configured for one grayscale channel in, one nerve logit out,
on frames of any size."""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.nets import AttentionUnet, BasicUNet, BasicUNetPlusPlus, UNet

from .padding import pad_to_multiple


class PaddedUNet(UNet):
    """MONAI UNet that pads its input to a multiple of its total stride (same weights as UNet)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        return self.model(pad_to_multiple(x, 1 << len(self.strides)))[..., :height, :width]


class PaddedAttentionUnet(AttentionUnet):
    """MONAI AttentionUnet (Oktay et al., 2018) on any input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        return self.model(pad_to_multiple(x, 1 << len(self.strides)))[..., :height, :width]


class UNetPlusPlus(torch.nn.Module):
    """MONAI BasicUNetPlusPlus (Zhou et al., 2018) in the paper's accurate mode: the mean of
    the four nested decoders' logits (each is deeply supervised through that mean)."""

    def __init__(self, features: Sequence[int] = (32, 32, 64, 128, 256, 32), dropout: float = 0.0):
        super().__init__()
        self.network = BasicUNetPlusPlus(spatial_dims=2, in_channels=1, out_channels=1, features=tuple(features),
                                         deep_supervision=True, norm="batch", dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack(self.network(x)).mean(dim=0)


def monai_unet(channels: Sequence[int] = (16, 32, 64, 128, 256), num_res_units: int = 2,
               dropout: float = 0.0) -> torch.nn.Module:
    """MONAI UNet (Kerfoot et al., 2018): residual units, strided convolutions."""
    return PaddedUNet(spatial_dims=2, in_channels=1, out_channels=1, channels=tuple(channels),
                      strides=(2,) * (len(channels) - 1), num_res_units=num_res_units,
                      norm="batch", dropout=dropout)


def click_unet(channels: Sequence[int] = (16, 32, 64, 128, 256), num_res_units: int = 2,
               in_channels: int = 4) -> torch.nn.Module:
    """Click-conditioned MONAI UNet for interactive refinement (RITM, Sofiiuk et al., 2021: early fusion of
    the image, the previous mask and the positive and negative click disks as input channels)."""
    return PaddedUNet(spatial_dims=2, in_channels=in_channels, out_channels=1, channels=tuple(channels),
                      strides=(2,) * (len(channels) - 1), num_res_units=num_res_units, norm="batch")


def basic_unet(features: Sequence[int] = (32, 32, 64, 128, 256, 32), dropout: float = 0.0) -> torch.nn.Module:
    """MONAI BasicUNet: two 3x3 conv per level, max-pool down, transposed-conv up."""
    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=tuple(features),
                     norm="batch", dropout=dropout)


def attention_unet(channels: Sequence[int] = (32, 64, 128, 256, 512), dropout: float = 0.0) -> torch.nn.Module:
    """MONAI AttentionUnet: attention gates on the skip connections."""
    return PaddedAttentionUnet(spatial_dims=2, in_channels=1, out_channels=1, channels=tuple(channels),
                               strides=(2,) * (len(channels) - 1), dropout=dropout)
