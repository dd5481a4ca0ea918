"""Accuracy and CPU speed of a model on the patients it was validated on (never trained on).

    .venv/bin/python benchmarks/default_model.py [--model NAME_OR_DIR] [--dataset DIR] [--out DIR]

Segments every image of the model's held-out patients (model.json: training.val_patients),
evaluates against the expert masks with the papers' metrics, times the Segmenter on this
CPU (torch threads = --threads), and writes OUT/report.json (plus metrics.csv, summary.json).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch

from MedianNerveSegLib.benchmark import evaluate_model, frame_times_ms
from MedianNerveSegLib.data import list_samples
from MedianNerveSegLib.zoo import load_info, resolve_model

REPO = Path(__file__).resolve().parents[1]
SPACING = 0.062  # mm, from the dataset README


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="installed model name or folder (default: shipped model)")
    parser.add_argument("--dataset", default=str(REPO.parent / "shared/data/median-nerve-us"))
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/default_model"))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()

    model_dir = resolve_model(args.model)
    info = load_info(model_dir)
    patients = set(info.training.get("val_patients", []))
    samples = [s for s in list_samples(Path(args.dataset)) if s.patient in patients]
    if not samples:
        raise SystemExit("no held-out patients of this model in the dataset")
    out = Path(args.out)
    torch.set_num_threads(args.threads)
    summary = evaluate_model(model_dir, samples, SPACING, out_dir=out)
    milliseconds = frame_times_ms(model_dir, samples, args.threads, frames=len(samples))
    report = {
        "model": f"{info.name}@{info.version}",
        "n_images": len(samples), "n_patients": len(patients),
        "accuracy": {k: summary[k] for k in ("dice_mean", "dice_sd", "dice_median", "iou_mean", "precision_mean",
                                             "recall_mean", "hd95_mean_mm", "found_rate", "csa_mae_mm2",
                                             "csa_icc", "csa_icc_ci", "csa_bias_mm2", "csa_loa_low_mm2",
                                             "csa_loa_high_mm2")},
        "cpu_ms_per_frame": {"median": float(np.median(milliseconds)), "p90": float(np.percentile(milliseconds, 90)),
                             "threads": args.threads, "frame_size": [468, 606]},
        "machine": {"processor": platform.processor() or platform.machine(), "torch": torch.__version__},
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
