from pathlib import Path

import pytest

from MedianNerveSegLib.data import Sample, list_samples, patient_id, split_by_patient


def test_patient_id_from_stem():
    assert patient_id("Pz012-003") == "Pz012"
    assert patient_id("scan_7", r"scan_(\d+)") == "7"
    assert patient_id("other") == "other"


def test_real_dataset_pairs_and_patients(dataset_dir):
    samples = list_samples(dataset_dir)
    assert len(samples) == 195
    assert len({s.patient for s in samples}) == 89
    assert all(s.mask.is_file() for s in samples)


def test_split_keeps_patients_on_one_side_and_is_stable(dataset_dir):
    samples = list_samples(dataset_dir)
    train, val = split_by_patient(samples, 0.2, seed=0)
    assert not {s.patient for s in train} & {s.patient for s in val}
    assert len(train) + len(val) == len(samples)
    assert len({s.patient for s in val}) == round(89 * 0.2)
    assert split_by_patient(samples, 0.2, seed=0) == (train, val)
    assert split_by_patient(samples, 0.2, seed=1)[1] != val


def test_missing_folders_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="images/ and masks/"):
        list_samples(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no image with a mask"):
        list_samples(tmp_path)


def test_a_folder_and_the_store_imported_from_it_split_the_same_patients(tmp_path):
    import numpy as np
    from PIL import Image

    from MedianNerveSegLib.dataset import LabelledDataset

    for p in range(15):
        for sub in ("images", "masks"):
            (tmp_path / "src" / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), p * 10, np.uint8)).save(tmp_path / "src" / "images" / f"Pz{p:03d}-001.png")
        Image.fromarray(np.eye(8, dtype=np.uint8) * 255).save(tmp_path / "src" / "masks" / f"Pz{p:03d}-001.png")
    store = LabelledDataset.init(tmp_path / "store")
    store.import_folder(tmp_path / "src")
    for seed in (0, 1, 2):
        store.split(0.2, 0.0, seed)
        _, val = split_by_patient(list_samples(tmp_path / "src"), 0.2, seed)
        assert {s.patient for s in val} == {s.patient for s in store.samples("validation")}
        assert len(val) == 3


def test_single_patient_goes_to_training():
    samples = [Sample(Path(f"Pz001-00{i}.png"), Path("m.png"), "Pz001") for i in range(3)]
    train, val = split_by_patient(samples, 0.2)
    assert len(train) == 3 and not val


def test_sample_spacing_defaults_to_unknown():
    assert Sample(Path("a.png"), Path("m.png"), "P1").spacing_mm is None
    assert Sample(Path("a.png"), Path("m.png"), "P1", (0.05, 0.06)).spacing_mm == (0.05, 0.06)


def test_the_splitter_gives_the_shipped_models_validation_patients(dataset_dir):
    """"seed 0, 20%" means the patients the shipped models were validated on, for folders and stores alike."""
    import json

    from conftest import REPO
    from MedianNerveSegLib.data import list_samples, split_by_patient

    model_json = REPO / "MedianNerveSeg" / "MedianNerveSegLib" / "pretrained" / "median_nerve_unet" / "model.json"
    _, val = split_by_patient(list_samples(dataset_dir), 0.2, 0)
    assert sorted({s.patient for s in val}) == json.loads(model_json.read_text())["training"]["val_patients"]
