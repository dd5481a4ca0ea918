import numpy as np
from skimage.draw import disk

from MedianNerveSegLib.postprocess import clean_mask, min_component_pixels


def _probability(shape=(200, 300)):
    return np.zeros(shape, dtype=np.float32)


def test_fills_holes_and_drops_specks():
    p = _probability()
    p[disk((100, 100), 30)] = 0.9
    p[disk((100, 100), 5)] = 0.1  # hole
    p[10:13, 10:13] = 0.9  # speck
    mask = clean_mask(p, 0.5, min_component_px=50, min_branch_fraction=0.2)
    nerve = np.zeros_like(mask)
    nerve[disk((100, 100), 30)] = True
    assert np.array_equal(mask, nerve)


def test_keeps_an_adjacent_bifid_branch_and_drops_a_far_blob():
    p = _probability()
    p[disk((100, 100), 25)] = 0.9
    p[disk((100, 150), 18)] = 0.9  # second branch, 7 px away
    p[disk((30, 270), 18)] = 0.9  # far away: another structure
    mask = clean_mask(p, 0.5, min_component_px=50, min_branch_fraction=0.2)
    assert mask[100, 100] and mask[100, 150] and not mask[30, 270]


def test_everything_too_small_means_not_found():
    p = _probability()
    p[disk((100, 100), 3)] = 0.9
    assert not clean_mask(p, 0.5, min_component_px=100, min_branch_fraction=0.2).any()


def test_min_component_pixels_uses_spacing():
    assert min_component_pixels(1.0, (0.062, 0.062), (468, 606)) == round(1 / 0.062 ** 2)
    assert min_component_pixels(1.0, None, (468, 606)) == int(468 * 606 * 1e-3)


def test_clean_mask_on_the_nerve_box_equals_clean_mask_on_the_whole_map():
    from scipy import ndimage

    from MedianNerveSegLib.postprocess import nerve_box

    rng = np.random.default_rng(3)
    for trial in range(40):  # blobs, holes and branches anywhere, at the frame's edges too
        probability = ndimage.gaussian_filter(rng.random((70, 90)), sigma=rng.uniform(1.5, 4))
        probability = (probability - probability.min()) / np.ptp(probability)
        box = nerve_box(probability, 0.25)
        for threshold in (0.25, 0.5, 0.6, 0.75):
            whole = clean_mask(probability, threshold, 5, 0.1)
            on_box = np.zeros_like(whole)
            on_box[box] = clean_mask(probability[box], threshold, 5, 0.1)
            assert np.array_equal(on_box, whole), (trial, threshold)
    assert nerve_box(np.full((4, 4), 0.2), 0.25) is None
