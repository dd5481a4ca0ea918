"""The shipped model on real images, and the Segmenter's handling of odd inputs."""

import json

import numpy as np
import pytest
import torch

from MedianNerveSegLib.data import list_samples
from MedianNerveSegLib.evaluate import segmentation_metrics
from MedianNerveSegLib.image import UltrasoundImage
from MedianNerveSegLib.inference import Segmenter, resolve_device
from MedianNerveSegLib.io import read_image, read_mask
from MedianNerveSegLib.models import build_model, count_parameters
from MedianNerveSegLib.zoo import ModelInfo, installed_models, load_info, load_network, resolve_model, save_model

from conftest import SPACING


@pytest.fixture(scope="module")
def segmenter():
    torch.set_num_threads(2)
    return Segmenter()


@pytest.fixture(scope="module")
def held_out(dataset_dir, segmenter):
    """Images of the patients the shipped model never saw in training."""
    patients = set(segmenter.info.training["val_patients"])
    return [s for s in list_samples(dataset_dir) if s.patient in patients]


def test_default_model_is_installed_and_small():
    folder = resolve_model()
    assert folder in installed_models()
    assert (folder / "model.pt").stat().st_size <= 10 * 1024 * 1024
    info = load_info(folder)
    assert info.metrics["dice_mean"] >= 0.85
    assert len(info.training["val_patients"]) >= 10


def test_shipped_model_segments_held_out_patients(segmenter, held_out):
    dice = []
    for sample in held_out[:12]:
        prediction = segmenter.predict(read_image(sample.image, SPACING))
        gt = read_mask(sample.mask)
        assert prediction.mask.shape == gt.shape == prediction.probability.shape
        dice.append(segmentation_metrics(prediction.mask, gt, (SPACING, SPACING))["dice"])
    assert np.mean(dice) >= 0.8, dice
    assert np.median(dice) >= 0.88, dice


def test_small_model_is_under_500k_parameters_and_segments_its_held_out_patients(dataset_dir):
    assert count_parameters(load_network(resolve_model("median_nerve_unet_small"))[0]) <= 500_000
    small = Segmenter("median_nerve_unet_small")
    patients = set(small.info.training["val_patients"])
    samples = [s for s in list_samples(dataset_dir) if s.patient in patients][:12]
    dice = [segmentation_metrics(small.predict(read_image(s.image, SPACING)).mask, read_mask(s.mask),
                                 (SPACING, SPACING))["dice"] for s in samples]
    assert np.mean(dice) >= 0.8 and np.median(dice) >= 0.88, dice


def test_all_black_image_is_not_found(segmenter):
    prediction = segmenter.predict(UltrasoundImage(np.zeros((468, 606), np.float32), (SPACING, SPACING)))
    assert not prediction.found and not prediction.mask.any()
    assert 0.0 <= prediction.confidence < 0.5


def test_any_frame_size_and_a_cine_clip(segmenter, dataset_dir):
    frame = read_image(sorted((dataset_dir / "images").iterdir())[0]).frame()
    crop = frame[13:414, 27:528]  # odd size
    clip = UltrasoundImage(np.stack([crop, crop[:, ::-1]]), (SPACING, SPACING))
    first, mirrored = segmenter.predict(clip, 0), segmenter.predict(clip, 1)
    assert first.mask.shape == crop.shape
    assert first.found and mirrored.found
    overlap = (first.mask & mirrored.mask[:, ::-1]).sum() / first.mask.sum()
    assert overlap > 0.7  # the nerve is found in the same place in the mirrored frame


