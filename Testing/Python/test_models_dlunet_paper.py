"""Networks of Melnic et al. 2022 (DL-UNet) and its baselines U-Net, L-UNet and DoubleU-Net."""

import functools

import pytest
import torch

from MedianNerveSegLib.models.blocks import VGG_CONFIGS
from MedianNerveSegLib.models.dbunet import DoubleUNet
from MedianNerveSegLib.models.dlunet import DoubleLightweightUNet
from MedianNerveSegLib.models.lunet import LUNet
from MedianNerveSegLib.models.unet import UNet

DLUNetVGG16 = functools.partial(DoubleLightweightUNet, encoder="vgg16")

# Parameter counts: Melnic et al. 2022, Tables II and III.
PAPER_PARAMETERS = [
    (UNet, 7_858_405),
    (LUNet, 1_952_485),
    (DoubleUNet, 29_296_994),
    (DoubleLightweightUNet, 14_774_698),
    (DLUNetVGG16, 12_411_178),
]
NETWORKS = [UNet, LUNet, DoubleUNet, DoubleLightweightUNet]
DOUBLE_NETWORKS = [DoubleUNet, DoubleLightweightUNet]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("network, paper", PAPER_PARAMETERS,
                         ids=["UNet", "LUNet", "DoubleUNet", "DLUNet-vgg19", "DLUNet-vgg16"])
def test_parameter_count_matches_the_paper(network, paper):
    count = sum(p.numel() for p in network().parameters())
    assert abs(count - paper) <= 0.10 * paper, count


@pytest.mark.parametrize("network", DOUBLE_NETWORKS)
def test_forward_both_returns_two_logit_maps(network):
    model = network().eval()
    x = torch.randn(2, 1, 21, 35)
    with torch.no_grad():
        out1, out2 = model.forward_both(x)
        assert out1.shape == out2.shape == x.shape
        torch.testing.assert_close(out2, model(x))


@pytest.mark.parametrize("network", DOUBLE_NETWORKS)
def test_out_channels_must_broadcast_against_the_input(network):
    assert network(in_channels=3, out_channels=3).eval()(torch.randn(2, 3, 16, 16)).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="out_channels"):
        network(in_channels=3, out_channels=2)


def vgg_conv_keys(name):
    """torchvision's names of the VGG convolutions: ``features.<i>`` in (conv, ReLU, ..., max-pool)."""
    keys, index = [], 0
    for block in VGG_CONFIGS[name]:
        for _ in block:
            keys.append(f"features.{index}")
            index += 2
        index += 1
    return keys


def vgg_state_dict(name):
    """A randomly initialised torchvision-format ``vgg*`` state_dict (RGB input, with a classifier)."""
    widths = [3] + [width for block in VGG_CONFIGS[name] for width in block]
    state = {"classifier.0.weight": torch.randn(8, 512 * 7 * 7)}
    for key, c_in, c_out in zip(vgg_conv_keys(name), widths, widths[1:]):
        state[f"{key}.weight"] = torch.randn(c_out, c_in, 3, 3)
        state[f"{key}.bias"] = torch.randn(c_out)
    return state


@pytest.mark.parametrize("network, name", [(DoubleUNet, "vgg19"), (DLUNetVGG16, "vgg16")],
                         ids=["DoubleUNet-vgg19", "DLUNet-vgg16"])
def test_encoder_weights_are_loaded(network, name, tmp_path):
    state = vgg_state_dict(name)
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    encoder = network(encoder_weights=str(path)).encoder1
    convs = [m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == sum(len(block) for block in VGG_CONFIGS[name][: 5 if network is DoubleUNet else 4])
    for i, (conv, key) in enumerate(zip(convs, vgg_conv_keys(name))):
        weight = state[f"{key}.weight"]
        torch.testing.assert_close(conv.weight, weight.sum(1, keepdim=True) if i == 0 else weight)
        torch.testing.assert_close(conv.bias, state[f"{key}.bias"])


def test_mismatched_encoder_weights_raise(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(vgg_state_dict("vgg16"), path)
    with pytest.raises(ValueError, match="features.16.weight"):
        DoubleLightweightUNet(encoder="vgg19", encoder_weights=str(path))
    state = vgg_state_dict("vgg19")
    state["features.5.weight"] = torch.randn(128, 32, 3, 3)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"'features.5.weight' has shape \(128, 32, 3, 3\)"):
        DoubleUNet(encoder_weights=str(path))
