"""CTS from the image without its CSA (Shinohara et al. 2022): a 15 x 15 mm crop centred on the nerve that the
segmenter finds -> a classifier -> the probability of the positive class.

The crop has the same physical size on every scanner (from the pixel spacing: an image without one is refused),
resampled to the classifier's input size. A classifier carries its two class names and how its training labels
were made (:class:`ClassifierSettings`): a model trained on the shared dataset's surrogate label calls an
"enlarged nerve (expert CSA >= 10 mm^2)", never CTS. Labels come from a CSV of diagnoses
(:func:`read_labels`) or from that surrogate rule (:func:`surrogate_labels`).
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .clicks import Crop
from .image import UltrasoundImage
from .inference import Segmenter, check_frame, resolve_device
from .models import is_classifier
from .preprocess import normalize, resize_array
from .zoo import DEFAULT_CLASSIFIER, DEFAULT_MODEL, ModelFolderError, ModelInfo, load_info, load_network, resolve_model

if TYPE_CHECKING:
    import torch

    from .data import Sample

PathLike = Union[str, Path]
CROP_MM = 15.0  # Shinohara et al.: "a 15 x 15 mm area, including the median nerve"
SURROGATE_CSA_MM2 = 10.0  # the inlet CSA cut-off in common use (Cartwright et al. 2012; report.py)
POSITIVE_VALUES, NEGATIVE_VALUES = ("cts", "1", "yes", "positive"), ("control", "0", "no", "negative")


@dataclass(frozen=True)
class ClassifierSettings:
    """What a classifier's model.json says of it: its class names (other, positive), the crop side in mm, how
    its labels were made, and the segmenter whose nerve its crops are centred on."""

    classes: Tuple[str, str] = ("control", "CTS")
    crop_mm: float = CROP_MM
    label_source: str = "diagnoses (a labels CSV)"
    segmenter: str = DEFAULT_MODEL

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ClassifierSettings":
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown classifier setting(s) {', '.join(unknown)}")
        settings = cls(**{**data, **({"classes": tuple(data["classes"])} if "classes" in data else {})})
        if len(settings.classes) != 2 or not all(isinstance(c, str) and c for c in settings.classes):
            raise ValueError(f"'classes' must be two names (other, positive), got {list(settings.classes)}")
        crop = settings.crop_mm
        if isinstance(crop, bool) or not isinstance(crop, (int, float)) or not math.isfinite(crop) or crop <= 0:
            raise ValueError(f"'crop_mm' must be a positive number, got {crop!r}")
        return settings

    def as_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["classes"] = list(self.classes)
        return data


def surrogate_settings(cutoff_mm2: float = SURROGATE_CSA_MM2, segmenter: str = DEFAULT_MODEL) -> ClassifierSettings:
    """The settings of a classifier trained on the surrogate label: its classes say so."""
    return ClassifierSettings(("nerve not enlarged", f"enlarged nerve (expert CSA >= {cutoff_mm2:g} mm2)"), CROP_MM,
                              f"surrogate, not a diagnosis: expert CSA >= {cutoff_mm2:g} mm2 on the expert's mask",
                              segmenter)


# ----------------------------------------------------------------------------- the crop

def nerve_centre(mask: np.ndarray) -> Tuple[float, float]:
    """(row, column) of the mask's centroid (of every branch of a bifid nerve)."""
    rows, cols = np.nonzero(mask)
    if not rows.size:
        raise ValueError("no nerve found to centre the crop on")
    return float(rows.mean()), float(cols.mean())


def crop_box(centre: Tuple[float, float], spacing_mm: Tuple[float, float],
             crop_mm: Union[float, Tuple[float, float]], size: Sequence[int]) -> Crop:
    """The square of ``crop_mm`` (or rectangle of (rows, columns) mm) around ``centre`` (row, column), in pixels of
    a frame of ``spacing_mm``."""
    rows_mm, cols_mm = crop_mm if isinstance(crop_mm, (tuple, list)) else (crop_mm, crop_mm)
    height, width = max(2, int(round(rows_mm / spacing_mm[0]))), max(2, int(round(cols_mm / spacing_mm[1])))
    return Crop(int(round(centre[0] + 0.5 - height / 2)), int(round(centre[1] + 0.5 - width / 2)), height, width,
                tuple(size))


def outside_fraction(crop: Crop, shape: Tuple[int, int]) -> float:
    """The share of a crop that lies past the frame's edges (filled, not image): a crop the classifier never saw
    whole in training when it is large."""
    return 1.0 - float(crop.region(shape).sum()) / (crop.height * crop.width)


