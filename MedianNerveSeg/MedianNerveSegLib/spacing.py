"""The one parser of pixel spacing: user options, file headers and stored records all use it."""

from __future__ import annotations

import math
import re
from typing import Any, Optional, Tuple

SPACING_RANGE_MM = (0.005, 1.0)  # plausible ultrasound pixel spacing, mm/pixel


class SpacingError(ValueError):
    """A spacing that is not one or two plausible, finite, positive millimetre values."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what}: {reason}")
        self.reason = reason


def _values(value: Any) -> Tuple[Any, ...]:
    """The one or two raw values given: from a string ("0.062", "0.062,0.07", "0.062x0.07"), a number or a pair."""
    if isinstance(value, (str, bytes)):
        text = value.decode() if isinstance(value, bytes) else value
        return tuple(part for part in re.split(r"[,x\s]+", text.strip().lower()) if part)
    try:
        return tuple(value)
    except TypeError:
        return (value,)


def _shown(value: Any) -> str:
    """The value as the user would write it (numpy arrays and scalars as plain numbers)."""
    return repr(value.tolist()) if hasattr(value, "tolist") else repr(value)


def _as_float(raw: Any, what: str, value: Any) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise SpacingError(what, f"spacing {_shown(value)} is not a number in mm") from None


def parse_spacing(value: Any, what: str = "spacing") -> Optional[Tuple[float, float]]:
    """(row, col) spacing in mm from a number, a string or a (row, col) pair; None stays None.

    Raises :class:`SpacingError` (one line naming ``what`` and ``value``) for anything that is
    not 1 or 2 finite values within :data:`SPACING_RANGE_MM`.
    """
    if value is None:
        return None
    raw = _values(value)
    if len(raw) not in (1, 2):
        raise SpacingError(what, f"spacing {_shown(value)} must be one value or a (row, col) pair in mm")
    pair = [_as_float(v, what, value) for v in raw]
    row, col = (pair[0], pair[0]) if len(pair) == 1 else pair
    lo, hi = SPACING_RANGE_MM
    for number in (row, col):
        if not math.isfinite(number) or number <= 0:
            raise SpacingError(what, f"spacing {_shown(value)} must be finite and positive (mm)")
        if not lo <= number <= hi:
            raise SpacingError(what, f"spacing {_shown(value)} mm is outside the plausible "
                                     f"ultrasound range {lo}-{hi} mm/pixel")
    return row, col
