"""``evaluate-classifiers``: CTS classifiers and the CSA rule on the same held-out patients, with the figures of
Shinohara et al. 2022 (accuracy, precision, recall, specificity, F-measure, ROC AUC, bootstrap 95 % CIs that
resample patients, the confusion matrix) and DeLong's test of each classifier against the CSA rule.

The CSA rule calls the positive class when the CSA that the segmenter measures reaches the cut-off (10 mm^2 at
the inlet); its ROC curve is that of the CSA itself. Labels come from a CSV of diagnoses; on the shared dataset,
which has none, from the surrogate "expert CSA >= 10 mm^2", against which the CSA rule measures almost the same
quantity as the label: there it shows how well the segmenter measures, not how well CSA diagnoses.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .benchmark import training_patients
from .classify import Classifier, read_labels, surrogate_labels, surrogate_settings
from .diagnostic import RATES, delong_test, diagnostic_summary, roc_curve
from .inference import Segmenter
from .io import read_image
from .progress import report
from .spacing import parse_spacing
from .train import TrainConfig, sample_spacing, split_samples
from .zoo import DEFAULT_MODEL, load_info, model_name

CSA_RULE = "CSA rule"
# Table 1 of Shinohara et al. 2022 (their own diagnosed test hands, 95 % CIs omitted): a guide, not our data.
PAPER = {"SqueezeNet": {"accuracy": 0.943, "precision": 0.957, "recall": 0.943, "specificity": 0.937,
                        "f_measure": 0.950, "auc": 0.978},
         "MobileNetV2": {"accuracy": 0.941, "precision": 0.961, "recall": 0.937, "specificity": 0.953,
                         "f_measure": 0.949, "auc": 0.964},
         "EfficientNet": {"accuracy": 0.959, "precision": 0.998, "recall": 0.935, "specificity": 0.997,
                          "f_measure": 0.965, "auc": 0.998}}
LABELS = {"accuracy": "accuracy", "precision": "precision", "recall": "recall (sensitivity)",
          "specificity": "specificity", "f_measure": "F-measure", "auc": "ROC AUC"}


def evaluate_classifiers(dataset_dir: Path, out_dir: Path, models: Sequence[str], labels_csv: Optional[str] = None,
                         surrogate_csa_mm2: Optional[float] = None, spacing_mm: Any = None,
                         segmenter: Optional[str] = None, cutoff_mm2: float = 10.0, device: str = "cpu",
                         resamples: int = 2000) -> Dict[str, Any]:
    """Evaluate ``models`` and the CSA rule on the validation patients that none of them (nor the segmenter) was
    trained on; write classifiers.json, classifiers.md, per_image.csv and roc.png to ``out_dir``."""
    train_samples, val_samples = split_samples(Path(dataset_dir), TrainConfig())
    everything = list(train_samples) + list(val_samples)
    if labels_csv:
        labels, source = read_labels(labels_csv, everything), f"diagnoses ({labels_csv})"
    elif surrogate_csa_mm2 is not None:
        labels = surrogate_labels(everything, parse_spacing(spacing_mm, "--spacing"), surrogate_csa_mm2)
        source = surrogate_settings(surrogate_csa_mm2).label_source
    else:
        raise ValueError("give --labels CSV (image or patient, label: CTS or control) or --surrogate-csa MM2")
    seg = Segmenter(segmenter or DEFAULT_MODEL, device)
    classifiers = [Classifier(m, device, seg.model_dir) for m in models]
    names = [model_name(c.model_dir) for c in classifiers]
    if len(set(names)) < len(names):
        raise ValueError(f"--models: two models are named {', '.join(sorted({n for n in names if names.count(n) > 1}))}"
                         "; give each a folder of its own name")
    if (Path(out_dir) / "classifiers.json").exists():
        raise FileExistsError(f"{out_dir} holds an evaluation (classifiers.json): give another --out (nothing is "
                              "written over)")
    patients = {s.patient for s in everything}
    excluded, known = set(), True
    for folder in [seg.model_dir] + [c.model_dir for c in classifiers]:
        trained, told = training_patients(load_info(folder), Path(dataset_dir), patients)
        excluded |= trained
        known &= told
    samples = [s for s in val_samples if s.image.stem in labels and s.patient not in excluded]
    truth = np.array([labels[s.image.stem] for s in samples], bool)
    if not samples or truth.all() or not truth.any():
        raise ValueError(f"{dataset_dir}: the held-out patients none of the models learnt from need labelled images "
                         f"of both classes ({int(truth.sum())} positive of {len(samples)})")
    rows = _score(samples, truth, seg, classifiers, spacing_mm)
    groups = [r["patient"] for r in rows]
    scores = {name: np.array([r[name] for r in rows]) for name in names}
    csa = np.array([r["csa_mm2"] for r in rows])
    results: Dict[str, Any] = {}
    for name, classifier in zip(names, classifiers):
        results[name] = {**diagnostic_summary(truth, scores[name], classifier.info.threshold, groups, resamples),
                         "model": f"{classifier.model_id}, {classifier.info.architecture}",
                         "delong_vs_csa_rule": delong_test(truth, scores[name], csa)}
    results[CSA_RULE] = {**diagnostic_summary(truth, csa, cutoff_mm2, groups, resamples),
                         "model": f"{seg.model_id}, CSA >= {cutoff_mm2:g} mm2"}
    summary = {"dataset": str(dataset_dir), "labels": source, "n_images": len(rows),
               "n_patients": len(set(groups)), "n_positive": int(truth.sum()), "cutoff_mm2": cutoff_mm2,
               "segmenter": seg.model_id, "training_patients_known": known, "resamples": resamples,
               "results": results, "paper": PAPER}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "classifiers.json").write_text(json.dumps(summary, indent=2, default=_plain) + "\n")
    _write_rows(rows, out_dir / "per_image.csv")
    (out_dir / "classifiers.md").write_text(markdown(summary))
    title = (f"{len(rows)} held-out images of {len(set(groups))} patients, {int(truth.sum())} positive\n"
             f"positive: {source}")
    plot_roc(truth, {**{f"{name} ({c.info.architecture})" if name != c.info.architecture else name: scores[name]
                        for name, c in zip(names, classifiers)}, f"{CSA_RULE} ({seg.model_id})": csa},
             results, out_dir / "roc.png", title)
    return summary


def _score(samples, truth: np.ndarray, seg: Segmenter, classifiers: Sequence[Classifier],
           spacing_mm: Any) -> List[Dict[str, Any]]:
    """Per held-out image: its patient, its label (1: positive), the segmenter's CSA and each classifier's
    probability."""
    rows = []
    for index, (sample, positive) in enumerate(zip(samples, truth)):
        report("evaluate-classifiers", index, len(samples), image=sample.image.name)
        image = read_image(sample.image, spacing_mm=sample_spacing(sample, spacing_mm))
        if image.spacing_mm is None:
            raise ValueError(f"{sample.image}: the CSA rule and the 15 mm crop need the pixel spacing: give --spacing")
        mask = seg.predict(image).mask
        row = {"image": sample.image.name, "patient": sample.patient, "positive": int(positive),
               "csa_mm2": float(mask.sum() * image.spacing_mm[0] * image.spacing_mm[1])}
        try:
            for classifier in classifiers:
                row[model_name(classifier.model_dir)] = classifier.classify(image).probability
        except ValueError as error:  # no nerve to crop around: the held-out set cannot be scored as it is
            raise ValueError(f"{sample.image}: {error}") from None
        rows.append(row)
    report("evaluate-classifiers", len(samples), len(samples))
    return rows


def _plain(value: Any) -> Any:
    return float(value) if isinstance(value, (np.floating, np.integer)) else str(value)


def _write_rows(rows: Sequence[Dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _with_ci(value: float, ci: Sequence[float]) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.3f} ({ci[0]:.3f}-{ci[1]:.3f})" if not math.isnan(ci[0]) else f"{value:.3f}"


def markdown(summary: Dict[str, Any]) -> str:
    """The table of Shinohara et al.'s Table 1 for each classifier and the CSA rule, the paper's own figures below."""
    keys = list(RATES) + ["auc"]
    head = ["", "n", "TP / FP / FN / TN"] + [LABELS[k] for k in keys] + ["DeLong vs CSA rule"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in summary["results"].items():
        delong = r.get("delong_vs_csa_rule")
        cell = ("-" if not delong else f"p = {delong['p_value']:.3f} (AUC {delong['auc_a']:.3f} vs {delong['auc_b']:.3f})"
                if not math.isnan(delong["p_value"]) else "-")
        lines.append("| " + " | ".join([f"{name} ({r['model']})", str(r["n"]),
                                        f"{r['tp']} / {r['fp']} / {r['fn']} / {r['tn']}"]
                                       + [_with_ci(r[k], r[f"{k}_ci"]) for k in keys] + [cell]) + " |")
    test_set = "20 test hands (10 CTS, 10 control), 100 frames each"
    paper = ["| " + " | ".join(["Shinohara et al. 2022: " + name, test_set, "-"] + [f"{figures[k]:.3f}" for k in keys]
                               + ["-"]) + " |"
             for name, figures in summary["paper"].items()]
    return (f"Held-out patients: {summary['n_images']} images of {summary['n_patients']} patients that neither the "
            f"classifiers nor the segmenter ({summary['segmenter']}) learnt from; {summary['n_positive']} positive. "
            f"Labels: {summary['labels']}. Calls at each classifier's threshold (probability >= 0.5 unless its "
            f"model.json says otherwise) and CSA >= "
            f"{summary['cutoff_mm2']:g} mm2 measured by the segmenter (the CSA rule, whose ROC curve is that of the "
            f"CSA). 95 % CIs: percentile bootstrap over patients ({summary['resamples']} resamples); DeLong's test "
            "of each classifier's ROC AUC against the CSA's, on the same images.\n\n"
            + "\n".join(lines) + "\n\nThe paper's own figures, on its own diagnosed hands (another scanner and "
            "centre, transfer learning from ImageNet), for orientation only:\n\n" + "\n".join(lines[:2] + paper) + "\n"
            + ("" if summary["training_patients_known"] else
               "\nWarning: a model's model.json does not tell all its training patients: it may have seen some of "
               "these images.\n"))


def plot_roc(truth: np.ndarray, scores: Dict[str, np.ndarray], results: Dict[str, Any], path: Path,
             title: str) -> None:
    """Each ROC curve with its AUC and 95 % CI, the chance diagonal; ``title`` says n and what positive means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.6, 5.2))
    for (name, values), result in zip(scores.items(), results.values()):
        fpr, tpr = roc_curve(truth, values)
        low, high = result["auc_ci"]
        axis.plot(fpr, tpr, drawstyle="steps-post", label=f"{name}: AUC {result['auc']:.3f} ({low:.3f}-{high:.3f})")
    axis.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
    axis.set_xlabel("1 - specificity (false positive rate)")
    axis.set_ylabel("sensitivity (true positive rate)")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.01)
    axis.set_title(title, fontsize=8)
    axis.legend(loc="lower right", fontsize=7)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
