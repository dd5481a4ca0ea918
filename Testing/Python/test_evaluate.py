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

from MedianNerveSegLib.evaluate import (_icc, average_precision, bounding_box, box_iou, csa_agreement,
                                        detection_outcome, evaluate_folders, read_confidences, roc_auc,
                                        segmentation_metrics, spacing_from_results, summarize)
from MedianNerveSegLib.results import FrameResult, ResultsWriter

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
    assert m["hd_px"] == pytest.approx(3, rel=1e-6)


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
    summary = evaluate_folders(pred_dir, gt_dir, out_dir, S, strict=True)  # c counted as an empty prediction

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
    # no confidences anywhere: presence of a mask is a detection, and no mAP without a ranking
    assert [r["detection"] for r in rows] == ["TP", "TP", "FN"] and rows[0]["confidence"] == ""
    assert summary["detection_precision"] == 1.0 and summary["detection_recall"] == pytest.approx(2 / 3)
    assert summary["detection_map"] is None and "no confidence" in summary["detection_map_note"]
    assert summary["confidence_source"] is None and summary["detection_confidence_threshold"] is None
    assert "| Detection mAP | n/a |" in (out_dir / "report.md").read_text(encoding="utf-8")


def test_missing_predictions_left_out_unless_strict(tmp_path):
    """Old code scored a missing prediction as an empty one: DSC (1 + 0) / 2 over both images."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir(), pred_dir.mkdir()
    for stem in ("a", "b"):
        write_png(gt_dir / f"{stem}.png", disk_mask())
    write_png(pred_dir / "a_mask.png", disk_mask())
    summary = evaluate_folders(pred_dir, gt_dir, tmp_path / "out", S)
    assert summary["n"] == 1 and summary["dice_mean"] == 1.0 and summary["missing_predictions"] == ["b"]
    assert [r["image"] for r in read_csv(tmp_path / "out" / "metrics.csv")] == ["a"]
    assert "1 ground-truth masks without a prediction (left out)" in (tmp_path / "out" / "report.md").read_text()
    strict = evaluate_folders(pred_dir, gt_dir, tmp_path / "strict", S, strict=True)
    assert strict["n"] == 2 and strict["dice_mean"] == 0.5


@pytest.mark.parametrize("content", ["none", "empty", "mistyped"])
def test_no_matching_prediction_is_an_error(tmp_path, content):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir(), pred_dir.mkdir()
    write_png(gt_dir / "a.png", disk_mask())
    if content == "mistyped":
        write_png(pred_dir / "x_mask.png", disk_mask())
    folder = pred_dir if content != "none" else tmp_path / "prde"
    with pytest.raises(ValueError, match=f"^{folder}: no predicted mask matches any ground-truth mask in {gt_dir}$"):
        evaluate_folders(folder, gt_dir, tmp_path / "out", S)
    assert not (tmp_path / "out").exists()


def test_per_file_problems_are_error_rows(tmp_path):
    """Old code stopped at the first shape mismatch or unreadable mask, naming no file."""
    gt_dir, pred_dir, out_dir = tmp_path / "gt", tmp_path / "pred", tmp_path / "out"
    gt_dir.mkdir(), pred_dir.mkdir()
    for stem in ("a", "b", "c"):
        write_png(gt_dir / f"{stem}.png", disk_mask())
    write_png(pred_dir / "a_mask.png", disk_mask())
    write_png(pred_dir / "b_mask.png", disk_mask(shape=(100, 100)))  # other shape
    (pred_dir / "c_mask.png").write_bytes(b"not a png")  # unreadable
    summary = evaluate_folders(pred_dir, gt_dir, out_dir, S)
    assert summary["n"] == 1 and summary["dice_mean"] == 1.0 and summary["n_errors"] == 2
    assert summary["csa_mae_mm2"] == 0 and summary["hd95_n_excluded"] == 0  # the failed files are in no statistic
    rows = read_csv(out_dir / "metrics.csv")
    assert [r["image"] for r in rows] == ["a", "b", "c"] and rows[0]["error"] == ""
    assert rows[1]["error"].startswith(str(pred_dir / "b_mask.png")) and "shape" in rows[1]["error"]
    assert rows[2]["error"].startswith(str(pred_dir / "c_mask.png")) and rows[2]["dice"] == ""
    assert summary["errors"] == [rows[1]["error"], rows[2]["error"]]
    assert all("\n" not in e for e in summary["errors"])


def test_bad_probability_map_is_an_error_row_naming_it(tmp_path):
    make_folders(tmp_path, ["a", "b"], ["a", "b"])
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "pred" / "a_prob.png")  # other shape
    (tmp_path / "pred" / "b_prob.npy").write_bytes(b"junk")
    summary = evaluate_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "out", S)
    assert summary["n"] == 0 and summary["n_errors"] == 2
    assert summary["errors"][0].startswith(f"{tmp_path / 'pred' / 'a'}_prob") and "shape" in summary["errors"][0]
    assert summary["errors"][1].startswith(f"{tmp_path / 'pred' / 'b'}_prob") and "unreadable" in summary["errors"][1]


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


# ----------------------------------------------------------------------------- AUC

def test_auc_perfect_ranking_and_its_inverse():
    gt = disk_mask()
    rng = np.random.default_rng(0)
    probability = np.where(gt, 0.6 + 0.4 * rng.random(gt.shape), 0.4 * rng.random(gt.shape))
    assert segmentation_metrics(gt, gt, S, probability=probability)["auc"] == 1.0
    assert segmentation_metrics(gt, gt, S, probability=1 - probability)["auc"] == 0.0


def test_auc_mann_whitney_hand_computed():
    """AUC = U / (n_pos n_neg), U counting pairs ranked right (ties half): 3 + 2 + 2.5 = 7.5 of 9."""
    gt = np.array([[1, 0, 0], [1, 0, 1]], bool)
    probability = np.array([[0.9, 0.3, 0.6], [0.4, 0.2, 0.6]])
    pos, neg = probability[gt], probability[~gt]
    pairs = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    assert pairs == 7.5
    assert roc_auc(probability, gt) == pytest.approx(7.5 / 9)
    assert roc_auc(probability, gt) == pytest.approx(stats.mannwhitneyu(pos, neg).statistic / 9)


def test_auc_undefined():
    gt = disk_mask()
    assert math.isnan(segmentation_metrics(gt, gt, S)["auc"])  # no probability map
    assert math.isnan(roc_auc(np.random.rand(8, 8), np.zeros((8, 8), bool)))  # one class only
    assert math.isnan(roc_auc(np.random.rand(8, 8), np.ones((8, 8), bool)))
    with pytest.raises(ValueError):
        roc_auc(np.zeros((4, 5)), gt)


# ----------------------------------------------------------------------------- detection

def square(shift=0, shape=(100, 120)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[30:70, 30 + shift:70 + shift] = True  # 40 x 40 px
    return mask


def test_bounding_box_and_iou():
    assert bounding_box(square()) == (30, 30, 70, 70)
    assert bounding_box(np.zeros((5, 5))) is None
    assert box_iou((0, 0, 10, 10), (0, 5, 10, 15)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0
    assert math.isnan(box_iou(None, (0, 0, 1, 1)))


def test_detection_flips_at_70_percent_box_iou():
    """Shifted by s columns the box IoU is (40 - s) / (40 + s): 33/47 = 0.702 at s = 7, 32/48 = 0.667 at s = 8.

    At s = 8 the prediction still covers 80% of the ground-truth box: the rule is IoU, not coverage.
    """
    above = segmentation_metrics(square(7), square(), S)
    below = segmentation_metrics(square(8), square(), S)
    assert above["box_iou"] == pytest.approx(33 / 47) and above["detection"] == "TP"
    assert below["box_iou"] == pytest.approx(32 / 48) and below["detection"] == "FP"
    assert above["bbox_pred"] == (30, 37, 70, 77) and above["bbox_gt"] == (30, 30, 70, 70)


def test_detection_confidence_threshold():
    outcome = lambda confidence, **kw: segmentation_metrics(square(), square(), S, confidence=confidence,  # noqa: E731
                                                            **kw)["detection"]
    assert outcome(None) == "TP"  # no confidence: a predicted mask is a detection
    assert outcome(0.99) == "TP"
    assert outcome(0.98) == "FP"  # "confidence higher than 0.98"
    assert outcome(0.5) == "FP"
    assert outcome(0.6, confidence_threshold=0.5) == "TP"
    assert segmentation_metrics(square(), square(), S, confidence=0.99)["confidence"] == 0.99


def test_detection_empty_masks():
    empty = np.zeros((100, 120), bool)
    assert segmentation_metrics(empty, square(), S, confidence=0.999)["detection"] == "FN"
    assert segmentation_metrics(empty, empty, S)["detection"] == "TN"
    assert segmentation_metrics(square(), empty, S, confidence=0.999)["detection"] == "FP"
    assert detection_outcome(None, None) == "TN"


def test_average_precision_hand_computed():
    """Ranked hits 1 0 1 1 0 of 4 nerves: precision 1, 1/2, 2/3, 3/4, 3/5 at recall 1/4, 1/4, 1/2, 3/4, 3/4;
    interpolated precision 1, 3/4, 3/4 over the three recall steps of 1/4: AP = 0.25 + 0.1875 + 0.1875."""
    confidences = [0.8, 0.99, 0.7, 0.9, 0.95]  # given out of order
    hits = [True, True, False, True, False]
    assert average_precision(confidences, hits, 4) == pytest.approx(0.625)
    assert average_precision([0.9, 0.8], [True, True], 2) == 1.0
    assert average_precision([], [], 3) == 0.0
    assert math.isnan(average_precision([0.9], [False], 0))


def test_summary_statistics_and_detection():
    rows = [dict(segmentation_metrics(pred, square(), S, confidence=c), image=str(i), csa_error_mm2=0.0, units="mm")
            for i, (pred, c) in enumerate([(square(0), 0.99), (square(2), 0.995), (square(9), 0.999),
                                           (square(1), 0.9), (np.zeros((100, 120)), 0.1)])]
    summary = summarize(rows, S)
    dice = [r["dice"] for r in rows]
    assert summary["dice_q1"] == pytest.approx(np.percentile(dice, 25))
    assert summary["dice_q3"] == pytest.approx(np.percentile(dice, 75))
    assert summary["dice_sd"] == pytest.approx(np.std(dice, ddof=1))
    assert summary["dice_iqr"] == pytest.approx(summary["dice_q3"] - summary["dice_q1"])
    assert summary["hd_median_mm"] == pytest.approx(np.median([0, 2 * S, 9 * S, S]))
    assert [r["detection"] for r in rows] == ["TP", "TP", "FP", "FP", "FN"]
    assert (summary["detection_tp"], summary["detection_fp"], summary["detection_fn"]) == (2, 2, 1)
    assert summary["detection_precision"] == 0.5 and summary["detection_recall"] == pytest.approx(2 / 3)
    assert summary["dice_tp_mean"] == pytest.approx(np.mean(dice[:2]))
    # ranked 0.999 miss (box IoU 31/49), 0.995 hit, 0.99 hit, 0.9 hit of 5 nerves: precision 1/2, 2/3, 3/4 at
    # recall 0.2, 0.4, 0.6, interpolated 3/4 at each step of 0.2
    assert summary["detection_map"] == pytest.approx(0.2 * 0.75 + 0.2 * 0.75 + 0.2 * 0.75)
    assert not [key for key in summary if key.startswith("auc")]  # no probability map: no AUC at all


def test_without_probability_maps_no_auc_anywhere(tmp_path):
    """Old code wrote an "| AUC | n/a ..." row and auc_* keys of null."""
    write_png(tmp_path / "x.png", disk_mask())
    summary = evaluate_folders(tmp_path, tmp_path, tmp_path / "out", S)
    assert not [key for key in summary if key.startswith("auc")]
    assert not [key for key in json.loads((tmp_path / "out" / "summary.json").read_text()) if key.startswith("auc")]
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "| DSC |" in report and "AUC" not in report
    assert "auc" not in read_csv(tmp_path / "out" / "metrics.csv")[0]


def test_save_prob_maps_next_to_the_masks_give_the_auc(tmp_path):
    """segment --save-prob writes <stem>_prob.png next to <stem>_mask.png: the AUC needs no option."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir(), pred_dir.mkdir()
    write_png(gt_dir / "a.png", disk_mask())
    write_png(pred_dir / "a_mask.png", disk_mask())
    Image.fromarray(np.where(disk_mask(), 230, 20).astype(np.uint8)).save(pred_dir / "a_prob.png")
    summary = evaluate_folders(pred_dir, gt_dir, tmp_path / "out", S)
    assert summary["auc_n"] == 1 and summary["auc_mean"] == 1.0
    assert "| AUC | 1.000 ±" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- folders, report and plots

