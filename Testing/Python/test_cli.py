"""The command-line contract: segment, measure, evaluate, train, models."""

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from MedianNerveSegLib.cli import main
from MedianNerveSegLib.inference import Segmenter

from conftest import SPACING

SEGMENT_COLUMNS = {"image", "found", "confidence", "area_mm2", "area_px", "perimeter_mm", "circularity",
                   "flattening_ratio", "n_components", "spacing_mm", "spacing_source", "ms"}


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def few_images(dataset_dir, tmp_path_factory):
    """Three held-out images and their masks, plus broken files, in one folder."""
    folder = tmp_path_factory.mktemp("inputs")
    gt = tmp_path_factory.mktemp("gt")
    patients = Segmenter().info.training["val_patients"][:3]
    for patient in patients:
        image = sorted((dataset_dir / "images").glob(f"{patient}-*.png"))[0]
        shutil.copy(image, folder / image.name)
        shutil.copy(dataset_dir / "masks" / image.name, gt / image.name)
    (folder / "notes.png").write_text("not an image")
    (folder / "empty.bmp").write_bytes(b"")
    return folder, gt


def test_segment_writes_masks_overlays_and_csv(few_images, tmp_path, capsys):
    folder, gt = few_images
    out = tmp_path / "out"
    assert main(["segment", str(folder), "--out", str(out), "--spacing", str(SPACING)]) == 0
    printed = capsys.readouterr()
    rows = _rows(out / "measurements.csv")
    assert SEGMENT_COLUMNS <= set(rows[0])
    good = [r for r in rows if not r["error"]]
    assert len(good) == 3 and all(r["found"] == "True" for r in good)
    for row in good:
        stem = row["image"][:-4]
        mask = np.asarray(Image.open(out / f"{stem}_mask.png"))
        assert mask.shape == (468, 606) and set(np.unique(mask)) == {0, 255}
        assert np.asarray(Image.open(out / f"{stem}_overlay.png")).shape == (468, 606, 3)
        assert float(row["area_mm2"]) == pytest.approx(int(row["area_px"]) * SPACING ** 2, rel=1e-3)
        assert 4 < float(row["area_mm2"]) < 35 and row["spacing_source"] == "user"
    # broken files: one clear line each, and the batch went on
    assert "notes.png:" in printed.err and "empty.bmp:" in printed.err
    assert "Traceback" not in printed.err
    assert {r["image"] for r in rows if r["error"]} == {"notes.png", "empty.bmp"}
    assert "CSA mm2" in printed.out


def test_evaluate_the_segmented_folder(few_images, tmp_path):
    folder, gt = few_images
    main(["segment", str(folder), "--out", str(tmp_path / "pred"), "--spacing", str(SPACING)])
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(gt), "--out", str(tmp_path / "ev"),
                 "--spacing", str(SPACING)]) == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    for key in ("dice_mean", "dice_median", "iou_mean", "precision_mean", "recall_mean", "hd95_mean_mm",
                "found_rate", "csa_mae_mm2", "csa_icc", "csa_bias_mm2", "csa_loa_low_mm2", "csa_loa_high_mm2"):
        assert key in summary
    assert summary["n"] == 3 and summary["dice_mean"] > 0.8 and summary["found_rate"] == 1.0
    assert len(_rows(tmp_path / "ev" / "metrics.csv")) == 3


def test_without_spacing_csa_is_in_pixels_and_flagged(few_images, tmp_path, capsys):
    folder, _ = few_images
    main(["segment", str(folder), "--out", str(tmp_path)])
    good = [r for r in _rows(tmp_path / "measurements.csv") if not r["error"]]
    assert all(r["area_mm2"] == "" and int(r["area_px"]) > 0 and r["spacing_source"] == "unknown" for r in good)
    assert "CSA in pixels only" in capsys.readouterr().out


def test_measure_masks_drawn_elsewhere(dataset_dir, tmp_path, capsys):
    masks = sorted((dataset_dir / "masks").iterdir())[:2]
    assert main(["measure", *map(str, masks), "--spacing", str(SPACING), "--out", str(tmp_path / "m.csv")]) == 0
    rows = _rows(tmp_path / "m.csv")
    for row, mask in zip(rows, masks):
        assert float(row["area_mm2"]) == pytest.approx((np.asarray(Image.open(mask)) > 0).sum() * SPACING ** 2)


def test_train_smoke_writes_a_model_segment_can_use(dataset_dir, tmp_path):
    model = tmp_path / "model"
    assert main(["train", "--dataset", str(dataset_dir), "--out", str(model), "--epochs", "2",
                 "--max-images", "12", "--input-size", "64", "96", "--batch-size", "4"]) == 0
    info = json.loads((model / "model.json").read_text())
    assert info["input_size"] == [64, 96] and "dice_mean" in info["metrics"]
    assert info["training"]["n_train_images"] + info["training"]["n_val_images"] == 12
    assert info["training"]["val_patients"]
    assert len(_rows(model / "training_log.csv")) == 2
    image = sorted((dataset_dir / "images").iterdir())[0]
    assert main(["segment", str(image), "--out", str(tmp_path / "o"), "--model", str(model)]) == 0
    assert (tmp_path / "o" / f"{image.stem}_mask.png").is_file()


def test_bad_arguments_give_one_clear_line(tmp_path, capsys):
    assert main(["segment", str(tmp_path / "missing.png"), "--out", str(tmp_path)]) == 2
    assert "missing.png" in capsys.readouterr().err
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "black.png")
    assert main(["segment", str(tmp_path / "black.png"), "--out", str(tmp_path), "--model", "nope"]) == 2
    assert "model 'nope' not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["segment", str(tmp_path / "empty"), "--out", str(tmp_path)]) == 2
    assert "no supported image" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["segment", "x.png", "--out", str(tmp_path), "--spacing", "-1"])


def test_console_script_help_explains_every_command():
    for command in ([], ["segment"], ["evaluate"], ["measure"], ["train"], ["models"]):
        result = subprocess.run([sys.executable, "-m", "MedianNerveSegLib", *command, "--help"],
                                capture_output=True, text=True, check=True)
        assert "usage: median-nerve-seg" in result.stdout
    listing = subprocess.run([sys.executable, "-m", "MedianNerveSegLib", "models"],
                             capture_output=True, text=True, check=True).stdout
    assert "monai_unet" in listing and "median_nerve_unet" in listing
