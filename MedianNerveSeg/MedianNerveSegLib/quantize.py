"""An int8 network for a model folder: quantized with NNCF on the model's training patients, accepted
only when its masks keep the float model's accuracy on the patients the model was validated on.

Accepted (issue 18's rule) when, on the held-out patients, the mean DSC against the expert masks
drops by at most 0.005 and the CSA mean absolute error grows by at most 0.1 mm^2. The agreement
of the int8 masks with the float masks is recorded next to it. The result goes to the model
folder's ``openvino_int8/`` (network.xml/.bin and ``quantization.json``) when accepted, which
``--runtime openvino-int8`` runs (:func:`runtime.int8_network` checks it was made from these
weights and accepted). Needs ``nncf`` and ``openvino`` (``pip install "median-nerve-seg[int8]"``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

from .data import Sample, list_samples
from .evaluate import csa_agreement, segmentation_metrics
from .inference import Segmenter
from .io import read_image, read_mask
from .preprocess import network_array
from .runtime import INT8_FILES, INT8_FOLDER, INT8_RECORD, model_checksum
from .train import sample_spacing
from .zoo import MODEL_JSON, WEIGHTS, ModelFolderError, load_info, resolve_model

MAX_DICE_DROP = 0.005  # mean DSC against the expert masks, held-out patients
MAX_CSA_MAE_GAIN_MM2 = 0.1  # CSA mean absolute error against the expert masks, mm^2


def split_by_patient(samples: Sequence[Sample], val_patients: Iterable[str]) -> tuple:
    """(calibration, validation): the samples of the model's training patients, and of its held-out ones."""
    held_out = set(val_patients)
    return [s for s in samples if s.patient not in held_out], [s for s in samples if s.patient in held_out]


def quantize_model(model: Any, dataset_dir: Path, spacing_mm: Any = None,
                   progress: Callable[[str], None] = lambda line: None) -> Dict[str, Any]:
    """Quantize ``model`` (a folder or installed name) and check it; when accepted, write ``openvino_int8/``.
    The record (``quantization.json``) either way."""
    try:
        import nncf
    except ImportError:
        raise RuntimeError('quantize needs NNCF: pip install "median-nerve-seg[int8]"') from None

    asked = resolve_model(model)
    if load_info(asked).second_stage:
        raise ModelFolderError(f"{asked}: a two-stage model; quantize calibrates one network on whole frames, and "
                               "int8 two-stage models are not supported")
    floating = Segmenter(model, "cpu", runtime="openvino")
    model_dir, info = floating.model_dir, floating.info
    val_patients = info.training.get("val_patients") or []
    if not val_patients:
        raise ModelFolderError(f"{model_dir / MODEL_JSON}: names no held-out patients (training.val_patients); "
                               "the int8 masks cannot be checked")
    calibration, validation = split_by_patient(list_samples(Path(dataset_dir)), val_patients)
    if not calibration or not validation:
        raise ValueError(f"{dataset_dir}: has no images of the model's "
                         f"{'training' if not calibration else 'held-out'} patients")
    if not os.access(model_dir, os.W_OK):
        raise PermissionError(f"{model_dir}: not writable; copy the model folder and quantize the copy")
    progress(f"calibrating on {len(calibration)} images of the training patients")
    inputs = [network_array(read_image(s.image).frame(0), info.input_size) for s in calibration]
    nncf.set_log_level(logging.ERROR)
    # The full bias correction: with the fast one the default model's CSAs moved 0.14 mm^2 from the float ones
    quantized = nncf.quantize(floating.network.model, nncf.Dataset(inputs), subset_size=len(inputs),
                              fast_bias_correction=False)
    int8 = Segmenter(model_dir, "cpu", runtime="openvino")
    int8.network.compile(quantized)
    progress(f"checking on {len(validation)} images of {len(set(s.patient for s in validation))} held-out patients")
    record = {"model": f"{info.name}@{info.version}",
              "model_checksum": model_checksum([model_dir / MODEL_JSON, model_dir / WEIGHTS]),
              "nncf": nncf.__version__, "calibration": _described(calibration),
              "validation": _described(validation), **compare(floating, int8, validation, spacing_mm)}
    if record["accepted"]:  # a refused network never replaces the folder's int8 network
        write_int8(model_dir / INT8_FOLDER, quantized, record)
    return record


