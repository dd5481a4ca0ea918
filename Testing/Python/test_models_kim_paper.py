"""Networks of Kim et al. 2022 (scale-attentional U-Net) and its MultiResUNet baseline."""

import pytest
import torch

from MedianNerveSegLib.models.multiresunet import MultiResUNet
from MedianNerveSegLib.models.sa_unet import ScaleAttentionalConv2d, ScaleAttentionalUNet, eca_kernel_size

# Parameter counts: Kim et al. 2022, Table 2 (491K); Ibtehaz & Rahman 2020 (7.26M, 2D, 32 filters).
# Kim et al. give none for their MultiResUNet baseline, so the original's count is the reference.
PAPER_PARAMETERS = {ScaleAttentionalUNet: 491_000, MultiResUNet: 7_260_000}
NETWORKS = list(PAPER_PARAMETERS)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("network", NETWORKS)
def test_parameter_count_matches_the_paper(network):
    count = sum(p.numel() for p in network().parameters())
    assert abs(count - PAPER_PARAMETERS[network]) <= 0.10 * PAPER_PARAMETERS[network], count


class _Ones(torch.nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(z[:, :, :1, :1])


def _cascade(layer: ScaleAttentionalConv2d, x: torch.Tensor) -> list:
    """The N intermediate outputs F(1..N), computed layer by layer."""
    outputs = [layer.bottleneck(x)]
    for conv in layer.cascade:
        outputs.append(conv(outputs[-1]))
    return outputs


def test_scale_attentional_conv_has_n_linear_branches_of_out_over_n_channels():
    layer = ScaleAttentionalConv2d(6, 16, num_scales=4).eval()
    x = torch.randn(2, 6, 20, 24)
    branches = _cascade(layer, x)
    assert len(branches) == 4 and all(b.shape == (2, 4, 20, 24) for b in branches)
    with torch.no_grad():
        z = layer.scales(x)
        assert torch.allclose(z, torch.cat(branches, dim=1))
        assert torch.allclose(layer.scales(-2.5 * x), -2.5 * z, atol=1e-5)
        y = torch.randn_like(x)
        assert torch.allclose(layer.scales(x + y), z + layer.scales(y), atol=1e-5)
        assert layer(x).shape == (2, 16, 20, 24)


def test_scale_attentional_conv_receptive_fields_grow_by_two():
    layer = ScaleAttentionalConv2d(1, 8, num_scales=4)
    impulse = torch.zeros(1, 1, 15, 15)
    impulse[..., 7, 7] = 1.0
    with torch.no_grad():
        z = layer.scales(impulse)
    for n, branch in enumerate(z.split(2, dim=1), start=1):
        rows = branch.abs().sum(dim=(0, 1, 3)).nonzero().flatten()
        assert rows.max() - rows.min() + 1 == 2 * n - 1


def test_scale_attentional_conv_with_unit_attention_is_the_normalised_concatenation():
    layer = ScaleAttentionalConv2d(3, 8).eval()
    with torch.no_grad():
        layer.norm.running_mean.uniform_(-1, 1)
        layer.norm.running_var.uniform_(0.5, 2)
        x = torch.randn(1, 3, 16, 16)
        z = torch.cat(_cascade(layer, x), dim=1)
        attended = layer(x)
        assert torch.allclose(attended, torch.relu(layer.norm(z * layer.attention(z))), atol=1e-6)
        layer.attention = _Ones()
        assert torch.allclose(layer(x), torch.relu(layer.norm(z)), atol=1e-6)
        assert not torch.allclose(attended, layer(x))


def test_eca_weights_each_channel_with_an_adaptive_kernel():
    assert [eca_kernel_size(c) for c in (32, 64, 128, 256, 512)] == [3, 3, 5, 5, 5]
    layer = ScaleAttentionalConv2d(3, 128)
    assert layer.attention.conv.kernel_size == (5,)
    weights = layer.attention(torch.randn(2, 128, 9, 9))
    assert weights.shape == (2, 128, 1, 1) and bool(((weights > 0) & (weights < 1)).all())


def test_out_channels_must_split_into_the_branches():
    with pytest.raises(ValueError, match="multiple of num_scales"):
        ScaleAttentionalConv2d(4, 10, num_scales=4)
