"""MONAI bundles in training/: one per architecture, metadata complete, configs that run."""

import json
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from MedianNerveSegLib.inference import Segmenter
from MedianNerveSegLib.models import MODEL_REGISTRY, available_models
from MedianNerveSegLib.train import TrainConfig

from conftest import REPO

TRAINING = REPO / "training"
REQUIRED_METADATA = ("version", "changelog", "monai_version", "pytorch_version", "numpy_version",
                     "network_data_format", "name", "task", "description", "authors", "references")
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
    assert _run(bundle / "configs/inference.json", bundle_root=str(tmp_path), input_dir=str(images)) == 0
    assert len(list((tmp_path / "eval/segment").glob("*_mask.png"))) == 2
    assert _run(bundle / "configs/evaluate.json", bundle_root=str(tmp_path),
                gt_dir=str(dataset_dir / "masks")) == 0
    summary = json.loads((tmp_path / "eval/metrics/summary.json").read_text())
    assert summary["n"] == len(list((dataset_dir / "masks").glob("*.png")))


def test_bundle_fine_tune_takes_a_tenth_of_the_recipe_rate_and_a_time_budget(dataset_dir, tmp_path):
    from MedianNerveSegLib.cli import main

    bundle = TRAINING / "lunet"
    recipe_lr = json.loads((bundle / "configs/train.json").read_text())["train_config"]["learning_rate"]
    common = ["train", "--bundle", str(bundle), "--dataset", str(dataset_dir), "--input-size", "32", "48",
              "--max-images", "6"]
    assert main(common + ["--out", str(tmp_path / "start"), "--epochs", "1"]) == 0
    tune = common + ["--init-weights", str(tmp_path / "start"), "--epochs", "50", "--time-budget", "0.001"]
    assert main(tune + ["--out", str(tmp_path / "tuned")]) == 0
    assert main(tune + ["--out", str(tmp_path / "tuned_lr"), "--lr", "5e-4"]) == 0
    tuned, tuned_lr = (json.loads((tmp_path / name / "model.json").read_text())["training"]
                       for name in ("tuned", "tuned_lr"))
    assert tuned["config"]["learning_rate"] == pytest.approx(recipe_lr / 10)
    assert tuned_lr["config"]["learning_rate"] == 5e-4
    assert tuned["epochs"] == 2  # the budget's floor, far below --epochs
