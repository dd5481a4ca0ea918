"""CTS classification without CSA (Shinohara et al. 2022): the 15 mm crop, labels, the classify command,
evaluate-classifiers, explanation maps and classifier training."""

import csv
import json
import shutil

import numpy as np
import pytest

from MedianNerveSegLib.classify import (ClassifierSettings, Classifier, crop_box, crop_pixels, nerve_centre,
                                        read_labels, surrogate_labels)
from MedianNerveSegLib.cli import main
from MedianNerveSegLib.data import list_samples
from MedianNerveSegLib.inference import Segmenter
from MedianNerveSegLib.refine import Refiner
from MedianNerveSegLib.zoo import ModelFolderError, load_info

from conftest import SPACING

IMAGE = "Pz001-001.png"


def test_the_crop_is_15_mm_whatever_the_spacing():
    assert crop_box((100.0, 200.0), (0.062, 0.062), 15.0, (224, 224)).height == round(15 / 0.062)
    box = crop_box((100.0, 200.0), (0.05, 0.1), 15.0, (224, 224))
    assert (box.height, box.width) == (300, 150)  # square in mm on a scanner with anisotropic pixels
    assert abs(box.top + box.height / 2 - 100.5) <= 0.5 and abs(box.left + box.width / 2 - 200.5) <= 0.5
    frame = np.zeros((400, 400), np.float32)
    frame[150:250, 150:250] = 1.0  # a 5 mm square (0.05 mm/pixel) at the centre of a 15 mm crop
    crop = crop_pixels(frame, crop_box((199.5, 199.5), (0.05, 0.05), 15.0, (90, 90)))
    assert crop.shape == (90, 90) and (crop > 0.5).sum() == pytest.approx(30 * 30, rel=0.08)
    assert nerve_centre(frame > 0.5) == (199.5, 199.5)


def test_labels_from_a_csv_of_images_or_patients(dataset_dir, tmp_path):
    samples = list_samples(dataset_dir)
    by_image = tmp_path / "images.csv"
    by_image.write_text("\ufeffimage,label\nPz001-001.png,CTS\nPz002-001,control\nPz004-001.png, 1 \n")
    labels = read_labels(by_image, samples)
    assert labels == {"Pz001-001": True, "Pz002-001": False, "Pz004-001": True}
    by_patient = tmp_path / "patients.csv"
    by_patient.write_text("patient,label\nPz001,cts\n")
    assert {k for k, v in read_labels(by_patient, samples).items() if v} == \
        {s.image.stem for s in samples if s.patient == "Pz001"}
    both = tmp_path / "both.csv"  # a spreadsheet's export: capitals, spaces, a row per patient or per image
    both.write_text("Patient, Image ,Label\nPz001,,CTS\nPz002,Pz002-001.png,control\n,,\n")
    assert read_labels(both, samples) == {"Pz001-001": True, "Pz002-001": False}


@pytest.mark.parametrize("text, message", [
    ("image,label\nPz999-001.png,CTS\n", "line 2: image 'Pz999-001.png' is not in the dataset"),
    ("image,label\nPz001-001.png,maybe\n", "line 2: label 'maybe' is neither CTS"),
    ("image,label\nPz001-001.png,CTS\nPz001-001,control\n", "line 3: Pz001-001.png is labelled both CTS and control"),
    ("patient,label\nPz999,CTS\n", "patient 'Pz999' has no image in the dataset"),
    ("file,diagnosis\nPz001-001.png,CTS\n", "needs one 'label' column and an 'image' and/or 'patient' column"),
    ("image,label,label\nPz001-001.png,CTS,control\n", "needs one 'label' column"),
    ("image,label\n", "no labelled row"),
    ("image,patient,label\nPz001-001.png,Pz002,CTS\n", "belongs to patient Pz001, not 'Pz002'"),
])
def test_bad_labels_are_refused_with_the_line(dataset_dir, tmp_path, text, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("(", "\\(")):
        read_labels(path, list_samples(dataset_dir))


