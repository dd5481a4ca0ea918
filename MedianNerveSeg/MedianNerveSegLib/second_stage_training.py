"""How a two-stage model's second network learns (:mod:`second_stage`): :class:`SecondStageRecipe`, the variant of
``train.SegmenterRecipe`` that ``train --first-stage MODEL`` runs.

Windows of ``window_mm`` centred on the expert's nerve are resampled once to the input size (8 x 16 mm at
128 x 256, 0.0625 mm a pixel: the dataset's own 0.062); the segmenters' augmentation moves the nerve off the
window's centre (its translation), as the first stage's centre errs. Each validation segments the held-out
patients with the whole two-stage model, the first stage included, so the figures are the model's own. The
first model is copied into the written folder as ``first_stage/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Sequence, Tuple

import numpy as np
import torch

from .classify import crop_pixels, nerve_centre
from .data import Sample
from .inference import Segmenter
from .io import read_image, read_mask
from .preprocess import resize_array
from .second_stage import FIRST_STAGE, TWO_STAGE_REVIEW_WIDTH_MM2, SecondStageSettings, TwoStageSegmenter, window_box
from .train import Recipe, SegmenterRecipe, TrainConfig, sample_spacing, validate
from .models import MODEL_REGISTRY
from .zoo import MODEL_JSON, WEIGHTS, ModelInfo, resolve_model


def expert_windows(samples: Sequence[Sample], size: Sequence[int], settings: SecondStageSettings,
                   spacing_mm: Any = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, h, w) windows centred on each sample's expert nerve (scaled to 0-1 per window) and their masks;
    a sample without a nerve has no window and is left out; one without a spacing is refused (its window's
    size in mm would be a guess)."""
    images, masks = [], []
    for sample in samples:
        mask = read_mask(sample.mask)
        if not mask.any():
            continue
        image = read_image(sample.image, spacing_mm=sample_spacing(sample, spacing_mm))
        if image.spacing_mm is None:
            raise ValueError(f"{sample.image}: gives no pixel spacing, and the second stage's window is in mm: "
                             "give --spacing MM")
        box = window_box(nerve_centre(mask), image.spacing_mm, settings, size)
        window = crop_pixels(image.frame(0), box)
        low, high = float(window.min()), float(window.max())
        images.append((window - low) / (high - low if high > low else 1.0))
        masks.append(resize_array(box.cut(mask.astype(np.float32)), size))
    if not images:
        raise ValueError("no training image has a nerve in its mask to centre the second stage's window on")
    as_tensor = lambda arrays: torch.from_numpy(np.stack(arrays).astype(np.float32))[:, None]
    return as_tensor(images), as_tensor(masks)


class SecondStageRecipe(SegmenterRecipe):
    """The second network of a two-stage model (see the module docstring)."""

    def __init__(self, cfg: TrainConfig, device: str, train_samples: Sequence[Sample],
                 val_samples: Sequence[Sample], log: Callable[[str], None]):
        Recipe.__init__(self, cfg, device, train_samples, val_samples, log)
        if MODEL_REGISTRY[cfg.architecture].kind != "semantic":
            raise ValueError(f"--architecture {cfg.architecture}: a second stage is a semantic segmenter, not a "
                             f"{MODEL_REGISTRY[cfg.architecture].kind}")
        given = cfg.second_stage.first_stage
        self.first_dir = resolve_model(given)
        self.first = Segmenter(self.first_dir, device, runtime="torch")  # refuses a click model or a classifier
        self.first_info = self.first.info
        if self.first_info.second_stage:
            raise ValueError(f"--first-stage {given}: is itself a two-stage model")
        trained_on = self.first_info.training.get("train_patients")
        seen = sorted(set(trained_on or []) & {s.patient for s in val_samples})
        if trained_on is None:
            log(f"warning: --first-stage {cfg.second_stage.first_stage}: its model.json does not list the patients it "
                "trained on; if they include the validation patients, the validation figures flatter the model")
        if seen:
            raise ValueError(f"--first-stage {cfg.second_stage.first_stage}: it trained on {len(seen)} of the "
                             f"validation patients ({', '.join(seen[:5])}): the two-stage model's validation would "
                             "flatter it; give a first stage trained on the same split (the same --folds/--fold)")
        self.settings = SecondStageSettings.from_dict({"window_mm": list(cfg.second_stage.window_mm)})
        self.images, self.masks = (t.to(device) for t in expert_windows(train_samples, cfg.input_size,
                                                                         self.settings, cfg.spacing_mm))
        log(f"second stage: {self.settings.window_mm[0]:g} x {self.settings.window_mm[1]:g} mm windows at "
            f"{cfg.input_size[0]} x {cfg.input_size[1]}, after the first stage {self.first_info.name} "
            f"({self.first_dir})")

    def info(self) -> ModelInfo:
        """The second network's card: the first stage's clean-up (threshold, smallest nerve, branches), and the review
        width of two-stage models."""
        info = super().info()
        first = self.first_info
        info.threshold, info.min_component_mm2 = first.threshold, first.min_component_mm2
        info.min_branch_fraction, info.second_stage = first.min_branch_fraction, self.settings.as_dict()
        info.review_width_mm2 = TWO_STAGE_REVIEW_WIDTH_MM2
        return info

    def validate(self, network: torch.nn.Module, info: ModelInfo) -> Dict[str, Any]:
        segmenter = TwoStageSegmenter.from_networks(self.first, network, info, self.device)
        return validate(segmenter, self.val_samples, self.cfg.spacing_mm)

    def check_out(self, out_dir: Path) -> None:
        out, first = Path(out_dir).resolve(), self.first_dir.resolve()
        if out == first or first in out.parents:
            raise ValueError(f"--out {out_dir}: is the first stage's folder or inside it ({self.first_dir}); "
                             "the two-stage model needs a folder of its own")

    def written(self, out_dir: Path) -> None:
        """The first model's network and card copied in as first_stage/ (not its logs, nor an int8 network)."""
        first = Path(out_dir) / FIRST_STAGE
        first.mkdir(exist_ok=True)
        for name in (MODEL_JSON, WEIGHTS):
            shutil.copy2(self.first_dir / name, first / name)
