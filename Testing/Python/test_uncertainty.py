"""The CSA interval and the "review" flag (issue 17): known answers, and every output that shows them."""

import csv
import math

import numpy as np
import pytest

from MedianNerveSegLib import uncertainty
from MedianNerveSegLib.cli import main
from MedianNerveSegLib.cross_validation import _review
from MedianNerveSegLib.pipeline import overlay_caption
from MedianNerveSegLib.report import summarise
from MedianNerveSegLib.results import FrameResult, read_results
from conftest import SPACING, needs_data

from MedianNerveSegLib.uncertainty import (REVIEW_FLAG, CsaInterval, band_pixels, csa_interval, flag_performance,
                                           width_catching)


def _soft_disk(radius: float, edge: float, shape=(200, 200)) -> np.ndarray:
    """A nerve whose probability falls off logistically across its edge: p = 1 / (1 + exp((r - R) / edge))."""
    rows, cols = np.indices(shape)
    r = np.hypot(rows - shape[0] / 2, cols - shape[1] / 2)
    return 1.0 / (1.0 + np.exp((r - radius) / edge))


def test_the_band_is_the_area_at_the_stricter_and_the_looser_threshold():
    # p >= 0.75 where r <= R - edge*ln 3, p >= 0.25 where r <= R + edge*ln 3
    for edge in (1.0, 4.0):
        strict, loose = band_pixels(_soft_disk(40.0, edge), min_component_px=10, min_branch_fraction=0.2)
        assert strict == pytest.approx(math.pi * (40 - edge * math.log(3)) ** 2, rel=0.02)
        assert loose == pytest.approx(math.pi * (40 + edge * math.log(3)) ** 2, rel=0.02)


def test_a_wide_band_needs_review_and_no_spacing_gives_no_interval():
    # the band of a soft disk is about 4 pi R edge ln 3 pixels wide: edges a third and three times the review width's
    at_review = uncertainty.REVIEW_WIDTH_MM2 / 0.062 ** 2 / (4 * math.pi * 30.0 * math.log(3))
    area = int((_soft_disk(30.0, at_review) >= 0.5).sum())
    sharp = csa_interval(band_pixels(_soft_disk(30.0, at_review / 3), 10, 0.2), area, (0.062, 0.062))
    blurred = csa_interval(band_pixels(_soft_disk(30.0, at_review * 3), 10, 0.2), area, (0.062, 0.062))
    assert sharp.low_mm2 < area * 0.062 ** 2 < sharp.high_mm2
    assert not sharp.needs_review and blurred.needs_review
    assert blurred.width_mm2 >= uncertainty.REVIEW_WIDTH_MM2 > sharp.width_mm2
    assert csa_interval((100, 200), 150, None) is None and csa_interval(None, 150, (0.1, 0.1)) is None
    held = csa_interval((100, 120), 150, (0.1, 0.1))  # the reported CSA always lies in its interval
    assert (held.low_mm2, held.high_mm2) == pytest.approx((1.0, 1.5))


def test_flag_performance_and_the_width_that_catches_nine_in_ten_known_answers():
    errors = [2.0, -3.0, 1.6, 0.1, 0.2, -0.4, 0.3, 1.0, 0.0, 0.5]
    widths = [1.5, 2.0, 0.8, 0.2, 1.2, 0.3, 0.1, 0.4, 0.2, 0.3]
    result = flag_performance(errors, widths, width_mm2=1.0)
    assert (result["n_large_errors"], result["n_others"]) == (3, 7)
    assert result["caught"] == pytest.approx(2 / 3) and result["others_flagged"] == pytest.approx(1 / 7)
    assert width_catching(errors, widths, share=0.9) == 0.8  # all three large errors have a width >= 0.8
    assert width_catching(errors, widths, share=0.6) == 1.5  # two of three
    assert width_catching([0.1], [3.0]) is None


def test_cross_validation_scores_the_flag_with_widths_chosen_on_the_other_folds(tmp_path):
    metrics = tmp_path / "metrics.csv"
    rows = [("a", 10.0, 2.0), ("b", 9.0, 0.1), ("c", 12.0, -2.5), ("d", 8.0, 0.2), ("e", 11.0, 0.0)]
    with open(metrics, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "csa_gt_mm2", "csa_error_mm2"])
        writer.writerows(rows)
    pred = {stem: truth + error for stem, truth, error in rows}
    widths = {"a": 2.0, "b": 0.1, "c": 1.5, "d": 1.6, "e": 0.2}
    intervals = {stem: CsaInterval(pred[stem] - widths[stem] / 2, pred[stem] + widths[stem] / 2) for stem in pred}
    intervals["f"] = None  # nerve not found: not scored
    review = _review(metrics, intervals, {"a": 0, "b": 0, "c": 1, "d": 1, "e": 1, "f": 1})
    assert review["n_images"] == 5
    # fold 0 uses the width of fold 1's one large error (c: 1.5), fold 1 that of fold 0's (a: 2.0)
    assert review["chosen_on_other_folds"]["widths_mm2"] == {"0": 1.5, "1": 2.0}
    assert review["chosen_on_other_folds"]["caught"] == pytest.approx(0.5)  # a caught, c (1.5 < 2.0) missed
    assert review["chosen_on_other_folds"]["others_flagged"] == 0.0
    stems = sorted(widths)
    assert review["shipped"] == flag_performance([pred[s] - t for s, t, _ in rows], [widths[s] for s in stems])
    assert review["truth_in_interval"] == pytest.approx(0.4)  # a, b and c miss by more than half their width