def _described(samples: Sequence[Sample]) -> Dict[str, Any]:
    return {"n_images": len(samples), "patients": sorted({s.patient for s in samples})}


def compare(floating: Segmenter, int8: Segmenter, samples: Sequence[Sample], spacing_mm: Any = None) -> Dict[str, Any]:
    """Both networks' accuracy on ``samples``, their agreement, network time per frame, and the verdict."""
    rows: Dict[str, List[dict]] = {"float32": [], "int8": [], "agreement": []}
    times: Dict[str, List[float]] = {"float32": [], "int8": []}
    for sample in samples:
        image = read_image(sample.image, sample_spacing(sample, spacing_mm))
        if image.spacing_mm is None:
            raise ValueError(f"{sample.image}: no pixel spacing; give --spacing to check the CSA")
        gt = read_mask(sample.mask)
        masks = {}
        for name, segmenter in (("float32", floating), ("int8", int8)):
            batch = network_array(image.frame(0), segmenter.info.input_size)
            start = time.perf_counter()
            segmenter.network(batch)
            times[name].append(1000 * (time.perf_counter() - start))
            masks[name] = segmenter.predict(image).mask
            rows[name].append(segmentation_metrics(masks[name], gt, image.spacing_mm))
        rows["agreement"].append(segmentation_metrics(masks["int8"], masks["float32"], image.spacing_mm))
    accuracy = {name: _accuracy(rows[name]) for name in rows}
    drop = accuracy["float32"]["dice_mean"] - accuracy["int8"]["dice_mean"]  # unrounded: the gate is exact
    gain = accuracy["int8"]["csa_mae_mm2"] - accuracy["float32"]["csa_mae_mm2"]
    result: Dict[str, Any] = {name: {key: round(value, 4 if key.startswith("dice") else 3)
                                     for key, value in figures.items()} for name, figures in accuracy.items()}
    result["network_ms_median"] = {name: round(float(np.median(values)), 1) for name, values in times.items()}
    result["accepted"] = bool(drop <= MAX_DICE_DROP and gain <= MAX_CSA_MAE_GAIN_MM2)
    result["verdict"] = (f"DSC {result['int8']['dice_mean']:.4f} vs {result['float32']['dice_mean']:.4f} "
                         f"(drop {drop:+.4f}, at most {MAX_DICE_DROP}); CSA MAE {result['int8']['csa_mae_mm2']:.3f} "
                         f"vs {result['float32']['csa_mae_mm2']:.3f} mm^2 (gain {gain:+.3f}, at most "
                         f"{MAX_CSA_MAE_GAIN_MM2})")
    return result


def _accuracy(rows: Sequence[dict]) -> Dict[str, float]:
    """Mean DSC and the CSA agreement of mask/reference pairs (``segmentation_metrics`` rows)."""
    csa = csa_agreement([r["csa_pred_mm2"] for r in rows], [r["csa_gt_mm2"] for r in rows])
    return {"dice_mean": float(np.mean([r["dice"] for r in rows])), "csa_mae_mm2": csa["mae"],
            "csa_bias_mm2": csa["bias"]}


def write_int8(folder: Path, quantized, record: Dict[str, Any]) -> None:
    """Write the network and its record into a scratch folder, then put it in ``folder``'s place whole."""
    import openvino as ov

    scratch = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp")
    old: Optional[Path] = None
    try:
        scratch.mkdir()
        ov.save_model(quantized, str(scratch / "network.xml"), compress_to_fp16=False)
        record = {**record, "network_checksum": model_checksum([scratch / name for name in INT8_FILES])}
        (scratch / INT8_RECORD).write_text(json.dumps(record, indent=1) + "\n")
        if folder.exists():
            old = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(folder, old)
        os.replace(scratch, folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
