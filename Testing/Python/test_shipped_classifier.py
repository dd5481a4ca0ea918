"""The shipped CTS classifier (median_nerve_classifier, SqueezeNet 1.1: needs torchvision, the maskrcnn extra) on
the held-out patients: it separates the surrogate classes, `classify` uses it by default, and its occlusion map
lies on the nerve."""

import csv

import numpy as np
import pytest

from MedianNerveSegLib.classify import Classifier
from MedianNerveSegLib.cli import main
from MedianNerveSegLib.data import list_samples, split_by_patient
from MedianNerveSegLib.diagnostic import roc_auc
from MedianNerveSegLib.io import read_mask
from MedianNerveSegLib.models import package_works
from MedianNerveSegLib.zoo import DEFAULT_CLASSIFIER, PRETRAINED_DIR

from conftest import SPACING

pytestmark = [pytest.mark.maskrcnn, pytest.mark.skipif(not package_works("torchvision"),
                                                        reason="torchvision (the maskrcnn extra) not installed")]


@pytest.fixture(scope="module")
def held_out(dataset_dir):
    return split_by_patient(list_samples(dataset_dir), 0.2, 0)[1]


def test_the_shipped_classifier_is_small_and_says_its_label_is_a_surrogate():
    folder = PRETRAINED_DIR / DEFAULT_CLASSIFIER
    assert (folder / "model.pt").stat().st_size <= 10 * 2 ** 20 and (folder / "MODEL_CARD.md").is_file()
    settings = Classifier(None).settings
    assert "surrogate, not a diagnosis" in settings.label_source and settings.crop_mm == 15.0


def test_classify_by_default_separates_enlarged_nerves_on_held_out_patients(held_out, tmp_path):
    out = tmp_path / "out"
    assert main(["classify", *[str(s.image) for s in held_out], "--out", str(out), "--spacing", str(SPACING)]) == 0
    with open(out / "classification.csv", newline="") as handle:
        probability = {row["image"].split("/")[-1]: float(row["probability"]) for row in csv.DictReader(handle)}
    assert len(probability) == len(held_out)
    truth = np.array([read_mask(s.mask).sum() * SPACING ** 2 >= 10.0 for s in held_out])
    assert roc_auc(truth, np.array([probability[s.image.name] for s in held_out])) >= 0.75  # chance: 0.5


def test_its_occlusion_map_lies_on_the_nerve(held_out):
    """Maps respond to the evidence: hiding the nerve and its rim moves the call more than hiding the rest."""
    from scipy import ndimage

    from MedianNerveSegLib.classify import crop_pixels, explanation_map
    from MedianNerveSegLib.io import read_image

    classifier = Classifier(None)
    near, far = [], []
    for sample in held_out[:6]:
        prediction = classifier.classify(read_image(sample.image, spacing_mm=(SPACING, SPACING)))
        heat = np.abs(explanation_map(classifier, prediction, "occlusion"))
        nerve = crop_pixels(read_mask(sample.mask).astype(np.float32), prediction.crop_box) > 0.5  # at the map's size
        rim = ndimage.binary_dilation(nerve, iterations=max(1, heat.shape[0] // 20))
        near.append(heat[rim].mean())
        far.append(heat[~rim].mean())
    assert np.mean(near) > 1.5 * np.mean(far)
