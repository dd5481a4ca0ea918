"""A CSA interval per image and a "review" flag, from the one probability map the network already gives.

The interval is the CSA the pipeline would report at a stricter and at a looser threshold (the
same clean-up, at :data:`BAND` instead of the model's threshold): where the network is unsure of
the nerve's edge, or of a neighbouring blob, the two differ. An image whose interval is at least its
model's ``review_width_mm2`` wide (model.json; :data:`REVIEW_WIDTH_MM2` unless set) is flagged "review".
Scored by patient-level cross-validation against the images whose CSA error exceeds
:data:`ERROR_LIMIT_MM2` (docs/benchmarks/cross_validation.md): 1.0 mm^2 catches about half of them and
flags 8% of the rest; catching 90% would flag more than half, and other bands rank the images no
better. Two-stage models (second_stage.py) have a wider interval and their own width. The interval is
a sensitivity of the threshold, not a confidence interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

BAND = (0.25, 0.75)  # the looser and the stricter probability threshold
REVIEW_WIDTH_MM2 = 1.0  # interval width from which an image is flagged "review"
ERROR_LIMIT_MM2 = 1.5  # the CSA error the flag is meant to catch
REVIEW_FLAG = "review"


@dataclass(frozen=True)
class CsaInterval:
    """The CSA at the stricter and the looser threshold (mm^2), holding the reported CSA."""

    low_mm2: float
    high_mm2: float
    review_width_mm2: float = REVIEW_WIDTH_MM2  # the model's (model.json review_width_mm2)

    @property
    def width_mm2(self) -> float:
        return self.high_mm2 - self.low_mm2

    @property
    def needs_review(self) -> bool:
        return bool(is_flagged(self.width_mm2, self.review_width_mm2))


def is_flagged(width_mm2: Any, review_width_mm2: Any) -> Any:
    """Whether an interval of ``width_mm2`` is flagged "review" at ``review_width_mm2`` (numbers or arrays): the one
    rule for the CSV and for the benchmarks that score it."""
    return np.asarray(width_mm2) >= np.asarray(review_width_mm2) - 1e-9  # (a pixel count times a pixel area)


def band_pixels(probability: np.ndarray, min_component_px: int, min_branch_fraction: float) -> Tuple[int, int]:
    """Nerve pixels at the stricter and at the looser threshold of :data:`BAND`, cleaned as the mask is."""
    from .postprocess import clean_mask  # (scipy and scikit-image: not for model.json's reader, zoo.py)

    loose, strict = (int(clean_mask(probability, threshold, min_component_px, min_branch_fraction).sum())
                     for threshold in BAND)
    return strict, loose


def csa_interval(band_px: Optional[Tuple[int, int]], area_px: int, spacing_mm: Optional[Tuple[float, float]],
                 review_width_mm2: float = REVIEW_WIDTH_MM2) -> Optional[CsaInterval]:
    """The interval in mm^2 of a mask of ``area_px`` pixels, flagged from the model's ``review_width_mm2``; None
    without a spacing or a band."""
    if band_px is None or spacing_mm is None:
        return None
    pixel_mm2 = spacing_mm[0] * spacing_mm[1]
    return CsaInterval(min(band_px[0], area_px) * pixel_mm2, max(band_px[1], area_px) * pixel_mm2,
                       review_width_mm2)


def flag_performance(errors_mm2: Sequence[float], widths_mm2: Sequence[float],
                     width_mm2: Union[float, Sequence[float]] = REVIEW_WIDTH_MM2,
                     limit_mm2: float = ERROR_LIMIT_MM2) -> Dict[str, Any]:
    """How the flag at ``width_mm2`` (one width, or each image's: its model's) sorts images: the share of those with
    |CSA error| > ``limit_mm2`` it catches, and the share of the others it flags."""
    errors, widths = np.abs(np.asarray(errors_mm2, float)), np.asarray(widths_mm2, float)
    threshold = np.asarray(width_mm2, float)
    large, flagged = errors > limit_mm2, is_flagged(widths, threshold)
    widths_used = sorted(set(np.atleast_1d(threshold).tolist()))  # one width, or each distinct one
    return {"n_large_errors": int(large.sum()), "n_others": int((~large).sum()),
            "caught": float(flagged[large].mean()) if large.any() else None,
            "others_flagged": float(flagged[~large].mean()) if (~large).any() else None,
            "width_mm2": widths_used[0] if len(widths_used) == 1 else widths_used,
            "limit_mm2": float(limit_mm2)}


def width_catching(errors_mm2: Sequence[float], widths_mm2: Sequence[float], share: float = 0.9,
                   limit_mm2: float = ERROR_LIMIT_MM2) -> Optional[float]:
    """The widest review width that still flags ``share`` of the images with |CSA error| > ``limit_mm2``."""
    errors, widths = np.abs(np.asarray(errors_mm2, float)), np.asarray(widths_mm2, float)
    large = np.sort(widths[errors > limit_mm2])
    if not len(large):
        return None
    return float(large[len(large) - math.ceil(share * len(large) - 1e-9)])  # (0.1 * 10 is not 1.0 in floats)
