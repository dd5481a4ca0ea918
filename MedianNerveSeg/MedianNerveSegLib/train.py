"""Training / fine-tuning entry point: dataset folder -> model folder the Segmenter loads.

Images are loaded once at the network's input size; augmentation runs batched on the
training device, so one loop serves a 2-core laptop and a GPU.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss, LogHausdorffDTLoss
from torch.optim.swa_utils import AveragedModel

from . import __version__
from .augment import AugmentConfig, augment, zscore
from .data import Sample, list_samples, patient_folds, split_by_patient
from .evaluate import csa_agreement, segmentation_metrics
from .progress import report
from .inference import Segmenter, resolve_device
from .io import read_image, read_mask
from .models import build_model, count_parameters, is_classifier, is_click_model, is_detector
from .preprocess import resize
from .spacing import parse_spacing
from .zoo import ModelInfo, load_info, load_network, resolve_model, save_model


@dataclass
class ClickTrainConfig:
    """Click models only (:mod:`click_training`): how the masks that clicks correct are made and clicked."""

    encoding: Dict[str, Any] = field(default_factory=dict)  # clicks.ClickEncoding's settings; {}: its defaults
    initial_model: Optional[str] = "median_nerve_unet"  # the segmenter whose masks clicks start from; None: none
    ai_fraction: float = 0.4  # share of training items that start from the segmenter's mask
    max_rounds: int = 3  # simulated clicks (without gradient) before the one trained on: 0 to max_rounds
    repeats: int = 2  # training items per image and epoch, each with its own simulated error
    val_clicks: int = 3  # validation: the mean DSC after this many simulated clicks is the model's dice_mean


@dataclass
class ClassifierTrainConfig:
    """Classifiers only (:mod:`classifier_training`): the labels and the crop (Shinohara et al. 2022)."""

    labels: Optional[str] = None  # a CSV of diagnoses: image or patient, label (CTS / control)
    surrogate_csa_mm2: Optional[float] = None  # without labels: expert CSA >= this (a surrogate, not a diagnosis)
    weights: Optional[str] = None  # weights of the same network that the user has, loaded where they fit
    crop_mm: float = 15.0
    segmenter: str = "median_nerve_unet"  # the model whose nerve classify centres its crop on


SECOND_STAGE_INPUT_SIZE = (128, 256)  # an 8 x 16 mm window at 0.0625 mm a pixel (the dataset's is 0.062)


@dataclass
class SecondStageTrainConfig:
    """Two-stage models only (:mod:`second_stage_training`): the first model, and the window the second re-segments."""

    first_stage: Optional[str] = None  # a model name or folder; None: not a two-stage model
    window_mm: Tuple[float, float] = (8.0, 16.0)  # rows, columns (second_stage.WINDOW_MM)


@dataclass
class TrainConfig:
    name: str = "median_nerve_unet"
    version: str = "1.0.0"
    architecture: str = "monai_unet"
    arch_kwargs: Dict[str, Any] = field(default_factory=dict)
    input_size: Tuple[int, int] = (288, 384)
    epochs: int = 200
    batch_size: int = 16
    optimizer: str = "adamw"  # adamw | adam | sgd (momentum 0.9)
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    scheduler: str = "cosine"  # cosine (with warm-up) | plateau (on a validation-Dice plateau)
    plateau_factor: float = 0.5  # plateau: lr multiplier
    plateau_patience: int = 2  # plateau: validations without improvement before lowering the lr
    warmup_epochs: int = 5
    loss: str = "bce_dice"  # bce_dice | dice | bce_dice_hd (a boundary-aware term added: _loss_function)
    ema_decay: float = 0.995  # per-step exponential moving average of the weights; 0 = off
    early_stopping: int = 0  # stop after this many validations without a better Dice; 0 = off
    keep_best: bool = False  # save the best-validation-Dice weights instead of the last
    val_fraction: float = 0.2
    seed: int = 0
    folds: int = 0  # patient-level cross-validation: with N > 0, validate on fold ``fold`` of N (data.patient_folds)
    fold: int = 0
    val_every: int = 10
    spacing_mm: Optional[Any] = None  # mm (a number or (row, col)) for every sample; None: each sample's own
    max_images: Optional[int] = None
    time_budget_s: Optional[float] = None  # stop before the next epoch would end past this many seconds
    init_weights: Optional[str] = None  # fine-tune from this model folder
    device: str = "cpu"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    clicks: ClickTrainConfig = field(default_factory=ClickTrainConfig)
    classifier: ClassifierTrainConfig = field(default_factory=ClassifierTrainConfig)
    second_stage: SecondStageTrainConfig = field(default_factory=SecondStageTrainConfig)


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
    """EMA of weights and batch-norm statistics (decay 0: a plain copy of the latest weights).

    The decay warms up as (1 + n) / (10 + n) after n updates, so a short run (a time budget,
    a quick fine-tune) is not left holding mostly its initial weights.
    """
    def average(averaged: torch.Tensor, current: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        rate = min(decay, (1.0 + float(updates)) / (10.0 + float(updates)))
        return rate * averaged + (1.0 - rate) * current

    return AveragedModel(network, avg_fn=average, use_buffers=True)


def _learning_rate(epoch: float, cfg: TrainConfig) -> float:
    if epoch < cfg.warmup_epochs:
        return cfg.learning_rate * (epoch + 1) / cfg.warmup_epochs
    progress = (epoch - cfg.warmup_epochs) / max(1, cfg.epochs - cfg.warmup_epochs)
    return 0.5 * cfg.learning_rate * (1 + math.cos(math.pi * progress))


def sample_spacing(sample: Sample, spacing_mm: Any = None) -> Optional[Tuple[float, float]]:
    """The spacing to measure ``sample`` at: ``spacing_mm`` (the user's, for every sample) when given,
    else the sample's own (a store's record; None when unknown)."""
    if spacing_mm is not None:
        return parse_spacing(spacing_mm, "--spacing")
    return getattr(sample, "spacing_mm", None)


def validate(segmenter: Segmenter, samples: Sequence[Sample], spacing_mm: Any = None) -> Dict[str, Any]:
    """Patient-held-out metrics at the original resolution, with the Segmenter's post-processing.

    Each sample is measured at :func:`sample_spacing` (or its file's own spacing); the CSA figures
    cover the ``csa_n_images`` samples of known spacing and are None when there is none."""
    rows = []
    for sample in samples:
        image = read_image(sample.image, spacing_mm=sample_spacing(sample, spacing_mm))
        prediction = segmenter.predict(image)
        rows.append({**segmentation_metrics(prediction.mask, read_mask(sample.mask), image.spacing_mm),
                     "ms": prediction.milliseconds, "spacing_known": image.spacing_mm is not None})
    dice = np.array([r["dice"] for r in rows])
    measured = [r for r in rows if r["spacing_known"]]
    csa = (csa_agreement([r["csa_pred_mm2"] for r in measured], [r["csa_gt_mm2"] for r in measured])
           if measured else {"mae": None, "bias": None, "icc": None})
    return {"n_images": len(rows), "dice_mean": float(dice.mean()), "dice_sd": float(dice.std()),
            "dice_median": float(np.median(dice)), "found_rate": float((dice >= 0.5).mean()),
            "iou_mean": float(np.mean([r["iou"] for r in rows])), "csa_n_images": len(measured),
            "csa_mae_mm2": csa["mae"], "csa_bias_mm2": csa["bias"], "csa_icc": csa["icc"],
            "ms_mean": float(np.mean([r["ms"] for r in rows]))}


MIN_FOUND_RATE = 0.5  # a model that finds the nerve in fewer validation images has failed


def failure(metrics: Dict[str, Any]) -> Optional[str]:
    """Why the validation ``metrics`` show a failed model (one line), or None (passed, or not validated)."""
    found = metrics.get("found_rate")
    if found is None or found >= MIN_FOUND_RATE:
        return None
    return (f"the nerve was found (DSC >= 0.5) in {found:.0%} of the {metrics.get('n_images')} validation "
            f"images, under {MIN_FOUND_RATE:.0%} (validation DSC {metrics.get('dice_mean', 0):.3f})")


def _optimizer(network: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params, lr, wd = network.parameters(), cfg.learning_rate, cfg.weight_decay
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer '{cfg.optimizer}' (adamw, adam, sgd)")


# bce_dice_hd's weight of the Hausdorff term: on a trained small model's validation batch, log(HD loss + 1) is about
# 0.3 and BCE + Dice about 0.16, so at 0.5 the two weigh about the same, as Karimi & Salcudean weigh theirs
HAUSDORFF_WEIGHT = 0.5


def _loss_function(cfg: TrainConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """BCE + Dice, Dice, or BCE + Dice + HAUSDORFF_WEIGHT x log(1 + Hausdorff distance-transform loss).

    The last weighs each pixel's error by its squared distance to the predicted and the true boundary, so a
    neighbouring blob taken or a flat end left out costs far more than a pixel's slip along the contour
    (Karimi & Salcudean, "Reducing the Hausdorff distance in medical image segmentation with convolutional
    neural networks", IEEE TMI 2020; MONAI's LogHausdorffDTLoss, the log keeping an untrained model's huge
    distances from swamping the other terms). Its distance transforms run in SciPy on the CPU, even when training
    on a GPU: about 0.5 s a batch of 16 at 288 x 384 on 2 CPU cores. Cross-validated from scratch it made the small
    recipe much worse (it learns to miss the nerve: docs/benchmarks/cross_validation.md); no shipped model uses it."""
    dice = DiceLoss(sigmoid=True)

    def bce_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, target) + dice(logits, target)

    if cfg.loss == "dice":
        return dice
    if cfg.loss == "bce_dice":
        return bce_dice
    if cfg.loss == "bce_dice_hd":
        hausdorff = LogHausdorffDTLoss(include_background=True, sigmoid=True)  # one channel: the nerve
        return lambda logits, target: bce_dice(logits, target) + HAUSDORFF_WEIGHT * hausdorff(logits, target)
    raise ValueError(f"unknown loss '{cfg.loss}' (bce_dice, dice, bce_dice_hd)")


def split_samples(dataset_dir: Path, cfg: TrainConfig) -> Tuple[List[Sample], List[Sample]]:
    """Training and validation samples: with ``cfg.folds``, fold ``cfg.fold`` of the patient folds (of a store's
    training and validation samples); else a dataset store's own split, or a patient split of images/ + masks/."""
    from .dataset import LabelledDataset, _is_store

    store = LabelledDataset(dataset_dir) if _is_store(Path(dataset_dir)) else None
    if cfg.fold and not cfg.folds:
        raise ValueError(f"--fold {cfg.fold} needs --folds N (the number of patient folds)")
    if cfg.folds:
        if not 0 <= cfg.fold < cfg.folds:
            raise ValueError(f"--fold {cfg.fold}: folds are numbered 0 to {cfg.folds - 1}")
        from .dataset import fold_samples

        return patient_folds(fold_samples(dataset_dir)[: cfg.max_images], cfg.folds, cfg.seed)[cfg.fold]
    if store:
        return store.samples("training")[: cfg.max_images], store.samples("validation")
    return split_by_patient(list_samples(dataset_dir)[: cfg.max_images], cfg.val_fraction, cfg.seed)


def _build_network(cfg: TrainConfig, device: str) -> torch.nn.Module:
    if cfg.init_weights:
        network, info = load_network(resolve_model(cfg.init_weights), device)
        if info.architecture != cfg.architecture:
            raise ValueError(f"--init-weights is a '{info.architecture}' model, not '{cfg.architecture}'")
        return network
    return build_model(cfg.architecture, **cfg.arch_kwargs).to(device)


class _Epochs:
    """Learning-rate schedule, best-weights bookkeeping and early stopping."""

    def __init__(self, cfg: TrainConfig, optimizer: torch.optim.Optimizer):
        self.cfg, self.optimizer = cfg, optimizer
        self.best_dice, self.best_state, self.stale = -1.0, None, 0
        self.plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.plateau_factor,
                                                                   patience=cfg.plateau_patience)
                        if cfg.scheduler == "plateau" else None)
        if cfg.scheduler not in ("cosine", "plateau"):
            raise ValueError(f"unknown scheduler '{cfg.scheduler}' (cosine, plateau)")

    def start(self, epoch: int) -> None:
        if self.plateau is None:
            for group in self.optimizer.param_groups:
                group["lr"] = _learning_rate(epoch, self.cfg)
        elif epoch < self.cfg.warmup_epochs:
            for group in self.optimizer.param_groups:
                group["lr"] = self.cfg.learning_rate * (epoch + 1) / self.cfg.warmup_epochs

    def validated(self, dice: float, network: torch.nn.Module) -> bool:
        """Record a validation Dice; True when training should stop early."""
        if self.plateau is not None:
            self.plateau.step(dice)
        if dice > self.best_dice:
            self.best_dice, self.stale = dice, 0
            if self.cfg.keep_best:
                self.best_state = copy.deepcopy(network.state_dict())
        else:
            self.stale += 1
        return 0 < self.cfg.early_stopping <= self.stale


