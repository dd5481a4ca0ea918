"""The image type that flows through the core: pixels plus calibrated spacing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import numpy as np


class SpacingSource:
    """Where a pixel spacing came from (recorded with every measurement)."""

    DICOM_US_REGION = "dicom-us-region"  # Sequence of Ultrasound Regions, PhysicalDeltaX/Y
    DICOM_PIXEL_SPACING = "dicom-pixel-spacing"  # PixelSpacing / ImagerPixelSpacing
    FILE_HEADER = "file-header"  # NRRD, NIfTI, MHA header
    USER = "user"  # --spacing or a calibration in the GUI
    UNKNOWN = "unknown"  # CSA is then reported in pixels only


@dataclass
class UltrasoundImage:
    """A grayscale ultrasound frame (H, W) or cine clip (T, H, W).

    ``spacing_mm`` is (row, column) in millimetres, or None when unknown: a CSA is then
    reported in pixels and flagged, never silently in mm^2.
    """

    pixels: np.ndarray
    spacing_mm: Optional[Tuple[float, float]] = None
    spacing_source: str = SpacingSource.UNKNOWN
    source: str = ""
    metadata: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pixels.ndim not in (2, 3):
            raise ValueError(f"expected a (H, W) or (T, H, W) array, got shape {self.pixels.shape}")
        if self.spacing_mm is None:
            self.spacing_source = SpacingSource.UNKNOWN

    @property
    def patient(self) -> str:
        """The file's own patient id (DICOM PatientID), '' when it has none."""
        return str(self.metadata.get("PatientID", ""))

    @property
    def side(self) -> str:
        """'left' or 'right' from the file (DICOM ImageLaterality / Laterality), '' when it says neither."""
        return {"L": "left", "R": "right"}.get(self.metadata.get("Laterality", ""), "")

    @property
    def acquired(self) -> str:
        """ISO 8601 acquisition date and time from the file, '' when unknown."""
        return str(self.metadata.get("AcquisitionDateTime", ""))

    def frame_time_s(self, index: int) -> Optional[float]:
        """Seconds from the clip's first frame to frame ``index`` (DICOM FrameTime or FrameTimeVector), or None."""
        if "FrameTimesS" in self.metadata and index < len(self.metadata["FrameTimesS"]):
            return float(self.metadata["FrameTimesS"][index])
        if "FrameTimeS" in self.metadata:
            return index * float(self.metadata["FrameTimeS"])
        return None

    @property
    def n_frames(self) -> int:
        return 1 if self.pixels.ndim == 2 else self.pixels.shape[0]

    def frame(self, index: int = 0) -> np.ndarray:
        """One (H, W) frame."""
        return self.pixels if self.pixels.ndim == 2 else self.pixels[index]

    def with_spacing(self, spacing_mm: Tuple[float, float], source: str = SpacingSource.USER) -> "UltrasoundImage":
        """A copy calibrated with a spacing (e.g. from --spacing)."""
        return UltrasoundImage(self.pixels, (float(spacing_mm[0]), float(spacing_mm[1])), source,
                               self.source, dict(self.metadata))
