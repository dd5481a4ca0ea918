"""Clicks: text form, the zoom-in crop, click disks, the click simulator, the baseline and the click session."""

import numpy as np
import pytest

from MedianNerveSegLib.clicks import (Click, ClickEncoding, Crop, check_clicks, click_maps, next_click, parse_click,
                                      zoom_crop)
from MedianNerveSegLib.refine import (ClickSession, clicks_of, clicks_to_reach, mask_digest, simulate_clicks,
                                      toggle_components)


def _disk(shape, centre, radius):
    rows, cols = np.ogrid[:shape[0], :shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius ** 2


@pytest.mark.parametrize("text, click", [("+310,220", Click(310, 220, True)), ("-0,5", Click(0, 5, False)),
                                         (" + 3 , 4 ", Click(3, 4, True))])
def test_parse_click(text, click):
    assert parse_click(text) == click
    assert parse_click(str(click)) == click


@pytest.mark.parametrize("text", ["310,220", "+310", "+3.5,4", "*3,4", "+-3,4", "", "+3,4,5"])
def test_parse_click_refuses_anything_else_with_the_form_it_wants(text):
    with pytest.raises(ValueError, match=r"expected \+X,Y .* -X,Y"):
        parse_click(text)


def test_check_clicks_names_the_click_outside_the_frame():
    check_clicks([Click(0, 0, True), Click(605, 467, False)], (468, 606))
    with pytest.raises(ValueError, match=r"scan.png: click \+606,10 lies outside the image \(606 columns x 468 rows"):
        check_clicks([Click(1, 1, True), Click(606, 10, True)], (468, 606), "scan.png")
    with pytest.raises(ValueError, match="click -3,468"):
        check_clicks([Click(3, 468, False)], (468, 606))


def test_zoom_crop_holds_mask_and_clicks_at_the_encoding_scale():
    mask = np.zeros((468, 606), bool)
    mask[200:240, 250:410] = True  # 160 px wide
    encoding = ClickEncoding(expand=1.5, min_side_mm=12.0)
    crop = zoom_crop(mask, [Click(100, 220, True)], (0.062, 0.062), encoding, (256, 256))
    # the box of mask and click spans columns 100-409 (310 px): the crop is 1.5 x that, centred on it
    assert crop.width == crop.height == round(310 * 1.5)
    assert crop.left <= 100 and crop.left + crop.width >= 410 and crop.top <= 200 and crop.top + crop.height >= 240
    assert abs((crop.left + crop.width / 2) - 255) <= 1
    small = zoom_crop(np.zeros((468, 606), bool), [Click(300, 200, True)], (0.062, 0.062), encoding, (256, 256))
    assert small.height == small.width == round(12.0 / 0.062)  # at least 12 mm
    unknown = zoom_crop(np.zeros((468, 606), bool), [Click(300, 200, True)], None, encoding, (256, 256))
    assert unknown.height == round(encoding.min_side_fraction * 468)


def test_zoom_crop_is_square_in_mm_with_anisotropic_spacing():
    mask = np.zeros((300, 300), bool)
    mask[100:150, 100:200] = True
    crop = zoom_crop(mask, [], (0.1, 0.05), ClickEncoding(expand=1.0, min_side_mm=1.0), (64, 64))
    assert crop.height * 0.1 == pytest.approx(crop.width * 0.05, rel=0.02)


def test_crop_cut_and_paste_round_trip_past_the_frame_edges():
    frame = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    crop = Crop(-5, 20, 12, 15, (12, 15))
    cut = crop.cut(frame, fill=-1)
    assert cut.shape == (12, 15)
    assert (cut[:5] == -1).all() and (cut[:, 10:] == -1).all()  # above row 0, right of column 29
    assert np.array_equal(cut[5:, :10], frame[0:7, 20:30])
    back = crop.paste(cut, frame.shape, fill=0)
    assert np.array_equal(back[0:7, 20:30], frame[0:7, 20:30]) and back[10:, :].sum() == 0


def test_click_maps_are_disks_at_the_clicks_in_network_pixels():
    crop = Crop(100, 200, 200, 200, (100, 100))  # half the resolution
    maps = click_maps([Click(250, 150, True), Click(350, 250, False)], crop, radius=5)
    assert maps.shape == (2, 100, 100)
    row, col = np.argwhere(maps[0]).mean(axis=0)
    assert (row, col) == pytest.approx((24.75, 24.75), abs=0.5)  # (150.5 - 100) / 2 - 0.5
    assert maps[0].sum() == pytest.approx(np.pi * 25, rel=0.2) and maps[1][74, 74] == 1 and maps[0][74, 74] == 0
    assert not click_maps([], crop, 5).any()


def test_next_click_goes_deepest_into_the_larger_error():
    truth = _disk((100, 100), (50, 50), 20)
    missed = truth & ~_disk((100, 100), (50, 80), 15)  # a bite taken out of the right side
    click = next_click(missed, truth)
    assert click.positive and truth[click.y, click.x] and not missed[click.y, click.x]
    assert click.x > 60
    extra = truth | _disk((100, 100), (50, 15), 12)  # a blob taken in on the left
    click = next_click(extra, truth)
    assert not click.positive and extra[click.y, click.x] and not truth[click.y, click.x] and click.x < 35
    assert next_click(truth, truth) is None


def _oracle(truth, radius, stubborn_left_of=0):
    """A click model that gives the truth within ``radius`` pixels of the click, except for clicks left of
    column ``stubborn_left_of``, which change nothing."""
    def step(mask, clicks):
        if clicks[-1].x < stubborn_left_of:
            return mask
        near = _disk(truth.shape, (clicks[-1].y, clicks[-1].x), radius)
        return np.where(near, truth, mask)
    return step


def test_simulate_clicks_until_the_target_and_at_least_the_minimum():
    truth = _disk((120, 120), (60, 60), 30)
    start = (truth & ~_disk((120, 120), (60, 90), 22)) | _disk((120, 120), (60, 10), 4)  # a bite and a speck
    session = simulate_clicks(_oracle(truth, 8, stubborn_left_of=20), start, truth, max_clicks=20, min_clicks=5,
                              target_dice=0.95)
    assert 5 <= len(session.clicks) < 20 and session.clicks[0].positive
    reached = clicks_to_reach(session, truth, 0.95)
    assert 1 <= reached <= len(session.clicks)
    assert all(dice < 0.95 for dice in [2 * (m & truth).sum() / (m.sum() + truth.sum()) for m in session.masks[:reached]])
    assert clicks_to_reach(session, truth, 0.5) == 0
    perfect = simulate_clicks(_oracle(truth, 200), start, truth)
    assert len(perfect.clicks) == 1 and np.array_equal(perfect.masks[-1], truth)  # nothing left to click
    assert np.array_equal(session.mask_after(50), session.masks[-1])
    never = simulate_clicks(lambda mask, clicks: mask, start, truth, max_clicks=7)
    assert len(never.clicks) == 7 and clicks_to_reach(never, truth, 0.95) is None
    assert len(session.milliseconds) == len(session.clicks)


def test_baseline_only_keeps_or_drops_whole_components():
    truth = _disk((100, 100), (50, 30), 12)
    initial = truth | _disk((100, 100), (50, 75), 8)  # the nerve and a wrong blob
    candidates = initial | _disk((100, 100), (15, 15), 5)
    step = toggle_components(initial, candidates, truth)
    dropped = step(initial, [Click(75, 50, False)])
    assert np.array_equal(dropped, truth)
    assert np.array_equal(step(initial, [Click(30, 50, False)]), initial)  # the nerve itself is kept
    assert step(truth, [Click(15, 15, True)])[15, 15]  # a candidate component comes back whole
    assert np.array_equal(step(truth, [Click(90, 90, True)]), truth)  # nothing there to keep


class _CountingRefiner:
    """Stands in for Refiner: the mask grows by one pixel column per click; records the clicks it is given."""

    model_id = "stand-in@0"

    def __init__(self):
        self.given = []

    def refine(self, image, mask, clicks, frame_index=0):
        from types import SimpleNamespace

        self.given.append(tuple(clicks))
        grown = mask.copy()
        grown[:, len(self.given)] = True
        return SimpleNamespace(mask=grown, clicks=tuple(clicks))


def test_click_session_carries_the_clicks_of_its_own_masks_and_undo():
    refiner, empty = _CountingRefiner(), np.zeros((10, 10), bool)
    session = ClickSession(refiner, image=None)
    first = session.click(empty, Click(1, 1, True)).mask
    second = session.click(first, Click(2, 2, False)).mask
    assert refiner.given[-1] == (Click(1, 1, True), Click(2, 2, False))
    session.click(first, Click(3, 3, True))  # after an undo of the second click: its clicks are gone
    assert refiner.given[-1] == (Click(1, 1, True), Click(3, 3, True))
    painted = second.copy()
    painted[0, 9] = True
    session.click(painted, Click(4, 4, True))  # a mask edited by another tool: a new session
    assert refiner.given[-1] == (Click(4, 4, True),)
    assert session.made == 4
    assert session.provenance(second) == {"clicks": ["+1,1", "-2,2"], "clicks_made": 4, "click_model": "stand-in@0"}
    assert clicks_of(session.history, empty) == ()


def test_mask_digest_is_of_the_content():
    mask = _disk((20, 20), (10, 10), 4)
    assert mask_digest(mask) == mask_digest(mask.astype(np.uint8) * 255)
    assert mask_digest(mask) != mask_digest(mask.T[:, :19]) and mask_digest(mask) != mask_digest(~mask)


@pytest.mark.parametrize("settings, problem", [({"expand": 0.5}, "'expand' must be >= 1"),
                                               ({"radius": -1}, "'radius' must be a positive number"),
                                               ({"radius": float("nan")}, "'radius'"),
                                               ({"zoom": 2}, "unknown click encoding setting")])
def test_click_encoding_refuses_bad_settings(settings, problem):
    with pytest.raises(ValueError, match=problem):
        ClickEncoding.from_dict(settings)
