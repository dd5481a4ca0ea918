"""MONAI bundles in training/: one per architecture, metadata complete, configs that run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from MedianNerveSegLib.inference import Segmenter
from MedianNerveSegLib.results import read_results
from MedianNerveSegLib.models import MODEL_REGISTRY, available_models
from MedianNerveSegLib.train import TrainConfig

from conftest import REPO

TRAINING = REPO / "training"
REQUIRED_METADATA = ("version", "changelog", "monai_version", "pytorch_version", "numpy_version",
                     "optional_packages_version", "network_data_format", "name", "task", "description",
                     "authors", "copyright", "references")
REQUIRED_TENSOR_KEYS = ("type", "format", "num_channels", "spatial_shape", "dtype", "value_range",
                        "is_patch_data", "channel_def")
BUNDLE_FILES = ("configs/metadata.json", "configs/train.json", "configs/multi_gpu_train.json",
                "configs/inference.json", "configs/evaluate.json",
                "configs/logging.conf", "docs/README.md", "LICENSE")


def test_every_architecture_has_a_bundle():
    bundles = sorted(p.parent.parent.name for p in TRAINING.glob("*/configs/train.json"))
    assert bundles == sorted(MODEL_REGISTRY)  # bundles of optional architectures (Mask R-CNN) exist everywhere


@pytest.mark.parametrize("name", available_models())
def test_bundle_layout_metadata_and_train_config(name):
    bundle = TRAINING / name
    for relative in BUNDLE_FILES:
        assert (bundle / relative).is_file(), relative
    metadata = json.loads((bundle / "configs/metadata.json").read_text())
    for key in REQUIRED_METADATA:
        assert metadata[key], key
    image = metadata["network_data_format"]["inputs"]["image"]
    assert image["modality"] == "US" and len(image["spatial_shape"]) == 2 and image["num_channels"] == 1
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs/train.json"))
    config = parser.get_parsed_content("train_config")
    assert isinstance(config, TrainConfig) and config.architecture == name


def _run(config_file: Path, **overrides) -> object:
    parser = ConfigParser()
    parser.read_config(str(config_file))
    for key, value in overrides.items():
        parser[key] = value
    return parser.get_parsed_content("run")


def test_bundle_trains_segments_and_evaluates(dataset_dir, tmp_path):
    bundle = TRAINING / "lunet"
    models = tmp_path / "models"
    _run(bundle / "configs/train.json", bundle_root=str(tmp_path), dataset_dir=str(dataset_dir),
         output_dir=str(models), epochs=2, input_size=[64, 96], **{"train_config#max_images": 10,
                                                                    "train_config#val_every": 1})
    for produced in ("model.pt", "model.json", "training_log.csv", "learning_curve.png"):
        assert (models / produced).is_file()
    assert Segmenter(models).info.architecture == "lunet"
    images = tmp_path / "images"
    images.mkdir()
    for image in sorted((dataset_dir / "images").iterdir())[:2]:
        (images / image.name).symlink_to(image)
    # no spacing assumed: the Jesi PNGs carry none, so by default the CSA is in pixels and flagged
    assert _run(bundle / "configs/inference.json", bundle_root=str(tmp_path), input_dir=str(images),
                output_dir=str(tmp_path / "plain")) == 0
    assert {r.spacing_source for r in read_results(tmp_path / "plain/measurements.csv")} == {"unknown"}
    assert _run(bundle / "configs/inference.json", bundle_root=str(tmp_path), input_dir=str(images),
                spacing_mm=0.062) == 0
    assert len(list((tmp_path / "eval/segment").glob("*_mask.png"))) == 2
    assert _run(bundle / "configs/evaluate.json", bundle_root=str(tmp_path),
                gt_dir=str(dataset_dir / "masks")) == 0
    summary = json.loads((tmp_path / "eval/metrics/summary.json").read_text())
    n_masks = len(list((dataset_dir / "masks").glob("*.png")))
    assert summary["n"] == 2 and len(summary["missing_predictions"]) == n_masks - 2  # only predictions present
    assert summary["spacing_mm"] == [0.062, 0.062]  # the spacing segment measured with, from its results


def test_bundle_fine_tune_takes_a_tenth_of_the_recipe_rate_and_a_time_budget(dataset_dir, tmp_path):
    from MedianNerveSegLib.cli import main

    bundle = TRAINING / "lunet"
    recipe_lr = json.loads((bundle / "configs/train.json").read_text())["train_config"]["learning_rate"]
    common = ["train", "--bundle", str(bundle), "--dataset", str(dataset_dir), "--input-size", "32", "48",
              "--max-images", "6"]
    # smoke models find no nerve: each run reports a failed model (exit 1) and keeps its folder
    assert main(common + ["--out", str(tmp_path / "start"), "--epochs", "1"]) == 1
    tune = common + ["--init-weights", str(tmp_path / "start"), "--epochs", "50", "--time-budget", "0.001"]
    assert main(tune + ["--out", str(tmp_path / "tuned")]) == 1
    assert main(tune + ["--out", str(tmp_path / "tuned_lr"), "--lr", "5e-4"]) == 1
    tuned, tuned_lr = (json.loads((tmp_path / name / "model.json").read_text())["training"]
                       for name in ("tuned", "tuned_lr"))
    assert tuned["config"]["learning_rate"] == pytest.approx(recipe_lr / 10)
    assert tuned_lr["config"]["learning_rate"] == 5e-4
    assert tuned["epochs"] == 1  # the budget's floor, far below --epochs


@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
def test_metadata_follows_the_monai_bundle_spec(name):
    metadata = json.loads((TRAINING / name / "configs/metadata.json").read_text())
    for key in REQUIRED_METADATA:
        assert key in metadata, key
    formats = metadata["network_data_format"]
    for tensor in [*formats["inputs"].values(), *formats["outputs"].values()]:
        for key in REQUIRED_TENSOR_KEYS:
            assert key in tensor, key
        assert all(isinstance(v, (int, float)) for v in tensor["value_range"]), tensor["value_range"]
    assert formats["inputs"]["image"]["value_range"] == [0, 255]
    assert formats["outputs"]["pred"]["value_range"] == [0, 1]
    if MODEL_REGISTRY[name].kind == "classifier":  # class probabilities: the other class, the positive one
        train = json.loads((TRAINING / name / "configs/train.json").read_text())
        assert formats["outputs"]["pred"]["num_channels"] == 2
        assert formats["inputs"]["image"]["spatial_shape"] == train["input_size"]  # the 15 mm crop, resampled
    else:
        assert formats["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "median nerve"}


@pytest.mark.parametrize("name", available_models())
@pytest.mark.parametrize("config", ["train.json", "inference.json"])
def test_network_def_builds_the_registry_network(name, config):
    from MedianNerveSegLib.models import build_model

    parser = ConfigParser()
    parser.read_config(str(TRAINING / name / "configs" / config))
    network = parser.get_parsed_content("network_def")
    expected = build_model(name)
    assert type(network) is type(expected)
    assert {k: v.shape for k, v in network.state_dict().items()} == {k: v.shape for k, v in expected.state_dict().items()}


@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
def test_readme_says_why_bundles_must_be_trusted(name):
    readme = (TRAINING / name / "docs/README.md").read_text()
    assert "Bundles are code" in readme and "--trust-bundle" in readme


def _code_bundle(folder: Path, marker: Path) -> Path:
    """A bundle whose train.json writes ``marker`` when parsed."""
    (folder / "configs").mkdir(parents=True)
    (folder / "configs/train.json").write_text(json.dumps({
        "imports": ["$import pathlib"], "bundle_root": ".",
        "train_config": f"$pathlib.Path({str(marker)!r}).write_text('ran')"}))
    return folder


def test_untrusted_bundle_is_refused_before_it_is_parsed(tmp_path, capsys):
    from MedianNerveSegLib.cli import main

    marker = tmp_path / "ran.txt"
    bundle = _code_bundle(tmp_path / "foreign", marker)
    code = main(["train", "--bundle", str(bundle), "--dataset", str(tmp_path), "--out", str(tmp_path / "m")])
    error = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    assert error.strip().splitlines() == [f"error: {bundle}: not one of this project's bundles; bundle configs "
                                          "run code: pass --trust-bundle if you trust it"]


def test_trusted_bundle_and_links_resolved(tmp_path):
    from MedianNerveSegLib.bundle import is_project_bundle, train_config

    marker = tmp_path / "ran.txt"
    bundle = _code_bundle(tmp_path / "foreign", marker)
    train_config(bundle, {}, trusted=True)
    assert marker.read_text() == "ran"
    link = tmp_path / "link"
    link.symlink_to(TRAINING / "lunet")
    assert is_project_bundle(link) and is_project_bundle(TRAINING / "lunet")
    assert not is_project_bundle(bundle) and not is_project_bundle(TRAINING)


def test_bundle_inference_fails_with_a_non_zero_exit_when_a_file_fails(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "broken.png").write_bytes(b"not a png")
    run = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                          str(TRAINING / "lunet/configs/inference.json"), "--bundle_root", str(tmp_path),
                          "--input_dir", str(images), "--model", "median_nerve_unet_small"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode != 0
    assert "broken.png" in run.stderr and "1 of 1 file(s) failed" in run.stderr
    assert (tmp_path / "eval/segment/measurements.csv").is_file()


def test_the_click_bundle_describes_four_input_channels_and_trains_a_click_model():
    from MedianNerveSegLib.train import ClickTrainConfig

    bundle = TRAINING / "click_unet"
    for relative in BUNDLE_FILES:
        assert (bundle / relative).is_file(), relative
    image = json.loads((bundle / "configs/metadata.json").read_text())["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 4 == len(image["channel_def"]) and image["spatial_shape"] == [256, 256]
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs/train.json"))
    config = parser.get_parsed_content("train_config")
    assert config.architecture == "click_unet" and isinstance(config.clicks, ClickTrainConfig)
    for config_file in ("train.json", "inference.json"):
        parser = ConfigParser()
        parser.read_config(str(bundle / "configs" / config_file))
        network = parser.get_parsed_content("network_def")
        assert next(network.parameters()).shape[1] == 4  # image, mask, positive and negative clicks


def test_the_click_bundle_refines_and_benchmarks(tiny_click_model, dataset_dir, tmp_path):
    bundle = TRAINING / "click_unet"
    assert _run(bundle / "configs/inference.json", bundle_root=str(tmp_path), model=str(tiny_click_model),
                image=str(dataset_dir / "images/Pz001-001.png"), mask=str(dataset_dir / "masks/Pz001-001.png"),
                clicks=["+300,200", "-250,260"], spacing_mm=0.062) == 0
    [row] = read_results(tmp_path / "eval/refine/measurements.csv")
    assert row.model == "tiny_click@1.0.0" and row.mask == "Pz001-001_r1_mask.png"
    assert _run(bundle / "configs/evaluate.json", bundle_root=str(tmp_path), model=str(tiny_click_model),
                dataset_dir=str(dataset_dir), max_images=3) == 0
    result = json.loads((tmp_path / "eval/clicks/clicks.json").read_text())
    assert result["n_images"] == 3 and result["click_model"] == "tiny_click@1.0.0"
    trained_on = json.loads((tiny_click_model / "model.json").read_text())["training"]["train_patients"]
    assert not set(result["patients"]) & set(trained_on)  # only patients neither model learnt from


@pytest.mark.parametrize("name", available_models("classifier"))
def test_classifier_bundles_train_on_labels_and_build_their_network(name):
    from MedianNerveSegLib.models import build_model
    from MedianNerveSegLib.train import ClassifierTrainConfig

    bundle = TRAINING / name
    for relative in BUNDLE_FILES:
        assert (bundle / relative).is_file(), relative
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs/train.json"))
    config = parser.get_parsed_content("train_config")
    assert config.architecture == name and isinstance(config.classifier, ClassifierTrainConfig)
    assert config.classifier.surrogate_csa_mm2 == 10.0 and config.classifier.crop_mm == 15.0
    assert (list(config.augment.gamma), config.augment.speckle_sd) == ([1.0, 1.0], 0.0)  # the paper's: geometry only
    for config_file in ("train.json", "inference.json"):
        parser = ConfigParser()
        parser.read_config(str(bundle / "configs" / config_file))
        built = parser.get_parsed_content("network_def")
        assert type(built) is type(build_model(name))
    assert "surrogate" in (bundle / "docs/README.md").read_text()


def test_a_classifier_bundle_classifies_and_evaluates(tiny_classifier, dataset_dir, tmp_path):
    bundle = TRAINING / "efficientnet_b0"
    images = tmp_path / "images"
    images.mkdir()
    (images / "Pz001-001.png").symlink_to(dataset_dir / "images/Pz001-001.png")
    assert _run(bundle / "configs/inference.json", bundle_root=str(tmp_path), model=str(tiny_classifier),
                input_dir=str(images), explain=["gradcam"]) == 0
    rows = (tmp_path / "eval/classify/classification.csv").read_text().splitlines()
    assert len(rows) == 2 and "Pz001-001_gradcam.png" in rows[1]
    assert _run(bundle / "configs/evaluate.json", bundle_root=str(tmp_path), model=str(tiny_classifier),
                dataset_dir=str(dataset_dir)) == 0
    assert json.loads((tmp_path / "eval/classifier/classifiers.json").read_text())["n_images"] > 0
