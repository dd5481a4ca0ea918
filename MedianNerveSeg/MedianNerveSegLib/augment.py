"""Batch augmentation on the training device: the papers' geometric recipe plus the
intensity changes (gamma, contrast, speckle) that make ultrasound models travel between
scanners (Qureshi et al.)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    scale: Tuple[float, float] = (0.8, 1.2)
    translate: float = 0.1  # fraction of the image size
    rotate_deg: float = 10.0
    shear_deg: float = 2.0
    flip_lr: float = 0.5
    gamma: Tuple[float, float] = (0.7, 1.5)
    contrast: Tuple[float, float] = (0.8, 1.25)
    speckle_sd: float = 0.15
    noise_sd: float = 0.03


def _uniform(n: int, low: float, high: float, device) -> torch.Tensor:
    return torch.empty(n, device=device).uniform_(low, high)


def random_affine(images: torch.Tensor, masks: torch.Tensor, cfg: AugmentConfig) -> Tuple[torch.Tensor, torch.Tensor]:
    """The same random scale/rotation/shear/translation/flip for each image and its mask."""
    n, device = images.shape[0], images.device
    angle = torch.deg2rad(_uniform(n, -cfg.rotate_deg, cfg.rotate_deg, device))
    shear = torch.deg2rad(_uniform(n, -cfg.shear_deg, cfg.shear_deg, device))
    scale = _uniform(n, *cfg.scale, device)
    flip = torch.where(torch.rand(n, device=device) < cfg.flip_lr, -1.0, 1.0)
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = flip * cos / scale
    theta[:, 0, 1] = (-sin + cos * tan) / scale
    theta[:, 1, 0] = flip * sin / scale
    theta[:, 1, 1] = (cos + sin * tan) / scale
    theta[:, :, 2] = _uniform(2 * n, -2 * cfg.translate, 2 * cfg.translate, device).view(n, 2)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    warp = lambda x: F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return warp(images), warp(masks)


def random_intensity(images: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Gamma, contrast and multiplicative speckle on [0, 1] images."""
    n, device = images.shape[0], images.device
    view = (n, 1, 1, 1)
    images = images.clamp(0, 1) ** _uniform(n, *cfg.gamma, device).view(view)
    images = images * _uniform(n, *cfg.contrast, device).view(view)
    speckle = 1 + cfg.speckle_sd * torch.rand(view, device=device) * torch.randn_like(images)
    return images * speckle + cfg.noise_sd * torch.rand(view, device=device) * torch.randn_like(images)


def zscore(images: torch.Tensor) -> torch.Tensor:
    """Per-image z-score, as preprocess.normalize does at inference."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    std = images.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    return (images - mean) / std


def augment(images: torch.Tensor, masks: torch.Tensor, cfg: AugmentConfig) -> Tuple[torch.Tensor, torch.Tensor]:
    images, masks = random_affine(images, masks, cfg)
    return random_intensity(images, cfg), masks


