"""Speed benchmark of the registry's architectures: parameters, FLOPs, ms per frame."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

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
