"""Segmentation architectures behind one registry: name -> constructor, defaults, reference.

Every segmenter takes a (B, 1, H, W) grayscale batch and returns (B, 1, H, W) nerve logits.
"semantic" networks are trained on those logits; a "detector" (Mask R-CNN) computes its own
loss in train mode (``forward(x, masks)``) and needs an optional package (torchvision). A
"click" network refines a mask: it takes (B, 4, H, W), the image, the current mask and the
positive and negative click maps of a crop around the nerve (:mod:`..clicks`), and returns
(B, 1, H, W) nerve logits of that crop. A "classifier" (the CTS classifiers of Shinohara et
al. 2022) takes a (B, 1, H, W) crop around the nerve and returns (B, 2) class logits.
"""

from __future__ import annotations

import functools
import importlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

if TYPE_CHECKING:
    import torch

# Each network's module, imported when the network is first asked for: MONAI alone takes
# seconds to import, which a command that only reads a model's card or a cached runtime
# (see runtime.py) should not pay.
NETWORK_MODULES = {
    "DoubleUNet": "dbunet", "DoubleLightweightUNet": "dlunet", "LUNet": "lunet", "MaskRCNN112": "mask_rcnn",
    "UNetPlusPlus": "monai_nets", "attention_unet": "monai_nets", "basic_unet": "monai_nets",
    "monai_unet": "monai_nets", "click_unet": "monai_nets", "MultiResUNet": "multiresunet",
    "ScaleAttentionalUNet": "sa_unet", "UNet": "unet",
    "squeezenet1_1": "cts_classifiers", "mobilenet_v2": "cts_classifiers", "efficientnet_b0": "cts_classifiers",
}


