"""Patient-level folds and the nnU-Net v2 export (issue 17): the peer trains and validates on our patients."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from MedianNerveSegLib.cli import main
from MedianNerveSegLib.data import list_samples, patient_folds, split_by_patient
from MedianNerveSegLib.io import read_mask


def test_folds_validate_every_patient_once_and_fold_0_is_the_shipped_split(dataset_dir):
    samples = list_samples(dataset_dir)
    folds = patient_folds(samples, 5, 0)
    validated = [s.stem for _, val in folds for s in val]
    assert sorted(validated) == sorted(s.stem for s in samples)  # each image validated exactly once
    for train, val in folds:
        assert not {s.patient for s in train} & {s.patient for s in val} and len(train) + len(val) == len(samples)
    assert {s.stem for s in folds[0][1]} == {s.stem for s in split_by_patient(samples, 0.2, 0)[1]}
    assert {s.stem for s in patient_folds(samples, 5, 1)[0][1]} != {s.stem for s in folds[0][1]}
    with pytest.raises(ValueError, match=r"5 folds: patient folds need 2 or more folds .* \(2 patients here\)"):
        patient_folds(samples[:3], 5)


def test_export_nnunet_writes_cases_labels_and_our_folds(dataset_dir, tmp_path, capsys):
    assert main(["export-nnunet", "--dataset", str(dataset_dir), "--out", str(tmp_path), "--id", "7"]) == 0
    folder = tmp_path / "Dataset007_MedianNerve"
    dataset = json.loads((folder / "dataset.json").read_text())
    samples = list_samples(dataset_dir)
    assert dataset["numTraining"] == len(samples) == len(list((folder / "imagesTr").glob("*_0000.png")))
    assert dataset["labels"] == {"background": 0, "median_nerve": 1} and dataset["file_ending"] == ".png"
    sample = samples[0]
    label = np.asarray(Image.open(folder / "labelsTr" / f"{sample.stem}.png"))
    assert label.dtype == np.uint8 and set(np.unique(label)) == {0, 1}
    assert np.array_equal(label == 1, read_mask(sample.mask))
    image = Image.open(folder / "imagesTr" / f"{sample.stem}_0000.png")
    luma = np.asarray(Image.open(sample.image).convert("L")).astype(int)  # the RGB export's grey, as PIL rounds it
    assert image.mode == "L" and np.abs(np.asarray(image).astype(int) - luma).max() <= 1
    splits = json.loads((folder / "splits_final.json").read_text())
    assert [sorted(split["val"]) for split in splits] == [sorted(s.stem for s in val)
                                                         for _, val in patient_folds(samples, 5, 0)]
    assert "nnUNetv2_train 7 2d FOLD" in capsys.readouterr().out
    assert main(["export-nnunet", "--dataset", str(dataset_dir), "--out", str(tmp_path), "--id", "7"]) == 2
    assert "exists" in capsys.readouterr().err  # nothing written over


def test_a_mask_of_another_size_is_refused_and_nothing_is_left(dataset_dir, tmp_path, capsys):
    source = tmp_path / "data"
    for kind in ("images", "masks"):
        (source / kind).mkdir(parents=True)
    for sample in list_samples(dataset_dir)[:4]:
        (source / "images" / sample.image.name).write_bytes(sample.image.read_bytes())
        (source / "masks" / sample.mask.name).write_bytes(sample.mask.read_bytes())
    bad = sorted((source / "masks").iterdir())[2]
    Image.open(bad).resize((100, 80)).save(bad)
    out = tmp_path / "out"
    assert main(["export-nnunet", "--dataset", str(source), "--out", str(out), "--folds", "2"]) == 2
    assert bad.name in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_train_validates_on_the_fold_it_is_given(dataset_dir, tmp_path, capsys):
    """`train --folds N --fold K` trains on the other folds' patients and validates on fold K's: one command per
    fold, the same folds as export-nnunet's, so a cross-validation can run every fold in parallel."""
    out = tmp_path / "fold1"
    assert main(["train", "--dataset", str(dataset_dir), "--out", str(out), "--epochs", "1", "--max-images", "24",
                 "--input-size", "64", "64", "--folds", "3", "--fold", "1"]) in (0, 1)
    training = json.loads((out / "model.json").read_text())["training"]
    train, val = patient_folds(list_samples(dataset_dir)[:24], 3, 0)[1]
    assert training["val_patients"] == sorted({s.patient for s in val})
    assert training["train_patients"] == sorted({s.patient for s in train})
    assert main(["train", "--dataset", str(dataset_dir), "--out", str(tmp_path / "x"), "--epochs", "1",
                 "--folds", "3", "--fold", "3"]) == 2
    assert "folds are numbered 0 to 2" in capsys.readouterr().err
    assert main(["train", "--dataset", str(dataset_dir), "--out", str(tmp_path / "x"), "--epochs", "1",
                 "--fold", "1"]) == 2
    assert "--fold 1 needs --folds N" in capsys.readouterr().err


