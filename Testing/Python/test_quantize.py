"""The int8 network: made by `quantize` on a model's training patients, accepted only at the float model's
accuracy on its held-out patients, and run only for the weights it was made from."""

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from MedianNerveSegLib import runtime
from MedianNerveSegLib.cli import main
from MedianNerveSegLib.data import list_samples
from MedianNerveSegLib.inference import Segmenter
from MedianNerveSegLib.quantize import compare, split_by_patient
from MedianNerveSegLib.results import read_results
from MedianNerveSegLib.runtime import INT8_FOLDER, INT8_RECORD, choose_runtime
from MedianNerveSegLib.zoo import ModelFolderError, resolve_model

from conftest import SPACING

needs_openvino = pytest.mark.skipif(not runtime.openvino_installed(), reason="openvino is not installed")
needs_nncf = pytest.mark.skipif(importlib.util.find_spec("nncf") is None or not runtime.openvino_installed(),
                                reason="nncf and openvino are not installed")
SMALL = "median_nerve_unet_small"


@pytest.fixture
def small_copy(tmp_path) -> Path:
    """The shipped small model's folder, without its int8 network."""
    return Path(shutil.copytree(resolve_model(SMALL), tmp_path / "small", ignore=shutil.ignore_patterns(INT8_FOLDER)))


def _held_out(dataset_dir: Path, model=SMALL, n=None):
    _, validation = split_by_patient(list_samples(dataset_dir), Segmenter(model, runtime="torch").info.training[
        "val_patients"])
    return validation[:n] if n else validation


def test_int8_is_asked_for_by_name_and_only_where_openvino_runs(monkeypatch):
    monkeypatch.setattr(runtime, "openvino_installed", lambda: True)
    assert choose_runtime("openvino-int8", "cpu", detector=False) == "openvino-int8"
    assert choose_runtime("auto", "cpu", detector=False) == "openvino"  # never int8 unasked: its masks differ
    with pytest.raises(RuntimeError, match="--runtime openvino-int8: it runs on the CPU only"):
        choose_runtime("openvino-int8", "cuda", detector=False)


@needs_openvino
def test_the_shipped_int8_networks_were_accepted_and_give_the_float_masks_nearly(dataset_dir):
    samples = _held_out(dataset_dir, n=8)
    for model in (None, SMALL):
        floating, int8 = Segmenter(model, runtime="openvino"), Segmenter(model, runtime="openvino-int8")
        record = json.loads((int8.model_dir / INT8_FOLDER / INT8_RECORD).read_text())
        assert record["accepted"] and record["model"] == f"{int8.info.name}@{int8.info.version}"
        assert set(record["validation"]["patients"]) == set(int8.info.training["val_patients"])
        assert not set(record["calibration"]["patients"]) & set(record["validation"]["patients"])
        assert int8.model_id == f"{int8.info.name}@{int8.info.version}+int8"
        result = compare(floating, int8, samples, SPACING)
        assert result["agreement"]["dice_mean"] > 0.97 and result["agreement"]["csa_mae_mm2"] < 0.3


@needs_openvino
def test_an_int8_network_is_refused_when_missing_made_from_other_weights_or_not_accepted(small_copy):
    with pytest.raises(ModelFolderError, match=r"no int8 network .*make one with: median-nerve-seg quantize"):
        Segmenter(small_copy, runtime="openvino-int8")
    shutil.copytree(resolve_model(SMALL) / INT8_FOLDER, small_copy / INT8_FOLDER)  # these very weights: runs
    assert Segmenter(small_copy, runtime="openvino-int8").runtime == "openvino-int8"

    record_path = small_copy / INT8_FOLDER / INT8_RECORD
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "accepted": False, "verdict": "DSC 0.80 vs 0.92"}))
    with pytest.raises(ModelFolderError, match=r"failed the accuracy check \(DSC 0.80 vs 0.92\)"):
        Segmenter(small_copy, runtime="openvino-int8")
    record_path.write_text(json.dumps(record))
    weights = small_copy / INT8_FOLDER / "network.bin"
    intact = weights.read_bytes()
    weights.write_bytes(intact[:-4] + bytes(b ^ 0xFF for b in intact[-4:]))  # damaged (or replaced) network
    with pytest.raises(ModelFolderError, match="not the ones its quantization.json was written for"):
        Segmenter(small_copy, runtime="openvino-int8")
    weights.write_bytes(intact)
    info = small_copy / "model.json"
    info.write_text(info.read_text().replace('"threshold": 0.5', '"threshold": 0.6'))
    with pytest.raises(ModelFolderError, match="quantized from other weights than this model's"):
        Segmenter(small_copy, runtime="openvino-int8")


