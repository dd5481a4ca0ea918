"""Two cross-validations of the same folds, image by image (issue 17): the mean change of DSC and of the absolute
CSA error from A to B, with 95% intervals from a bootstrap over patients (an image's patient is its PzNNN prefix),
and how many images each does better, over the images both scored (cross_validation.sh RUN_FOLDS may score fewer).
Writes paired.json and paired.md. Run from the repository root:

    .venv/bin/python benchmarks/paired_cv.py --a benchmarks/results/cross_validation/unet_small/cv \
        --b benchmarks/results/cross_validation/second_stage_small/cv --out docs/benchmarks/cross_validation/paired
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "MedianNerveSeg"))

from MedianNerveSegLib.data import patient_id  # noqa: E402
from MedianNerveSegLib.diagnostic import bootstrap_ci  # noqa: E402
from MedianNerveSegLib.uncertainty import ERROR_LIMIT_MM2  # noqa: E402


def per_image(cv_dir: Path) -> dict:
    """image -> (DSC, |CSA error|) of each image the cross-validation scored (not its error rows)."""
    with open(cv_dir / "pooled" / "metrics.csv", newline="") as handle:
        return {row["image"]: (float(row["dice"]), abs(float(row["csa_error_mm2"])))
                for row in csv.DictReader(handle) if not row["error"] and row["dice"] and row["csa_error_mm2"]}


def patient_bootstrap(change: np.ndarray, patients: list) -> list:
    return list(bootstrap_ci(lambda rows: float(change[rows].mean()), len(change), patients))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, required=True, help="cross-validate --out of the reference")
    parser.add_argument("--b", type=Path, required=True, help="cross-validate --out of the challenger")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    a, b = per_image(args.a), per_image(args.b)
    images = sorted(set(a) & set(b))
    if not images:
        raise SystemExit("error: the two cross-validations scored no image in common")
    patients = [patient_id(image) for image in images]
    (dice_a, error_a), (dice_b, error_b) = (np.array([run[i] for i in images]).T for run in (a, b))
    result = {"a": str(args.a), "b": str(args.b), "images": len(images), "images_a": len(a), "images_b": len(b),
              "patients": len(set(patients)),
              "dice_a": float(dice_a.mean()), "dice_b": float(dice_b.mean()),
              "dice_change": float((dice_b - dice_a).mean()),
              "dice_change_95ci": patient_bootstrap(dice_b - dice_a, patients),
              "images_better": int((dice_b > dice_a).sum()), "images_worse": int((dice_b < dice_a).sum()),
              "csa_mae_a": float(error_a.mean()), "csa_mae_b": float(error_b.mean()),
              "csa_mae_change": float((error_b - error_a).mean()),
              "csa_mae_change_95ci": patient_bootstrap(error_b - error_a, patients),
              "large_errors_a": int((error_a > ERROR_LIMIT_MM2).sum()),
              "large_errors_b": int((error_b > ERROR_LIMIT_MM2).sum())}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "paired.json").write_text(json.dumps(result, indent=2))
    r = result
    ci = lambda key, digits: f"{r[key][0]:+.{digits}f} to {r[key][1]:+.{digits}f}"
    (args.out / "paired.md").write_text(
        f"A: `{r['a']}` ({r['images_a']} images); B: `{r['b']}` ({r['images_b']}); the {r['images']} images of "
        f"{r['patients']} patients both scored.\n\n"
        "| | A | B | B - A (95% CI, patient bootstrap) |\n|---|---|---|---|\n"
        f"| DSC | {r['dice_a']:.3f} | {r['dice_b']:.3f} | {r['dice_change']:+.3f} ({ci('dice_change_95ci', 3)}) |\n"
        f"| CSA MAE mm^2 | {r['csa_mae_a']:.2f} | {r['csa_mae_b']:.2f} | {r['csa_mae_change']:+.2f} "
        f"({ci('csa_mae_change_95ci', 2)}) |\n"
        f"| images with CSA error > {ERROR_LIMIT_MM2} mm^2 | {r['large_errors_a']} | {r['large_errors_b']} | |\n\n"
        f"B has the higher DSC on {r['images_better']} images, A on {r['images_worse']}.\n")
    print((args.out / "paired.md").read_text())


if __name__ == "__main__":
    main()