def _distributed(device: str) -> Tuple[int, int, str]:
    """(rank, world size, device): one process per GPU (or CPU) under torchrun, else (0, 1, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    import torch.distributed as dist

    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), world, device


def _from_rank0(value: float, world: int, device: str) -> float:
    """Rank 0's value on every rank, so that all ranks take the same decisions (epoch count from
    rank 0's clock, its stop callback, its validation Dice: batch-norm statistics differ slightly)."""
    if world == 1:
        return value
    import torch.distributed as dist

    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def _clock() -> float:
    """Seconds of a monotonic clock (one place, so that tests can replace it)."""
    return time.monotonic()


class _TimeBudget:
    """``--time-budget``: the schedule fitted to the epochs that the first one says fit, and a stop
    when the next epoch (at the mean epoch time so far) would end past the budget."""

    def __init__(self, seconds: Optional[float]):
        self.seconds, self.start = seconds, _clock()

    def elapsed(self) -> float:
        return _clock() - self.start

    def fitted(self, cfg: TrainConfig) -> TrainConfig:
        """After epoch 1: at most the epochs that fit, the warm-up a tenth of them at most."""
        epochs = max(1, min(cfg.epochs, int(self.seconds / max(self.elapsed(), 1e-9))))
        return replace(cfg, epochs=epochs, warmup_epochs=min(cfg.warmup_epochs, epochs // 10))

    def allows_another(self, epochs_done: int) -> bool:
        if not self.seconds:
            return True
        elapsed = self.elapsed()
        return elapsed + elapsed / epochs_done <= self.seconds


def _train_epoch(trainer, averaged, optimizer, loss_fn, recipe, cfg: TrainConfig, device: str,
                 epoch: int, rank: int = 0, world: int = 1) -> float:
    """One pass over this rank's shard of an epoch-seeded permutation (the same on every rank)."""
    trainer.train()
    own_loss = is_detector(cfg.architecture)  # Mask R-CNN: forward(x, masks) returns its loss
    order = torch.randperm(len(recipe), generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
    order = order[: len(order) - len(order) % world]  # equal shards: every rank takes the same steps
    losses = []
    for batch in order[rank::world].to(device).split(cfg.batch_size):
        if len(batch) < 2:  # batch norm needs two samples
            continue
        x, y = recipe.batch(trainer, batch)
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=device != "cpu"):
            output = trainer(x, y) if own_loss else trainer(x)
        loss = output.float() if own_loss else loss_fn(output.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        averaged.update_parameters(trainer.module if world > 1 else trainer)
        losses.append(loss.item())
    return float(np.mean(losses)) if losses else float("nan")


class Recipe:
    """What ``train`` asks of a kind of model: the number of training items, each batch's network input and
    target, the loss, the model's card, and the validation metrics, of which ``score_key`` is the one that keeps
    the best weights, stops early and says whether training failed."""

    score_key = "dice_mean"

    def __init__(self, cfg: TrainConfig, device: str, train_samples: Sequence[Sample],
                 val_samples: Sequence[Sample], log: Callable[[str], None]):
        self.cfg, self.device, self.val_samples = cfg, device, val_samples

    def loss_function(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return _loss_function(self.cfg)

    def prepare(self, network: torch.nn.Module) -> torch.nn.Module:
        """The network built for training, before its first step (a variant may load weights into it)."""
        return network

    def check_out(self, out_dir: Path) -> None:
        """Before training: a variant may refuse an output folder (ValueError)."""

    def written(self, out_dir: Path) -> None:
        """After the model folder is written (a variant may add to it)."""

    def info(self) -> ModelInfo:
        cfg = self.cfg
        return ModelInfo(name=cfg.name, architecture=cfg.architecture, version=cfg.version,
                         arch_kwargs=cfg.arch_kwargs, input_size=tuple(cfg.input_size))


class SegmenterRecipe(Recipe):
    """How a segmenter learns: frames resized once to the input size, augmented in batches on the training
    device, validated by segmenting the held-out frames. :class:`click_training.ClickRecipe` and
    :class:`classifier_training.ClassifierRecipe` are the click models' and the classifiers' variants."""

    def __init__(self, cfg: TrainConfig, device: str, train_samples: Sequence[Sample],
                 val_samples: Sequence[Sample], log: Callable[[str], None]):
        super().__init__(cfg, device, train_samples, val_samples, log)
        self.images, self.masks = (t.to(device) for t in _load_tensors(train_samples, cfg.input_size))

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, trainer: torch.nn.Module, indices: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x, y = augment(self.images[indices], self.masks[indices], self.cfg.augment)
        return zscore(x), y

    def validate(self, network: torch.nn.Module, info: ModelInfo) -> Dict[str, Any]:
        return validate(Segmenter.from_network(network, info, self.device), self.val_samples, self.cfg.spacing_mm)


def _recipe(cfg: TrainConfig):
    if cfg.second_stage.first_stage:
        from .second_stage_training import SecondStageRecipe

        return SecondStageRecipe
    if is_click_model(cfg.architecture):
        from .click_training import ClickRecipe

        return ClickRecipe
    if is_classifier(cfg.architecture):
        from .classifier_training import ClassifierRecipe

        return ClassifierRecipe
    return SegmenterRecipe


def train(dataset_dir: Path, out_dir: Path, cfg: TrainConfig, log: Callable[[str], None] = print,
          stop: Optional[Callable[[], bool]] = None) -> ModelInfo:
    """Train on ``dataset_dir`` (a dataset store, or images/ + masks/ split by patient) and write a
    model folder to ``out_dir``. ``stop()`` returning True ends training after the current epoch.
    A model that fails validation (:func:`failure`) is still written, with ``metrics["failed"]``.

    Under torchrun each process trains on its shard of every epoch (DistributedDataParallel);
    every rank validates the same weights, so all take the same decisions, and rank 0 writes.
    """
    rank, world, device = _distributed(resolve_device(cfg.device))
    torch.manual_seed(cfg.seed)
    train_samples, val_samples = split_samples(Path(dataset_dir), cfg)
    if not train_samples:
        raise ValueError(f"{dataset_dir}: no training samples")
    log(f"{len(train_samples)} training images, {len(val_samples)} validation images "
        f"({len({s.patient for s in val_samples})} held-out patients)")
    if cfg.folds and not cfg.name.endswith(f"_fold{cfg.fold}"):  # the models of a cross-validation, told apart
        cfg = replace(cfg, name=f"{cfg.name}_fold{cfg.fold}")
    recipe = _recipe(cfg)(cfg, device, train_samples, val_samples, log)
    recipe.check_out(Path(out_dir))
    info = recipe.info()
    network = recipe.prepare(_build_network(cfg, device))
    trainer = network
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        trainer = DistributedDataParallel(network, device_ids=[device] if device.startswith("cuda") else None)
    averaged = _weight_average(network, cfg.ema_decay)
    optimizer, loss_fn = _optimizer(network, cfg), recipe.loss_function()
    epochs = _Epochs(cfg, optimizer)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    logger = _TrainingLogger(out_dir, log if rank == 0 else (lambda _: None), write=rank == 0,
                             score_key=recipe.score_key)
    budget = _TimeBudget(cfg.time_budget_s)
    for epoch in range(cfg.epochs):
        epochs.start(epoch)
        loss = _train_epoch(trainer, averaged, optimizer, loss_fn, recipe, cfg, device, epoch, rank, world)
        if epoch == 0 and cfg.time_budget_s:
            fitted = budget.fitted(cfg)
            cfg = replace(fitted, epochs=int(_from_rank0(fitted.epochs, world, device)),
                          warmup_epochs=int(_from_rank0(fitted.warmup_epochs, world, device)))
            epochs.cfg = cfg
            logger.log(f"time budget {cfg.time_budget_s:.0f} s: at most {cfg.epochs} epochs")
        row = {"epoch": epoch + 1, "loss": loss, "lr": optimizer.param_groups[0]["lr"],
               "seconds": round(budget.elapsed(), 1)}
        ending = bool(stop and stop()) or not budget.allows_another(epoch + 1)
        last = epoch + 1 == cfg.epochs or bool(_from_rank0(int(ending), world, device))
        early = False
        if val_samples and ((epoch + 1) % cfg.val_every == 0 or last):
            row.update(recipe.validate(averaged.module, info))
            if row.get(recipe.score_key) is not None:  # None: e.g. a classifier's held-out images of one class
                early = epochs.validated(_from_rank0(row[recipe.score_key], world, device), averaged.module)
        logger.epoch(row)
        if rank == 0:
            report("train", epoch + 1, cfg.epochs, loss=loss,
                   **({recipe.score_key: row[recipe.score_key]} if row.get(recipe.score_key) is not None else {}))
        if last or early:
            break

    if epochs.best_state is not None:
        averaged.module.load_state_dict(epochs.best_state)
    info.metrics = logger.final_metrics(best=epochs.best_state is not None)
    reason = failure(info.metrics)
    if reason:
        info.metrics["failed"] = reason
        logger.log(f"training failed: {reason}")
    info.training = {
        "dataset": str(dataset_dir), "n_train_images": len(train_samples), "n_val_images": len(val_samples),
        "train_patients": sorted({s.patient for s in train_samples}),
        "val_patients": sorted({s.patient for s in val_samples}), "epochs": len(logger.history),
        "seconds": round(budget.elapsed(), 1), "device": device, "processes": world,
        "parameters": count_parameters(network), "package_version": __version__,
        "config": {k: v for k, v in asdict(cfg).items() if k != "device"},
    }
    if rank == 0:
        save_model(out_dir, averaged.module.cpu(), info)
        recipe.written(out_dir)
        logger.close()
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return info


class _TrainingLogger:
    """Per-epoch rows to the log callback, training_log.csv (rewritten each epoch, so a GUI
    can follow it), TensorBoard when installed, and learning_curve.png at the end."""

    def __init__(self, out_dir: Path, log: Callable[[str], None], write: bool = True, score_key: str = "dice_mean"):
        self.out_dir, self.log, self.history, self.write, self.score_key = out_dir, log, [], write, score_key
        self.board = None
        if write:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.board = SummaryWriter(str(out_dir / "tensorboard"))
            except ImportError:
                pass

    def epoch(self, row: Dict[str, Any]) -> None:
        self.history.append(row)
        self.log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if not self.write:
            return
        columns = list(dict.fromkeys(k for r in self.history for k in r))
        with open(self.out_dir / "training_log.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.history)
        if self.board is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.board.add_scalar(key, value, row["epoch"])

    def final_metrics(self, best: bool) -> Dict[str, Any]:
        validated = [r for r in self.history if self.score_key in r]
        if not validated:
            return {}
        row = max(validated, key=lambda r: r[self.score_key]) if best else validated[-1]
        return {k: v for k, v in row.items() if k not in ("loss", "lr", "seconds")}

    def close(self) -> None:
        if self.board is not None:
            self.board.close()
        plot_learning_curve(self.history, self.out_dir / "learning_curve.png", self.score_key)


SCORE_LABELS = {"dice_mean": "validation Dice (mean)", "auc": "validation ROC AUC"}


def plot_learning_curve(history: Sequence[Dict[str, Any]], path: Path, score_key: str = "dice_mean") -> None:
    """Training loss and the validation score (Dice, or a classifier's ROC AUC) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, loss_axis = plt.subplots(figsize=(7, 4))
    loss_axis.plot([r["epoch"] for r in history], [r["loss"] for r in history], color="tab:blue")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss", color="tab:blue")
    validated = [r for r in history if r.get(score_key) is not None]
    if validated:
        score_axis = loss_axis.twinx()
        score_axis.plot([r["epoch"] for r in validated], [r[score_key] for r in validated], "o-", color="tab:red")
        clicks = validated[-1].get("clicks")  # a click model: DSC after that many simulated clicks
        score_axis.set_ylabel(SCORE_LABELS[score_key] + (f" after {clicks} clicks" if clicks else ""), color="tab:red")
        score_axis.set_ylim(0, 1)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


FINE_TUNE_LR_FACTOR = 0.1  # of the recipe's rate: adapt the weights, do not relearn them


def config_from_json(path: Optional[Path], **overrides: Any) -> TrainConfig:
    """A TrainConfig from a JSON file (optional) and command-line overrides (None = keep).

    Fine-tuning (init_weights) keeps the network and input size of the model it starts from, at a
    tenth of the recipe's learning rate unless the overrides name one."""
    data = json.loads(Path(path).read_text()) if path else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    data.update(given)
    if data.get("init_weights"):
        data["init_weights"] = str(resolve_model(data["init_weights"]))  # a model name or folder
        start = load_info(Path(data["init_weights"]))
        for key, value in (("architecture", start.architecture), ("arch_kwargs", start.arch_kwargs),
                           ("input_size", list(start.input_size))):
            data.setdefault(key, value)
        if start.click_encoding and isinstance(data.setdefault("clicks", {}), dict):  # a click model: its crops
            data["clicks"].setdefault("encoding", start.click_encoding)
        if "learning_rate" not in given:
            data["learning_rate"] = FINE_TUNE_LR_FACTOR * data.get("learning_rate", TrainConfig.learning_rate)
    if "augment" in data and isinstance(data["augment"], dict):
        data["augment"] = AugmentConfig(**data["augment"])
    if "clicks" in data and isinstance(data["clicks"], dict):
        data["clicks"] = ClickTrainConfig(**data["clicks"])
    if "classifier" in data and isinstance(data["classifier"], dict):
        data["classifier"] = ClassifierTrainConfig(**data["classifier"])
    if "second_stage" in data and isinstance(data["second_stage"], dict):
        data["second_stage"] = SecondStageTrainConfig(**data["second_stage"])
        if data["second_stage"].first_stage:
            data.setdefault("input_size", SECOND_STAGE_INPUT_SIZE)
    return TrainConfig(**data)
