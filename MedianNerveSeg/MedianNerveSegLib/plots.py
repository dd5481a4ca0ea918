"""Figures for users: CSA through a cine clip, CSA per patient and side against the inlet cut-off."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _inlet_cutoff():
    from .report import inlet_cutoff

    return inlet_cutoff()


def plot_csa_per_frame(rows: Sequence[Dict[str, Any]], path: Path, title: str = "") -> None:
    """CSA against time (s) when the file gives frame times, else against the frame index. The y axis starts at
    zero, so that a small change looks small; at the inlet, the cut-off is drawn. Frames without a nerve are
    marked on the axis."""
    import matplotlib.ticker

    plt = _pyplot()
    in_mm = all(r.get("area_mm2") is not None for r in rows)
    key, unit = ("area_mm2", "mm$^2$") if in_mm else ("area_px", "pixels")
    timed = all(r.get("time_s") is not None for r in rows)
    x = (lambda r: r["time_s"]) if timed else (lambda r: r["frame"])
    found = [r for r in rows if r["found"]]
    missed = [x(r) for r in rows if not r["found"]]
    figure, axis = plt.subplots(figsize=(7, 3.5))
    axis.plot([x(r) for r in found], [r[key] for r in found], "o-", color="tab:orange", label="CSA")
    if missed:
        axis.plot(missed, [0] * len(missed), "x", color="tab:red", label="nerve not found")
    top = max([r[key] for r in found] or [1.0])
    cutoff = _inlet_cutoff()
    if in_mm and all(r.get("level", "inlet") in ("inlet", "") for r in rows):
        axis.axhline(cutoff.threshold, color="0.4", linestyle="--", linewidth=1,
                     label=f"inlet cut-off {cutoff.threshold:g} mm$^2$ (Cartwright 2012)")
        top = max(top, cutoff.threshold)
    axis.set_ylim(0, top * 1.15)
    if not timed:
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.set_xlabel("time (s)" if timed else "frame")
    axis.set_ylabel(f"CSA ({unit})")
    axis.set_title(title)
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_report_csa(report, path: Path) -> None:
    """Each image's CSA per patient and side (inlet and forearm), the means, and the inlet cut-off line."""
    plt = _pyplot()
    from .report import inlet_cutoff

    cutoff = inlet_cutoff(report.cutoffs)
    figure, axis = plt.subplots(figsize=(max(4.5, 1.1 * len(report.sides) + 2), 3.8))
    styles = {"inlet": ("o", "tab:orange"), "forearm": ("s", "tab:blue"), "outlet": ("^", "tab:green")}
    shown = set()
    top = cutoff.threshold
    for index, side in enumerate(report.sides):
        spread = len(side.levels) - 1
        offsets = [0.3 * k / spread - 0.15 for k in range(spread + 1)] if spread else [0.0]
        for offset, (level, summary) in zip(offsets, side.levels.items()):
            marker, colour = styles.get(level, ("o", "0.3"))
            values = [image.csa_mm2 for image in summary.images]
            top = max(top, *values)
            axis.scatter([index + offset] * len(values), values, marker=marker, color=colour, alpha=0.6, s=22,
                         label=None if level in shown else f"{level} image")
            axis.plot([index + offset - 0.1, index + offset + 0.1], [summary.mean_mm2] * 2, color=colour, linewidth=2)
            shown.add(level)
    axis.axhline(cutoff.threshold, color="0.4", linestyle="--", linewidth=1,
                 label=f"inlet cut-off {cutoff.threshold:g} mm$^2$")
    axis.set_xticks(range(len(report.sides)))
    axis.set_xlim(-0.6, len(report.sides) - 0.4)
    axis.set_xticklabels([f"{s.patient}\n{s.side}" for s in report.sides], fontsize=8)
    axis.set_ylim(0, top * 1.15)
    axis.set_ylabel("CSA (mm$^2$); bars: means")
    axis.set_title("Median nerve CSA per patient and side")
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
