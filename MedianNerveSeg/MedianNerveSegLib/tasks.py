"""Tasks: a background job (:mod:`jobs`) with explicit states, progress text and a result.

A task is RUNNING from its start until its process ends; then SUCCEEDED (its ``finish`` built
the result), FAILED (``error`` says why) or, after ``cancel``, CANCELLED. ``stop`` asks a
training to end after the current epoch and keep its model (STOPPING until it does). Its
``cleanup`` runs once, only after the process tree has ended. The caller polls (the Slicer
widget from a QTimer); nothing here imports Qt, and the jobs come from a swappable runner.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

from .jobs import DEFAULT_RUNNER, BackgroundJob, Runner, comparison_job, training_job

PathLike = Union[str, Path]


class TaskState(enum.Enum):
    RUNNING = "running"
    STOPPING = "stopping"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class TaskProgress:
    """``done`` of ``total`` steps (``total`` 0: no count, a busy indicator) and a line for the user."""

    done: int
    total: int
    text: str


class Task:
    """The states, progress and result of one background job; subclasses say what its steps are."""

    ok_codes: Sequence[int] = (0,)

    def __init__(self, job: BackgroundJob) -> None:
        self.job = job
        self.state = TaskState.RUNNING
        self.result: Any = None
        self.error = ""

    @property
    def active(self) -> bool:
        return self.state in (TaskState.RUNNING, TaskState.STOPPING)

    def poll(self) -> TaskState:
        """Advance the state when the process has ended (then ``finish`` or the error, then ``cleanup``)."""
        if self.active:
            code = self.job.poll()
            if code is not None:
                self._end(code)
        return self.state

    def _end(self, code: int) -> None:
        try:
            if code in self.ok_codes:
                self.result = self.finish(code)
                self.state = TaskState.SUCCEEDED
            else:
                self.error = self.job.output() or f"exit code {code}"
                self.state = TaskState.FAILED
        except Exception as error:  # a result that cannot be taken in is a failure the user sees
            self.error = str(error) or type(error).__name__
            self.state = TaskState.FAILED
        finally:
            self.cleanup()

    def cancel(self) -> None:
        """End the whole process tree, then clean up."""
        if self.active:
            self.job.cancel()
            self.state = TaskState.CANCELLED
            self.cleanup()

    def stop(self) -> None:
        """Finish early keeping the result (a training saves its model); a task without that is cancelled."""
        if self.active:
            if self.job.stop_file is None:
                self.cancel()
            else:
                self.job.request_stop()
                self.state = TaskState.STOPPING

    def progress(self) -> TaskProgress:
        record = self.job.progress
        return TaskProgress(int(record.get("done", 0)), int(record.get("total", 0)), self.describe(record))

    def describe(self, record: dict) -> str:
        return "Working..."

    def finish(self, code: int) -> Any:
        """The result of a process that ended with one of ``ok_codes``."""
        return None

    def cleanup(self) -> None:
        """Remove what only the task needed (called once, after the process has ended)."""


class TrainingTask(Task):
    """``train`` into ``out_dir``; the result is the model folder."""

    def __init__(self, dataset: PathLike, out_dir: PathLike, epochs: int, bundle: Optional[PathLike] = None,
                 init_weights: Optional[PathLike] = None, device: str = "cpu", architecture: Optional[str] = None,
                 name: Optional[str] = None, runner: Runner = DEFAULT_RUNNER) -> None:
        self.out_dir, self.epochs = Path(out_dir), epochs
        super().__init__(training_job(dataset, out_dir, bundle, init_weights, epochs, device, architecture, name,
                                      runner))

    def describe(self, record: dict) -> str:
        if record.get("task") != "train":
            return "Preparing the training..."
        text = f"Epoch {record['done']} of {record['total']}"
        if "loss" in record:
            text += f", loss {record['loss']:.3f}"
        if "dice_mean" in record:
            text += f", validation Dice {record['dice_mean']:.3f}"
        return ("Stopping after this epoch... " if self.state is TaskState.STOPPING else "") + text

    def finish(self, code: int) -> Path:
        return self.out_dir


class ComparisonTask(Task):
    """``compare`` the models on the store's validation patients; the result is comparison.json's rows."""

    def __init__(self, dataset: PathLike, models: Sequence[PathLike], out_dir: PathLike, device: str = "cpu",
                 runner: Runner = DEFAULT_RUNNER) -> None:
        self.out_dir = Path(out_dir)
        super().__init__(comparison_job(dataset, models, out_dir, device=device, runner=runner))

    def describe(self, record: dict) -> str:
        model = f" ({record['model']})" if record.get("model") else ""
        return f"Comparing model {min(record.get('done', 0) + 1, record.get('total', 1))} of " \
               f"{record.get('total', '?')}{model} on the validation patients..."

    def finish(self, code: int) -> List[dict]:
        return json.loads((self.out_dir / "comparison.json").read_text())
