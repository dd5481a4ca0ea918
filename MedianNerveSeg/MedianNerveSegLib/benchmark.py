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
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch

from .evaluate import evaluate_folders
from .inference import Segmenter
from .io import read_image, write_mask_png
from .metrics import markdown_table
from .progress import report
from .models import MODEL_REGISTRY, available_models, build_model, is_click_model
from .train import TrainConfig, sample_spacing, split_samples, train
from .zoo import MODEL_JSON, WEIGHTS, ModelInfo, load_info, model_name, resolve_model
from .uncertainty import CsaInterval, csa_interval

TABLE_KEYS = ("dice_mean", "dice_sd", "iou_mean", "precision_mean", "recall_mean", "hd95_mean_mm", "auc_mean",
              "found_rate", "csa_mae_mm2", "csa_icc", "parameters", "cpu_ms", "training_seconds", "epochs")


def evaluate_model(model_dir: Path, samples, spacing_mm: Any = None, device: str = "cpu",
                   out_dir: Optional[Path] = None) -> Dict[str, Any]:
    """The papers' metrics of a model folder on ``samples`` (probability maps give the AUC), written
    to ``out_dir`` (default: the model folder's evaluation/).

    Each sample is segmented at its own spacing (``spacing_mm``, when given, for all); unless all
    share one known spacing, the millimetre and CSA figures are None (the rest is unchanged)."""
    with tempfile.TemporaryDirectory() as tmp:
        pred, gt, probability = (Path(tmp, name) for name in ("pred", "gt", "prob"))
        for folder in (pred, gt, probability):
            folder.mkdir()
        spacings, confidences, _ = predict_samples(Segmenter(model_dir, device), samples, pred, probability, gt,
                                                   spacing_mm)
        spacing = next(iter(spacings)) if len(spacings) == 1 else None
        summary = evaluate_folders(pred, gt, out_dir or Path(model_dir) / "evaluation", spacing,
                                   probability_dir=probability, confidences=confidences)
    return summary if spacing is not None else without_millimetres(summary)


def predict_samples(segmenter: Segmenter, samples, pred_dir: Path, probability_dir: Path, gt_dir: Path,
                    spacing_mm: Any = None, on_sample=None
                    ) -> Tuple[Set[Any], Dict[str, float], Dict[str, Optional[CsaInterval]]]:
    """Segment each sample into ``pred_dir`` (<stem>_mask.png) and ``probability_dir`` (<stem>_prob.npy), with a
    link to its expert mask in ``gt_dir``: the folders evaluate_folders reads. Returns the spacings met, each
    stem's confidence and its CSA interval (uncertainty.py); ``on_sample`` sees each sample before it is
    segmented."""
    spacings, confidences, intervals = set(), {}, {}
    for sample in samples:
        if on_sample:
            on_sample(sample)
        image = read_image(sample.image, sample_spacing(sample, spacing_mm))
        spacings.add(image.spacing_mm)
        prediction = segmenter.predict(image)
        write_mask_png(pred_dir / f"{sample.stem}_mask.png", prediction.mask)
        np.save(probability_dir / f"{sample.stem}_prob.npy", prediction.probability.astype(np.float16))
        (gt_dir / f"{sample.stem}.png").symlink_to(Path(sample.mask).resolve())
        confidences[sample.stem] = prediction.confidence
        intervals[sample.stem] = csa_interval(prediction.band_px, int(prediction.mask.sum()), image.spacing_mm,
                                              prediction.review_width_mm2)
    return spacings, confidences, intervals


def without_millimetres(summary: Dict[str, Any]) -> Dict[str, Any]:
    """A summary with its millimetre and CSA figures None: without one known spacing for all images they would be
    pixels, or a mix of scales, and no millimetre figure is right for all."""
    return {key: None if key.startswith("csa_") or "_mm" in key else value for key, value in summary.items()}


def _timing_segmenter(model_dir: Path) -> Segmenter:
    """The model folder's Segmenter on the CPU; where its weights stayed on the machine that trained
    it (too large to bring back), the same network untrained: time per frame does not depend on the
    weights' values. PyTorch runs both, so that every row is timed on the same runtime."""
    if (Path(model_dir) / WEIGHTS).is_file():
        return Segmenter(model_dir, "cpu", runtime="torch")
    info = load_info(model_dir)
    network = build_model(info.architecture, **info.arch_kwargs).to(memory_format=torch.channels_last)
    return Segmenter.from_network(network, info, "cpu")


def frame_times_ms(model_dir: Path, samples, threads: int = 2, frames: int = 10) -> List[float]:
    """Segmenter time (preprocess, network, post-process) of each frame on this CPU, after a warm-up."""
    torch.set_num_threads(threads)
    segmenter = _timing_segmenter(model_dir)
    images = [read_image(s.image) for s in samples[:frames]]
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
    names = available_models() if models is None else list(models)
    clicks = [name for name in names if name in MODEL_REGISTRY and is_click_model(name)]
    if clicks:
        raise ValueError(f"{', '.join(clicks)}: click models refine masks; train them with train --architecture and "
                         "benchmark them with benchmark-clicks")
    out_dir.mkdir(parents=True, exist_ok=True)
    _, val_samples = split_samples(Path(dataset_dir), base)
    for name in names:
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