def write_results(path: Path, results) -> None:
    with ResultsWriter(path) as writer:
        for result in results:
            writer.write(result)


def test_read_confidences_multiframe_and_failed_rows(tmp_path):
    """Matched by the mask file name, not the input name: old code mapped a/scan.png and b/scan.png
    (masks scan_mask.png and scan-2_mask.png) both to "scan"."""
    path = tmp_path / "measurements.csv"
    write_results(path, [FrameResult("in/Pz001-001.png", confidence=0.9912, mask="Pz001-001_mask.png"),
                         FrameResult("clip.nrrd", 0, confidence=0.5, mask="clip_f0000_mask.png"),
                         FrameResult("clip.nrrd", 1, confidence=0.2, mask="clip_f0001_mask.png"),
                         FrameResult("a/scan.png", confidence=0.7, mask="scan_mask.png"),
                         FrameResult("b/scan.png", confidence=0.6, mask="scan-2_mask.png"),
                         FrameResult("broken.png", error="broken.png: not an image")])
    assert read_confidences(path) == {"Pz001-001": 0.9912, "clip_f0000": 0.5, "clip_f0001": 0.2,
                                      "scan": 0.7, "scan-2": 0.6}


def test_read_confidences_refuses_a_foreign_csv(tmp_path):
    path = tmp_path / "measurements.csv"
    path.write_text("image,frame,found,confidence\na.png,0,True,0.99\n")
    with pytest.raises(ValueError, match="not a results file"):
        read_confidences(path)