def crop_pixels(frame: np.ndarray, crop: Crop) -> np.ndarray:
    """The crop resampled to its network size (raw values; the frame's darkest value past its edges)."""
    return resize_array(crop.cut(np.asarray(frame, np.float32), fill=float(np.min(frame))), crop.size)


# ----------------------------------------------------------------------------- labels

def label_value(text: str, where: str) -> bool:
    value = str(text).strip().lower()
    if value in POSITIVE_VALUES or value in NEGATIVE_VALUES:
        return value in POSITIVE_VALUES
    raise ValueError(f"{where}: label {text!r} is neither CTS ({', '.join(POSITIVE_VALUES)}) nor control "
                     f"({', '.join(NEGATIVE_VALUES)})")


def read_labels(path: PathLike, samples: Sequence["Sample"]) -> Dict[str, bool]:
    """Each sample's label (by image stem) from a CSV with a ``label`` column (CTS or control; 1/0, yes/no) and an
    ``image`` (file name, with or without extension) and/or ``patient`` column (headers in any case); a row with
    an image labels that image, a row with only a patient all that patient's images. An image or patient the
    dataset does not hold, a bad value or two labels for one image are refused with the line; images without one
    are left out."""
    path = Path(path)
    by_stem = {s.image.stem: s for s in samples}
    by_name = {s.image.name: s for s in samples}
    patients: Dict[str, List["Sample"]] = {}
    for sample in samples:
        patients.setdefault(sample.patient, []).append(sample)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [cell.strip().lower() for cell in next(reader, [])]
            rows = [dict(zip(header, cells)) for cells in reader if any(cell.strip() for cell in cells)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path}: cannot be read as a CSV ({error})") from None
    repeated = sorted({name for name in header if header.count(name) > 1})
    if "label" not in header or not {"image", "patient"} & set(header) or repeated:
        raise ValueError(f"{path}: needs one 'label' column and an 'image' and/or 'patient' column "
                         f"(has: {', '.join(header) or 'no header'})")
    if not rows:
        raise ValueError(f"{path}: no labelled row")
    labels: Dict[str, bool] = {}
    for number, row in enumerate(rows, start=2):
        where = f"{path}, line {number}"
        image, patient = (row.get(key, "").strip() for key in ("image", "patient"))
        value = label_value(row.get("label") or "", where)
        if image:  # an image row; a patient row labels all of that patient's images
            sample = by_name.get(Path(image).name) or by_stem.get(Path(image).stem if Path(image).suffix else image)
            if sample is None:
                raise ValueError(f"{where}: image {image!r} is not in the dataset")
            if patient and patient != sample.patient:
                raise ValueError(f"{where}: image {image!r} belongs to patient {sample.patient}, not {patient!r}")
            targets = [sample]
        elif patient:
            if patient not in patients:
                raise ValueError(f"{where}: patient {patient!r} has no image in the dataset")
            targets = patients[patient]
        else:
            raise ValueError(f"{where}: neither an image nor a patient")
        for sample in targets:
            if labels.get(sample.image.stem, value) != value:
                raise ValueError(f"{where}: {sample.image.name} is labelled both CTS and control")
            labels[sample.image.stem] = value
    return labels


def surrogate_labels(samples: Sequence["Sample"], spacing_mm: Optional[Tuple[float, float]],
                     cutoff_mm2: float = SURROGATE_CSA_MM2) -> Dict[str, bool]:
    """The surrogate label of each sample (by image stem): its expert mask's CSA >= ``cutoff_mm2``. Not a diagnosis:
    an enlarged nerve is one sign of CTS among others. Needs each sample's spacing (``spacing_mm`` for all)."""
    from .io import read_mask

    labels = {}
    for sample in samples:
        spacing = spacing_mm or sample.spacing_mm
        if spacing is None:
            raise ValueError(f"{sample.image}: the surrogate label needs the expert CSA in mm2: give --spacing")
        labels[sample.image.stem] = bool(read_mask(sample.mask).sum() * spacing[0] * spacing[1] >= cutoff_mm2)
    return labels


# ----------------------------------------------------------------------------- inference

@dataclass
class ClassPrediction:
    """One frame's call: the positive class's probability and name (or the other's), the nerve centre the crop is
    centred on (row, column), the crop itself (network size, raw values) and the milliseconds taken."""

    probability: float
    label: str
    centre: Tuple[float, float]
    crop: np.ndarray
    milliseconds: float
    crop_box: Crop = field(repr=False, default=None)


