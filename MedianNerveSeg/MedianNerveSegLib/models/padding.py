"""Run a network whose input size must divide by 2**k on frames of any size."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad (B, C, H, W) at the bottom/right so H and W divide by ``multiple``."""
    height, width = x.shape[-2:]
    pad_h = (multiple - height % multiple) % multiple
    pad_w = (multiple - width % multiple) % multiple
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


class PadToMultiple(torch.nn.Module):
    """Wraps ``network``: pads the input to a multiple of ``multiple``, crops the output back."""

    def __init__(self, network: torch.nn.Module, multiple: int):
        super().__init__()
        self.network = network
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        return self.network(pad_to_multiple(x, self.multiple))[..., :height, :width]