def test_spacing_from_results(tmp_path):
    """Old code had no spacing source but --spacing: a segmented folder was scored in pixels."""
    same, mixed, unknown = (tmp_path / d for d in ("same", "mixed", "unknown"))
    write_results(same / "measurements.csv", [FrameResult("a.png", spacing_mm=(S, S), mask="a_mask.png"),
                                              FrameResult("b.png", spacing_mm=(S, S), mask="b_mask.png"),
                                              FrameResult("bad.png", error="bad.png: unreadable")])
    write_results(mixed / "measurements.csv", [FrameResult("a.png", spacing_mm=(S, S), mask="a_mask.png"),
                                               FrameResult("b.png", spacing_mm=(0.08, 0.08), mask="b_mask.png")])
    write_results(unknown / "measurements.csv", [FrameResult("a.png", spacing_mm=(S, S), mask="a_mask.png"),
                                                 FrameResult("b.png", mask="b_mask.png")])
    assert spacing_from_results(same) == ((S, S), "")
    assert spacing_from_results(tmp_path) == (None, "")
    spacing, reason = spacing_from_results(mixed)
    assert spacing is None and "2 different spacings" in reason and str(mixed / "measurements.csv") in reason
    spacing, reason = spacing_from_results(unknown)
    assert spacing is None and "no known spacing" in reason and "\n" not in reason


