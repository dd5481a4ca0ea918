"""The CSA interval and the "review" flag of shipped models on their own held-out patients (issue 17).

For each model: segments the validation patients' images it records in model.json (as ``segment`` does,
same interval and flag), and scores the flag against the expert's CSA: how many images with a CSA
error > 1.5 mm^2 it catches, how many of the others it flags, and how often the expert's CSA lies in the
interval. Writes review_flag.json and review_flag.md. Run from the repository root, the dataset beside it:

    .venv/bin/python benchmarks/review_flag.py --out docs/benchmarks/review_flag \
        --models median_nerve_unet median_nerve_unet_small
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "MedianNerveSeg"))

from MedianNerveSegLib.data import list_samples  # noqa: E402
from MedianNerveSegLib.inference import Segmenter  # noqa: E402
from MedianNerveSegLib.io import read_image, read_mask  # noqa: E402
from MedianNerveSegLib.uncertainty import (ERROR_LIMIT_MM2, REVIEW_WIDTH_MM2, csa_interval,  # noqa: E402
                                           flag_performance)

DATA = REPO.parent / "shared" / "data" / "median-nerve-us"


def score(model: str, dataset: Path, spacing: float) -> dict:
    segmenter = Segmenter(model)
    held_out = set(segmenter.info.training.get("val_patients") or ())
    errors, widths, inside = [], [], []
    for sample in list_samples(dataset):
        if sample.patient not in held_out:
            continue
        image = read_image(sample.image, spacing)
        prediction = segmenter.predict(image)
        if not prediction.found:
            continue
        pixel = spacing * spacing
        truth = float((read_mask(sample.mask) > 0).sum()) * pixel
        interval = csa_interval(prediction.band_px, int(prediction.mask.sum()), image.spacing_mm,
                                prediction.review_width_mm2)
        errors.append(float(prediction.mask.sum()) * pixel - truth)
        widths.append(interval.width_mm2)
        inside.append(interval.low_mm2 <= truth <= interval.high_mm2)
    return {"model": segmenter.model_id, "n_images": len(errors), "n_patients": len(held_out),
            "csa_mae_mm2": float(np.mean(np.abs(errors))), "mean_width_mm2": float(np.mean(widths)),
            "truth_in_interval": float(np.mean(inside)),
            **flag_performance(errors, widths, segmenter.info.review_width_mm2)}


def markdown(rows) -> str:
    lines = ["# The review flag of the shipped models on their held-out patients", "",
             "Flag: a CSA interval at least the model's review width wide (model.json review_width_mm2, "
             f"{REVIEW_WIDTH_MM2:g} mm^2 unless set); a large error: |CSA error| > {ERROR_LIMIT_MM2:g} mm^2. "
             "Written by `benchmarks/review_flag.py`.", "",
             "| model | images | CSA MAE mm^2 | mean interval width mm^2 | expert CSA in interval | review width mm^2 "
             "| large errors | caught | others flagged |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        caught = "n/a" if r["caught"] is None else f"{100 * r['caught']:.0f}%"
        lines.append(f"| {r['model']} | {r['n_images']} | {r['csa_mae_mm2']:.3f} | {r['mean_width_mm2']:.2f} | "
                     f"{100 * r['truth_in_interval']:.0f}% | {r['width_mm2']:g} | {r['n_large_errors']} | {caught} | "
                     f"{100 * r['others_flagged']:.0f}% |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["median_nerve_unet", "median_nerve_unet_small"])
    parser.add_argument("--dataset", default=str(DATA))
    parser.add_argument("--spacing", type=float, default=0.062)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    rows = [score(model, Path(args.dataset), args.spacing) for model in args.models]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "review_flag.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "review_flag.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
