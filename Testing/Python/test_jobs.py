"""Background jobs: the command line in a subprocess, with progress and cancel."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from MedianNerveSegLib.jobs import BackgroundJob, Runner, comparison_job, segmentation_job, training_job
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
    assert job.progress == {"task": "segment", "done": 2, "total": 2}  # from its structured progress lines
    assert (tmp_path / "out" / "measurements.csv").is_file() and "@progress" not in job.output()


def _site_packages():
    import site

    return [p for p in site.getsitepackages() if Path(p).is_dir()]


def test_a_job_imports_the_core_where_only_the_parent_can(dataset_dir, tmp_path):
    """Slicer's Additional module paths put the module folder on Slicer's own sys.path only: a child
    Python started without it (here: -S, so the editable install's .pth is not read either, from
    another working directory) must still import the core."""
    isolated = Runner(python=[sys.executable, "-S"], env={"PYTHONPATH": os.pathsep.join(_site_packages()),
                                                          "PATH": os.environ.get("PATH", "")}, cwd=tmp_path)
    probe = subprocess.run([sys.executable, "-S", "-c", "import MedianNerveSegLib"], cwd=tmp_path,
                           env=isolated.env, capture_output=True)
    assert probe.returncode != 0  # the situation is reproduced: without the job's environment, no core
    image = sorted((dataset_dir / "images").iterdir())[0]
    job = segmentation_job([image], tmp_path / "out", spacing_mm=0.062, runner=isolated)
    assert job.wait(JOB_TIMEOUT_S) == 0, job.output()


def test_cancel_ends_the_whole_process_tree(tmp_path):
    """Inside Slicer the job's process is the PythonSlicer launcher and python-real its child."""
    launcher = ("import subprocess, sys, time\n"
                "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
                "print(child.pid, flush=True)\n"
                "time.sleep(600)\n")
    job = BackgroundJob([sys.executable, "-c", launcher], tmp_path / "job.log").start()
    assert _wait_for(lambda: (tmp_path / "job.log").is_file() and (tmp_path / "job.log").read_text().strip(), 60)
    child = int((tmp_path / "job.log").read_text().split()[0])
    job.cancel()
    assert job.poll() is not None
    assert _wait_for(lambda: not _alive(child), 30), "the launcher's child outlived the cancel"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")  # a zombie has ended; only its parent's wait is missing
    return not (status.is_file() and "\nState:\tZ" in status.read_text())


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
        assert _wait_for(lambda: job.progress.get("done", 0) >= 1 or job.poll() is not None, JOB_TIMEOUT_S), job.output()
        assert job.poll() is None, job.output()
        assert job.progress["task"] == "train" and job.progress["total"] == 500 and job.progress["loss"] > 0
    finally:
        job.cancel()
    assert job.poll() is not None
    assert not (out / "model.pt").exists()  # cancelled before the end: no half-trained model is published


def test_stopped_training_job_saves_its_model(small_dataset, tmp_path):
    out = tmp_path / "model"
    job = training_job(small_dataset, out, bundle=REPO / "training" / "lunet", epochs=500)
    try:
        assert _wait_for(lambda: job.progress.get("done", 0) >= 1 or job.poll() is not None, JOB_TIMEOUT_S), job.output()
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
