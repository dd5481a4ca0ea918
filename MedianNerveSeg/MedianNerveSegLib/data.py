"""Image/mask pairs on disk and patient-level splits (several images per patient)."""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

DEFAULT_PATIENT_PATTERN = r"^(Pz\d+)"
SPLITS = ("training", "validation", "test")


@dataclass(frozen=True)
class Sample:
    image: Path
    mask: Path
    patient: str
    spacing_mm: Optional[Tuple[float, float]] = None  # (row, col) mm/pixel; None when unknown

    @property
    def stem(self) -> str:
        return self.image.stem


def patient_id(stem: str, pattern: str = DEFAULT_PATIENT_PATTERN) -> str:
    """Patient id from a file stem (PzNNN-MMM -> PzNNN); the whole stem when it does not match."""
    match = re.search(pattern, stem)
    return match.group(1) if match else stem


def list_pairs(dataset_dir: Path, pattern: str = DEFAULT_PATIENT_PATTERN) -> Tuple[List[Sample], List[Path]]:
    """Pairs images/<stem>.* with masks/<stem>.png; also returns the images without a mask (hidden files ignored)."""
    dataset_dir = Path(dataset_dir)
    images, masks = dataset_dir / "images", dataset_dir / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise FileNotFoundError(f"{dataset_dir}: expected images/ and masks/ folders")
    files = [p for p in sorted(images.iterdir()) if p.is_file() and not p.name.startswith(".")]
    samples = [Sample(p, masks / f"{p.stem}.png", patient_id(p.stem, pattern))
               for p in files if (masks / f"{p.stem}.png").is_file()]
    unpaired = [p for p in files if not (masks / f"{p.stem}.png").is_file()]
    return samples, unpaired


def list_samples(dataset_dir: Path, pattern: str = DEFAULT_PATIENT_PATTERN) -> List[Sample]:
    """Pairs images/<stem>.* with masks/<stem>.png; raises if the folder has no pairs."""
    samples, _ = list_pairs(dataset_dir, pattern)
    if not samples:
        raise FileNotFoundError(f"{dataset_dir}: no image with a mask of the same name")
    seen: Dict[str, Path] = {}
    for sample in samples:
        if sample.stem in seen:
            raise ValueError(f"{seen[sample.stem]} and {sample.image.name} share the name {sample.stem!r} and one "
                             "mask: keep one of them (an image is known by its name)")
        seen[sample.stem] = sample.image
    return samples


def _patient_hash(patient: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{patient}".encode("utf-8")).hexdigest()


def assign_patients(patients: Iterable[str], assigned: Mapping[str, str], val_fraction: float = 0.2,
                    test_fraction: float = 0.0, seed: int = 0) -> Dict[str, str]:
    """THE patient split. A first assignment (nothing ``assigned`` yet) shuffles the sorted patients with
    ``random.Random(seed)`` and takes validation, then test, from the front (the rule that chose the
    shipped models' validation patients). Later, ``assigned`` patients keep their split and each new
    patient (in seeded-hash order) gets the split furthest below its share of all patients."""
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(f"val fraction {val_fraction} and test fraction {test_fraction} must be >= 0 "
                         "and sum to less than 1")
    if not assigned:
        return _first_assignment(sorted(set(patients)), val_fraction, test_fraction, seed)
    assignment = dict(assigned)
    new = sorted({p for p in patients if p not in assignment}, key=lambda p: _patient_hash(p, seed))
    total = len(assignment) + len(new)
    share = {"training": 1.0 - val_fraction - test_fraction, "validation": val_fraction, "test": test_fraction}
    counts = {name: 0 for name in SPLITS}
    for name in assignment.values():
        counts[name] += 1
    for patient in new:
        split = max(SPLITS, key=lambda s: (share[s] * total - counts[s], -SPLITS.index(s)))
        assignment[patient] = split
        counts[split] += 1
    return assignment


def _shuffled(patients: Iterable[str], seed: int) -> List[str]:
    """The sorted patients in the seeded order from which splits and folds are cut."""
    order = sorted(set(patients))
    random.Random(seed).shuffle(order)
    return order


def _first_assignment(patients: List[str], val_fraction: float, test_fraction: float, seed: int) -> Dict[str, str]:
    patients = _shuffled(patients, seed)
    n_val = max(1, round(len(patients) * val_fraction)) if len(patients) > 1 and val_fraction > 0 else 0
    n_test = round(len(patients) * test_fraction) if len(patients) > 2 else 0
    splits = ["validation"] * n_val + ["test"] * n_test
    return {p: splits[i] if i < len(splits) else "training" for i, p in enumerate(patients)}


def split_by_patient(samples: Sequence[Sample], val_fraction: float = 0.2,
                     seed: int = 0) -> Tuple[List[Sample], List[Sample]]:
    """Training and validation samples, no patient on both sides; the same patients as a dataset
    store's ``split(val_fraction, 0, seed)`` of these samples."""
    assignment = assign_patients({s.patient for s in samples}, {}, val_fraction, 0.0, seed)
    train = [s for s in samples if assignment[s.patient] == "training"]
    val = [s for s in samples if assignment[s.patient] == "validation"]
    return train, val


def patient_folds(samples: Sequence[Sample], folds: int = 5, seed: int = 0) -> List[Tuple[List[Sample], List[Sample]]]:
    """Patient-level k-fold cross-validation: (training, validation) samples of each fold, every patient validated
    in exactly one. The folds are consecutive blocks of :func:`split_by_patient`'s seeded patient order, so with
    seed 0 and 5 folds fold 0 holds the shipped models' validation patients."""
    patients = _shuffled((s.patient for s in samples), seed)
    if not 2 <= folds <= len(patients):
        raise ValueError(f"{folds} folds: patient folds need 2 or more folds and at least as many patients as folds "
                         f"({len(patients)} patients here)")
    bounds = [round(i * len(patients) / folds) for i in range(folds + 1)]
    fold_of = {p: f for f in range(folds) for p in patients[bounds[f]:bounds[f + 1]]}
    return [([s for s in samples if fold_of[s.patient] != f], [s for s in samples if fold_of[s.patient] == f])
            for f in range(folds)]