def test_the_surrogate_label_is_the_expert_csa_and_needs_the_spacing(dataset_dir):
    samples = list_samples(dataset_dir)[:6]
    labels = surrogate_labels(samples, (SPACING, SPACING), 10.0)
    from MedianNerveSegLib.io import read_mask

    for sample in samples:
        assert labels[sample.image.stem] == (read_mask(sample.mask).sum() * SPACING ** 2 >= 10.0)
    with pytest.raises(ValueError, match="needs the expert CSA in mm2: give --spacing"):
        surrogate_labels(samples, None)


@pytest.mark.parametrize("settings, problem", [({"classes": ["one"]}, "'classes' must be two names"),
                                               ({"crop_mm": -1}, "'crop_mm' must be a positive number"),
                                               ({"size": 3}, "unknown classifier setting")])
def test_classifier_settings_are_checked(settings, problem):
    with pytest.raises(ValueError, match=problem):
        ClassifierSettings.from_dict(settings)


def test_each_kind_of_model_is_refused_where_it_does_not_belong(tiny_classifier):
    with pytest.raises(ModelFolderError, match="is a classifier model, it does not segment a frame: use it with "
                                               "median-nerve-seg classify"):
        Segmenter(tiny_classifier)
    with pytest.raises(ModelFolderError, match="refine needs a click model"):
        Refiner(tiny_classifier)
    with pytest.raises(ModelFolderError, match="is not a classifier"):
        Classifier("median_nerve_unet_small")
    info = load_info(tiny_classifier)
    assert info.classification["classes"] == ["nerve not enlarged", "enlarged nerve (expert CSA >= 10 mm2)"]
    assert "surrogate, not a diagnosis" in info.classification["label_source"]


