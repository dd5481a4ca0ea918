"""How well the CSA interval's width picks out large CSA errors, from a cross-validation's saved probability maps
(issue 17): its ROC AUC against |CSA error| > 1.5 mm^2, the share of large errors caught and of other images
flagged at several widths, and the width that flags 15% of the others (chosen on these same images). Recomputes each
image's mask and interval as ``segment`` does (the model's threshold 0.5, smallest nerve 1 mm^2, branches 0.2).
Writes review_widths.json and review_widths.md. Run from the repository root on ``cross-validate`` output folders
(they keep predictions/<stem>_prob.npy and truth/):

    .venv/bin/python benchmarks/review_widths.py --cv benchmarks/results/cross_validation/second_stage_small/cv \
        --cv benchmarks/results/cross_validation/unet_small/cv --out docs/benchmarks/cross_validation/review_widths
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "MedianNerveSeg"))

from MedianNerveSegLib.io import read_mask  # noqa: E402
from MedianNerveSegLib.postprocess import clean_mask, min_component_pixels  # noqa: E402
from MedianNerveSegLib.uncertainty import ERROR_LIMIT_MM2, band_pixels  # noqa: E402

WIDTHS = (1.0, 1.2, 1.4, 1.6)


def widths_and_errors(cv: Path, spacing: float):
    pixel_mm2, widths, errors = spacing * spacing, [], []
    for prob_file in sorted((cv / "predictions").glob("*_prob.npy")):
        stem = prob_file.name[: -len("_prob.npy")]
        probability = np.load(prob_file).astype(np.float32)
        truth = read_mask(next((cv / "truth").glob(stem + ".*")))
        min_px = min_component_pixels(1.0, (spacing, spacing), probability.shape)
        mask = clean_mask(probability, 0.5, min_px, 0.2)
        if not mask.any():
            continue
        strict, loose = band_pixels(probability, min_px, 0.2)
        area = int(mask.sum())
        widths.append((max(loose, area) - min(strict, area)) * pixel_mm2)
        errors.append(abs(area - int(truth.sum())) * pixel_mm2)
    return np.array(widths), np.array(errors)


def scores(widths: np.ndarray, errors: np.ndarray) -> dict:
    large = errors > ERROR_LIMIT_MM2
    pos, neg = widths[large], widths[~large]
    auc = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    width_15 = float(np.quantile(neg, 0.85))
    return {"n_images": int(len(widths)), "n_large_errors": int(large.sum()), "roc_auc": float(auc),
            "mean_width_mm2": float(widths.mean()),
            "at_width": {f"{w:g}": {"caught": float((pos >= w).mean()), "others_flagged": float((neg >= w).mean())}
                         for w in WIDTHS},
            "width_flagging_15pct_mm2": width_15, "caught_at_that_width": float((pos >= width_15).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cv", type=Path, action="append", required=True, help="a cross-validate --out folder")
    parser.add_argument("--spacing", type=float, default=0.062)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = {str(cv): scores(*widths_and_errors(cv, args.spacing)) for cv in args.cv}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "review_widths.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| cross-validation | images | large errors | ROC AUC | mean width mm^2 | "
             + " | ".join(f"caught / flagged at {w:g}" for w in WIDTHS) + " | width flagging 15% | caught there |",
             "|---" * (7 + len(WIDTHS)) + "|"]
    for cv, r in result.items():
        shares = [r["at_width"][f"{w:g}"] for w in WIDTHS]
        cells = [f"{100 * s['caught']:.0f}% / {100 * s['others_flagged']:.0f}%" for s in shares]
        lines.append(f"| `{cv}` | {r['n_images']} | {r['n_large_errors']} | {r['roc_auc']:.2f} | "
                     f"{r['mean_width_mm2']:.2f} | " + " | ".join(cells)
                     + f" | {r['width_flagging_15pct_mm2']:.2f} | {100 * r['caught_at_that_width']:.0f}% |")
    (args.out / "review_widths.md").write_text(
        f"Large error: |CSA error| > {ERROR_LIMIT_MM2:g} mm^2; images where the nerve was found. Widths chosen on "
        "these same images.\n\n" + "\n".join(lines) + "\n")
    print((args.out / "review_widths.md").read_text())


if __name__ == "__main__":
    main()
