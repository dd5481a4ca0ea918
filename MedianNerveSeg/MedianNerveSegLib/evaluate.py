"""Segmentation accuracy, detection and CSA agreement of predicted nerve masks against ground truth.

Overlap: dice, iou, precision, recall. Boundary: symmetric Hausdorff distance and its 95th
percentile (MONAI's edge surface distances, anisotropic spacing honoured). Pixel-wise ROC AUC
of a probability map (MONAI's ``compute_roc_auc``). Detection as in Di Cosmo et al. 2021 and
Smerilli et al. 2022: TP/FP/FN per image, precision, recall and AP ranked by confidence.
CSA agreement: ICC(3,1) with its 95% CI, mean absolute error and Bland-Altman bias and limits
of agreement. With unknown spacing every "mm" value is in pixels and the summary says
``"units": "px"``. :func:`evaluate_folders` also writes a paper-style ``report.md`` and
Bland-Altman and scatter plots of the CSA. Without any probability map the AUC is left out.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import stats

from .io import read_image, read_mask
from .data import patient_id
from .metrics import PER_IMAGE, STATS, Metric, format_value, heading, metric
from .report import inlet_cutoff
from .measure import Spacing, as_binary, as_spacing
from .results import RESULTS_FILE, read_results

NAN = float("nan")

ROW_KEYS = ["image", "dice", "iou", "precision", "recall", "hd95_mm", "hd_mm", "hd95_px", "hd_px", "auc",
            "area_pred_px", "area_gt_px", "csa_pred_mm2", "csa_gt_mm2", "csa_error_mm2", "bbox_pred", "bbox_gt",
            "box_iou", "confidence", "detection", "units", "error"]
NUMERIC_KEYS = [k for k in ROW_KEYS if k not in ("image", "bbox_pred", "bbox_gt", "detection", "units", "error")]

# Detection rule of Di Cosmo et al. 2021 and Smerilli et al. 2022: "We considered a TP prediction if
# the detected bounding box overlapped the bounding box surrounding the ground-truth segmentation for
# at least 70% and had confidence higher than 0.98. Otherwise, the nerve detection was considered as
# FP. We considered a FN when no bounding box was predicted at all." "Overlap" is read as the
# intersection over union of the two boxes: the PASCAL VOC "area of overlap" criterion, which the
# mAP they report (a Mask R-CNN detection metric) is defined with. The other reading, the fraction
# of the ground-truth box covered, would count any box enclosing the nerve (the whole image) as a TP.
BOX_IOU_THRESHOLD = 0.7
CONFIDENCE_THRESHOLD = 0.98
Box = Tuple[int, int, int, int]


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
    import torch  # here, not at import: refine uses this file's DSC, and runs without torch on OpenVINO
    from monai.metrics.utils import get_edge_surface_distance

    with warnings.catch_warnings():  # MONAI 1.5+ passes its own deprecated argument internally
        warnings.filterwarnings("ignore", "monai.metrics.utils get_mask_edges", FutureWarning)
        _, distances, _ = get_edge_surface_distance(torch.from_numpy(pred), torch.from_numpy(gt),
                                                    spacing=spacing, symmetric=True)
    hd = max(float(d.max()) for d in distances)
    hd95 = max(float(torch.quantile(d.double(), 0.95)) for d in distances)
    return hd, hd95


def roc_auc(probability: Optional[np.ndarray], gt: np.ndarray) -> float:
    """Pixel-wise ROC AUC of a probability map against a binary mask (MONAI, ties count half).

    NaN without a probability map or when the ground truth has a single class.
    """
    if probability is None:
        return NAN
    probability = np.asarray(probability, np.float64)
    if probability.shape != gt.shape:
        raise ValueError(f"probability {probability.shape} and ground truth {gt.shape} differ in shape")
    if gt.all() or not gt.any():
        return NAN
    import torch
    from monai.metrics import compute_roc_auc

    return float(compute_roc_auc(torch.from_numpy(probability.ravel()), torch.from_numpy(gt.ravel().astype(np.int64))))


def bounding_box(mask: np.ndarray) -> Optional[Box]:
    """(row0, col0, row1, col1) of the nonzero pixels, ends exclusive; None for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def box_iou(a: Optional[Box], b: Optional[Box]) -> float:
    """Intersection over union of two boxes (pixel areas); NaN when either is missing."""
    if a is None or b is None:
        return NAN
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter / (area(a) + area(b) - inter)


