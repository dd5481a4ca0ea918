"""Two-stage models (issue 17): the second network re-segments a window around the first stage's nerve."""

import json
import re
from dataclasses import replace
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SPACING, needs_data

from MedianNerveSegLib.classify import nerve_centre
from MedianNerveSegLib.inference import Segmenter
from MedianNerveSegLib.io import read_image
from MedianNerveSegLib.models import build_model
from MedianNerveSegLib.second_stage import FIRST_STAGE, SecondStageSettings, TwoStageSegmenter, window_box
from MedianNerveSegLib.zoo import ModelFolderError, ModelInfo, resolve_model, save_model

ARCH = {"channels": [8, 16, 32], "num_res_units": 1}


def constant_two_stage(folder, logit, first="median_nerve_unet_small", window=(8.0, 16.0)):
    """A two-stage model whose second network says ``logit`` everywhere: nerve in the whole window (> 0) or none."""
    network = build_model("monai_unet", **ARCH)
    state = network.state_dict()
    for key, tensor in state.items():
        if tensor.is_floating_point():
            tensor.fill_(1.0 if key.endswith("running_var") else 0.0)
    state[[k for k in state if k.endswith("bias")][-1]].fill_(logit)
    network.load_state_dict(state)
    save_model(folder, network, ModelInfo(name="two_stage_test", architecture="monai_unet", arch_kwargs=ARCH,
                                          input_size=(128, 256), second_stage={"window_mm": list(window)}))
    shutil.copytree(resolve_model(first), folder / FIRST_STAGE)
    return folder


@pytest.fixture(scope="module")
def image(dataset_dir):
    return read_image(sorted((dataset_dir / "images").iterdir())[0], spacing_mm=SPACING)


@needs_data
@pytest.mark.parametrize("spacing, window_px", [(SPACING, (129, 258)), (None, (128, 256))])
def test_the_second_network_resegments_the_window_around_the_first_stages_nerve(tmp_path, dataset_dir, image,
                                                                                  spacing, window_px):
    image = read_image(image.source, spacing_mm=spacing)
    two_stage = Segmenter(constant_two_stage(tmp_path / "model", 10.0), runtime="torch")
    assert isinstance(two_stage, TwoStageSegmenter)
    first = Segmenter("median_nerve_unet_small", runtime="torch").predict(image).mask
    box = window_box(nerve_centre(first), image.spacing_mm, two_stage.settings, (128, 256))
    assert (box.height, box.width) == window_px  # 8 x 16 mm at 0.062 mm; without a spacing the network's pixels
    mask = two_stage.predict(image).mask
    window = box.region(mask.shape)
    assert window.sum() == window_px[0] * window_px[1]  # this nerve's window lies inside the frame
    assert np.array_equal(mask, window)


@needs_data
def test_where_the_second_network_sees_no_nerve_the_window_is_emptied(tmp_path, image):
    mask = Segmenter(constant_two_stage(tmp_path / "model", -10.0), runtime="torch").predict(image).mask
    first = Segmenter("median_nerve_unet_small", runtime="torch").predict(image).mask
    assert first.any() and not (mask & first).any()


@needs_data
def test_segment_names_the_model_and_checks_both_stages_weights_on_a_rerun(tmp_path, image):
    model = constant_two_stage(tmp_path / "model", 10.0)
    command = [sys.executable, "-m", "MedianNerveSegLib", "segment", str(image.source), "--model", str(model),
               "--spacing", str(SPACING), "--out", str(tmp_path / "out"), "--no-overlay"]
    subprocess.run(command, check=True, capture_output=True, text=True)
    row = (tmp_path / "out" / "measurements.csv").read_text().splitlines()
    header, values = row[0].split(","), row[1].split(",")
    assert values[header.index("model")] == "two_stage_test@0.0.0"
    assert float(values[header.index("area_mm2")]) == pytest.approx(129 * 258 * SPACING ** 2, rel=1e-4)
    assert len(json.loads((tmp_path / "out" / "segment_run.json").read_text())["weights"]) == 2
    first_weights = model / FIRST_STAGE / "model.pt"
    first_weights.write_bytes(first_weights.read_bytes() + b"\0")  # another first stage under the same name
    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode != 0 and "weights" in rerun.stderr


def test_a_two_stage_folder_without_its_first_stage_is_refused_naming_it(tmp_path):
    model = constant_two_stage(tmp_path / "model", 10.0)
    shutil.rmtree(model / FIRST_STAGE)
    with pytest.raises(ModelFolderError, match=f"{model}: a two-stage model .* without .*first_stage/"):
        Segmenter(model)


@pytest.mark.parametrize("window", [[8.0], [0.0, 16.0], "8x16", [8.0, float("inf")]])
def test_a_bad_window_in_model_json_is_refused_naming_the_file(tmp_path, window):
    model = constant_two_stage(tmp_path / "model", 10.0)
    info = json.loads((model / "model.json").read_text())
    info["second_stage"] = {"window_mm": window}
    (model / "model.json").write_text(json.dumps(info))
    with pytest.raises(ModelFolderError, match=r"model\.json: 'second_stage': 'window_mm' must be two positive"):
        Segmenter(model)


def test_window_settings_round_trip():
    settings = SecondStageSettings.from_dict({"window_mm": [6, 12]})
    assert settings.window_mm == (6.0, 12.0) and SecondStageSettings.from_dict(settings.as_dict()) == settings


