"""How well a per-image score picks out large CSA errors, from cross-validations' saved probability maps (issue 17):
its ROC AUC against |CSA error| > 1.5 mm^2, the share of large errors caught and of other images flagged at several
widths, and the width that flags 15% of the others (chosen on these same images). The scores:

- the CSA interval's width (``--cv``), each image's mask and interval recomputed as ``segment`` does with the
  default clean-up (zoo.ModelInfo: threshold 0.5, smallest nerve 1 mm^2, branches 0.2);
- an ensemble's disagreement (``--members ENSEMBLE_CV MEMBER_CV ...``): the spread (largest minus smallest) of the
  CSAs its members give alone, from each member's own cross-validation, scored against the ensemble's errors.

Writes review_widths.json and review_widths.md. Run from the repository root on ``cross-validate`` output folders
(they keep predictions/<stem>_prob.npy and truth/):

    .venv/bin/python benchmarks/review_widths.py --cv benchmarks/results/cross_validation/second_stage_small/cv \
        --cv benchmarks/results/cross_validation/unet_small/cv --out docs/benchmarks/cross_validation/review_widths
"""

from __future__ import annotations

import argparse
import functools
import json
import math
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
from MedianNerveSegLib.zoo import ModelInfo  # noqa: E402

WIDTHS = (1.0, 1.2, 1.4, 1.6)
CLEAN_UP = ModelInfo  # the default threshold, smallest nerve and branch share that segment applies


@functools.lru_cache(maxsize=None)  # a cross-validation given as --cv and as a member is read once
def images(cv: Path, spacing: float) -> Dict[str, Tuple[float, float, float]]:
    """stem -> (interval width, CSA, |CSA error|) in mm^2 of each image ``cv`` scored; the width is NaN where no
    nerve was found (its CSA 0)."""
    scored, pixel_mm2 = {}, spacing * spacing
    for prob_file in sorted((cv / "predictions").glob("*_prob.npy")):
        stem = prob_file.name[: -len("_prob.npy")]
        probability = np.load(prob_file).astype(np.float32)
        truth = read_mask(next((cv / "truth").glob(stem + ".*")))
        min_px = min_component_pixels(CLEAN_UP.min_component_mm2, (spacing, spacing), probability.shape)
        area = int(clean_mask(probability, CLEAN_UP.threshold, min_px, CLEAN_UP.min_branch_fraction).sum())
        width = math.nan
        if area:
            band = band_pixels(probability, min_px, CLEAN_UP.min_branch_fraction)
            width = csa_interval(band, area, (spacing, spacing)).width_mm2
        scored[stem] = (width, area * pixel_mm2, abs(area - int(truth.sum())) * pixel_mm2)
    return scored


def scores(score_mm2: np.ndarray, errors: np.ndarray, left_out: int = 0) -> dict:
    """The score's ROC AUC for |CSA error| > ERROR_LIMIT_MM2 and the flag's shares; None where a class is empty."""
    large = errors > ERROR_LIMIT_MM2
    both = bool(large.any() and (~large).any())
    width_15 = float(np.quantile(score_mm2[~large], 0.85)) if both else None
    return {"n_images": int(len(score_mm2)), "n_large_errors": int(large.sum()), "n_left_out": left_out,
            "roc_auc": roc_auc(large, score_mm2) if both else None,
            "mean_score_mm2": float(score_mm2.mean()) if len(score_mm2) else None,
            "at_width": {f"{w:g}": flag_performance(errors, score_mm2, w) for w in WIDTHS},
            "width_flagging_15pct_mm2": width_15,
            "caught_at_that_width": flag_performance(errors, score_mm2, width_15)["caught"] if both else None}


def interval_scores(cv: Path, spacing: float) -> dict:
    """The interval width on the images where the nerve was found (no interval without a nerve)."""
    scored = images(cv, spacing)
    found = [v for v in scored.values() if not math.isnan(v[0])]
    return scores(np.array([w for w, _, _ in found]), np.array([e for _, _, e in found]), len(scored) - len(found))


def disagreement_scores(ensemble: Path, members: list, spacing: float) -> dict:
    """The members' CSA spread per image (a member that found no nerve: CSA 0), against the ensemble's CSA errors,
    on the images the ensemble found a nerve in and every member scored (left-out images are counted)."""
    found = {s: v for s, v in images(ensemble, spacing).items() if not math.isnan(v[0])}
    alone = [images(member, spacing) for member in members]
    stems = [s for s in found if all(s in member for member in alone)]
    spread = np.array([np.ptp([member[s][1] for member in alone]) for s in stems])
    return scores(spread, np.array([found[s][2] for s in stems]), len(found) - len(stems))


def _percent(share) -> str:
    return "n/a" if share is None else f"{100 * share:.0f}%"


def _number(value, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cv", type=Path, action="append", default=[], help="a cross-validate --out folder")
    parser.add_argument("--members", type=Path, nargs="+", action="append", default=[],
                        metavar="CV", help="an ensemble's cross-validate --out folder, then each member's")
    parser.add_argument("--spacing", type=float, default=0.062)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not args.cv and not args.members:
        parser.error("give --cv or --members")
    if any(len(group) < 3 for group in args.members):
        parser.error("--members: an ensemble's folder, then two or more members' folders")
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
        cells = [f"{_percent(s['caught'])} / {_percent(s['others_flagged'])}" for s in shares]
        lines.append(f"| {row} | {r['n_images']} ({r['n_left_out']} left out) | {r['n_large_errors']} | "
                     f"{_number(r['roc_auc'], 2)} | {_number(r['mean_score_mm2'], 2)} | " + " | ".join(cells)
                     + f" | {_number(r['width_flagging_15pct_mm2'], 2)} | {_percent(r['caught_at_that_width'])} |")
    (args.out / "review_widths.md").write_text(
        f"Large error: |CSA error| > {ERROR_LIMIT_MM2:g} mm^2; images where the nerve was found (left out: not "
        "found, or for the spread not scored by every member). Widths chosen on these same images.\n\n"
        + "\n".join(lines) + "\n")
    print((args.out / "review_widths.md").read_text())


if __name__ == "__main__":
    main()