def assert_valid_png(path: Path) -> None:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] >= 300 and image.size[1] >= 300
        assert np.asarray(image.convert("L")).std() > 5  # something drawn, not a blank canvas


def test_evaluate_folders_confidences_probabilities_report_and_plots(tmp_path):
    gt_dir, pred_dir, prob_dir, out_dir = (tmp_path / d for d in ("gt", "pred", "prob", "out"))
    for d in (gt_dir, pred_dir, prob_dir):
        d.mkdir()
    for stem in "abcd":
        write_png(gt_dir / f"{stem}.png", disk_mask())
    write_png(pred_dir / "a_mask.png", disk_mask())
    write_png(pred_dir / "b_mask.png", disk_mask(center=(63, 70)))
    write_png(pred_dir / "c_mask.png", disk_mask(radius=22))  # box IoU (43/49)^2 = 0.77, but confidence 0.5
    write_results(pred_dir / "measurements.csv",
                  [FrameResult(f"{stem}.png", confidence=c, mask=f"{stem}_mask.png")
                   for stem, c in (("a", 0.99), ("b", 0.995), ("c", 0.5))])
    gt = disk_mask()
    np.save(prob_dir / "a_prob.npy", np.where(gt, 0.9, 0.1))
    Image.fromarray(np.where(disk_mask(center=(63, 70)), 230, 20).astype(np.uint8)).save(prob_dir / "b_prob.png")
    summary = evaluate_folders(pred_dir, gt_dir, out_dir, S, probability_dir=prob_dir, strict=True)  # d: FN

    rows = read_csv(out_dir / "metrics.csv")
    assert [r["detection"] for r in rows] == ["TP", "TP", "FP", "FN"]
    assert [r["confidence"] for r in rows] == ["0.99", "0.995", "0.5", ""]
    assert float(rows[0]["auc"]) == 1.0 and rows[2]["auc"] == ""
    expected_b = segmentation_metrics(disk_mask(center=(63, 70)), gt, S,
                                      probability=np.where(disk_mask(center=(63, 70)), 230, 20) / 255)
    assert float(rows[1]["auc"]) == pytest.approx(expected_b["auc"]) and 0.5 < expected_b["auc"] < 1
    assert rows[0]["bbox_gt"] == "36;46;85;95" and rows[3]["bbox_pred"] == ""
    assert {"hd_px", "hd95_px", "box_iou"} <= set(rows[0])

    assert summary["confidence_source"] == "measurements.csv" and summary["detection_confidence_threshold"] == 0.98
    assert summary["detection_precision"] == pytest.approx(2 / 3)
    assert summary["detection_recall"] == pytest.approx(2 / 3)
    # AP sweeps the threshold: c's low confidence only ranks it last; 3 hits first of 4 nerves, AP = 3/4
    assert summary["detection_map"] == pytest.approx(0.75)
    assert summary["auc_n"] == 2 and summary["auc_mean"] == pytest.approx((1 + expected_b["auc"]) / 2)
    for name in ("dice", "iou", "precision", "recall", "auc"):
        assert {f"{name}_{s}" for s in ("mean", "sd", "median", "q1", "q3")} <= set(summary)
    assert {f"{name}_{s}_mm" for name in ("hd", "hd95") for s in ("mean", "sd", "median", "q1", "q3")} <= set(summary)
    assert summary == json.loads((out_dir / "summary.json").read_text())

    report = (out_dir / "report.md").read_text(encoding="utf-8")
    for row in ("| DSC |", "| IoU |", "| Precision |", "| Recall |", "| HD95 (mm) |", "| AUC |", "| CSA MAE (mm^2) |",
                "| ICC(3,1) [95% CI] |", "| CSA bias [LoA] (mm^2) |", "| Detection precision | 0.667 |",
                "| Detection recall | 0.667 |", "| Detection mAP | 0.750 |", "| Metric | Mean ± SD | Median [IQR] |"):
        assert row in report
    assert f"| DSC | {summary['dice_mean']:.3f} ± {summary['dice_sd']:.3f} | {summary['dice_median']:.3f} [" in report
    assert_valid_png(out_dir / "bland_altman.png")
    assert_valid_png(out_dir / "csa_scatter.png")

    override = evaluate_folders(pred_dir, gt_dir, tmp_path / "out2", S, confidences={"a": 0.1, "b": 0.999, "c": 0.999},
                                strict=True)
    assert override["confidence_source"] == "argument"
    assert [r["detection"] for r in read_csv(tmp_path / "out2" / "metrics.csv")] == ["FP", "TP", "TP", "FN"]