class Classifier:
    """A classifier (installed name or folder; default the shipped one) with the segmenter that finds the nerve."""

    def __init__(self, model: Optional[PathLike] = None, device: Optional[str] = None,
                 segmenter: Optional[PathLike] = None):
        self.device = resolve_device(device)
        self.model_dir = resolve_model(model or DEFAULT_CLASSIFIER)
        info = load_info(self.model_dir)
        if not is_classifier(info.architecture):
            raise ModelFolderError(f"{self.model_dir}: '{info.name}' is not a classifier ({info.architecture}); "
                                   f"classify needs one, such as {DEFAULT_CLASSIFIER}")
        if not info.classification:
            raise ModelFolderError(f"{self.model_dir}: model.json has no 'classification' settings (its classes, crop "
                                   "and label source): without them its calls cannot be named")
        self._use(load_network(self.model_dir, self.device)[0], info)
        self.segmenter = Segmenter(segmenter or self.settings.segmenter, self.device)

    @classmethod
    def from_network(cls, network: "torch.nn.Module", info: ModelInfo, device: str = "cpu") -> "Classifier":
        """A Classifier around a network in memory, without a segmenter (training's validation)."""
        classifier = cls.__new__(cls)
        classifier.device, classifier.model_dir, classifier.segmenter = device, None, None
        classifier._use(network.to(device).eval(), info)
        return classifier

    def _use(self, network: "torch.nn.Module", info: ModelInfo) -> None:
        self.network, self.info = network, info
        self.settings = ClassifierSettings.from_dict(info.classification)

    @property
    def model_id(self) -> str:
        return f"{self.info.name}@{self.info.version}"

    def network_input(self, crop: np.ndarray) -> "torch.Tensor":
        import torch

        return torch.from_numpy(normalize(crop))[None, None].to(self.device)

    def probabilities(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """The positive class's probability of each crop (network size, raw values)."""
        import torch

        with torch.no_grad():
            logits = self.network(torch.cat([self.network_input(c) for c in crops]))
        return torch.softmax(logits.float(), dim=1)[:, 1].cpu().numpy()

    def crop(self, frame: np.ndarray, mask: np.ndarray, spacing_mm: Tuple[float, float]) -> Tuple[Crop, np.ndarray]:
        box = crop_box(nerve_centre(mask), spacing_mm, self.settings.crop_mm, self.info.input_size)
        return box, crop_pixels(frame, box)

    def classify(self, image: UltrasoundImage, frame_index: int = 0) -> ClassPrediction:
        """Find the nerve, crop ``crop_mm`` around it and classify the crop. A frame without a spacing or without
        a nerve is refused (ValueError): the crop would not be the one the classifier learnt from."""
        start = time.perf_counter()
        frame = image.frame(frame_index)
        check_frame(frame, image.source, frame_index)
        if image.spacing_mm is None:
            raise ValueError(f"the {self.settings.crop_mm:g} mm crop needs the pixel spacing, which this image does "
                             "not give: give --spacing MM")
        mask = self.segmenter.predict(image, frame_index).mask
        if not mask.any():
            raise ValueError(f"no nerve found by {self.segmenter.model_id} to centre the crop on")
        box, crop = self.crop(frame, mask, image.spacing_mm)
        probability = float(self.probabilities([crop])[0])
        label = self.settings.classes[int(probability >= self.info.threshold)]
        return ClassPrediction(probability, label, nerve_centre(mask), crop, 1000.0 * (time.perf_counter() - start),
                               box)


# ----------------------------------------------------------------------------- a folder of images

CLASSIFICATION_FILE = "classification.csv"
CLASSIFICATION_COLUMNS = ("image", "frame", "probability", "label", "model", "segmenter", "nerve_x", "nerve_y",
                          "crop_outside", "spacing_mm", "ms", "maps", "error")


@dataclass
class ClassificationSummary:
    """What ``classify_files`` did: files given, skipped as already done, failed; rows written; the table."""

    n_files: int
    n_skipped: int
    n_failed: int
    n_rows: int
    path: Path


def _earlier_rows(path: Path, model_id: str) -> List[Dict[str, str]]:
    """The rows of a classification table to continue; refused when it is another table or another model's, or
    has a short or long row. The last row of an interrupted run (no line end) is dropped, so its image is redone."""
    from .io import atomic_write

    if not path.is_file() or path.stat().st_size == 0:
        return []
    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if tuple(reader.fieldnames or ()) != CLASSIFICATION_COLUMNS:
        raise ValueError(f"{path}: not a classification table of this version; give another --out")
    rows = list(reader)
    for number, row in enumerate(rows, start=2):
        if None in row or None in row.values():
            raise ValueError(f"{path}, line {number}: {len(CLASSIFICATION_COLUMNS)} cells expected; the table is "
                             "damaged: give another --out")
    others = sorted({row["model"] for row in rows if row["model"] and row["model"] != model_id})
    if others:
        raise ValueError(f"{path} holds classifications by {', '.join(others)}, not {model_id}; give another --out")
    return rows


def explanation_map(classifier: Classifier, prediction: ClassPrediction, method: str) -> np.ndarray:
    """Where ``classifier`` looked for its positive class in ``prediction``'s crop: a map of ``method``
    (:mod:`explain`) at the network's input size."""
    from .explain import ClassScore, explanation
    from .models import MODEL_REGISTRY

    shown = normalize(prediction.crop)
    return explanation(method, ClassScore(classifier.network, 1), classifier.network_input(prediction.crop), shown,
                       MODEL_REGISTRY[classifier.info.architecture].explain_layer)


def map_on_frame(heat: np.ndarray, box: Crop, shape: Tuple[int, int]) -> np.ndarray:
    """A crop's map (network size) on the frame it was cut from: resampled to the crop, 0 elsewhere."""
    return box.paste(resize_array(np.asarray(heat, np.float32), (box.height, box.width)), shape, 0.0)


def _map_rows(classifier: Classifier, prediction: ClassPrediction, methods: Sequence[str], out_dir: Path,
              stem: str) -> List[str]:
    """Each requested explanation map of one call, written; their picture files' names."""
    from .explain import write_map

    positive = classifier.settings.classes[1]
    return [write_map(out_dir, stem, method, normalize(prediction.crop),
                      explanation_map(classifier, prediction, method),
                      [f"{method}: {classifier.model_id}", f"P({positive}) = {prediction.probability:.2f}"], positive)
            for method in methods]


def classify_files(paths: Sequence[PathLike], out_dir: PathLike, classifier: Classifier, spacing_mm=None,
                   explain: Sequence[str] = (), on_row=None) -> ClassificationSummary:
    """Classify every frame of each file into ``out_dir``/classification.csv, a row each, appended as it is made;
    with ``explain``, each frame's maps as ``<stem>_<method>.png`` and ``.npy``. A file or frame that cannot be
    classified (no spacing, no nerve found, unreadable) is a row with its error, and the batch goes on; a rerun
    into the same folder skips the files already classified. ``on_row`` sees each row."""
    from .explain import map_stems
    from .io import read_image
    from .pipeline import output_stems

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / CLASSIFICATION_FILE
    earlier = _earlier_rows(table, classifier.model_id)
    done = {Path(row["image"]).resolve() for row in earlier if not row["error"]}
    paths = list(dict.fromkeys(Path(p).resolve() for p in paths))  # a file named twice is classified once
    todo = [p for p in paths if p not in done]
    stems = output_stems(todo, map_stems(out_dir))
    n_rows, failed = 0, set()
    with open(table, "a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CLASSIFICATION_COLUMNS)
        if not earlier and handle.tell() == 0:
            writer.writeheader()
        for path in todo:
            for row in _file_rows(classifier, path, stems[path], out_dir, spacing_mm, explain, read_image):
                writer.writerow(row)
                handle.flush()
                n_rows += 1
                if row["error"]:
                    failed.add(path)
                if on_row:
                    on_row(row)
    return ClassificationSummary(len(paths), len(paths) - len(todo), len(failed), n_rows, table)


def _file_rows(classifier: Classifier, path: Path, stem: str, out_dir: Path, spacing_mm, explain: Sequence[str],
               read_image) -> List[Dict[str, Any]]:
    """The rows of one file: one per frame, or one error row when the file cannot be read."""
    base = {"image": str(path), "frame": 0, "probability": "", "label": "", "model": classifier.model_id,
            "segmenter": classifier.segmenter.model_id, "nerve_x": "", "nerve_y": "", "crop_outside": "",
            "spacing_mm": "", "ms": "", "maps": "", "error": ""}
    try:
        image = read_image(path, spacing_mm)
    except Exception as error:  # one bad file is a row, never the end of the batch
        return [dict(base, error=str(error).replace(f"{path}: ", ""))]
    rows = []
    for frame in range(image.n_frames):
        row = dict(base, frame=frame, spacing_mm="" if image.spacing_mm is None else
                   "{:.6g}x{:.6g}".format(*image.spacing_mm))
        try:
            prediction = classifier.classify(image, frame)
            frame_stem = stem + (f"_f{frame:04d}" if image.n_frames > 1 else "")
            maps = _map_rows(classifier, prediction, explain, out_dir, frame_stem) if explain else []
            row.update(probability=f"{prediction.probability:.4f}", label=prediction.label,
                       nerve_x=f"{prediction.centre[1]:.1f}", nerve_y=f"{prediction.centre[0]:.1f}",
                       crop_outside=f"{outside_fraction(prediction.crop_box, image.frame(frame).shape):.2f}",
                       ms=f"{prediction.milliseconds:.1f}", maps=";".join(maps))
        except (ValueError, ImportError) as error:
            row["error"] = str(error)
        rows.append(row)
    return rows
