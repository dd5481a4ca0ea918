"""Clicks on a nerve contour: their text form, the zoom-in crop a click model sees, click maps, and the
click simulator of the interactive-segmentation benchmarks.

A click is (x, y) = (column, row), 0-based pixels of the frame; positive marks nerve, negative
background. The click model (:mod:`refine`) sees a square crop around the current mask and the clicks
(the "zoom-in" of RITM, Sofiiuk et al. 2021), resampled to its input size: the nerve fills about the
same share of every crop, at about the frame's own resolution, whatever the scanner's field of view.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

_CLICK_TEXT = re.compile(r"^\s*([+-])\s*(\d+)\s*,\s*(\d+)\s*$")


@dataclass(frozen=True)
class Click:
    """One click: x = column, y = row (0-based pixels of the frame); positive = nerve, negative = background."""

    x: int
    y: int
    positive: bool

    def __str__(self) -> str:
        return f"{'+' if self.positive else '-'}{self.x},{self.y}"


def parse_click(text: str) -> Click:
    """'+X,Y' (nerve) or '-X,Y' (background), X = column and Y = row in 0-based pixels; ValueError otherwise."""
    match = _CLICK_TEXT.match(str(text))
    if not match:
        raise ValueError(f"click {text!r}: expected +X,Y (nerve) or -X,Y (background), X = column and Y = row, "
                         "0-based whole pixels, e.g. +310,220")
    return Click(int(match.group(2)), int(match.group(3)), match.group(1) == "+")


def check_clicks(clicks: Sequence[Click], shape: Tuple[int, int], source: str = "image") -> None:
    """ValueError naming the first click that is not a whole pixel of a frame of ``shape`` (rows, columns)."""
    rows, cols = shape
    for click in clicks:
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (click.x, click.y)):
            raise ValueError(f"{source}: click ({click.x}, {click.y}): X and Y are whole pixels (0-based column, row)")
        if not isinstance(click.positive, (bool, np.bool_)):
            raise ValueError(f"{source}: click ({click.x}, {click.y}): 'positive' is True (nerve) or False "
                             f"(background), not {click.positive!r}")
        if not (0 <= click.x < cols and 0 <= click.y < rows):
            raise ValueError(f"{source}: click {click} lies outside the image ({cols} columns x {rows} rows: "
                             f"X 0-{cols - 1}, Y 0-{rows - 1})")


@dataclass(frozen=True)
class ClickEncoding:
    """How a click model sees a frame: the crop around mask and clicks, and the click disks.

    The crop is a square in mm (in pixels when the spacing is unknown) of ``expand`` times the larger
    side of the box around the mask and the clicks, at least ``min_side_mm`` (or ``min_side_fraction`` of
    the frame's shorter side without a spacing). Clicks are disks of ``radius`` pixels of the network's
    input: RITM found disks better than distance maps or Gaussians."""

    expand: float = 1.6
    min_side_mm: float = 10.0
    min_side_fraction: float = 0.3
    radius: int = 5

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ClickEncoding":
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown click encoding setting(s) {', '.join(unknown)}")
        encoding = cls(**data)
        for key in ("expand", "min_side_mm", "min_side_fraction", "radius"):
            value = getattr(encoding, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"click encoding {key!r} must be a positive number, got {value!r}")
        if encoding.expand < 1 or encoding.min_side_fraction > 1:
            raise ValueError("click encoding: 'expand' must be >= 1 and 'min_side_fraction' <= 1")
        return encoding

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Crop:
    """A region of the frame (may reach past its edges) and the network input size it is resampled to."""

    top: int
    left: int
    height: int
    width: int
    size: Tuple[int, int]

    def contains(self, click: Click) -> bool:
        return self.top <= click.y < self.top + self.height and self.left <= click.x < self.left + self.width

    def region(self, shape: Tuple[int, int]) -> np.ndarray:
        """A frame-sized mask of where the crop lies."""
        inside = np.zeros(shape, bool)
        inside[max(self.top, 0):max(self.top + self.height, 0), max(self.left, 0):max(self.left + self.width, 0)] = True
        return inside

    def to_network(self, click: Click) -> Tuple[float, float]:
        """(row, col) of a click's pixel centre in network pixels."""
        return ((click.y + 0.5 - self.top) * self.size[0] / self.height - 0.5,
                (click.x + 0.5 - self.left) * self.size[1] / self.width - 0.5)

    def cut(self, frame: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """The crop's pixels of ``frame`` at frame resolution, ``fill`` where it reaches past the frame."""
        rows, cols = frame.shape
        out = np.full((self.height, self.width), fill, np.float32)
        r0, c0 = max(self.top, 0), max(self.left, 0)
        r1, c1 = min(self.top + self.height, rows), min(self.left + self.width, cols)
        if r1 > r0 and c1 > c0:
            out[r0 - self.top:r1 - self.top, c0 - self.left:c1 - self.left] = frame[r0:r1, c0:c1]
        return out

    def paste(self, crop: np.ndarray, shape: Tuple[int, int], fill: float = 0.0) -> np.ndarray:
        """A frame-sized array holding ``crop`` (at frame resolution) where the crop lies, ``fill`` elsewhere."""
        out = np.full(shape, fill, np.float32)
        r0, c0 = max(self.top, 0), max(self.left, 0)
        r1, c1 = min(self.top + self.height, shape[0]), min(self.left + self.width, shape[1])
        if r1 > r0 and c1 > c0:
            out[r0:r1, c0:c1] = crop[r0 - self.top:r1 - self.top, c0 - self.left:c1 - self.left]
        return out


Box = Tuple[int, int, int, int]  # first row, last row, first column, last column (inclusive)


def mask_box(mask: np.ndarray) -> Optional[Box]:
    """The box around a mask's pixels, None for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return (int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])) if rows.size else None


def zoom_crop(mask: np.ndarray, clicks: Sequence[Click], spacing_mm: Optional[Tuple[float, float]],
              encoding: ClickEncoding, size: Tuple[int, int], expand: Optional[float] = None,
              shift: Tuple[float, float] = (0.0, 0.0), box: Optional[Box] = None) -> Crop:
    """The crop a click model sees: centred on the box around ``mask`` (or the given ``box``) and ``clicks``
    (``shift`` moves the centre by that fraction of the side, for training), ``expand`` (default the encoding's)
    times its larger side in mm, at least the encoding's minimum."""
    box = box or mask_box(mask)
    ys = [c.y for c in clicks] + ([box[0], box[1]] if box else [])
    xs = [c.x for c in clicks] + ([box[2], box[3]] if box else [])
    if not ys:
        raise ValueError("a crop needs a mask or a click")
    row_mm, col_mm = spacing_mm or (1.0, 1.0)
    extent_mm = max((max(ys) - min(ys) + 1) * row_mm, (max(xs) - min(xs) + 1) * col_mm)
    minimum_mm = (encoding.min_side_mm if spacing_mm else encoding.min_side_fraction * min(mask.shape))
    side_mm = max(extent_mm * (expand or encoding.expand), minimum_mm)
    height, width = max(8, int(round(side_mm / row_mm))), max(8, int(round(side_mm / col_mm)))
    centre_y = (max(ys) + min(ys) + 1) / 2 + shift[0] * height
    centre_x = (max(xs) + min(xs) + 1) / 2 + shift[1] * width
    return Crop(int(round(centre_y - height / 2)), int(round(centre_x - width / 2)), height, width, tuple(size))


def click_crop(mask: np.ndarray, clicks: Sequence[Click], spacing_mm: Optional[Tuple[float, float]],
               encoding: ClickEncoding, size: Tuple[int, int]) -> Tuple[Optional[Crop], np.ndarray]:
    """Where the newest click acts, and the components of ``mask`` it acts on; (None, none) when it changes nothing.

    A click acts on the part of the nerve it lies near: the components of ``mask`` whose own crop holds it, seen
    with the clicks that also fall in that crop (a click far away never stretches the crop). A positive click far
    from every component says the nerve is there: a crop around it alone, acting on no component. A negative click
    far from every component marks background that already is."""
    newest = clicks[-1]
    labels, _ = ndimage.label(mask, np.ones((3, 3)))
    near: Optional[Box] = None
    targets = []
    for index, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
        box = (rows.start, rows.stop - 1, cols.start, cols.stop - 1)
        if zoom_crop(mask, [], spacing_mm, encoding, size, box=box).contains(newest):
            targets.append(index)
            near = box if near is None else (min(near[0], box[0]), max(near[1], box[1]),
                                             min(near[2], box[2]), max(near[3], box[3]))
    target = np.isin(labels, targets)
    if near is not None:
        reach = zoom_crop(mask, [], spacing_mm, encoding, size, box=near)
        return zoom_crop(mask, [c for c in clicks if reach.contains(c)], spacing_mm, encoding, size, box=near), target
    if not newest.positive:
        return None, target
    return zoom_crop(mask, [], spacing_mm, encoding, size, box=(newest.y, newest.y, newest.x, newest.x)), target


def click_maps(clicks: Sequence[Click], crop: Crop, radius: float) -> np.ndarray:
    """(2, h, w) float32 disks of ``radius`` network pixels: positive clicks, negative clicks."""
    maps = np.zeros((2, *crop.size), np.float32)
    if not clicks:
        return maps
    rows = np.arange(crop.size[0], dtype=np.float32)[:, None]
    cols = np.arange(crop.size[1], dtype=np.float32)[None, :]
    for click in clicks:
        row, col = crop.to_network(click)
        maps[0 if click.positive else 1][(rows - row) ** 2 + (cols - col) ** 2 <= radius ** 2] = 1.0
    return maps


def next_click(prediction: np.ndarray, truth: np.ndarray) -> Optional[Click]:
    """The click a user makes next in the benchmarks' simulation (Xu et al. 2016; Sofiiuk et al. 2021):
    at the pixel deepest inside an error region (largest distance to its edge or the frame's), positive
    where nerve was missed, negative where background was taken in; None when the masks agree."""
    prediction, truth = np.asarray(prediction, bool), np.asarray(truth, bool)
    best, depth = None, 0.0
    for error, positive in ((truth & ~prediction, True), (prediction & ~truth, False)):
        if not error.any():
            continue
        distance = ndimage.distance_transform_edt(np.pad(error, 1))[1:-1, 1:-1]
        row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
        if distance[row, col] > depth:
            best, depth = Click(int(col), int(row), positive), float(distance[row, col])
    return best