@needs_openvino
def test_compare_refuses_a_network_that_loses_accuracy(dataset_dir):
    samples = _held_out(dataset_dir, n=8)
    floating = Segmenter(SMALL, runtime="openvino")
    same = compare(floating, floating, samples, SPACING)
    assert same["accepted"] and same["agreement"]["dice_mean"] == 1.0 and same["agreement"]["csa_mae_mm2"] == 0.0
    worse = Segmenter(SMALL, runtime="openvino")
    worse.network = lambda batch: floating.network(batch) - 10.0  # only its surest pixels stay
    result = compare(floating, worse, samples, SPACING)
    assert not result["accepted"] and result["int8"]["dice_mean"] < result["float32"]["dice_mean"] - 0.005
    assert "at most 0.005" in result["verdict"]


@needs_nncf
def test_quantize_makes_an_accepted_int8_network_that_segment_runs_and_names(small_copy, dataset_dir, tmp_path,
                                                                              capsys):
    assert main(["quantize", "--model", str(small_copy), "--dataset", str(dataset_dir), "--spacing", "0.062"]) == 0
    assert "int8 accepted" in capsys.readouterr().out
    record = json.loads((small_copy / INT8_FOLDER / INT8_RECORD).read_text())
    assert record["int8"]["dice_mean"] >= record["float32"]["dice_mean"] - 0.005
    assert record["int8"]["csa_mae_mm2"] <= record["float32"]["csa_mae_mm2"] + 0.1
    assert record["validation"]["n_images"] == len(_held_out(dataset_dir))

    images = [str(s.image) for s in _held_out(dataset_dir, n=2)]
    out = tmp_path / "out"
    assert main(["segment", images[0], "--model", str(small_copy), "--runtime", "openvino-int8",
                 "--spacing", "0.062", "--out", str(out)]) == 0
    (row,) = read_results(out / "measurements.csv")
    assert row.ok and row.model.endswith("@1.1.0+int8")
    # the folder's rows came from the int8 network: the float one may not continue it
    assert main(["segment", images[1], "--model", str(small_copy), "--runtime", "openvino",
                 "--spacing", "0.062", "--out", str(out)]) == 2
    assert "other settings" in capsys.readouterr().err and len(read_results(out / "measurements.csv")) == 1
    assert np.isfinite(row.area_mm2)


@needs_nncf
def test_a_refused_int8_network_is_not_written_and_quantize_exits_1(small_copy, dataset_dir, monkeypatch, capsys):
    from MedianNerveSegLib import quantize

    def refused(floating, int8, samples, spacing_mm=None):
        return {**compare(floating, int8, samples[:2], spacing_mm), "accepted": False, "verdict": "DSC 0.80 vs 0.92"}

    monkeypatch.setattr(quantize, "compare", refused)
    assert main(["quantize", "--model", str(small_copy), "--dataset", str(dataset_dir), "--spacing", "0.062"]) == 1
    assert "int8 REFUSED: DSC 0.80 vs 0.92" in capsys.readouterr().out
    assert not (small_copy / INT8_FOLDER).exists()