def test_classify_writes_a_row_per_image_and_refuses_what_it_cannot_crop(tiny_classifier, dataset_dir, tmp_path,
                                                                        capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in (IMAGE, "Pz002-001.png"):
        shutil.copy(dataset_dir / "images" / name, inputs / name)
    (inputs / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    assert main(["classify", str(inputs), "--out", str(out), "--model", str(tiny_classifier), "--spacing",
                 str(SPACING), "--explain", "occlusion,gradcam"]) == 1
    with open(out / "classification.csv", newline="") as handle:
        rows = {row["image"].split("/")[-1]: row for row in csv.DictReader(handle)}
    assert set(rows) == {IMAGE, "Pz002-001.png", "broken.png"}
    good = rows[IMAGE]
    assert 0 <= float(good["probability"]) <= 1 and good["label"] in load_info(tiny_classifier).classification["classes"]
    assert good["model"] == "tiny_classifier@1.0.0" and good["spacing_mm"] == "0.062x0.062" and not good["error"]
    assert good["maps"] == "Pz001-001_occlusion.png;Pz001-001_gradcam.png"
    assert np.load(out / "Pz001-001_gradcam.npy").shape == (64, 64)
    assert "not a valid or complete PNG" in rows["broken.png"]["error"]
    # run again: the images done are skipped; the broken one is tried again
    assert main(["classify", str(inputs), "--out", str(out), "--model", str(tiny_classifier), "--spacing",
                 str(SPACING)]) == 1
    assert "2 already done" in capsys.readouterr().out
    no_spacing = tmp_path / "no_spacing"
    assert main(["classify", str(inputs / IMAGE), "--out", str(no_spacing), "--model", str(tiny_classifier)]) == 1
    assert "the 15 mm crop needs the pixel spacing" in capsys.readouterr().err
    assert main(["classify", str(inputs / IMAGE), "--out", str(out), "--model", "median_nerve_unet_small"]) == 2


def test_evaluate_classifiers_sets_the_classifier_next_to_the_csa_rule(tiny_classifier, dataset_dir, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate-classifiers", "--dataset", str(dataset_dir), "--models", str(tiny_classifier), "--out",
                 str(out), "--surrogate-csa", "10", "--spacing", str(SPACING), "--segmenter",
                 "median_nerve_unet_small", "--resamples", "50"]) == 0
    summary = json.loads((out / "classifiers.json").read_text())
    trained_on = set(load_info(tiny_classifier).training["train_patients"])
    assert summary["n_images"] > 0 and "surrogate, not a diagnosis" in summary["labels"]
    model, rule = summary["results"]["model"], summary["results"]["CSA rule"]
    assert rule["tp"] + rule["fp"] + rule["fn"] + rule["tn"] == summary["n_images"] == model["n"]
    assert rule["auc"] > 0.8  # the segmenter's CSA tracks the expert's, which defines this label
    assert 0 <= model["delong_vs_csa_rule"]["p_value"] <= 1
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert not {r["patient"] for r in rows} & trained_on
    assert sum(int(r["positive"]) for r in rows) == summary["n_positive"] == rule["tp"] + rule["fn"]
    table = (out / "classifiers.md").read_text()
    assert "CSA rule" in table and "Shinohara et al. 2022: EfficientNet" in table and "bootstrap over patients" in table
    assert (out / "roc.png").is_file()


def test_a_segmenters_occlusion_map_lies_on_the_nerve(dataset_dir, tmp_path, capsys):
    """Maps respond to the evidence: hiding the nerve lowers the shipped segmenter's nerve score far more than
    hiding the rest of the image. An image named twice is explained once."""
    out = tmp_path / "explain"
    image = dataset_dir / "images" / IMAGE
    assert main(["explain", str(image), str(image.parent / ".." / "images" / IMAGE), "--out", str(out), "--model",
                 "median_nerve_unet", "--explain", "occlusion,gradcam"]) == 0
    assert capsys.readouterr().out.count("frame 0:") == 1 and len(list(out.iterdir())) == 4
    from MedianNerveSegLib.io import read_mask
    from MedianNerveSegLib.preprocess import resize_array

    truth = resize_array(read_mask(dataset_dir / "masks" / IMAGE).astype(np.float32), (288, 384)) > 0.5
    from scipy import ndimage

    near = ndimage.binary_dilation(truth, iterations=15)
    for method in ("occlusion", "gradcam"):
        heat = np.clip(np.load(out / f"Pz001-001_{method}.npy"), 0, None)
        assert heat.shape == (288, 384)
        assert heat[near].mean() > 5 * heat[~near].mean(), method


def test_a_new_efficientnet_starts_undecided_and_learns_what_eval_mode_then_shows():
    """From random init a two-class EfficientNet must start near 50/50 (MONAI's head init, +-0.71 for two classes,
    gave logits of tens and a loss that never settled), and what it learns in a few dozen steps must show in eval
    mode (MONAI's batch-norm momentum, 0.01, left the running statistics at their start: one class for all)."""
    import torch
    import torch.nn.functional as F

    from MedianNerveSegLib.diagnostic import roc_auc
    from MedianNerveSegLib.models import efficientnet_b0

    torch.manual_seed(0)
    rows, columns = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    labels = torch.tensor([0, 1] * 8)

    def discs():  # small (label 0) or large (label 1) discs in noise, slightly off centre
        centres = 32 + 6 * (torch.rand(len(labels), 2) - 0.5)
        distance = ((rows - centres[:, :1, None]) ** 2 + (columns - centres[:, 1:, None]) ** 2).sqrt()
        images = (distance < 8.0 + 6.0 * labels[:, None, None]).float() + 0.3 * torch.randn(len(labels), 64, 64)
        return ((images - images.mean()) / images.std())[:, None]

    network = efficientnet_b0()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    for step in range(40):
        logits = network.train()(discs())
        if step == 0:
            assert logits.abs().max() < 1.0
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        probability = torch.softmax(network.eval()(discs()), dim=1)[:, 1].numpy()
    assert roc_auc(labels.numpy().astype(bool), probability) >= 0.9


def test_lime_finds_the_region_the_score_reads_and_keeps_its_top_superpixels():
    """LIME (captum, SLIC superpixels) on a score that reads one square of the image: the superpixels it keeps lie
    in that square, at most five of them."""
    pytest.importorskip("captum")
    import torch
    from torch import nn

    from MedianNerveSegLib.explain import lime_map

    class SquareScore(nn.Module):
        def forward(self, x):
            return x[:, :, 16:40, 16:40].mean(dim=(1, 2, 3))[:, None]

    rng = np.random.default_rng(0)
    image = np.kron(rng.random((8, 8)), np.ones((8, 8))).astype(np.float32) + 1.0  # 64 x 64 blocks, all positive
    heat = lime_map(SquareScore(), torch.from_numpy(image)[None, None], image)
    assert heat.shape == (64, 64) and heat.max() > 0
    inside = np.zeros((64, 64), bool)
    inside[16:40, 16:40] = True  # whole blocks, which the superpixels follow
    assert heat[~inside].clip(0).sum() < 0.1 * heat.clip(0).sum()
    assert len(np.unique(heat[heat > 0])) <= 5 * 64  # five superpixels at most (a weight per superpixel)


def test_a_user_trains_the_bundle_on_diagnoses_and_classifies_with_it(dataset_dir, tmp_path, capsys):
    """The issue's route: a CSV of diagnosed patients, one train command with the EfficientNet bundle (a 1-epoch
    smoke run), then classify with the model: its classes and label source are the diagnoses', not the surrogate."""
    from pathlib import Path

    bundle = Path(__file__).resolve().parents[2] / "training" / "efficientnet_b0"
    labels = tmp_path / "diagnoses.csv"
    patients = sorted({sample.patient for sample in list_samples(dataset_dir)[:24]})  # the --max-images 24
    labels.write_text("patient,label\n" + "".join(f"{p},{'CTS' if i % 2 else 'control'}\n"
                                                  for i, p in enumerate(patients)))
    model = tmp_path / "model"
    assert main(["train", "--bundle", str(bundle), "--dataset", str(dataset_dir), "--out", str(model), "--labels",
                 str(labels), "--surrogate-csa", "10"]) == 2 and not model.exists()
    assert "not both" in capsys.readouterr().err
    assert main(["train", "--bundle", str(bundle), "--dataset", str(dataset_dir), "--out", str(model), "--labels",
                 str(labels), "--epochs", "1", "--max-images", "24", "--input-size", "64", "64"]) in (0, 1)
    info = load_info(model)
    assert info.classification["classes"] == ["control", "CTS"] and str(labels) in info.classification["label_source"]
    assert "surrogate" not in info.classification["label_source"]
    out = tmp_path / "out"
    assert main(["classify", str(dataset_dir / "images" / IMAGE), "--out", str(out), "--model", str(model),
                 "--spacing", str(SPACING)]) == 0
    row = next(csv.DictReader(open(out / "classification.csv", newline="")))
    assert row["label"] in ("control", "CTS") and 0 <= float(row["probability"]) <= 1


def test_a_map_leaves_the_classifier_predicting_as_before(tiny_classifier, dataset_dir):
    """Explaining must not switch the network to training mode (dropout on): the same crop, the same probability,
    before and after every kind of map."""
    from MedianNerveSegLib.classify import explanation_map
    from MedianNerveSegLib.io import read_image

    classifier = Classifier(tiny_classifier, segmenter="median_nerve_unet_small")
    prediction = classifier.classify(read_image(dataset_dir / "images" / IMAGE, spacing_mm=SPACING))
    for method in ("gradcam", "occlusion"):
        explanation_map(classifier, prediction, method)
        assert not classifier.network.training, method
        assert classifier.probabilities([prediction.crop])[0] == pytest.approx(prediction.probability, abs=1e-6)


def test_classify_keeps_every_map_and_row_it_made(tiny_classifier, dataset_dir, tmp_path):
    """Nothing overwrites anything: a second clip of the same name gets maps of its own name, a file named twice is
    classified once, an interrupted run's cut-off row is dropped and its image redone, and the share of a crop
    past the image's edge is in the row."""
    from PIL import Image

    frames = [Image.open(dataset_dir / "images" / f"Pz002-00{k}.png").convert("L") for k in (1, 2)]
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        frames[0].save(tmp_path / folder / "clip.tif", save_all=True, append_images=frames[1:])
    out = tmp_path / "out"
    command = ["--out", str(out), "--model", str(tiny_classifier), "--spacing", str(SPACING), "--explain", "gradcam"]
    assert main(["classify", str(tmp_path / "a" / "clip.tif"), *command]) == 0
    first = (out / "clip_f0001_gradcam.npy").read_bytes()
    single = dataset_dir / "images" / IMAGE
    assert main(["classify", str(tmp_path / "b" / "clip.tif"), str(single), str(single), *command]) == 0
    assert (out / "clip_f0001_gradcam.npy").read_bytes() == first
    rows = list(csv.DictReader(open(out / "classification.csv", newline="")))
    assert len(rows) == 5 and len({row["maps"] for row in rows}) == 5  # 2 + 2 clip frames, the image once
    assert all(0 <= float(row["crop_outside"]) < 0.4 for row in rows)
    whole = float(rows[-1]["crop_outside"])
    table = out / "classification.csv"
    table.write_text(table.read_text()[:-20])  # the last row cut off by an interrupted run
    assert main(["classify", str(single), *command[:-2]]) == 0
    rows = list(csv.DictReader(open(table, newline="")))
    assert len(rows) == 5 and rows[-1]["image"].endswith(IMAGE) and rows[-1]["probability"]
    from MedianNerveSegLib.io import read_mask

    nerve_x = int(np.nonzero(read_mask(dataset_dir / "masks" / IMAGE))[1].mean())
    edge = tmp_path / "edge.png"
    Image.open(single).crop((nerve_x - 30, 0, 606, 468)).save(edge)  # the nerve 30 pixels from the left edge
    assert main(["classify", str(edge), *command[:-2]]) == 0
    assert float(list(csv.DictReader(open(table, newline="")))[-1]["crop_outside"]) > whole + 0.15


def test_a_classifier_without_its_classification_settings_is_refused(tiny_classifier, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_classifier, broken)
    info = json.loads((broken / "model.json").read_text())
    del info["classification"]
    (broken / "model.json").write_text(json.dumps(info))
    with pytest.raises(ModelFolderError, match="no 'classification' settings"):
        Classifier(broken)


def test_evaluate_classifiers_refuses_to_write_over_or_to_mix_two_models_of_one_name(tiny_classifier, dataset_dir,
                                                                                     tmp_path, capsys):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "classifiers.json").write_text("{}")
    command = ["evaluate-classifiers", "--dataset", str(dataset_dir), "--surrogate-csa", "10", "--spacing",
               str(SPACING), "--segmenter", "median_nerve_unet_small", "--resamples", "10"]
    assert main([*command, "--models", str(tiny_classifier), "--out", str(out)]) == 2
    assert "nothing is written over" in capsys.readouterr().err and (out / "classifiers.json").read_text() == "{}"
    twin = tmp_path / "twin" / tiny_classifier.name
    shutil.copytree(tiny_classifier, twin)
    assert main([*command, "--models", str(tiny_classifier), str(twin), "--out", str(tmp_path / "e2")]) == 2
    assert "two models are named" in capsys.readouterr().err


def test_training_names_a_mask_without_a_nerve(dataset_dir, tmp_path):
    from PIL import Image

    from MedianNerveSegLib.classifier_training import expert_crops

    empty = tmp_path / "empty.png"
    Image.new("L", (606, 468)).save(empty)
    sample = list_samples(dataset_dir)[0]
    with pytest.raises(ValueError, match="empty.png: no nerve in this mask"):
        expert_crops([type(sample)(sample.image, empty, sample.patient)], (32, 32), 15.0, SPACING)
