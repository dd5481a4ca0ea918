"""The one metrics table: every figure the project reports, declared once (key, label, unit, digits).

A per-image metric (``per_image``) is summarised by the statistics of :data:`STATS` under the keys
``<key>_<stat>`` (``_mm`` appended for a length: ``hd95_mean_mm``). Evaluation's summary and
report.md, the benchmark and compare tables and the Slicer comparison take their titles and
digits from here; a new metric is one line of :data:`METRICS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple


@dataclass(frozen=True)
class Metric:
    """A reported figure; ``unit`` is "", "mm", "mm2", "ms" or "s"."""

    key: str
    label: str
    unit: str
    digits: int
    per_image: bool = False

    @property
    def column(self) -> str:
        """Its column in evaluation's per-image rows (``hd95`` -> ``hd95_mm``)."""
        return self.key + self.suffix

    @property
    def suffix(self) -> str:
        return "_mm" if self.unit == "mm" else ""

    def summary_key(self, stat: str) -> str:
        """Its key in a summary (``hd95``, "mean" -> ``hd95_mean_mm``)."""
        return f"{self.key}_{stat}{self.suffix}"


# The statistics a per-image metric is summarised by, and how each is titled after the label.
STATS: Dict[str, str] = {"mean": "", "sd": " SD", "median": " median", "q1": " q1", "q3": " q3"}

METRICS: Tuple[Metric, ...] = (
    Metric("dice", "DSC", "", 3, per_image=True),
    Metric("iou", "IoU", "", 3, per_image=True),
    Metric("precision", "Precision", "", 3, per_image=True),
    Metric("recall", "Recall", "", 3, per_image=True),
    Metric("hd", "HD", "mm", 2, per_image=True),
    Metric("hd95", "HD95", "mm", 2, per_image=True),
    Metric("auc", "AUC", "", 3, per_image=True),
    Metric("dice_tp_mean", "DSC of TP images", "", 3),
    Metric("found_rate", "Found (DSC >= 0.5)", "", 3),
    Metric("csa_pred_mean_mm2", "Predicted CSA mean", "mm2", 2),
    Metric("csa_gt_mean_mm2", "Reference CSA mean", "mm2", 2),
    Metric("csa_gt_sd_mm2", "Reference CSA SD", "mm2", 2),
    Metric("csa_mae_mm2", "CSA MAE", "mm2", 2),
    Metric("csa_bias_mm2", "CSA bias", "mm2", 2),
    Metric("csa_sd_diff_mm2", "SD of CSA differences", "mm2", 2),
    Metric("csa_loa_low_mm2", "CSA LoA low", "mm2", 2),
    Metric("csa_loa_high_mm2", "CSA LoA high", "mm2", 2),
    Metric("csa_icc", "ICC(3,1)", "", 3),
    Metric("csa_kappa", "Cohen's kappa, enlarged or not (inlet cut-off)", "", 3),
    Metric("detection_precision", "Detection precision", "", 3),
    Metric("detection_recall", "Detection recall", "", 3),
    Metric("detection_map", "Detection mAP", "", 3),
    Metric("n_images", "Images", "", 0),
    Metric("parameters", "Parameters", "", 0),
    Metric("cpu_ms", "CPU time/frame", "ms", 1),
    Metric("training_seconds", "Training time", "s", 0),
    Metric("epochs", "Epochs", "", 0),
)
PER_IMAGE: Tuple[Metric, ...] = tuple(m for m in METRICS if m.per_image)
MISSING = "n/a"

_UNIT_TEXT = {"mm2": "mm^2"}
_PIXEL_UNIT = {"mm": "px", "mm2": "px"}


def _index() -> Dict[str, Tuple[Metric, Optional[str]]]:
    """Every key the table answers to: (metric, statistic or None)."""
    keys: Dict[str, Tuple[Metric, Optional[str]]] = {}
    for m in METRICS:
        keys[m.key] = keys[m.column] = (m, None)
        if m.per_image:
            keys.update({m.summary_key(stat): (m, stat) for stat in STATS})
    return keys


_KEYS = _index()


def _lookup(key: str) -> Tuple[Metric, Optional[str]]:
    try:
        return _KEYS[key]
    except KeyError:
        raise KeyError(f"{key!r} is not in the metrics table (MedianNerveSegLib.metrics.METRICS)") from None


def metric(key: str) -> Metric:
    """The metric of a key: its own, its per-image column or one of its summary keys (``dice_sd``)."""
    return _lookup(key)[0]


def heading(key: str, px: bool = False) -> str:
    """The title of a key with its unit: "HD95 (mm)", "DSC SD"; ``px``: lengths and areas in pixels."""
    m, stat = _lookup(key)
    unit = _PIXEL_UNIT.get(m.unit, m.unit) if px else m.unit
    unit = _UNIT_TEXT.get(unit, unit)
    return m.label + STATS.get(stat or "mean", "") + (f" ({unit})" if unit else "")


def format_value(key: str, value: Any) -> str:
    """A value with its metric's digits; :data:`MISSING` for None or NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    digits = metric(key).digits
    return f"{value:,.0f}" if digits == 0 else f"{value:.{digits}f}"


def markdown_table(rows: Iterable[Mapping[str, Any]], keys: Sequence[str],
                   text: Sequence[Tuple[str, str]] = (("model", "model"),),
                   text_after: Sequence[Tuple[str, str]] = ()) -> str:
    """A Markdown table, a row per mapping: text columns ((key, title) pairs), the metrics ``keys``
    titled and formatted from the table, then the ``text_after`` columns."""
    titles = [t for _, t in text] + [heading(key) for key in keys] + [t for _, t in text_after]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for row in rows:
        cells = [MISSING if row.get(k) is None else str(row.get(k)) for k, _ in text]
        cells += [format_value(key, row.get(key)) for key in keys]
        cells += [MISSING if row.get(k) is None else str(row.get(k)) for k, _ in text_after]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
