"""Segmentation accuracy and CSA agreement of predicted nerve masks against ground truth.

Overlap: dice, iou, precision, recall. Boundary: symmetric Hausdorff distance and its 95th
percentile (MONAI's edge surface distances, anisotropic spacing honoured). CSA agreement:
ICC(3,1) with its 95% CI, mean absolute error and Bland-Altman bias and limits of agreement.
With unknown spacing every "mm" value is in pixels and the summary says ``"units": "px"``.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from monai.metrics.utils import get_edge_surface_distance
from scipy import stats

from .io import read_mask
from .measure import Spacing, as_binary, as_spacing

NAN = float("nan")

ROW_KEYS = ["image", "dice", "iou", "precision", "recall", "hd95_mm", "hd_mm", "area_pred_px", "area_gt_px",
            "csa_pred_mm2", "csa_gt_mm2", "csa_error_mm2", "units"]


def _ratio(num: float, den: float, empty: float) -> float:
    """num / den, or ``empty`` when den is 0."""
    return num / den if den else empty


def hausdorff(pred: np.ndarray, gt: np.ndarray, spacing: Optional[Tuple[float, float]]) -> Tuple[float, float]:
    """Symmetric Hausdorff distance and its 95th percentile between mask edges (NaN if one is empty).

    Same definition as ``monai.metrics.compute_hausdorff_distance``: the larger of the two
    directed (percentile) distances, from one surface distance computation for both.
    """
    if not pred.any() or not gt.any():
        return NAN, NAN
    with warnings.catch_warnings():  # MONAI 1.5+ passes its own deprecated argument internally
        warnings.filterwarnings("ignore", "monai.metrics.utils get_mask_edges", FutureWarning)
        _, distances, _ = get_edge_surface_distance(torch.from_numpy(pred), torch.from_numpy(gt),
                                                    spacing=spacing, symmetric=True)
    hd = max(float(d.max()) for d in distances)
    hd95 = max(float(torch.quantile(d.double(), 0.95)) for d in distances)
    return hd, hd95


def segmentation_metrics(pred: np.ndarray, gt: np.ndarray, spacing_mm: Spacing = None) -> Dict[str, float]:
    """Overlap, boundary and area metrics of one predicted mask against its ground truth.

    Both empty: dice, iou, precision and recall are 1. Otherwise precision is NaN when the
    prediction is empty and recall is NaN when the ground truth is empty. Hausdorff
    distances are NaN when either mask is empty; ``hd_mm`` and ``hd95_mm`` are in pixels when
    ``spacing_mm`` is None (``hd95_px`` always is), and the CSA values are then NaN.
    """
    p, g = as_binary(pred), as_binary(gt)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in shape")
    spacing = as_spacing(spacing_mm)
    tp, n_pred, n_gt = int(np.count_nonzero(p & g)), int(p.sum()), int(g.sum())
    both_empty = n_pred + n_gt == 0
    hd_px, hd95_px = hausdorff(p, g, None)
    hd, hd95 = hausdorff(p, g, spacing) if spacing else (hd_px, hd95_px)
    pixel_mm2 = spacing[0] * spacing[1] if spacing else NAN
    return {
        "dice": _ratio(2 * tp, n_pred + n_gt, 1.0),
        "iou": _ratio(tp, n_pred + n_gt - tp, 1.0),
        "precision": _ratio(tp, n_pred, 1.0 if both_empty else NAN),
        "recall": _ratio(tp, n_gt, 1.0 if both_empty else NAN),
        "hd_mm": hd,
        "hd95_mm": hd95,
        "hd95_px": hd95_px,
        "area_pred_px": float(n_pred),
        "area_gt_px": float(n_gt),
        "csa_pred_mm2": n_pred * pixel_mm2,
        "csa_gt_mm2": n_gt * pixel_mm2,
    }


def _icc_from_f(f: float, k: int) -> float:
    """ICC(C,1) from the ratio F = MS_rows / MS_error (McGraw & Wong 1996)."""
    return 1.0 if math.isinf(f) else (f - 1) / (f + k - 1)


def csa_agreement(pred_mm2: Sequence[float], gt_mm2: Sequence[float]) -> Dict[str, float]:
    """Agreement of predicted and reference CSAs (pairs with a NaN are dropped).

    icc: ICC(3,1) = ICC(C,1), two-way mixed, consistency, single measures, from the two-way
    ANOVA mean squares; icc_ci_low/high: its 95% CI from the F distribution (McGraw & Wong
    1996). Bland-Altman: bias = mean(pred - gt), sd_diff (ddof 1), loa = bias -/+ 1.96 sd.
    """
    x = np.column_stack([np.asarray(pred_mm2, float), np.asarray(gt_mm2, float)])
    x = x[~np.isnan(x).any(axis=1)]
    n, k = x.shape
    diff = x[:, 0] - x[:, 1]
    bias = float(diff.mean()) if n else NAN
    sd = float(diff.std(ddof=1)) if n > 1 else NAN
    icc, low, high = _icc(x) if n > 1 else (NAN, NAN, NAN)
    return {"icc": icc, "icc_ci_low": low, "icc_ci_high": high,
            "mae": float(np.abs(diff).mean()) if n else NAN, "bias": bias, "sd_diff": sd,
            "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd, "n": n}


def _icc(x: np.ndarray) -> Tuple[float, float, float]:
    """ICC(3,1) and its 95% CI for an (n targets, k raters) table."""
    n, k = x.shape
    grand = x.mean()
    row_means, col_means = x.mean(axis=1, keepdims=True), x.mean(axis=0, keepdims=True)
    df_rows, df_error = n - 1, (n - 1) * (k - 1)
    ms_rows = k * ((row_means - grand) ** 2).sum() / df_rows
    ms_error = ((x - row_means - col_means + grand) ** 2).sum() / df_error
    if ms_error == 0:
        f = math.inf if ms_rows > 0 else NAN
    else:
        f = ms_rows / ms_error
    f_low = f / stats.f.ppf(0.975, df_rows, df_error)
    f_high = f * stats.f.ppf(0.975, df_error, df_rows)
    return _icc_from_f(f, k), _icc_from_f(f_low, k), _icc_from_f(f_high, k)


def _sd(v: np.ndarray) -> float:
    return v.std(ddof=1) if v.size > 1 else NAN


def _stat(values: Sequence[float], fn) -> float:
    """``fn`` of the non-NaN values, NaN if there are none."""
    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    return float(fn(v)) if v.size else NAN


def summarize(rows: Sequence[Mapping[str, Any]], spacing_mm: Spacing = None) -> Dict[str, Any]:
    """Summary over per-image rows (keys of ``ROW_KEYS``); NaNs are left out of each statistic.

    With ``spacing_mm`` None the "mm" values are taken to be pixels (``"units": "px"``).
    """
    spacing = as_spacing(spacing_mm)
    col = {key: [float(r[key]) for r in rows] for key in ROW_KEYS[1:-1]}
    dice = np.asarray(col["dice"])
    agreement = csa_agreement(col["csa_pred_mm2"], col["csa_gt_mm2"])
    return {
        "n": len(rows),
        "units": "mm" if spacing else "px",
        "spacing_mm": list(spacing) if spacing else None,
        "spacing_known": spacing is not None,
        "dice_mean": _stat(dice, np.mean),
        "dice_sd": _stat(dice, _sd),
        "dice_median": _stat(dice, np.median),
        "dice_iqr": _stat(dice, stats.iqr),
        "iou_mean": _stat(col["iou"], np.mean),
        "precision_mean": _stat(col["precision"], np.mean),
        "recall_mean": _stat(col["recall"], np.mean),
        "found_rate": _stat(dice >= 0.5, np.mean),
        "hd95_mean_mm": _stat(col["hd95_mm"], np.mean),
        "hd95_median_mm": _stat(col["hd95_mm"], np.median),
        "hd_mean_mm": _stat(col["hd_mm"], np.mean),
        "hd95_n_excluded": int(np.isnan(col["hd95_mm"]).sum()),
        "csa_pred_mean_mm2": _stat(col["csa_pred_mm2"], np.mean),
        "csa_gt_mean_mm2": _stat(col["csa_gt_mm2"], np.mean),
        "csa_gt_sd_mm2": _stat(col["csa_gt_mm2"], _sd),
        "csa_mae_mm2": agreement["mae"],
        "csa_icc": agreement["icc"],
        "csa_icc_ci": [agreement["icc_ci_low"], agreement["icc_ci_high"]],
        "csa_bias_mm2": agreement["bias"],
        "csa_sd_diff_mm2": agreement["sd_diff"],
        "csa_loa_low_mm2": agreement["loa_low"],
        "csa_loa_high_mm2": agreement["loa_high"],
    }


def _find_prediction(pred_dir: Path, stem: str) -> Optional[Path]:
    for candidate in (pred_dir / f"{stem}_mask.png", pred_dir / f"{stem}.png"):
        if candidate.is_file():
            return candidate
    return None


def _row(name: str, pred: np.ndarray, gt: np.ndarray, spacing: Optional[Tuple[float, float]]) -> Dict[str, Any]:
    m = segmentation_metrics(pred, gt, spacing)
    if spacing is None:
        m["csa_pred_mm2"], m["csa_gt_mm2"] = m["area_pred_px"], m["area_gt_px"]
    m["csa_error_mm2"] = m["csa_pred_mm2"] - m["csa_gt_mm2"]
    m.update(image=name, units="mm" if spacing else "px")
    return {key: m[key] for key in ROW_KEYS}


def _json_ready(value: Any) -> Any:
    """NaN and infinity become None (JSON null), recursively."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_csv(path: Path, rows: List[Dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_KEYS)
        writer.writeheader()
        writer.writerows({k: "" if _json_ready(v) is None else v for k, v in r.items()} for r in rows)