def detection_outcome(pred_box: Optional[Box], gt_box: Optional[Box], confidence: Optional[float] = None,
                      confidence_threshold: float = CONFIDENCE_THRESHOLD) -> str:
    """"TP", "FP", "FN" or "TN" of one image by the papers' rule (see ``BOX_IOU_THRESHOLD``).

    A prediction is a TP when its box has IoU >= 0.7 with the ground-truth box and its confidence
    is above the threshold (without a confidence, a predicted mask counts as confident), else FP;
    no prediction is a FN, or a TN when there is no nerve either.
    """
    if pred_box is None:
        return "TN" if gt_box is None else "FN"
    confident = confidence is None or confidence > confidence_threshold
    return "TP" if confident and box_iou(pred_box, gt_box) >= BOX_IOU_THRESHOLD else "FP"


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """The Dice similarity coefficient of two masks (1 when both are empty), without the other metrics' cost."""
    p, g = as_binary(pred), as_binary(gt)
    return _ratio(2 * int(np.count_nonzero(p & g)), int(p.sum()) + int(g.sum()), 1.0)


def segmentation_metrics(pred: np.ndarray, gt: np.ndarray, spacing_mm: Spacing = None,
                         probability: Optional[np.ndarray] = None, confidence: Optional[float] = None,
                         confidence_threshold: float = CONFIDENCE_THRESHOLD) -> Dict[str, Any]:
    """Overlap, boundary, area and detection metrics of one predicted mask against its ground truth.

    Both empty: dice, iou, precision and recall are 1. Otherwise precision is NaN when the
    prediction is empty and recall is NaN when the ground truth is empty. Hausdorff
    distances are NaN when either mask is empty; ``hd_mm`` and ``hd95_mm`` are in pixels when
    ``spacing_mm`` is None (``hd_px`` and ``hd95_px`` always are), and the CSA values are then
    NaN. ``auc``: see :func:`roc_auc`; ``detection``: see :func:`detection_outcome`.
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
    box_pred, box_gt = bounding_box(p), bounding_box(g)
    return {
        "dice": _ratio(2 * tp, n_pred + n_gt, 1.0),
        "iou": _ratio(tp, n_pred + n_gt - tp, 1.0),
        "precision": _ratio(tp, n_pred, 1.0 if both_empty else NAN),
        "recall": _ratio(tp, n_gt, 1.0 if both_empty else NAN),
        "hd_mm": hd,
        "hd95_mm": hd95,
        "hd95_px": hd95_px,
        "hd_px": hd_px,
        "auc": roc_auc(probability, g),
        "area_pred_px": float(n_pred),
        "area_gt_px": float(n_gt),
        "csa_pred_mm2": n_pred * pixel_mm2,
        "csa_gt_mm2": n_gt * pixel_mm2,
        "bbox_pred": box_pred,
        "bbox_gt": box_gt,
        "box_iou": box_iou(box_pred, box_gt),
        "confidence": NAN if confidence is None else float(confidence),
        "detection": detection_outcome(box_pred, box_gt, confidence, confidence_threshold),
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
    t = float(stats.t.ppf(0.975, n - 1)) if n > 1 else NAN
    se_bias, se_loa = (sd / math.sqrt(n), sd * math.sqrt(3 / n)) if n > 1 else (NAN, NAN)
    loa_low, loa_high = bias - 1.96 * sd, bias + 1.96 * sd
    return {"icc": icc, "icc_ci_low": low, "icc_ci_high": high,
            "mae": float(np.abs(diff).mean()) if n else NAN, "bias": bias, "sd_diff": sd,
            "loa_low": loa_low, "loa_high": loa_high, "n": n,
            # 95% CIs of the bias and of each limit (Bland & Altman 1999: SE of a limit ~ sd sqrt(3 / n))
            "bias_ci": [bias - t * se_bias, bias + t * se_bias],
            "loa_low_ci": [loa_low - t * se_loa, loa_low + t * se_loa],
            "loa_high_ci": [loa_high - t * se_loa, loa_high + t * se_loa]}


def patient_means(rows: Sequence[Mapping[str, Any]]) -> Tuple[List[str], np.ndarray, np.ndarray]:
    """Patients (from the image names, PzNNN) and their mean predicted and reference CSA."""
    by_patient: Dict[str, List[Tuple[float, float]]] = {}
    for row in rows:
        pair = (_number(row.get("csa_pred_mm2")), _number(row.get("csa_gt_mm2")))
        if not any(math.isnan(v) for v in pair):
            by_patient.setdefault(patient_id(str(row.get("image", ""))), []).append(pair)
    patients = sorted(by_patient)
    means = np.array([np.mean(by_patient[p], axis=0) for p in patients]).reshape(-1, 2)
    return patients, means[:, 0], means[:, 1]


def per_patient_agreement(rows: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """CSA agreement over patient means: several images of one patient are not independent pairs."""
    patients, pred, gt = patient_means(rows)
    agreement = csa_agreement(pred, gt)
    return {"n_patients": len(patients), **{key: agreement[key] for key in (
        "mae", "bias", "bias_ci", "loa_low", "loa_low_ci", "loa_high", "loa_high_ci", "icc", "icc_ci_low",
        "icc_ci_high")}}


def class_agreement(pred_mm2: Sequence[float], gt_mm2: Sequence[float], threshold: float) -> Dict[str, Any]:
    """Enlarged (CSA >= ``threshold``) or not, by the prediction and by the reference: the 2 x 2 counts and
    Cohen's kappa (NaN when the expected agreement is 1, e.g. every image in one class)."""
    x = np.column_stack([np.asarray(pred_mm2, float), np.asarray(gt_mm2, float)])
    x = x[~np.isnan(x).any(axis=1)]
    pred, gt = x[:, 0] >= threshold, x[:, 1] >= threshold
    table = {"both_enlarged": int((pred & gt).sum()), "only_predicted_enlarged": int((pred & ~gt).sum()),
             "only_reference_enlarged": int((~pred & gt).sum()), "neither": int((~pred & ~gt).sum())}
    n = len(x)
    observed = (table["both_enlarged"] + table["neither"]) / n if n else NAN
    expected = (pred.mean() * gt.mean() + (1 - pred.mean()) * (1 - gt.mean())) if n else NAN
    kappa = (observed - expected) / (1 - expected) if n and expected < 1 else NAN
    return {"threshold_mm2": threshold, **table, "kappa": float(kappa)}


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


