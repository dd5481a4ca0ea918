"""How a click model learns: :class:`ClickRecipe`, the click variant of ``train.SegmenterRecipe``.

Iterative training with simulated clicks (RITM, Sofiiuk et al. 2021; MONAI's DeepEdit): each item
starts from a mask with an error, either the segmenter's own mask or the expert's with a simulated
error of the kinds the segmenter makes (a boundary drawn too far out or in, a neighbouring blob
taken in, a lateral extension left out, a shifted contour) or no mask at all; the first click goes
into the error, then up to ``max_rounds`` clicks are simulated with the network itself (no
gradient), each where its own mask is most wrong, and the last input is trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy import ndimage

from .augment import random_intensity, zscore
from .clicks import Click, ClickEncoding, Crop, click_maps, next_click, zoom_crop
from .data import Sample
from .evaluate import csa_agreement, dice
from .image import UltrasoundImage
from .inference import Segmenter
from .io import read_image, read_mask
from .preprocess import resize_array
from .refine import Refiner, crop_channels, simulate_clicks
from .train import Recipe, TrainConfig, sample_spacing
from .zoo import ModelInfo


def _disk(shape: Tuple[int, int], centre: Tuple[float, float], radii: Tuple[float, float],
          angle: float) -> np.ndarray:
    rows, cols = np.ogrid[:shape[0], :shape[1]]
    dy, dx = rows - centre[0], cols - centre[1]
    along, across = dx * math.cos(angle) + dy * math.sin(angle), -dx * math.sin(angle) + dy * math.cos(angle)
    return (along / radii[0]) ** 2 + (across / radii[1]) ** 2 <= 1.0


def _grow(mask: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """The boundary drawn too far out."""
    return ndimage.distance_transform_edt(~mask) <= rng.uniform(1.0, max(1.5, 0.25 * radius))


def _shrink(mask: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """The boundary drawn too far in."""
    return ndimage.distance_transform_edt(mask) > rng.uniform(1.0, max(1.5, 0.2 * radius))


def _blob(mask: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """A neighbouring hypoechoic structure taken in: an ellipse on the boundary, pushed outward."""
    rows, cols = np.nonzero(mask & ~ndimage.binary_erosion(mask))
    pick = rng.integers(len(rows))
    centroid = np.argwhere(mask).mean(axis=0)
    direction = np.array([rows[pick], cols[pick]], float) - centroid
    direction /= max(np.linalg.norm(direction), 1e-6)
    size = radius * rng.uniform(0.3, 0.7)
    centre = np.array([rows[pick], cols[pick]]) + direction * size * rng.uniform(0.2, 0.9)
    return mask | _disk(mask.shape, tuple(centre), (size, size * rng.uniform(0.4, 1.0)), rng.uniform(0, math.pi))


def _cut(mask: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """An end of the nerve left out (mostly a flat lateral extension): all beyond a line across it."""
    angle = rng.choice([0.0, math.pi]) + rng.normal(0.0, 0.4)
    rows, cols = np.ogrid[:mask.shape[0], :mask.shape[1]]
    along = cols * math.cos(angle) + rows * math.sin(angle)
    return mask & (along <= np.quantile(along[mask], rng.uniform(0.72, 0.93)))


def _shift(mask: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """The contour drawn a little off the nerve."""
    offset = rng.uniform(-0.25, 0.25, 2) * radius
    return ndimage.shift(mask, offset, order=0, mode="constant", cval=0) > 0


SIMULATED_ERRORS: Dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    "grow": _grow, "shrink": _shrink, "blob": _blob, "cut": _cut, "shift": _shift}


def simulated_error(truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The expert's mask with one or two of :data:`SIMULATED_ERRORS` (worked on a window around the nerve)."""
    rows, cols = np.nonzero(truth)
    if not rows.size:
        return truth.copy()
    radius = math.sqrt(rows.size / math.pi)
    margin = int(2 * radius) + 8
    window = (slice(max(rows.min() - margin, 0), rows.max() + margin + 1),
              slice(max(cols.min() - margin, 0), cols.max() + margin + 1))
    mask = truth[window].copy()
    for name in rng.choice(sorted(SIMULATED_ERRORS), size=int(rng.integers(1, 3)), replace=False):
        changed = SIMULATED_ERRORS[name](mask, radius, rng)
        mask = changed if changed.any() else mask
    out = np.zeros_like(truth)
    out[window] = mask
    return out


