"""Known-answer tests of segmentation metrics and CSA agreement (MedianNerveSegLib.evaluate)."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.metrics import compute_hausdorff_distance
from PIL import Image
from scipy import stats
from skimage.draw import disk

from MedianNerveSegLib.evaluate import _icc, csa_agreement, evaluate_folders, segmentation_metrics, summarize

S = 0.062
from conftest import DATA
SUMMARY_KEYS = {"n", "dice_mean", "dice_sd", "dice_median", "dice_iqr", "iou_mean", "precision_mean", "recall_mean",
                "hd95_mean_mm", "hd95_n_excluded", "found_rate", "csa_mae_mm2", "csa_icc", "csa_icc_ci",
                "csa_bias_mm2", "csa_loa_low_mm2", "csa_loa_high_mm2", "spacing_mm", "spacing_known", "units",
                "missing_predictions"}


def disk_mask(center=(60, 70), radius=25, shape=(128, 160)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[disk(center, radius, shape=shape)] = True
    return mask


def test_identical_masks():
    m = segmentation_metrics(disk_mask(), disk_mask(), S)
    assert m["dice"] == m["iou"] == m["precision"] == m["recall"] == 1.0
    assert m["hd_mm"] == 0 and m["hd95_mm"] == 0
    assert m["csa_pred_mm2"] == m["csa_gt_mm2"] == pytest.approx(disk_mask().sum() * S * S)


def test_shifted_disk_overlap_and_distances():
    gt, pred = disk_mask(), disk_mask(center=(63, 70))
    m = segmentation_metrics(pred, gt, S)
    inter, a, b = np.sum(gt & pred), gt.sum(), pred.sum()
    assert m["dice"] == pytest.approx(2 * inter / (a + b))
    assert m["iou"] == pytest.approx(inter / np.sum(gt | pred))
    assert m["precision"] == pytest.approx(inter / b) and m["recall"] == pytest.approx(inter / a)
    assert m["hd_mm"] == pytest.approx(3 * S, rel=1e-6)
    assert m["hd95_mm"] == pytest.approx(3 * S, rel=0.05)
    assert m["hd95_px"] == pytest.approx(3, rel=0.05)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # raised inside MONAI
def test_hausdorff_matches_monai_reference():
    gt, pred = disk_mask(), disk_mask(center=(66, 75), radius=20)
    m = segmentation_metrics(pred, gt, (0.05, 0.1))
    onehot = lambda x: torch.from_numpy(np.stack([~x, x])[None].astype(np.float32))  # noqa: E731
    for key, percentile in (("hd_mm", None), ("hd95_mm", 95)):
        ref = compute_hausdorff_distance(onehot(pred), onehot(gt), percentile=percentile, spacing=(0.05, 0.1))
        assert m[key] == pytest.approx(float(ref), rel=1e-5)


def test_anisotropic_spacing_honoured_in_hausdorff():
    gt = disk_mask()
    along_rows = segmentation_metrics(disk_mask(center=(63, 70)), gt, (0.05, 0.1))
    along_cols = segmentation_metrics(disk_mask(center=(60, 73)), gt, (0.05, 0.1))
    assert along_rows["hd_mm"] == pytest.approx(0.15, rel=1e-6)
    assert along_cols["hd_mm"] == pytest.approx(0.30, rel=1e-6)
    assert along_rows["hd95_px"] == pytest.approx(along_cols["hd95_px"])


def test_empty_prediction():
    m = segmentation_metrics(np.zeros((128, 160), np.uint8), disk_mask().astype(np.uint8) * 255, S)
    assert m["dice"] == 0 and m["iou"] == 0 and m["recall"] == 0
    assert math.isnan(m["precision"]) and math.isnan(m["hd_mm"]) and math.isnan(m["hd95_mm"])
    assert m["area_pred_px"] == 0 and m["csa_pred_mm2"] == 0


def test_empty_ground_truth_and_both_empty():
    m = segmentation_metrics(disk_mask(), np.zeros((128, 160)), S)
    assert m["dice"] == 0 and m["precision"] == 0 and math.isnan(m["recall"]) and math.isnan(m["hd95_mm"])
    both = segmentation_metrics(np.zeros((8, 8)), np.zeros((8, 8)), S)
    assert both["dice"] == both["iou"] == both["precision"] == both["recall"] == 1.0


def test_unknown_spacing_distances_in_pixels():
    m = segmentation_metrics(disk_mask(center=(63, 70)), disk_mask(), None)
    assert m["hd_mm"] == pytest.approx(3.0) and m["hd95_mm"] == m["hd95_px"]
    assert math.isnan(m["csa_pred_mm2"]) and math.isnan(m["csa_gt_mm2"])


def test_shape_mismatch_rejected():
    with pytest.raises(ValueError):
        segmentation_metrics(np.zeros((4, 4)), np.zeros((4, 5)), S)


def test_icc_perfect_and_constant_offset():
    gt = [8.0, 10.5, 12.0, 14.2, 9.1, 20.3]
    same = csa_agreement(gt, gt)
    assert same["icc"] == 1.0 and same["mae"] == 0 and same["bias"] == 0 and same["n"] == 6
    offset = csa_agreement([g + 1 for g in gt], gt)
    assert offset["icc"] == pytest.approx(1.0)
    assert offset["icc_ci_low"] == pytest.approx(1.0) and offset["icc_ci_high"] == pytest.approx(1.0)
    assert offset["bias"] == pytest.approx(1.0) and offset["mae"] == pytest.approx(1.0)
    assert offset["loa_low"] == pytest.approx(1.0) and offset["loa_high"] == pytest.approx(1.0)


def test_icc_known_answer_two_raters():
    """5 targets x 2 raters, ICC(3,1) from explicitly computed ANOVA mean squares."""
    x = np.array([[10.0, 11.0], [12.0, 12.5], [8.0, 9.5], [15.0, 14.0], [11.0, 12.0]])
    n, k = x.shape
    grand = x.sum() / (n * k)
    rows, cols = x.sum(axis=1) / k, x.sum(axis=0) / n
    ms_r = k * sum((r - grand) ** 2 for r in rows) / (n - 1)
    sse = sum((x[i, j] - rows[i] - cols[j] + grand) ** 2 for i in range(n) for j in range(k))
    ms_e = sse / ((n - 1) * (k - 1))
    expected = (ms_r - ms_e) / (ms_r + (k - 1) * ms_e)
    result = csa_agreement(x[:, 0], x[:, 1])
    assert result["icc"] == pytest.approx(expected)
    f = ms_r / ms_e
    fl, fu = f / stats.f.ppf(0.975, n - 1, n - 1), f * stats.f.ppf(0.975, n - 1, n - 1)
    assert result["icc_ci_low"] == pytest.approx((fl - 1) / (fl + 1))
    assert result["icc_ci_high"] == pytest.approx((fu - 1) / (fu + 1))
    assert result["icc_ci_low"] < result["icc"] < result["icc_ci_high"]
    d = x[:, 0] - x[:, 1]
    assert result["bias"] == pytest.approx(d.mean()) and result["sd_diff"] == pytest.approx(d.std(ddof=1))
    assert result["loa_high"] == pytest.approx(d.mean() + 1.96 * d.std(ddof=1))
    assert result["mae"] == pytest.approx(np.abs(d).mean())


def test_icc_shrout_fleiss_table():
    """Shrout & Fleiss (1979) table 2: 6 targets x 4 judges, ICC(3,1) = 0.71."""
    x = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)
    icc, low, high = _icc(x)
    assert icc == pytest.approx(0.71, abs=0.005)
    assert low < icc < high


def test_agreement_drops_nan_pairs():
    result = csa_agreement([1.0, float("nan"), 3.0, 4.0], [1.5, 2.0, 2.5, 4.5])
    assert result["n"] == 3


def write_png(path: Path, mask: np.ndarray, rgb: bool = False) -> None:
    pixels = mask.astype(np.uint8) * 255
    Image.fromarray(np.stack([pixels, 0 * pixels, 0 * pixels], -1) if rgb else pixels).save(path)


def read_csv(path: Path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_evaluate_folders(tmp_path):
    gt_dir, pred_dir, out_dir = tmp_path / "gt", tmp_path / "pred", tmp_path / "out"
    gt_dir.mkdir(), pred_dir.mkdir()
    for stem in ("a", "b", "c"):
        write_png(gt_dir / f"{stem}.png", disk_mask())
    write_png(pred_dir / "a_mask.png", disk_mask(), rgb=True)  # identical, red-only RGB
    write_png(pred_dir / "b.png", disk_mask(center=(63, 70)))  # shifted 3 px; c is missing
    summary = evaluate_folders(pred_dir, gt_dir, out_dir, S)

    assert SUMMARY_KEYS <= set(summary)
    assert summary == json.loads((out_dir / "summary.json").read_text())
    shifted = segmentation_metrics(disk_mask(center=(63, 70)), disk_mask(), S)
    assert summary["n"] == 3 and summary["missing_predictions"] == ["c"]
    assert summary["dice_mean"] == pytest.approx((1 + shifted["dice"] + 0) / 3)
    assert summary["dice_median"] == pytest.approx(shifted["dice"])
    assert summary["found_rate"] == pytest.approx(2 / 3)
    assert summary["hd95_mean_mm"] == pytest.approx(shifted["hd95_mm"] / 2)
    assert summary["hd95_n_excluded"] == 1
    assert summary["precision_mean"] == pytest.approx((1 + shifted["precision"]) / 2)  # NaN of c left out
    area = disk_mask().sum() * S * S
    assert summary["csa_mae_mm2"] == pytest.approx(area / 3)
    assert summary["csa_bias_mm2"] == pytest.approx(-area / 3)
    assert summary["spacing_mm"] == [S, S] and summary["spacing_known"] and summary["units"] == "mm"

    rows = read_csv(out_dir / "metrics.csv")
    assert [r["image"] for r in rows] == ["a", "b", "c"]
    assert float(rows[0]["dice"]) == 1.0 and float(rows[1]["dice"]) == pytest.approx(shifted["dice"])
    assert rows[2]["hd95_mm"] == "" and float(rows[2]["csa_pred_mm2"]) == 0
    assert float(rows[2]["csa_error_mm2"]) == pytest.approx(-area)
    assert {"image", "dice", "iou", "precision", "recall", "hd95_mm", "hd_mm", "area_pred_px", "area_gt_px",
            "csa_pred_mm2", "csa_gt_mm2", "csa_error_mm2"} <= set(rows[0])


def test_evaluate_folders_unknown_spacing_in_pixels(tmp_path):
    write_png(tmp_path / "x.png", disk_mask())
    summary = evaluate_folders(tmp_path, tmp_path, tmp_path / "out", None)
    assert summary["units"] == "px" and summary["spacing_known"] is False and summary["spacing_mm"] is None
    assert summary["csa_gt_mean_mm2"] == disk_mask().sum()
    assert summary["dice_sd"] is None  # one image: NaN written as null
    json.loads((tmp_path / "out" / "summary.json").read_text())
    assert read_csv(tmp_path / "out" / "metrics.csv")[0]["units"] == "px"


def test_summarize_in_memory():
    rows = [dict(segmentation_metrics(disk_mask(), disk_mask(), S), image="a", csa_error_mm2=0.0, units="mm")]
    summary = summarize(rows, S)
    assert summary["n"] == 1 and summary["dice_mean"] == 1.0 and summary["csa_mae_mm2"] == 0


@pytest.mark.skipif(not (DATA / "masks").is_dir(), reason="median nerve dataset not available")
def test_dataset_masks_against_themselves(tmp_path):
    summary = evaluate_folders(DATA / "masks", DATA / "masks", tmp_path, S)
    assert summary["n"] >= 100 and summary["missing_predictions"] == []
    assert summary["dice_mean"] == 1.0 and summary["csa_mae_mm2"] == 0 and summary["hd95_mean_mm"] == 0
    assert summary["csa_gt_mean_mm2"] == pytest.approx(11.1, abs=0.05)
    assert summary["csa_gt_sd_mm2"] == pytest.approx(4.0, abs=0.1)