@needs_data
def test_train_first_stage_writes_a_two_stage_model_folder_and_refuses_a_first_stage_of_other_patients(
        tmp_path, dataset_dir):
    from MedianNerveSegLib.train import SecondStageTrainConfig, TrainConfig, train

    common = dict(architecture="monai_unet", arch_kwargs=ARCH, epochs=1, batch_size=4, max_images=10,
                  spacing_mm=SPACING)
    first = tmp_path / "first"
    train(dataset_dir, first, TrainConfig(name="first", input_size=(64, 64), **common), log=lambda _: None)
    second = TrainConfig(name="second", input_size=(32, 64), **common,
                         second_stage=SecondStageTrainConfig(str(first), (8.0, 16.0)))
    info = train(dataset_dir, tmp_path / "two_stage", second, log=lambda _: None)
    assert info.second_stage == {"window_mm": [8.0, 16.0]} and info.metrics["n_images"] > 0
    assert info.review_width_mm2 == 1.4
    out = tmp_path / "two_stage"
    assert (out / FIRST_STAGE / "model.json").read_bytes() == (first / "model.json").read_bytes()
    segmenter = Segmenter(out, runtime="torch")
    assert isinstance(segmenter, TwoStageSegmenter) and segmenter.first.info.name == "first"

    other_split = replace(second, folds=2, fold=1)  # validates on patients the first stage trained on
    with pytest.raises(ValueError, match=f"{first}: it trained on .* of the validation patients"):
        train(dataset_dir, tmp_path / "refused", other_split, log=lambda _: None)
    assert not (tmp_path / "refused").exists()


@needs_data
def test_quantize_and_explain_refuse_a_two_stage_model_in_one_line(tmp_path, image):
    model = constant_two_stage(tmp_path / "model", 10.0)
    dataset = str(Path(image.source).parent.parent)
    for command, match in ((["quantize", "--model", str(model), "--dataset", dataset], "two-stage"),
                           (["explain", str(image.source), "--model", str(model), "--out", str(tmp_path / "maps")],
                            "two-stage model; explain .* first stage")):
        done = subprocess.run([sys.executable, "-m", "MedianNerveSegLib", *command], capture_output=True, text=True)
        assert done.returncode != 0
        assert re.search(match, done.stderr.strip().splitlines()[-1]), done.stderr


@needs_data
def test_a_frame_without_spacing_is_flagged_and_training_without_spacing_is_refused(tmp_path, dataset_dir, image):
    from MedianNerveSegLib.second_stage import WINDOW_WITHOUT_SPACING
    from MedianNerveSegLib.train import SecondStageTrainConfig, TrainConfig, train

    two_stage = Segmenter(constant_two_stage(tmp_path / "model", 10.0), runtime="torch")
    assert WINDOW_WITHOUT_SPACING in two_stage.predict(read_image(image.source)).flags
    assert WINDOW_WITHOUT_SPACING not in two_stage.predict(image).flags
    config = TrainConfig(name="second", input_size=(32, 64), epochs=1, max_images=6,
                         second_stage=SecondStageTrainConfig("median_nerve_unet_small"))
    with pytest.raises(ValueError, match=r"Pz\d+-\d+\.png: gives no pixel spacing.*give --spacing"):
        train(dataset_dir, tmp_path / "out", config, log=lambda _: None)


@needs_data
def test_an_output_folder_inside_the_first_stages_is_refused_before_training(tmp_path, dataset_dir):
    from MedianNerveSegLib.train import SecondStageTrainConfig, TrainConfig, train

    first = tmp_path / "first"
    shutil.copytree(resolve_model("median_nerve_unet_small"), first)
    (first / "model.json").write_text(json.dumps({**json.loads((first / "model.json").read_text()),
                                                  "training": {}}))  # no patients listed: not refused for them
    config = TrainConfig(name="second", input_size=(32, 64), epochs=1, max_images=6, spacing_mm=SPACING,
                         second_stage=SecondStageTrainConfig(str(first)))
    for out in (first, first / "two_stage"):
        with pytest.raises(ValueError, match="is the first stage's folder or inside it"):
            train(dataset_dir, out, config, log=lambda _: None)
    assert not (first / "two_stage").exists() and not (first / FIRST_STAGE).exists()


def test_a_two_stage_model_refuses_the_int8_runtime_in_one_line(tmp_path):
    with pytest.raises(RuntimeError, match="two-stage model has no int8 network"):
        Segmenter(constant_two_stage(tmp_path / "model", 10.0), runtime="openvino-int8")


def test_copying_a_segmenter_loads_no_model(monkeypatch):
    import copy

    from MedianNerveSegLib import inference

    segmenter = Segmenter("median_nerve_unet_small", runtime="torch")
    resolved = []
    monkeypatch.setattr(inference, "resolve_model", lambda model: resolved.append(model))
    assert copy.copy(segmenter).info == segmenter.info and resolved == []


@needs_data
def test_the_cli_keeps_the_configs_input_size_and_refuses_a_second_stage_config_without_a_first(tmp_path,
                                                                                               dataset_dir):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"architecture": "monai_unet", "arch_kwargs": ARCH, "input_size": [32, 64],
                                  "batch_size": 4, "second_stage": {"window_mm": [8, 16]}}))
    base = [sys.executable, "-m", "MedianNerveSegLib", "train", "--dataset", str(dataset_dir), "--config",
            str(config), "--epochs", "1", "--max-images", "6", "--spacing", str(SPACING)]
    refused = subprocess.run(base + ["--out", str(tmp_path / "plain")], capture_output=True, text=True)
    assert refused.returncode != 0 and "describes a second stage: give --first-stage" in refused.stderr
    subprocess.run(base + ["--out", str(tmp_path / "two"), "--first-stage", "median_nerve_unet_small"],
                   capture_output=True, text=True)  # exit 1 (a one-epoch model fails validation), folder kept
    assert json.loads((tmp_path / "two" / "model.json").read_text())["input_size"] == [32, 64]
    assert sorted(p.name for p in (tmp_path / "two" / FIRST_STAGE).iterdir()) == ["model.json", "model.pt"]
