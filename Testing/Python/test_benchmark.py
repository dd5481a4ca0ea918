"""compare and the benchmark: each sample at its own spacing, only patients no model was trained on."""

import json
from pathlib import Path

import pytest

from MedianNerveSegLib.benchmark import compare_models, evaluate_model, training_patients
from MedianNerveSegLib.data import list_samples, split_by_patient
from MedianNerveSegLib.train import TrainConfig, train
from MedianNerveSegLib.zoo import load_info

from conftest import REPO
from test_train import SMOKE, SpacedSample, synthetic_dataset

SHIPPED = REPO / "MedianNerveSeg" / "MedianNerveSegLib" / "pretrained" / "median_nerve_unet"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A synthetic dataset and a smoke model trained on its seed-0 split."""
    root = tmp_path_factory.mktemp("trained")
    data = synthetic_dataset(root / "data", patients=10)
    train(data, root / "model", TrainConfig(epochs=1, **SMOKE), log=lambda _: None)
    return data, root / "model"


def _edit_training(model: Path, copy_to: Path, **changes) -> Path:
    """A copy of a model folder whose model.json "training" has ``changes`` (None: the key removed)."""
    import shutil

    shutil.copytree(model, copy_to)
    info = json.loads((copy_to / "model.json").read_text())
    for key, value in changes.items():
        info["training"].pop(key, None) if value is None else info["training"].update({key: value})
    (copy_to / "model.json").write_text(json.dumps(info))
    return copy_to


def _val_patients(data: Path):
    return sorted({s.patient for s in split_by_patient(list_samples(data))[1]})


def test_compare_leaves_out_patients_either_model_was_trained_on(trained, tmp_path):
    data, model = trained
    val = _val_patients(data)
    other = _edit_training(model, tmp_path / "other", train_patients=val[:1])  # trained on one of them
    rows = compare_models(data, [str(model), str(other)], tmp_path / "out")
    n_val = len([s for s in list_samples(data) if s.patient in val])
    n_dropped = len([s for s in list_samples(data) if s.patient == val[0]])
    assert [r["n_images"] for r in rows] == [n_val - n_dropped] * 2
    assert rows[0]["n_images_dropped"] == n_dropped and rows[0]["dropped_patients"] == val[:1]
    assert f"{n_dropped} more were left out" in (tmp_path / "out" / "comparison.md").read_text()
    assert json.loads((tmp_path / "out" / "comparison.json").read_text())[1]["n_images_dropped"] == n_dropped


def test_compare_refuses_when_no_patient_is_left(trained, tmp_path):
    data, model = trained
    everyone = _edit_training(model, tmp_path / "everyone", train_patients=_val_patients(data))
    with pytest.raises(ValueError, match="nothing left to compare on") as error:
        compare_models(data, [str(model), str(everyone)], tmp_path / "out")
    assert "\n" not in str(error.value) and str(data) in str(error.value)


def test_compare_reads_older_model_json_without_train_patients(trained, tmp_path):
    data, model = trained
    val = _val_patients(data)
    # older models record only val_patients: the rest of the same dataset is what they were trained on
    older = _edit_training(model, tmp_path / "older", train_patients=None, val_patients=val[:2])
    rows = compare_models(data, [str(older)], tmp_path / "out")
    assert rows[0]["dropped_patients"] == val[2:] and rows[0]["training_patients_known"]
    # nothing recorded at all: compared on every validation patient, with a warning
    unknown = _edit_training(model, tmp_path / "unknown", train_patients=None, val_patients=None)
    rows = compare_models(data, [str(unknown)], tmp_path / "out2")
    assert rows[0]["n_images_dropped"] == 0 and not rows[0]["training_patients_known"]
    assert "Warning: unknown's model.json does not tell" in (tmp_path / "out2" / "comparison.md").read_text()


def test_the_shipped_models_training_patients_follow_from_its_validation_patients():
    info = load_info(SHIPPED)
    patients = {"Pz001", "Pz002", "Pz006", "Pz008"}  # Pz002 and Pz008 are its validation patients
    assert training_patients(info, Path("median-nerve-us"), patients) == ({"Pz001", "Pz006"}, True)
    assert training_patients(info, Path("elsewhere"), {"A1", "B2"}) == (set(), False)


def test_a_fine_tuned_model_inherits_its_starting_models_patients(trained, tmp_path):
    data, model = trained
    parent = _edit_training(model, tmp_path / "parent", train_patients=["Pz001"])
    child = _edit_training(model, tmp_path / "child", train_patients=["Pz002"],
                           config={"init_weights": str(parent)})
    patients = {f"Pz{i:03d}" for i in range(1, 11)}
    assert training_patients(load_info(child), data, patients) == ({"Pz001", "Pz002"}, True)
    (parent / "model.json").unlink()  # the starting model is gone: cannot be checked
    assert training_patients(load_info(child), data, patients) == ({"Pz002"}, False)


def test_evaluate_model_measures_each_sample_at_its_own_spacing(trained, tmp_path):
    data, model = trained
    samples = list_samples(data)[:3]
    unknown = evaluate_model(model, samples, out_dir=tmp_path / "unknown")  # PNGs: no spacing
    assert unknown["csa_mae_mm2"] is None and unknown["hd95_mean_mm"] is None and unknown["dice_mean"] is not None
    spaced = [SpacedSample(s.image, s.mask, s.patient, (0.1, 0.1)) for s in samples]
    own = evaluate_model(model, spaced, out_dir=tmp_path / "own")
    assert own["csa_mae_mm2"] is not None and own["spacing_mm"] == [0.1, 0.1]
    given = evaluate_model(model, samples, spacing_mm=0.1, out_dir=tmp_path / "given")
    assert given["csa_mae_mm2"] == pytest.approx(own["csa_mae_mm2"])
    mixed = [SpacedSample(s.image, s.mask, s.patient, (0.1 * (i + 1),) * 2) for i, s in enumerate(samples)]
    assert evaluate_model(model, mixed, out_dir=tmp_path / "mixed")["csa_mae_mm2"] is None  # no one mm figure
    assert evaluate_model(model, mixed, out_dir=tmp_path / "m2")["dice_mean"] == pytest.approx(unknown["dice_mean"])


def test_the_network_alone_is_timed_on_the_frames_that_can_be_read(tmp_path):
    import numpy as np
    from PIL import Image

    from MedianNerveSegLib.speed import network_alone_ms
    from test_pipeline import ThresholdSegmenter

    pages = [np.full((60, 80), 10.0 * i, np.float32) for i in range(4)]
    pages[2][5, 5] = np.nan  # frame 2 cannot be segmented: the clip is left out, not the benchmark stopped
    clip = tmp_path / "clip.tif"
    Image.fromarray(pages[0]).save(clip, save_all=True, append_images=[Image.fromarray(p) for p in pages[1:]])
    picture = tmp_path / "one.png"
    Image.fromarray(np.full((60, 80), 200, np.uint8)).save(picture)
    timed = []

    class Timed(ThresholdSegmenter):
        def predict(self, image, index=0):
            timed.append((Path(image.source).name, index))
            return super().predict(image, index)

    assert network_alone_ms(Timed(), [clip, picture], 0.1, repeats=2) > 0
    assert timed == [("one.png", 0)] * 2
