"""A labelled-dataset store that grows as users save corrected masks.

Layout of the store folder::

    images/<id>.png            8-bit grayscale, written once per sample
    labels/<id>_v<N>.png       0/255 masks; a new label is a new version, never an overwrite
    provenance/<id>_v<N>.json  who saved which label, when, from which model
    store.json                 name, description, patient pattern, split settings and patient split
    datalist.json              MONAI decathlon-style list of the newest label of each image

Writes go image -> label -> provenance -> store.json (when it changes) -> datalist, each atomic
(temporary file + os.replace). A label version is committed once its provenance file exists; the
datalist is a cache of the committed versions and store.json, rebuilt whenever it misses one (e.g.
after a crash) or is damaged (kept as ``datalist.json.damaged-<time>``), and updated under an OS
file lock (``.lock``) so concurrent writers never lose a sample. Temporary files left by a killed
writer are removed, under the lock, when the store is opened.
"""

from __future__ import annotations

import hashlib
import io as _bytes_io
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
from PIL import Image

from .data import DEFAULT_PATIENT_PATTERN, SPLITS, Sample, assign_patients, list_pairs, list_samples, patient_id
from .io import FolderLock, atomic_write, read_image, read_mask, to_uint8
from .spacing import SpacingError, parse_spacing

PathLike = Union[str, Path]
DATALIST = "datalist.json"
META = "store.json"
META_KEYS = ("name", "description", "patient_pattern", "split_settings", "patient_split")
STALE_TMP_S = 60.0  # a temporary file this old belongs to no live writer (writes take well under a second)
LOCK_TIMEOUT_S = 60.0
PNG_COMPRESS_LEVEL = 3  # about 5x faster than Pillow's default 6 on ultrasound frames, ~10% larger
_VERSIONED = re.compile(r"^(.+)_v(\d+)\.json$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_TMP = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp")


@dataclass
class _Pending:
    """A label version ready to commit: image pixels, both PNG encodings and the provenance so far."""

    image: np.ndarray
    image_png: bytes
    label_png: bytes
    record: Dict[str, Any]


def _png(pixels: np.ndarray) -> bytes:
    buffer = _bytes_io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _write_json(path: Path, obj: Dict[str, Any]) -> None:
    _write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


