"""``benchmark-clicks``: the click simulation on a dataset's validation patients, for a click model and the
naive baseline, from the segmenter's masks.

Each validation image starts from the segmenter's mask; the simulated user clicks where the mask is most
wrong (:func:`clicks.next_click`), 20 times (fewer only when the mask equals the expert's). Reported: mean DSC
and CSA MAE after 0, 1, 2, 3 and 5 clicks, NoC@90 and NoC@95 (clicks to reach that DSC, 20 when never),
and ms per click, next to a baseline whose click only keeps or drops whole components of the segmenter's
output (:func:`refine.toggle_components`), so that the gain of the click model is visible.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .benchmark import training_patients
from .evaluate import dice
from .inference import Segmenter
from .io import read_image, read_mask
from .progress import report
from .refine import Refiner, clicks_to_reach, simulate_clicks, toggle_components
from .speed import hardware
from .train import TrainConfig, sample_spacing, split_samples
from .zoo import DEFAULT_MODEL, load_info

CLICK_COUNTS = (0, 1, 2, 3, 5)
NOC_TARGETS = (0.90, 0.95)
MAX_CLICKS = 20
METHODS = ("click model", "baseline: keep or drop components")


def click_counts(max_clicks: int) -> List[int]:
    """The click counts tabled: those of :data:`CLICK_COUNTS` a session of ``max_clicks`` reaches."""
    return [k for k in CLICK_COUNTS if k <= max_clicks]


def _session_row(session, truth: np.ndarray, pixel_mm2: Optional[float], max_clicks: int) -> Dict[str, Any]:
    row: Dict[str, Any] = {}
    for k in click_counts(max_clicks):
        mask = session.mask_after(k)
        row[f"dice_{k}"] = dice(mask, truth)
        row[f"csa_error_mm2_{k}"] = (int(mask.sum()) - int(truth.sum())) * pixel_mm2 if pixel_mm2 else None
    for target in NOC_TARGETS:
        reached = clicks_to_reach(session, truth, target)
        row[f"noc{round(target * 100)}"] = max_clicks if reached is None else reached
        row[f"reached{round(target * 100)}"] = reached is not None
    row["ms_per_click"] = session.milliseconds
    return row


def _summary(rows: List[Dict[str, Any]], max_clicks: int) -> Dict[str, Any]:
    summary: Dict[str, Any] = {"n_images": len(rows)}
    for k in click_counts(max_clicks):
        summary[f"dice_mean_{k}"] = float(np.mean([r[f"dice_{k}"] for r in rows]))
        errors = [r[f"csa_error_mm2_{k}"] for r in rows if r[f"csa_error_mm2_{k}"] is not None]
        summary[f"csa_mae_mm2_{k}"] = float(np.mean(np.abs(errors))) if errors else None
        summary[f"csa_bias_mm2_{k}"] = float(np.mean(errors)) if errors else None
    for target in NOC_TARGETS:
        key = f"noc{round(target * 100)}"
        summary[f"{key}_mean"] = float(np.mean([r[key] for r in rows]))
        summary[f"{key}_not_reached"] = sum(not r[f"reached{round(target * 100)}"] for r in rows)
    times = [ms for r in rows for ms in r["ms_per_click"]]
    summary["ms_per_click_median"] = float(statistics.median(times)) if times else None
    summary["ms_per_click_p95"] = float(np.percentile(times, 95)) if times else None
    summary["clicks_simulated"] = len(times)
    return summary


def benchmark_clicks(dataset_dir: Path, out_dir: Path, click_model: Optional[str] = None,
                     segmenter: Optional[str] = None, spacing_mm: Any = None, device: str = "cpu",
                     max_clicks: int = MAX_CLICKS, max_images: Optional[int] = None,
                     runtime: Optional[str] = None) -> Dict[str, Any]:
    """Simulate clicks on the validation patients (a store's own split, else seed 0 / 20 % by patient) that
    neither the click model nor the segmenter was trained on; write clicks.json, clicks.md, per_image.csv
    and clicks.png to ``out_dir``; return the summary."""
    if max_clicks < 1 or (max_images is not None and max_images < 1):
        raise ValueError(f"--max-clicks ({max_clicks}) and --max-images ({max_images}) must be at least 1")
    refiner = Refiner(click_model, device, runtime)
    seg = Segmenter(segmenter or DEFAULT_MODEL, device)
    train_samples, val_samples = split_samples(Path(dataset_dir), TrainConfig())
    patients = {s.patient for s in train_samples + val_samples}
    seen: set = set()
    known = True
    for folder in (refiner.model_dir, seg.model_dir):
        trained, told = training_patients(load_info(folder), Path(dataset_dir), patients)
        seen |= trained
        known &= told
    samples = [s for s in val_samples if s.patient not in seen][:max_images]
    if not samples:
        raise ValueError(f"{dataset_dir}: every validation patient was used to train the click model or the "
                         "segmenter; nothing left to benchmark on")
    rows: Dict[str, List[Dict[str, Any]]] = {method: [] for method in METHODS}
    per_image, curves = [], {method: [] for method in METHODS}
    for index, sample in enumerate(samples):
        report("benchmark-clicks", index, len(samples), image=sample.image.name)
        image = read_image(sample.image, spacing_mm=sample_spacing(sample, spacing_mm))
        truth = read_mask(sample.mask)
        prediction = seg.predict(image)
        pixel_mm2 = image.spacing_mm[0] * image.spacing_mm[1] if image.spacing_mm else None
        candidates = prediction.probability >= seg.info.threshold
        steps = {METHODS[0]: lambda mask, clicks: refiner.refine(image, mask, clicks).mask,
                 METHODS[1]: toggle_components(prediction.mask, candidates, truth)}
        for method, step in steps.items():
            session = simulate_clicks(step, prediction.mask, truth, max_clicks=max_clicks, min_clicks=max_clicks)
            row = _session_row(session, truth, pixel_mm2, max_clicks)
            rows[method].append(row)
            curves[method].append([dice(session.mask_after(k), truth) for k in range(max_clicks + 1)])
            per_image.append({"image": sample.image.name, "patient": sample.patient, "method": method,
                              **{k: v for k, v in row.items() if k != "ms_per_click"}})
    report("benchmark-clicks", len(samples), len(samples))
    result = {
        "dataset": str(dataset_dir), "click_model": refiner.model_id, "segmenter": seg.model_id,
        "n_validation_images": len(val_samples), "n_images": len(samples),
        "patients": sorted({s.patient for s in samples}), "training_patients_known": known,
        "spacing_mm": spacing_mm, "max_clicks": max_clicks, "hardware": hardware(), "runtime": refiner.runtime,
        "methods": {method: _summary(method_rows, max_clicks) for method, method_rows in rows.items()},
        "dice_curve": {method: np.mean(curve, axis=0).tolist() for method, curve in curves.items()},
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "clicks.json").write_text(json.dumps(result, indent=2) + "\n")
    _write_per_image(per_image, out_dir / "per_image.csv")
    (out_dir / "clicks.md").write_text(markdown(result))
    plot_click_curves(result, out_dir / "clicks.png")
    return result


def _write_per_image(rows: Sequence[Dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})


def _cell(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(result: Dict[str, Any]) -> str:
    """The benchmark's table: one row per method."""
    counts, cap = click_counts(result["max_clicks"]), result["max_clicks"]
    head = (["method"] + [f"DSC after {k}" for k in counts] + [f"CSA MAE mm^2 after {k}" for k in counts]
            + ["NoC@90", "NoC@95", f"not at 95 in {cap}", "ms/click (median)"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, s in result["methods"].items():
        cells = ([method] + [_cell(s[f"dice_mean_{k}"], 3) for k in counts]
                 + [_cell(s[f"csa_mae_mm2_{k}"], 2) for k in counts]
                 + [_cell(s["noc90_mean"], 2), _cell(s["noc95_mean"], 2), str(s["noc95_not_reached"]),
                    _cell(s["ms_per_click_median"], 0)])
        lines.append("| " + " | ".join(cells) + " |")
    cpu = result["hardware"]
    return (f"Click simulation on {result['n_images']} validation images ({len(result['patients'])} patients) of "
            f"{result['dataset']}, starting from {result['segmenter']}'s masks; click model {result['click_model']}. "
            f"The simulated user clicks at the pixel deepest inside the largest error (positive for missed nerve, "
            f"negative for background taken in), {result['max_clicks']} times per image (fewer only when the mask "
            f"equals the expert's). NoC@X: mean clicks to reach DSC X ({result['max_clicks']} when never).\n\n"
            + "\n".join(lines) + "\n\n"
            f"Times: the whole refinement of one click (crop, network, clean-up, measurement) with "
            f"{'PyTorch ' + cpu['torch'] if result['runtime'] == 'torch' else 'OpenVINO'}, on {cpu['cpu']}, "
            f"{cpu['cores']} cores, {cpu['torch_threads']} threads.\n"
            + ("" if result["training_patients_known"] else
               "\nWarning: a model's model.json does not tell all its training patients: it may have seen some "
               "of these images.\n"))


def plot_click_curves(result: Dict[str, Any], path: Path) -> None:
    """Mean DSC against the number of clicks, per method, on an axis that shows the DSC targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2))
    for (method, curve), style in zip(result["dice_curve"].items(), ("o-", "s--")):
        axis.plot(range(len(curve)), curve, style, markersize=4, label=method)
    for target in NOC_TARGETS:
        axis.axhline(target, color="grey", linewidth=0.8, linestyle=":")
        axis.text(len(curve) - 1, target, f"DSC {target:.2f}", ha="right", va="bottom", fontsize=8, color="grey")
    axis.set_xlabel("clicks")
    axis.set_ylabel("mean DSC against the expert")
    low = min(min(curve) for curve in result["dice_curve"].values())
    axis.set_ylim(max(0.0, min(0.85, low - 0.02)), 1.0)
    axis.set_xticks(range(0, len(curve), 2))
    axis.set_title(f"{result['n_images']} validation images, from {result['segmenter']}", fontsize=10)
    axis.legend(loc="lower right", fontsize=9)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
