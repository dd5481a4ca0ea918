"""DoubleU-Net (Jha et al., CBMS 2020), a baseline of Melnic et al. 2022 (DL-UNet paper)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import ASPP, Decoder, Encoder, VGG_CONFIGS, load_vgg_weights, se_double_conv, vgg_encoder
from .padding import pad_to_multiple

__all__ = ["DoubleUNet"]


class DoubleUNet(nn.Module):
    """DoubleU-Net: Jha, Riegler, Johansen, Halvorsen & Johansen, "DoubleU-Net: a deep convolutional
    neural network for medical image segmentation", CBMS 2020, the DB-UNet of Melnic, Conti &
    Federici, "DL-UNet" (2022), Section III-H; paper: 29,296,994 parameters.

    Network 1: VGG-19 encoder (its five blocks; skips from ``block1_conv2``, ``block2_conv2``,
    ``block3_conv4``, ``block4_conv4``), ASPP (rates 1, 6, 12, 18 and image pooling, 64 filters) on
    ``block5_conv4``, decoder 1 (2x bilinear up-sampling, concatenation with the encoder-1 skip, two
    conv-BN-ReLU and squeeze-and-excitation with ratio 8; 256, 128, 64, 32 filters) and a 1x1
    convolution: output 1. Network 2 sees ``input * sigmoid(output 1)``: encoder 2 (four such
    conv blocks with 32, 64, 128, 256 filters, each followed by 2x2 max-pooling), ASPP, decoder 2
    (as decoder 1, with the skips of both encoders) and a 1x1 convolution: output 2.

    Differences from the paper and Jha et al.'s Keras code: random initialisation (ImageNet
    weights can be given as a torchvision VGG-19 ``state_dict`` file, ``encoder_weights``); the
    first VGG convolution takes ``in_channels`` (grayscale: the RGB filters of a weights file are
    summed); convolutions followed by batch norm have no bias; only trainable parameters are
    counted (Keras also counts the batch-norm statistics): 29,285,538 (-0.04%; the paper's
    29,296,994 is the Keras count with a 3-channel VGG input and a 1-channel encoder 2). The network
    returns logits: output 2 from :meth:`forward`, both from :meth:`forward_both` (the paper
    concatenates the two sigmoid masks). Inputs of any size are zero-padded to a multiple of 16 and
    the outputs cropped back. The ASPP pooling branch needs training batches of at least 2.

    Args:
        in_channels: input channels (1: grayscale ultrasound).
        out_channels: output channels; 1 or ``in_channels`` (output 1 multiplies the input).
        encoder_weights: optional path to a torchvision ``vgg19`` ``state_dict`` for encoder 1.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, encoder_weights: Optional[str] = None):
        super().__init__()
        if out_channels not in (1, in_channels):
            raise ValueError(f"out_channels must be 1 or in_channels ({in_channels}), got {out_channels}")
        vgg_skips = [block[-1] for block in VGG_CONFIGS["vgg19"][:4]]  # 64, 128, 256, 512
        widths = (32, 64, 128, 256)
        self.encoder1 = vgg_encoder("vgg19", in_channels)
        if encoder_weights is not None:
            load_vgg_weights(self.encoder1, "vgg19", encoder_weights)
        self.aspp1 = ASPP(512, 64)
        self.decoder1 = Decoder(64, vgg_skips[::-1], widths[::-1], se_double_conv)
        self.head1 = nn.Conv2d(widths[0], out_channels, 1)
        self.encoder2 = Encoder([se_double_conv(i, o) for i, o in zip((in_channels,) + widths, widths)])
        self.aspp2 = ASPP(widths[-1], 64)
        both = [a + b for a, b in zip(vgg_skips, widths)]
        self.decoder2 = Decoder(64, both[::-1], widths[::-1], se_double_conv)
        self.head2 = nn.Conv2d(widths[0], out_channels, 1)

    def forward_both(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Logits of output 1 (network 1) and output 2 (network 2), each of the input's size."""
        height, width = x.shape[2], x.shape[3]
        x = pad_to_multiple(x, 16)
        features1 = self.encoder1(x)
        out1 = self.head1(self.decoder1(self.aspp1(features1[-1]), features1[:-1]))
        features2 = self.encoder2(x * torch.sigmoid(out1))
        skips = [torch.cat([a, b], dim=1) for a, b in zip(features1[:-1], features2)]
        out2 = self.head2(self.decoder2(self.aspp2(F.max_pool2d(features2[-1], 2)), skips))
        return out1[:, :, :height, :width], out2[:, :, :height, :width]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_both(x)[1]
