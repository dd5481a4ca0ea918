"""Tasks (explicit states, progress, result, cleanup) with fake runners, on a real MRML scene where one is needed."""

import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from MedianNerveSegLib.tasks import ComparisonTask, TaskState, TrainingTask

from conftest import REPO, SPACING


class FakeJob:
    """What a runner returns: ends with ``code`` when ``end`` is called (or at once); records calls."""

    def __init__(self, log_path, stop_file=None, code=None, output="", events=None):
        self.log_path, self.stop_file, self.code, self._output = Path(log_path), stop_file, code, output
        self.progress, self.events = {}, events if events is not None else []

    def poll(self):
        return self.code

    def cancel(self):
        self.events.append("cancel")
        self.code = -15

    def request_stop(self):  # the real job's, on a job that never started
        from MedianNerveSegLib.jobs import BackgroundJob

        self.events.append("stop")
        BackgroundJob([], self.log_path, self.stop_file).request_stop()

    def output(self, last_lines=20):
        return self._output


class InProcessRunner:
    """Runs the command line in this process, to its end, as the job's child would."""

    def __init__(self):
        self.calls = []

    def start(self, args, log_path, stop_file=None):
        from MedianNerveSegLib.cli import main

        self.calls.append(list(args))
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = main([str(a) for a in args])
        return FakeJob(log_path, stop_file, code, out.getvalue())


class ScriptedRunner:
    """A job that runs until the test ends it."""

    def __init__(self, events=None):
        self.events, self.jobs = events if events is not None else [], []

    def start(self, args, log_path, stop_file=None):
        self.jobs.append(FakeJob(log_path, stop_file, events=self.events))
        return self.jobs[-1]


def test_training_task_states_progress_and_stop(tmp_path):
    runner = ScriptedRunner()
    task = TrainingTask(tmp_path / "store", tmp_path / "model", epochs=30, runner=runner)
    job = runner.jobs[0]
    assert task.poll() is TaskState.RUNNING and task.progress().text == "Preparing the training..."
    job.progress = {"task": "train", "done": 3, "total": 30, "loss": 0.41234, "dice_mean": 0.8123}
    assert task.progress() == type(task.progress())(3, 30, "Epoch 3 of 30, loss 0.412, validation Dice 0.812")
    task.stop()
    assert task.state is TaskState.STOPPING and (tmp_path / "model" / "STOP").is_file()
    job.code = 0
    assert task.poll() is TaskState.SUCCEEDED and task.result == tmp_path / "model"


def test_a_failed_training_is_failed_with_its_output(tmp_path):
    runner = ScriptedRunner()
    task = TrainingTask(tmp_path / "store", tmp_path / "model", epochs=5, runner=runner)
    runner.jobs[0].code, runner.jobs[0]._output = 1, "error: training failed: the nerve was found in 0%"
    assert task.poll() is TaskState.FAILED and "found in 0%" in task.error and task.result is None


def test_comparison_task_reads_its_rows(tmp_path):
    runner = ScriptedRunner()
    task = ComparisonTask(tmp_path / "store", ["a", "b"], tmp_path / "cmp", runner=runner)
    runner.jobs[0].progress = {"task": "compare", "done": 1, "total": 2, "model": "b"}
    assert task.progress().text == "Comparing model 2 of 2 (b) on the validation patients..."
    (tmp_path / "cmp").mkdir()
    (tmp_path / "cmp" / "comparison.json").write_text(json.dumps([{"model": "a"}, {"model": "b"}]))
    runner.jobs[0].code = 0
    assert task.poll() is TaskState.SUCCEEDED and [r["model"] for r in task.result] == ["a", "b"]
    runner.jobs[0].code = 3  # a finished task stays finished
    assert task.poll() is TaskState.SUCCEEDED


# ----------------------------------------------------------------------------- on a real scene

slicer = pytest.importorskip("slicer")
sys.path.insert(0, str(REPO / "MedianNerveSeg"))

from MedianNerveSegLib.runtime import openvino_installed  # noqa: E402
from MedianNerveSegLib.zoo import load_info  # noqa: E402
from MedianNerveSegSlicer.logic import ATTR_MODEL_VERSION  # noqa: E402
from MedianNerveSegSlicer.tasks import ClipSegmentationTask  # noqa: E402
from test_slicer_logic import Mrml  # noqa: E402


@pytest.fixture()
def clip(dataset_dir, tmp_path):
    frame = np.asarray(Image.open(dataset_dir / "images" / "Pz001-001.png").convert("L"))
    path = tmp_path / "Pz001-clip.tif"
    frames = [Image.fromarray(np.roll(frame, 20 * k, axis=1)) for k in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    mrml = Mrml()
    return mrml, mrml.logic.load_image(path, spacing_mm=SPACING)


def test_clip_task_segments_every_frame_into_the_scene_and_cleans_up(clip):
    mrml, volume = clip
    runner = InProcessRunner()
    task = ClipSegmentationTask(mrml.logic, volume, runner=runner)
    assert runner.calls[0][0] == "segment" and len(task.frames) == 3
    assert task.poll() is TaskState.SUCCEEDED, task.error
    assert task.result.table.GetNumberOfRows() == 3 and task.result.flags["failed"] == []
    assert mrml.sequences.GetFirstBrowserNodeForProxyNode(task.result.segmentation) is not None
    assert not task.work.exists()


def test_cancelling_a_clip_task_ends_the_job_before_removing_its_folder(clip):
    mrml, volume = clip
    events = []
    task = ClipSegmentationTask(mrml.logic, volume, runner=ScriptedRunner(events))
    original = task.cleanup
    task.cleanup = lambda: (events.append("cleanup" if task.work.exists() else "cleanup of nothing"), original())
    task.cancel()
    assert task.state is TaskState.CANCELLED and events == ["cancel", "cleanup"] and not task.work.exists()
    task.cancel()
    assert events == ["cancel", "cleanup"]  # once


def test_a_clip_task_whose_job_fails_keeps_the_scene_unchanged(clip):
    mrml, volume = clip
    runner = ScriptedRunner()
    task = ClipSegmentationTask(mrml.logic, volume, runner=runner)
    n_nodes = mrml.scene.GetNumberOfNodes()
    runner.jobs[0].code, runner.jobs[0]._output = 2, "error: no model"
    assert task.poll() is TaskState.FAILED and task.error == "error: no model"
    assert mrml.scene.GetNumberOfNodes() == n_nodes and not task.work.exists()


@pytest.mark.skipif(not openvino_installed(), reason="openvino is not installed")
def test_a_clip_task_on_the_int8_network_runs_it_and_says_so(clip):
    mrml, volume = clip
    runner = InProcessRunner()
    task = ClipSegmentationTask(mrml.logic, volume, runner=runner, runtime="openvino-int8")
    args = runner.calls[0]
    assert args[args.index("--runtime") + 1] == "openvino-int8"
    assert task.poll() is TaskState.SUCCEEDED, task.error
    browser = mrml.sequences.GetFirstBrowserNodeForProxyNode(task.result.segmentation)
    browser.SetSelectedItemNumber(1)
    assert task.result.segmentation.GetAttribute(ATTR_MODEL_VERSION) == f"{load_info(task.model_dir).version}+int8"
