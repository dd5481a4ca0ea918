"""Speed benchmark of the registry's architectures: parameters, FLOPs, ms per frame."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .models import available_models, build_model, count_parameters

FRAME = (468, 606)  # the Jesi scanner's frame, rows x columns


def _median_ms(network: torch.nn.Module, batch: torch.Tensor, repeats: int, device: str) -> float:
    def once() -> float:
        start = time.perf_counter()
        network(batch)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return 1000 * (time.perf_counter() - start)

    once()  # warm-up
    return statistics.median(once() for _ in range(repeats))


@torch.no_grad()
def benchmark_model(name: str, device: str = "cpu", frame: Sequence[int] = FRAME,
                    batch_sizes: Sequence[int] = (1, 8), repeats: int = 5) -> Dict[str, Any]:
    """Parameters, MFLOPs per frame and median ms per frame of one registry model."""
    network = build_model(name).to(device).eval()
    x = torch.randn(1, 1, *frame, device=device)
    with FlopCounterMode(display=False) as counter:
        network(x)
    row: Dict[str, Any] = {"model": name, "parameters": count_parameters(network),
                           "mflops": round(counter.get_total_flops() / 1e6, 1), "device": device}
    for batch_size in batch_sizes:
        batch = x.expand(batch_size, -1, -1, -1).contiguous()
        row[f"ms_per_frame_batch{batch_size}"] = round(_median_ms(network, batch, repeats, device) / batch_size, 2)
    return row


def benchmark_speed(out_dir: Path, names: Optional[Sequence[str]] = None, device: str = "cpu", threads: int = 2,
                    repeats: int = 5, log: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """Time each model; the report in ``out_dir`` is rewritten after each, so a long run keeps its rows."""
    torch.set_num_threads(threads)
    rows = []
    for name in names or available_models():
        rows.append(dict(benchmark_model(name, device, repeats=repeats), threads=threads))
        log(json.dumps(rows[-1]))
        write_report(rows, out_dir)
    return rows


def write_report(rows: List[Dict[str, Any]], out_dir: Path) -> None:
    """speed.json and speed.md (a Markdown table) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "speed.json").write_text(json.dumps(rows, indent=2) + "\n")
    columns = ["model", "parameters", "mflops", "ms_per_frame_batch1", "ms_per_frame_batch8", "device", "threads"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(f"{row.get(c, '')}" for c in columns) + " |" for row in rows]
    (out_dir / "speed.md").write_text(
        f"Frame {FRAME[0]} x {FRAME[1]} (rows x columns), median of repeated forward passes, eval mode.\n\n"
        + "\n".join(lines) + "\n")


def hardware() -> Dict[str, Any]:
    """What a speed figure was measured on: CPU model, cores, torch threads and version."""
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__.split("+")[0]}


