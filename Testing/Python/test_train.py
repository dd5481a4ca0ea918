"""Training options on real data at a tiny size: EMA, budget, stop, early stopping, plateau."""

import csv
import json

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import pytest
import torch
from PIL import Image

import MedianNerveSegLib.train as train_module
from MedianNerveSegLib.cli import main
from MedianNerveSegLib.train import (TrainConfig, _loss_function, _TimeBudget, _weight_average, failure, train,
                                     validate)

TINY = dict(input_size=(32, 48), batch_size=4, max_images=10, architecture="lunet",
            arch_kwargs={"features": [8, 16, 32, 64]})


def test_weight_average_follows_a_short_run():
    network = torch.nn.Linear(3, 1)
    averaged = _weight_average(network, decay=0.995)
    for _ in range(20):
        with torch.no_grad():
            network.weight.add_(1.0)
        averaged.update_parameters(network)
    # a fixed 0.995 decay would still sit ~19 below the latest weights after 20 updates
    assert torch.allclose(averaged.module.weight, network.weight, atol=3.0)


def test_stop_callback_ends_training_and_still_saves(dataset_dir, tmp_path):
    calls = []
    info = train(dataset_dir, tmp_path, TrainConfig(epochs=50, **TINY), log=lambda _: None,
                 stop=lambda: calls.append(1) or len(calls) >= 2)
    assert info.training["epochs"] == 2
    assert "dice_mean" in info.metrics and (tmp_path / "model.pt").is_file()


def test_time_budget_sets_the_number_of_epochs(dataset_dir, tmp_path):
    info = train(dataset_dir, tmp_path, TrainConfig(epochs=500, time_budget_s=0.001, **TINY), log=lambda _: None)
    assert info.training["epochs"] == 1  # the first epoch alone is past the budget: no second one is forced


