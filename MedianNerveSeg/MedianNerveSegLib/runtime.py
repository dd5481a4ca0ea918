"""The runtime a Segmenter's network runs on: PyTorch, or OpenVINO on a CPU when it is installed.

OpenVINO runs the same float32 network in about 0.7x of eager PyTorch's time on a CPU
(docs/benchmarks/pipeline.md). Its CPU plugin would pick bfloat16 on CPUs that have it,
which moves logits by ~0.06: precision is pinned to float32 so that masks match PyTorch's.
The converted network is cached by the checksum of the model's files, so only the first
start after a model changes pays for the conversion.

``openvino-int8`` runs the model folder's int8 network instead (``openvino_int8/``, made and
checked against the float masks by ``median-nerve-seg quantize``: :mod:`quantize`); it is
asked for by name, never chosen by ``auto``, since its masks are close to PyTorch's, not equal.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

RUNTIMES = ("auto", "torch", "openvino", "openvino-int8")
REFINE_RUNTIMES = ("auto", "torch", "openvino")  # a click model has no int8 network
INT8_FOLDER = "openvino_int8"  # a model folder's int8 network and its accuracy record
INT8_RECORD = "quantization.json"
INT8_FILES = ("network.xml", "network.bin")  # the int8 network; the record holds their checksum


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def choose_runtime(requested: Optional[str], device: str, detector: bool) -> str:
    """'torch', 'openvino' or 'openvino-int8': 'auto' takes OpenVINO (float32) for a segmentation network on
    the CPU when it is installed."""
    requested = (requested or "auto").lower()
    if requested not in RUNTIMES:
        raise ValueError(f"--runtime {requested}: choose one of {', '.join(RUNTIMES)}")
    if requested == "torch":
        return "torch"
    why_not = ("it runs on the CPU only" if device != "cpu" else
               "it does not run detectors (Mask R-CNN)" if detector else
               "it is not installed (pip install openvino)" if not openvino_installed() else None)
    if requested != "auto" and why_not:
        raise RuntimeError(f"--runtime {requested}: {why_not}; use --runtime torch")
    return "torch" if why_not else "openvino" if requested == "auto" else requested


def version_label(version: str, runtime: str) -> str:
    """A model's version as results and scenes name it: ``+int8`` when its int8 network made the masks."""
    return version + ("+int8" if runtime == "openvino-int8" else "")


def cpu_threads() -> int:
    """PyTorch's thread count where torch is loaded (a benchmark sets it), else 0: OpenVINO's own choice."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else 0


def cache_dir() -> Path:
    """Where converted networks are kept: $MEDIAN_NERVE_SEG_CACHE, else ~/.cache/median-nerve-seg."""
    return Path(os.environ.get("MEDIAN_NERVE_SEG_CACHE") or Path.home() / ".cache" / "median-nerve-seg") / "openvino"


def model_checksum(files: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:20]


class OpenVinoNetwork:
    """A network compiled by OpenVINO for the CPU at a fixed input size: (1, channels, h, w) array in, logits out.

    ``load_network`` gives the PyTorch network; it is called (and torch imported) only when
    the cache has no conversion of ``model_files``. With ``int8_folder`` the folder's int8
    network runs instead (refused when it was made from other weights than ``model_files``)."""

    def __init__(self, load_network: Callable[[], "torch.nn.Module"], input_size: Sequence[int],
                 model_files: Sequence[Path], int8_folder: Optional[Path] = None, channels: int = 1):
        import openvino as ov

        self.core = core = ov.Core()
        if int8_folder is not None:
            self.model = core.read_model(str(int8_network(int8_folder, model_files)))
        else:
            self.model = self.converted(core, load_network, input_size, model_files, channels)
        self.compile(self.model)

    def compile(self, model) -> None:
        """Run ``model`` (an openvino.Model) from now on, compiled for this CPU at float32 precision."""
        self.compiled = self.core.compile_model(model, "CPU", {
            "INFERENCE_NUM_THREADS": cpu_threads(), "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32"})
        self.request = self.compiled.create_infer_request()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.array(self.request.infer({0: np.ascontiguousarray(batch, np.float32)})[0])

    @classmethod
    def converted(cls, core, load_network: Callable[[], "torch.nn.Module"], input_size: Sequence[int],
                  model_files: Sequence[Path], channels: int = 1):
        """The float32 OpenVINO model of ``model_files``, from the cache, else converted and cached."""
        import openvino as ov

        key = f"{model_checksum(model_files)}-{input_size[0]}x{input_size[1]}-ov{ov.__version__.split('-')[0]}"
        converted = cls._cached(core, key)
        if converted is None:
            converted = cls._convert(load_network(), input_size, channels)
            cls._store(converted, key)
        return converted

    @staticmethod
    def _convert(network: "torch.nn.Module", input_size: Sequence[int], channels: int = 1):
        import openvino as ov
        import torch

        example = torch.zeros(1, channels, *input_size)
        with warnings.catch_warnings():  # tracing warns about shape-dependent padding, fixed here
            warnings.simplefilter("ignore")
            return ov.convert_model(network.float().eval(), example_input=example, input=[tuple(example.shape)])

    @staticmethod
    def _cached(core, key: str):
        xml = cache_dir() / key / "network.xml"
        if not xml.exists():
            return None
        try:
            return core.read_model(str(xml))
        except Exception as error:  # a damaged cache entry: convert again, in memory
            print(f"warning: {xml}: cannot be read ({error}); converting the network again", file=sys.stderr)
            return None

    @staticmethod
    def _store(converted, key: str) -> None:
        """Save into a scratch folder, then move it into place whole; a cache that cannot be written is skipped."""
        import openvino as ov

        final = cache_dir() / key
        scratch = final.with_name(f".{key}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            scratch.mkdir(parents=True)
            ov.save_model(converted, str(scratch / "network.xml"), compress_to_fp16=False)
            os.replace(scratch, final)
        except OSError:
            pass  # another process stored it first, or the cache folder is read-only
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def int8_network(folder: Path, model_files: Sequence[Path]) -> Path:
    """``folder``'s network.xml, once its record says it was quantized from ``model_files``, passed its
    accuracy check and is these very network files; else a one-line ModelFolderError saying what to do."""
    from .zoo import ModelFolderError

    record, xml = folder / INT8_RECORD, folder / "network.xml"
    if not record.is_file() or not all((folder / name).is_file() for name in INT8_FILES):
        raise ModelFolderError(f"{folder.parent}: no int8 network ({INT8_FOLDER}/ with {INT8_RECORD}, "
                               f"{', '.join(INT8_FILES)}); "
                               "make one with: median-nerve-seg quantize")
    try:
        made = json.loads(record.read_text())
    except (OSError, ValueError) as error:
        raise ModelFolderError(f"{record}: not readable ({error})") from None
    if made.get("model_checksum") != model_checksum(model_files):
        raise ModelFolderError(f"{folder}: quantized from other weights than this model's; "
                               "run median-nerve-seg quantize again")
    if made.get("network_checksum") != model_checksum([folder / name for name in INT8_FILES]):
        raise ModelFolderError(f"{folder}: its network files are not the ones its {INT8_RECORD} was written for "
                               "(changed or damaged); run median-nerve-seg quantize again")
    if not made.get("accepted"):
        raise ModelFolderError(f"{folder}: its masks failed the accuracy check ({made.get('verdict', 'no verdict')})")
    return xml
