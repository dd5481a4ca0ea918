"""Installed models: a model is a folder with model.json (preprocessing, version) and model.pt.

Names resolve to the models shipped in this package (pretrained/), to the user's model
folder (``$MEDIAN_NERVE_SEG_MODELS``, default ``~/.median-nerve-seg/models``), or, in a
repository checkout, to a trained bundle (training/<name>/models, named <name>).
"""

from __future__ import annotations

import json
import math
import os
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Union

from .io import atomic_write
from .uncertainty import REVIEW_WIDTH_MM2
from .models import SEGMENTER_KINDS, MODEL_REGISTRY, build_model, is_classifier, is_click_model, is_detector

if TYPE_CHECKING:  # torch is imported where weights are read or written, not to read a model's card
    import torch

MODEL_JSON = "model.json"
WEIGHTS = "model.pt"
DEFAULT_MODEL = "median_nerve_unet"
DEFAULT_CLICK_MODEL = "median_nerve_click"  # what `refine` uses: a click model (registry kind "click")
DEFAULT_CLASSIFIER = "median_nerve_classifier"  # what `classify` uses (registry kind "classifier")
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
BUNDLES_DIR = Path(__file__).resolve().parents[2] / "training"  # in a repository checkout
NORMALIZATIONS = ("zscore",)  # what preprocess.normalize does


@dataclass
class ModelInfo:
    """What a model folder's model.json holds."""

    name: str
    architecture: str
    version: str = "0.0.0"
    arch_kwargs: Dict[str, Any] = field(default_factory=dict)
    input_size: Tuple[int, int] = (288, 384)
    normalization: str = "zscore"
    threshold: float = 0.5
    min_component_mm2: float = 1.0
    min_branch_fraction: float = 0.2
    description: str = ""
    training: Dict[str, Any] = field(default_factory=dict)
    metrics: Dict[str, Any] = field(default_factory=dict)
    click_encoding: Dict[str, Any] = field(default_factory=dict)  # click models: clicks.ClickEncoding's settings
    classification: Dict[str, Any] = field(default_factory=dict)  # classifiers: classify.ClassifierSettings
    second_stage: Dict[str, Any] = field(default_factory=dict)  # two-stage models: second_stage.SecondStageSettings
    review_width_mm2: float = REVIEW_WIDTH_MM2  # CSA interval width from which a frame is flagged "review"

    @classmethod
    def from_dict(cls, data: Any, source: str = MODEL_JSON) -> "ModelInfo":
        """The info in a parsed model.json; ModelFolderError naming ``source`` when it is unusable."""
        if not isinstance(data, dict):
            raise ModelFolderError(f"{source}: expected a JSON object, got a JSON {_json_type(data)}")
        missing = [key for key in ("name", "architecture") if key not in data]
        if missing:
            raise ModelFolderError(f"{source}: missing {', '.join(repr(key) for key in missing)}")
        info = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        problem = _problem(info)
        if problem:
            raise ModelFolderError(f"{source}: {problem}")
        info.input_size = tuple(info.input_size)
        return info


class ModelFolderError(ValueError):
    """A model folder that cannot be used; the message is one line naming the file and the reason."""


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _problem(info: ModelInfo) -> Optional[str]:
    """Why model.json's values cannot drive a Segmenter, None when they can."""
    for key in ("name", "version", "description", "normalization", "architecture"):
        if not isinstance(getattr(info, key), str):
            return f"'{key}' must be a string, got {getattr(info, key)!r}"
    for key in ("arch_kwargs", "training", "metrics", "click_encoding", "classification", "second_stage"):
        if not isinstance(getattr(info, key), dict):
            return f"'{key}' must be a JSON object, got {getattr(info, key)!r}"
    if info.architecture not in MODEL_REGISTRY:
        return f"'architecture' {info.architecture!r} is not one of {', '.join(sorted(MODEL_REGISTRY))}"
    if info.normalization not in NORMALIZATIONS:
        return f"'normalization' {info.normalization!r} is not one of {', '.join(NORMALIZATIONS)}"
    return (_size_problem(info) or _postprocess_problem(info) or _click_problem(info) or _classifier_problem(info)
            or _second_stage_problem(info))


def _second_stage_problem(info: ModelInfo) -> Optional[str]:
    """A two-stage model's settings must be ones that second_stage.SecondStageSettings accepts, on a segmenter."""
    if not info.second_stage:
        return None
    if MODEL_REGISTRY[info.architecture].kind != "semantic":
        return f"'second_stage' is for semantic segmenters only, not a {MODEL_REGISTRY[info.architecture].kind}"
    from .second_stage import SecondStageSettings

    try:
        SecondStageSettings.from_dict(info.second_stage)
    except (TypeError, ValueError) as error:
        return f"'second_stage': {error}"
    return None