def training_click(mask: np.ndarray, truth: np.ndarray, rng: np.random.Generator,
                   jitter: float = 0.5) -> Optional[Click]:
    """The benchmark's click (:func:`clicks.next_click`), or, with probability ``jitter``, a random pixel well
    inside the same kind of error, as real users do not click the deepest pixel."""
    click = next_click(mask, truth)
    if click is None or rng.random() >= jitter:
        return click
    error = (truth & ~mask) if click.positive else (mask & ~truth)
    depth = ndimage.distance_transform_edt(np.pad(error, 1))[1:-1, 1:-1]
    rows, cols = np.nonzero(depth >= max(1.0, 0.4 * depth.max()))
    pick = rng.integers(len(rows))
    return Click(int(cols[pick]), int(rows[pick]), click.positive)


@dataclass
class _Frame:
    image: UltrasoundImage
    truth: np.ndarray
    start: Optional[np.ndarray] = None  # the segmenter's mask


@dataclass
class _Start:
    """One training item before the network's own clicks: crop channels and the expert's mask in the crop."""

    image: np.ndarray
    previous: np.ndarray
    maps: np.ndarray
    truth: np.ndarray


class ClickRecipe(Recipe):
    """The click model's recipe: items started from masks with errors and clicked (see the module docstring),
    validated by simulating ``val_clicks`` clicks on the held-out patients from the segmenter's masks."""

    def __init__(self, cfg: TrainConfig, device: str, train_samples: Sequence[Sample],
                 val_samples: Sequence[Sample], log: Callable[[str], None]):
        super().__init__(cfg, device, train_samples, val_samples, log)
        self.settings = cfg.clicks
        self.encoding = ClickEncoding.from_dict(self.settings.encoding)
        self.size = tuple(cfg.input_size)
        self.rng = np.random.default_rng(cfg.seed)
        segmenter = Segmenter(self.settings.initial_model, device) if self.settings.initial_model else None
        if segmenter is not None:
            log(f"clicks start from the masks of {segmenter.model_id}")
        self.train_frames = [self._frame(s, segmenter) for s in train_samples]
        self.val_frames = [self._frame(s, segmenter) for s in val_samples]
        fallback = np.random.default_rng(cfg.seed + 1)  # without a segmenter: the same simulated errors each time
        for frame in self.val_frames:
            if frame.start is None:
                frame.start = simulated_error(frame.truth, fallback)

    def _frame(self, sample: Sample, segmenter: Optional[Segmenter]) -> _Frame:
        image = read_image(sample.image, spacing_mm=sample_spacing(sample, self.cfg.spacing_mm))
        image.pixels = np.asarray(image.frame(0), np.float32)
        truth = read_mask(sample.mask)
        return _Frame(image, truth, segmenter.predict(image).mask if segmenter else None)

    def __len__(self) -> int:
        return len(self.train_frames) * self.settings.repeats

    def info(self) -> ModelInfo:
        cfg = self.cfg
        return ModelInfo(name=cfg.name, architecture=cfg.architecture, version=cfg.version,
                         arch_kwargs=cfg.arch_kwargs, input_size=self.size, click_encoding=self.encoding.as_dict())

    # ------------------------------------------------------------------------- training items

    def _initial_mask(self, frame: _Frame) -> np.ndarray:
        draw = self.rng.random()
        if draw < 0.05:
            return np.zeros_like(frame.truth)
        if frame.start is not None and draw < 0.05 + self.settings.ai_fraction:
            start = frame.start
            if self.rng.random() < 0.5 or next_click(start, frame.truth) is None:
                start = simulated_error(start if start.any() else frame.truth, self.rng)
            return start
        return simulated_error(frame.truth, self.rng)

    def _start(self, frame: _Frame) -> _Start:
        initial = self._initial_mask(frame)
        click = training_click(initial, frame.truth, self.rng)
        if click is None:  # no error to correct: the expert's mask, grown
            initial = _grow(frame.truth, 10.0, self.rng)
            click = training_click(initial, frame.truth, self.rng)
        clicks = [click] if click is not None else []
        crop = zoom_crop(initial, clicks, frame.image.spacing_mm, self.encoding, self.size,
                         expand=self.rng.uniform(0.85, 1.3) * self.encoding.expand,
                         shift=tuple(self.rng.uniform(-0.08, 0.08, 2)))
        image, previous, maps = crop_channels(frame.image.pixels, initial, clicks, crop, self.encoding.radius)
        truth = resize_array(crop.cut(frame.truth.astype(np.float32)), self.size)
        return _Start(image, previous, maps, truth)

    def batch(self, trainer: torch.nn.Module, indices: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        starts = [self._start(self.train_frames[int(i) % len(self.train_frames)]) for i in indices.tolist()]
        stack = lambda name: torch.from_numpy(np.stack([getattr(s, name) for s in starts]))
        images, previous, maps, truth = stack("image")[:, None], stack("previous")[:, None], stack("maps"), \
            stack("truth")[:, None]
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        images = (images - low) / (images.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(1e-6)
        x = torch.cat([zscore(random_intensity(images, self.cfg.augment)), previous, maps], dim=1)
        flip = torch.rand(len(x)) < self.cfg.augment.flip_lr
        x[flip], truth[flip] = x[flip].flip(-1), truth[flip].flip(-1)
        x = self._clicked_by_the_network(trainer, x.to(self.device), truth.numpy()[:, 0] >= 0.5)
        return x, truth.to(self.device)

    def _clicked_by_the_network(self, trainer: torch.nn.Module, x: torch.Tensor, truth: np.ndarray) -> torch.Tensor:
        """0 to ``max_rounds`` rounds: the network's mask becomes the input mask, plus a click where it is most wrong."""
        rounds = int(self.rng.integers(0, self.settings.max_rounds + 1))
        if not rounds:
            return x
        identity = Crop(0, 0, x.shape[-2], x.shape[-1], (x.shape[-2], x.shape[-1]))
        trainer.eval()
        with torch.no_grad():
            for _ in range(rounds):
                predicted = (trainer(x)[:, 0] > 0).cpu().numpy()
                for index, (mask, expert) in enumerate(zip(predicted, truth)):
                    click = next_click(mask, expert)
                    if click is not None:
                        disk = torch.from_numpy(click_maps([click], identity, self.encoding.radius))
                        x[index, 2:] = torch.maximum(x[index, 2:], disk.to(x.device))
                x[:, 1] = torch.from_numpy(predicted.astype(np.float32)).to(x.device)
        trainer.train()
        return x

    # ------------------------------------------------------------------------- validation

    def validate(self, network: torch.nn.Module, info: ModelInfo) -> Dict[str, Any]:
        """Mean DSC after 0, 1 and ``val_clicks`` simulated clicks; ``dice_mean`` is the last (what training
        keeps the best of and checks for failure), CSA agreement after ``val_clicks`` where the spacing is known."""
        refiner = Refiner.from_network(network, info, self.device)
        n = self.settings.val_clicks
        rows = []
        for frame in self.val_frames:
            session = simulate_clicks(lambda mask, clicks: refiner.refine(frame.image, mask, clicks).mask,
                                      frame.start, frame.truth, max_clicks=n, min_clicks=n, target_dice=2.0)
            rows.append({"dice": [dice(session.mask_after(k), frame.truth) for k in range(n + 1)],
                         "area": int(session.mask_after(n).sum()), "truth": int(frame.truth.sum()),
                         "spacing": frame.image.spacing_mm, "ms": session.milliseconds})
        dices = np.array([r["dice"] for r in rows])
        measured = [r for r in rows if r["spacing"] is not None]
        csa = (csa_agreement([r["area"] * r["spacing"][0] * r["spacing"][1] for r in measured],
                             [r["truth"] * r["spacing"][0] * r["spacing"][1] for r in measured])
               if measured else {"mae": None, "bias": None, "icc": None})
        return {"n_images": len(rows), "dice_start": float(dices[:, 0].mean()), "dice_1_click": float(dices[:, 1].mean()),
                "dice_mean": float(dices[:, n].mean()), "dice_sd": float(dices[:, n].std()),
                "dice_median": float(np.median(dices[:, n])), "found_rate": float((dices[:, n] >= 0.5).mean()),
                "clicks": n, "csa_n_images": len(measured), "csa_mae_mm2": csa["mae"], "csa_bias_mm2": csa["bias"],
                "csa_icc": csa["icc"], "ms_mean": float(np.mean([ms for r in rows for ms in r["ms"]] or [0.0]))}
