"""Segmentation architectures behind one registry: name -> constructor, defaults, reference.

Every network takes a (B, 1, H, W) grayscale batch and returns (B, 1, H, W) nerve logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List

import math

import torch

from .dbunet import DoubleUNet
from .dlunet import DoubleLightweightUNet
from .lunet import LUNet
from .monai_nets import UNetPlusPlus, attention_unet, basic_unet, monai_unet
from .multiresunet import MultiResUNet
from .sa_unet import ScaleAttentionalUNet
from .unet import UNet


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry."""

    name: str
    build: Callable[..., torch.nn.Module]
    defaults: Dict[str, Any] = field(default_factory=dict)
    reference: str = ""


MODEL_REGISTRY: Dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("monai_unet", monai_unet,
                  {"channels": [24, 48, 96, 192, 384], "num_res_units": 2, "dropout": 0.0},
                  "MONAI UNet with residual units (Kerfoot et al., 2018)"),
        ModelSpec("basic_unet", basic_unet,
                  {"features": [32, 32, 64, 128, 256, 32], "dropout": 0.0},
                  "MONAI BasicUNet: the classic U-Net of Ronneberger et al., 2015"),
        ModelSpec("unet", UNet, {"features": [32, 64, 128, 256, 512]},
                  "U-Net (Ronneberger et al., 2015) as in DL-UNet (Melnic et al.), 7.86M parameters in the paper"),
        ModelSpec("lunet", LUNet, {"features": [32, 64, 128, 256]},
                  "Lightweight U-Net (DeepNerve, Horng et al., 2020), 1.95M parameters in DL-UNet"),
        ModelSpec("dbunet", DoubleUNet, {},
                  "Double U-Net (Jha et al., 2020), random init (VGG-19 weights optional), 29.3M in DL-UNet"),
        ModelSpec("dlunet", DoubleLightweightUNet, {"encoder": "vgg19"},
                  "Double Lightweight U-Net (DL-UNet, Melnic et al.), 14.77M parameters in the paper"),
        ModelSpec("sa_unet", ScaleAttentionalUNet, {"features": [32, 64, 128, 256, 512], "num_scales": 4},
                  "Scale-attentional U-Net (Kim et al., 2022), 491K parameters in the paper"),
        ModelSpec("multiresunet", MultiResUNet, {"filters": 32, "alpha": 1.67},
                  "MultiResUNet (Ibtehaz & Rahman, 2020); Kim et al. 2022 baseline"),
        ModelSpec("attention_unet", attention_unet, {"channels": [32, 64, 128, 256, 512]},
                  "Attention U-Net (Oktay et al., 2018), MONAI AttentionUnet; Kim et al. 2022 baseline"),
        ModelSpec("unetpp", UNetPlusPlus, {"features": [32, 32, 64, 128, 256, 32]},
                  "UNet++ (Zhou et al., 2018), MONAI BasicUNetPlusPlus; Kim et al. 2022 baseline"),
    )
}


def available_models() -> List[str]:
    return sorted(MODEL_REGISTRY)


NERVE_PRIOR = 0.01  # fraction of an image that is nerve (about 1% in the Jesi dataset)


def build_model(name: str, **kwargs: Any) -> torch.nn.Module:
    """Build a registry model; ``kwargs`` override its defaults."""
    if name not in MODEL_REGISTRY:
        raise KeyError(f"unknown model '{name}'; available: {', '.join(available_models())}")
    spec = MODEL_REGISTRY[name]
    return init_output_bias(spec.build(**{**spec.defaults, **kwargs}))


def init_output_bias(model: torch.nn.Module, prior: float = NERVE_PRIOR) -> torch.nn.Module:
    """Start the nerve logit at the prior's log-odds (Lin et al., RetinaNet, 2017).

    With a zero bias every pixel starts at p = 0.5 and Adam moves the bias by about the
    learning rate per step: thousands of steps pass before the background is learnt.
    """
    last = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))][-1]
    if last.bias is not None:
        torch.nn.init.constant_(last.bias, math.log(prior / (1 - prior)))
    return model


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
