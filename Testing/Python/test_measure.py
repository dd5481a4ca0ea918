"""Known-answer tests of CSA and shape measurement (MedianNerveSegLib.measure)."""

import math

import numpy as np
import pytest
from skimage.draw import disk, ellipse
from skimage.measure import perimeter_crofton

from MedianNerveSegLib.measure import NerveMeasurement, anisotropic_crofton_perimeter, crofton_perimeter, measure_mask

S = 0.062  # dataset spacing, mm


def ramanujan(a: float, b: float) -> float:
    """Perimeter of an ellipse with semi-axes a, b (Ramanujan's second approximation)."""
    h = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))


def ellipse_mask(a_rows: float, b_cols: float, shape=(200, 200)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[ellipse(shape[0] // 2, shape[1] // 2, a_rows, b_cols, shape=shape)] = True
    return mask


def test_ellipse_known_answers():
    m = measure_mask(ellipse_mask(40, 25), (S, S))
    assert m.found and m.spacing_known and m.n_components == 1 and m.area_unit == "mm2"
    assert m.area_mm2 == pytest.approx(math.pi * 40 * 25 * S * S, rel=0.01)
    assert m.area_mm2 == pytest.approx(m.area_px * S * S)
    assert m.perimeter_mm == pytest.approx(ramanujan(40 * S, 25 * S), rel=0.03)
    assert m.perimeter_px == pytest.approx(ramanujan(40, 25), rel=0.03)
    assert m.flattening_ratio == pytest.approx(49 / 79)  # transverse / AP: the disk spans 49 columns, 79 rows
    assert m.flattening_ratio == pytest.approx(25 / 40, rel=0.02)
    assert m.ellipse_ratio == pytest.approx(1.6, rel=0.02)
    assert m.component_areas == [pytest.approx(m.area_mm2)]


@pytest.mark.parametrize("a, b", [(40, 25), (60, 60), (20, 10), (30, 18)])
def test_perimeter_estimator_close_to_analytic(a, b):
    assert measure_mask(ellipse_mask(a, b), S).perimeter_mm == pytest.approx(ramanujan(a * S, b * S), rel=0.03)


def test_big_disk_is_circular():
    mask = np.zeros((300, 300), np.uint8)
    mask[disk((150, 150), 100)] = 1
    m = measure_mask(mask, S)
    assert m.circularity == pytest.approx(1.0, rel=0.05)
    assert m.flattening_ratio == pytest.approx(1.0, abs=0.01) and m.ellipse_ratio == pytest.approx(1.0, abs=0.01)


def test_isotropic_float_spacing_equals_pair():
    mask = ellipse_mask(30, 20)
    assert measure_mask(mask, S) == measure_mask(mask, (S, S))


def test_anisotropic_square_area():
    mask = np.zeros((100, 100), bool)
    mask[10:50, 30:70] = True
    m = measure_mask(mask, (0.05, 0.1))
    assert m.area_px == 1600
    assert m.area_mm2 == pytest.approx(40 * 40 * 0.005)
    assert m.flattening_ratio == pytest.approx(2.0)  # 4 mm wide, 2 mm deep
    assert m.ellipse_ratio == pytest.approx(2.0, rel=0.01)


def test_anisotropic_ellipse_is_a_circle_in_mm():
    m = measure_mask(ellipse_mask(40, 20), (0.05, 0.1))  # 2 mm radius both ways
    assert m.flattening_ratio == pytest.approx(1.0, abs=0.03) and m.ellipse_ratio == pytest.approx(1.0, abs=0.03)
    assert m.area_mm2 == pytest.approx(math.pi * 4, rel=0.01)
    assert m.perimeter_mm == pytest.approx(4 * math.pi, rel=0.03)
    assert m.circularity == pytest.approx(1.0, rel=0.05)
    in_px = measure_mask(ellipse_mask(40, 20), None)
    assert in_px.flattening_ratio == pytest.approx(0.5, rel=0.02) and in_px.ellipse_ratio == pytest.approx(2.0, rel=0.02)


@pytest.mark.parametrize("spacing, a, b", [((0.05, 0.1), 40, 25), ((0.05, 0.1), 60, 30), ((0.062, 0.07), 30, 20),
                                           ((0.1, 0.05), 60, 30), ((0.03, 0.1), 60, 30)])
def test_anisotropic_perimeter_close_to_analytic(spacing, a, b):
    expected = ramanujan(a * spacing[0], b * spacing[1])
    assert crofton_perimeter(ellipse_mask(a, b, (300, 300)), spacing) == pytest.approx(expected, rel=0.04)


def test_generalised_crofton_reduces_to_skimage():
    """With skimage's 4 directions on an isotropic grid the generalisation is skimage's estimator."""
    mask = np.random.default_rng(0).random((60, 50)) > 0.6
    four = [(0, 1), (1, 1), (1, 0), (1, -1)]
    expected = perimeter_crofton(mask, 4) * 0.062
    assert anisotropic_crofton_perimeter(mask, (0.062, 0.062), four) == pytest.approx(expected)
    assert crofton_perimeter(mask, (0.062, 0.062)) == pytest.approx(expected)
    smooth = ellipse_mask(40, 25)
    assert anisotropic_crofton_perimeter(smooth, (1, 1)) == pytest.approx(perimeter_crofton(smooth, 4), rel=0.01)


def test_bifid_nerve_two_components():
    mask = np.zeros((120, 200), bool)
    mask[disk((60, 50), 20)] = True
    mask[disk((60, 140), 12)] = True
    m = measure_mask(mask, S)
    big, small = np.count_nonzero(mask[:, :100]), np.count_nonzero(mask[:, 100:])
    assert m.n_components == 2
    assert m.area_px == big + small
    assert m.component_areas == [pytest.approx(big * S * S), pytest.approx(small * S * S)]
    assert m.area_mm2 == pytest.approx(sum(m.component_areas))
    assert m.perimeter_px == pytest.approx(perimeter_crofton(mask[:, :100], 4) + perimeter_crofton(mask[:, 100:], 4))
    assert m.as_row()["component_areas"] == ";".join(f"{a:.3f}" for a in m.component_areas)


def test_diagonal_touch_is_one_component():
    mask = np.zeros((10, 10), bool)
    mask[2:5, 2:5] = mask[5:8, 5:8] = True
    assert measure_mask(mask, S).n_components == 1


def test_empty_mask():
    m = measure_mask(np.zeros((50, 60), np.uint8), S)
    assert not m.found
    assert m.area_px == 0 and m.area_mm2 == 0 and m.n_components == 0 and m.component_areas == []
    assert m.flattening_ratio is None and m.circularity is None
    row = m.as_row()
    assert row["flattening_ratio"] is None and row["component_areas"] == "" and row["found"] is False


def test_unknown_spacing_reports_pixels_only():
    mask = ellipse_mask(30, 20)
    m = measure_mask(mask, None)
    assert not m.spacing_known and m.spacing_mm is None
    assert m.area_mm2 is None and m.perimeter_mm is None
    assert m.area_px == int(mask.sum()) and m.area_unit == "px"
    assert m.component_areas == [float(mask.sum())]
    assert m.circularity is not None
    row = m.as_row()
    assert row["spacing_mm"] == "" and row["spacing_known"] is False and row["area_mm2"] is None


def test_uint8_255_same_as_bool():
    mask = ellipse_mask(30, 20)
    assert measure_mask(mask.astype(np.uint8) * 255, S) == measure_mask(mask, S)
    assert measure_mask(mask.astype(np.uint8), S) == measure_mask(mask, S)


def test_as_row_keys_and_formats():
    row = measure_mask(ellipse_mask(30, 20), S).as_row()
    assert {"found", "area_mm2", "area_px", "perimeter_mm", "perimeter_px", "circularity", "flattening_ratio",
            "n_components", "component_areas", "spacing_mm", "spacing_known"} <= set(row)
    assert row["spacing_mm"] == "0.0620x0.0620"
    assert isinstance(row["component_areas"], str)
    assert isinstance(measure_mask(ellipse_mask(5, 5), S), NerveMeasurement)


@pytest.mark.parametrize("bad", [0, -0.1, (0.1,), (0.1, 0.0), (0.1, 0.1, 0.1)])
def test_invalid_spacing_rejected(bad):
    with pytest.raises(ValueError):
        measure_mask(ellipse_mask(5, 5), bad)


def test_non_2d_mask_rejected():
    with pytest.raises(ValueError):
        measure_mask(np.zeros((2, 5, 5)), S)


@pytest.mark.parametrize("offset", [(0, 0), (200, 300), (468 - 41, 606 - 63)])
def test_a_nerve_measures_the_same_anywhere_in_a_full_frame(offset):
    # measure_mask works on the nerve's bounding box: the frame around it must not change a figure
    nerve = np.zeros((41, 63), bool)
    rr, cc = np.ogrid[:41, :63]
    nerve |= ((rr - 20) / 20.0) ** 2 + ((cc - 31) / 31.0) ** 2 <= 1
    nerve[5:9, 50:62] = True  # a second, touching-the-edge part
    frame = np.zeros((468, 606), bool)
    frame[offset[0]:offset[0] + 41, offset[1]:offset[1] + 63] = nerve
    for spacing in (None, 0.062, (0.05, 0.07)):
        assert measure_mask(frame, spacing) == measure_mask(nerve, spacing)
