"""Background jobs: the command line in a subprocess, with progress and cancel."""

import json
import shutil
import time

import pytest

from MedianNerveSegLib.jobs import (comparison_job, segmentation_job, segmentation_progress, training_job,
                                   training_progress)
from MedianNerveSegLib.zoo import load_info

from conftest import REPO


JOB_TIMEOUT_S = 1800  # generous: these tests must not depend on the machine's speed


def _wait_for(condition, timeout=JOB_TIMEOUT_S):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_segmentation_job_segments_in_the_background(dataset_dir, tmp_path):
    images = sorted((dataset_dir / "images").iterdir())[:2]
    job = segmentation_job(images, tmp_path / "out", spacing_mm=0.062)
    assert job.wait(JOB_TIMEOUT_S) == 0, job.output()
    assert segmentation_progress(tmp_path / "out", 2) == {"done": 2, "total": 2}
    assert (tmp_path / "out" / "measurements.csv").is_file()


def test_failed_job_reports_its_error_line(tmp_path):
    job = segmentation_job([tmp_path / "missing.png"], tmp_path / "out")
    assert job.wait(JOB_TIMEOUT_S) == 2
    assert "missing.png" in job.output()


@pytest.fixture()
def small_dataset(dataset_dir, tmp_path):
    """10 image/mask pairs of patients the shipped model never saw (so that compare has patients that
    neither the shipped model nor one fine-tuned here was trained on)."""
    data = tmp_path / "data"
    for folder in ("images", "masks"):
        (data / folder).mkdir(parents=True)
    unseen = set(load_info(REPO / "MedianNerveSeg" / "MedianNerveSegLib" / "pretrained" / "median_nerve_unet")
                 .training["val_patients"])
    for image in [p for p in sorted((dataset_dir / "images").iterdir()) if p.name[:5] in unseen][:10]:
        shutil.copy(image, data / "images" / image.name)
        shutil.copy(dataset_dir / "masks" / image.name, data / "masks" / image.name)
    return data


def test_training_job_reports_progress_and_can_be_cancelled(small_dataset, tmp_path):
    data = small_dataset
    out = tmp_path / "model"
    job = training_job(data, out, bundle=REPO / "training" / "lunet", epochs=500)
    try:
        assert _wait_for(lambda: training_progress(out)["epoch"] >= 1 or job.poll() is not None, JOB_TIMEOUT_S), job.output()
        assert job.poll() is None, job.output()
        assert training_progress(out)["loss"] > 0
    finally:
        job.cancel()
    assert job.poll() is not None
    assert not (out / "model.pt").exists()  # cancelled before the end: no half-trained model is published


def test_stopped_training_job_saves_its_model(small_dataset, tmp_path):
    out = tmp_path / "model"
    job = training_job(small_dataset, out, bundle=REPO / "training" / "lunet", epochs=500)
    try:
        assert _wait_for(lambda: training_progress(out)["epoch"] >= 1 or job.poll() is not None, JOB_TIMEOUT_S), job.output()
        job.request_stop()
        assert job.wait(JOB_TIMEOUT_S) in (0, 1), job.output()  # 1: stopped this early, it may fail validation
    finally:
        job.cancel()
    info = load_info(out)
    assert 1 <= info.training["epochs"] < 500 and (out / "model.pt").is_file()


def test_fine_tune_the_shipped_model_then_compare_before_and_after(small_dataset, tmp_path):
    out = tmp_path / "finetuned"
    job = training_job(small_dataset, out, init_weights="median_nerve_unet", epochs=1, name="nerve_ft")
    assert job.wait(JOB_TIMEOUT_S) == 0, job.output()
    shipped, tuned = load_info(REPO / "MedianNerveSeg" / "MedianNerveSegLib" / "pretrained" / "median_nerve_unet"), load_info(out)
    assert (tuned.name, tuned.architecture, tuned.arch_kwargs) == ("nerve_ft", shipped.architecture, shipped.arch_kwargs)
    assert tuned.input_size == shipped.input_size and tuned.training["config"]["learning_rate"] == 2e-4

    job = comparison_job(small_dataset, ["median_nerve_unet", out], tmp_path / "compare")
    assert job.wait(JOB_TIMEOUT_S) == 0, job.output()
    rows = json.loads((tmp_path / "compare" / "comparison.json").read_text())
    assert [r["model"] for r in rows] == ["median_nerve_unet", "finetuned"]
    assert rows[0]["n_images"] == rows[1]["n_images"] >= 1
    assert all(0 <= r["dice_mean"] <= 1 for r in rows)
    assert "| median_nerve_unet | 1.0.0 |" in (tmp_path / "compare" / "comparison.md").read_text()


def test_segmentation_flags_point_at_frames_to_check(dataset_dir, tmp_path):
    from MedianNerveSegLib.jobs import segmentation_flags

    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("L", (606, 468), 0).save(blank)
    image = sorted((dataset_dir / "images").iterdir())[0]
    job = segmentation_job([image, blank], tmp_path / "out", spacing_mm=0.062)
    assert job.wait(JOB_TIMEOUT_S) == 0, job.output()
    flags = segmentation_flags(tmp_path / "out", low_confidence=0.7)
    assert flags["not_found"] == ["blank.png"] and flags["failed"] == []
    assert segmentation_flags(tmp_path / "out", low_confidence=1.01)["low_confidence"] == [image.name]
