"""Figures for users: CSA through a cine clip."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence


def plot_csa_per_frame(rows: Sequence[Dict[str, Any]], path: Path, title: str = "") -> None:
    """CSA against frame index; frames where no nerve was found are marked on the axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    in_mm = all(r.get("area_mm2") is not None for r in rows)
    key, unit = ("area_mm2", "mm$^2$") if in_mm else ("area_px", "pixels")
    found = [r for r in rows if r["found"]]
    missed = [r["frame"] for r in rows if not r["found"]]
    figure, axis = plt.subplots(figsize=(7, 3.5))
    axis.plot([r["frame"] for r in found], [r[key] for r in found], "o-", color="tab:orange", label="CSA")
    if missed:
        axis.plot(missed, [0] * len(missed), "x", color="tab:red", label="nerve not found")
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.set_xlabel("frame")
    axis.set_ylabel(f"CSA ({unit})")
    axis.set_title(title)
    axis.legend(loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
