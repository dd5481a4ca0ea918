"""Model folders: names before relative paths, model.json and model.pt checked, one atomic writer."""

import json
import shutil

import pytest
import torch

import MedianNerveSegLib.io as io
import MedianNerveSegLib.zoo as zoo
from MedianNerveSegLib.models import build_model
from MedianNerveSegLib.zoo import (PRETRAINED_DIR, ModelFolderError, ModelInfo, load_info, load_network,
                                   resolve_model, save_model)

TINY = {"channels": [8, 16, 32, 64, 128]}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A small valid model folder, saved once; tests change copies of it."""
    folder = tmp_path_factory.mktemp("models") / "tiny"
    network = build_model("monai_unet", **TINY)
    save_model(folder, network, ModelInfo(name="tiny", architecture="monai_unet", arch_kwargs=TINY,
                                          input_size=(64, 96)))
    return folder


@pytest.fixture
def model_copy(tiny_model, tmp_path):
    return shutil.copytree(tiny_model, tmp_path / "tiny")


def edit_json(folder, **changes):
    data = json.loads((folder / "model.json").read_text())
    data.update(changes)
    (folder / "model.json").write_text(json.dumps(data))


def assert_one_line_naming(error, path, reason):
    message = str(error.value)
    assert "\n" not in message and str(path) in message and reason in message, message


# --- 1. installed names before relative paths -------------------------------------------------

def test_a_local_folder_named_like_an_installed_model_does_not_replace_it(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model, tmp_path / "median_nerve_unet")
    assert resolve_model("median_nerve_unet") == PRETRAINED_DIR / "median_nerve_unet"
    assert resolve_model("./median_nerve_unet").resolve() == (tmp_path / "median_nerve_unet").resolve()
    assert resolve_model(str(tmp_path / "median_nerve_unet")) == tmp_path / "median_nerve_unet"


def test_a_local_folder_with_a_name_no_model_has_is_still_found(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model, tmp_path / "my_model")
    assert resolve_model("my_model").resolve() == (tmp_path / "my_model").resolve()


@pytest.mark.parametrize("given, reason", [("./no_such_folder", "does not exist"),
                                           ("sub/empty", "has no model.json")])
def test_a_path_that_is_no_model_folder_is_a_one_line_error(given, reason, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub" / "empty").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as error:
        resolve_model(given)
    assert_one_line_naming(error, given, reason)


# --- 2. model.json checked ---------------------------------------------------------------------

def test_model_json_that_is_a_list_or_not_json(model_copy):
    path = model_copy / "model.json"
    path.write_text("[1, 2]")
    with pytest.raises(ModelFolderError) as error:
        load_info(model_copy)
    assert_one_line_naming(error, path, "expected a JSON object, got a JSON array")
    path.write_text('{"name": "tiny",')
    with pytest.raises(ModelFolderError) as error:
        load_info(model_copy)
    assert_one_line_naming(error, path, "not valid JSON")


@pytest.mark.parametrize("changes, reason", [
    ({"architecture": "resnet9000"}, "'architecture' 'resnet9000' is not one of"),
    ({"architecture": ["monai_unet"]}, "'architecture' must be a string"),
    ({"arch_kwargs": [8, 16]}, "'arch_kwargs' must be a JSON object"),
    ({"input_size": [17, 23]}, "must be multiples of 16"),
    ({"input_size": [64]}, "'input_size' must be two positive integers"),
    ({"input_size": [64, -96]}, "'input_size' must be two positive integers"),
    ({"input_size": [64.5, 96]}, "'input_size' must be two positive integers"),
    ({"input_size": 64}, "'input_size' must be two positive integers"),
    ({"threshold": 2}, "'threshold' must be a number strictly between 0 and 1"),
    ({"threshold": 0}, "'threshold' must be a number strictly between 0 and 1"),
    ({"threshold": float("nan")}, "'threshold' must be a number strictly between 0 and 1"),
    ({"threshold": "0.5"}, "'threshold' must be a number strictly between 0 and 1"),
    ({"threshold": True}, "'threshold' must be a number strictly between 0 and 1"),
    ({"min_component_mm2": -1}, "'min_component_mm2' must be a number >= 0"),
    ({"min_component_mm2": float("inf")}, "'min_component_mm2' must be a number >= 0"),
    ({"min_branch_fraction": 1.5}, "'min_branch_fraction' must be a number from 0 to 1"),
    ({"min_branch_fraction": None}, "'min_branch_fraction' must be a number from 0 to 1"),
    ({"normalization": "minmax"}, "'normalization' 'minmax' is not one of zscore"),
    ({"version": 1.0}, "'version' must be a string"),
])
def test_model_json_with_wrong_types_or_ranges(model_copy, changes, reason):
    edit_json(model_copy, **changes)
    with pytest.raises(ModelFolderError) as error:
        load_info(model_copy)
    assert_one_line_naming(error, model_copy / "model.json", reason)


def test_model_json_without_an_architecture(model_copy):
    data = json.loads((model_copy / "model.json").read_text())
    del data["architecture"]
    (model_copy / "model.json").write_text(json.dumps(data))
    with pytest.raises(ModelFolderError) as error:
        load_info(model_copy)
    assert_one_line_naming(error, model_copy / "model.json", "missing 'architecture'")


def test_arch_kwargs_the_constructor_rejects_name_model_json(model_copy):
    edit_json(model_copy, arch_kwargs={"chanels": [8, 16]})
    with pytest.raises(ModelFolderError) as error:
        load_network(model_copy)
    assert_one_line_naming(error, model_copy / "model.json", "monai_unet rejects arch_kwargs")


# --- 2. model.pt checked -----------------------------------------------------------------------

def _write_tensor(path):
    torch.save(torch.zeros(3), path)


def _write_other_architecture(path):
    torch.save(build_model("lunet", features=[4, 8, 16, 32]).state_dict(), path)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage, reason", [
    (lambda path: path.unlink(), "missing"),
    (lambda path: path.write_bytes(b""), "empty file"),
    (lambda path: path.write_bytes(b"GIF89a not weights at all"), "not a PyTorch weights file or damaged"),
    (_truncate, "not a PyTorch weights file or damaged"),
    (_write_tensor, "not a PyTorch state dict (a Tensor)"),
    (_write_other_architecture, "weights do not fit monai_unet"),
])
def test_missing_empty_or_foreign_model_pt(model_copy, damage, reason):
    damage(model_copy / "model.pt")
    with pytest.raises(ModelFolderError) as error:
        load_network(model_copy)
    assert_one_line_naming(error, model_copy / "model.pt", reason)


def test_weights_of_other_shapes_than_arch_kwargs_say_which_tensor(model_copy):
    edit_json(model_copy, arch_kwargs={"channels": [16, 32, 64, 128, 256]})
    with pytest.raises(ModelFolderError) as error:
        load_network(model_copy)
    assert_one_line_naming(error, model_copy / "model.pt", "has shape")


def test_non_finite_weights_are_refused(model_copy):
    state = torch.load(model_copy / "model.pt", weights_only=True)
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = torch.full_like(state[first], float("nan"))
    torch.save(state, model_copy / "model.pt")
    with pytest.raises(ModelFolderError) as error:
        load_network(model_copy)
    assert_one_line_naming(error, model_copy / "model.pt", "holds NaN or Inf")


@pytest.mark.parametrize("name", ["median_nerve_unet", "median_nerve_unet_small"])
def test_shipped_models_load_unchanged(name):
    network, info = load_network(resolve_model(name))
    assert info.name == name and info.input_size == (288, 384) and info.threshold == 0.5
    assert not network.training


# --- 4. one atomic writer ----------------------------------------------------------------------

def test_save_model_uses_the_one_atomic_writer_and_a_failed_save_keeps_the_old_model(model_copy, monkeypatch):
    assert zoo.atomic_write is io.atomic_write and not hasattr(zoo, "_atomic")
    before = (model_copy / "model.pt").read_bytes()

    def crash(obj, path):
        open(path, "wb").write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_model(model_copy, build_model("monai_unet", **TINY), load_info(model_copy))
    assert (model_copy / "model.pt").read_bytes() == before
    assert sorted(p.name for p in model_copy.iterdir()) == ["model.json", "model.pt"]
