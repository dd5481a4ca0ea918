"""benchmarks/review_widths.py: the scores that rank images for review, on cross-validation folders it reads."""

import importlib.util

import numpy as np
import pytest

from MedianNerveSegLib.io import write_mask_png

from conftest import REPO

SPACING = 0.062


def _script():
    spec = importlib.util.spec_from_file_location("review_widths", REPO / "benchmarks" / "review_widths.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _disk(radius: float, soft: float = 0.0) -> np.ndarray:
    """A nerve probability map: 1 inside ``radius`` pixels, falling to 0 over ``soft`` pixels outside it."""
    rows, cols = np.mgrid[:160, :160]
    distance = np.hypot(rows - 80, cols - 80) - radius
    return np.clip(1 - distance / soft, 0, 1) if soft else (distance <= 0).astype(float)


def _cv(folder, radii, soft=0.0):
    """A cross-validate --out folder: one image per radius, the expert's nerve a 30-pixel disk in each."""
    (folder / "predictions").mkdir(parents=True)
    (folder / "truth").mkdir()
    for k, radius in enumerate(radii):
        np.save(folder / "predictions" / f"P{k}_prob.npy", _disk(radius, soft).astype(np.float16))
        write_mask_png(folder / "truth" / f"P{k}.png", _disk(30).astype(np.uint8))
    return folder


def test_the_members_spread_ranks_the_ensembles_large_errors(tmp_path):
    review_widths = _script()
    # images 0-3: the members agree with the expert; images 4-5: they disagree, and the ensemble is off by ~5 mm^2
    ensemble = _cv(tmp_path / "ensemble", [30, 30, 30, 30, 36, 36])
    member_a = _cv(tmp_path / "a", [30, 30, 31, 30, 30, 31])
    member_b = _cv(tmp_path / "b", [30, 31, 30, 30, 40, 40])
    result = review_widths.disagreement_scores(ensemble, [member_a, member_b], SPACING)
    assert result["n_images"] == 6 and result["n_large_errors"] == 2
    assert result["roc_auc"] == 1.0
    assert result["at_width"]["1.6"]["caught"] == 1.0 and result["at_width"]["1.6"]["others_flagged"] == 0.0
    one_pixel_wider = (np.sum(_disk(31)) - np.sum(_disk(30))) * SPACING ** 2  # images 1 and 2's spread
    assert 0.5 < one_pixel_wider < 1.0 and result["at_width"]["1"]["others_flagged"] == 0.0


def test_the_interval_width_is_the_band_that_segment_reports(tmp_path):
    review_widths = _script()
    sharp = _cv(tmp_path / "sharp", [30, 30])
    soft = _cv(tmp_path / "soft", [30, 30], soft=8.0)  # probability 0.75 to 0.25 from radius 32 to 36
    assert review_widths.images(sharp, SPACING)["P0"][0] == 0.0
    band = (np.sum(_disk(30, 8) >= 0.25) - np.sum(_disk(30, 8) >= 0.75)) * SPACING ** 2
    assert review_widths.images(soft, SPACING)["P0"][0] == pytest.approx(band)


def test_a_member_that_finds_no_nerve_is_the_widest_disagreement_not_a_left_out_image(tmp_path):
    review_widths = _script()
    ensemble = _cv(tmp_path / "ensemble", [30, 30, 30, 36])
    member_a = _cv(tmp_path / "a", [30, 30, 30, 0])  # no nerve found on the ensemble's large error
    member_b = _cv(tmp_path / "b", [30, 30, 31, 36])
    result = review_widths.disagreement_scores(ensemble, [member_a, member_b], SPACING)
    assert (result["n_images"], result["n_left_out"], result["n_large_errors"]) == (4, 0, 1)
    assert result["roc_auc"] == 1.0 and result["at_width"]["1.6"]["caught"] == 1.0


def test_a_set_without_a_large_error_scores_none_instead_of_failing(tmp_path):
    review_widths = _script()
    result = review_widths.interval_scores(_cv(tmp_path / "good", [30, 30, 0]), SPACING)
    assert (result["n_images"], result["n_left_out"], result["n_large_errors"]) == (2, 1, 0)
    assert result["roc_auc"] is None and result["width_flagging_15pct_mm2"] is None
    assert result["at_width"]["1"]["caught"] is None and result["at_width"]["1"]["others_flagged"] == 0.0
