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


def test_single_patient_goes_to_training():
    samples = [Sample(Path(f"Pz001-00{i}.png"), Path("m.png"), "Pz001") for i in range(3)]
    train, val = split_by_patient(samples, 0.2)
    assert len(train) == 3 and not val