def _row(image, area, low, high, flags=()):
    return FrameResult(image=image, patient="P1", side="right", level="inlet", found=True, area_mm2=area,
                       csa_low_mm2=low, csa_high_mm2=high, area_px=int(area * 100), spacing_mm=(0.1, 0.1),
                       model="m@1", flags=list(flags))


def test_the_overlay_and_the_report_show_the_range_and_the_review_flag():
    flagged = _row("a.png", 10.2, 9.0, 11.6, ["review"])
    calm = _row("b.png", 9.8, 9.6, 10.0)
    assert overlay_caption(flagged)[0] == "REVIEW CSA 10.20 mm\u00b2 (range 9.0-11.6)"
    assert overlay_caption(calm)[0] == "CSA 9.80 mm\u00b2 (range 9.6-10.0)"
    report = summarise([(flagged, ""), (calm, "")])
    images = report.sides[0].levels["inlet"].images
    assert [i.text() for i in images] == ["10.20 (range 9.0-11.6, REVIEW)", "9.80 (range 9.6-10.0)"]
    from MedianNerveSegLib.report import report_markdown

    assert "1 of 2 images flagged REVIEW" in report_markdown(report)


def test_segment_writes_the_interval_and_the_flag_it_reads(dataset_dir, tmp_path):
    images = sorted((dataset_dir / "images").glob("*.png"))[:3]
    out = tmp_path / "out"
    assert main(["segment", *map(str, images), "--out", str(out), "--spacing", "0.062"]) == 0
    rows = read_results(out)
    assert len(rows) == 3
    for row in rows:
        assert row.csa_low_mm2 <= row.area_mm2 <= row.csa_high_mm2
        assert ("review" in row.flags) == (row.csa_high_mm2 - row.csa_low_mm2 >= uncertainty.REVIEW_WIDTH_MM2)
    header = (out / "measurements.csv").read_text().splitlines()[0].split(",")
    assert {"csa_low_mm2", "csa_high_mm2"} <= set(header)
    uncalibrated = tmp_path / "px"  # a PNG without spacing: pixels only, no interval in mm^2
    assert main(["segment", str(images[0]), "--out", str(uncalibrated)]) == 0
    row = read_results(uncalibrated)[0]
    assert row.area_mm2 is None and row.csa_low_mm2 is None and row.csa_high_mm2 is None


def test_a_results_file_from_before_the_interval_is_still_read(tmp_path):
    path = tmp_path / "measurements.csv"
    columns = [c for c in FrameResult.__dataclass_fields__ if c not in ("csa_low_mm2", "csa_high_mm2")]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerow({c: "" for c in columns} | {"image": "x.png", "frame": "0", "area_mm2": "10.5"})
    row = read_results(path)[0]
    assert row.area_mm2 == 10.5 and row.csa_low_mm2 is None


class _Disk:
    """A member whose probability map is a sharp disk of ``radius``."""

    def __init__(self, radius):
        self.radius = radius

    def probability(self, frame, spacing_mm=None):
        rows, cols = np.indices(frame.shape)
        return (np.hypot(rows - 50, cols - 50) <= self.radius).astype(np.float32)


def test_where_ensemble_members_disagree_the_interval_spans_them():
    from MedianNerveSegLib.image import UltrasoundImage
    from MedianNerveSegLib.inference import Ensemble
    from MedianNerveSegLib.zoo import ModelInfo

    ensemble = Ensemble.__new__(Ensemble)  # its averaging and clean-up, over two stand-in members
    ensemble.members, ensemble.network = [_Disk(20), _Disk(26)], None
    ensemble.info = ModelInfo(name="disks", architecture="unet")
    image = UltrasoundImage(np.random.default_rng(0).random((100, 100)).astype(np.float32), (0.1, 0.1))
    prediction = ensemble.predict(image)
    inner, outer = (int((_Disk(r).probability(image.pixels) > 0).sum()) for r in (20, 26))
    assert prediction.band_px == (inner, outer)  # the mean is 0.5 between the two contours
    assert int(prediction.mask.sum()) == outer


def test_segment_with_two_models_writes_their_ensemble(dataset_dir, tmp_path):
    from MedianNerveSegLib.inference import Ensemble, Segmenter
    from MedianNerveSegLib.io import read_image

    image_path = sorted((dataset_dir / "images").glob("*.png"))[0]
    image = read_image(image_path, 0.062)
    models = ["median_nerve_unet", "median_nerve_unet_small"]
    ensemble = Ensemble(models)
    expected = np.mean([Segmenter(m).probability(image.pixels) for m in models], axis=0)
    np.testing.assert_allclose(ensemble.probability(image.pixels), expected, atol=1e-6)
    out = tmp_path / "out"
    assert main(["segment", str(image_path), "--out", str(out), "--spacing", "0.062", "--model", models[0],
                 "--model", models[1]]) == 0
    [row] = read_results(out)
    assert row.model == ensemble.model_id == " + ".join(Segmenter(m).model_id for m in models)
    assert row.csa_low_mm2 <= row.area_mm2 <= row.csa_high_mm2
    with pytest.raises(ValueError, match="two or more"):
        Ensemble(models[:1])