# ----------------------------------------------------------------------------- the evaluate command

def evaluate_cli(tmp_path, *options):
    from MedianNerveSegLib.cli import main

    return main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "--out", str(tmp_path / "out"), *options])


def make_folders(tmp_path, gt_stems, pred_stems):
    for folder in ("gt", "pred"):
        (tmp_path / folder).mkdir()
    for stem in gt_stems:
        write_png(tmp_path / "gt" / f"{stem}.png", disk_mask())
    for stem in pred_stems:
        write_png(tmp_path / "pred" / f"{stem}_mask.png", disk_mask())


def test_cli_names_missing_predictions_and_strict_counts_them(tmp_path, capsys):
    make_folders(tmp_path, [f"s{i}" for i in range(8)], ["s0"])
    assert evaluate_cli(tmp_path, "--spacing", str(S)) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "7 ground-truth mask(s) without a prediction" in err[0]
    assert "s1, s2, s3, s4, s5, ..." in err[0] and "--strict" in err[0]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["n"] == 1
    assert evaluate_cli(tmp_path, "--spacing", str(S), "--strict") == 0
    assert "counted as empty" in capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n"] == 8 and summary["dice_mean"] == pytest.approx(1 / 8)


def test_cli_empty_pred_folder_is_one_line_exit_2(tmp_path, capsys):
    make_folders(tmp_path, ["a"], [])
    assert evaluate_cli(tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'pred'}: no predicted mask matches any ground-truth mask in {tmp_path / 'gt'}"]