def __getattr__(name: str) -> Any:
    """``models.UNet`` and the like (the bundles' ``_target_``), imported on first use."""
    if name not in NETWORK_MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{NETWORK_MODULES[name]}", __name__), name)


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry."""

    name: str
    builder: str  # a name in NETWORK_MODULES
    defaults: Dict[str, Any] = field(default_factory=dict)
    reference: str = ""
    kind: str = "semantic"  # semantic | detector | click | classifier
    requires: Tuple[str, ...] = ()  # optional packages it imports
    parameters: Optional[int] = None  # with its defaults: `models` lists it without building it (tested)
    explain_layer: str = ""  # the module whose activations Grad-CAM weighs ("" : none declared)

    @property
    def build(self) -> Callable[..., "torch.nn.Module"]:
        return __getattr__(self.builder)


MODEL_REGISTRY: Dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("monai_unet", "monai_unet",
                  {"channels": [24, 48, 96, 192, 384], "num_res_units": 2, "dropout": 0.0},
                  "MONAI UNet with residual units (Kerfoot et al., 2018)",
                  parameters=3_657_798, explain_layer="model.1.submodule.1.submodule.2"),
        ModelSpec("basic_unet", "basic_unet",
                  {"features": [32, 32, 64, 128, 256, 32], "dropout": 0.0},
                  "MONAI BasicUNet: the classic U-Net of Ronneberger et al., 2015",
                  parameters=1_978_433),
        ModelSpec("unet", "UNet", {"features": [32, 64, 128, 256, 512]},
                  "U-Net (Ronneberger et al., 2015) as in DL-UNet (Melnic et al.), 7.86M parameters in the paper",
                  parameters=7_849_025),
        ModelSpec("lunet", "LUNet", {"features": [32, 64, 128, 256]},
                  "Lightweight U-Net (DeepNerve, Horng et al., 2020), 1.95M parameters in DL-UNet",
                  parameters=1_947_009),
        ModelSpec("dbunet", "DoubleUNet", {},
                  "Double U-Net (Jha et al., 2020), random init (VGG-19 weights optional), 29.3M in DL-UNet",
                  parameters=29_285_538),
        ModelSpec("dlunet", "DoubleLightweightUNet", {"encoder": "vgg19"},
                  "Double Lightweight U-Net (DL-UNet, Melnic et al.), 14.77M parameters in the paper",
                  parameters=14_642_402),
        ModelSpec("sa_unet", "ScaleAttentionalUNet", {"features": [32, 64, 128, 256, 512], "num_scales": 4},
                  "Scale-attentional U-Net (Kim et al., 2022), 491K parameters in the paper",
                  parameters=449_611),
        ModelSpec("multiresunet", "MultiResUNet", {"filters": 32, "alpha": 1.67},
                  "MultiResUNet (Ibtehaz & Rahman, 2020); Kim et al. 2022 baseline",
                  parameters=7_244_528),
        ModelSpec("attention_unet", "attention_unet", {"channels": [32, 64, 128, 256, 512]},
                  "Attention U-Net (Oktay et al., 2018), MONAI AttentionUnet; Kim et al. 2022 baseline",
                  parameters=7_939_745),
        ModelSpec("unetpp", "UNetPlusPlus", {"features": [32, 32, 64, 128, 256, 32]},
                  "UNet++ (Zhou et al., 2018), MONAI BasicUNetPlusPlus; Kim et al. 2022 baseline",
                  parameters=2_410_180),
        ModelSpec("mask_rcnn", "MaskRCNN112", {"backbone": "resnet101", "mask_head": "mask112"},
                  "Mask R-CNN (He et al., 2017) with the 112x112 mask head of Di Cosmo et al. 2021 / Smerilli et al. 2022",
                  kind="detector", requires=("torchvision",)),
        ModelSpec("click_unet", "click_unet", {"channels": [16, 32, 64, 128, 256], "num_res_units": 2},
                  "Click-conditioned MONAI UNet for refinement with positive and negative clicks "
                  "(RITM, Sofiiuk et al., 2021)", kind="click", parameters=1_628_142,
                  explain_layer="model.1.submodule.1.submodule.2"),
        ModelSpec("squeezenet1_1", "squeezenet1_1", {}, "SqueezeNet 1.1 (Iandola et al., 2016), torchvision; a CTS "
                  "classifier of Shinohara et al. 2022", kind="classifier", requires=("torchvision",),
                  parameters=723_522, explain_layer="network.features.12"),
        ModelSpec("mobilenet_v2", "mobilenet_v2", {}, "MobileNetV2 (Sandler et al., 2018), torchvision; a CTS "
                  "classifier of Shinohara et al. 2022", kind="classifier", requires=("torchvision",),
                  parameters=2_226_434, explain_layer="network.features.18"),
        ModelSpec("efficientnet_b0", "efficientnet_b0", {}, "EfficientNet-B0 (Tan & Le, 2019), MONAI EfficientNetBN; "
                  "a CTS classifier of Shinohara et al. 2022", kind="classifier", parameters=4_010_110,
                  explain_layer="network._bn1"),
    )
}
MISSING_PACKAGE_HINT = {"torchvision": "pip install 'median-nerve-seg[maskrcnn]' (torchvision matching your torch)"}


@functools.lru_cache(maxsize=None)
def package_works(name: str) -> bool:
    """True when ``name`` imports (a torchvision built for another torch fails at import)."""
    try:
        importlib.import_module(name)
        return True
    except Exception:  # ImportError, or RuntimeError from a mismatched binary
        return False


SEGMENTER_KINDS = ("semantic", "detector")  # networks that segment a frame on their own


def available_models(kind: Optional[str] = None) -> List[str]:
    """Registry names whose optional packages import here: of one ``kind`` when given, else the segmenters
    (click models refine a mask instead, so they are asked for by kind)."""
    return sorted(name for name, spec in MODEL_REGISTRY.items()
                  if all(map(package_works, spec.requires)) and spec.kind in ((kind,) if kind else SEGMENTER_KINDS))


def is_detector(name: str) -> bool:
    return MODEL_REGISTRY[name].kind == "detector"


def is_click_model(name: str) -> bool:
    return MODEL_REGISTRY[name].kind == "click"


def is_classifier(name: str) -> bool:
    return MODEL_REGISTRY[name].kind == "classifier"


KIND_COMMANDS = {"click": "refine", "classifier": "classify"}  # what runs the models that do not segment


NERVE_PRIOR = 0.01  # fraction of an image that is nerve (about 1% in the Jesi dataset)


def build_model(name: str, **kwargs: Any) -> torch.nn.Module:
    """Build a registry model; ``kwargs`` override its defaults."""
    if name not in MODEL_REGISTRY:
        raise KeyError(f"unknown model '{name}'; available: {', '.join(available_models())}")
    spec = MODEL_REGISTRY[name]
    for package in spec.requires:
        if not package_works(package):
            raise ImportError(f"model '{name}' needs {package}: {MISSING_PACKAGE_HINT[package]}")
    model = spec.build(**{**spec.defaults, **kwargs})
    return model if spec.kind in ("detector", "classifier") else init_output_bias(model)


def init_output_bias(model: torch.nn.Module, prior: float = NERVE_PRIOR) -> torch.nn.Module:
    """Start the nerve logit at the prior's log-odds (Lin et al., RetinaNet, 2017).

    With a zero bias every pixel starts at p = 0.5 and Adam moves the bias by about the
    learning rate per step: thousands of steps pass before the background is learnt.
    """
    import torch

    last = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))][-1]
    if last.bias is not None:
        torch.nn.init.constant_(last.bias, math.log(prior / (1 - prior)))
    return model


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
