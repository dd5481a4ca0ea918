"""THE results format: one row per segmented or measured frame, in ``measurements.csv``.

The columns, their types and their text form are declared once here (:data:`COLUMNS`); the
CLI, background jobs, evaluation and the Slicer import read and write rows only through
:func:`read_results` and :class:`ResultsWriter`. Rows are appended and flushed as they are
produced, so an interrupted run keeps every finished row.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

PathLike = Union[str, Path]
RESULTS_FILE = "measurements.csv"
ENSEMBLE_JOIN = " + "  # an ensemble's model: its members' name@version joined (a version may end in +int8)


@dataclass
class FrameResult:
    """One frame's result, or one file's error (``error`` non-empty, the measurements empty).

    ``image`` is the input path as given; ``mask`` and ``probability`` are the names of the
    files written next to the results file. ``spacing_mm`` is (row, col) in mm, None when
    unknown: then ``area_mm2`` and ``perimeter_mm`` are None and ``flags`` says so. ``csa_low_mm2`` and
    ``csa_high_mm2`` are the CSA interval of a segmented frame (uncertainty.py), "review" in ``flags`` when wide. ``side`` is
    "left", "right" or "" (unknown), ``level`` "inlet", "forearm" or "outlet", ``acquired`` an ISO
    8601 date and time, ``time_s`` the frame's time in its clip (None when the file has none).
    """

    image: str
    frame: int = 0
    patient: str = ""
    side: str = ""
    level: str = ""
    acquired: str = ""
    time_s: Optional[float] = None
    found: Optional[bool] = None
    confidence: Optional[float] = None
    area_mm2: Optional[float] = None
    csa_low_mm2: Optional[float] = None
    csa_high_mm2: Optional[float] = None
    area_px: Optional[int] = None
    perimeter_mm: Optional[float] = None
    circularity: Optional[float] = None
    flattening_ratio: Optional[float] = None
    ellipse_ratio: Optional[float] = None
    n_components: Optional[int] = None
    spacing_mm: Optional[Tuple[float, float]] = None
    spacing_source: str = ""
    model: str = ""
    ms: Optional[float] = None
    mask: str = ""
    probability: str = ""
    flags: List[str] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


COLUMNS = [f.name for f in fields(FrameResult)]
# Columns added after the first version: an older file without them is read (empty), never continued.
ADDED_COLUMNS = ("side", "level", "acquired", "time_s", "ellipse_ratio", "csa_low_mm2", "csa_high_mm2")
_DIGITS = {"confidence": 4, "area_mm2": 6, "csa_low_mm2": 6, "csa_high_mm2": 6, "perimeter_mm": 4, "circularity": 4, "flattening_ratio": 4,
           "ellipse_ratio": 4, "time_s": 3, "ms": 1}


def _text(name: str, value: Any) -> str:
    """A cell: empty for None, fixed digits for floats, ROWxCOL for a spacing, ';'-joined flags."""
    if value is None:
        return ""
    if name == "spacing_mm":
        return "{:.6g}x{:.6g}".format(*value)
    if name == "flags":
        return ";".join(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{_DIGITS.get(name, 4)}f}" if math.isfinite(value) else ""
    return str(value)


def _optional(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    return lambda text: convert(text) if text != "" else None


def _bool(text: str) -> bool:
    if text not in ("yes", "no"):
        raise ValueError(f"expected yes or no, got {text!r}")
    return text == "yes"


def _spacing(text: str) -> Tuple[float, float]:
    row, col = text.split("x")
    return float(row), float(col)


_PARSE: Dict[str, Callable[[str], Any]] = {
    "frame": int, "found": _optional(_bool), "confidence": _optional(float), "area_mm2": _optional(float),
    "csa_low_mm2": _optional(float), "csa_high_mm2": _optional(float),
    "area_px": _optional(int), "perimeter_mm": _optional(float), "circularity": _optional(float),
    "flattening_ratio": _optional(float), "ellipse_ratio": _optional(float), "time_s": _optional(float),
    "n_components": _optional(int), "spacing_mm": _optional(_spacing),
    "ms": _optional(float), "flags": lambda text: text.split(";") if text else [],
}


def as_row(result: FrameResult) -> Dict[str, str]:
    """The CSV cells of a result."""
    return {name: _text(name, getattr(result, name)) for name in COLUMNS}


def standing_rows(rows: Sequence[FrameResult]) -> List[FrameResult]:
    """One row per (image, frame) of a results file, in file order: a rerun appends a retried frame's row,
    and the one that stands is the last measured one, else the last error."""
    standing: Dict[Tuple[str, Optional[int]], FrameResult] = {}
    for row in rows:
        key = (row.image, row.frame)
        if row.ok or key not in standing or not standing[key].ok:
            standing.pop(key, None)
            standing[key] = row
    return list(standing.values())


def read_results(path: PathLike) -> List[FrameResult]:
    """Every row of a results file, typed; a file of another format is a one-line ValueError."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in COLUMNS if c not in header and c not in ADDED_COLUMNS]
        if missing:
            raise ValueError(f"{path}: not a results file of this version (missing columns: {', '.join(missing)})")
        present = [c for c in COLUMNS if c in header]
        results = []
        for number, row in enumerate(reader, start=2):
            if None in row or None in row.values():  # more or fewer cells than columns: a cut or foreign line
                raise ValueError(f"{path}, line {number}: unreadable row ({len(row.get(None) or [])} extra cells or "
                                 f"{sum(v is None for v in row.values())} missing of {len(header)})")
            try:
                results.append(FrameResult(**{name: _PARSE.get(name, str)(row[name] or "") for name in present}))
            except (TypeError, ValueError) as error:
                raise ValueError(f"{path}, line {number}: unreadable row ({error})") from None
    return results


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1)


class ResultsWriter:
    """Appends rows to a results file, flushed to disk one by one.

    An existing file of the same columns is continued (a resumed run); a file of other
    columns is refused rather than overwritten.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existing = self.can_continue(self.path)
        self._handle = open(self.path, "a", newline="", encoding="utf-8")
        if existing and _last_byte(self.path) != b"\n":  # a whole last row without its line end: end it first
            self._handle.write("\r\n")
        self._writer = csv.DictWriter(self._handle, fieldnames=COLUMNS)
        if not existing:
            self._writer.writeheader()
            self._flush()

    @staticmethod
    def can_continue(path: Path) -> bool:
        """True when ``path`` is a results file of this version to append to, False when there is none yet;
        a file of another format or version is refused (ValueError naming it), never written to."""
        if not (path.is_file() and path.stat().st_size > 0):
            return False
        read_results(path)  # refuses a foreign file
        with open(path, newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
        if header != COLUMNS:
            raise ValueError(f"{path}: written by an older version (without the columns "
                             f"{', '.join(c for c in COLUMNS if c not in header)}); give another --out")
        return True

    def write(self, result: FrameResult) -> None:
        self._writer.writerow(as_row(result))
        self._flush()

    def _flush(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
