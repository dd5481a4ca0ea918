"""Training / fine-tuning entry point: dataset folder -> model folder the Segmenter loads.

Images are loaded once at the network's input size; augmentation runs batched on the
training device, so one loop serves a 2-core laptop and a GPU.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from . import __version__
from .augment import AugmentConfig, augment, zscore
from .data import Sample, list_samples, split_by_patient
from .evaluate import csa_agreement, segmentation_metrics
from .inference import Segmenter, resolve_device
from .io import read_image, read_mask
from .models import build_model, count_parameters
from .preprocess import resize
from .zoo import ModelInfo, load_network, save_model


@dataclass
class TrainConfig:
    name: str = "median_nerve_unet"
    version: str = "1.0.0"
    architecture: str = "monai_unet"
    arch_kwargs: Dict[str, Any] = field(default_factory=dict)
    input_size: Tuple[int, int] = (288, 384)
    epochs: int = 200
    batch_size: int = 16
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 5
    ema_decay: float = 0.995  # per-step exponential moving average of the weights; 0 = off
    val_fraction: float = 0.2
    seed: int = 0
    val_every: int = 10
    spacing_mm: float = 0.062
    max_images: Optional[int] = None
    init_weights: Optional[str] = None  # fine-tune from this model folder
    device: str = "cpu"
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def _load_tensors(samples: Sequence[Sample], size: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Images scaled to [0, 1] and soft masks, both resized to ``size``."""
    images, masks = [], []
    for sample in samples:
        frame = read_image(sample.image).frame(0)
        low, high = float(frame.min()), float(frame.max())
        frame = (frame - low) / (high - low if high > low else 1.0)
        images.append(resize(torch.from_numpy(frame)[None, None], size))
        masks.append(resize(torch.from_numpy(read_mask(sample.mask).astype(np.float32))[None, None], size))
    return torch.cat(images), torch.cat(masks)


def _weight_average(network: torch.nn.Module, decay: float) -> AveragedModel:
    """EMA of weights and batch-norm statistics (decay 0: a plain copy of the latest weights)."""
    return AveragedModel(network, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _learning_rate(epoch: float, cfg: TrainConfig) -> float:
    if epoch < cfg.warmup_epochs:
        return cfg.learning_rate * (epoch + 1) / cfg.warmup_epochs
    progress = (epoch - cfg.warmup_epochs) / max(1, cfg.epochs - cfg.warmup_epochs)
    return 0.5 * cfg.learning_rate * (1 + math.cos(math.pi * progress))


def validate(segmenter: Segmenter, samples: Sequence[Sample], spacing_mm: float) -> Dict[str, Any]:
    """Patient-held-out metrics at the original resolution, with the Segmenter's post-processing."""
    spacing = (spacing_mm, spacing_mm)
    rows = []
    for sample in samples:
        image = read_image(sample.image, spacing_mm=spacing)
        prediction = segmenter.predict(image)
        rows.append({**segmentation_metrics(prediction.mask, read_mask(sample.mask), spacing),
                     "ms": prediction.milliseconds})
    dice = np.array([r["dice"] for r in rows])
    csa = csa_agreement([r["csa_pred_mm2"] for r in rows], [r["csa_gt_mm2"] for r in rows])
    return {"n_images": len(rows), "dice_mean": float(dice.mean()), "dice_sd": float(dice.std()),
            "dice_median": float(np.median(dice)), "found_rate": float((dice >= 0.5).mean()),
            "iou_mean": float(np.mean([r["iou"] for r in rows])),
            "csa_mae_mm2": csa["mae"], "csa_bias_mm2": csa["bias"], "csa_icc": csa["icc"],
            "ms_mean": float(np.mean([r["ms"] for r in rows]))}


def train(dataset_dir: Path, out_dir: Path, cfg: TrainConfig,
          log: Callable[[str], None] = print) -> ModelInfo:
    """Train on a patient-level split of ``dataset_dir`` and write a model folder to ``out_dir``."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    samples = list_samples(dataset_dir)[: cfg.max_images]
    train_samples, val_samples = split_by_patient(samples, cfg.val_fraction, cfg.seed)
    log(f"{len(train_samples)} training images, {len(val_samples)} validation images "
        f"({len({s.patient for s in val_samples})} held-out patients)")
    images, masks = (t.to(device) for t in _load_tensors(train_samples, cfg.input_size))

    info = ModelInfo(name=cfg.name, architecture=cfg.architecture, version=cfg.version,
                     arch_kwargs=cfg.arch_kwargs, input_size=tuple(cfg.input_size))
    if cfg.init_weights:
        network, _ = load_network(Path(cfg.init_weights), device)
    else:
        network = build_model(cfg.architecture, **cfg.arch_kwargs).to(device)
    averaged = _weight_average(network, cfg.ema_decay)
    optimizer = torch.optim.AdamW(network.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    dice_loss = DiceLoss(sigmoid=True)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    history: List[Dict[str, Any]] = []
    start = time.time()
    for epoch in range(cfg.epochs):
        network.train()
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(epoch, cfg)
        losses = []
        for batch in torch.randperm(len(images), device=device).split(cfg.batch_size):
            if len(batch) < 2:  # batch norm needs two samples
                continue
            x, y = augment(images[batch], masks[batch], cfg.augment)
            with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=device != "cpu"):
                logits = network(zscore(x)).float()
            loss = F.binary_cross_entropy_with_logits(logits, y) + dice_loss(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            averaged.update_parameters(network)
            losses.append(loss.item())
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": optimizer.param_groups[0]["lr"],
               "seconds": round(time.time() - start, 1)}
        if val_samples and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs):
            row.update(validate(Segmenter.from_network(averaged.module, info, device), val_samples, cfg.spacing_mm))
        history.append(row)
        log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))

    info.metrics = {k: v for k, v in history[-1].items() if k not in ("loss", "lr", "seconds", "epoch")}
    info.training = {
        "dataset": str(dataset_dir), "n_train_images": len(train_samples), "n_val_images": len(val_samples),
        "val_patients": sorted({s.patient for s in val_samples}), "epochs": cfg.epochs,
        "seconds": round(time.time() - start, 1), "device": device, "parameters": count_parameters(network),
        "package_version": __version__, "config": {k: v for k, v in asdict(cfg).items() if k != "device"},
    }
    save_model(out_dir, averaged.module.cpu(), info)
    _write_history(out_dir / "training_log.csv", history)
    return info


def _write_history(path: Path, history: List[Dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(k for row in history for k in row))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def config_from_json(path: Optional[Path], **overrides: Any) -> TrainConfig:
    """A TrainConfig from a JSON file (optional) and command-line overrides (None = keep)."""
    data = json.loads(Path(path).read_text()) if path else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    if "augment" in data and isinstance(data["augment"], dict):
        data["augment"] = AugmentConfig(**data["augment"])
    return TrainConfig(**data)