def test_the_width_catching_nine_in_ten_of_ten_is_the_second_smallest():
    widths = [float(w) for w in range(1, 11)]  # (1 - 0.9) * 10 is 0.999... in floats: not the smallest
    assert width_catching([2.0] * 10, widths, share=0.9) == 2.0
    assert width_catching([2.0] * 20, widths * 2, share=0.9) == 2.0


def test_an_interval_exactly_as_wide_as_the_review_width_is_flagged():
    pixels = round(uncertainty.REVIEW_WIDTH_MM2 / 0.01)  # 100 pixels of 0.01 mm^2: not exactly 1.0 in floats
    assert csa_interval((1501, 1501 + pixels), 1550, (0.1, 0.1)).needs_review
    assert not csa_interval((1501, 1500 + pixels), 1550, (0.1, 0.1)).needs_review


def test_the_benchmarks_score_the_flag_the_csv_gives_at_the_limit():
    interval = csa_interval((1000, 1001), 1000, (0.062, 0.062), review_width_mm2=0.003844)  # one pixel wide
    assert interval.width_mm2 < 0.003844 and interval.needs_review  # 0.0038439999999999998: flagged in the CSV
    scored = flag_performance([2.0, 0.1], [interval.width_mm2] * 2, 0.003844)
    assert scored["caught"] == 1.0 and scored["others_flagged"] == 1.0


def test_an_ensemble_refuses_an_empty_or_repeated_member_and_its_overlay_says_ensemble(tmp_path):
    from MedianNerveSegLib.inference import segmenter_of

    with pytest.raises(ValueError, match="empty model name"):
        segmenter_of(["", "median_nerve_unet_small"])
    with pytest.raises(ValueError, match="given twice"):
        segmenter_of(["median_nerve_unet_small", "median_nerve_unet_small"])
    row = _row("a.png", 10.2, 9.8, 10.6)
    row.model = " + ".join(f"median_nerve_unet_fold{k}@1.0.0" for k in range(5))
    assert overlay_caption(row)[2] == "ensemble of 5 models"


def test_a_rerun_with_other_weights_of_the_same_name_and_version_is_refused(dataset_dir, tmp_path):
    import shutil

    import torch

    from MedianNerveSegLib.zoo import resolve_model

    shipped = resolve_model("median_nerve_unet_small")
    first, second = tmp_path / "a" / "model", tmp_path / "b" / "model"  # one name@version, other weights
    shutil.copytree(shipped, first)
    shutil.copytree(shipped, second)
    weights = torch.load(second / "model.pt", map_location="cpu")
    state = weights.get("state_dict", weights) if isinstance(weights, dict) else weights
    key = next(k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point())
    state[key] += 0.01
    torch.save(weights, second / "model.pt")
    images = sorted((dataset_dir / "images").glob("*.png"))[:2]
    out = tmp_path / "out"
    assert main(["segment", str(images[0]), "--out", str(out), "--spacing", "0.062", "--model", str(first),
                 "--runtime", "torch"]) == 0
    assert main(["segment", str(images[1]), "--out", str(out), "--spacing", "0.062", "--model", str(second),
                 "--runtime", "torch"]) == 2  # not appended to the first model's rows
    assert len(read_results(out)) == 1


def _model_with_review_width(folder, width):
    import json
    import shutil

    from MedianNerveSegLib.zoo import resolve_model

    folder.mkdir()
    for name in ("model.json", "model.pt"):
        shutil.copy2(resolve_model("median_nerve_unet_small") / name, folder / name)
    info = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**info, "review_width_mm2": width}))
    return folder


@needs_data
@pytest.mark.parametrize("width, flagged", [(1e-6, True), (1e6, False)])
def test_segment_flags_review_at_the_models_own_width(dataset_dir, tmp_path, width, flagged):
    model = _model_with_review_width(tmp_path / "model", width)
    image = sorted((dataset_dir / "images").iterdir())[0]
    assert main(["segment", str(image), "--model", str(model), "--spacing", str(SPACING), "--out",
                     str(tmp_path / "out"), "--no-overlay"]) == 0
    row = read_results(tmp_path / "out")[0]
    assert row.csa_high_mm2 > row.csa_low_mm2 and (REVIEW_FLAG in row.flags) == flagged


@pytest.mark.parametrize("width", [0, -1.0, "1", float("inf"), None])
def test_a_bad_review_width_in_model_json_is_refused_naming_it(tmp_path, width):
    from MedianNerveSegLib.zoo import ModelFolderError, load_info

    model = _model_with_review_width(tmp_path / "model", width)
    with pytest.raises(ModelFolderError, match=r"model\.json: 'review_width_mm2' must be a number > 0"):
        load_info(model)
