"""Long work (segmenting a clip, training, comparing) in a subprocess, so a GUI stays responsive.

A job runs one ``median-nerve-seg`` command in a child Python whose environment makes this
package importable whatever the install route (Slicer puts a module folder of *Additional
module paths* on its own ``sys.path`` only). A reader thread copies the child's output to the
job's log and keeps its latest structured progress line (:mod:`progress`). Cancel ends the
whole process tree: inside Slicer ``sys.executable`` is the PythonSlicer launcher, whose
child (python-real) does the work. Nothing here imports Qt.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from . import progress
from .results import RESULTS_FILE, read_results

PathLike = Union[str, Path]
PACKAGE_PARENT = Path(__file__).resolve().parent.parent  # the folder that holds MedianNerveSegLib


def child_environment(base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """``base`` (default: this process's environment) with this package's folder first on PYTHONPATH
    and structured progress lines switched on."""
    env = dict(os.environ if base is None else base)
    paths = [str(PACKAGE_PARENT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env[progress.PROGRESS_ENV] = "1"
    return env


class BackgroundJob:
    """A command in a child process group; its output in ``log_path``, its latest progress in ``progress``."""

    def __init__(self, command: Sequence[str], log_path: PathLike, stop_file: Optional[PathLike] = None,
                 env: Optional[Mapping[str, str]] = None, cwd: Optional[PathLike] = None):
        self.command = [str(a) for a in command]
        self.log_path = Path(log_path)
        self.stop_file = Path(stop_file) if stop_file else None
        self.env, self.cwd = env, cwd
        self.progress: Dict[str, Any] = {}
        self.process: Optional[subprocess.Popen] = None
        self._reader: Optional[threading.Thread] = None

    def start(self) -> "BackgroundJob":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Own process group, so that cancel reaches the launcher's children; no console window on Windows
        # (as slicer.util.launchConsoleProcess).
        group = ({"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
                 if os.name == "nt" else {"start_new_session": True})
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=child_environment(self.env), cwd=self.cwd,
                                        **group)
        self._reader = threading.Thread(target=self._read, name="MedianNerveSeg job output", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        with open(self.log_path, "wb") as log:
            for raw in self.process.stdout:
                record = progress.parse(raw.decode("utf-8", errors="replace"))
                if record is not None:
                    self.progress = record
                else:
                    log.write(raw)
                    log.flush()

    def poll(self) -> Optional[int]:
        """None while running, else the exit code (after the last output line is logged)."""
        if self.process is None or self.process.poll() is None:
            return None
        self._reader.join(timeout=5.0)  # a grandchild holding the pipe open must not block the caller
        return self.process.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        self.process.wait(timeout)
        return self.poll()

    def request_stop(self) -> None:
        """Ask the job to finish early and keep its result (a training saves the model after the current
        epoch); a job without a stop file is cancelled."""
        if self.stop_file is None:
            self.cancel()
        else:  # the folder may not exist yet when Stop comes before the first epoch
            self.stop_file.parent.mkdir(parents=True, exist_ok=True)
            self.stop_file.touch()

    def cancel(self, grace_s: float = 5.0) -> None:
        """End the job's whole process tree (SIGTERM, then SIGKILL after ``grace_s``) and wait for it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self._signal_tree(signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        self._signal_tree(signal.SIGKILL if os.name != "nt" else None)  # children that outlived their parent
        self.process.wait()
        self._reader.join(timeout=5.0)

    def _signal_tree(self, sig) -> None:
        if os.name == "nt":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self.process.pid)], capture_output=True)
            return
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass  # the group is gone

    def output(self, last_lines: int = 20) -> str:
        """The end of the job's output (errors are reported there, one line each)."""
        if not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-last_lines:])