STAT_FUNCTIONS = {"mean": np.mean, "sd": _sd, "median": np.median,
                  "q1": lambda v: np.percentile(v, 25), "q3": lambda v: np.percentile(v, 75)}  # of metrics.STATS


def describe(values: Sequence[float], metric: Metric) -> Dict[str, float]:
    """The statistics of :data:`metrics.STATS` (SD with ddof 1) of the non-NaN values, under the metric's keys."""
    return {metric.summary_key(stat): _stat(values, STAT_FUNCTIONS[stat]) for stat in STATS}


def average_precision(confidences: Sequence[float], hits: Sequence[bool], n_positive: int) -> float:
    """PASCAL VOC all-point interpolated AP of detections ranked by confidence (ties keep input order).

    ``hits[i]``: detection i matches a ground-truth nerve; ``n_positive``: images with a nerve
    (missed ones lower the recall reached). NaN when there is no nerve.
    """
    if n_positive == 0:
        return NAN
    hit = np.asarray(hits, bool)[np.argsort(-np.asarray(confidences, float), kind="stable")]
    tp, fp = np.cumsum(hit), np.cumsum(~hit)
    recall = np.concatenate([[0.0], tp / n_positive, [1.0]])
    precision = np.concatenate([[0.0], tp / np.maximum(tp + fp, 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def _ranked_ap(rows: Sequence[Mapping[str, Any]]) -> Tuple[float, str]:
    """AP at box IoU >= 0.7 over the predicted masks, and how it was (or why it was not) computed."""
    predicted = [r for r in rows if _number(r.get("area_pred_px")) > 0]
    confidences = [_number(r.get("confidence")) for r in predicted]
    unranked = int(np.isnan(confidences).sum())
    if unranked:
        return NAN, f"not computed: {unranked} of {len(predicted)} predicted masks have no confidence to rank by"
    hits = [_number(r.get("box_iou")) >= BOX_IOU_THRESHOLD for r in predicted]
    n_positive = sum(_number(r.get("area_gt_px")) > 0 for r in rows)
    return (average_precision(confidences, hits, n_positive),
            f"VOC all-point AP (one class, so mAP = AP) at box IoU >= {BOX_IOU_THRESHOLD}, "
            f"{len(predicted)} predictions ranked by confidence, {n_positive} nerves")


def detection_summary(rows: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Counts of the per-image detection outcomes, precision TP/(TP+FP), recall TP/(TP+FN) and mAP."""
    count = Counter(r.get("detection") for r in rows)
    tp, fp, fn = count["TP"], count["FP"], count["FN"]
    ap, note = _ranked_ap(rows)
    return {"detection_tp": tp, "detection_fp": fp, "detection_fn": fn, "detection_tn": count["TN"],
            "detection_precision": _ratio(tp, tp + fp, NAN), "detection_recall": _ratio(tp, tp + fn, NAN),
            "detection_map": ap, "detection_map_note": note, "detection_box_iou_threshold": BOX_IOU_THRESHOLD}


def _number(value: Any) -> float:
    """float(value), NaN for None."""
    return NAN if value is None else float(value)


def summarize(rows: Sequence[Mapping[str, Any]], spacing_mm: Spacing = None) -> Dict[str, Any]:
    """Summary over per-image rows (keys of ``ROW_KEYS``); NaNs are left out of each statistic.

    Mean, SD, median, q1 and q3 of each per-image metric of the metrics table, detection counts, precision,
    recall and mAP (:func:`detection_summary`) and CSA agreement (:func:`csa_agreement`).
    The ``auc_*`` keys are present only when some row has an AUC. With ``spacing_mm`` None the
    "mm" values are taken to be pixels (``"units": "px"``).
    """
    spacing = as_spacing(spacing_mm)
    col = {key: np.array([_number(r.get(key)) for r in rows]) for key in NUMERIC_KEYS}
    dice = col["dice"]
    agreement = csa_agreement(col["csa_pred_mm2"], col["csa_gt_mm2"])
    summary: Dict[str, Any] = {
        "n": len(rows),
        "units": "mm" if spacing else "px",
        "spacing_mm": list(spacing) if spacing else None,
        "spacing_known": spacing is not None,
    }
    for m in PER_IMAGE:
        summary.update(describe(col[m.column], m))
    summary.update({
        "dice_iqr": _stat(dice, stats.iqr),
        "dice_tp_mean": _stat(dice[[r.get("detection") == "TP" for r in rows]], np.mean),
        "found_rate": _stat(dice >= 0.5, np.mean),
        "hd95_n_excluded": int(np.isnan(col["hd95_mm"]).sum()),
        "auc_n": int((~np.isnan(col["auc"])).sum()),
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
        "csa_bias_ci_mm2": agreement["bias_ci"],
        "csa_loa_low_ci_mm2": agreement["loa_low_ci"],
        "csa_loa_high_ci_mm2": agreement["loa_high_ci"],
    })
    summary["csa_per_patient"] = per_patient_agreement(rows)
    if spacing is not None:  # the enlarged / not enlarged classes at the inlet cut-off, in mm^2 only
        classes = class_agreement(col["csa_pred_mm2"], col["csa_gt_mm2"], inlet_cutoff().threshold)
        summary.update({"csa_classes": classes, "csa_kappa": classes["kappa"]})
    summary.update(detection_summary(rows))
    if not summary["auc_n"]:
        summary = {key: value for key, value in summary.items() if not key.startswith("auc_")}
    return summary


def _described_row(summary: Mapping[str, Any], m: Metric, px: bool) -> str:
    v = {stat: format_value(m.key, summary.get(m.summary_key(stat))) for stat in STATS}
    return f"| {heading(m.key, px)} | {v['mean']} ± {v['sd']} | {v['median']} [{v['q1']}, {v['q3']}] |"


def _report_row(summary: Mapping[str, Any], key: str, px: bool, low: str = "", high: str = "", bracket: str = "") -> str:
    """A report row of one summary figure, with ``[low, high]`` (keys too) when given."""
    label = heading(key, px)
    cell = format_value(key, summary.get(key))
    if low:
        lo, hi = (format_value(key, summary.get(k)) for k in (low, high))
        label, cell = f"{metric(key).label} [{bracket}]" + label[len(metric(key).label):], f"{cell} [{lo}, {hi}]"
    return f"| {label} | {cell} | – |"


def _report_notes(s: Mapping[str, Any]) -> List[str]:
    threshold = s.get("detection_confidence_threshold")
    confidence = (f"confidence > {threshold}" if threshold is not None
                  else "no confidences given, so any predicted mask counts as confident")
    missing = (f"{len(s.get('missing_predictions', []))} ground-truth masks without a prediction "
               + ("(counted as empty)" if s.get("strict") else "(left out)"))
    auc = f"; AUC: {s['auc_n']} with a probability map" if "auc_n" in s else ""
    return [
        f"- n = {s['n']} images; {missing}; {s.get('n_errors', 0)} not scored (see the error column of "
        "metrics.csv); "
        + (f"pixel spacing {s['spacing_mm'][0]:g} x {s['spacing_mm'][1]:g} mm." if s["spacing_known"]
           else "pixel spacing unknown: distances and areas in pixels."),
        f"- SD with ddof 1; IQR as [q1, q3]; images where a metric is undefined are left out "
        f"(HD: {s['hd95_n_excluded']} with an empty mask{auc}).",
        f"- Detection (Di Cosmo et al. 2021, Smerilli et al. 2022): TP when the predicted box has IoU >= "
        f"{s['detection_box_iou_threshold']} with the ground-truth box and {confidence}; FP otherwise; FN when "
        f"nothing is predicted. TP {s['detection_tp']}, FP {s['detection_fp']}, FN {s['detection_fn']}, "
        f"TN {s['detection_tn']}. DSC over TP images only: {format_value('dice_tp_mean', s['dice_tp_mean'])}.",
        f"- mAP: {s['detection_map_note']}.",
        "- ICC(3,1): two-way mixed, consistency, single measures; LoA: bias -/+ 1.96 SD of the differences; "
        "95% CIs of the bias and the limits after Bland & Altman 1999.",
        _per_patient_note(s.get("csa_per_patient") or {}),
    ]


def _per_patient_note(p: Mapping[str, Any]) -> str:
    if not p.get("n_patients"):
        return "- Per patient: no pairs."
    return (f"- Per patient (each patient's images averaged first, as repeated images of one patient are not "
            f"independent; n = {p['n_patients']} patients): CSA MAE {format_value('csa_mae_mm2', p['mae'])}, bias "
            f"{format_value('csa_bias_mm2', p['bias'])} [LoA {format_value('csa_bias_mm2', p['loa_low'])}, "
            f"{format_value('csa_bias_mm2', p['loa_high'])}], ICC(3,1) {format_value('csa_icc', p['icc'])}.")


def report_markdown(summary: Mapping[str, Any]) -> str:
    """A Markdown table of the summary laid out like the papers' tables (rows: metrics), with notes.

    The AUC row is there only when the summary has the AUC (some probability map was used)."""
    s, px = summary, summary["units"] != "mm"
    ci = dict(zip(("csa_icc_ci_low", "csa_icc_ci_high"), s["csa_icc_ci"]))
    lines = ["# Median nerve segmentation: evaluation", "", "| Metric | Mean ± SD | Median [IQR] |",
             "|---|---|---|"]
    lines += [_described_row(s, m, px) for m in PER_IMAGE if m.summary_key("mean") in s]
    lines += [
        _report_row(s, "csa_mae_mm2", px),
        _report_row({**s, **ci}, "csa_icc", px, "csa_icc_ci_low", "csa_icc_ci_high", "95% CI"),
        _report_row(s, "csa_bias_mm2", px, "csa_loa_low_mm2", "csa_loa_high_mm2", "LoA"),
        *([_report_row(s, "csa_kappa", px)] if "csa_kappa" in s else []),
        *(_report_row(s, key, px) for key in ("detection_precision", "detection_recall", "detection_map")),
        "",
    ]
    return "\n".join(lines + _report_notes(s)) + "\n"


def _draw_bland_altman(ax, pred: np.ndarray, gt: np.ndarray, summary: Mapping[str, Any], unit: str) -> None:
    ax.scatter((pred + gt) / 2, pred - gt, s=14, alpha=0.7)
    for key, label, style in (("csa_loa_high_mm2", "+1.96 SD", "--"), ("csa_bias_mm2", "bias", "-"),
                              ("csa_loa_low_mm2", "-1.96 SD", "--")):
        if summary.get(key) is not None:
            ax.axhline(summary[key], color="k", linestyle=style, linewidth=1, label=f"{label}: {summary[key]:.2f}")
        ci = summary.get(key.replace("_mm2", "_ci_mm2"))
        if ci and None not in ci:  # its 95% confidence interval
            ax.axhspan(ci[0], ci[1], color="0.6", alpha=0.25, linewidth=0)
    ax.set_xlabel(f"Mean of predicted and reference CSA ({unit})")
    ax.set_ylabel(f"Predicted - reference CSA ({unit})")
    ax.set_title(f"Bland-Altman plot of the CSA (n = {len(pred)}; bands: 95% CIs)", fontsize=10)


def _draw_scatter(ax, pred: np.ndarray, gt: np.ndarray, summary: Mapping[str, Any], unit: str) -> None:
    ax.scatter(gt, pred, s=14, alpha=0.7)
    both = np.concatenate([pred, gt])
    low, high = (both.min(), both.max()) if both.size else (0.0, 1.0)
    ax.plot([low, high], [low, high], "k--", linewidth=1, label="identity")
    classes = summary.get("csa_classes")
    if classes:  # the inlet cut-off on both axes, and how the two agree on enlarged / not enlarged
        cut = classes["threshold_mm2"]
        ax.axvline(cut, color="tab:red", linestyle=":", linewidth=1, label=f"cut-off {cut:g} {unit}")
        ax.axhline(cut, color="tab:red", linestyle=":", linewidth=1)
        kappa = format_value("csa_kappa", classes["kappa"])
        ax.text(0.98, 0.02, f"enlarged by both: {classes['both_enlarged']}\nby the model only: "
                f"{classes['only_predicted_enlarged']}\nby the reference only: {classes['only_reference_enlarged']}"
                f"\nby neither: {classes['neither']}\nCohen's kappa: {kappa}", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=7, bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0})
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel(f"Reference CSA ({unit})")
    ax.set_ylabel(f"Predicted CSA ({unit})")
    ax.set_title(f"CSA, n = {len(pred)}, {heading('csa_icc')} = {format_value('csa_icc', summary.get('csa_icc'))}",
                 fontsize=10)


def plot_csa_agreement(pred: Sequence[float], gt: Sequence[float], summary: Mapping[str, Any],
                       out_dir: Union[str, Path], rows: Optional[Sequence[Mapping[str, Any]]] = None) -> List[Path]:
    """Write ``bland_altman.png``, ``csa_scatter.png`` and, given the rows, ``bland_altman_per_patient.png``
    to ``out_dir`` (Agg canvas, no display needed). ``summary``: from :func:`summarize` (NaN or None for a
    missing bias/LoA line).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = np.column_stack([np.asarray(pred, float), np.asarray(gt, float)])
    x = x[~np.isnan(x).any(axis=1)]
    summary = _json_ready(dict(summary))
    unit = "mm$^2$" if summary["units"] == "mm" else "px"
    paths = []
    per_patient = summary.get("csa_per_patient") or {}
    patient_summary = {"csa_bias_mm2": per_patient.get("bias"), "csa_loa_low_mm2": per_patient.get("loa_low"),
                       "csa_loa_high_mm2": per_patient.get("loa_high"), "csa_bias_ci_mm2": per_patient.get("bias_ci"),
                       "csa_loa_low_ci_mm2": per_patient.get("loa_low_ci"),
                       "csa_loa_high_ci_mm2": per_patient.get("loa_high_ci")}
    figures = [("bland_altman.png", _draw_bland_altman, x[:, 0], x[:, 1], summary),
               ("csa_scatter.png", _draw_scatter, x[:, 0], x[:, 1], summary)]
    if rows is not None:
        _, pred_means, gt_means = patient_means(rows)
        figures.append(("bland_altman_per_patient.png", _draw_bland_altman, pred_means, gt_means, patient_summary))
    for name, draw, pred_values, gt_values, values in figures:
        figure = Figure(figsize=(5.5, 4.5), dpi=120)
        FigureCanvasAgg(figure)
        ax = figure.add_subplot()
        draw(ax, pred_values, gt_values, values, unit)
        if name == "bland_altman_per_patient.png":
            ax.set_title(f"Bland-Altman of patient means (n = {len(pred_values)} patients)", fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
        figure.tight_layout()
        figure.savefig(Path(out_dir) / name)
        paths.append(Path(out_dir) / name)
    return paths


def _find_prediction(pred_dir: Path, stem: str) -> Optional[Path]:
    for candidate in (pred_dir / f"{stem}_mask.png", pred_dir / f"{stem}.png"):
        if candidate.is_file():
            return candidate
    return None


def read_probability(probability_dir: Union[str, Path], stem: str) -> Optional[np.ndarray]:
    """``<stem>_prob.npy`` (0..1) or ``<stem>_prob.png`` (0..255) of ``probability_dir``; None if neither."""
    npy, png = Path(probability_dir) / f"{stem}_prob.npy", Path(probability_dir) / f"{stem}_prob.png"
    if npy.is_file():
        return np.squeeze(np.load(npy)).astype(np.float64)
    if png.is_file():
        return read_image(png).frame(0).astype(np.float64) / 255
    return None


def _mask_stem(mask_name: str) -> str:
    """``Pz001-001_mask.png`` -> ``Pz001-001``: the ground-truth stem a results row's mask is matched to."""
    stem = Path(mask_name).stem
    return stem[:-len("_mask")] if stem.endswith("_mask") else stem


def read_confidences(path: Union[str, Path]) -> Dict[str, float]:
    """Confidence by mask stem (mask file name minus ``_mask``) from a results file of ``segment``.

    Rows without a mask or a confidence (failed files) are skipped.
    """
    return {_mask_stem(r.mask): r.confidence for r in read_results(path) if r.mask and r.confidence is not None}


def spacing_from_results(pred_dir: Union[str, Path]) -> Tuple[Optional[Tuple[float, float]], str]:
    """The one pixel spacing of the masks in ``pred_dir``'s results file, and why there is none.

    (spacing, "") when every mask's row has the same known spacing; (None, reason) when they
    differ or some are unknown; (None, "") without a results file.
    """
    path = Path(pred_dir) / RESULTS_FILE
    if not path.is_file():
        return None, ""
    spacings = {r.spacing_mm for r in read_results(path) if r.mask}
    if len(spacings) == 1 and None not in spacings:
        return next(iter(spacings)), ""
    reason = "some images have no known spacing" if None in spacings else f"{len(spacings)} different spacings"
    return None, f"{path}: {reason}; distances and areas are in pixels (give --spacing to set one)"


def _confidences(pred_dir: Path, given: Optional[Mapping[str, float]]) -> Tuple[Mapping[str, float], Optional[str]]:
    """The confidences to use and where they came from (None: no confidences)."""
    if given is not None:
        return given, "argument"
    if (pred_dir / RESULTS_FILE).is_file():
        return read_confidences(pred_dir / RESULTS_FILE), RESULTS_FILE
    return {}, None


def image_row(name: str, pred: np.ndarray, gt: np.ndarray, spacing: Optional[Tuple[float, float]],
              **inputs: Any) -> Dict[str, Any]:
    """The per-image row (keys of ``ROW_KEYS``) of a predicted and a reference mask."""
    m = segmentation_metrics(pred, gt, spacing, **inputs)
    if spacing is None:
        m["csa_pred_mm2"], m["csa_gt_mm2"] = m["area_pred_px"], m["area_gt_px"]
    m["csa_error_mm2"] = m["csa_pred_mm2"] - m["csa_gt_mm2"]
    m.update(image=name, units="mm" if spacing else "px", error="")
    return {key: m[key] for key in ROW_KEYS}


def _scored_row(stem: str, gt_path: Path, pred_path: Optional[Path], spacing: Optional[Tuple[float, float]],
                probability_dir: Path, **inputs: Any) -> Dict[str, Any]:
    """The metrics row of one image, or its error row (the file and the reason) when it cannot be scored."""
    try:
        gt = read_mask(gt_path)
        pred = read_mask(pred_path) if pred_path else np.zeros_like(gt)
    except (OSError, ValueError) as error:  # ImageReadError names the file
        return {"image": stem, "error": str(error)}
    where = f"{probability_dir / stem}_prob.npy/.png"
    try:
        probability = read_probability(probability_dir, stem)
    except (OSError, ValueError) as error:
        return {"image": stem, "error": f"{where}: unreadable probability map ({error})"}
    if probability is not None and probability.shape != gt.shape:
        return {"image": stem, "error": f"{where}: probability map {probability.shape} and ground truth "
                                        f"{gt.shape} differ in shape"}
    try:
        return image_row(stem, pred, gt, spacing, probability=probability, **inputs)
    except ValueError as error:
        return {"image": stem, "error": f"{pred_path or gt_path}: {error}"}


def _json_ready(value: Any) -> Any:
    """NaN and infinity become None (JSON null), recursively."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _cell(value: Any) -> Any:
    """A CSV cell: empty for None or NaN, ``r0;c0;r1;c1`` for a box."""
    if isinstance(value, tuple):
        return ";".join(map(str, value))
    return "" if _json_ready(value) is None else value


def _write_csv(path: Path, rows: List[Dict[str, Any]], keys: Sequence[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in r.items()} for r in rows)


def evaluate_folders(pred_dir: Union[str, Path], gt_dir: Union[str, Path], out_dir: Union[str, Path],
                     spacing_mm: Spacing = None, probability_dir: Optional[Union[str, Path]] = None,
                     confidences: Optional[Dict[str, float]] = None,
                     confidence_threshold: float = CONFIDENCE_THRESHOLD, strict: bool = False) -> Dict[str, Any]:
    """Evaluate the predictions of ``pred_dir`` against the ``<stem>.png`` masks of ``gt_dir``.

    The prediction is ``<stem>_mask.png`` or ``<stem>.png``. Ground truths without one are
    listed in ``missing_predictions`` and left out, or with ``strict`` scored as empty
    predictions; none matched at all is a ValueError. An image that cannot be scored (an
    unreadable file, different shapes) is a row with an ``error`` (file and reason), left out
    of every statistic and counted in ``n_errors`` (its messages in ``errors``).
    ``<stem>_prob.npy`` or ``<stem>_prob.png`` of ``probability_dir`` (default ``pred_dir``)
    give the AUC; without any, the AUC is left out. ``confidences`` by stem, or else those of a
    ``measurements.csv`` in ``pred_dir``, enter the detection rule and the mAP (without
    either, a predicted mask counts as a confident detection and the mAP is null). Writes
    ``metrics.csv`` (one row per image, NaN as an empty cell), ``summary.json`` (NaN as null),
    ``report.md``, ``bland_altman.png`` and ``csa_scatter.png`` to ``out_dir`` and returns the summary.
    """
    pred_dir, out_dir, spacing = Path(pred_dir), Path(out_dir), as_spacing(spacing_mm)
    gt_paths = sorted(Path(gt_dir).glob("*.png"))
    if not gt_paths:
        raise FileNotFoundError(f"{gt_dir}: no ground-truth <stem>.png masks")
    predictions = {path.stem: _find_prediction(pred_dir, path.stem) for path in gt_paths}
    missing = [stem for stem, path in predictions.items() if path is None]
    if len(missing) == len(gt_paths):
        raise ValueError(f"{pred_dir}: no predicted mask matches any ground-truth mask in {gt_dir}")
    confidences, source = _confidences(pred_dir, confidences)
    probability_dir = pred_dir if probability_dir is None else Path(probability_dir)
    rows = [_scored_row(path.stem, path, predictions[path.stem], spacing, probability_dir,
                        confidence=confidences.get(path.stem), confidence_threshold=confidence_threshold)
            for path in gt_paths if strict or predictions[path.stem] is not None]
    scored = [r for r in rows if not r["error"]]
    errors = [r["error"] for r in rows if r["error"]]
    summary = _json_ready(dict(summarize(scored, spacing), missing_predictions=missing, strict=strict,
                               n_errors=len(errors), errors=errors, confidence_source=source,
                               detection_confidence_threshold=confidence_threshold if source else None))
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(out_dir / "metrics.csv", rows, [k for k in ROW_KEYS if k != "auc" or "auc_n" in summary])
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    (out_dir / "report.md").write_text(report_markdown(summary), encoding="utf-8")
    plot_csa_agreement([r["csa_pred_mm2"] for r in scored], [r["csa_gt_mm2"] for r in scored], summary, out_dir,
                       scored)
    return summary
