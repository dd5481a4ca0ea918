"""The runtime a Segmenter's network runs on: PyTorch, or OpenVINO on a CPU when it is installed.

OpenVINO runs the same float32 network in about 0.7x of eager PyTorch's time on a CPU
(docs/benchmarks/pipeline.md). Its CPU plugin would pick bfloat16 on CPUs that have it,
which moves logits by ~0.06: precision is pinned to float32 so that masks match PyTorch's.
The converted network is cached by the checksum of the model's files, so only the first
start after a model changes pays for the conversion.
"""

from __future__ import annotations

import hashlib
import importlib.util
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

RUNTIMES = ("auto", "torch", "openvino")


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def choose_runtime(requested: Optional[str], device: str, detector: bool) -> str:
    """'torch' or 'openvino': 'auto' takes OpenVINO for a segmentation network on the CPU when installed."""
    requested = (requested or "auto").lower()
    if requested not in RUNTIMES:
        raise ValueError(f"--runtime {requested}: choose one of {', '.join(RUNTIMES)}")
    if requested == "torch":
        return "torch"
    why_not = ("it runs on the CPU only" if device != "cpu" else
               "it does not run detectors (Mask R-CNN)" if detector else
               "it is not installed (pip install openvino)" if not openvino_installed() else None)
    if requested == "openvino" and why_not:
        raise RuntimeError(f"--runtime openvino: {why_not}; use --runtime torch")
    return "torch" if why_not else "openvino"


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
    """A network compiled by OpenVINO for the CPU at a fixed input size: (1, 1, h, w) array in, logits out.

    ``load_network`` gives the PyTorch network; it is called (and torch imported) only when
    the cache has no conversion of ``model_files``."""

    def __init__(self, load_network: Callable[[], "torch.nn.Module"], input_size: Sequence[int],
                 model_files: Sequence[Path]):
        import openvino as ov

        self.core = ov.Core()
        key = f"{model_checksum(model_files)}-{input_size[0]}x{input_size[1]}-ov{ov.__version__.split('-')[0]}"
        converted = self._cached(key)
        if converted is None:
            converted = self._convert(load_network(), input_size)
            self._store(converted, key)
        self.compiled = self.core.compile_model(converted, "CPU", {
            "INFERENCE_NUM_THREADS": cpu_threads(), "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32"})
        self.request = self.compiled.create_infer_request()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.array(self.request.infer({0: np.ascontiguousarray(batch, np.float32)})[0])

    @staticmethod
    def _convert(network: "torch.nn.Module", input_size: Sequence[int]):
        import openvino as ov
        import torch

        example = torch.zeros(1, 1, *input_size)
        with warnings.catch_warnings():  # tracing warns about shape-dependent padding, fixed here
            warnings.simplefilter("ignore")
            return ov.convert_model(network.float().eval(), example_input=example, input=[tuple(example.shape)])

    def _cached(self, key: str):
        xml = cache_dir() / key / "network.xml"
        if not xml.exists():
            return None
        try:
            return self.core.read_model(str(xml))
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
