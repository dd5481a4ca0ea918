"""How well a per-image score picks out large CSA errors, from cross-validations' saved probability maps (issue 17):
its ROC AUC against |CSA error| > 1.5 mm^2, the share of large errors caught and of other images flagged at several
widths, and the width that flags 15% of the others (chosen on these same images). The scores:

- the CSA interval's width (``--cv``), each image's mask and interval recomputed as ``segment`` does (the model's
  threshold 0.5, smallest nerve 1 mm^2, branches 0.2);
- an ensemble's disagreement (``--members ENSEMBLE_CV MEMBER_CV ...``): the spread (largest minus smallest) of the
  CSAs its members give alone, from each member's own cross-validation, scored against the ensemble's errors.

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
from typing import Dict, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "MedianNerveSeg"))

from MedianNerveSegLib.diagnostic import roc_auc  # noqa: E402
from MedianNerveSegLib.io import read_mask  # noqa: E402
from MedianNerveSegLib.postprocess import clean_mask, min_component_pixels  # noqa: E402
from MedianNerveSegLib.uncertainty import ERROR_LIMIT_MM2, band_pixels, csa_interval, flag_performance  # noqa: E402

WIDTHS = (1.0, 1.2, 1.4, 1.6)


def images(cv: Path, spacing: float) -> Dict[str, Tuple[float, float, float]]:
    """stem -> (interval width, CSA, |CSA error|) in mm^2 of each image of ``cv`` where the nerve was found."""
    found = {}
    for prob_file in sorted((cv / "predictions").glob("*_prob.npy")):
        stem = prob_file.name[: -len("_prob.npy")]
        probability = np.load(prob_file).astype(np.float32)
        truth = read_mask(next((cv / "truth").glob(stem + ".*")))
        min_px = min_component_pixels(1.0, (spacing, spacing), probability.shape)
        area = int(clean_mask(probability, 0.5, min_px, 0.2).sum())
        if area:
            interval = csa_interval(band_pixels(probability, min_px, 0.2), area, (spacing, spacing))
            found[stem] = (interval.width_mm2, area * spacing * spacing, abs(area - int(truth.sum())) * spacing ** 2)
    return found


def scores(score_mm2: np.ndarray, errors: np.ndarray) -> dict:
    large = errors > ERROR_LIMIT_MM2
    width_15 = float(np.quantile(score_mm2[~large], 0.85))
    return {"n_images": int(len(score_mm2)), "n_large_errors": int(large.sum()),
            "roc_auc": roc_auc(large, score_mm2), "mean_width_mm2": float(score_mm2.mean()),
            "at_width": {f"{w:g}": flag_performance(errors, score_mm2, w) for w in WIDTHS},
            "width_flagging_15pct_mm2": width_15,
            "caught_at_that_width": flag_performance(errors, score_mm2, width_15)["caught"]}


def interval_scores(cv: Path, spacing: float) -> dict:
    found = images(cv, spacing)
    return scores(np.array([w for w, _, _ in found.values()]), np.array([e for _, _, e in found.values()]))


def disagreement_scores(ensemble: Path, members: list, spacing: float) -> dict:
    """The members' CSA spread per image, against the ensemble's CSA errors (images all of them found)."""
    found = images(ensemble, spacing)
    alone = [images(member, spacing) for member in members]
    stems = [s for s in found if all(s in member for member in alone)]
    spread = np.array([np.ptp([member[s][1] for member in alone]) for s in stems])
    return scores(spread, np.array([found[s][2] for s in stems]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cv", type=Path, action="append", default=[], help="a cross-validate --out folder")
    parser.add_argument("--members", type=Path, nargs="+", action="append", default=[],
                        metavar="CV", help="an ensemble's cross-validate --out folder, then each member's")
    parser.add_argument("--spacing", type=float, default=0.062)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = {f"`{cv}`: interval width": interval_scores(cv, args.spacing) for cv in args.cv}
    for ensemble, *members in args.members:
        result[f"`{ensemble}`: members' CSA spread"] = disagreement_scores(ensemble, members, args.spacing)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "review_widths.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| cross-validation: score | images | large errors | ROC AUC | mean score mm^2 | "
             + " | ".join(f"caught / flagged at {w:g}" for w in WIDTHS) + " | score flagging 15% | caught there |",
             "|---" * (7 + len(WIDTHS)) + "|"]
    for row, r in result.items():
        shares = [r["at_width"][f"{w:g}"] for w in WIDTHS]
        cells = [f"{100 * s['caught']:.0f}% / {100 * s['others_flagged']:.0f}%" for s in shares]
        lines.append(f"| {row} | {r['n_images']} | {r['n_large_errors']} | {r['roc_auc']:.2f} | "
                     f"{r['mean_width_mm2']:.2f} | " + " | ".join(cells)
                     + f" | {r['width_flagging_15pct_mm2']:.2f} | {100 * r['caught_at_that_width']:.0f}% |")
    (args.out / "review_widths.md").write_text(
        f"Large error: |CSA error| > {ERROR_LIMIT_MM2:g} mm^2; images where the nerve was found. Widths chosen on "
        "these same images.\n\n" + "\n".join(lines) + "\n")
    print((args.out / "review_widths.md").read_text())


if __name__ == "__main__":
    main()