def _classifier_problem(info: ModelInfo) -> Optional[str]:
    """A classifier's settings must be ones that classify.ClassifierSettings accepts; other models have none."""
    if not is_classifier(info.architecture):
        return "'classification' is for classifiers only" if info.classification else None
    from .classify import ClassifierSettings

    try:
        ClassifierSettings.from_dict(info.classification)
    except (TypeError, ValueError) as error:
        return f"'classification': {error}"
    return None


def _click_problem(info: ModelInfo) -> Optional[str]:
    """A click model's encoding must be one that clicks.ClickEncoding accepts; a segmenter has none."""
    if not is_click_model(info.architecture):
        return "'click_encoding' is for click models only" if info.click_encoding else None
    from .clicks import ClickEncoding

    try:
        ClickEncoding.from_dict(info.click_encoding)
    except (TypeError, ValueError) as error:
        return f"'click_encoding': {error}"
    return None


def _size_problem(info: ModelInfo) -> Optional[str]:
    """input_size: two positive ints, multiples of 16 for the U-Nets (a detector letterboxes itself)."""
    size = info.input_size
    if not (isinstance(size, (list, tuple)) and len(size) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in size)):
        return f"'input_size' must be two positive integers [rows, cols], got {size!r}"
    if not is_detector(info.architecture) and any(n % 16 for n in size):
        return f"'input_size' {list(size)} must be multiples of 16 for {info.architecture}"
    return None


def _postprocess_problem(info: ModelInfo) -> Optional[str]:
    if not (_is_number(info.threshold) and 0 < info.threshold < 1):
        return f"'threshold' must be a number strictly between 0 and 1, got {info.threshold!r}"
    if not (_is_number(info.min_component_mm2) and info.min_component_mm2 >= 0):
        return f"'min_component_mm2' must be a number >= 0, got {info.min_component_mm2!r}"
    if not (_is_number(info.min_branch_fraction) and 0 <= info.min_branch_fraction <= 1):
        return f"'min_branch_fraction' must be a number from 0 to 1, got {info.min_branch_fraction!r}"
    if not (_is_number(info.review_width_mm2) and info.review_width_mm2 > 0):
        return f"'review_width_mm2' must be a number > 0, got {info.review_width_mm2!r}"
    return None


def user_models_dir() -> Path:
    return Path(os.environ.get("MEDIAN_NERVE_SEG_MODELS", Path.home() / ".median-nerve-seg" / "models"))


def installed_models() -> List[Path]:
    """Every model folder found in pretrained/, the user's model folder and trained bundles."""
    roots = [PRETRAINED_DIR, user_models_dir()]
    folders = [p for root in roots if root.is_dir() for p in root.iterdir() if (p / MODEL_JSON).is_file()]
    bundles = sorted(BUNDLES_DIR.glob(f"*/models/{MODEL_JSON}")) if BUNDLES_DIR.is_dir() else []
    return sorted(folders) + [p.parent for p in bundles]


def installed_segmenters() -> List[Path]:
    """The installed models that segment a frame by themselves: not the click models (``refine``'s) nor the
    classifiers (``classify``'s). A folder whose model.json cannot be read stays listed, so that choosing it
    says what is wrong with it."""
    def segments(folder: Path) -> bool:
        try:
            return MODEL_REGISTRY[load_info(folder).architecture].kind in SEGMENTER_KINDS
        except ModelFolderError:
            return True

    return [folder for folder in installed_models() if segments(folder)]


def bundle_dir(architecture: str) -> Optional[Path]:
    """The MONAI bundle training/<architecture> of a repository checkout, None where it is absent."""
    folder = BUNDLES_DIR / architecture
    return folder if (folder / "configs" / "train.json").is_file() else None


def model_name(folder: Path) -> str:
    """The name a model folder is selected by: its folder name, or its bundle's name."""
    return folder.parent.name if folder.name == "models" else folder.name


def resolve_model(name_or_path: Optional[Union[str, Path]] = None) -> Path:
    """A model folder from an installed model's name or a path (None: the default model).

    A name is looked up among the installed models before the current directory, so a local
    folder of the same name never replaces an installed model: write ./name for that folder.
    Anything with a path separator, or starting with . or ~, is a path."""
    name = str(name_or_path or DEFAULT_MODEL)
    if _looks_like_path(name):
        return _model_folder(Path(name).expanduser(), name)
    installed = installed_models()
    for folder in installed:
        if model_name(folder) == name:
            return folder
    if (Path(name) / MODEL_JSON).is_file():
        return Path(name)
    names = ", ".join(model_name(p) for p in installed) or "none"
    raise FileNotFoundError(f"model '{name}' not found: not an installed model (installed: {names}), "
                            f"nor a folder with {MODEL_JSON}")


