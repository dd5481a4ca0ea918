import pytest
import torch

from MedianNerveSegLib.models import MODEL_REGISTRY, available_models, build_model, count_parameters


@pytest.mark.parametrize("name", available_models())
def test_registry_model_maps_grayscale_to_one_logit(name):
    model = build_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 96, 128))
    assert out.shape == (2, 1, 96, 128)
    assert count_parameters(model) > 100_000
    assert MODEL_REGISTRY[name].reference


def test_unknown_model_names_the_available_ones():
    with pytest.raises(KeyError, match="monai_unet"):
        build_model("no_such_net")


def test_overrides_change_the_network():
    small = build_model("monai_unet", channels=[8, 16, 32, 64, 128])
    assert count_parameters(small) < count_parameters(build_model("monai_unet"))