def benchmark_pipeline(images: Sequence[Path], out_dir: Path, model: Optional[str] = None, spacing_mm: Any = None,
                       device: str = "cpu", threads: int = 2, runtime: Optional[str] = None,
                       overlay: bool = True, repeats: int = 1) -> Dict[str, Any]:
    """``segment`` on ``images`` into a scratch folder, timed per stage; writes pipeline.json and pipeline.md.

    End to end is the whole batch's wall time per frame, after one warm-up prediction; with ``repeats``
    the batch runs that many times and each figure (each stage, end to end) is its own median over them
    (shared machines drift).
    ``overlay=False`` times ``segment --no-overlay``. The time to a first result is measured when
    the first image is a single frame."""
    import tempfile

    from .inference import Segmenter
    from .io import close_image, open_image
    from .pipeline import StageTimes, segment_files

    torch.set_num_threads(threads)
    segmenter = Segmenter(model, device, runtime)
    first = open_image(images[0], spacing_mm)
    segmenter.predict(first)  # warm-up
    single = first.n_frames == 1
    close_image(first)
    runs = []  # (wall seconds, StageTimes, BatchSummary) of each repeat
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(max(repeats, 1)):
            timings, start = StageTimes(), time.perf_counter()
            summary = segment_files(images, Path(scratch, f"run{repeat}"), segmenter, spacing_mm, timings=timings,
                                    overlay=overlay)
            runs.append((time.perf_counter() - start, timings, summary))
        first_result_s = (time_to_first_result(images[0], Path(scratch), model, spacing_mm, segmenter.runtime)
                          if single else None)
    frames = max(runs[0][1].frames, 1)
    alone_ms = network_alone_ms(segmenter, images, spacing_mm, len(runs))

    def per_frame(seconds: Sequence[float]) -> float:
        return round(1000 * statistics.median(seconds) / frames, 1)

    stages = {stage: per_frame([t.seconds.get(stage, 0.0) for _, t, _ in runs]) for stage in runs[0][1].seconds}
    wall = [w for w, _, _ in runs]
    result = {"model": segmenter.model_id, "images": len(images), "frames": runs[0][1].frames,
              "failed": runs[0][2].n_failed, "overlay": overlay, "repeats": len(runs), "ms_per_frame": stages,
              "end_to_end_ms_per_frame": per_frame(wall),
              "end_to_end_over_network": round(statistics.median(w / max(t.seconds.get("network", 1e-9), 1e-9)
                                                                 for w, t, _ in runs), 2),
              "network_alone_ms_per_frame": alone_ms,
              "end_to_end_over_network_alone": round(per_frame(wall) / alone_ms, 2),
              "runtime": runtime_version(segmenter.runtime), "first_result_s": first_result_s, **hardware()}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "pipeline.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Pipeline time per frame: {result['model']}, {result['frames']} frames", "",
             f"{result['cpu']}, {result['cores']} cores, {result['torch_threads']} torch threads, "
             f"torch {result['torch']}, runtime {result['runtime']}, device {device}"
             f"{'' if overlay else ', no overlays (segment --no-overlay)'}"
             f"{f'; the median of {len(runs)} runs' if len(runs) > 1 else ''}.", "",
             "| stage | ms/frame |", "|---|---|"]
    lines += [f"| {stage} | {ms} |" for stage, ms in stages.items()]
    lines += [f"| **end to end** | **{result['end_to_end_ms_per_frame']}** |", "",
              f"End to end is **{result['end_to_end_over_network_alone']}x the network alone** "
              f"({alone_ms} ms/frame: Segmenter.predict on frames already in memory, nothing else running), "
              f"and {result['end_to_end_over_network']}x the network stage within the run (where reading ahead "
              "and writing share the cores with it)."]
    if first_result_s is not None:
        lines += ["", f"One image from the command's start to its CSA (`segment` in a new process): "
                      f"{first_result_s} s."]
    (out_dir / "pipeline.md").write_text("\n".join(lines) + "\n")
    return result


def network_alone_ms(segmenter, images: Sequence[Path], spacing_mm: Any, repeats: int, max_frames: int = 50
                     ) -> float:
    """ms per frame of ``Segmenter.predict`` alone (normalise, resize, forward pass, threshold, clean) on the
    batch's first ``max_frames`` frames, already in memory: the floor the pipeline is measured against. The
    median over ``repeats`` passes."""
    import dataclasses

    from .io import close_image, open_image

    frames = []  # (image, frame index) pairs, each image's pixels in memory
    for path in images:
        if len(frames) >= max_frames:
            break
        try:
            image = open_image(path, spacing_mm)
        except ValueError:
            continue  # the batch's error row names it
        try:
            count = min(image.n_frames, max_frames - len(frames))
            pixels = image.frame(0) if image.n_frames == 1 else np.stack([image.frame(i) for i in range(count)])
        except ValueError:
            continue  # a frame that cannot be decoded: its error row names it
        finally:
            close_image(image)
        frames += [(dataclasses.replace(image, pixels=pixels), index) for index in range(count)]
    if not frames:
        raise ValueError("no frame could be read to time the network alone")
    passes = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        for image, index in frames:
            segmenter.predict(image, index)
        passes.append(time.perf_counter() - start)
    return max(round(1000 * statistics.median(passes) / len(frames), 1), 0.1)


def time_to_first_result(image: Path, scratch: Path, model: Optional[str], spacing_mm: Any, runtime: str) -> float:
    """Seconds a new ``segment`` process takes for one image, imports included (the runtime's cache is warm)."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "MedianNerveSegLib", "segment", str(image), "--out", str(scratch / "first"),
               "--runtime", runtime, *(["--model", str(model)] if model else []),
               *(["--spacing", ",".join(map(str, spacing_mm))] if spacing_mm else [])]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return round(time.perf_counter() - start, 2)


def runtime_version(runtime: str) -> str:
    """'torch 2.13.0' or 'openvino 2026.4.1': the runtime a figure was measured with."""
    if runtime.startswith("openvino"):
        import openvino

        return f"openvino {openvino.__version__.split('-')[0]}{' int8' if runtime == 'openvino-int8' else ''}"
    return f"torch {torch.__version__.split('+')[0]}"
