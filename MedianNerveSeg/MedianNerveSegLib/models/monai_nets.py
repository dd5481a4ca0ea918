"""MONAI's own 2D networks configured for one grayscale channel in, one nerve logit out."""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.nets import BasicUNet, UNet


def monai_unet(channels: Sequence[int] = (16, 32, 64, 128, 256), num_res_units: int = 2,
               dropout: float = 0.0) -> torch.nn.Module:
    """MONAI UNet (residual units, strided convolutions); sizes must divide by 2**(levels-1)."""
    return UNet(spatial_dims=2, in_channels=1, out_channels=1, channels=tuple(channels),
                strides=(2,) * (len(channels) - 1), num_res_units=num_res_units,
                norm="batch", dropout=dropout)


def basic_unet(features: Sequence[int] = (32, 32, 64, 128, 256, 32), dropout: float = 0.0) -> torch.nn.Module:
    """MONAI BasicUNet: two 3x3 conv per level, max-pool down, transposed-conv up."""
    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=tuple(features),
                     norm="batch", dropout=dropout)
