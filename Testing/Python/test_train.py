"""Training options on real data at a tiny size: EMA, budget, stop, early stopping, plateau."""

import csv
import json

import pytest
import torch

from MedianNerveSegLib.train import TrainConfig, _weight_average, train

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
    assert info.training["epochs"] == 2


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
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    info = json.loads((tmp_path / "model" / "model.json").read_text())
    assert info["training"]["processes"] == 2 and info["training"]["epochs"] >= 1
    assert Segmenter(tmp_path / "model").info.architecture == "lunet"
