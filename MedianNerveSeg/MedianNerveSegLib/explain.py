"""Where a model looked: occlusion sensitivity and Grad-CAM (MONAI) and LIME (captum, on scikit-image SLIC
superpixels), for the classifiers' call and for the segmenters' nerve.

A classifier is explained for its positive class's probability; a segmenter for its nerve score, the mean nerve
probability over the mask it predicted (:class:`NerveScore`): which parts of the image made it call that region
nerve ("why did it take in that blob?"). Each map holds an importance per pixel of the network's input (higher:
more evidence); occlusion's is the drop of the score when a patch around the pixel is hidden. Maps are written as
float arrays (.npy) and as pictures over the image (.png).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

METHODS = ("occlusion", "lime", "gradcam")
NO_EVIDENCE = 1e-4  # a map whose largest value is below this shows nothing


def parse_methods(text: str) -> list:
    """'occlusion,gradcam' -> the methods, each one of :data:`METHODS`; ValueError naming an unknown one."""
    methods = [m.strip().lower() for m in str(text).split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"--explain {text!r}: choose from {', '.join(METHODS)} (comma-separated)")
    return list(dict.fromkeys(methods))


class ClassScore(nn.Module):
    """A classifier's probability of one class, (B, 1)."""

    def __init__(self, network: nn.Module, target: int = 1):
        super().__init__()
        self.network, self.target = network, target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.network(x), dim=1)[:, self.target:self.target + 1]