def test_model_folder_round_trip(tmp_path):
    network = build_model("monai_unet", channels=[8, 16, 32, 64, 128]).eval()
    info = ModelInfo(name="tiny", architecture="monai_unet", arch_kwargs={"channels": [8, 16, 32, 64, 128]},
                     input_size=(64, 96))
    save_model(tmp_path / "tiny", network, info)
    assert json.loads((tmp_path / "tiny" / "model.json").read_text())["input_size"] == [64, 96]
    loaded = Segmenter(tmp_path / "tiny", runtime="torch")
    x = torch.randn(1, 1, 64, 96)
    with torch.no_grad():
        assert torch.allclose(loaded.network(x), network(x), atol=0.05)
    assert loaded.probability(np.random.rand(50, 70).astype(np.float32)).shape == (50, 70)


def test_unknown_model_and_missing_cuda_are_clear_errors():
    with pytest.raises(FileNotFoundError, match="installed: .*median_nerve_unet"):
        resolve_model("no-such-model")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_a_trained_bundle_is_selected_by_its_name(tmp_path, monkeypatch):
    import MedianNerveSegLib.zoo as zoo

    network = build_model("monai_unet", channels=[8, 16, 32, 64, 128])
    save_model(tmp_path / "lunet_bundle" / "models", network,
               ModelInfo(name="x", architecture="monai_unet", arch_kwargs={"channels": [8, 16, 32, 64, 128]}))
    monkeypatch.setattr(zoo, "BUNDLES_DIR", tmp_path)
    assert resolve_model("lunet_bundle") == tmp_path / "lunet_bundle" / "models"
    assert Segmenter("lunet_bundle").info.architecture == "monai_unet"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_pixels_are_an_error_naming_the_image(segmenter, bad):
    pixels = np.random.default_rng(0).random((120, 160)).astype(np.float32)
    pixels[10:12, 20:25] = bad
    image = UltrasoundImage(pixels, (SPACING, SPACING), source="scans/clip7.nrrd")
    with pytest.raises(ValueError, match=r"^scans/clip7\.nrrd: frame 0 has 10 NaN/Inf pixels"):
        segmenter.predict(image)


@pytest.mark.parametrize("value", [0, 128, 255])
def test_a_constant_frame_is_not_found_and_flagged(segmenter, value):
    prediction = segmenter.predict(UltrasoundImage(np.full((200, 300), value, np.uint8), (SPACING, SPACING)))
    assert not prediction.found and not prediction.mask.any() and prediction.confidence == 0.0
    assert prediction.mask.shape == prediction.probability.shape == (200, 300)
    assert prediction.flags == ("constant-frame",)


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.8])
def test_predict_cleans_the_nerve_box_as_it_would_the_whole_map(threshold):
    from scipy import ndimage

    from MedianNerveSegLib.postprocess import clean_mask, min_component_pixels
    from MedianNerveSegLib.uncertainty import band_pixels

    rng = np.random.default_rng(7)
    maps = [ndimage.gaussian_filter(rng.random((90, 120)), sigma=3) for _ in range(12)]
    maps = [((m - m.min()) / np.ptp(m)).astype(np.float32) for m in maps]  # blobs at every level, edges too

    class MapSegmenter(Segmenter):
        def probability(self, frame, spacing_mm=None):
            return maps[int(frame[0, 0])]

    info = ModelInfo(name="maps", architecture="monai_unet", threshold=threshold)
    segmenter = MapSegmenter.from_network(torch.nn.Identity(), info)
    for index, probability in enumerate(maps):
        frame = np.full((90, 120), index, np.float32)
        frame[1, 1] = 100  # some contrast
        prediction = segmenter.predict(UltrasoundImage(frame, (0.1, 0.1)))
        min_px = min_component_pixels(info.min_component_mm2, (0.1, 0.1), frame.shape)
        whole = clean_mask(probability, threshold, min_px, info.min_branch_fraction)
        assert np.array_equal(prediction.mask, whole) and prediction.found == bool(whole.any())
        if whole.any():
            assert prediction.band_px == band_pixels(probability, min_px, info.min_branch_fraction)
            assert prediction.confidence == float(probability[whole].mean())
        else:
            assert prediction.band_px is None and prediction.confidence == float(probability.max())
