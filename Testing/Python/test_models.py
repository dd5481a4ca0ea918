"""Every registry architecture: any frame size, gradients, TorchScript, round trip, training."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from MedianNerveSegLib.data import list_samples
from MedianNerveSegLib.inference import Segmenter
from MedianNerveSegLib.io import read_image, read_mask
from MedianNerveSegLib.models import MODEL_REGISTRY, available_models, build_model, count_parameters
from MedianNerveSegLib.preprocess import resize, to_network_input
from MedianNerveSegLib.zoo import ModelInfo, save_model

MODELS = available_models(kind="semantic")  # the detector (Mask R-CNN) has its own tests


@pytest.fixture(autouse=True, scope="module")
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    # a random init can leave a squeeze-excitation ReLU all zero for one input: test connectivity, not luck
    torch.manual_seed(0)


@pytest.mark.parametrize("name", MODELS)
def test_output_has_the_input_shape_for_odd_sizes(name):
    model = build_model(name).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 468, 606)).shape == (1, 1, 468, 606)
        assert model(torch.randn(2, 1, 301, 257)).shape == (2, 1, 301, 257)
    assert MODEL_REGISTRY[name].reference


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_every_parameter(name):
    model = build_model(name).train()
    model(torch.randn(2, 1, 64, 96)).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing


@pytest.mark.parametrize("name", MODELS)
def test_torch_export_matches_eager(name):
    model = build_model(name).eval()
    x = torch.randn(1, 1, 97, 131)
    exported = torch.export.export(model, (x,)).module()
    with torch.no_grad():
        assert torch.allclose(exported(x), model(x), atol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_registry_round_trip_through_a_model_folder(name, tmp_path):
    model = build_model(name).eval()
    save_model(tmp_path, model, ModelInfo(name=name, architecture=name, input_size=(96, 128)), half=False)
    segmenter = Segmenter(tmp_path, runtime="torch")
    x = to_network_input(np.random.rand(120, 150).astype(np.float32), (96, 128))
    with torch.no_grad():  # the Segmenter runs channels-last: same weights, float rounding may differ
        assert torch.allclose(segmenter.network(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["dlunet", "dbunet"])
def test_half_precision_model_keeps_batch_norm_statistics_beyond_float16(name, tmp_path):
    # after tens of epochs the ASPP behind the plain VGG blocks had running variances past 65504:
    # saved as float16 they became inf, and the reloaded DL-UNet segmented nothing (DSC 0.000 vs 0.776)
    model = build_model(name).eval()
    model.aspp1.branches[1][1].running_var.fill_(1e6)
    model.aspp1.branches[1][1].running_mean.fill_(300.0)
    save_model(tmp_path, model, ModelInfo(name=name, architecture=name, input_size=(96, 128)))
    loaded = Segmenter(tmp_path, runtime="torch").network
    x = 100 * torch.randn(1, 1, 96, 128)  # large inputs: that branch's statistics decide the output
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), rtol=1e-2, atol=1e-2)
    weights = torch.load(tmp_path / "model.pt", weights_only=True)
    assert weights["aspp1.branches.1.1.running_var"].dtype == torch.float32
    assert weights["aspp1.branches.1.0.weight"].dtype == torch.float16


def test_unknown_model_names_the_available_ones():
    with pytest.raises(KeyError, match="monai_unet"):
        build_model("no_such_net")


def test_overrides_change_the_network():
    small = build_model("monai_unet", channels=[8, 16, 32, 64, 128])
    assert count_parameters(small) < count_parameters(build_model("monai_unet"))


@pytest.fixture(scope="module")
def real_batch(dataset_dir):
    samples = list_samples(dataset_dir)[:4]
    images = [resize(torch.from_numpy(read_image(s.image).frame())[None, None], (64, 96)) for s in samples]
    masks = [resize(torch.from_numpy(read_mask(s.mask).astype(np.float32))[None, None], (64, 96)) for s in samples]
    images = torch.cat(images)
    return (images - images.mean()) / images.std(), torch.cat(masks)


@pytest.mark.parametrize("name", MODELS)
def test_a_few_training_steps_lower_the_loss(name, real_batch):
    torch.manual_seed(0)
    x, y = real_batch
    model = build_model(name).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name", MODELS)
def test_the_registry_states_each_networks_parameter_count(name):
    # `models` prints the declared count without building (and importing) every network
    declared = MODEL_REGISTRY[name].parameters
    assert declared is None or declared == count_parameters(build_model(name))
    assert declared is not None or MODEL_REGISTRY[name].kind == "detector"