def _safe_id(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("._") or f"img-{uuid.uuid4().hex[:12]}"


def _as_2d(array: np.ndarray, what: str) -> np.ndarray:
    array = np.squeeze(np.asarray(array))
    if array.ndim != 2:
        raise ValueError(f"{what} must be a 2D array, got shape {array.shape}")
    return array


def _as_mask(mask: Union[PathLike, np.ndarray], shape: Tuple[int, ...], what: str) -> np.ndarray:
    mask = _as_2d(read_mask(mask) if isinstance(mask, (str, Path)) else mask, what) != 0
    if mask.shape != shape:
        raise ValueError(f"{what} shape {mask.shape} differs from the image shape {shape}")
    return mask


def _entries(datalist: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    for name in SPLITS:
        yield from datalist.get(name, [])


def _is_datalist(obj: Any) -> bool:
    """An object whose splits are lists of entries with an id, label version and patient."""
    return isinstance(obj, dict) and all(
        isinstance(obj.get(name, []), list)
        and all(isinstance(e, dict) and {"id", "label_version", "patient"} <= e.keys() for e in obj.get(name, []))
        for name in SPLITS)


def _compose(meta: Dict[str, Any], entries: Iterable[Dict[str, Any]]) -> Dict[str, Any]:
    """A datalist of ``entries`` keeping the name, settings and patient splits of ``meta``."""
    entries = sorted(entries, key=lambda e: e["id"])
    settings = meta.get("split_settings")
    assignment = dict(meta.get("patient_split") or {})
    if settings:
        assignment = assign_patients({e["patient"] for e in entries}, assignment, **settings)
    lists = {name: [e for e in entries if assignment.get(e["patient"], "training") == name] for name in SPLITS}
    return {"name": meta.get("name") or "median-nerve", "description": meta.get("description") or "",
            "modality": {"0": "US"}, "labels": {"0": "background", "1": "median nerve"},
            "numTraining": len(lists["training"]), **lists,
            "patient_pattern": meta.get("patient_pattern") or DEFAULT_PATIENT_PATTERN,
            "split_settings": settings, "patient_split": assignment}


class LabelledDataset:
    """A folder of images, versioned labels, provenance and a MONAI datalist."""

    def __init__(self, folder: PathLike) -> None:
        self.folder = Path(folder)
        if not _is_store(self.folder):
            raise FileNotFoundError(f"{self.folder}: not a labelled dataset (no {DATALIST}); "
                                    "create one with `median-nerve-seg dataset init`")
        self._remove_stale_temp_files()
        self._datalist()

    @classmethod
    def init(cls, folder: PathLike, name: str = "median-nerve", description: str = "",
             patient_pattern: str = DEFAULT_PATIENT_PATTERN) -> "LabelledDataset":
        """Create the store in an empty (or new) folder; an existing store is opened unchanged."""
        folder = Path(folder)
        if _is_store(folder):
            return cls(folder)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise ValueError(f"{folder}: not empty and not a labelled dataset")
        datalist = _compose({"name": name, "description": description, "patient_pattern": patient_pattern}, [])
        _write_json(folder / META, _meta_of(datalist))
        _write_json(folder / DATALIST, datalist)
        for sub in ("images", "labels", "provenance"):
            (folder / sub).mkdir(exist_ok=True)
        return cls(folder)

    @property
    def datalist_path(self) -> Path:
        return self.folder / DATALIST

    # ------------------------------------------------------------------------- adding labels

    def add(self, image: Union[PathLike, np.ndarray], label: Union[PathLike, np.ndarray],
            patient: Optional[str] = None, sample_id: Optional[str] = None, source: str = "",
            author: str = "", model: str = "", model_version: str = "",
            ai_mask: Optional[Union[PathLike, np.ndarray]] = None, spacing_mm=None,
            note: str = "", refinement: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Save a label (a new version if the image is already stored); returns its provenance.

        ``refinement`` records how the label was refined with clicks (``refine.ClickSession.provenance``:
        the clicks that made it, every click made, the click model), None when it was not.

        ``spacing_mm`` is recorded unless the image file carries its own (DICOM, NRRD...); a new
        version without one keeps the stored image's. A label identical to the newest version is
        not stored again: that version's record comes back with ``"unchanged": True``.
        """
        pending = self._prepare(image, label, patient, sample_id, source, author, model,
                                model_version, ai_mask, spacing_mm, note, refinement)
        with self._lock():
            return self._commit(pending)

    def _prepare(self, image: Union[PathLike, np.ndarray], label: Union[PathLike, np.ndarray],
                 patient: Optional[str], sample_id: Optional[str], source: str, author: str,
                 model: str, model_version: str, ai_mask: Optional[Union[PathLike, np.ndarray]],
                 spacing_mm, note: str, refinement: Optional[Dict[str, Any]] = None) -> _Pending:
        given = parse_spacing(spacing_mm, "spacing_mm")
        if isinstance(image, (str, Path)):
            pixels, spacing = _pixels_and_spacing(Path(image), given)
            sample_id, source = sample_id or Path(image).name.split(".")[0], source or str(image)
        else:
            pixels, spacing = to_uint8(_as_2d(image, "image")), given
        sample_id = _safe_id(sample_id or "")
        truth = _as_mask(label, pixels.shape, f"label {label}" if isinstance(label, (str, Path)) else "label")
        record = {"id": sample_id, "version": None, "patient": patient or patient_id(sample_id, self._pattern()),
                  "source": source, "author": author, "saved_at": None, "model": model,
                  "model_version": model_version, "ai_dsc": None, "changed_pixels": None,
                  "spacing_mm": list(spacing) if spacing else None, "image_sha256": None,
                  "label_sha256": None, "label_area_px": int(truth.sum()), "note": note,
                  "refinement": dict(refinement) if refinement else None}
        if ai_mask is not None:
            from .evaluate import segmentation_metrics

            ai = _as_mask(ai_mask, pixels.shape, "AI mask")
            record["ai_dsc"] = float(segmentation_metrics(ai, truth)["dice"])
            record["changed_pixels"] = int(np.count_nonzero(ai != truth))
        label_png = _png(truth.astype(np.uint8) * 255)
        record["label_sha256"] = _sha256(label_png)
        return _Pending(pixels, _png(pixels), label_png, record)

    def _commit(self, pending: _Pending) -> Dict[str, Any]:
        """Write image (first version only), label, provenance, then the datalist; caller holds the lock."""
        datalist = self._reconciled()
        records = self._records()
        sample_id = pending.record["id"]
        versions = self._versions().get(sample_id, [])
        image_path = self.folder / "images" / f"{sample_id}.png"
        if versions:
            with Image.open(image_path) as stored:
                if not np.array_equal(np.asarray(stored), pending.image):
                    raise ValueError(f"sample {sample_id!r} already holds a different image; give another sample id")
            image_png = image_path.read_bytes()
        else:
            image_png = pending.image_png
        _refuse_another_patient(records.values(), _sha256(image_png), pending.record)
        newest = records.get((sample_id, max(versions))) if versions else None
        if newest is not None and newest["label_sha256"] == pending.record["label_sha256"]:
            return dict(newest, unchanged=True)
        if not versions:
            _write_bytes(image_path, image_png)
        version = max(versions, default=0) + 1
        _write_bytes(self.folder / "labels" / f"{sample_id}_v{version}.png", pending.label_png)
        spacing = pending.record["spacing_mm"] or (newest or {}).get("spacing_mm")
        record = dict(pending.record, version=version, image_sha256=_sha256(image_png), spacing_mm=spacing,
                      saved_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        _write_json(self.folder / "provenance" / f"{sample_id}_v{version}.json", record)
        entries = {e["id"]: e for e in _entries(datalist)}
        entries[sample_id] = _entry(record)
        self._write_datalist(_compose(self._meta(datalist), entries.values()))
        return record

    def import_folder(self, folder: PathLike, pattern: str = DEFAULT_PATIENT_PATTERN, author: str = "import",
                      spacing_mm=None) -> Dict[str, Any]:
        """Import images/ + masks/ pairs, going on past bad ones; a pair already stored is "unchanged".

        ``spacing_mm`` is recorded for images without their own. Returns the counts ``added`` and
        ``unchanged`` and ``failed``, a list of (image file, reason)."""
        spacing = parse_spacing(spacing_mm, "spacing_mm")
        samples, unpaired = list_pairs(Path(folder), pattern)
        if not samples and not unpaired:
            raise FileNotFoundError(f"{folder}: no image files in images/")
        failed: List[Tuple[str, str]] = [(str(p), f"no mask masks/{p.stem}.png") for p in unpaired]
        added = unchanged = 0
        for sample in samples:
            try:
                record = self.add(sample.image, sample.mask, patient=sample.patient, author=author,
                                  spacing_mm=spacing)
            except (ValueError, OSError) as error:
                failed.append((str(sample.image), str(error)))
                continue
            unchanged += bool(record.get("unchanged"))
            added += not record.get("unchanged")
        return {"added": added, "unchanged": unchanged, "failed": sorted(failed)}

    # ------------------------------------------------------------------------- splits

    def split(self, val_fraction: float = 0.2, test_fraction: float = 0.0, seed: int = 0) -> Dict[str, Any]:
        """Assign patients to training/validation/test (``data.assign_patients``); patients already assigned
        with these settings keep their split, and patients added later are assigned with them too.
        Returns the per-split counts."""
        settings = {"val_fraction": float(val_fraction), "test_fraction": float(test_fraction), "seed": int(seed)}
        with self._lock():
            datalist = self._reconciled()
            meta = self._meta(datalist)
            kept = meta.get("patient_split") if meta.get("split_settings") == settings else {}
            meta = dict(meta, split_settings=settings, patient_split=kept)
            self._write_datalist(_compose(meta, list(_entries(datalist))))
        return self.stats()["splits"]

    # ------------------------------------------------------------------------- reading

    def samples(self, split: Optional[str] = None) -> List[Sample]:
        """Image, newest label, patient and spacing (None when unknown) of every sample (or of one split)."""
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        datalist = self._datalist()
        entries = _entries(datalist) if split is None else datalist[split]
        return [Sample(self.folder / e["image"], self.folder / e["label"], e["patient"],
                       tuple(e["spacing_mm"]) if e.get("spacing_mm") else None) for e in entries]

    def stats(self) -> Dict[str, Any]:
        """Counts of images, patients and label versions, per split, mean label CSA (px, and mm^2 over the
        samples of known spacing) and who/what produced the labels."""
        datalist = self._datalist()
        records = self._records()
        listed = list(_entries(datalist))
        newest = [records[(e["id"], e["label_version"])] for e in listed]
        dscs = [r["ai_dsc"] for r in newest if r["ai_dsc"] is not None]
        areas_mm2 = [r["label_area_px"] * e["spacing_mm"][0] * e["spacing_mm"][1]
                     for r, e in zip(newest, listed) if e.get("spacing_mm")]
        return {
            "n_images": len(newest),
            "n_patients": len({r["patient"] for r in newest}),
            "n_label_versions": len(records),
            "splits": {name: {"images": len(datalist[name]), "patients": len({e["patient"] for e in datalist[name]})}
                       for name in SPLITS},
            "mean_csa_px": float(np.mean([r["label_area_px"] for r in newest])) if newest else None,
            "mean_csa_mm2": float(np.mean(areas_mm2)) if areas_mm2 else None,
            "n_unknown_spacing": len(newest) - len(areas_mm2),
            "ai_dsc_mean": float(np.mean(dscs)) if dscs else None,
            "authors": _counts(r["author"] or "unknown" for r in records.values()),
            "models": _counts(f"{r['model']}@{r['model_version']}" if r["model_version"] else r["model"]
                              for r in records.values() if r["model"]),
        }

    def rebuild(self) -> Dict[str, Any]:
        """Rewrite datalist.json from the committed provenance files and store.json (name, settings, splits)."""
        with self._lock():
            return self._rebuild(self._read())

    # ------------------------------------------------------------------------- internals

    def _lock(self) -> FolderLock:
        return FolderLock(self.folder / ".lock", "dataset", LOCK_TIMEOUT_S)

    def _pattern(self) -> str:
        return self._meta(self._read()).get("patient_pattern") or DEFAULT_PATIENT_PATTERN

    def _read(self) -> Optional[Dict[str, Any]]:
        """The datalist, or None when it is missing or damaged."""
        try:
            datalist = json.loads(self.datalist_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        return datalist if _is_datalist(datalist) else None

    def _meta(self, datalist: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        """Name, settings and patient split: store.json, else (an older store) the datalist's own."""
        try:
            meta = json.loads((self.folder / META).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            meta = None
        return meta if isinstance(meta, dict) else _meta_of(datalist or {})

    def _write_datalist(self, datalist: Dict[str, Any]) -> None:
        """store.json (when its content changes), then datalist.json; caller holds the lock."""
        meta = _meta_of(datalist)
        if self._meta(None) != meta or not (self.folder / META).is_file():
            _write_json(self.folder / META, meta)
        _write_json(self.datalist_path, datalist)

    def _versions(self) -> Dict[str, List[int]]:
        """Committed label versions of each sample id, from the provenance file names."""
        versions: Dict[str, List[int]] = {}
        folder = self.folder / "provenance"
        for name in sorted(os.listdir(folder)) if folder.is_dir() else []:
            match = _VERSIONED.match(name)
            if match:
                versions.setdefault(match.group(1), []).append(int(match.group(2)))
        return versions

    def _records(self) -> Dict[Tuple[str, int], Dict[str, Any]]:
        return {(sample_id, v): json.loads((self.folder / "provenance" / f"{sample_id}_v{v}.json").read_text("utf-8"))
                for sample_id, versions in self._versions().items() for v in versions}

    def _is_current(self, datalist: Optional[Dict[str, Any]]) -> bool:
        if datalist is None or not all("spacing_mm" in e for e in _entries(datalist)):
            return False
        listed = {e["id"]: e["label_version"] for e in _entries(datalist)}
        return listed == {sample_id: max(v) for sample_id, v in self._versions().items()}

    def _datalist(self) -> Dict[str, Any]:
        """The datalist, recovering committed samples that it misses (after a crash)."""
        datalist = self._read()
        if self._is_current(datalist):
            return datalist  # type: ignore[return-value]
        with self._lock():
            return self._reconciled()

    def _reconciled(self) -> Dict[str, Any]:
        """Like _datalist, for a caller holding the lock; a damaged datalist is kept aside, then rebuilt."""
        datalist = self._read()
        if self._is_current(datalist):
            return datalist  # type: ignore[return-value]
        if datalist is None and self.datalist_path.is_file():
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            os.replace(self.datalist_path, self.folder / f"{DATALIST}.damaged-{stamp}")
        return self._rebuild(datalist)

    def _rebuild(self, old: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        records = self._records()
        entries = [_entry(records[(sample_id, max(v))]) for sample_id, v in self._versions().items()]
        datalist = _compose(self._meta(old), entries)
        self._write_datalist(datalist)
        return datalist

    def _stale_temp_files(self) -> List[Path]:
        """Temporary files of an interrupted atomic write, older than STALE_TMP_S."""
        cutoff, stale = time.time() - STALE_TMP_S, []
        for folder in (self.folder, *(self.folder / sub for sub in ("images", "labels", "provenance"))):
            for entry in os.scandir(folder) if folder.is_dir() else ():
                try:
                    if _TMP.match(entry.name) and entry.is_file() and entry.stat().st_mtime < cutoff:
                        stale.append(Path(entry.path))
                except FileNotFoundError:  # a writer's temporary file moved into place meanwhile
                    continue
        return stale

    def _remove_stale_temp_files(self) -> None:
        if not self._stale_temp_files():
            return
        with self._lock():  # every write holds the lock: none is under way now
            for path in self._stale_temp_files():
                path.unlink()


def _pixels_and_spacing(path: Path, given: Optional[Tuple[float, float]]) -> Tuple[np.ndarray, Any]:
    """The first frame as uint8 and the file's own spacing; ``given`` where the file has none (or a bad one)."""
    try:
        read = read_image(path)
    except SpacingError:
        if given is None:
            raise
        read = read_image(path, spacing_mm=given)
    return to_uint8(read.frame(0)), read.spacing_mm or given


def _refuse_another_patient(records: Iterable[Dict[str, Any]], image_sha256: str, new: Dict[str, Any]) -> None:
    """One image belongs to one patient: the same image under another patient would leak across the split."""
    for stored in records:
        if stored["image_sha256"] == image_sha256 and stored["patient"] != new["patient"]:
            raise ValueError(f"{new['source'] or new['id']}: this image is already stored as sample "
                             f"{stored['id']!r} of patient {stored['patient']!r}; refusing it under patient "
                             f"{new['patient']!r} (it would be on both sides of the patient split)")


def _meta_of(datalist: Dict[str, Any]) -> Dict[str, Any]:
    return {key: datalist.get(key) for key in META_KEYS}


def fold_samples(dataset_dir: PathLike) -> List[Sample]:
    """Every sample patient folds are made of: a dataset store's training and validation samples (its test
    patients stay out), else the (image, mask) pairs of images/ and masks/."""
    folder = Path(dataset_dir)
    if not _is_store(folder):
        return list_samples(folder)
    store = LabelledDataset(folder)  # (a datalist lost is rebuilt from the provenance)
    samples = store.samples("training") + store.samples("validation")
    if not samples:
        raise ValueError(f"{folder}: the dataset store has no training or validation samples")
    return samples


def _is_store(folder: Path) -> bool:
    """A datalist, or provenance to rebuild it from."""
    return (folder / DATALIST).is_file() or (folder / "provenance").is_dir()


def _entry(record: Dict[str, Any]) -> Dict[str, Any]:
    """The datalist entry of a committed label version."""
    sample_id, version = record["id"], record["version"]
    return {"image": f"images/{sample_id}.png", "label": f"labels/{sample_id}_v{version}.png",
            "patient": record["patient"], "id": sample_id, "label_version": version,
            "spacing_mm": record.get("spacing_mm")}


def _counts(values: Iterable[str]) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items()))
