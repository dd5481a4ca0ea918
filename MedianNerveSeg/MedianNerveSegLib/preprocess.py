"""Network input and output mapping shared by training and inference."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # the runtime path (resize_array) runs without torch
    import torch


def normalize(frame: np.ndarray) -> np.ndarray:
    """Per-image z-score: independent of bit depth and of the scanner's gain."""
    frame = frame.astype(np.float32)
    std = float(frame.std())
    return (frame - float(frame.mean())) / (std if std > 1e-6 else 1.0)


def to_network_input(frame: np.ndarray, input_size: Sequence[int]) -> torch.Tensor:
    """(H, W) frame -> normalised (1, 1, h, w) tensor at the network's input size."""
    import torch

    tensor = torch.from_numpy(normalize(frame))[None, None]
    return resize(tensor, input_size)


def resize(batch: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear (anti-aliased when shrinking) resize of a (B, C, H, W) tensor."""
    import torch.nn.functional as F

    if tuple(batch.shape[-2:]) == tuple(size):
        return batch
    shrinking = batch.shape[-2] > size[0] or batch.shape[-1] > size[1]
    return F.interpolate(batch, size=tuple(size), mode="bilinear", align_corners=False,
                         antialias=shrinking)


def network_array(frame: np.ndarray, input_size: Sequence[int]) -> np.ndarray:
    """``to_network_input`` without torch: the (1, 1, h, w) float32 array an OpenVINO network takes."""
    return resize_array(normalize(frame), input_size)[None, None]


def resize_array(frame: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """``resize`` for one float32 (H, W) array, without torch.

    Pillow's bilinear filter is the one torch's anti-aliased interpolation was ported from:
    the two agree within 2e-4 (Testing/Python/test_runtime.py)."""
    if tuple(frame.shape) == tuple(size):
        return frame
    return np.asarray(Image.fromarray(np.asarray(frame, np.float32), mode="F").resize((size[1], size[0]),
                                                                                       Image.BILINEAR))