@dataclass
class Runner:
    """Starts the jobs: ``python -m MedianNerveSegLib ARGS``. Swapped for a fake in tests; ``python``
    is the interpreter command, ``env`` the base environment (default: this process's)."""

    python: Sequence[str] = field(default_factory=lambda: [sys.executable])
    env: Optional[Mapping[str, str]] = None
    cwd: Optional[PathLike] = None

    def start(self, args: Sequence[str], log_path: PathLike, stop_file: Optional[PathLike] = None) -> BackgroundJob:
        command = [*self.python, "-m", "MedianNerveSegLib", *map(str, args)]
        return BackgroundJob(command, log_path, stop_file, self.env, self.cwd).start()


DEFAULT_RUNNER = Runner()


def segmentation_job(inputs: Sequence[PathLike], out_dir: PathLike, model: Optional[str] = None,
                     spacing_mm: Optional[float] = None, device: str = "cpu",
                     runner: Runner = DEFAULT_RUNNER, runtime: str = "auto") -> BackgroundJob:
    """``segment`` on files (e.g. the frames of a clip saved by the GUI); results land in out_dir."""
    args: List[str] = ["segment", *map(str, inputs), "--out", str(out_dir), "--device", device,
                       "--runtime", runtime]
    if model:
        args += ["--model", str(model)]
    if spacing_mm:
        args += ["--spacing", str(spacing_mm)]
    return runner.start(args, Path(out_dir) / "segment.log")


def training_job(dataset: PathLike, out_dir: PathLike, bundle: Optional[PathLike] = None,
                 init_weights: Optional[PathLike] = None, epochs: Optional[int] = None,
                 device: str = "cpu", architecture: Optional[str] = None, name: Optional[str] = None,
                 runner: Runner = DEFAULT_RUNNER) -> BackgroundJob:
    """``train`` (from a bundle when given, fine-tuning ``init_weights`` when given); ``request_stop()``
    ends it after the current epoch with the model saved."""
    out_dir = Path(out_dir)
    stop_file = out_dir / "STOP"
    args: List[str] = ["train", "--dataset", str(dataset), "--out", str(out_dir), "--device", device,
                       "--stop-file", str(stop_file)]
    for option, value in (("--bundle", bundle), ("--init-weights", init_weights), ("--epochs", epochs),
                          ("--architecture", architecture), ("--name", name)):
        if value is not None:
            args += [option, str(value)]
    if stop_file.exists():
        stop_file.unlink()
    return runner.start(args, out_dir / "train.log", stop_file)


def comparison_job(dataset: PathLike, models: Sequence[PathLike], out_dir: PathLike,
                   spacing_mm: Optional[float] = None, device: str = "cpu",
                   runner: Runner = DEFAULT_RUNNER) -> BackgroundJob:
    """``compare``: the models' metrics on the dataset's validation patients (comparison.json in out_dir),
    each image at its own spacing unless ``spacing_mm`` is given."""
    args = ["compare", "--dataset", str(dataset), "--models", *map(str, models), "--out", str(out_dir),
            "--device", device] + (["--spacing", str(spacing_mm)] if spacing_mm else [])
    return runner.start(args, Path(out_dir) / "compare.log")


def segmentation_flags(out_dir: PathLike, low_confidence: float) -> Dict[str, List[str]]:
    """Inputs of a finished ``segment`` job to draw the user's eye to: an error, no nerve found, or a
    confidence below ``low_confidence`` (from its results file, in input order)."""
    rows = read_results(Path(out_dir) / RESULTS_FILE)
    flags: Dict[str, List[str]] = {"failed": [], "not_found": [], "low_confidence": []}
    clips = {image for image in (r.image for r in rows) if sum(r.image == image for r in rows) > 1}
    for row in rows:
        name = Path(row.image).name + (f" frame {row.frame}" if row.image in clips else "")
        if row.error:
            flags["failed"].append(f"{name}: {row.error}")
        elif not row.found:
            flags["not_found"].append(name)
        elif row.confidence is not None and row.confidence < low_confidence:
            flags["low_confidence"].append(name)
    return flags
