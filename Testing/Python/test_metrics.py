"""The one metrics table drives evaluation's summary and report and the benchmark and compare tables."""

import numpy as np
import pytest

from MedianNerveSegLib import benchmark, evaluate
from MedianNerveSegLib.metrics import METRICS, PER_IMAGE, STATS, format_value, heading, markdown_table, metric


def test_every_reported_key_is_in_the_table():
    for key in benchmark.TABLE_KEYS + benchmark.COMPARISON_KEYS:
        assert metric(key) in METRICS
    with pytest.raises(KeyError, match="not in the metrics table"):
        metric("dsc_mean")
    assert set(evaluate.STAT_FUNCTIONS) == set(STATS)


def test_titles_units_and_digits_come_from_the_table():
    assert heading("hd95_mean_mm") == "HD95 (mm)" and heading("hd95_sd_mm", px=True) == "HD95 SD (px)"
    assert heading("csa_mae_mm2") == "CSA MAE (mm^2)" and heading("dice_median") == "DSC median"
    assert format_value("dice_mean", 0.91234) == "0.912" and format_value("csa_mae_mm2", 12.345) == "12.35"
    assert format_value("cpu_ms", 1234.56) == "1234.6" and format_value("parameters", 7860000) == "7,860,000"
    assert format_value("csa_icc", float("nan")) == "n/a" and format_value("csa_icc", None) == "n/a"
    table = markdown_table([{"model": "a", "dice_mean": 0.9, "csa_mae_mm2": None}], ("dice_mean", "csa_mae_mm2"))
    assert table.splitlines()[:3] == ["| model | DSC | CSA MAE (mm^2) |", "|---|---|---|", "| a | 0.900 | n/a |"]


def _square(top: int, side: int = 10) -> np.ndarray:
    mask = np.zeros((40, 40), bool)
    mask[top:top + side, 5:5 + side] = True
    return mask


def test_each_per_image_metric_is_summarised_and_reported():
    rows = [evaluate.image_row(f"im{i}", _square(5 + i), _square(5), (0.1, 0.1), probability=_square(5 + i) * 0.9)
            for i in range(3)]
    summary = evaluate.summarize(rows, (0.1, 0.1))
    report = evaluate.report_markdown(summary)
    for m in PER_IMAGE:
        assert {m.summary_key(stat) for stat in STATS} <= set(summary), m.key
        mean = format_value(m.key, summary[m.summary_key("mean")])
        assert f"| {heading(m.key)} | {mean} ± " in report, m.key
    assert f"| {heading('csa_bias_mm2')[:8]} [LoA] (mm^2) | " in report