class NerveScore(nn.Module):
    """A segmenter's mean nerve probability over ``region`` (the mask it predicted at its input size), (B, 1)."""

    def __init__(self, network: nn.Module, region: torch.Tensor):
        super().__init__()
        self.network = network
        self.register_buffer("region", region.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probability = torch.sigmoid(self.network(x))
        return (probability * self.region).sum(dim=(2, 3)) / self.region.sum().clamp_min(1.0)


def occlusion_map(score: nn.Module, x: torch.Tensor, patch: int) -> np.ndarray:
    """How much the score drops when a ``patch``-pixel square around each pixel is blurred away (MONAI)."""
    from monai.visualize import OcclusionSensitivity

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MONAI 1.6 indexes with lists, which torch 2.x warns about
        base = float(score(x)[0, 0])
        occluded, _ = OcclusionSensitivity(score, mask_size=patch, n_batch=16, verbose=False, overlap=0.5,
                                           activate=False)(x)
    return (base - occluded[0, 0]).cpu().numpy().astype(np.float32)  # (B, scores, H, W): one score


def gradcam_map(score: nn.Module, layer: str, x: torch.Tensor) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) of the score at ``layer`` (a module name of ``score``), upsampled to the
    input and scaled to 0-1. A :class:`NerveScore` gets its element-wise form, HiResCAM (Draelos & Carin 2020:
    activations times gradients, summed over channels): Grad-CAM's channel weights, gradients averaged over the
    whole map, are there dominated by the background, and its maps lit up the background rather than the nerve."""
    import torch.nn.functional as F
    from monai.visualize import GradCAM
    from monai.visualize.class_activation_maps import ModelWithHooks

    if not layer:
        raise ValueError("gradcam: this architecture declares no layer for it (the registry's explain_layer); "
                         "use occlusion")
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        if not isinstance(score, NerveScore):
            return GradCAM(nn_module=score, target_layers=layer)(x, class_idx=0)[0, 0].detach().cpu().numpy()
        _, activations, gradients = ModelWithHooks(score, layer, register_forward=True, register_backward=True)(
            x, class_idx=0)
    cam = F.relu((activations[0] * gradients[0]).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[0, 0]
    return (cam / cam.max().clamp_min(1e-12)).detach().cpu().numpy().astype(np.float32)


def lime_map(score: nn.Module, x: torch.Tensor, image: np.ndarray, segments: int = 60, samples: int = 300,
             seed: int = 0, top: int = 5) -> np.ndarray:
    """LIME (Ribeiro et al. 2016, captum) over SLIC superpixels of ``image``: each superpixel's weight in a linear
    model (least squares) of the score from random subsets of superpixels kept (the others set to the image's
    mean); captum's SGD fit was too noisy to tell a superpixel the score reads from one it ignores. Only the
    ``top`` superpixels with the most evidence keep theirs (LIME's explanation of k features): the weights of the
    rest are mostly the fit's noise."""
    try:
        from captum._utils.models.linear_model import SkLearnLinearRegression
        from captum.attr import Lime
        import sklearn  # noqa: F401  (captum's least-squares fit)
    except ImportError:
        raise ImportError("--explain lime needs captum and scikit-learn: pip install 'median-nerve-seg[explain]'"
                          ) from None
    from skimage.segmentation import slic

    low, high = float(image.min()), float(image.max())
    superpixels = slic((image - low) / (high - low if high > low else 1.0), n_segments=segments, compactness=0.1,
                       channel_axis=None, start_label=0)
    torch.manual_seed(seed)
    lime = Lime(lambda batch: score(batch)[:, 0], interpretable_model=SkLearnLinearRegression())
    with torch.no_grad():
        attribution = lime.attribute(x, baselines=float(x.mean()), n_samples=samples, perturbations_per_eval=16,
                                     feature_mask=torch.from_numpy(superpixels)[None, None].to(x.device))
    weights = attribution[0, 0].detach().cpu().numpy().astype(np.float32)
    per_superpixel = np.array([weights[superpixels == label].mean() for label in range(superpixels.max() + 1)])
    kept = [label for label in np.argsort(per_superpixel)[::-1][:top] if per_superpixel[label] > 0]
    return np.where(np.isin(superpixels, kept), weights, 0.0).astype(np.float32)


def explanation(method: str, score: nn.Module, x: torch.Tensor, image: np.ndarray, layer: str = "") -> np.ndarray:
    """One map of ``method`` for ``score`` (a :class:`ClassScore` or :class:`NerveScore`) at input ``x``
    (1, C, h, w); ``image`` is x's picture (h, w), ``layer`` the registry's explain_layer of the wrapped network.
    Runs in eval mode, and leaves the network there: a new wrapper starts in training mode, and MONAI's maps
    restore the mode they found, which would leave dropout on for every later prediction."""
    score.eval()
    if method == "occlusion":
        return occlusion_map(score, x, patch=max(8, x.shape[-1] // 8))
    if method == "gradcam":
        return gradcam_map(score, f"network.{layer}" if layer else "", x)  # the layer of the wrapped network
    if method == "lime":
        return lime_map(score, x, image)
    raise ValueError(f"unknown explanation method {method!r}; choose from {', '.join(METHODS)}")


_MAP_FILE = re.compile(r"^(?P<stem>.+?)(_f\d{4})?_(" + "|".join(METHODS) + r")\.(png|npy)$")


def map_stems(out_dir: Path) -> set:
    """The input stems whose maps a folder already holds (a clip's frames count for its stem): not given again."""
    return {m["stem"] for m in map(_MAP_FILE.match, (p.name for p in Path(out_dir).glob("*"))) if m}


def write_map_png(path: Path, image: np.ndarray, heat: np.ndarray, title: Sequence[str], evidence: str) -> None:
    """The map over the image: the image in grey, the map in colour where it is positive, a labelled colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import atomic_write

    shown = np.clip(heat, 0, None)
    top = float(shown.max())
    if top < NO_EVIDENCE:  # nothing moves the score: no colour, rather than noise stretched to look like evidence
        title = list(title) + ["(no region changes the score)"]
        shown, top = np.zeros_like(shown), 1.0
    figure, axis = plt.subplots(figsize=(4.6, 4.0))
    axis.imshow(image, cmap="gray")
    overlay = axis.imshow(np.ma.masked_less_equal(shown, 0.05 * top), cmap="inferno", alpha=0.55, vmin=0, vmax=top)
    bar = figure.colorbar(overlay, ax=axis, fraction=0.046, pad=0.03)
    bar.set_label(f"evidence for {evidence}", fontsize=8)
    axis.set_title("\n".join(title), fontsize=8)
    axis.axis("off")
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=100, format="png"))
    plt.close(figure)


def write_map(out_dir: Path, stem: str, method: str, image: np.ndarray, heat: np.ndarray, title: Sequence[str],
              evidence: str) -> str:
    """``<stem>_<method>.npy`` (the float map) and ``<stem>_<method>.png``; returns the .png's name."""
    from .io import atomic_write

    atomic_write(out_dir / f"{stem}_{method}.npy", lambda tmp: np.save(tmp, heat), ".npy")
    write_map_png(out_dir / f"{stem}_{method}.png", image, heat, title, evidence)
    return f"{stem}_{method}.png"


def explain_segmentation_files(paths: Sequence[Path], out_dir: Path, model, methods: Sequence[str], spacing_mm=None,
                               device: str = "cpu", log=print) -> list:
    """Maps of where a segmenter looked for each frame of each file (its :class:`NerveScore`), written to
    ``out_dir``; returns the failures, one line each (a file or frame that cannot be explained; the rest goes on)."""
    from .inference import Segmenter
    from .io import read_image
    from .models import MODEL_REGISTRY, is_detector
    from .pipeline import output_stems
    from .preprocess import resize, to_network_input

    segmenter = Segmenter(model, device, runtime="torch")  # the maps need PyTorch's gradients
    if is_detector(segmenter.info.architecture):
        raise ValueError(f"{segmenter.model_id}: explain does not support detectors (Mask R-CNN)")
    if segmenter.info.second_stage:
        raise ValueError(f"{segmenter.model_id}: a two-stage model; explain maps one network's view of the whole "
                         f"frame: explain its first stage ({segmenter.model_dir / 'first_stage'})")
    layer = MODEL_REGISTRY[segmenter.info.architecture].explain_layer
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = list(dict.fromkeys(Path(p).resolve() for p in paths))  # a file named twice is explained once
    stems, failures = output_stems(paths, map_stems(out_dir)), []
    for path in paths:
        try:
            image = read_image(path, spacing_mm)
        except ValueError as error:
            failures.append(str(error))
            continue
        for frame in range(image.n_frames):
            try:
                mask = segmenter.predict(image, frame).mask
                if not mask.any():
                    raise ValueError("no nerve found: nothing to explain")
                x = to_network_input(image.frame(frame), segmenter.info.input_size).to(segmenter.device).contiguous()
                region = resize(torch.from_numpy(mask.astype(np.float32))[None, None], segmenter.info.input_size) > 0.5
                score = NerveScore(segmenter.network, region.to(x.device))
                shown = x[0, 0].cpu().numpy()
                stem = stems[path] + (f"_f{frame:04d}" if image.n_frames > 1 else "")
                written = [write_map(out_dir, stem, method, shown, explanation(method, score, x, shown, layer),
                                     [f"{method}: {segmenter.model_id}", "nerve score: mean probability in its mask"],
                                     "the nerve") for method in methods]
                log(f"{path.name} frame {frame}: {', '.join(written)}")
            except (ValueError, ImportError) as error:
                failures.append(f"{path} frame {frame}: {error}")
    return failures