def _looks_like_path(name: str) -> bool:
    separators = [os.sep] + ([os.altsep] if os.altsep else [])
    return name.startswith((".", "~")) or any(sep in name for sep in separators)


def _model_folder(path: Path, given: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"model folder '{given}' does not exist")
    if not (path / MODEL_JSON).is_file():
        raise FileNotFoundError(f"model folder '{given}' has no {MODEL_JSON}: not a model folder")
    return path


def load_info(folder: Path) -> ModelInfo:
    """The checked contents of ``folder``/model.json (ModelFolderError when it is unusable)."""
    path = Path(folder) / MODEL_JSON
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelFolderError(f"{path}: missing; a model folder holds {MODEL_JSON} and {WEIGHTS}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ModelFolderError(f"{path}: cannot be read ({_first_sentence(error)})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ModelFolderError(f"{path}: not valid JSON ({error})") from None
    return ModelInfo.from_dict(data, str(path))


def load_network(folder: Path, device: str = "cpu") -> Tuple[torch.nn.Module, ModelInfo]:
    """The model folder's network in eval mode on ``device``, and its info."""
    folder = Path(folder)
    info = load_info(folder)
    network = _build(info, folder / MODEL_JSON)
    state = _read_state(folder / WEIGHTS)
    problem = _state_problem(network, state, info.architecture)
    if problem:
        raise ModelFolderError(f"{folder / WEIGHTS}: {problem}")
    network.load_state_dict({k: v.float() for k, v in state.items()})
    return network.to(device).eval(), info


def _build(info: ModelInfo, source: Path) -> torch.nn.Module:
    try:
        return build_model(info.architecture, **info.arch_kwargs)
    except ImportError:
        raise
    except Exception as error:  # whatever the constructor raises for arguments it rejects
        raise ModelFolderError(f"{source}: {info.architecture} rejects arch_kwargs {info.arch_kwargs} "
                               f"({_first_sentence(error)})") from None


def _read_state(path: Path) -> Dict[str, torch.Tensor]:
    """The tensors of a model.pt, ModelFolderError naming it when it is missing, empty or foreign."""
    import torch

    if not path.is_file():
        raise ModelFolderError(f"{path}: missing; a model folder holds {MODEL_JSON} and {WEIGHTS}")
    if path.stat().st_size == 0:
        raise ModelFolderError(f"{path}: empty file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ModelFolderError(f"{path}: not a PyTorch state dict (holds objects other than tensors)") from None
    except Exception as error:  # torch reports a damaged file as RuntimeError, EOFError, ...
        raise ModelFolderError(f"{path}: not a PyTorch weights file or damaged ({_first_sentence(error)})") from None
    if not (isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise ModelFolderError(f"{path}: not a PyTorch state dict (a {type(state).__name__})")
    return state


def _state_problem(network: torch.nn.Module, state: Dict[str, torch.Tensor], architecture: str) -> Optional[str]:
    """Why ``state`` does not fit ``network``: other keys, other shapes or non-finite values."""
    import torch

    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        example = f"'{missing[0]}' missing" if missing else f"'{unexpected[0]}' unexpected"
        return (f"weights do not fit {architecture} with this model.json's arch_kwargs: {len(missing)} "
                f"missing and {len(unexpected)} unexpected tensors ({example})")
    wrong = [k for k in expected if state[k].shape != expected[k].shape]
    if wrong:
        return (f"weights do not fit {architecture} with this model.json's arch_kwargs: '{wrong[0]}' has "
                f"shape {list(state[wrong[0]].shape)}, expected {list(expected[wrong[0]].shape)} "
                f"({len(wrong)} tensors differ)")
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    return f"'{broken[0]}' holds NaN or Inf ({len(broken)} tensors)" if broken else None


def _first_sentence(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text.split(". ")[0].rstrip(".")


def save_model(folder: Path, network: torch.nn.Module, info: ModelInfo, half: bool = True) -> Path:
    """Write model.pt (float16 by default: half the size, same predictions) and model.json.

    A tensor outside float16's range stays float32: batch-norm running variances after the plain
    VGG blocks of DoubleU-Net and DL-UNet pass 65504 in training, and inf would zero their outputs."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: (_half_if_in_range(v) if half else v).cpu() for k, v in network.state_dict().items()}
    atomic_write(folder / WEIGHTS, lambda tmp: torch.save(state, tmp))
    text = json.dumps(asdict(info), indent=2)
    atomic_write(folder / MODEL_JSON, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return folder


def _half_if_in_range(tensor: torch.Tensor) -> torch.Tensor:
    import torch

    if not tensor.is_floating_point():
        return tensor
    half = tensor.half()
    return half if torch.isfinite(half).all() else tensor
