"""Building blocks of the U-Net family of Melnic et al. 2022 (DL-UNet) and of its baselines.

Double convolution blocks with batch norm (U-Net, Lightweight U-Net), squeeze-and-excitation
(Hu et al., CVPR 2018) and ASPP (Chen et al., DeepLabv3, 2017) as used by DoubleU-Net
(Jha et al., CBMS 2020), a generic encoder/decoder pair, and a VGG-16/19 encoder whose weights can
be read from a torchvision VGG ``state_dict`` file (never downloaded).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "ASPP",
    "Decoder",
    "DoubleConv",
    "Encoder",
    "SqueezeExcitation",
    "VGG_CONFIGS",
    "conv_bn_relu",
    "load_vgg_weights",
    "se_double_conv",
    "vgg_encoder",
]

# Convolution widths of each VGG block (Simonyan & Zisserman 2015, configurations D and E).
VGG_CONFIGS: Dict[str, Tuple[Tuple[int, ...], ...]] = {
    "vgg16": ((64, 64), (128, 128), (256,) * 3, (512,) * 3, (512,) * 3),
    "vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3,
                 dilation: int = 1) -> nn.Sequential:
    """'Same'-padded convolution (no bias: batch norm follows), batch norm, ReLU."""
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions with ReLU; batch norm after the first and, if ``norm_second``, the second.

    ``norm_second=False`` is the Lightweight U-Net level of Horng et al. 2020 (batch norm follows
    only the first convolution).
    """

    def __init__(self, in_channels: int, out_channels: int, norm_second: bool = True):
        if norm_second:
            second: List[nn.Module] = list(conv_bn_relu(out_channels, out_channels))
        else:
            second = [nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True)]
        super().__init__(*conv_bn_relu(in_channels, out_channels), *second)


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation: ``x * sigmoid(W2 relu(W1 GAP(x)))``, bias-free as in DoubleU-Net."""

    def __init__(self, channels: int, ratio: int = 8):
        super().__init__()
        hidden = max(channels // ratio, 1)
        self.excite = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.excite(x)


def se_double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """DoubleU-Net ``conv_block``: two conv-BN-ReLU, then squeeze-and-excitation (ratio 8)."""
    return nn.Sequential(DoubleConv(in_channels, out_channels), SqueezeExcitation(out_channels))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling as in DoubleU-Net (Keras version).

    Branches, each conv-BN-ReLU with ``out_channels``: image pooling (global average, 1x1 conv,
    broadcast back), one convolution per rate (1x1 for rate 1, dilated 3x3 otherwise); their
    concatenation is projected by a 1x1 conv-BN-ReLU. The pooling branch has batch norm on a 1x1
    map, so training needs batches of at least 2.
    """

    def __init__(self, in_channels: int, out_channels: int = 64, rates: Sequence[int] = (1, 6, 12, 18)):
        super().__init__()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), *conv_bn_relu(in_channels, out_channels, 1))
        self.branches = nn.ModuleList(
            [conv_bn_relu(in_channels, out_channels, 1 if r == 1 else 3, r) for r in rates]
        )
        self.project = conv_bn_relu((len(rates) + 1) * out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [self.pool(x).expand(-1, -1, x.shape[2], x.shape[3])]
        for branch in self.branches:
            outputs.append(branch(x))
        return self.project(torch.cat(outputs, dim=1))


class Encoder(nn.Module):
    """Contracting path: ``blocks[0]``, then 2x2 max-pool and ``blocks[i]`` for each further level.

    Returns the output of every level, shallowest first.
    """

    def __init__(self, blocks: Sequence[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        features: List[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            features.append(x)
        return features


class Decoder(nn.Module):
    """Expanding path: per level, 2x bilinear up-sampling, concatenation with the skip, ``block``.

    Args:
        in_channels: channels of the deepest feature map.
        skip_channels: channels of the skip connections, deepest first.
        features: output channels of each level, deepest first.
        block: ``block(in_channels, out_channels)`` builds the convolutions of one level.
    """

    def __init__(self, in_channels: int, skip_channels: Sequence[int], features: Sequence[int],
                 block: Callable[[int, int], nn.Module] = DoubleConv):
        super().__init__()
        if len(skip_channels) != len(features):
            raise ValueError(f"{len(skip_channels)} skip connections for {len(features)} decoder levels")
        blocks = []
        for skip, out_channels in zip(skip_channels, features):
            blocks.append(block(in_channels + skip, out_channels))
            in_channels = out_channels
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, skips: List[torch.Tensor]) -> torch.Tensor:
        """``skips``: shallowest first (as :class:`Encoder` returns them); the deepest is used first."""
        for i, block in enumerate(self.blocks):
            skip = skips[-1 - i]
            x = F.interpolate(x, size=[skip.shape[2], skip.shape[3]], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return x


def vgg_encoder(name: str, in_channels: int = 3, num_blocks: int = 5) -> Encoder:
    """The first ``num_blocks`` blocks of VGG ``name`` (3x3 conv with bias + ReLU, no batch norm).

    Level i returns block i's last convolution (before its max-pool), e.g. ``block1_conv2``,
    ``block2_conv2``, ``block3_conv4``, ... for VGG-19.
    """
    if name not in VGG_CONFIGS:
        raise ValueError(f"unknown VGG encoder '{name}'; available: {', '.join(sorted(VGG_CONFIGS))}")
    stages = []
    for widths in VGG_CONFIGS[name][:num_blocks]:
        layers: List[nn.Module] = []
        for width in widths:
            layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            in_channels = width
        stages.append(nn.Sequential(*layers))
    return Encoder(stages)


def _torchvision_conv_indices(name: str) -> List[int]:
    """Indices of the convolutions in torchvision's ``vgg*.features`` (conv, ReLU, ..., max-pool)."""
    indices, position = [], 0
    for widths in VGG_CONFIGS[name]:
        for _ in widths:
            indices.append(position)
            position += 2
        position += 1
    return indices


def _vgg_tensor(state: Dict[str, torch.Tensor], key: str, expected: torch.Tensor, path: str) -> torch.Tensor:
    if key not in state:
        raise ValueError(f"{path}: no '{key}' - not a torchvision state_dict of this VGG configuration")
    tensor = state[key]
    if tensor.shape[1:] != expected.shape[1:] and key == "features.0.weight" and expected.shape[1] == 1:
        tensor = tensor.sum(dim=1, keepdim=True)  # RGB filters on a grey image replicated to RGB
    if tensor.shape != expected.shape:
        raise ValueError(f"{path}: '{key}' has shape {tuple(tensor.shape)}, expected {tuple(expected.shape)}")
    return tensor


def load_vgg_weights(encoder: Encoder, name: str, path: str) -> None:
    """Copy the convolutions of a torchvision ``vgg16``/``vgg19`` ``state_dict`` file into ``encoder``.

    Keys are ``features.<i>.weight``/``.bias`` as torchvision names them. With one input channel the
    first layer's RGB filters are summed (equivalent to feeding the grey image as RGB).

    Raises:
        ValueError: a key is missing or a tensor has the wrong shape (e.g. a VGG-16 file for VGG-19).
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict, found {type(state).__name__}")
    convs = [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for conv, index in zip(convs, _torchvision_conv_indices(name)):
            conv.weight.copy_(_vgg_tensor(state, f"features.{index}.weight", conv.weight, path))
            conv.bias.copy_(_vgg_tensor(state, f"features.{index}.bias", conv.bias, path))
