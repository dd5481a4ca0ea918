"""The command-line contract: segment, measure, evaluate, train, models."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from MedianNerveSegLib.cli import main
from MedianNerveSegLib.inference import Segmenter
from MedianNerveSegLib.io import read_mask
from MedianNerveSegLib.results import read_results

from conftest import REPO, SPACING
from test_io import write_dicom


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_one_frame_in_every_format_gives_one_csa_and_no_spacing_is_never_1_mm(dataset_dir, tmp_path):
    """A held-out image as PNG, NRRD, NIfTI, MHA and DICOM at 0.062 mm: the same CSA from each file's own
    spacing; as PNG and as NRRD without spacing, pixels only and flagged (once "3297 mm^2" for 12.7 mm^2)."""
    import SimpleITK as sitk

    from MedianNerveSegLib.io import write_image_nrrd

    image = dataset_dir / "images" / f"{Segmenter().info.training['val_patients'][0]}-001.png"
    pixels = np.asarray(Image.open(image).convert("L"))
    folder = tmp_path / "formats"
    folder.mkdir()
    shutil.copy(image, folder / "frame.png")
    write_image_nrrd(folder / "frame.nrrd", pixels, (SPACING, SPACING))
    write_image_nrrd(folder / "uncalibrated.nrrd", pixels)
    itk = sitk.GetImageFromArray(pixels)
    itk.SetSpacing((SPACING, SPACING))
    for name in ("frame.nii.gz", "frame.mha"):
        sitk.WriteImage(itk, str(folder / name))
    write_dicom(folder / "frame.dcm", pixels, region_cm=SPACING / 10)
    assert main(["segment", str(folder), "--out", str(tmp_path / "out")]) == 0
    rows = {Path(r.image).name: r for r in read_results(tmp_path / "out" / "measurements.csv")}
    calibrated = [rows[name] for name in ("frame.nrrd", "frame.nii.gz", "frame.mha", "frame.dcm")]
    assert len({r.area_px for r in rows.values()}) == 1 and rows["frame.png"].area_px > 1000
    assert {r.area_mm2 for r in calibrated} == {round(rows["frame.png"].area_px * SPACING ** 2, 6)}
    for name in ("frame.png", "uncalibrated.nrrd"):
        assert rows[name].area_mm2 is None and "spacing-unknown" in rows[name].flags


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
    assert main(["segment", str(folder), "--out", str(out), "--spacing", str(SPACING)]) == 1  # 2 files failed
    printed = capsys.readouterr()
    rows = read_results(out / "measurements.csv")
    good = [r for r in rows if r.ok]
    assert len(good) == 3 and all(r.found for r in good)
    for row in good:
        stem = row.mask[: -len("_mask.png")]
        mask = np.asarray(Image.open(out / row.mask))
        assert mask.shape == (468, 606) and set(np.unique(mask)) == {0, 255}
        overlay = np.asarray(Image.open(out / f"{stem}_overlay.png"))
        assert overlay.shape[1:] == (606, 3) and 468 < overlay.shape[0] < 520  # the frame below a caption band
        assert row.area_mm2 == pytest.approx(row.area_px * SPACING ** 2, rel=1e-3)
        assert 4 < row.area_mm2 < 35 and row.spacing_source == "user" and row.spacing_mm == (SPACING, SPACING)
        assert row.patient == stem.split("-")[0] and row.image == str(folder / f"{stem}.png")
    # broken files: one clear line each, and the batch went on
    assert "notes.png:" in printed.err and "empty.bmp:" in printed.err
    assert "Traceback" not in printed.err
    assert {r.image for r in rows if r.error} == {str(folder / "notes.png"), str(folder / "empty.bmp")}
    assert "CSA mm2" in printed.out and "2 file(s) failed" in printed.out


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
    good = [r for r in read_results(tmp_path / "measurements.csv") if r.ok]
    assert good and all(r.area_mm2 is None and r.area_px > 0 and r.spacing_source == "unknown" for r in good)
    assert all("spacing-unknown" in r.flags for r in good)
    assert "CSA in pixels only" in capsys.readouterr().out


def test_measure_masks_drawn_elsewhere(dataset_dir, tmp_path, capsys):
    masks = sorted((dataset_dir / "masks").iterdir())[:2]
    assert main(["measure", *map(str, masks), "--spacing", str(SPACING), "--out", str(tmp_path / "m.csv")]) == 0
    rows = read_results(tmp_path / "m.csv")
    for row, mask in zip(rows, masks):
        assert row.area_mm2 == pytest.approx((np.asarray(Image.open(mask)) > 0).sum() * SPACING ** 2, abs=1e-6)


def test_train_smoke_writes_a_model_segment_can_use(dataset_dir, tmp_path, capsys):
    model = tmp_path / "model"
    # a 2-epoch model finds no nerve: reported as failed (exit 1), not offered, its folder kept
    assert main(["train", "--dataset", str(dataset_dir), "--out", str(model), "--epochs", "2",
                 "--max-images", "12", "--input-size", "64", "96", "--batch-size", "4"]) == 1
    printed = capsys.readouterr()
    assert "training failed" in printed.err and "use it with" not in printed.out
    info = json.loads((model / "model.json").read_text())
    assert info["input_size"] == [64, 96] and "dice_mean" in info["metrics"]
    assert info["training"]["n_train_images"] + info["training"]["n_val_images"] == 12
    assert info["training"]["val_patients"]
    assert len(_rows(model / "training_log.csv")) == 2
    image = sorted((dataset_dir / "images").iterdir())[0]
    assert main(["segment", str(image), "--out", str(tmp_path / "o"), "--model", str(model)]) == 0
    assert (tmp_path / "o" / f"{image.stem}_mask.png").is_file()  # still loadable for inspection


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
    efficientnet = next(line for line in listing.splitlines() if line.strip().startswith("efficientnet_b0"))
    assert "params" in efficientnet and "not available" not in efficientnet  # MONAI's: no extra needed
    assert "val ROC AUC" in next(line for line in listing.splitlines() if "median_nerve_classifier" in line)


def test_cine_dicom_frames_with_scanner_spacing_and_slicer_masks(dataset_dir, tmp_path):
    frame = np.asarray(Image.open(sorted((dataset_dir / "images").iterdir())[0]).convert("L"))
    clip = write_dicom(tmp_path / "clip.dcm", np.stack([frame, frame, frame[:, ::-1]]), region_cm=0.0062, frames=3)
    out = tmp_path / "out"
    assert main(["segment", str(clip), "--out", str(out), "--mask-formats", "nrrd", "seg.nrrd"]) == 0
    rows = read_results(out / "measurements.csv")
    assert [r.frame for r in rows] == [0, 1, 2]
    assert all(r.spacing_source == "dicom-us-region" and r.found for r in rows)
    assert rows[0].area_mm2 == rows[1].area_mm2
    assert rows[2].area_mm2 == pytest.approx(rows[0].area_mm2, rel=0.15)
    assert [r.mask for r in rows] == [f"clip_f000{i}_mask.png" for i in range(3)]
    import slicerio
    segmentation = slicerio.read_segmentation(str(out / "clip_f0000.seg.nrrd"))
    assert [s["name"] for s in segmentation["segments"]] == ["Median nerve"]
    mask = np.asarray(Image.open(out / "clip_f0000_mask.png")) > 0
    assert np.array_equal(read_mask(out / "clip_f0000.seg.nrrd"), mask)
    assert np.array_equal(read_mask(out / "clip_f0000_mask.nrrd"), mask)
    plot = Image.open(out / "clip_csa.png")  # CSA through the clip
    assert plot.size[0] > 300 and len(np.unique(np.asarray(plot.convert("L")))) > 10


def test_awkward_images_give_a_result_or_one_clear_line(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.zeros((300, 400), np.uint8)).save(folder / "black.png")
    Image.fromarray((np.random.default_rng(0).random((300, 400)) * 65535).astype(np.uint16)).save(folder / "deep.png")
    (folder / "cut.png").write_bytes((folder / "deep.png").read_bytes()[:100])
    assert main(["segment", str(folder), "--out", str(tmp_path / "out"), "--spacing", "0.07"]) == 1
    rows = {Path(r.image).name: r for r in read_results(tmp_path / "out" / "measurements.csv")}
    assert rows["black.png"].found is False and rows["black.png"].area_mm2 == 0.0
    assert "not-found" in rows["black.png"].flags
    assert rows["deep.png"].error == ""
    assert rows["cut.png"].error
    err = capsys.readouterr().err
    assert "cut.png:" in err and "Traceback" not in err


def test_benchmark_speed_writes_json_and_markdown(tmp_path):
    assert main(["benchmark-speed", "--out", str(tmp_path), "--models", "monai_unet", "--repeats", "1"]) == 0
    rows = json.loads((tmp_path / "speed.json").read_text())
    assert rows[0]["model"] == "monai_unet" and rows[0]["mflops"] > 0 and rows[0]["ms_per_frame_batch8"] > 0
    assert "| monai_unet |" in (tmp_path / "speed.md").read_text()


def test_benchmark_trains_evaluates_times_and_resumes(dataset_dir, tmp_path, capsys):
    args = ["benchmark", "--dataset", str(dataset_dir), "--out", str(tmp_path), "--models", "lunet",
            "--epochs", "1", "--input-size", "32", "48", "--max-images", "10"]
    assert main(args) == 0
    result = json.loads((tmp_path / "lunet" / "result.json").read_text())
    assert result["epochs"] == 1 and result["cpu_ms"] > 0 and "auc_mean" in result
    assert (tmp_path / "lunet" / "evaluation" / "report.md").is_file()
    assert "| lunet |" in (tmp_path / "benchmark.md").read_text()
    stamp = (tmp_path / "lunet" / "model.pt").stat().st_mtime
    assert main(args) == 0  # resumed: nothing retrained
    assert (tmp_path / "lunet" / "model.pt").stat().st_mtime == stamp


def test_benchmark_times_results_trained_on_another_machine(dataset_dir, tmp_path):
    # results copied from a GPU machine: model_dir names a path of that machine, and a large model's
    # weights stayed there; the CPU column is still filled, from the architecture
    args = ["benchmark", "--dataset", str(dataset_dir), "--out", str(tmp_path), "--models", "lunet",
            "--epochs", "1", "--input-size", "32", "48", "--max-images", "10", "--no-cpu-timing"]
    assert main(args) == 0
    result_file = tmp_path / "lunet" / "result.json"
    result = json.loads(result_file.read_text())
    assert "cpu_ms" not in result
    result_file.write_text(json.dumps(dict(result, model_dir="/root/gpu/bench/lunet")))
    (tmp_path / "lunet" / "model.pt").unlink()
    assert main(["benchmark", "--dataset", str(dataset_dir), "--out", str(tmp_path), "--models"]) == 0
    timed = json.loads(result_file.read_text())
    assert timed["cpu_ms"] > 0 and timed["dice_mean"] == result["dice_mean"]
    from MedianNerveSegLib.metrics import format_value  # the table's own number format, whatever the time

    assert f"| {format_value('cpu_ms', timed['cpu_ms'])} |" in (tmp_path / "benchmark.md").read_text()


def test_benchmark_adds_trained_models_on_the_same_patients(dataset_dir, tmp_path):
    args = ["benchmark", "--dataset", str(dataset_dir), "--out", str(tmp_path), "--models", "--trained",
            "median_nerve_unet", "--no-cpu-timing"]
    assert main(args) == 0
    [row] = json.loads((tmp_path / "benchmark.json").read_text())
    shipped = json.loads((REPO / "MedianNerveSeg" / "MedianNerveSegLib" / "pretrained" / "median_nerve_unet" /
                          "model.json").read_text())
    assert row["model"] == "median_nerve_unet" and row["training_device"] == "cuda"
    assert row["parameters"] == shipped["training"]["parameters"] and row["n"] == 41  # the seed-0 held-out patients
    assert row["dice_mean"] == pytest.approx(shipped["metrics"]["dice_mean"], abs=0.002)
    assert "| median_nerve_unet |" in (tmp_path / "benchmark.md").read_text()


def _wrist_dicom(path, pixels, side, patient, frames=1, **tags):
    """A held-out image as a DICOM with its patient, laterality, acquisition time and frame time."""
    from pydicom import dcmread
    from pydicom.filewriter import dcmwrite

    write_dicom(path, np.stack([pixels] * frames) if frames > 1 else pixels, region_cm=SPACING / 10, frames=frames)
    ds = dcmread(path)
    ds.PatientID, ds.ImageLaterality, ds.AcquisitionDateTime = patient, side, "20261130142501.250"
    for key, value in tags.items():
        setattr(ds, key, value)
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def test_each_row_says_patient_side_level_and_time(dataset_dir, tmp_path):
    pixels = np.asarray(Image.open(dataset_dir / "images" / "Pz001-001.png").convert("L"))
    folder = tmp_path / "dicom"
    folder.mkdir()
    _wrist_dicom(folder / "a.dcm", pixels, "R", "HOSP-0042", frames=3, FrameTime="40")
    _wrist_dicom(folder / "b.dcm", pixels, "L", "HOSP-0042")
    assert main(["segment", str(folder), "--out", str(tmp_path / "out"), "--level", "forearm"]) == 0
    rows = read_results(tmp_path / "out" / "measurements.csv")
    assert [(Path(r.image).name, r.frame, r.patient, r.side, r.level) for r in rows] == [
        ("a.dcm", k, "HOSP-0042", "right", "forearm") for k in range(3)] + [("b.dcm", 0, "HOSP-0042", "left", "forearm")]
    assert [r.time_s for r in rows] == [0.0, 0.04, 0.08, None]
    assert {r.acquired for r in rows} == {"2026-11-30T14:25:01"}

    # a --side that contradicts the file is an error row naming both, the others go on
    assert main(["segment", str(folder), "--out", str(tmp_path / "right"), "--side", "right"]) == 1
    rows = {Path(r.image).name: r for r in read_results(tmp_path / "right" / "measurements.csv")}
    assert rows["a.dcm"].ok and rows["a.dcm"].side == "right"
    assert "--side right, but the file says left" in rows["b.dcm"].error


def test_an_older_results_file_is_read_but_never_continued(tmp_path):
    old = tmp_path / "measurements.csv"
    columns = [c for c in __import__("MedianNerveSegLib.results", fromlist=["COLUMNS"]).COLUMNS
               if c not in ("side", "level", "acquired", "time_s", "ellipse_ratio")]
    cells = {"image": "a.png", "frame": "0"}
    old.write_text(",".join(columns) + "\n" + ",".join(cells.get(c, "") for c in columns) + "\n")
    assert [r.image for r in read_results(old)] == ["a.png"] and read_results(old)[0].side == ""
    from MedianNerveSegLib.results import ResultsWriter

    with pytest.raises(ValueError, match="written by an older version"):
        ResultsWriter(old)


def test_benchmark_pipeline_reports_each_stage_and_the_hardware(few_images, tmp_path):
    folder, _ = few_images
    images = sorted(p for p in folder.glob("Pz*.png"))[:2]
    assert main(["benchmark-pipeline", *map(str, images), "--spacing", "0.062", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "pipeline.json").read_text())
    assert result["frames"] == 2 and result["failed"] == 0 and result["cores"] >= 1 and result["cpu"]
    assert set(result["ms_per_frame"]) == {"read", "network", "measure", "write outputs", "results row"}
    assert sum(result["ms_per_frame"].values()) <= result["end_to_end_ms_per_frame"] + 1  # stages within the whole
    assert "| **end to end** |" in (tmp_path / "pipeline.md").read_text()
    alone = result["network_alone_ms_per_frame"]  # the floor: the network on frames in memory
    assert alone > 0 and result["end_to_end_over_network_alone"] == round(result["end_to_end_ms_per_frame"] / alone, 2)
    assert f"x the network alone** ({alone} ms/frame" in (tmp_path / "pipeline.md").read_text()
    assert result["first_result_s"] > 0 and result["runtime"].split()[0] in ("torch", "openvino")
    assert result["overlay"] is True

    assert main(["benchmark-pipeline", str(images[0]), "--spacing", "0.062", "--no-overlay", "--repeats", "3",
                 "--out", str(tmp_path / "bare")]) == 0
    bare = json.loads((tmp_path / "bare" / "pipeline.json").read_text())
    assert bare["overlay"] is False and bare["repeats"] == 3 and bare["frames"] == 1 and bare["failed"] == 0
    assert "the median of 3 runs" in (tmp_path / "bare" / "pipeline.md").read_text()
    assert "no overlays (segment --no-overlay)" in (tmp_path / "bare" / "pipeline.md").read_text()