def test_cross_validate_scores_every_image_once_by_the_model_that_did_not_see_its_patient(dataset_dir, tmp_path,
                                                                                           capsys):
    from MedianNerveSegLib.evaluate import evaluate_folders

    models = []
    for fold in (0, 1):
        models.append(tmp_path / f"fold{fold}")
        assert main(["train", "--dataset", str(dataset_dir), "--out", str(models[-1]), "--epochs", "1",
                     "--max-images", "16", "--input-size", "64", "64", "--folds", "2", "--fold", str(fold)]) in (0, 1)
    out = tmp_path / "cv"
    assert main(["cross-validate", "--dataset", str(dataset_dir), "--models", *map(str, models), "--out", str(out),
                 "--spacing", "0.062"]) == 0
    result = json.loads((out / "cross_validation.json").read_text())
    everything = list_samples(dataset_dir)
    validated = [{s.patient for s in val} for _, val in patient_folds(everything[:16], 2, 0)]
    counts = [sum(s.patient in patients for s in everything) for patients in validated]  # all their images
    assert [row["n_images"] for row in result["folds"]] == counts
    assert result["n_images"] == sum(counts) and len(result["not_validated"]) == len(everything) - sum(counts)
    pooled = evaluate_folders(out / "predictions", out / "truth", tmp_path / "again", 0.062)
    assert result["pooled"]["dice_mean"] == pytest.approx(pooled["dice_mean"])  # over all images, not fold means
    assert "all folds, pooled" in (out / "cross_validation.md").read_text()
    found = sum(row["found_rate"] * row["n_images"] for row in result["folds"])
    assert result["review"]["n_images"] == pytest.approx(found)  # the interval and flag, where a nerve was found
    for given, problem in (([models[0], models[0]], "fold 0 is given twice"),
                           (["median_nerve_unet_small", models[1]], "not a fold model")):
        assert main(["cross-validate", "--dataset", str(dataset_dir), "--models", *map(str, given),
                     "--out", str(tmp_path / "cv2")]) == 2
        assert problem in capsys.readouterr().err
    assert main(["cross-validate", "--dataset", str(dataset_dir), "--models", *map(str, models), "--out",
                 str(out)]) == 2  # nothing written over
    reversed_out = tmp_path / "cv3"  # models in any order, each under its own fold; no spacing: no mm figures
    assert main(["cross-validate", "--dataset", str(dataset_dir), "--models", str(models[1]), str(models[0]),
                 "--out", str(reversed_out)]) == 0
    again = json.loads((reversed_out / "cross_validation.json").read_text())
    assert [row["fold"] for row in again["folds"]] == [0, 1] and again["folds"][0]["model"] == "fold0"
    assert again["pooled"]["csa_mae_mm2"] is None and again["pooled"]["dice_mean"] == result["pooled"]["dice_mean"]
    assert again["review"] is None  # no mm^2 without a spacing

    other = tmp_path / "other_fold0"  # a second recipe of fold 0: fold 0 is scored as the two models' ensemble
    assert main(["train", "--dataset", str(dataset_dir), "--out", str(other), "--epochs", "1", "--max-images", "16",
                 "--input-size", "64", "96", "--folds", "2", "--fold", "0", "--seed", "0"]) in (0, 1)
    both = tmp_path / "cv4"
    assert main(["cross-validate", "--dataset", str(dataset_dir), "--models", str(models[0]), str(other),
                 str(models[1]), "--out", str(both), "--spacing", "0.062"]) == 0
    ensemble = json.loads((both / "cross_validation.json").read_text())
    assert ensemble["folds"][0]["model"] == "fold0 + other_fold0" and ensemble["folds"][1]["model"] == "fold1"
    assert [row["n_images"] for row in ensemble["folds"]] == counts
    odd = tmp_path / "odd_fold0"  # said to be fold 0 but validating fold 1's patients: its ensemble is refused
    shutil.copytree(other, odd)
    info = json.loads((odd / "model.json").read_text())
    info["training"]["val_patients"], info["training"]["train_patients"] = (
        json.loads((models[1] / "model.json").read_text())["training"]["val_patients"], [])
    (odd / "model.json").write_text(json.dumps(info))
    assert main(["cross-validate", "--dataset", str(dataset_dir), "--models", str(models[0]), str(odd),
                 str(models[1]), "--out", str(tmp_path / "cv5")]) == 2
    assert "validates other patients than" in capsys.readouterr().err
    assert "no millimetre or CSA figure" in (reversed_out / "cross_validation.md").read_text()
    same_name = tmp_path / "run2" / models[0].name  # two recipes' runs both name their folds fold_<k>
    shutil.copytree(other, same_name)
    assert main(["cross-validate", "--dataset", str(dataset_dir), "--models", str(models[0]), str(same_name),
                 str(models[1]), "--out", str(tmp_path / "cv6")]) == 0
    named = json.loads((tmp_path / "cv6" / "cross_validation.json").read_text())["folds"][0]["model"]
    assert named == f"{tmp_path.name}/{models[0].name} + run2/{models[0].name}"