def _dataset_names(dataset_dir: Path) -> Set[str]:
    """The names a dataset goes by: its folder's, and a store's own name."""
    names = {Path(dataset_dir).resolve().name}
    datalist = Path(dataset_dir) / "datalist.json"
    if datalist.is_file():
        names.add(str(json.loads(datalist.read_text(encoding="utf-8")).get("name")))
    return names


def training_patients(info: ModelInfo, dataset_dir: Path, patients: Set[str],
                      seen: FrozenSet[str] = frozenset()) -> Tuple[Set[str], bool]:
    """The patients of the dataset (``patients``) that a model was trained on, those of the model it was
    fine-tuned from included, and whether its model.json tells them all.

    model.json records ``train_patients``; older ones record only ``val_patients``, which tell the
    rest of the dataset when it is the one the model was trained on (the same name, or shared
    validation patients)."""
    record = info.training or {}
    if "train_patients" in record:
        trained, known = set(record["train_patients"]) & patients, True
    elif "val_patients" in record and (Path(str(record.get("dataset", ""))).name in _dataset_names(dataset_dir)
                                       or patients & set(record["val_patients"])):
        trained, known = patients - set(record["val_patients"]), True
    else:
        trained, known = set(), False
    parent = (record.get("config") or {}).get("init_weights")
    if parent and str(parent) not in seen:
        if not (Path(parent) / MODEL_JSON).is_file():
            return trained, False
        inherited, parent_known = training_patients(load_info(Path(parent)), dataset_dir, patients,
                                                    seen | {str(parent)})
        trained, known = trained | inherited, known and parent_known
    return trained, known


def _comparison_notes(dataset_dir: Path, n_images: int, n_dropped: int, dropped_patients: Set[str],
                      unchecked: Sequence[str]) -> List[str]:
    notes = [f"Evaluated on {n_images} validation images of {dataset_dir}; {n_dropped} more were left out: "
             f"patients that a model was trained on ({', '.join(sorted(dropped_patients)) or 'none'})."]
    notes += [f"Warning: {name}'s model.json does not tell all its training patients in this dataset "
              f"(or those of the model it was fine-tuned from): it may have been trained on some of "
              f"these images." for name in unchecked]
    return notes


def compare_models(dataset_dir: Path, models: Sequence[str], out_dir: Path, spacing_mm: Any = None,
                   device: str = "cpu") -> List[Dict[str, Any]]:
    """Each model's metrics on the dataset's validation patients (a store's own split) that none of the
    models was trained on, side by side: the before/after view of a fine-tune. Each sample is measured
    at its own spacing (``spacing_mm``, when given, for all). Writes comparison.json and comparison.md."""
    train_samples, val_samples = split_samples(Path(dataset_dir), TrainConfig())
    if not val_samples:
        raise ValueError(f"{dataset_dir}: no validation samples to compare on (add labels of more patients)")
    patients = {s.patient for s in train_samples + val_samples}
    folders = [resolve_model(model) for model in models]
    infos = [load_info(folder) for folder in folders]
    trained = [training_patients(info, Path(dataset_dir), patients) for info in infos]
    excluded = set().union(*(patients_of_model for patients_of_model, _ in trained))
    samples = [s for s in val_samples if s.patient not in excluded]
    if not samples:
        raise ValueError(f"{dataset_dir}: every validation patient was used to train one of the models; "
                         f"nothing left to compare on")
    dropped = {s.patient for s in val_samples} - {s.patient for s in samples}
    unchecked = [model_name(folder) for folder, (_, known) in zip(folders, trained) if not known]
    out_dir = Path(out_dir)
    rows = []
    for index, (folder, info) in enumerate(zip(folders, infos)):
        report("compare", index, len(folders), model=model_name(folder))
        summary = evaluate_model(folder, samples, spacing_mm, device, out_dir / f"{index}_{model_name(folder)}")
        rows.append({"model": model_name(folder), "version": info.version, "n_images": len(samples),
                     "n_images_dropped": len(val_samples) - len(samples), "dropped_patients": sorted(dropped),
                     "training_patients_known": trained[index][1],
                     **{key: summary.get(key) for key in COMPARISON_KEYS}})
    report("compare", len(folders), len(folders))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "comparison.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = markdown_table(rows, ("n_images",) + COMPARISON_KEYS, text=(("model", "model"), ("version", "version")))
    notes = _comparison_notes(dataset_dir, len(samples), len(val_samples) - len(samples), dropped, unchecked)
    (out_dir / "comparison.md").write_text(table + "\n" + "\n\n".join(notes) + "\n")
    return rows


def write_table(rows: List[Dict[str, Any]], out_dir: Path) -> None:
    rows = sorted(rows, key=lambda r: -(r.get("dice_mean") or 0))
    (out_dir / "benchmark.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = markdown_table(rows, TABLE_KEYS, text_after=(("training_device", "trained on"),))
    (out_dir / "benchmark.md").write_text(table)