def test_cli_failed_files_on_stderr_and_exit_1(tmp_path, capsys):
    make_folders(tmp_path, ["a", "b"], ["a"])
    write_png(tmp_path / "pred" / "b_mask.png", disk_mask(shape=(100, 100)))
    assert evaluate_cli(tmp_path, "--spacing", str(S)) == 1
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'pred' / 'b_mask.png'}: " in err and "Traceback" not in err
    assert "1 image(s) could not be scored" in err
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["n_errors"] == 1


def test_cli_spacing_from_the_results_file(tmp_path, capsys):
    make_folders(tmp_path, ["a", "b"], ["a", "b"])
    write_results(tmp_path / "pred" / "measurements.csv",
                  [FrameResult(f"{stem}.png", spacing_mm=(S, S), mask=f"{stem}_mask.png") for stem in "ab"])
    assert evaluate_cli(tmp_path) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["units"] == "mm" and summary["spacing_mm"] == [S, S]
    (tmp_path / "pred" / "measurements.csv").unlink()
    write_results(tmp_path / "pred" / "measurements.csv", [FrameResult("a.png", spacing_mm=(S, S), mask="a_mask.png"),
                                                          FrameResult("b.png", mask="b_mask.png")])
    capsys.readouterr()
    assert evaluate_cli(tmp_path) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no known spacing" in err[0] and "pixels" in err[0]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["units"] == "px"
    assert evaluate_cli(tmp_path, "--spacing", "0.08") == 0  # --spacing wins, no warning
    assert capsys.readouterr().err == ""
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["spacing_mm"] == [0.08, 0.08]


def test_cli_prob_folder_gives_the_auc(tmp_path):
    make_folders(tmp_path, ["a"], ["a"])
    (tmp_path / "prob").mkdir()
    Image.fromarray(np.where(disk_mask(), 230, 20).astype(np.uint8)).save(tmp_path / "prob" / "a_prob.png")
    assert evaluate_cli(tmp_path, "--spacing", str(S)) == 0
    assert "auc_mean" not in json.loads((tmp_path / "out" / "summary.json").read_text())
    assert evaluate_cli(tmp_path, "--spacing", str(S), "--prob", str(tmp_path / "prob")) == 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["auc_mean"] == 1.0


def test_bland_altman_confidence_intervals_and_kappa_known_answers():
    from scipy import stats

    from MedianNerveSegLib.evaluate import class_agreement, csa_agreement

    gt = np.array([8.0, 9.0, 11.0, 12.0, 15.0])
    pred = gt + np.array([1.0, -1.0, 2.0, 0.0, 3.0])  # differences: mean 1, SD sqrt(2.5)
    a = csa_agreement(pred, gt)
    t, sd = stats.t.ppf(0.975, 4), 2.5 ** 0.5
    assert a["bias"] == pytest.approx(1.0) and a["sd_diff"] == pytest.approx(sd)
    assert a["bias_ci"] == pytest.approx([1 - t * sd / 5 ** 0.5, 1 + t * sd / 5 ** 0.5])
    assert a["loa_high_ci"] == pytest.approx([1 + 1.96 * sd - t * sd * (3 / 5) ** 0.5,
                                              1 + 1.96 * sd + t * sd * (3 / 5) ** 0.5])
    c = class_agreement(pred, gt, 10.0)  # pred 9, 8, 13, 12, 18 against gt 8, 9, 11, 12, 15
    assert (c["both_enlarged"], c["only_predicted_enlarged"], c["only_reference_enlarged"], c["neither"]) == (3, 0, 0, 2)
    assert c["kappa"] == pytest.approx(1.0)
    c = class_agreement([11.0, 9.0, 11.0, 9.0], [11.0, 11.0, 9.0, 9.0], 10.0)  # chance agreement: kappa 0
    assert c["kappa"] == pytest.approx(0.0)


def test_agreement_per_patient_averages_each_patients_images():
    from MedianNerveSegLib.evaluate import per_patient_agreement

    rows = [{"image": "Pz001-001", "csa_pred_mm2": 10.0, "csa_gt_mm2": 9.0},
            {"image": "Pz001-002", "csa_pred_mm2": 12.0, "csa_gt_mm2": 9.0},   # Pz001: 11 against 9
            {"image": "Pz002-001", "csa_pred_mm2": 8.0, "csa_gt_mm2": 8.0},    # Pz002: 8 against 8
            {"image": "Pz003-001", "csa_pred_mm2": float("nan"), "csa_gt_mm2": 7.0}]
    p = per_patient_agreement(rows)
    assert p["n_patients"] == 2 and p["bias"] == pytest.approx(1.0) and p["mae"] == pytest.approx(1.0)
