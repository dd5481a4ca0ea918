"""The three networks with which Shinohara et al. 2022 ("Using deep learning for ultrasound images to diagnose
carpal tunnel syndrome with high accuracy", Ultrasound Med Biol 48:2052) called CTS from a 15 x 15 mm crop
around the median nerve without measuring its CSA: SqueezeNet 1.1 (Iandola et al. 2016), MobileNetV2 (Sandler
et al. 2018) and EfficientNet-B0 (Tan & Le 2019).

Each takes a (B, 1, H, W) grey crop (repeated to the three channels the networks and any ImageNet weights
expect) and returns (B, 2) logits: [other class, positive class]. SqueezeNet and MobileNetV2 are torchvision's;
the EfficientNet is MONAI's, so that one of the three runs without torchvision. Their last convolutional stage,
which Grad-CAM weighs, is the registry's ``explain_layer``.
"""

from __future__ import annotations

from pathlib import Path
import torch
from torch import nn


class GreyClassifier(nn.Module):
    """A 3-channel image classifier given grey crops."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x.expand(-1, 3, -1, -1))


def squeezenet1_1(dropout: float = 0.5) -> GreyClassifier:
    """torchvision's SqueezeNet 1.1, two classes."""
    from torchvision.models import squeezenet1_1 as build

    return GreyClassifier(build(weights=None, num_classes=2, dropout=dropout))


def mobilenet_v2(dropout: float = 0.2) -> GreyClassifier:
    """torchvision's MobileNetV2 (width 1.0), two classes."""
    from torchvision.models import mobilenet_v2 as build

    return GreyClassifier(build(weights=None, num_classes=2, dropout=dropout))


def efficientnet_b0(dropout: float = 0.2) -> GreyClassifier:
    """MONAI's EfficientNet-B0 (EfficientNetBN), two classes; no download (pretrained=False)."""
    from monai.networks.nets import EfficientNetBN

    network = EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=2, in_channels=3, num_classes=2)
    network._dropout.p = dropout
    # MONAI draws the head from +-1/sqrt(num_classes): +-0.71 for two classes gives logits of +-50 at the start,
    # and from random init the cross-entropy then never settles. A small head, as torchvision's MobileNetV2 has.
    nn.init.normal_(network._fc.weight, std=0.01)
    nn.init.zeros_(network._fc.bias)
    # MONAI's batch-norm momentum is 0.01 (TensorFlow's 0.99): on a few hundred steps from scratch the running
    # statistics stay near their initial values and the network in eval mode calls one class for every crop.
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
    return GreyClassifier(network)


def load_user_weights(model: GreyClassifier, path: Path) -> int:
    """Weights the user has (e.g. torchvision's or lukemelas' ImageNet files of the same network), loaded where
    names and shapes match (the 1000-class head never does); returns how many tensors were loaded. A file
    with none in common is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = model.network.state_dict()
    matching = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    if not matching:
        raise ValueError(f"{path}: no tensor fits this network (names or shapes differ); give weights of the same "
                         "architecture")
    model.network.load_state_dict(matching, strict=False)
    return len(matching)
