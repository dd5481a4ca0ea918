"""Cross-sectional area (CSA) and shape of a median nerve mask.

CSA = pixel count x row spacing x column spacing. A bifid nerve (two components) has the
sum of both areas as its CSA. With unknown spacing the mm values are None and the
measurement is flagged (``spacing_known`` False); the area in pixels is always given.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from skimage.measure import label, perimeter_crofton, regionprops

Spacing = Optional[Union[float, Tuple[float, float]]]


def as_spacing(spacing_mm: Spacing) -> Optional[Tuple[float, float]]:
    """(row, col) spacing in mm from a pair, a single isotropic value or None."""
    if spacing_mm is None:
        return None
    pair = (spacing_mm, spacing_mm) if np.isscalar(spacing_mm) else tuple(spacing_mm)
    if len(pair) != 2 or not all(float(s) > 0 for s in pair):
        raise ValueError(f"spacing must be one or two positive values in mm, got {spacing_mm!r}")
    return float(pair[0]), float(pair[1])


def as_binary(mask: np.ndarray) -> np.ndarray:
    """A (H, W) bool mask from bool, 0/1 or 0/255 input (nonzero = nerve)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a (H, W) mask, got shape {mask.shape}")
    return mask > 0


# Lattice steps (rows, cols) whose lines the Crofton formula counts crossings of: rows,
# columns, diagonals and knight moves, i.e. 8 directions over half a turn.
CROFTON_STEPS = ((0, 1), (1, 2), (1, 1), (2, 1), (1, 0), (2, -1), (1, -1), (1, -2))


def crofton_perimeter(mask: np.ndarray, spacing: Tuple[float, float] = (1.0, 1.0)) -> float:
    """Perimeter by the Cauchy-Crofton formula, in the unit of ``spacing``.

    Isotropic spacing: ``skimage.measure.perimeter_crofton(mask, 4)`` scaled by the spacing
    (within 0.5% of the true perimeter of a digitised 40 x 25 px ellipse, where the
    4-neighbour boundary length is 3.7% over). skimage does not take anisotropic spacing, so
    there :func:`anisotropic_crofton_perimeter` is used.
    """
    sr, sc = spacing
    if sr == sc:
        return float(perimeter_crofton(mask, directions=4)) * sr
    return anisotropic_crofton_perimeter(mask, spacing)


def anisotropic_crofton_perimeter(mask: np.ndarray, spacing: Tuple[float, float],
                                  steps: Sequence[Tuple[int, int]] = CROFTON_STEPS) -> float:
    """Crofton perimeter on a (row, col) spacing grid: P = 1/2 sum of w * d * n over directions.

    n counts mask crossings between pixels one ``step`` apart, d is the distance in mm
    between the lattice lines of that step, w the angle (in mm space) of the directions it
    stands for. With the 4 steps of rows, columns and diagonals on an isotropic grid this
    is skimage's ``perimeter_crofton(mask, 4)``; 8 steps halve its error on elongated
    shapes (within 4% of the analytic perimeter of ellipses up to 4:1 at 2:1 anisotropy).
    """
    sr, sc = spacing
    m = np.pad(mask.astype(bool), 2)
    h, w = m.shape
    angles = np.array([math.atan2(dr * sr, dc * sc) for dr, dc in steps])
    order = np.argsort(angles)
    gaps = np.diff(np.append(angles[order], angles[order][0] + math.pi))
    weights = (gaps + np.roll(gaps, 1)) / 2
    total = 0.0
    for (dr, dc), weight in zip((steps[i] for i in order), weights):
        crossings = np.count_nonzero(m[:h - dr, max(0, -dc):w - max(0, dc)] != m[dr:, max(0, dc):w - max(0, -dc)])
        total += weight * sr * sc / math.hypot(dr * sr, dc * sc) * crossings
    return float(total / 2)


@dataclass
class NerveMeasurement:
    """CSA and shape of one nerve mask.

    ``component_areas`` are largest first, in ``area_unit`` ("mm2", or "px" when the spacing
    is unknown). Of the largest component: circularity (4 pi A / P^2); flattening ratio, the
    clinicians' transverse (image width) over antero-posterior (image depth) diameter, from its
    extent along the image axes; ``ellipse_ratio``, major over minor axis of the fitted ellipse.
    None when no nerve is found (the ellipse ratio also for a one-pixel-thin component).
    """

    found: bool
    area_px: int
    area_mm2: Optional[float]
    perimeter_px: float
    perimeter_mm: Optional[float]
    circularity: Optional[float]
    flattening_ratio: Optional[float]
    n_components: int
    component_areas: List[float] = field(default_factory=list)
    area_unit: str = "px"
    spacing_mm: Optional[Tuple[float, float]] = None
    spacing_known: bool = False
    ellipse_ratio: Optional[float] = None

    def as_row(self) -> Dict[str, Any]:
        """A flat dict for a CSV row or a table."""
        row = asdict(self)
        row["component_areas"] = ";".join(f"{a:.3f}" for a in self.component_areas)
        row["spacing_mm"] = "" if self.spacing_mm is None else "{:.4f}x{:.4f}".format(*self.spacing_mm)
        return row


def _shape_of(region, spacing: Optional[Tuple[float, float]]) -> Tuple[float, float, Optional[float]]:
    """Circularity, flattening ratio (transverse / AP diameter) and ellipse ratio of one regionprops region."""
    row_mm, col_mm = spacing or (1.0, 1.0)
    perimeter = crofton_perimeter(region.image, spacing or (1.0, 1.0))
    circularity = float(4 * math.pi * region.area / perimeter ** 2)
    top, left, bottom, right = region.bbox
    flattening = float((right - left) * col_mm / ((bottom - top) * row_mm))
    minor = region.axis_minor_length
    ellipse = float(region.axis_major_length / minor) if minor > 0 else None
    return circularity, flattening, ellipse


def nerve_box(binary: np.ndarray, margin: int = 2) -> np.ndarray:
    """The mask cut to its content's bounding box plus ``margin``: every figure here is the same on it,
    at a fraction of the whole frame's cost (a nerve covers about 1% of it)."""
    rows, cols = np.flatnonzero(binary.any(axis=1)), np.flatnonzero(binary.any(axis=0))
    if not rows.size:
        return np.zeros((1, 1), bool)
    return binary[max(rows[0] - margin, 0):rows[-1] + margin + 1, max(cols[0] - margin, 0):cols[-1] + margin + 1]


def measure_mask(mask: np.ndarray, spacing_mm: Spacing = None) -> NerveMeasurement:
    """Measure a (H, W) nerve mask; components are 8-connected, their areas summed."""
    binary = nerve_box(as_binary(mask))
    spacing = as_spacing(spacing_mm)
    regions = regionprops(label(binary, connectivity=2), spacing=spacing or (1.0, 1.0))
    regions.sort(key=lambda r: r.num_pixels, reverse=True)
    area_px = int(binary.sum())
    perimeter_px = crofton_perimeter(binary)
    circularity, flattening, ellipse = _shape_of(regions[0], spacing) if regions else (None, None, None)
    known = spacing is not None
    return NerveMeasurement(
        found=area_px > 0,
        area_px=area_px,
        area_mm2=area_px * spacing[0] * spacing[1] if known else None,
        perimeter_px=perimeter_px,
        perimeter_mm=crofton_perimeter(binary, spacing) if known else None,
        circularity=circularity,
        flattening_ratio=flattening,
        n_components=len(regions),
        component_areas=[float(r.area) for r in regions],
        area_unit="mm2" if known else "px",
        spacing_mm=spacing,
        spacing_known=known,
        ellipse_ratio=ellipse,
    )