def evaluate_folders(pred_dir: Union[str, Path], gt_dir: Union[str, Path], out_dir: Union[str, Path],
                     spacing_mm: Spacing = None) -> Dict[str, Any]:
    """Evaluate ``pred_dir`` against every ``<stem>.png`` of ``gt_dir``.

    The prediction is ``<stem>_mask.png`` or ``<stem>.png``; a missing one counts as empty and
    is listed in ``missing_predictions``. Writes ``metrics.csv`` (one row per image, NaN as an
    empty cell) and ``summary.json`` (NaN as null) to ``out_dir`` and returns that summary.
    """
    pred_dir, out_dir, spacing = Path(pred_dir), Path(out_dir), as_spacing(spacing_mm)
    gt_paths = sorted(Path(gt_dir).glob("*.png"))
    if not gt_paths:
        raise FileNotFoundError(f"{gt_dir}: no ground-truth <stem>.png masks")
    rows, missing = [], []
    for gt_path in gt_paths:
        gt = read_mask(gt_path)
        pred_path = _find_prediction(pred_dir, gt_path.stem)
        if pred_path is None:
            missing.append(gt_path.stem)
        pred = read_mask(pred_path) if pred_path else np.zeros_like(gt)
        rows.append(_row(gt_path.stem, pred, gt, spacing))
    summary = _json_ready(dict(summarize(rows, spacing), missing_predictions=missing))
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(out_dir / "metrics.csv", rows)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return summary
