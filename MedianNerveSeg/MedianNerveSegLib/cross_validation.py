"""``cross-validate``: models trained on patient folds (``train --folds N --fold K``), each scored on the fold it was
validated on, and the figures over every image they validated together (pooled), with each fold's beside them:
a benchmark over all images instead of one 41-image split, and the spread that tells a better recipe from luck.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from .benchmark import COMPARISON_KEYS
from .data import list_samples
from .evaluate import evaluate_folders
from .inference import Segmenter
from .io import read_image, write_mask_png
from .metrics import markdown_table
from .progress import report
from .train import sample_spacing
from .zoo import load_info, model_name, resolve_model


def _fold_samples(models: Sequence[Path], samples) -> List[list]:
    """Each model's validation samples (its model.json's ``val_patients``); refused when a model records none, was
    trained on a patient it validates, or validates a patient another model validates too."""
    folds, owner = [], {}
    for folder in models:
        training = load_info(folder).training or {}
        validated = set(training.get("val_patients") or ())
        if not validated:
            raise ValueError(f"{folder}: model.json names no validation patients: train it with --folds N --fold K")
        both = validated & set(training.get("train_patients") or ())
        if both:
            raise ValueError(f"{folder}: trained on patients it validates ({', '.join(sorted(both)[:3])})")
        for patient in validated:
            if patient in owner:
                raise ValueError(f"{folder} and {owner[patient]} both validate patient {patient}: give one model "
                                 "per fold of the same folds")
            owner[patient] = folder
        fold = [s for s in samples if s.patient in validated]
        if not fold:
            raise ValueError(f"{folder}: none of its validation patients is in this dataset")
        folds.append(fold)
    return folds


def cross_validate(dataset_dir: Path, models: Sequence[str], out_dir: Path, spacing_mm: Any = None,
                   device: str = "cpu") -> Dict[str, Any]:
    """Score each fold model on its validation patients; write ``predictions/``, ``pooled/`` and ``fold_<k>/``
    evaluations (metrics.csv, summary.json, report.md, plots) and cross_validation.json/.md to ``out_dir``, which
    must not hold a cross-validation already."""
    out_dir = Path(out_dir)
    if (out_dir / "cross_validation.json").exists():
        raise FileExistsError(f"{out_dir} holds a cross-validation: give another --out (nothing is written over)")
    samples = list_samples(Path(dataset_dir))
    folders = [resolve_model(model) for model in models]
    folds = _fold_samples(folders, samples)
    predictions, truth = out_dir / "predictions", out_dir / "truth"
    for folder in (predictions, truth):
        folder.mkdir(parents=True, exist_ok=True)
    spacings, confidences = set(), {}
    total, done = sum(map(len, folds)), 0
    for folder, fold in zip(folders, folds):
        segmenter = Segmenter(folder, device)
        for sample in fold:
            report("cross-validate", done, total, image=sample.image.name)
            image = read_image(sample.image, sample_spacing(sample, spacing_mm))
            spacings.add(image.spacing_mm)
            prediction = segmenter.predict(image)
            write_mask_png(predictions / f"{sample.stem}_mask.png", prediction.mask)
            np.save(predictions / f"{sample.stem}_prob.npy", prediction.probability.astype(np.float16))
            link = truth / f"{sample.stem}.png"
            if not link.exists():
                link.symlink_to(Path(sample.mask).resolve())
            confidences[sample.stem] = prediction.confidence
            done += 1
    report("cross-validate", total, total)
    spacing = next(iter(spacings)) if len(spacings) == 1 else None
    rows = []
    for index, (folder, fold) in enumerate(zip(folders, folds)):
        fold_truth = out_dir / f"fold_{index}" / "truth"
        fold_truth.mkdir(parents=True, exist_ok=True)
        for sample in fold:
            (fold_truth / f"{sample.stem}.png").symlink_to(Path(sample.mask).resolve())
        summary = evaluate_folders(predictions, fold_truth, out_dir / f"fold_{index}", spacing, confidences=confidences)
        rows.append({"model": model_name(folder), "version": load_info(folder).version, "n_images": len(fold),
                     **{key: summary.get(key) for key in COMPARISON_KEYS}})
    pooled = evaluate_folders(predictions, truth, out_dir / "pooled", spacing, confidences=confidences)
    validated = {s.stem for fold in folds for s in fold}
    result = {"dataset": str(dataset_dir), "n_images": len(validated), "n_images_in_dataset": len(samples),
              "not_validated": sorted(s.stem for s in samples if s.stem not in validated),
              "folds": rows, "pooled": {key: pooled.get(key) for key in COMPARISON_KEYS},
              "spread": {key: _spread([row[key] for row in rows]) for key in COMPARISON_KEYS}}
    (out_dir / "cross_validation.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "cross_validation.md").write_text(markdown(result))
    return result


def _spread(values: Sequence[Any]) -> Dict[str, Any]:
    """The mean, SD, lowest and highest of a figure across folds (None where a fold has none)."""
    known = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if len(known) < len(values) or not known:
        return {"mean": None, "sd": None, "min": None, "max": None}
    return {"mean": float(np.mean(known)), "sd": float(np.std(known, ddof=1)) if len(known) > 1 else None,
            "min": min(known), "max": max(known)}


def markdown(result: Dict[str, Any]) -> str:
    rows = [dict(row, model=f"fold {index}: {row['model']}") for index, row in enumerate(result["folds"])]
    rows.append({"model": "all folds, pooled", "version": "", "n_images": result["n_images"], **result["pooled"]})
    table = markdown_table(rows, ("n_images",) + COMPARISON_KEYS)
    spread = ", ".join(f"{key} {s['mean']:.3f} +- {s['sd']:.3f} ({s['min']:.3f}-{s['max']:.3f})"
                       for key, s in result["spread"].items() if s["sd"] is not None)
    missing = result["not_validated"]
    return (f"Patient-level cross-validation on {result['dataset']}: {result['n_images']} of "
            f"{result['n_images_in_dataset']} images validated, each by the one model that did not train on its "
            f"patient.\n\n{table}\nAcross folds (mean +- SD, range): {spread or 'one fold only'}.\n"
            + (f"\nNot validated by any fold: {len(missing)} image(s) ({', '.join(missing[:5])}"
               f"{', ...' if len(missing) > 5 else ''}).\n" if missing else ""))
