"""Segmenter: image -> network -> probability -> clean mask, at the input's resolution."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple, Union

import numpy as np
from scipy.special import expit

from .image import UltrasoundImage
from .models import KIND_COMMANDS, MODEL_REGISTRY, is_detector
from .postprocess import clean_mask, min_component_pixels, nerve_box
from .preprocess import network_array, resize, resize_array, to_network_input
from .results import ENSEMBLE_JOIN
from .runtime import INT8_FOLDER, OpenVinoNetwork, choose_runtime, version_label
from .uncertainty import BAND, REVIEW_WIDTH_MM2, band_pixels
from .zoo import MODEL_JSON, WEIGHTS, ModelFolderError, ModelInfo, load_info, load_network, resolve_model

if TYPE_CHECKING:  # torch is imported only when PyTorch runs the network (runtime.py)
    import torch


@dataclass
class Prediction:
    """One frame's result: probability map and mask at the frame's size."""

    probability: np.ndarray
    mask: np.ndarray
    confidence: float
    found: bool
    milliseconds: float
    flags: Tuple[str, ...] = ()  # e.g. "constant-frame": nothing to segment in it
    band_px: Optional[Tuple[int, int]] = None  # nerve pixels at uncertainty.BAND's strict and loose threshold
    review_width_mm2: float = REVIEW_WIDTH_MM2  # the model's: the interval width from which it is flagged "review"


def resolve_device(device: Optional[str]) -> str:
    """'cpu' unless asked otherwise; a clear error when CUDA is asked for but absent."""
    device = (device or "cpu").lower()
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for, but PyTorch sees no CUDA GPU here; use --device cpu")
    return device


class Segmenter:
    """Loads a model folder (or installed model name) once and segments frames with it; a two-stage model's
    folder gives a :class:`second_stage.TwoStageSegmenter`."""

    def __new__(cls, *args, **kwargs):
        if cls is Segmenter and (args or kwargs) and load_info(resolve_model(args[0] if args else
                                                                            kwargs.get("model"))).second_stage:
            from .second_stage import TwoStageSegmenter

            return super().__new__(TwoStageSegmenter)
        return super().__new__(cls)

    def __init__(self, model: Optional[Union[str, Path]] = None, device: Optional[str] = None,
                 runtime: Optional[str] = None):
        self.device = resolve_device(device)
        self.model_dir = resolve_model(model)
        self.info = load_info(self.model_dir)
        kind = MODEL_REGISTRY[self.info.architecture].kind
        if kind in KIND_COMMANDS:
            raise ModelFolderError(f"{self.model_dir}: '{self.info.name}' is a {kind} model, it does not segment a "
                                   f"frame: use it with median-nerve-seg {KIND_COMMANDS[kind]} --model")
        self.runtime = choose_runtime(runtime, self.device, is_detector(self.info.architecture))
        if self.runtime != "torch":
            self._use_openvino(asked=(runtime or "auto").lower() != "auto")
        if self.runtime == "torch":
            self._use_torch(load_network(self.model_dir, self.device)[0])

    def _use_torch(self, network: "torch.nn.Module") -> None:
        import torch

        self.network = network.to(memory_format=torch.channels_last)  # about 25% faster convolutions on CPU

    def _use_openvino(self, asked: bool) -> None:
        int8 = self.model_dir / INT8_FOLDER if self.runtime == "openvino-int8" else None
        self.network = openvino_network(self.model_dir, self.info, asked, int8)
        if self.network is None:
            self.runtime = "torch"

    @classmethod
    def from_network(cls, network: "torch.nn.Module", info: ModelInfo, device: str = "cpu") -> "Segmenter":
        """A Segmenter around a network in memory (used during training)."""
        segmenter = object.__new__(cls)
        segmenter.device, segmenter.model_dir, segmenter.runtime = device, None, "torch"
        segmenter.network, segmenter.info = network.to(device).eval(), info  # training keeps its layout
        return segmenter

    @property
    def model_id(self) -> str:
        """name@version of the model, +int8 for its int8 network: what a results row says made its mask."""
        return f"{self.info.name}@{version_label(self.info.version, self.runtime)}"

    @property
    def folders(self) -> List[Path]:
        """The model folders whose networks make this segmenter's masks (none for a network in memory)."""
        return [self.model_dir] if self.model_dir is not None else []

    def probability(self, frame: np.ndarray, spacing_mm: Optional[Tuple[float, float]] = None) -> np.ndarray:
        """Nerve probability (H, W) for one frame at its own size (``spacing_mm``: the frame's, for a model that
        works in mm)."""
        if self.runtime != "torch":
            logits = self.network(network_array(frame, self.info.input_size))
            return expit(resize_array(logits[0, 0], frame.shape))
        return self._torch_probability(frame)

    def _torch_probability(self, frame: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            batch = to_network_input(frame, self.info.input_size).to(self.device)
            logits = self.network(batch.contiguous(memory_format=torch.channels_last))
            probability = torch.sigmoid(resize(logits.float(), frame.shape))
        return probability[0, 0].cpu().numpy()

    def predict(self, image: UltrasoundImage, frame_index: int = 0) -> Prediction:
        """Segment one frame of ``image``; the mask has the frame's shape."""
        start = time.perf_counter()
        frame = image.frame(frame_index)
        check_frame(frame, image.source, frame_index)
        if frame.min() == frame.max():  # no contrast, no nerve: the network's output would be its bias
            empty = np.zeros(frame.shape, bool)
            return Prediction(np.zeros(frame.shape, np.float32), empty, 0.0, False,
                              1000.0 * (time.perf_counter() - start), ("constant-frame",))
        probability = self.probability(frame, image.spacing_mm)
        min_px = min_component_pixels(self.info.min_component_mm2, image.spacing_mm, frame.shape)
        mask, band, confidence = np.zeros(frame.shape, bool), None, None
        box = nerve_box(probability, min(self.info.threshold, *BAND))  # the mask and the band lie in it
        if box is not None:  # cleaned on the box alone: the same masks, a fraction of the work
            crop = probability[box]
            mask[box] = clean_mask(crop, self.info.threshold, min_px, self.info.min_branch_fraction)
            if mask[box].any():
                band = band_pixels(crop, min_px, self.info.min_branch_fraction)
                confidence = float(crop[mask[box]].mean())
        found = band is not None
        detections = getattr(self.network, "last_detections", None)  # a detector's box scores, best first
        if detections is not None:
            confidence = float(detections[0]["scores"][0]) if len(detections[0]["scores"]) else 0.0
        elif not found:
            confidence = float(probability.max())
        return Prediction(probability, mask, confidence, found, 1000.0 * (time.perf_counter() - start), band_px=band,
                          review_width_mm2=self.info.review_width_mm2)


class Ensemble(Segmenter):
    """Several segmenters as one model: the mean of their probability maps, cleaned and measured as one
    model's (with the first model's threshold and clean-up). Where the members disagree the mean lies near
    0.5, so the CSA interval (uncertainty.py) widens with their disagreement."""

    def __init__(self, models: Sequence[Union[str, Path]], device: Optional[str] = None,
                 runtime: Optional[str] = None):
        if len(models) < 2:
            raise ValueError("an ensemble needs two or more models")
        self.members = [Segmenter(model, device, runtime) for model in models]
        folders = [m.model_dir.resolve() for m in self.members]
        twice = next((model for model, folder in zip(models, folders) if folders.count(folder) > 1), None)
        if twice is not None:
            raise ValueError(f"--model {twice} is given twice: an ensemble of a model with itself is that model")
        detectors = [m.info.name for m in self.members if is_detector(m.info.architecture)]
        if detectors:
            raise ModelFolderError(f"{detectors[0]} is a detector: an ensemble averages probability maps of "
                                   "semantic segmenters only")
        first = self.members[0]
        self.device, self.model_dir, self.info, self.network = first.device, first.model_dir, first.info, None
        self.runtime = "+".join(dict.fromkeys(m.runtime for m in self.members))

    @property
    def model_id(self) -> str:
        """The members' ids joined by " + " (a member's own id may end in "+int8")."""
        return ENSEMBLE_JOIN.join(m.model_id for m in self.members)

    @property
    def folders(self) -> List[Path]:
        return [folder for member in self.members for folder in member.folders]

    def probability(self, frame: np.ndarray, spacing_mm: Optional[Tuple[float, float]] = None) -> np.ndarray:
        return np.mean([m.probability(frame, spacing_mm) for m in self.members], axis=0)


def segmenter_of(models: Sequence[Optional[Union[str, Path]]], device: Optional[str] = None,
                 runtime: Optional[str] = None) -> Segmenter:
    """The Segmenter of one model (the shipped one for none), or the Ensemble of several."""
    if any(not str(m).strip() for m in models):
        raise ValueError("--model: an empty model name")
    return Ensemble(models, device, runtime) if len(models) > 1 else Segmenter(models[0] if models else None,
                                                                               device, runtime)


def openvino_network(model_dir: Path, info: ModelInfo, asked: bool, int8: Optional[Path] = None,
                     channels: int = 1) -> Optional[OpenVinoNetwork]:
    """The model's network compiled with OpenVINO; when it cannot be, an error if OpenVINO was ``asked`` for,
    else None (run it with PyTorch) after a warning naming the model folder."""
    try:
        return OpenVinoNetwork(lambda: load_network(model_dir, "cpu")[0], info.input_size,
                               [model_dir / MODEL_JSON, model_dir / WEIGHTS], int8, channels)
    except ModelFolderError:
        raise
    except Exception as error:
        reason = f"{model_dir}: OpenVINO cannot run this network ({str(error).splitlines()[0][:200]})"
        if asked:
            raise RuntimeError(f"{reason}; use --runtime torch") from error
        print(f"warning: {reason}; running it with PyTorch", file=sys.stderr)
        return None


def check_frame(frame: np.ndarray, source: str, frame_index: int = 0) -> None:
    """ValueError naming the image when the frame holds NaN or Inf pixels (they cannot be segmented)."""
    bad = int(np.count_nonzero(~np.isfinite(frame))) if np.issubdtype(frame.dtype, np.floating) else 0
    if bad:
        raise ValueError(f"{source or 'image'}: frame {frame_index} has {bad} NaN/Inf pixels of {frame.size}; "
                         "cannot segment it")
