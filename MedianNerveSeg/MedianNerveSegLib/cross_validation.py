"""``cross-validate``: models trained on patient folds (``train --folds N --fold K``), each scored on the fold it was
validated on, and the figures over every image they validated together (pooled), with each fold's beside them:
a benchmark over all images instead of one 41-image split, and the spread that tells a better recipe from luck.
Several models of one fold (other recipes on the same folds) are scored as their ensemble (inference.Ensemble).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .benchmark import COMPARISON_KEYS, predict_samples, without_millimetres
from .dataset import fold_samples
from .evaluate import evaluate_folders
from .inference import segmenter_of
from .metrics import markdown_table
from .progress import report
from .results import ENSEMBLE_JOIN
from .uncertainty import BAND, ERROR_LIMIT_MM2, CsaInterval, flag_performance, width_catching
from .zoo import load_info, resolve_model


def _fold_models(folders: Sequence[Path], samples) -> List[Tuple[int, List[Path], list]]:
    """(fold number, its models, validation samples) of each fold, by fold number: several models of one fold are
    scored as their ensemble. Refused unless every model was trained with ``--folds N --fold K`` on the same N
    folds of the same seed, none twice, none trained on a patient it validates and none validating a patient
    that is not in this dataset."""
    folds: Dict[int, Tuple[List[Path], list]] = {}
    kinds = set()
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
        number = int(config.get("fold") or 0)
        models, first = folds.setdefault(number, ([], fold))
        if any(Path(folder).resolve() == Path(m).resolve() for m in models):
            raise ValueError(f"fold {number} is given twice: {folder}")
        if fold != first:  # an ensemble is scored on patients none of its members trained on
            raise ValueError(f"{folder}: validates other patients than {models[0]}, of the same fold {number}")
        models.append(Path(folder))
    if len(kinds) > 1:
        raise ValueError("--models come from different folds (folds, seed: "
                         f"{'; '.join(f'{n}, {seed}' for n, seed in sorted(kinds))}): give the models of one set")
    return [(number, *folds[number]) for number in sorted(folds)]


def cross_validate(dataset_dir: Path, models: Sequence[str], out_dir: Path, spacing_mm: Any = None,
                   device: str = "cpu") -> Dict[str, Any]:
    """Score each fold model on its validation patients; write ``predictions/``, ``pooled/`` and ``fold_<k>/``
    evaluations (metrics.csv, summary.json, report.md, plots) and cross_validation.json/.md to ``out_dir``, which
    must not hold a cross-validation already."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} is not an empty folder: give a new --out (nothing is written over)")
    samples = fold_samples(dataset_dir)
    fold_models = _fold_models([resolve_model(model) for model in models], samples)
    numbers = [number for number, _, _ in fold_models]
    folders = [models for _, models, _ in fold_models]
    folds = [fold for _, _, fold in fold_models]
    predictions, truth = out_dir / "predictions", out_dir / "truth"
    for folder in (predictions, truth):
        folder.mkdir(parents=True, exist_ok=True)
    spacings, confidences, intervals = set(), {}, {}
    total, done = sum(map(len, folds)), []

    def progress(sample) -> None:
        report("cross-validate", len(done), total, image=sample.image.name)
        done.append(sample)

    for folder, fold in zip(folders, folds):
        met, known, bands = predict_samples(segmenter_of(folder, device), fold, predictions, predictions, truth,
                                            spacing_mm, on_sample=progress)
        spacings |= met
        confidences.update(known)
        intervals.update(bands)
    report("cross-validate", total, total)
    spacing = next(iter(spacings)) if len(spacings) == 1 else None
    rows, label = [], _labels([f for members in folders for f in members])
    for index, folder, fold in zip(numbers, folders, folds):
        fold_truth = out_dir / f"fold_{index}" / "truth"
        fold_truth.mkdir(parents=True, exist_ok=True)
        for sample in fold:
            (fold_truth / f"{sample.stem}.png").symlink_to(Path(sample.mask).resolve())
        summary = evaluate_folders(predictions, fold_truth, out_dir / f"fold_{index}", spacing, confidences=confidences)
        rows.append({"fold": index, "model": ENSEMBLE_JOIN.join(map(label.get, folder)),
                     "version": ENSEMBLE_JOIN.join(load_info(f).version for f in folder),
                     "n_images": len(fold) - int(summary.get("n_errors") or 0),
                     "n_errors": int(summary.get("n_errors") or 0), **_figures(summary, spacing)})
    pooled = evaluate_folders(predictions, truth, out_dir / "pooled", spacing, confidences=confidences)
    validated = {s.stem for fold in folds for s in fold}
    result = {"dataset": str(dataset_dir), "n_images": len(validated) - int(pooled.get("n_errors") or 0),
              "n_images_in_dataset": len(samples), "n_errors": int(pooled.get("n_errors") or 0),
              "errors": pooled.get("errors") or [], "spacing_mm": spacing,
              "not_validated": sorted(s.stem for s in samples if s.stem not in validated),
              "folds": rows, "pooled": _figures(pooled, spacing),
              "spread": {key: _spread([row[key] for row in rows]) for key in COMPARISON_KEYS},
              "review": _review(out_dir / "pooled" / "metrics.csv", intervals, {s.stem: n for n, _, fold in fold_models
                                                                                for s in fold}) if spacing else None}
    (out_dir / "cross_validation.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "cross_validation.md").write_text(markdown(result))
    return result


def _labels(folders: Sequence[Path]) -> Dict[Path, str]:
    """Each model's name in the table: its folder's name (a bundle's for its models/), with as many folders above
    it as tell it from the others (two recipes' runs both name their folds fold_<k>)."""
    named = {f: (f.resolve().parent if f.name == "models" else f.resolve()) for f in folders}
    labels = {}
    for folder, path in named.items():
        others = [other for other in set(named.values()) if other != path]  # whole paths differ: this ends
        depth = next(d for d in itertools.count(1) if all(o.parts[-d:] != path.parts[-d:] for o in others))
        labels[folder] = Path(*path.parts[-depth:]).as_posix()
    return labels


def _figures(summary: Dict[str, Any], spacing: Any) -> Dict[str, Any]:
    """The comparison figures of an evaluation, without millimetre ones unless one spacing is known for all."""
    summary = summary if spacing is not None else without_millimetres(summary)
    return {key: summary.get(key) for key in COMPARISON_KEYS}


def _review(metrics_csv: Path, intervals: Dict[str, Optional[CsaInterval]], fold_of: Dict[str, int]
            ) -> Dict[str, Any]:
    """How the interval and the "review" flag do on the validated images where the nerve was found: how often the
    expert's CSA lies in the interval, and how the flag sorts the images by CSA error, at the shipped width and at
    the width that catches 90% of the large errors chosen on the other folds only (no fold's flag saw its own)."""
    with open(metrics_csv, newline="") as handle:
        scored = [row for row in csv.DictReader(handle)
                  if row["csa_error_mm2"] and intervals.get(row["image"]) is not None]
    truth = {row["image"]: float(row["csa_gt_mm2"]) for row in scored}
    errors = {row["image"]: float(row["csa_error_mm2"]) for row in scored}
    stems = sorted(truth)
    error_list, widths = [errors[s] for s in stems], [intervals[s].width_mm2 for s in stems]
    chosen = {}
    for fold in sorted({fold_of[stem] for stem in stems}):
        others = [i for i, stem in enumerate(stems) if fold_of[stem] != fold]
        chosen[fold] = width_catching([error_list[i] for i in others], [widths[i] for i in others])
    flagged = [chosen[fold_of[s]] is not None and w >= chosen[fold_of[s]] for s, w in zip(stems, widths)]
    large = [abs(e) > ERROR_LIMIT_MM2 for e in error_list]
    n_large, n_others = sum(large), len(stems) - sum(large)
    return {"n_images": len(stems),
            "truth_in_interval": float(np.mean([intervals[s].low_mm2 <= truth[s] <= intervals[s].high_mm2
                                                for s in stems])) if stems else None,
            "mean_width_mm2": float(np.mean(widths)) if widths else None,
            "shipped": flag_performance(error_list, widths, [intervals[s].review_width_mm2 for s in stems]),
            "chosen_on_other_folds": {
                "n_large_errors": n_large, "n_others": n_others,
                "caught": sum(f and l for f, l in zip(flagged, large)) / n_large if n_large else None,
                "others_flagged": sum(f and not l for f, l in zip(flagged, large)) / n_others if n_others else None,
                "widths_mm2": {str(fold): width for fold, width in chosen.items()}}}


def _spread(values: Sequence[Any]) -> Dict[str, Any]:
    """The mean, SD, lowest and highest of a figure across folds (None where a fold has none)."""
    known = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if len(known) < len(values) or not known:
        return {"mean": None, "sd": None, "min": None, "max": None}
    return {"mean": float(np.mean(known)), "sd": float(np.std(known, ddof=1)) if len(known) > 1 else None,
            "min": min(known), "max": max(known)}


def _percent(share: Optional[float]) -> str:
    return "n/a" if share is None else f"{100 * share:.0f}%"


def _widths(width: Union[float, List[float]]) -> str:
    return f"{width:g}" if isinstance(width, (int, float)) else " / ".join(f"{w:g}" for w in width)


def _review_markdown(review: Optional[Dict[str, Any]]) -> str:
    if not review or not review["n_images"]:
        return ""
    shipped, chosen = review["shipped"], review["chosen_on_other_folds"]
    widths = ", ".join(f"{w:.2f}" for w in chosen["widths_mm2"].values() if w is not None) or "n/a"
    return (f"\nCSA interval (the CSA at probability thresholds {BAND[1]:g} and {BAND[0]:g}) on the "
            f"{review['n_images']} images with a nerve found: mean width {review['mean_width_mm2']:.2f} mm^2; the "
            f"expert's CSA lies in it for {_percent(review['truth_in_interval'])}. The \"review\" flag (width >= "
            f"{_widths(shipped['width_mm2'])} mm^2, the models') catches {_percent(shipped['caught'])} of the "
            f"{shipped['n_large_errors']} images with a CSA error > {shipped['limit_mm2']:g} mm^2 and flags "
            f"{_percent(shipped['others_flagged'])} of the other {shipped['n_others']}. With the width chosen on the "
            f"other folds to catch 90% ({widths} mm^2): catches "
            f"{_percent(chosen['caught'])}, flags {_percent(chosen['others_flagged'])} of the others.\n")


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
            + _review_markdown(result.get("review"))
            + (f"\n{result['n_errors']} image(s) could not be scored: {'; '.join(result['errors'][:3])}.\n"
               if result["n_errors"] else "")
            + (f"\nNot validated by any fold: {len(missing)} image(s) ({', '.join(missing[:5])}"
               f"{', ...' if len(missing) > 5 else ''}).\n" if missing else ""))
