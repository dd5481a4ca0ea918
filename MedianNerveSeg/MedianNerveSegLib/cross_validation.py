"""``cross-validate``: models trained on patient folds (``train --folds N --fold K``), each scored on the fold it was
validated on, and the figures over every image they validated together (pooled), with each fold's beside them:
a benchmark over all images instead of one 41-image split, and the spread that tells a better recipe from luck.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from .benchmark import COMPARISON_KEYS, predict_samples, without_millimetres
from .data import list_samples
from .evaluate import evaluate_folders
from .inference import Segmenter
from .metrics import markdown_table
from .progress import report
from .zoo import load_info, model_name, resolve_model


def _fold_models(folders: Sequence[Path], samples) -> List[Tuple[int, Path, list]]:
    """(fold number, model, validation samples) of each model, by fold number. Refused unless every model was
    trained with ``--folds N --fold K`` on the same N folds of the same seed, each fold once, none trained on a
    patient it validates and none validating a patient that is not in this dataset."""
    folds, kinds = [], set()
    for folder in folders:
        training = load_info(folder).training or {}
        config = training.get("config") or {}
        if int(config.get("folds") or 0) < 2:
            raise ValueError(f"{folder}: not a fold model (train it with --folds N --fold K)")
        kinds.add((int(config["folds"]), int(config.get("seed") or 0)))
        validated = set(training.get("val_patients") or ())
        both = validated & set(training.get("train_patients") or ())
        if both:
            raise ValueError(f"{folder}: trained on patients it validates ({', '.join(sorted(both)[:3])})")
        fold = [s for s in samples if s.patient in validated]
        if not fold:
            raise ValueError(f"{folder}: none of its validation patients is in this dataset")
        folds.append((int(config.get("fold") or 0), Path(folder), fold))
    if len(kinds) > 1:
        raise ValueError("--models come from different folds (folds, seed: "
                         f"{'; '.join(f'{n}, {seed}' for n, seed in sorted(kinds))}): give the models of one set")
    numbers = [number for number, _, _ in folds]
    repeated = sorted({n for n in numbers if numbers.count(n) > 1})
    if repeated:
        raise ValueError(f"fold {repeated[0]} is given twice: give one model per fold")
    return sorted(folds, key=lambda item: item[0])


def cross_validate(dataset_dir: Path, models: Sequence[str], out_dir: Path, spacing_mm: Any = None,
                   device: str = "cpu") -> Dict[str, Any]:
    """Score each fold model on its validation patients; write ``predictions/``, ``pooled/`` and ``fold_<k>/``
    evaluations (metrics.csv, summary.json, report.md, plots) and cross_validation.json/.md to ``out_dir``, which
    must not hold a cross-validation already."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} is not an empty folder: give a new --out (nothing is written over)")
    samples = list_samples(Path(dataset_dir))
    fold_models = _fold_models([resolve_model(model) for model in models], samples)
    numbers = [number for number, _, _ in fold_models]
    folders = [folder for _, folder, _ in fold_models]
    folds = [fold for _, _, fold in fold_models]
    predictions, truth = out_dir / "predictions", out_dir / "truth"
    for folder in (predictions, truth):
        folder.mkdir(parents=True, exist_ok=True)
    spacings, confidences = set(), {}
    total, done = sum(map(len, folds)), []

    def progress(sample) -> None:
        report("cross-validate", len(done), total, image=sample.image.name)
        done.append(sample)

    for folder, fold in zip(folders, folds):
        met, known = predict_samples(Segmenter(folder, device), fold, predictions, predictions, truth, spacing_mm,
                                     on_sample=progress)
        spacings |= met
        confidences.update(known)
    report("cross-validate", total, total)
    spacing = next(iter(spacings)) if len(spacings) == 1 else None
    rows = []
    for index, folder, fold in zip(numbers, folders, folds):
        fold_truth = out_dir / f"fold_{index}" / "truth"
        fold_truth.mkdir(parents=True, exist_ok=True)
        for sample in fold:
            (fold_truth / f"{sample.stem}.png").symlink_to(Path(sample.mask).resolve())
        summary = evaluate_folders(predictions, fold_truth, out_dir / f"fold_{index}", spacing, confidences=confidences)
        rows.append({"fold": index, "model": model_name(folder), "version": load_info(folder).version,
                     "n_images": len(fold) - int(summary.get("n_errors") or 0),
                     "n_errors": int(summary.get("n_errors") or 0), **_figures(summary, spacing)})
    pooled = evaluate_folders(predictions, truth, out_dir / "pooled", spacing, confidences=confidences)
    validated = {s.stem for fold in folds for s in fold}
    result = {"dataset": str(dataset_dir), "n_images": len(validated) - int(pooled.get("n_errors") or 0),
              "n_images_in_dataset": len(samples), "n_errors": int(pooled.get("n_errors") or 0),
              "errors": pooled.get("errors") or [], "spacing_mm": spacing,
              "not_validated": sorted(s.stem for s in samples if s.stem not in validated),
              "folds": rows, "pooled": _figures(pooled, spacing),
              "spread": {key: _spread([row[key] for row in rows]) for key in COMPARISON_KEYS}}
    (out_dir / "cross_validation.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "cross_validation.md").write_text(markdown(result))
    return result


def _figures(summary: Dict[str, Any], spacing: Any) -> Dict[str, Any]:
    """The comparison figures of an evaluation, without millimetre ones unless one spacing is known for all."""
    summary = summary if spacing is not None else without_millimetres(summary)
    return {key: summary.get(key) for key in COMPARISON_KEYS}


def _spread(values: Sequence[Any]) -> Dict[str, Any]:
    """The mean, SD, lowest and highest of a figure across folds (None where a fold has none)."""
    known = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if len(known) < len(values) or not known:
        return {"mean": None, "sd": None, "min": None, "max": None}
    return {"mean": float(np.mean(known)), "sd": float(np.std(known, ddof=1)) if len(known) > 1 else None,
            "min": min(known), "max": max(known)}


def markdown(result: Dict[str, Any]) -> str:
    rows = [dict(row, model=f"fold {row['fold']}: {row['model']}") for row in result["folds"]]
    rows.append({"model": "all folds, pooled", "version": "", "n_images": result["n_images"], **result["pooled"]})
    table = markdown_table(rows, ("n_images",) + COMPARISON_KEYS)
    spread = ", ".join(f"{key} {s['mean']:.3f} +- {s['sd']:.3f} ({s['min']:.3f} to {s['max']:.3f})"
                       for key, s in result["spread"].items() if s["sd"] is not None)
    missing = result["not_validated"]
    return (f"Patient-level cross-validation on {result['dataset']}: {result['n_images']} of "
            f"{result['n_images_in_dataset']} images validated, each by the one model that did not train on its "
            f"patient.\n\n{table}\nAcross folds (mean +- SD, range): {spread or 'one fold only'}.\n"
            + ("" if result["spacing_mm"] else "\nNo single known pixel spacing (give --spacing): no millimetre "
               "or CSA figure.\n")
            + (f"\n{result['n_errors']} image(s) could not be scored: {'; '.join(result['errors'][:3])}.\n"
               if result["n_errors"] else "")
            + (f"\nNot validated by any fold: {len(missing)} image(s) ({', '.join(missing[:5])}"
               f"{', ...' if len(missing) > 5 else ''}).\n" if missing else ""))