def test_export_refuses_what_nnunet_would_misread(dataset_dir, tmp_path, capsys):
    """Two images of one name (one mask), a second dataset of the same id; a 0-1 float image keeps its grey levels."""
    source = tmp_path / "data"
    for kind in ("images", "masks"):
        (source / kind).mkdir(parents=True)
    samples = list_samples(dataset_dir)[:3]
    for sample in samples:
        (source / "masks" / sample.mask.name).write_bytes(sample.mask.read_bytes())
    for sample in samples[1:]:
        (source / "images" / sample.image.name).write_bytes(sample.image.read_bytes())
    grey = np.asarray(Image.open(samples[0].image).convert("L"), np.float32) / 255.0
    Image.fromarray(grey, mode="F").save(source / "images" / f"{samples[0].stem}.tif")  # a 0-1 float export
    out = tmp_path / "out"
    assert main(["export-nnunet", "--dataset", str(source), "--out", str(out), "--folds", "2"]) == 0
    exported = np.asarray(Image.open(out / "Dataset501_MedianNerve" / "imagesTr" / f"{samples[0].stem}_0000.png"))
    assert len(np.unique(exported)) > 100  # not rounded to 0 and 1
    assert main(["export-nnunet", "--dataset", str(source), "--out", str(out), "--name", "Other", "--folds", "2"]) == 2
    assert "one dataset per id" in capsys.readouterr().err
    Image.open(samples[1].image).save(source / "images" / f"{samples[1].stem}.bmp")
    assert main(["export-nnunet", "--dataset", str(source), "--out", str(tmp_path / "o2"), "--folds", "2"]) == 2
    assert f"share the name '{samples[1].stem}'" in capsys.readouterr().err


def test_a_dataset_store_exports_and_cross_validates_on_its_training_and_validation_patients(dataset_dir,
                                                                                             tmp_path):
    from MedianNerveSegLib.dataset import LabelledDataset, fold_samples

    source = tmp_path / "source"  # 16 real pairs of 7 patients
    stems = sorted(p.stem for p in (dataset_dir / "images").glob("*.png"))[:16]
    for sub in ("images", "masks"):
        (source / sub).mkdir(parents=True)
        for stem in stems:
            shutil.copy(dataset_dir / sub / f"{stem}.png", source / sub / f"{stem}.png")
    store = LabelledDataset.init(tmp_path / "store", name="corrected")
    assert store.import_folder(source, spacing_mm=0.062)["added"] == 16
    samples = fold_samples(store.folder)
    assert len(samples) == len(store.samples("training")) + len(store.samples("validation")) > 0

    assert main(["export-nnunet", "--dataset", str(store.folder), "--out", str(tmp_path / "raw"), "--folds", "2"]) == 0
    [dataset] = (tmp_path / "raw").iterdir()
    assert len(list((dataset / "labelsTr").glob("*.png"))) == len(samples)
    models = []
    for fold in (0, 1):
        models.append(tmp_path / f"fold{fold}")
        assert main(["train", "--dataset", str(store.folder), "--out", str(models[-1]), "--epochs", "1",
                     "--input-size", "64", "64", "--folds", "2", "--fold", str(fold)]) in (0, 1)
    assert main(["cross-validate", "--dataset", str(store.folder), "--models", *map(str, models), "--out",
                 str(tmp_path / "cv")]) == 0
    result = json.loads((tmp_path / "cv" / "cross_validation.json").read_text())
    assert result["n_images"] == len(samples) and not result["not_validated"]
    assert json.loads((models[1] / "model.json").read_text())["name"].endswith("_fold1")  # told apart

    (store.folder / "datalist.json").unlink()  # lost: rebuilt from the provenance, as every store command does
    assert [s.stem for s in fold_samples(store.folder)] == [s.stem for s in samples]
    empty = LabelledDataset.init(tmp_path / "empty", name="empty")
    assert main(["export-nnunet", "--dataset", str(empty.folder), "--out", str(tmp_path / "raw2")]) == 2


def test_models_of_the_same_folder_name_are_labelled_apart_by_the_folders_above():
    from MedianNerveSegLib.cross_validation import _labels

    runs = [Path("/a/run/fold_0"), Path("/b/run/fold_0"), Path("/a/run/fold_1")]
    assert list(_labels(runs).values()) == ["a/run/fold_0", "b/run/fold_0", "fold_1"]
    bundles = [Path("/p/X/models"), Path("/q/X/models")]  # a bundle's models/ is named by its bundle
    assert list(_labels(bundles).values()) == ["p/X", "q/X"]
