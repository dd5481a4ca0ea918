"""Double Lightweight U-Net (DL-UNet) of Melnic, Conti & Federici 2022."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn

from .blocks import ASPP, Decoder, Encoder, VGG_CONFIGS, load_vgg_weights, se_double_conv, vgg_encoder
from .lunet import lunet_block
from .padding import pad_to_multiple

__all__ = ["DoubleLightweightUNet"]


class DoubleLightweightUNet(nn.Module):
    """DL-UNet: Melnic, Conti & Federici, "DL-UNet: A Convolutional Neural Network for Median Nerve
    Segmentation" (2022), Section III-I; paper: 14,774,698 parameters with VGG-19, 12,411,178 with
    VGG-16 (their Table III).

    DoubleU-Net (:class:`DoubleUNet`) with one convolutional block cut from the VGG encoder and the
    corresponding block from decoder 1, and a Lightweight U-Net (:class:`LUNet`) as network 2.
    Network 1: VGG blocks 1-3 give the skips (``block1_conv2``, ``block2_conv2``, ``block3_conv4``
    for VGG-19), ASPP (rates 1, 6, 12, 18 and image pooling, 64 filters) on the last convolution of
    block 4, decoder 1 (2x bilinear up-sampling, concatenation, two conv-BN-ReLU, squeeze-and-
    excitation with ratio 8; 128, 64, 32 filters) and a 1x1 convolution: output 1. The multiply
    layer gives ``input * sigmoid(output 1)`` to network 2, an L-UNet (four levels, 32 to 256
    filters, batch norm after the first convolution of each level) and a 1x1 convolution: output 2.

    Assumptions (the paper has no layer table; the authors' code was not available): the
    decoder-1 widths of DoubleU-Net less its deepest block (128, 64, 32), and, as in DoubleU-Net's
    decoder 2, the L-UNet decoder concatenates the skips of both encoders (the cut VGG has exactly
    L-UNet's four resolutions). This gives 14,642,402 (-0.9%) and 11,692,514 (-5.8%) trainable
    parameters; a plain L-UNet as network 2 would give 14,255,330 (-3.5%) and 11,305,442 (-8.9%).
    The paper's VGG-16/VGG-19 difference (2,363,520) is not a whole number of VGG layers, so no
    reading reproduces both figures exactly. Otherwise as :class:`DoubleUNet`: random
    initialisation or a torchvision VGG ``state_dict`` file (``encoder_weights``); the first VGG
    convolution takes ``in_channels``; convolutions followed by batch norm have no bias; logits out
    (:meth:`forward`: output 2, :meth:`forward_both`: both); inputs of any size are zero-padded to a
    multiple of 8 and the outputs cropped back; training batches of at least 2 (ASPP pooling).

    Args:
        in_channels: input channels (1: grayscale ultrasound).
        out_channels: output channels; 1 or ``in_channels`` (output 1 multiplies the input).
        encoder: ``"vgg19"`` (paper) or ``"vgg16"``.
        encoder_weights: optional path to a torchvision ``state_dict`` of that VGG for encoder 1.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, encoder: str = "vgg19",
                 encoder_weights: Optional[str] = None):
        super().__init__()
        if out_channels not in (1, in_channels):
            raise ValueError(f"out_channels must be 1 or in_channels ({in_channels}), got {out_channels}")
        self.encoder1 = vgg_encoder(encoder, in_channels, num_blocks=4)
        if encoder_weights is not None:
            load_vgg_weights(self.encoder1, encoder, encoder_weights)
        vgg_skips = [block[-1] for block in VGG_CONFIGS[encoder][:3]]  # 64, 128, 256
        widths = (32, 64, 128, 256)
        self.aspp1 = ASPP(VGG_CONFIGS[encoder][3][-1], 64)
        self.decoder1 = Decoder(64, vgg_skips[::-1], widths[-2::-1], se_double_conv)
        self.head1 = nn.Conv2d(widths[0], out_channels, 1)
        self.encoder2 = Encoder([lunet_block(i, o) for i, o in zip((in_channels,) + widths, widths)])
        both = [a + b for a, b in zip(vgg_skips, widths)]
        self.decoder2 = Decoder(widths[-1], both[::-1], widths[-2::-1], lunet_block)
        self.head2 = nn.Conv2d(widths[0], out_channels, 1)

    def forward_both(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Logits of output 1 (network 1) and output 2 (network 2), each of the input's size."""
        height, width = x.shape[2], x.shape[3]
        x = pad_to_multiple(x, 8)
        features1 = self.encoder1(x)
        out1 = self.head1(self.decoder1(self.aspp1(features1[-1]), features1[:-1]))
        features2 = self.encoder2(x * torch.sigmoid(out1))
        skips = [torch.cat([a, b], dim=1) for a, b in zip(features1[:-1], features2[:-1])]
        out2 = self.head2(self.decoder2(features2[-1], skips))
        return out1[:, :, :height, :width], out2[:, :, :height, :width]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_both(x)[1]
