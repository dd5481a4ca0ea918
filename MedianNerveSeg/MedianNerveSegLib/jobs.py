"""Long work (segmenting a clip, training) in a subprocess, so a GUI stays responsive.

A job runs one ``median-nerve-seg`` command with this interpreter; the caller polls it (the
Slicer widget from a QTimer), reads its progress, and can cancel it. Nothing here imports Qt.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from .results import RESULTS_FILE, read_results

PathLike = Union[str, Path]


class BackgroundJob:
    """``python -m MedianNerveSegLib ARGS`` in a subprocess, its output in ``log_path``."""

    def __init__(self, args: Sequence[str], log_path: PathLike, stop_file: Optional[PathLike] = None):
        self.args = [str(a) for a in args]
        self.log_path = Path(log_path)
        self.stop_file = Path(stop_file) if stop_file else None
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> "BackgroundJob":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "MedianNerveSegLib", *self.args],
                                            stdout=log, stderr=subprocess.STDOUT)
        return self

    def poll(self) -> Optional[int]:
        """None while running, else the exit code."""
        return None if self.process is None else self.process.poll()

    def wait(self, timeout: Optional[float] = None) -> int:
        return self.process.wait(timeout)

    def request_stop(self) -> None:
        """Ask the job to finish early and keep its result (a training saves the model after the current
        epoch); a job without a stop file is cancelled."""
        if self.stop_file is None:
            self.cancel()
        else:
            self.stop_file.touch()

    def cancel(self, grace_s: float = 5.0) -> None:
        """Stop the job: terminate, then kill if it has not ended after ``grace_s``."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def output(self, last_lines: int = 20) -> str:
        """The end of the job's output (errors are reported there, one line each)."""
        if not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-last_lines:])


def segmentation_job(inputs: Sequence[PathLike], out_dir: PathLike, model: Optional[str] = None,
                     spacing_mm: Optional[float] = None, device: str = "cpu") -> BackgroundJob:
    """``segment`` on files (e.g. the frames of a clip saved by the GUI); results land in out_dir."""
    args: List[str] = ["segment", *map(str, inputs), "--out", str(out_dir), "--device", device]
    if model:
        args += ["--model", str(model)]
    if spacing_mm:
        args += ["--spacing", str(spacing_mm)]
    return BackgroundJob(args, Path(out_dir) / "segment.log").start()


def training_job(dataset: PathLike, out_dir: PathLike, bundle: Optional[PathLike] = None,
                 init_weights: Optional[PathLike] = None, epochs: Optional[int] = None,
                 device: str = "cpu", architecture: Optional[str] = None, name: Optional[str] = None) -> BackgroundJob:
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
    return BackgroundJob(args, out_dir / "train.log", stop_file).start()


def comparison_job(dataset: PathLike, models: Sequence[PathLike], out_dir: PathLike,
                   spacing_mm: Optional[float] = None, device: str = "cpu") -> BackgroundJob:
    """``compare``: the models' metrics on the dataset's validation patients (comparison.json in out_dir),
    each image at its own spacing unless ``spacing_mm`` is given."""
    args = ["compare", "--dataset", str(dataset), "--models", *map(str, models), "--out", str(out_dir),
            "--device", device] + (["--spacing", str(spacing_mm)] if spacing_mm else [])
    return BackgroundJob(args, Path(out_dir) / "compare.log").start()


def training_progress(out_dir: PathLike) -> Dict[str, Any]:
    """The latest epoch of a running or finished training: epoch, loss and last validation Dice."""
    log = Path(out_dir) / "training_log.csv"
    if not log.is_file():
        return {"epoch": 0}
    with open(log, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {"epoch": 0}
    validated = [r for r in rows if r.get("dice_mean")]
    progress: Dict[str, Any] = {"epoch": int(rows[-1]["epoch"]), "loss": float(rows[-1]["loss"])}
    if validated:
        progress["dice_mean"] = float(validated[-1]["dice_mean"])
    return progress


def segmentation_progress(out_dir: PathLike, n_inputs: int) -> Dict[str, Any]:
    """Input files done so far (the results file gets a row per frame as it is produced)."""
    path = Path(out_dir) / RESULTS_FILE
    done = len({r.image for r in read_results(path)}) if path.is_file() else 0
    return {"done": done, "total": n_inputs}


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
