"""Image/mask pairs on disk and patient-level splits (several images per patient)."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

DEFAULT_PATIENT_PATTERN = r"^(Pz\d+)"


@dataclass(frozen=True)
class Sample:
    image: Path
    mask: Path
    patient: str

    @property
    def stem(self) -> str:
        return self.image.stem


def patient_id(stem: str, pattern: str = DEFAULT_PATIENT_PATTERN) -> str:
    """Patient id from a file stem (PzNNN-MMM -> PzNNN); the whole stem when it does not match."""
    match = re.search(pattern, stem)
    return match.group(1) if match else stem


def list_samples(dataset_dir: Path, pattern: str = DEFAULT_PATIENT_PATTERN) -> List[Sample]:
    """Pairs images/<stem>.* with masks/<stem>.png; raises if the folder has no pairs."""
    dataset_dir = Path(dataset_dir)
    images, masks = dataset_dir / "images", dataset_dir / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise FileNotFoundError(f"{dataset_dir}: expected images/ and masks/ folders")
    samples = [Sample(path, masks / f"{path.stem}.png", patient_id(path.stem, pattern))
               for path in sorted(images.iterdir()) if (masks / f"{path.stem}.png").is_file()]
    if not samples:
        raise FileNotFoundError(f"{dataset_dir}: no image with a mask of the same name")
    return samples


def split_by_patient(samples: Sequence[Sample], val_fraction: float = 0.2,
                     seed: int = 0) -> Tuple[List[Sample], List[Sample]]:
    """Deterministic split in which no patient has images on both sides."""
    patients = sorted({s.patient for s in samples})
    random.Random(seed).shuffle(patients)
    n_val = max(1, round(len(patients) * val_fraction)) if len(patients) > 1 else 0
    val_patients = set(patients[:n_val])
    train = [s for s in samples if s.patient not in val_patients]
    val = [s for s in samples if s.patient in val_patients]
    return train, val
