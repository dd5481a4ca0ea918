"""Diagnostic accuracy: known answers for the confusion matrix, the rates, the ROC AUC, DeLong's test and the
patient bootstrap."""

import math

import numpy as np
import pytest
from scipy import stats

from MedianNerveSegLib.diagnostic import (bootstrap_ci, confusion, delong_test, diagnostic_summary, rates, roc_auc,
                                          roc_curve)


def test_confusion_and_rates_known_answer():
    truth = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    called = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0]
    counts = confusion(truth, called)
    assert counts == {"tp": 3, "fp": 1, "fn": 1, "tn": 5}
    figures = rates(counts)
    assert figures["accuracy"] == pytest.approx(0.8) and figures["precision"] == pytest.approx(0.75)
    assert figures["recall"] == pytest.approx(0.75) and figures["specificity"] == pytest.approx(5 / 6)
    assert figures["f_measure"] == pytest.approx(0.75)
    assert math.isnan(rates(confusion([0, 0], [0, 0]))["recall"])  # no positive case: undefined, not 0


def test_auc_is_the_mann_whitney_statistic_with_ties_counted_half():
    rng = np.random.default_rng(3)
    truth = rng.random(60) < 0.4
    scores = np.round(rng.normal(truth * 0.8, 1.0), 1)  # rounded: ties
    u = stats.mannwhitneyu(scores[truth], scores[~truth]).statistic
    assert roc_auc(truth, scores) == pytest.approx(u / (truth.sum() * (~truth).sum()))
    fpr, tpr = roc_curve(truth, scores)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(truth, scores))


def test_delong_known_answer():
    # 3 positives, 2 negatives: model A ranks every positive first (AUC 1), model B 4 of 6 pairs (AUC 2/3).
    # DeLong's structural components of B: per positive 0, 1, 1 (variance 1/3, over 3), per negative 2/3, 2/3
    # (variance 0): var(AUC_B) = 1/9; A's components are constant, so var(A - B) = 1/9 and z = (1/3) / (1/3).
    result = delong_test([0, 0, 1, 1, 1], [0.1, 0.2, 0.6, 0.7, 0.8], [0.3, 0.6, 0.2, 0.7, 0.9])
    assert result["auc_a"] == 1.0 and result["auc_b"] == pytest.approx(2 / 3)
    assert result["z"] == pytest.approx(1.0) and result["p_value"] == pytest.approx(0.3173, abs=1e-4)
    same = delong_test([0, 1, 1], [0.1, 0.5, 0.9], [0.1, 0.5, 0.9])
    assert math.isnan(same["p_value"])  # identical curves: no variance, no test


def test_delong_variance_matches_the_bootstrap_of_correlated_scores():
    rng = np.random.default_rng(0)
    truth = rng.random(400) < 0.5
    a = truth + rng.normal(0, 1.0, truth.size)
    b = 0.7 * a + truth * 0.2 + rng.normal(0, 0.8, truth.size)  # correlated with a
    result = delong_test(truth, a, b)
    differences = []
    for _ in range(600):
        idx = rng.integers(truth.size, size=truth.size)
        differences.append(roc_auc(truth[idx], a[idx]) - roc_auc(truth[idx], b[idx]))
    delong_sd = abs(result["difference"] / result["z"])
    assert delong_sd == pytest.approx(np.std(differences), rel=0.15)


def test_the_bootstrap_resamples_patients_not_images():
    # every patient has 10 identical images: resampling images would pretend there are 40 independent cases
    truth = np.repeat([1, 0, 1, 0], 10).astype(bool)
    called = np.repeat([1, 0, 0, 0], 10).astype(bool)
    groups = np.repeat(["a", "b", "c", "d"], 10)
    accuracy = lambda idx: rates(confusion(truth[idx], called[idx]))["accuracy"]
    by_patient = bootstrap_ci(accuracy, truth.size, groups, resamples=500)
    by_image = bootstrap_ci(accuracy, truth.size, None, resamples=500)
    assert by_patient[1] - by_patient[0] > 2 * (by_image[1] - by_image[0])
    summary = diagnostic_summary(truth, called.astype(float), 0.5, groups, resamples=200)
    assert summary["accuracy"] == 0.75 and summary["accuracy_ci"][0] <= 0.75 <= summary["accuracy_ci"][1]
    assert summary["n"] == 40 and summary["tp"] == 10
