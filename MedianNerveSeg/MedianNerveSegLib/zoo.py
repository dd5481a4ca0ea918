"""Installed models: a model is a folder with model.json (preprocessing, version) and model.pt.

Names resolve to the models shipped in this package (pretrained/), to the user's model
folder (``$MEDIAN_NERVE_SEG_MODELS``, default ``~/.median-nerve-seg/models``), or, in a
repository checkout, to a trained bundle (training/<name>/models, named <name>).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from .models import build_model

MODEL_JSON = "model.json"
WEIGHTS = "model.pt"
DEFAULT_MODEL = "median_nerve_unet"
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
BUNDLES_DIR = Path(__file__).resolve().parents[2] / "training"  # in a repository checkout


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

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ModelInfo":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["input_size"] = tuple(known.get("input_size", (288, 384)))
        return cls(**known)


def user_models_dir() -> Path:
    return Path(os.environ.get("MEDIAN_NERVE_SEG_MODELS", Path.home() / ".median-nerve-seg" / "models"))


def installed_models() -> List[Path]:
    """Every model folder found in pretrained/, the user's model folder and trained bundles."""
    roots = [PRETRAINED_DIR, user_models_dir()]
    folders = [p for root in roots if root.is_dir() for p in root.iterdir() if (p / MODEL_JSON).is_file()]
    bundles = sorted(BUNDLES_DIR.glob(f"*/models/{MODEL_JSON}")) if BUNDLES_DIR.is_dir() else []
    return sorted(folders) + [p.parent for p in bundles]


def bundle_dir(architecture: str) -> Optional[Path]:
    """The MONAI bundle training/<architecture> of a repository checkout, None where it is absent."""
    folder = BUNDLES_DIR / architecture
    return folder if (folder / "configs" / "train.json").is_file() else None


def model_name(folder: Path) -> str:
    """The name a model folder is selected by: its folder name, or its bundle's name."""
    return folder.parent.name if folder.name == "models" else folder.name


def resolve_model(name_or_path: Optional[Union[str, Path]] = None) -> Path:
    """A model folder from a path or an installed model's name (None: the default model)."""
    name = str(name_or_path or DEFAULT_MODEL)
    path = Path(name).expanduser()
    if (path / MODEL_JSON).is_file():
        return path
    for folder in installed_models():
        if model_name(folder) == name:
            return folder
    names = ", ".join(model_name(p) for p in installed_models()) or "none"
    raise FileNotFoundError(f"model '{name}' not found: not a folder with {MODEL_JSON}, "
                            f"nor an installed model (installed: {names})")


def load_info(folder: Path) -> ModelInfo:
    with open(Path(folder) / MODEL_JSON, encoding="utf-8") as handle:
        return ModelInfo.from_dict(json.load(handle))


def load_network(folder: Path, device: str = "cpu") -> Tuple[torch.nn.Module, ModelInfo]:
    """The model folder's network in eval mode on ``device``, and its info."""
    folder = Path(folder)
    info = load_info(folder)
    network = build_model(info.architecture, **info.arch_kwargs)
    state = torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True)
    network.load_state_dict({k: v.float() for k, v in state.items()})
    return network.to(device).eval(), info


def save_model(folder: Path, network: torch.nn.Module, info: ModelInfo, half: bool = True) -> Path:
    """Write model.pt (float16 by default: half the size, same predictions) and model.json.

    A tensor outside float16's range stays float32: batch-norm running variances after the plain
    VGG blocks of DoubleU-Net and DL-UNet pass 65504 in training, and inf would zero their outputs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: (_half_if_in_range(v) if half else v).cpu() for k, v in network.state_dict().items()}
    _atomic(folder / WEIGHTS, lambda f: torch.save(state, f))
    text = json.dumps(asdict(info), indent=2)
    _atomic(folder / MODEL_JSON, lambda f: f.write(text.encode("utf-8")))
    return folder


def _half_if_in_range(tensor: torch.Tensor) -> torch.Tensor:
    if not tensor.is_floating_point():
        return tensor
    half = tensor.half()
    return half if torch.isfinite(half).all() else tensor


def _atomic(path: Path, write) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