def test_early_stopping_and_plateau_schedule(dataset_dir, tmp_path):
    cfg = TrainConfig(epochs=40, val_every=1, early_stopping=2, scheduler="plateau", plateau_patience=0,
                      plateau_factor=0.5, learning_rate=1e-6, warmup_epochs=0, keep_best=True, **TINY)
    info = train(dataset_dir, tmp_path, cfg, log=lambda _: None)
    assert info.training["epochs"] < 40
    with open(tmp_path / "training_log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert float(rows[-1]["lr"]) < 1e-6  # the plateau lowered the learning rate
    saved = json.loads((tmp_path / "model.json").read_text())
    assert saved["metrics"]["dice_mean"] == pytest.approx(max(float(r["dice_mean"]) for r in rows))


def test_bad_options_are_named(dataset_dir, tmp_path):
    for bad in ({"optimizer": "rmsprop"}, {"loss": "focal"}, {"scheduler": "step"}):
        with pytest.raises(ValueError, match=list(bad.values())[0]):
            train(dataset_dir, tmp_path, TrainConfig(epochs=1, **{**TINY, **bad}), log=lambda _: None)


def test_the_boundary_aware_loss_costs_a_far_blob_more_than_a_slip_of_the_contour():
    """Two predictions with the same 60 wrong pixels: a blob 30 pixels from the nerve, and the nerve one pixel
    wider along its side. BCE + Dice cannot tell them apart; the Hausdorff term makes the blob dearer."""
    truth = torch.zeros(1, 1, 64, 64)
    truth[..., 20:40, 10:30] = 1
    blob, slip = truth.clone(), truth.clone()
    blob[..., 55:61, 50:60] = 1
    slip[..., 20:40, 30:33] = 1
    assert blob.sum() == slip.sum()
    logits = {name: (mask * 2 - 1) * 6 for name, mask in (("blob", blob), ("slip", slip))}
    plain = _loss_function(TrainConfig(loss="bce_dice"))
    boundary = _loss_function(TrainConfig(loss="bce_dice_hd"))
    assert plain(logits["blob"], truth).item() == pytest.approx(plain(logits["slip"], truth).item(), rel=1e-3)
    extra = {name: boundary(value, truth).item() - plain(value, truth).item() for name, value in logits.items()}
    assert extra["blob"] > 5 * extra["slip"] > 0


def test_training_uses_a_dataset_store_and_its_split(dataset_dir, tmp_path):
    from MedianNerveSegLib.dataset import LabelledDataset
    from MedianNerveSegLib.data import list_samples

    store = LabelledDataset.init(tmp_path / "store")
    for sample in list_samples(dataset_dir)[:12]:
        store.add(sample.image, sample.mask, author="test")
    store.split(val_fraction=0.3)
    validation_patients = {s.patient for s in store.samples("validation")}
    info = train(tmp_path / "store", tmp_path / "model", TrainConfig(epochs=1, **{**TINY, "max_images": None}),
                 log=lambda _: None)
    assert set(info.training["val_patients"]) == validation_patients
    assert info.training["n_train_images"] == len(store.samples("training"))


def test_torchrun_trains_on_two_processes(dataset_dir, tmp_path):
    import shutil
    import subprocess
    import sys

    from MedianNerveSegLib.inference import Segmenter

    for folder in ("images", "masks"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    for image in sorted((dataset_dir / "images").iterdir())[:12]:
        shutil.copy(image, tmp_path / "data" / "images" / image.name)
        shutil.copy(dataset_dir / "masks" / image.name, tmp_path / "data" / "masks" / image.name)
    (tmp_path / "cfg.json").write_text(json.dumps({"val_every": 1, "early_stopping": 2, "scheduler": "plateau"}))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "MedianNerveSegLib",
               "train", "--dataset", str(tmp_path / "data"), "--out", str(tmp_path / "model"), "--epochs", "3",
               "--input-size", "32", "48", "--batch-size", "4", "--architecture", "lunet",
               "--config", str(tmp_path / "cfg.json")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 1 and "training failed" in result.stderr, result.stderr[-2000:]  # a smoke model
    info = json.loads((tmp_path / "model" / "model.json").read_text())
    assert info["training"]["processes"] == 2 and info["training"]["epochs"] >= 1
    assert Segmenter(tmp_path / "model").info.architecture == "lunet"


# ---------------------------------------------------------------- synthetic data (no shared data needed)

SMOKE = dict(input_size=(32, 48), batch_size=4, architecture="lunet", arch_kwargs={"features": [4, 8, 16, 32]},
             val_every=1, warmup_epochs=5)


def synthetic_dataset(folder: Path, patients: int = 6, per_patient: int = 2) -> Path:
    """images/ + masks/ of PzNNN-MMM pairs: a bright disk (the "nerve") on noise, 48 x 64 pixels."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:48, :64]
    for folder_name in ("images", "masks"):
        (folder / folder_name).mkdir(parents=True, exist_ok=True)
    for patient in range(1, patients + 1):
        for index in range(1, per_patient + 1):
            centre = rng.integers(16, 32), rng.integers(20, 44)
            disk = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 < (6 + index) ** 2
            image = rng.integers(0, 80, (48, 64)) + 150 * disk
            stem = f"Pz{patient:03d}-{index:03d}"
            Image.fromarray(image.astype(np.uint8)).save(folder / "images" / f"{stem}.png")
            Image.fromarray((255 * disk).astype(np.uint8)).save(folder / "masks" / f"{stem}.png")
    return folder


@dataclass(frozen=True)
class SpacedSample:
    """A sample with its own spacing (what a dataset store's record gives)."""
    image: Path
    mask: Path
    patient: str
    spacing_mm: Optional[Tuple[float, float]] = None

    @property
    def stem(self) -> str:
        return self.image.stem


class _EmptySegmenter:
    """Finds nothing: the CSA error of each image is then its ground-truth area."""

    class _Prediction:
        def __init__(self, shape):
            self.mask, self.milliseconds = np.zeros(shape, bool), 1.0

    def predict(self, image):
        return self._Prediction(image.frame(0).shape)


def test_spacing_is_each_samples_own_unless_given(tmp_path):
    from MedianNerveSegLib.data import list_samples
    from MedianNerveSegLib.io import read_mask

    assert TrainConfig().spacing_mm is None  # no hidden 0.062
    samples = list_samples(synthetic_dataset(tmp_path))[:4]
    spacings = [(0.1, 0.1), (0.1, 0.1), (0.2, 0.2), None]
    spaced = [SpacedSample(s.image, s.mask, s.patient, spacing) for s, spacing in zip(samples, spacings)]
    areas = [float(read_mask(s.mask).sum()) for s in samples]
    metrics = validate(_EmptySegmenter(), spaced)
    assert metrics["n_images"] == 4 and metrics["csa_n_images"] == 3 and metrics["dice_mean"] == 0.0
    own = [area * spacing[0] ** 2 for area, spacing in zip(areas, spacings) if spacing]
    assert metrics["csa_mae_mm2"] == pytest.approx(np.mean(own), rel=1e-6)
    given = validate(_EmptySegmenter(), spaced, spacing_mm=0.05)  # the user's spacing, for every sample
    assert given["csa_n_images"] == 4 and given["csa_mae_mm2"] == pytest.approx(np.mean(areas) * 0.05 ** 2)
    unknown = validate(_EmptySegmenter(), samples)  # PNGs carry no spacing: CSA left out, DSC still there
    assert unknown["csa_n_images"] == 0 and unknown["csa_mae_mm2"] is None and unknown["dice_mean"] == 0.0


def test_training_patients_are_recorded(tmp_path):
    info = train(synthetic_dataset(tmp_path / "data"), tmp_path / "model", TrainConfig(epochs=1, **SMOKE),
                 log=lambda _: None)
    saved = json.loads((tmp_path / "model" / "model.json").read_text())["training"]
    assert saved["train_patients"] == sorted(saved["train_patients"]) == info.training["train_patients"]
    assert not set(saved["train_patients"]) & set(saved["val_patients"])
    assert set(saved["train_patients"]) | set(saved["val_patients"]) == {f"Pz{i:03d}" for i in range(1, 7)}


class _FakeClock:
    """Time that moves only while an epoch trains: ``durations[i]`` seconds for epoch i (the last one after)."""

    def __init__(self, durations):
        self.now, self.durations, self.epochs = 0.0, list(durations), 0

    def __call__(self) -> float:
        return self.now

    def train_epoch(self, real):
        def timed(*args, **kwargs):
            self.now += self.durations[min(self.epochs, len(self.durations) - 1)]
            self.epochs += 1
            return real(*args, **kwargs)
        return timed


@pytest.mark.parametrize("durations, budget, expected", [
    ([10.0], 5.0, 1),  # the first epoch is already past the budget: no second one
    ([10.0], 35.0, 3),  # 3 fit, a 4th would end at 40 s
    ([10.0, 30.0], 100.0, 4),  # slower than the first epoch said (10 planned): stops at 100 s
])
def test_time_budget_stops_before_an_epoch_would_overrun(tmp_path, monkeypatch, durations, budget, expected):
    clock = _FakeClock(durations)
    monkeypatch.setattr(train_module, "_clock", clock)
    monkeypatch.setattr(train_module, "_train_epoch", clock.train_epoch(train_module._train_epoch))
    cfg = TrainConfig(epochs=500, time_budget_s=budget, **SMOKE)
    info = train(synthetic_dataset(tmp_path / "data"), tmp_path / "model", cfg, log=lambda _: None)
    assert info.training["epochs"] == expected
    assert info.training["seconds"] <= budget + max(durations)  # within the budget plus one epoch
    fitted = info.training["config"]
    assert fitted["warmup_epochs"] <= max(1, fitted["epochs"] // 10)  # the warm-up shrinks with the budget
    assert "dice_mean" in info.metrics  # the final validation still happens


def test_time_budget_without_a_budget_allows_every_epoch(monkeypatch):
    monkeypatch.setattr(train_module, "_clock", lambda: 1000.0)
    assert _TimeBudget(None).allows_another(1)


def test_failure_needs_the_nerve_found_in_half_the_validation_images():
    assert "20%" in failure({"found_rate": 0.2, "n_images": 5, "dice_mean": 0.1})
    assert failure({"found_rate": 0.5, "n_images": 4, "dice_mean": 0.6}) is None
    assert failure({}) is None  # no validation: not a failure


def _failed_validation(*args, **kwargs):
    return {"n_images": 4, "dice_mean": 0.0, "found_rate": 0.0}


def test_a_model_that_fails_validation_is_marked_and_not_offered(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_module, "validate", _failed_validation)
    data = synthetic_dataset(tmp_path / "data")
    info = train(data, tmp_path / "model", TrainConfig(epochs=1, **SMOKE), log=lambda _: None)
    assert "0%" in info.metrics["failed"] and (tmp_path / "model" / "model.pt").is_file()  # kept for inspection
    args = ["train", "--dataset", str(data), "--out", str(tmp_path / "cli"), "--epochs", "1", "--input-size",
            "32", "48", "--batch-size", "4", "--architecture", "lunet"]
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert "use it with" not in out
    [line] = err.strip().splitlines()
    assert line.startswith("error: training failed") and str(tmp_path / "cli") in line


def test_cli_spacing_options_have_no_hidden_default():
    from MedianNerveSegLib.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["compare", "--dataset", "d", "--models", "m", "--out", "o"]).spacing is None
    assert parser.parse_args(["compare", "--dataset", "d", "--models", "m", "--out", "o",
                              "--spacing", "0.07"]).spacing == (0.07, 0.07)
    assert parser.parse_args(["train", "--dataset", "d"]).spacing is None
    train_parser = parser._subparsers._group_actions[0].choices["train"]
    assert "0.062" not in train_parser.format_help()
