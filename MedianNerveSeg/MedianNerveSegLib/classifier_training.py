"""How a CTS classifier learns (Shinohara et al. 2022): :class:`ClassifierRecipe`, the classifiers' variant of
``train.SegmenterRecipe``.

Crops of 15 x 15 mm centred on the expert's nerve (``classify`` centres them on the segmenter's), resampled to
the input size once; the paper's augmentation as the bundle sets it (flips, rotation +-10 deg, translation,
shear; no intensity change; the bundles leave out the paper's scaling, which changes the surrogate's area);
cross-entropy over the two classes; validation on the held-out patients' crops by ROC AUC (which keeps the best
weights when asked to) and accuracy. Labels come from a CSV of diagnoses, or from the
surrogate rule "expert CSA >= X mm^2", whose class names then say so.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .augment import random_affine, zscore
from .classify import (Classifier, ClassifierSettings, crop_box, crop_pixels, nerve_centre, read_labels,
                       surrogate_labels, surrogate_settings)
from .data import Sample
from .diagnostic import confusion, rates, roc_auc
from .io import read_image, read_mask
from .models.cts_classifiers import load_user_weights
from .spacing import parse_spacing
from .train import Recipe, TrainConfig, sample_spacing
from .zoo import ModelInfo


def labels_for(cfg: TrainConfig, samples: Sequence[Sample]) -> Tuple[Dict[str, bool], ClassifierSettings]:
    """Each labelled sample's label (by image stem) and the settings a classifier trained on them carries."""
    settings = cfg.classifier
    if settings.labels:
        return read_labels(settings.labels, samples), ClassifierSettings(
            crop_mm=settings.crop_mm, label_source=f"diagnoses ({settings.labels})", segmenter=settings.segmenter)
    if settings.surrogate_csa_mm2 is None:
        raise ValueError("a classifier needs labels: --labels CSV (image or patient, label: CTS or control), or "
                         "--surrogate-csa MM2 (expert CSA >= MM2, a surrogate, never a diagnosis)")
    labels = surrogate_labels(samples, parse_spacing(cfg.spacing_mm, "--spacing"), settings.surrogate_csa_mm2)
    surrogate = surrogate_settings(settings.surrogate_csa_mm2, settings.segmenter)
    return labels, ClassifierSettings(surrogate.classes, settings.crop_mm, surrogate.label_source, settings.segmenter)


def expert_crops(samples: Sequence[Sample], size: Sequence[int], crop_mm: float, spacing_mm: Any = None) -> torch.Tensor:
    """(N, 1, h, w) crops of ``crop_mm`` centred on each sample's expert nerve, scaled to 0-1 per crop."""
    crops = []
    for sample in samples:
        image = read_image(sample.image, spacing_mm=sample_spacing(sample, spacing_mm))
        if image.spacing_mm is None:
            raise ValueError(f"{sample.image}: the {crop_mm:g} mm crop needs the pixel spacing: give --spacing")
        mask = read_mask(sample.mask)
        if not mask.any():
            raise ValueError(f"{sample.mask}: no nerve in this mask to centre the {crop_mm:g} mm crop on")
        box = crop_box(nerve_centre(mask), image.spacing_mm, crop_mm, size)
        crop = crop_pixels(image.frame(0), box)
        low, high = float(crop.min()), float(crop.max())
        crops.append((crop - low) / (high - low if high > low else 1.0))
    return torch.from_numpy(np.stack(crops).astype(np.float32))[:, None]


def classification_metrics(truth: np.ndarray, probability: np.ndarray, threshold: float = 0.5) -> Dict[str, Any]:
    """Accuracy, sensitivity, specificity and ROC AUC (None with one class only) of probabilities."""
    counts = confusion(truth, probability >= threshold)
    figures = rates(counts)
    both = 0 < truth.sum() < truth.size
    return {"n_images": int(truth.size), "n_positive": int(truth.sum()), "auc": roc_auc(truth, probability) if both
            else None, "accuracy": figures["accuracy"], "sensitivity": figures["recall"],
            "specificity": figures["specificity"]}


class ClassifierRecipe(Recipe):
    """The classifiers' recipe (see the module docstring); ``score_key`` is the held-out ROC AUC."""

    score_key = "auc"

    def __init__(self, cfg: TrainConfig, device: str, train_samples: Sequence[Sample],
                 val_samples: Sequence[Sample], log: Callable[[str], None]):
        super().__init__(cfg, device, train_samples, val_samples, log)
        labels, self.settings = labels_for(cfg, list(train_samples) + list(val_samples))
        self.train_samples = [s for s in train_samples if s.image.stem in labels]
        self.val_samples = [s for s in val_samples if s.image.stem in labels]
        left_out = len(train_samples) + len(val_samples) - len(self.train_samples) - len(self.val_samples)
        if not self.train_samples or len({labels[s.image.stem] for s in self.train_samples}) < 2:
            raise ValueError("the training patients need labelled images of both classes "
                             f"({self.settings.classes[0]} and {self.settings.classes[1]})")
        log(f"labels: {self.settings.label_source}; {sum(labels[s.image.stem] for s in self.train_samples)} of "
            f"{len(self.train_samples)} training images are '{self.settings.classes[1]}'"
            + (f"; {left_out} image(s) without a label left out" if left_out else ""))
        size = tuple(cfg.input_size)
        self.images = expert_crops(self.train_samples, size, self.settings.crop_mm, cfg.spacing_mm).to(device)
        self.labels = torch.tensor([int(labels[s.image.stem]) for s in self.train_samples], device=device)
        self.val_images = expert_crops(self.val_samples, size, self.settings.crop_mm, cfg.spacing_mm)
        self.val_labels = np.array([labels[s.image.stem] for s in self.val_samples], bool)

    def __len__(self) -> int:
        return len(self.images)

    def info(self) -> ModelInfo:
        info = super().info()
        info.classification = self.settings.as_dict()
        return info

    def prepare(self, network: torch.nn.Module) -> torch.nn.Module:
        """Load the user's weights of the same network, where they fit (``classifier.weights``)."""
        if self.cfg.classifier.weights:
            load_user_weights(network, self.cfg.classifier.weights)
        return network

    def loss_function(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return F.cross_entropy

    def batch(self, trainer: torch.nn.Module, indices: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        images = self.images[indices]
        moved, _ = random_affine(images, images, self.cfg.augment)
        return zscore(moved), self.labels[indices]

    def validate(self, network: torch.nn.Module, info: ModelInfo) -> Dict[str, Any]:
        if not len(self.val_samples):
            return {}
        classifier = Classifier.from_network(network, info, self.device)
        probabilities: List[float] = []
        for start in range(0, len(self.val_images), 16):
            batch = [crop[0].numpy() for crop in self.val_images[start:start + 16]]
            probabilities.extend(classifier.probabilities(batch).tolist())
        return classification_metrics(self.val_labels, np.array(probabilities), info.threshold)
