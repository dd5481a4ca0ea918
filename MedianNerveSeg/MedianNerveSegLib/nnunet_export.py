"""A dataset as nnU-Net v2 raw data (Isensee et al. 2021), with this project's patient folds, so that nnU-Net's
2d configuration trains and cross-validates on exactly the patients our models do (``export-nnunet``).

Writes ``Dataset<ID>_<Name>/``: ``imagesTr/<case>_0000.png`` (the grey frame, 8-bit), ``labelsTr/<case>.png``
(0 background, 1 median nerve), ``dataset.json`` (PNG through nnU-Net's NaturalImage2DIO, which takes a pixel as
the unit of length) and ``splits_final.json`` (the folds of :func:`data.patient_folds`, for
``nnUNet_preprocessed/Dataset<ID>_<Name>/``). A case is an image's stem.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from .data import patient_folds
from .dataset import fold_samples
from .io import atomic_write, read_image, read_mask


def dataset_folder_name(dataset_id: int, name: str) -> str:
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"nnU-Net dataset ids are 1-999, not {dataset_id}")
    if not name.isidentifier():
        raise ValueError(f"dataset name {name!r}: letters, digits and _ only")
    return f"Dataset{dataset_id:03d}_{name}"


def _grey_uint8(frame: np.ndarray) -> np.ndarray:
    """A frame as 8-bit grey: its values rounded when they are 8-bit ones (0-255, beyond 0-1: grey, or an RGB
    export's luma), else scaled from its own range (a 0-1 float image, 16-bit data)."""
    if frame.min() >= 0 and 1 < frame.max() <= 255:
        return np.round(frame).astype(np.uint8)
    low, high = float(frame.min()), float(frame.max())
    return np.round(255.0 * (frame - low) / (high - low if high > low else 1.0)).astype(np.uint8)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    atomic_write(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))


def _write_case(sample, work: Path) -> None:
    image = read_image(sample.image)
    if image.n_frames != 1:
        raise ValueError(f"{sample.image}: {image.n_frames} frames; nnU-Net's 2d cases are single frames")
    frame, mask = image.frame(0), read_mask(sample.mask)
    if mask.shape != frame.shape:
        raise ValueError(f"{sample.mask}: {mask.shape[1]}x{mask.shape[0]} pixels, its image "
                         f"{frame.shape[1]}x{frame.shape[0]}")
    _write_png(work / "imagesTr" / f"{sample.stem}_0000.png", _grey_uint8(frame))
    _write_png(work / "labelsTr" / f"{sample.stem}.png", mask.astype(np.uint8))


def export_nnunet(dataset_dir: Path, out_dir: Path, dataset_id: int = 501, name: str = "MedianNerve",
                  folds: int = 5, seed: int = 0) -> Dict[str, Any]:
    """Write the nnU-Net raw dataset folder under ``out_dir`` and return what was written. An existing dataset
    folder is refused (nothing is written over); a multi-frame image or an image and mask of different sizes is
    refused naming the file, and what was written removed. The folder appears whole or not at all (an interrupted
    export leaves at most a hidden ``.Dataset....partial-*`` folder)."""
    samples = fold_samples(dataset_dir)
    folder = Path(out_dir) / dataset_folder_name(dataset_id, name)
    taken = sorted(p.name for p in Path(out_dir).glob(f"Dataset{dataset_id:03d}_*")) if Path(out_dir).is_dir() else []
    if taken:
        raise FileExistsError(f"{Path(out_dir) / taken[0]} exists: nnU-Net needs one dataset per id; give another "
                              "--id or --out (nothing is written over)")
    splits: List[Dict[str, List[str]]] = [{"train": sorted(s.stem for s in train), "val": sorted(s.stem for s in val)}
                                          for train, val in patient_folds(samples, folds, seed)]
    dataset = {"channel_names": {"0": "US"}, "labels": {"background": 0, "median_nerve": 1},
               "numTraining": len(samples), "file_ending": ".png", "name": name,
               "description": f"Median nerve, transverse wrist ultrasound, from {Path(dataset_dir).resolve()} "
                              f"(MedianNerveSeg export-nnunet; patient folds: {folds}, seed {seed})"}
    work = folder.with_name(f".{folder.name}.partial-{uuid.uuid4().hex[:8]}")  # renamed into place when whole
    try:
        for sample in samples:
            _write_case(sample, work)
        (work / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n")
        (work / "splits_final.json").write_text(json.dumps(splits, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    work.rename(folder)
    return {"folder": str(folder), "cases": len(samples), "patients": len({s.patient for s in samples}),
            "folds": [len(split["val"]) for split in splits]}
