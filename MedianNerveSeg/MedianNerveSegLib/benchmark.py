"""Every registry architecture trained under the same budget on the same patient split,
evaluated with the papers' metrics, timed on the CPU, in one table.

Resumable: a model whose OUT/<model>/result.json exists is not trained again, so the
training can run on a GPU machine and the CPU timing and table on the user's machine.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .evaluate import evaluate_folders
from .inference import Segmenter
from .io import read_image, write_mask_png
from .models import available_models, build_model
from .train import TrainConfig, split_samples, train
from .zoo import MODEL_JSON, WEIGHTS, load_info, model_name, resolve_model

TABLE_COLUMNS = [("model", "model"), ("dice_mean", "DSC"), ("dice_sd", "DSC SD"), ("iou_mean", "IoU"),
                 ("precision_mean", "precision"), ("recall_mean", "recall"), ("hd95_mean_mm", "HD95 mm"),
                 ("auc_mean", "AUC"), ("found_rate", "found"), ("csa_mae_mm2", "CSA MAE mm2"),
                 ("csa_icc", "ICC"), ("parameters", "params"), ("cpu_ms", "CPU ms/frame"),
                 ("training_seconds", "train s"), ("epochs", "epochs"), ("training_device", "trained on")]


def evaluate_model(model_dir: Path, samples, spacing_mm: float, device: str = "cpu",
                   out_dir: Optional[Path] = None) -> Dict[str, Any]:
    """The papers' metrics of a model folder on ``samples`` (probability maps give the AUC), written
    to ``out_dir`` (default: the model folder's evaluation/)."""
    segmenter = Segmenter(model_dir, device)
    spacing = (spacing_mm, spacing_mm)
    with tempfile.TemporaryDirectory() as tmp:
        pred, gt, probability = (Path(tmp, name) for name in ("pred", "gt", "prob"))
        for folder in (pred, gt, probability):
            folder.mkdir()
        confidences = {}
        for sample in samples:
            prediction = segmenter.predict(read_image(sample.image, spacing))
            write_mask_png(pred / f"{sample.stem}_mask.png", prediction.mask)
            np.save(probability / f"{sample.stem}_prob.npy", prediction.probability.astype(np.float16))
            (gt / f"{sample.stem}.png").symlink_to(Path(sample.mask).resolve())
            confidences[sample.stem] = prediction.confidence
        return evaluate_folders(pred, gt, out_dir or Path(model_dir) / "evaluation", spacing,
                                probability_dir=probability, confidences=confidences)


def _timing_segmenter(model_dir: Path) -> Segmenter:
    """The model folder's Segmenter on the CPU; where its weights stayed on the machine that trained
    it (too large to bring back), the same network untrained: time per frame does not depend on the
    weights' values."""
    if (Path(model_dir) / WEIGHTS).is_file():
        return Segmenter(model_dir, "cpu")
    info = load_info(model_dir)
    network = build_model(info.architecture, **info.arch_kwargs).to(memory_format=torch.channels_last)
    return Segmenter.from_network(network, info, "cpu")


def frame_times_ms(model_dir: Path, samples, threads: int = 2, frames: int = 10) -> List[float]:
    """Segmenter time (preprocess, network, post-process) of each frame on this CPU, after a warm-up."""
    torch.set_num_threads(threads)
    segmenter = _timing_segmenter(model_dir)
    images = [read_image(s.image, 0.062) for s in samples[:frames]]
    segmenter.predict(images[0])
    times = []
    for image in images:
        start = time.perf_counter()
        segmenter.predict(image)
        times.append(1000 * (time.perf_counter() - start))
    return times


def cpu_ms_per_frame(model_dir: Path, samples, threads: int = 2, frames: int = 10) -> float:
    """Median Segmenter time per frame on this CPU."""
    return round(statistics.median(frame_times_ms(model_dir, samples, threads, frames)), 1)


def run_benchmark(dataset_dir: Path, out_dir: Path, base: TrainConfig, models: Optional[Sequence[str]] = None,
                  cpu_timing: bool = True, log: Callable[[str], None] = print,
                  trained: Sequence[Path] = ()) -> List[Dict[str, Any]]:
    """Train (unless done), evaluate and time each model; write benchmark.json and benchmark.md.

    ``trained`` model folders (trained elsewhere, e.g. the shipped model) join the table on the
    same validation patients, with their own training device, time and epochs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _, val_samples = split_samples(Path(dataset_dir), base)
    for name in available_models() if models is None else models:
        if not (out_dir / name / "result.json").is_file():
            log(f"== {name}")
            train(dataset_dir, out_dir / name, replace(base, architecture=name, name=name, arch_kwargs={}), log)
            _write_result(out_dir / name, out_dir / name, val_samples, base)
    for folder in map(Path, trained):
        if not (out_dir / model_name(folder) / "result.json").is_file():
            log(f"== {model_name(folder)} (trained)")
            _write_result(folder, out_dir / model_name(folder), val_samples, base)
    rows = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*/result.json"))]
    for row in rows:
        if cpu_timing and "cpu_ms" not in row:
            row["cpu_ms"] = cpu_ms_per_frame(_local_model_dir(row, out_dir), val_samples)
            (out_dir / row["model"] / "result.json").write_text(json.dumps(row, indent=2) + "\n")
    write_table(rows, out_dir)
    return rows


def _local_model_dir(row: Dict[str, Any], out_dir: Path) -> Path:
    """A result's model folder: where it was trained, or OUT/<model> when the results were trained
    on another machine and copied here."""
    folder = Path(row.get("model_dir") or out_dir / row["model"])
    return folder if (folder / MODEL_JSON).is_file() else out_dir / row["model"]


def _write_result(model_dir: Path, result_dir: Path, val_samples, base: TrainConfig) -> None:
    """result.json of a trained model folder: its held-out metrics and how it was trained."""
    info = load_info(model_dir)
    summary = evaluate_model(model_dir, val_samples, base.spacing_mm, base.device, result_dir / "evaluation")
    result = {"model": model_name(model_dir), "model_dir": str(model_dir.resolve()), "architecture": info.architecture,
              "parameters": info.training.get("parameters"), "epochs": info.training.get("epochs"),
              "training_seconds": info.training.get("seconds"), "training_device": info.training.get("device"),
              **summary}
    (result_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")


COMPARISON_KEYS = ("dice_mean", "dice_sd", "iou_mean", "hd95_mean_mm", "found_rate", "csa_mae_mm2", "csa_bias_mm2",
                   "csa_icc")


def compare_models(dataset_dir: Path, models: Sequence[str], out_dir: Path, spacing_mm: float = 0.062,
                   device: str = "cpu") -> List[Dict[str, Any]]:
    """Each model's metrics on the dataset's validation patients (a store's own split), side by side:
    the before/after view of a fine-tune. Writes comparison.json and comparison.md."""
    _, val_samples = split_samples(Path(dataset_dir), TrainConfig(spacing_mm=spacing_mm))
    if not val_samples:
        raise ValueError(f"{dataset_dir}: no validation samples to compare on (add labels of more patients)")
    out_dir = Path(out_dir)
    rows = []
    for index, model in enumerate(models):
        folder = resolve_model(model)
        info = load_info(folder)
        summary = evaluate_model(folder, val_samples, spacing_mm, device, out_dir / f"{index}_{model_name(folder)}")
        rows.append({"model": model_name(folder), "version": info.version, "n_images": len(val_samples),
                     **{key: summary.get(key) for key in COMPARISON_KEYS}})
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "comparison.json").write_text(json.dumps(rows, indent=2) + "\n")
    columns = [("model", "model"), ("version", "version"), ("n_images", "images"), ("dice_mean", "DSC"),
               ("iou_mean", "IoU"), ("hd95_mean_mm", "HD95 mm"), ("found_rate", "found"),
               ("csa_mae_mm2", "CSA MAE mm2"), ("csa_bias_mm2", "CSA bias mm2"), ("csa_icc", "ICC")]
    (out_dir / "comparison.md").write_text(_markdown(rows, columns))
    return rows


def write_table(rows: List[Dict[str, Any]], out_dir: Path) -> None:
    rows = sorted(rows, key=lambda r: -(r.get("dice_mean") or 0))
    (out_dir / "benchmark.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out_dir / "benchmark.md").write_text(_markdown(rows, TABLE_COLUMNS))


def _markdown(rows: List[Dict[str, Any]], columns: Sequence[Tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(key)) for key, _ in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)
