"""Shared fixtures: the real dataset beside the repository (skipped when absent)."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("MEDIAN_NERVE_DATA", REPO.parent / "shared" / "data" / "median-nerve-us"))
SPACING = 0.062  # mm, from the dataset README

# converted networks (OpenVINO) go to a scratch cache, never the user's home, removed when the run ends
# (some 400 MB a run: left behind, repeated runs filled CI's disk)
if "MEDIAN_NERVE_SEG_CACHE" not in os.environ:
    os.environ["MEDIAN_NERVE_SEG_CACHE"] = SCRATCH_CACHE = tempfile.mkdtemp(prefix="mns-cache-")
    atexit.register(shutil.rmtree, SCRATCH_CACHE, ignore_errors=True)

needs_data = pytest.mark.skipif(not (DATA / "images").is_dir(), reason=f"dataset not found at {DATA}")


@pytest.fixture(scope="session")
def dataset_dir() -> Path:
    if not (DATA / "images").is_dir():
        pytest.skip(f"dataset not found at {DATA}")
    return DATA


@pytest.fixture(scope="session")
def tiny_click_model(dataset_dir, tmp_path_factory) -> Path:
    """A click model trained for one epoch on 8 images at 64 x 64: for the plumbing, not for its numbers."""
    from MedianNerveSegLib.train import ClickTrainConfig, TrainConfig, train

    out = tmp_path_factory.mktemp("tiny_click") / "model"
    config = TrainConfig(name="tiny_click", architecture="click_unet", arch_kwargs={"channels": [8, 16, 32]},
                         input_size=(64, 64), epochs=1, batch_size=4, max_images=8, spacing_mm=SPACING,
                         clicks=ClickTrainConfig(initial_model="median_nerve_unet_small", repeats=1, val_clicks=1))
    train(dataset_dir, out, config, log=lambda message: None)
    return out


@pytest.fixture(scope="session")
def tiny_classifier(dataset_dir, tmp_path_factory) -> Path:
    """An EfficientNet-B0 classifier trained for one epoch on 16 images' 64 x 64 crops, on the surrogate label:
    for the plumbing, not for its numbers."""
    from MedianNerveSegLib.train import ClassifierTrainConfig, TrainConfig, train

    out = tmp_path_factory.mktemp("tiny_classifier") / "model"
    config = TrainConfig(name="tiny_classifier", architecture="efficientnet_b0", input_size=(64, 64), epochs=1,
                         batch_size=8, max_images=16, spacing_mm=SPACING,
                         classifier=ClassifierTrainConfig(surrogate_csa_mm2=10.0, segmenter="median_nerve_unet_small"))
    train(dataset_dir, out, config, log=lambda message: None)
    return out
