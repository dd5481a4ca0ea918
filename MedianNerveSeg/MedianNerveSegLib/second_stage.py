"""A second stage at native resolution (issue 17): the first model finds the nerve in the frame shrunk to its
input size (about 0.1 mm a pixel for this dataset's 606 x 468 frames at 288 x 384); a second network re-segments
a window of ``window_mm`` around the nerve it found, at about the expert's own 0.062 mm a pixel, and its
probability replaces the first's inside that window. The mask is then cleaned and measured as any segmenter's.

A two-stage model folder is a segmenter's (model.json, model.pt: the second network), whose model.json holds
``second_stage`` settings, with the first model's folder inside it as ``first_stage/``: it moves, loads and is
checked as one model. Trained by ``median-nerve-seg train --first-stage MODEL`` (:mod:`second_stage_training`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .classify import crop_box, nerve_centre
from .clicks import Crop
from .image import UltrasoundImage
from .inference import Prediction, Segmenter
from .postprocess import clean_mask, min_component_pixels
from .zoo import MODEL_JSON, ModelFolderError

FIRST_STAGE = "first_stage"  # the first model's folder inside a two-stage model's
WINDOW_MM = (8.0, 16.0)  # rows, columns: the dataset's nerves measure at most 3.7 x 12.9 mm
# the "review" flag's width for two-stage models (model.json review_width_mm2): their CSA interval is wider than a
# single-stage model's (1.29 against 0.88 mm^2 on average) and ranks the CSA errors better (ROC AUC 0.86 against
# 0.80); on the CPU cross-validation (docs/benchmarks/cross_validation.md) 1.4 mm^2 caught 69% of the images with
# a CSA error > 1.5 mm^2 and flagged 13% of the others, where 1.0 flagged 58%
TWO_STAGE_REVIEW_WIDTH_MM2 = 1.4
# without a spacing the window is the network's own pixels, as if the frame had the training images' pixel size
WINDOW_WITHOUT_SPACING = "window-without-spacing"


@dataclass(frozen=True)
class SecondStageSettings:
    """What a two-stage model's model.json says of its window: its size in mm (rows, columns)."""

    window_mm: Tuple[float, float] = WINDOW_MM

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "SecondStageSettings":
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown second_stage setting(s) {', '.join(unknown)}")
        window = data.get("window_mm", WINDOW_MM)
        if (not isinstance(window, (list, tuple)) or len(window) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                           for v in window)):
            raise ValueError(f"'window_mm' must be two positive numbers (rows, columns in mm), got {window!r}")
        return cls(tuple(float(v) for v in window))

    def as_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "window_mm": list(self.window_mm)}


def window_box(centre: Tuple[float, float], spacing_mm: Optional[Tuple[float, float]],
               settings: SecondStageSettings, size: Sequence[int]) -> Crop:
    """The window around ``centre`` (row, column) in pixels of a frame of ``spacing_mm``; without a spacing, one
    frame pixel per network pixel (the pixel size the second network learnt at: its masks are flagged)."""
    pixel_mm = spacing_mm or (settings.window_mm[0] / size[0], settings.window_mm[1] / size[1])
    return crop_box(centre, pixel_mm, settings.window_mm, size)


class TwoStageSegmenter(Segmenter):
    """A two-stage model folder as one Segmenter: the first stage's probability, and the second network's inside
    the window around the nerve the first stage found (the first stage's alone where it found none)."""

    def __init__(self, model: Optional[Union[str, Path]] = None, device: Optional[str] = None,
                 runtime: Optional[str] = None):
        if (runtime or "").lower() == "openvino-int8":
            raise RuntimeError("--runtime openvino-int8: a two-stage model has no int8 network (quantize makes none "
                               "for it); use --runtime openvino or torch")
        super().__init__(model, device, runtime)
        self.settings = SecondStageSettings.from_dict(self.info.second_stage)
        if not (self.model_dir / FIRST_STAGE / MODEL_JSON).is_file():
            raise ModelFolderError(f"{self.model_dir}: a two-stage model (model.json has 'second_stage') without "
                                   f"its first model's folder {FIRST_STAGE}/")
        self.first = Segmenter(self.model_dir / FIRST_STAGE, device, runtime)

    @classmethod
    def from_networks(cls, first: Segmenter, network: Any, info: Any, device: str = "cpu") -> "TwoStageSegmenter":
        """A two-stage Segmenter around a second network in memory (used during its training)."""
        segmenter = cls.from_network(network, info, device)
        segmenter.settings, segmenter.first = SecondStageSettings.from_dict(info.second_stage), first
        return segmenter

    @property
    def folders(self) -> List[Path]:
        return [folder for folder in (self.model_dir, self.first.model_dir) if folder is not None]

    def predict(self, image: UltrasoundImage, frame_index: int = 0) -> Prediction:
        """As a segmenter's, flagged :data:`WINDOW_WITHOUT_SPACING` where the frame gives no spacing."""
        prediction = super().predict(image, frame_index)
        if image.spacing_mm is None and prediction.found:
            prediction.flags += (WINDOW_WITHOUT_SPACING,)
        return prediction

    def probability(self, frame: np.ndarray, spacing_mm: Optional[Tuple[float, float]] = None) -> np.ndarray:
        first = self.first.probability(frame, spacing_mm)
        found = clean_mask(first, self.first.info.threshold,
                           min_component_pixels(self.first.info.min_component_mm2, spacing_mm, frame.shape),
                           self.first.info.min_branch_fraction)
        if not found.any():
            return first
        box = window_box(nerve_centre(found), spacing_mm, self.settings, self.info.input_size)
        window = super().probability(box.cut(np.asarray(frame, np.float32), fill=float(np.min(frame))))
        return np.where(box.region(frame.shape), box.paste(window, frame.shape), first)
