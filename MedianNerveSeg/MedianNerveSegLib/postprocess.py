"""From a probability map to a clean nerve mask: fill holes, drop specks, keep branches."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from scipy import ndimage
from skimage.measure import label


def clean_mask(probability: np.ndarray, threshold: float, min_component_px: int,
               min_branch_fraction: float) -> np.ndarray:
    """Binary mask of plausible nerve tissue.

    Holes are filled, components smaller than ``min_component_px`` are dropped, and a
    second branch (bifid nerve) is kept when it is at least ``min_branch_fraction`` of the
    largest component and lies within one nerve diameter of it; other blobs are discarded.
    """
    keep = np.zeros(probability.shape, bool)
    box = nerve_box(probability, threshold)
    if box is not None:
        keep[box] = _clean_region(probability[box] >= threshold, min_component_px, min_branch_fraction)
    return keep


_MARGIN = 2  # pixels around the mask's box that clean_mask works on (room for the hole filling's outside)


def nerve_box(probability: np.ndarray, threshold: float) -> Optional[Tuple[slice, slice]]:
    """The box clean_mask works on at ``threshold`` (None when no pixel reaches it). It holds the box of any higher
    threshold too, so clean_mask of the probability on it equals that of the whole map there (zero elsewhere)."""
    above = probability >= threshold
    return _bounding_box(above, margin=_MARGIN) if above.any() else None


def _bounding_box(mask: np.ndarray, margin: int) -> Tuple[slice, slice]:
    """The slices around the mask's nonzero pixels, ``margin`` pixels wider (cheap work on a crop)."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return (slice(max(rows[0] - margin, 0), rows[-1] + margin + 1),
            slice(max(cols[0] - margin, 0), cols[-1] + margin + 1))


def _clean_region(above: np.ndarray, min_component_px: int, min_branch_fraction: float) -> np.ndarray:
    mask = ndimage.binary_fill_holes(above)
    labels = label(mask, connectivity=2)
    areas = np.bincount(labels.ravel())[1:]
    largest = int(np.argmax(areas)) + 1
    main = labels == largest
    if areas[largest - 1] < min_component_px:
        return np.zeros_like(main)
    branches = [index for index, area in enumerate(areas, start=1)
                if index != largest and area >= max(min_component_px, min_branch_fraction * areas[largest - 1])]
    if not branches:
        return main
    diameter = 2.0 * np.sqrt(areas[largest - 1] / np.pi)
    distance_to_main = ndimage.distance_transform_edt(~main)
    keep = main.copy()
    for index in branches:
        component = labels == index
        if distance_to_main[component].min() <= diameter:
            keep |= component
    return keep


def min_component_pixels(min_component_mm2: float, spacing_mm: Optional[Tuple[float, float]],
                         image_shape: Tuple[int, int]) -> int:
    """Smallest plausible nerve area in pixels; without spacing, 0.1% of the image."""
    if spacing_mm is None:
        return max(1, int(1e-3 * image_shape[0] * image_shape[1]))
    return max(1, int(round(min_component_mm2 / (spacing_mm[0] * spacing_mm[1]))))
