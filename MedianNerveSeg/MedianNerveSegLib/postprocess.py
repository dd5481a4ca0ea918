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
    mask = ndimage.binary_fill_holes(probability >= threshold)
    labels = label(mask, connectivity=2)
    if labels.max() == 0:
        return mask
    areas = np.bincount(labels.ravel())[1:]
    largest = int(np.argmax(areas)) + 1
    main = labels == largest
    diameter = 2.0 * np.sqrt(areas[largest - 1] / np.pi)
    distance_to_main = ndimage.distance_transform_edt(~main)
    keep = main.copy()
    for index, area in enumerate(areas, start=1):
        if index == largest or area < max(min_component_px, min_branch_fraction * areas[largest - 1]):
            continue
        component = labels == index
        if distance_to_main[component].min() <= diameter:
            keep |= component
    if areas[largest - 1] < min_component_px:
        keep[:] = False
    return keep


def min_component_pixels(min_component_mm2: float, spacing_mm: Optional[Tuple[float, float]],
                         image_shape: Tuple[int, int]) -> int:
    """Smallest plausible nerve area in pixels; without spacing, 0.1% of the image."""
    if spacing_mm is None:
        return max(1, int(1e-3 * image_shape[0] * image_shape[1]))
    return max(1, int(round(min_component_mm2 / (spacing_mm[0] * spacing_mm[1]))))
