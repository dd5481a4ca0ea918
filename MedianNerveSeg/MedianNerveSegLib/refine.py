"""Refiner: the current nerve mask and the clicks so far -> the refined mask, its measurement, the time taken.

A click model (registry kind "click") sees a crop around the mask and the clicks (:mod:`clicks`):
the image, the current mask and the positive and negative click disks as four channels. Its
probability is pasted back into the frame, and the mask is cleaned as a segmenter's is, except
that a component holding a positive click is always kept. Clicks are applied one at a time: each
refinement conditions on the mask the previous click gave and on every click so far, as in the
click simulation (:func:`simulate_clicks`) the model is trained and benchmarked with.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage
from scipy.special import expit

from .clicks import Click, ClickEncoding, Crop, check_clicks, click_crop, click_maps, mask_box, next_click
from .evaluate import dice
from .image import UltrasoundImage
from .inference import check_frame, openvino_network, resolve_device
from .measure import NerveMeasurement, measure_mask
from .models import is_click_model
from .postprocess import min_component_pixels
from .preprocess import normalize, resize_array
from .runtime import REFINE_RUNTIMES, choose_runtime
from .zoo import DEFAULT_CLICK_MODEL, ModelFolderError, ModelInfo, load_info, load_network, resolve_model

if TYPE_CHECKING:
    import torch

OUTSIDE_LOGIT = -20.0  # outside the crop: background


@dataclass
class Refinement:
    """One refinement: the new mask and the nerve probability (frame-sized: the model's inside its crop, the
    refined mask's outside it), its measurement, every click so far, and the milliseconds this refinement took."""

    mask: np.ndarray
    probability: np.ndarray
    measurement: NerveMeasurement
    clicks: Tuple[Click, ...]
    milliseconds: float


def check_mask(mask: np.ndarray, shape: Tuple[int, int], source: str = "mask") -> np.ndarray:
    """The mask as booleans; ValueError naming it when it is not a 2D mask of the frame's ``shape``."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.shape != tuple(shape):
        raise ValueError(f"{source}: {'x'.join(map(str, mask.shape[::-1]))} pixels, but the image is "
                         f"{shape[1]}x{shape[0]}: give the mask made for this image")
    if np.issubdtype(mask.dtype, np.floating) and not np.isfinite(mask).all():
        raise ValueError(f"{source}: holds NaN or infinite values")
    return mask != 0


def crop_channels(frame: np.ndarray, mask: np.ndarray, clicks: Sequence[Click], crop: Crop,
                  radius: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The crop resampled to the network's size: image (raw values), current mask (0..1), click disks (2, h, w)."""
    image = resize_array(crop.cut(np.asarray(frame, np.float32), fill=float(np.min(frame))), crop.size)
    previous = resize_array(crop.cut(np.asarray(mask, np.float32)), crop.size)
    return image, previous, click_maps(clicks, crop, radius)


def network_input(frame: np.ndarray, mask: np.ndarray, clicks: Sequence[Click], crop: Crop,
                  radius: float) -> np.ndarray:
    """The (1, 4, h, w) float32 input of a click model: the z-scored image, the mask and the click disks."""
    image, previous, maps = crop_channels(frame, mask, clicks, crop, radius)
    return np.concatenate([normalize(image)[None], previous[None], maps])[None]


def refined_mask(probability: np.ndarray, mask: np.ndarray, target: np.ndarray, clicks: Sequence[Click], crop: Crop,
                 info: ModelInfo, spacing_mm: Optional[Tuple[float, float]]) -> np.ndarray:
    """The refined mask. The newest click acts on ``target``, the components of ``mask`` it lies near: inside the
    crop the model's call replaces them, and holes are filled; of the result, the components that hold a positive
    click, and those of at least the smallest plausible nerve that overlap ``target``, are kept (no nerve appears
    where neither the user nor the mask put one). The rest of ``mask`` is kept as it was. Last, a click's pixel and
    its 8 neighbours take the click's class where that extends a contour or notches it, never as a new island or
    a hole (which would count as a nerve branch, or change the CSA by a speck)."""
    others = mask & ~target
    called = np.where(crop.region(mask.shape), probability >= info.threshold, target)
    refined = others.copy()
    box = mask_box(called)
    if box is not None:  # the work on the box around the call: a few % of the frame
        window = (slice(max(box[0] - 1, 0), box[1] + 2), slice(max(box[2] - 1, 0), box[3] + 2))
        filled = ndimage.binary_fill_holes(called[window])
        labels, _ = ndimage.label(filled, np.ones((3, 3)))
        areas = np.bincount(labels.ravel())
        min_px = min_component_pixels(info.min_component_mm2, spacing_mm, mask.shape)
        supported = {i for i in np.unique(labels[target[window] & filled]) if i and areas[i] >= min_px}
        top, left = window[0].start, window[1].start
        for click in clicks:
            row, col = click.y - top, click.x - left
            if click.positive and 0 <= row < labels.shape[0] and 0 <= col < labels.shape[1] and labels[row, col]:
                supported.add(labels[row, col])
        refined[window] |= np.isin(labels, sorted(supported))
    for click in clicks:
        around = _ring(refined, click)
        if (click.positive and any(around)) or (not click.positive and not all(around)):
            refined[max(click.y - 1, 0):click.y + 2, max(click.x - 1, 0):click.x + 2] = click.positive
    return refined


def _ring(mask: np.ndarray, click: Click) -> List[bool]:
    """The mask around a click's 3 x 3 square (its 5 x 5 neighbourhood's border; background past the frame)."""
    rows, cols = mask.shape
    return [bool(mask[r, c]) if 0 <= r < rows and 0 <= c < cols else False
            for r in range(click.y - 2, click.y + 3) for c in range(click.x - 2, click.x + 3)
            if abs(r - click.y) == 2 or abs(c - click.x) == 2]


CLICK_CHANNELS = 4  # image, current mask, positive and negative click disks


class Refiner:
    """Loads a click model (installed name or folder; default the shipped one) and refines masks with clicks.

    ``runtime`` as a Segmenter's: "auto" runs the network with OpenVINO (float32, the converted network cached)
    on the CPU when it is installed, so that a new process refines without importing torch."""

    def __init__(self, model: Optional[Union[str, Path]] = None, device: Optional[str] = None,
                 runtime: Optional[str] = None):
        self.device = resolve_device(device)
        self.model_dir = resolve_model(model or DEFAULT_CLICK_MODEL)
        info = load_info(self.model_dir)
        if not is_click_model(info.architecture):
            raise ModelFolderError(f"{self.model_dir}: '{info.name}' segments frames ({info.architecture}); "
                                   f"refine needs a click model, such as {DEFAULT_CLICK_MODEL}")
        if (runtime or "auto").lower() not in REFINE_RUNTIMES:
            raise ValueError(f"--runtime {runtime}: a click model runs on {', '.join(REFINE_RUNTIMES)} "
                             "(it has no int8 network)")
        self.runtime = choose_runtime(runtime, self.device, detector=False)
        network = None
        if self.runtime == "openvino":
            network = openvino_network(self.model_dir, info, (runtime or "auto").lower() != "auto",
                                       channels=CLICK_CHANNELS)
            self.runtime = "openvino" if network is not None else "torch"
        self._use(network or load_network(self.model_dir, self.device)[0], info)

    @classmethod
    def from_network(cls, network: "torch.nn.Module", info: ModelInfo, device: str = "cpu") -> "Refiner":
        """A Refiner around a network in memory (training's validation)."""
        refiner = cls.__new__(cls)
        refiner.device, refiner.model_dir, refiner.runtime = device, None, "torch"
        refiner._use(network.to(device).eval(), info)
        return refiner

    def _use(self, network, info: ModelInfo) -> None:
        self.network, self.info = network, info
        self.encoding = ClickEncoding.from_dict(info.click_encoding)

    @property
    def model_id(self) -> str:
        return f"{self.info.name}@{self.info.version}"

    def crop(self, mask: np.ndarray, clicks: Sequence[Click], spacing_mm) -> Tuple[Optional[Crop], np.ndarray]:
        """Where the newest click acts and the components it acts on (:func:`clicks.click_crop`)."""
        return click_crop(mask, clicks, spacing_mm, self.encoding, self.info.input_size)

    def probability(self, frame: np.ndarray, mask: np.ndarray, clicks: Sequence[Click], crop: Crop) -> np.ndarray:
        """The model's nerve probability over the frame (0 outside ``crop``, where it does not look)."""
        batch = network_input(frame, mask, clicks, crop, self.encoding.radius)
        if self.runtime == "torch":
            import torch

            with torch.no_grad():
                logits = self.network(torch.from_numpy(batch).to(self.device))[0, 0].float().cpu().numpy()
        else:
            logits = self.network(batch)[0, 0]
        return expit(crop.paste(resize_array(logits, (crop.height, crop.width)), frame.shape, OUTSIDE_LOGIT))

    def refine(self, image: UltrasoundImage, mask: np.ndarray, clicks: Sequence[Click],
               frame_index: int = 0) -> Refinement:
        """Refine ``mask`` (the frame's current one) given every click so far, the newest last: the contour changes
        only where the newest click acts (:func:`clicks.click_crop`); no click leaves it as it is."""
        start = time.perf_counter()
        if not 0 <= frame_index < image.n_frames:
            raise ValueError(f"{image.source or 'image'}: frame {frame_index} is not one of its frames "
                             f"(0 to {image.n_frames - 1})")
        frame = image.frame(frame_index)
        check_frame(frame, image.source, frame_index)
        mask = check_mask(mask, frame.shape)
        clicks = tuple(clicks)
        check_clicks(clicks, frame.shape, image.source or "image")
        probability = mask.astype(np.float32)
        crop, target = self.crop(mask, clicks, image.spacing_mm) if clicks else (None, None)
        if crop is not None:
            inside = crop.region(mask.shape)
            probability = np.where(inside, self.probability(frame, mask, clicks, crop), probability)
            mask = refined_mask(probability, mask, target, clicks, crop, self.info, image.spacing_mm)
        measurement = measure_mask(mask, image.spacing_mm)
        return Refinement(mask, probability, measurement, clicks, 1000.0 * (time.perf_counter() - start))

    def refine_clicks(self, image: UltrasoundImage, mask: np.ndarray, clicks: Sequence[Click],
                      frame_index: int = 0, already: int = 0) -> List[Refinement]:
        """The clicks after the first ``already`` (those that made ``mask``) applied one at a time, as a user
        makes them: one refinement per click, each given every click so far."""
        steps: List[Refinement] = []
        for count in range(already + 1, len(clicks) + 1):
            steps.append(self.refine(image, steps[-1].mask if steps else mask, clicks[:count], frame_index))
        return steps


def mask_digest(mask: np.ndarray) -> str:
    """A checksum of a mask's content (not of its file): the same for a 0/1 and a 0/255 encoding."""
    binary = np.asarray(mask) != 0
    return hashlib.sha256(str(binary.shape).encode() + np.packbits(binary).tobytes()).hexdigest()


def clicks_of(history: Sequence[Tuple[str, Sequence[Click]]], mask: np.ndarray) -> Tuple[Click, ...]:
    """The clicks that made ``mask`` when it is one of a session's refinements (``history``: each one's
    :func:`mask_digest` and clicks, oldest first), else none: a mask edited otherwise starts a new session."""
    digest = mask_digest(mask)
    return next((tuple(clicks) for made, clicks in reversed(history) if made == digest), ())


class ClickSession:
    """The clicks on one frame in an interactive editor: each click refines the mask as it is now, given the
    clicks that made it. After an undo the mask is an earlier refinement's again, and so are its clicks; a
    mask changed by other tools starts anew. ``made`` counts every click, for the label's provenance."""

    def __init__(self, refiner: Refiner, image: UltrasoundImage, frame_index: int = 0):
        self.refiner, self.image, self.frame_index = refiner, image, frame_index
        self.history: List[Tuple[str, Tuple[Click, ...]]] = []
        self.made = 0

    def click(self, mask: np.ndarray, click: Click) -> Refinement:
        refinement = self.refiner.refine(self.image, mask, clicks_of(self.history, mask) + (click,), self.frame_index)
        self.history.append((mask_digest(refinement.mask), refinement.clicks))
        self.made += 1
        return refinement

    def provenance(self, mask: np.ndarray) -> Dict[str, Any]:
        """What a label saved from ``mask`` records: the clicks that made it and all clicks made on this frame."""
        return {"clicks": [str(c) for c in clicks_of(self.history, mask)], "clicks_made": self.made,
                "click_model": self.refiner.model_id}


def toggle_components(initial: np.ndarray, candidates: np.ndarray,
                      truth: np.ndarray) -> Callable[[np.ndarray, Sequence[Click]], np.ndarray]:
    """The naive baseline of the click benchmark: a click only keeps or drops whole components. A positive
    click adds the component of ``candidates`` (the AI's above-threshold map, before its clean-up) it falls
    in; a negative click drops the component of the current mask it falls in when most of that component is
    background in ``truth`` (the simulated user drops only a wrong component); other clicks change nothing."""
    labels, _ = ndimage.label(np.asarray(candidates, bool) | np.asarray(initial, bool), np.ones((3, 3)))
    truth = np.asarray(truth, bool)

    def step(mask: np.ndarray, clicks: Sequence[Click]) -> np.ndarray:
        click, mask = clicks[-1], mask.copy()
        if click.positive and labels[click.y, click.x]:
            mask |= labels == labels[click.y, click.x]
        elif not click.positive and mask[click.y, click.x]:
            own, _ = ndimage.label(mask, np.ones((3, 3)))
            component = own == own[click.y, click.x]
            if np.count_nonzero(component & truth) < 0.5 * np.count_nonzero(component):
                mask &= ~component
        return mask

    return step


@dataclass
class ClickSimulation:
    """One image's simulated session: the masks after 0, 1, 2... clicks, the clicks, ms per click."""

    masks: List[np.ndarray]
    clicks: List[Click]
    milliseconds: List[float]

    def mask_after(self, n_clicks: int) -> np.ndarray:
        """The mask after ``n_clicks`` (the last one where the session stopped earlier)."""
        return self.masks[min(n_clicks, len(self.masks) - 1)]


def simulate_clicks(step: Callable[[np.ndarray, Sequence[Click]], np.ndarray], initial: np.ndarray,
                    truth: np.ndarray, max_clicks: int = 20, min_clicks: int = 5,
                    target_dice: float = 0.95) -> ClickSimulation:
    """Click where the mask is most wrong (:func:`clicks.next_click`) and let ``step(mask, clicks)`` refine it,
    at least ``min_clicks`` times, until the mask reaches ``target_dice`` or after ``max_clicks``; a session
    stops early when the mask equals the truth."""
    truth = np.asarray(truth, bool)
    session = ClickSimulation([np.asarray(initial, bool)], [], [])
    reached = dice(session.masks[0], truth) >= target_dice
    while len(session.clicks) < max_clicks and not (reached and len(session.clicks) >= min_clicks):
        click = next_click(session.masks[-1], truth)
        if click is None:
            break
        session.clicks.append(click)
        start = time.perf_counter()
        session.masks.append(np.asarray(step(session.masks[-1], list(session.clicks)), bool))
        session.milliseconds.append(1000.0 * (time.perf_counter() - start))
        reached = reached or dice(session.masks[-1], truth) >= target_dice
    return session


def clicks_to_reach(session: ClickSimulation, truth: np.ndarray, target: float) -> Optional[int]:
    """The clicks after which the mask first reaches DSC ``target`` (0 if it starts there), None if it never does."""
    truth = np.asarray(truth, bool)
    return next((count for count, mask in enumerate(session.masks) if dice(mask, truth) >= target), None)
