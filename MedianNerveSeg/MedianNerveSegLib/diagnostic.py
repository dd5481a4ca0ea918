"""Diagnostic accuracy of a binary call against a reference: the confusion matrix and the figures the CTS
papers report (accuracy, precision, recall = sensitivity, specificity, F-measure), ROC AUC, bootstrap 95 %
confidence intervals that resample patients (several images of one patient are not independent), and
DeLong's test between two ROC curves of the same cases (DeLong et al. 1988, in the fast form of Sun & Xu 2014).
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import stats

RATES = ("accuracy", "precision", "recall", "specificity", "f_measure")


def confusion(truth: Sequence[bool], called: Sequence[bool]) -> Dict[str, int]:
    """True/false positives and negatives of ``called`` against ``truth``."""
    truth, called = np.asarray(truth, bool), np.asarray(called, bool)
    return {"tp": int(np.sum(truth & called)), "fp": int(np.sum(~truth & called)),
            "fn": int(np.sum(truth & ~called)), "tn": int(np.sum(~truth & ~called))}


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def rates(counts: Dict[str, int]) -> Dict[str, float]:
    """Accuracy, precision, recall (sensitivity), specificity and F-measure of a confusion matrix (NaN where a
    denominator is 0)."""
    tp, fp, fn, tn = counts["tp"], counts["fp"], counts["fn"], counts["tn"]
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {"accuracy": _ratio(tp + tn, tp + fp + fn + tn), "precision": precision, "recall": recall,
            "specificity": _ratio(tn, tn + fp), "f_measure": _ratio(2 * tp, 2 * tp + fp + fn)}


def roc_auc(truth: Sequence[bool], scores: Sequence[float]) -> float:
    """Area under the ROC curve: the probability that a positive case scores above a negative one (ties half)."""
    return float(_delong_components(np.asarray(scores, float)[None], np.asarray(truth, bool))[0][0])


def roc_curve(truth: Sequence[bool], scores: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) of every threshold, from (0, 0) to (1, 1)."""
    truth, scores = np.asarray(truth, bool), np.asarray(scores, float)
    thresholds = np.unique(scores)[::-1]
    tpr = [0.0] + [float(np.mean(scores[truth] >= t)) for t in thresholds]
    fpr = [0.0] + [float(np.mean(scores[~truth] >= t)) for t in thresholds]
    return np.array(fpr), np.array(tpr)


def _delong_components(scores: np.ndarray, truth: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """AUCs of each row of ``scores`` (k, n) and their DeLong covariance (k, k) (Sun & Xu 2014, algorithm 2)."""
    positives, negatives = scores[:, truth], scores[:, ~truth]
    m, n = positives.shape[1], negatives.shape[1]
    if not m or not n:
        raise ValueError(f"an ROC curve needs positive and negative cases ({m} positive, {n} negative)")
    within_positive = stats.rankdata(positives, axis=1)
    within_negative = stats.rankdata(negatives, axis=1)
    overall = stats.rankdata(np.concatenate([positives, negatives], axis=1), axis=1)
    aucs = (overall[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v01 = (overall[:, :m] - within_positive) / n  # per positive: share of negatives below it
    v10 = 1.0 - (overall[:, m:] - within_negative) / m  # per negative: share of positives above it
    if m < 2 or n < 2:  # one case of a class: no variance to estimate
        return aucs, np.full((len(aucs), len(aucs)), math.nan)
    covariance = np.atleast_2d(np.cov(v01, ddof=1)) / m + np.atleast_2d(np.cov(v10, ddof=1)) / n
    return aucs, covariance


def delong_test(truth: Sequence[bool], scores_a: Sequence[float], scores_b: Sequence[float]) -> Dict[str, float]:
    """DeLong's test of two correlated ROC curves (the same cases): both AUCs, their difference, z and the
    two-sided p-value (NaN when both curves are identical or perfect, as their difference has no variance)."""
    aucs, covariance = _delong_components(np.vstack([scores_a, scores_b]).astype(float), np.asarray(truth, bool))
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    difference = float(aucs[0] - aucs[1])
    z = difference / math.sqrt(variance) if variance > 0 else math.nan  # NaN variance compares False too
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "difference": difference, "z": z,
            "p_value": float(2 * stats.norm.sf(abs(z))) if not math.isnan(z) else math.nan}


def bootstrap_ci(statistic: Callable[[np.ndarray], float], n_cases: int, groups: Optional[Sequence[str]] = None,
                 resamples: int = 2000, seed: int = 0, level: float = 0.95) -> Tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(indices)``, resampling whole ``groups`` (patients) when given,
    else cases. Resamples where the statistic is undefined (NaN: e.g. one class only) are left out."""
    rng = np.random.default_rng(seed)
    if groups is None:
        members = [np.array([i]) for i in range(n_cases)]
    else:
        groups = np.asarray(groups)
        members = [np.flatnonzero(groups == g) for g in dict.fromkeys(groups.tolist())]
    values = []
    for _ in range(resamples):
        picked = rng.integers(len(members), size=len(members))
        value = statistic(np.concatenate([members[i] for i in picked]))
        if not math.isnan(value):
            values.append(value)
    if not values:
        return math.nan, math.nan
    tail = 100 * (1 - level) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def diagnostic_summary(truth: Sequence[bool], scores: Sequence[float], threshold: float = 0.5,
                       groups: Optional[Sequence[str]] = None, resamples: int = 2000, seed: int = 0) -> Dict[str, object]:
    """The papers' table for one classifier (or rule): counts, each rate and the AUC with its bootstrap 95 % CI
    (patients resampled when ``groups`` gives them); the call is ``score >= threshold``."""
    truth, scores = np.asarray(truth, bool), np.asarray(scores, float)
    called = scores >= threshold
    counts = confusion(truth, called)
    summary: Dict[str, object] = {"n": int(truth.size), "n_positive": int(truth.sum()), **counts}
    for name in RATES:
        summary[name] = rates(counts)[name]
        summary[f"{name}_ci"] = bootstrap_ci(lambda idx: rates(confusion(truth[idx], called[idx]))[name],
                                             truth.size, groups, resamples, seed)
    single_class = truth.all() or not truth.any()
    summary["auc"] = math.nan if single_class else roc_auc(truth, scores)
    summary["auc_ci"] = (math.nan, math.nan) if single_class else bootstrap_ci(
        lambda idx: roc_auc(truth[idx], scores[idx]) if 0 < truth[idx].sum() < idx.size else math.nan,
        truth.size, groups, resamples, seed)
    return summary
