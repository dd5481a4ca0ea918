"""Background jobs: the command line in a subprocess, with progress and cancel."""

import shutil
import time

from MedianNerveSegLib.jobs import segmentation_job, segmentation_progress, training_job, training_progress

from conftest import REPO


def _wait_for(condition, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_segmentation_job_segments_in_the_background(dataset_dir, tmp_path):
    images = sorted((dataset_dir / "images").iterdir())[:2]
    job = segmentation_job(images, tmp_path / "out", spacing_mm=0.062)
    assert job.wait(180) == 0, job.output()
    assert segmentation_progress(tmp_path / "out", 2) == {"done": 2, "total": 2}
    assert (tmp_path / "out" / "measurements.csv").is_file()


def test_failed_job_reports_its_error_line(tmp_path):
    job = segmentation_job([tmp_path / "missing.png"], tmp_path / "out")
    assert job.wait(120) == 2
    assert "missing.png" in job.output()


def test_training_job_reports_progress_and_can_be_cancelled(dataset_dir, tmp_path):
    data = tmp_path / "data"
    for folder in ("images", "masks"):
        (data / folder).mkdir(parents=True)
    for image in sorted((dataset_dir / "images").iterdir())[:10]:
        shutil.copy(image, data / "images" / image.name)
        shutil.copy(dataset_dir / "masks" / image.name, data / "masks" / image.name)
    out = tmp_path / "model"
    job = training_job(data, out, bundle=REPO / "training" / "lunet", epochs=500)
    try:
        assert _wait_for(lambda: training_progress(out)["epoch"] >= 1 or job.poll() is not None, 240), job.output()
        assert job.poll() is None, job.output()
        assert training_progress(out)["loss"] > 0
    finally:
        job.cancel()
    assert job.poll() is not None
    assert not (out / "model.pt").exists()  # cancelled before the end: no half-trained model is published
