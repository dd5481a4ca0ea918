"""The network runtime: OpenVINO gives PyTorch's masks, is chosen only where it can run, and caches its conversion."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from MedianNerveSegLib import runtime
from MedianNerveSegLib.cli import main
from MedianNerveSegLib.image import UltrasoundImage
from MedianNerveSegLib.inference import Segmenter
from MedianNerveSegLib.io import read_image, read_mask, write_mask_png
from MedianNerveSegLib.models import available_models, build_model
from MedianNerveSegLib.runtime import choose_runtime
from MedianNerveSegLib.zoo import ModelInfo, save_model

from conftest import SPACING

needs_openvino = pytest.mark.skipif(not runtime.openvino_installed(), reason="openvino is not installed")


def test_auto_takes_openvino_only_for_a_segmentation_network_on_the_cpu(monkeypatch):
    monkeypatch.setattr(runtime, "openvino_installed", lambda: True)
    assert choose_runtime("auto", "cpu", detector=False) == "openvino"
    assert choose_runtime(None, "cuda", detector=False) == "torch"
    assert choose_runtime("auto", "cpu", detector=True) == "torch"
    assert choose_runtime("torch", "cpu", detector=False) == "torch"
    monkeypatch.setattr(runtime, "openvino_installed", lambda: False)
    assert choose_runtime("auto", "cpu", detector=False) == "torch"


@pytest.mark.parametrize("device, detector, reason", [
    ("cpu", False, "not installed"), ("cuda", False, "CPU only"), ("cpu", True, "detectors")])
def test_openvino_asked_where_it_cannot_run_is_one_clear_error(monkeypatch, device, detector, reason):
    monkeypatch.setattr(runtime, "openvino_installed", lambda: reason != "not installed")
    with pytest.raises(RuntimeError, match=f"--runtime openvino: .*{reason}.*use --runtime torch"):
        choose_runtime("openvino", device, detector)
    with pytest.raises(ValueError, match="choose one of auto, torch, openvino"):
        choose_runtime("onnx", "cpu", False)


def _frames(dataset_dir, n=6):
    names = Segmenter(runtime="torch").info.training["val_patients"][:n]
    return [read_image(next(dataset_dir.glob(f"images/{name}-*.png")), SPACING) for name in names]


@needs_openvino
def test_openvino_masks_are_pytorchs_on_held_out_frames(dataset_dir):
    frames = _frames(dataset_dir)
    for model in (None, "median_nerve_unet_small"):
        eager, compiled = Segmenter(model, runtime="torch"), Segmenter(model, runtime="openvino")
        assert compiled.runtime == "openvino"
        for image in frames:
            a, b = eager.predict(image), compiled.predict(image)
            assert np.abs(a.probability - b.probability).max() < 1e-4  # float32, not the CPU plugin's bfloat16
            assert np.array_equal(a.mask, b.mask) and a.found == b.found


@needs_openvino
def test_the_conversion_is_cached_and_a_damaged_cache_is_converted_again(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDIAN_NERVE_SEG_CACHE", str(tmp_path))
    image = UltrasoundImage(np.random.default_rng(0).integers(0, 255, (120, 160)).astype(np.uint8), (0.1, 0.1))
    first = Segmenter("median_nerve_unet_small", runtime="openvino").predict(image)
    entries = list((tmp_path / "openvino").iterdir())
    assert len(entries) == 1 and (entries[0] / "network.xml").exists()

    import openvino

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted although cached")

    monkeypatch.setattr(openvino, "convert_model", no_conversion)
    again = Segmenter("median_nerve_unet_small", runtime="openvino").predict(image)
    assert np.array_equal(first.mask, again.mask)

    monkeypatch.undo()
    monkeypatch.setenv("MEDIAN_NERVE_SEG_CACHE", str(tmp_path))
    (entries[0] / "network.xml").write_text("not a network")
    damaged = Segmenter("median_nerve_unet_small", runtime="openvino").predict(image)
    assert "cannot be read" in capsys.readouterr().err and np.array_equal(first.mask, damaged.mask)


@needs_openvino
def test_a_network_openvino_cannot_convert_runs_on_torch_unless_openvino_was_asked(monkeypatch, capsys):
    import openvino

    def fails(*args, **kwargs):
        raise RuntimeError("Unsupported operation aten::foo\nmore detail")

    monkeypatch.setenv("MEDIAN_NERVE_SEG_CACHE", os.devnull + "-none")  # nothing cached: conversion runs
    monkeypatch.setattr(openvino, "convert_model", fails)
    assert Segmenter("median_nerve_unet_small").runtime == "torch"
    assert "OpenVINO cannot run this network (Unsupported operation aten::foo); running it with PyTorch" \
        in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="aten::foo.*use --runtime torch"):
        Segmenter("median_nerve_unet_small", runtime="openvino")


def test_segment_takes_a_runtime_and_refuses_an_unknown_one(dataset_dir, tmp_path, capsys):
    image = Path(_frames(dataset_dir, 1)[0].source)
    assert main(["segment", str(image), "--out", str(tmp_path / "torch"), "--spacing", "0.062",
                 "--runtime", "torch"]) == 0
    with pytest.raises(SystemExit):
        main(["segment", str(image), "--out", str(tmp_path / "x"), "--runtime", "onnx"])
    assert "invalid choice: 'onnx'" in capsys.readouterr().err
    if runtime.openvino_installed():
        assert main(["segment", str(image), "--out", str(tmp_path / "ov"), "--spacing", "0.062",
                     "--runtime", "openvino"]) == 0
        masks = [read_mask(tmp_path / run / f"{image.stem}_mask.png") for run in ("torch", "ov")]
        assert np.array_equal(*masks)


@needs_openvino
@pytest.mark.parametrize("name", available_models("semantic"))
def test_every_registry_network_runs_on_openvino_as_on_torch(name, tmp_path):
    save_model(tmp_path, build_model(name).eval(), ModelInfo(name=name, architecture=name, input_size=(96, 128)),
               half=False)
    frame = np.random.default_rng(1).random((120, 150)).astype(np.float32)
    compiled = Segmenter(tmp_path)
    assert compiled.runtime == "openvino"
    assert np.abs(compiled.probability(frame) - Segmenter(tmp_path, runtime="torch").probability(frame)).max() < 1e-4


@needs_openvino
def test_a_cached_network_segments_without_importing_torch_or_monai(tmp_path):
    image = tmp_path / "frame.png"
    write_mask_png(image, np.random.default_rng(2).random((120, 160)) > 0.5)
    command = [sys.executable, "-c", "import sys; from MedianNerveSegLib.cli import main; code = main(sys.argv[1:]); "
               "print('loaded:', *(m for m in ('torch', 'monai') if m in sys.modules)); sys.exit(code)",
               "segment", str(image), "--spacing", "0.1", "--model", "median_nerve_unet_small"]
    env = dict(os.environ, MEDIAN_NERVE_SEG_CACHE=str(tmp_path / "cache"))
    first, second = (subprocess.run(command + ["--out", str(tmp_path / out)], env=env, capture_output=True, text=True)
                     for out in ("first", "second"))
    assert first.returncode == 0 and "loaded: torch monai" in first.stdout  # the first start converts
    assert second.returncode == 0 and second.stdout.strip().endswith("loaded:"), second.stdout + second.stderr
    masks = [read_mask(tmp_path / out / "frame_mask.png") for out in ("first", "second")]
    assert np.array_equal(*masks)


def test_listing_the_models_builds_no_monai_network():
    listing = subprocess.run([sys.executable, "-c", "import sys; from MedianNerveSegLib.cli import main; main(['models']); "
                              "print('monai loaded' if 'monai' in sys.modules else 'no monai')"],
                             capture_output=True, text=True)
    assert listing.returncode == 0 and "monai_unet" in listing.stdout and "3,657,798 params" in listing.stdout
    assert listing.stdout.strip().endswith("no monai"), listing.stdout[-300:]
