"""Network input and output mapping shared by training and inference."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def normalize(frame: np.ndarray) -> np.ndarray:
    """Per-image z-score: independent of bit depth and of the scanner's gain."""
    frame = frame.astype(np.float32)
    std = float(frame.std())
    return (frame - float(frame.mean())) / (std if std > 1e-6 else 1.0)


def to_network_input(frame: np.ndarray, input_size: Sequence[int]) -> torch.Tensor:
    """(H, W) frame -> normalised (1, 1, h, w) tensor at the network's input size."""
    tensor = torch.from_numpy(normalize(frame))[None, None]
    return resize(tensor, input_size)


def resize(batch: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear (anti-aliased when shrinking) resize of a (B, C, H, W) tensor."""
    if tuple(batch.shape[-2:]) == tuple(size):
        return batch
    shrinking = batch.shape[-2] > size[0] or batch.shape[-1] > size[1]
    return F.interpolate(batch, size=tuple(size), mode="bilinear", align_corners=False,
                         antialias=shrinking)
