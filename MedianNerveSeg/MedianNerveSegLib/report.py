"""The clinical CSA report: per patient and side, each image's CSA, their mean, SD and n per level,
the wrist-to-forearm ratio and delta-CSA where a forearm level exists, each against a cut-off
from the literature. Research use: the report says where a figure stands, never a diagnosis.

Input is one or more results files (``segment`` / ``measure``); output report.json,
report.md and report.html (with the images' overlays and a CSA plot) in a new folder.
"""

from __future__ import annotations

import html
import json
import math
import shutil
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from .io import atomic_write
from .results import RESULTS_FILE, FrameResult, read_results, standing_rows
from .uncertainty import REVIEW_FLAG

PathLike = Union[str, Path]
DISCLAIMER = ("Research use only, not a diagnosis: carpal tunnel syndrome is diagnosed clinically, with nerve "
              "conduction studies; cut-offs differ between populations, devices and protocols.")
REPORT_FILES = ("report.json", "report.md", "report.html")


@dataclass(frozen=True)
class Cutoff:
    """A figure is "at or above" its cut-off when ``value >= threshold``."""

    key: str
    label: str
    threshold: float
    unit: str
    source: str


DEFAULT_CUTOFFS: Tuple[Cutoff, ...] = (
    Cutoff("inlet_csa_mm2", "CSA at the carpal tunnel inlet", 10.0, "mm^2",
           "Cartwright MS et al. Evidence-based guideline: neuromuscular ultrasound for the diagnosis of carpal "
           "tunnel syndrome. Muscle Nerve 2012;46:287-293 (wrist cut-offs of 8.5 to 10 mm^2; 10 is widely used)"),
    Cutoff("wfr", "Wrist-to-forearm ratio", 1.4, "",
           "Hobson-Webb LD et al. The ultrasonographic wrist-to-forearm median nerve area ratio in carpal tunnel "
           "syndrome. Clin Neurophysiol 2008;119:1353-1357"),
    Cutoff("delta_csa_mm2", "Delta-CSA (inlet minus forearm)", 2.0, "mm^2",
           "Klauser AS et al. Carpal tunnel syndrome assessment with US: value of additional cross-sectional "
           "area measurements of the median nerve in patients versus healthy volunteers. Radiology "
           "2009;250:171-177"),
)


def inlet_cutoff(cutoffs: Sequence[Cutoff] = DEFAULT_CUTOFFS) -> Cutoff:
    return next(c for c in cutoffs if c.key == "inlet_csa_mm2")


def load_cutoffs(path: Optional[PathLike]) -> Tuple[Cutoff, ...]:
    """The default cut-offs, with the thresholds (and sources) of a JSON file ``{key: {threshold, source}}``."""
    if path is None:
        return DEFAULT_CUTOFFS
    try:
        given = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable cut-off file ({error})") from None
    known = {c.key: c for c in DEFAULT_CUTOFFS}
    unknown = set(given) - set(known) if isinstance(given, dict) else {"(not an object)"}
    if unknown:
        raise ValueError(f"{path}: unknown cut-offs {sorted(unknown)}; known: {sorted(known)}")
    cutoffs = []
    for key, cutoff in known.items():
        entry = given.get(key, {})
        threshold = entry.get("threshold", cutoff.threshold) if isinstance(entry, dict) else None
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not math.isfinite(threshold):
            raise ValueError(f"{path}: {key}.threshold must be a number")
        source = entry.get("source", cutoff.source if threshold == cutoff.threshold else "")
        if not source:
            raise ValueError(f"{path}: {key}: a changed threshold needs its source")
        cutoffs.append(Cutoff(key, cutoff.label, float(threshold), cutoff.unit, str(source)))
    return tuple(cutoffs)


@dataclass
class ImageCSA:
    image: str
    frame: int
    csa_mm2: float
    overlay: str = ""  # the overlay copied into the report folder ('' when none was written)
    acquired: str = ""  # ISO date and time of the acquisition, when the file gave it
    low_mm2: Optional[float] = None  # the CSA interval (uncertainty.py), when the row has one
    high_mm2: Optional[float] = None
    review: bool = False  # the interval is wide: check the contour

    def text(self, unit: str = "") -> str:
        """'10.21' or '10.21 mm² (range 9.6-10.9, REVIEW)' (with ``unit`` " mm²")."""
        extra = ([f"range {self.low_mm2:.1f}-{self.high_mm2:.1f}"] if self.low_mm2 is not None else []) + (
            ["REVIEW"] if self.review else [])
        return f"{self.csa_mm2:.2f}{unit}" + (f" ({', '.join(extra)})" if extra else "")


@dataclass
class LevelSummary:
    n: int
    mean_mm2: float
    sd_mm2: Optional[float]  # None for one image
    images: List[ImageCSA]


@dataclass
class Verdict:
    key: str
    value: Optional[float]
    at_or_above: Optional[bool]  # None when the figure cannot be formed


@dataclass
class SideSummary:
    patient: str
    side: str
    levels: Dict[str, LevelSummary]
    wfr: Optional[float] = None
    delta_csa_mm2: Optional[float] = None
    verdicts: List[Verdict] = field(default_factory=list)


@dataclass
class Report:
    sides: List[SideSummary]
    excluded: List[Dict[str, str]]  # image, frame and why it is not in any figure
    cutoffs: List[Cutoff]
    disclaimer: str = DISCLAIMER


def _exclusion(row: FrameResult) -> str:
    if row.error:
        return f"error: {row.error}"
    if not row.found:
        return "no nerve found"
    if row.area_mm2 is None:
        return "spacing unknown: CSA in pixels only (give --spacing, or calibrate)"
    if "implausible-csa" in row.flags:
        return f"implausible CSA {row.area_mm2:.2f} mm^2 (check the contour and the spacing)"
    return ""


def _level(rows: List[Tuple[FrameResult, str]]) -> LevelSummary:
    values = [row.area_mm2 for row, _ in rows]
    return LevelSummary(len(values), statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None,
                        [ImageCSA(row.image, row.frame, row.area_mm2, overlay, row.acquired, row.csa_low_mm2,
                                  row.csa_high_mm2, REVIEW_FLAG in row.flags) for row, overlay in rows])


def summarise(rows: Sequence[Tuple[FrameResult, str]], cutoffs: Sequence[Cutoff] = DEFAULT_CUTOFFS) -> Report:
    """The report of results rows, each with the name of its overlay in the report folder ('' if none)."""
    groups: Dict[Tuple[str, str], Dict[str, List[Tuple[FrameResult, str]]]] = {}
    excluded = []
    for row, overlay in rows:
        reason = _exclusion(row)
        if reason:
            excluded.append({"image": row.image, "frame": str(row.frame), "reason": reason})
            continue
        key = (row.patient or "(no patient id)", row.side or "side unknown")
        groups.setdefault(key, {}).setdefault(row.level or "inlet", []).append((row, overlay))
    by_key = {c.key: c for c in cutoffs}
    sides = []
    for (patient, side), levels in sorted(groups.items()):
        summary = SideSummary(patient, side, {level: _level(items) for level, items in sorted(levels.items())})
        inlet, forearm = summary.levels.get("inlet"), summary.levels.get("forearm")
        if inlet and forearm:
            summary.wfr = inlet.mean_mm2 / forearm.mean_mm2
            summary.delta_csa_mm2 = inlet.mean_mm2 - forearm.mean_mm2
        values = {"inlet_csa_mm2": inlet.mean_mm2 if inlet else None, "wfr": summary.wfr,
                  "delta_csa_mm2": summary.delta_csa_mm2}
        summary.verdicts = [Verdict(key, value, None if value is None else value >= by_key[key].threshold)
                            for key, value in values.items() if key in by_key]
        sides.append(summary)
    return Report(sides, excluded, list(cutoffs))


# ----------------------------------------------------------------------------- writing

def _collect(results: Sequence[PathLike], images_dir: Path) -> List[Tuple[FrameResult, str]]:
    """The standing row of each image and frame of the results files (a rerun's retried frame once), its
    overlay copied into ``images_dir`` (names kept unique). An image (and frame) in two of them is refused
    before anything is written: a mean would count it twice."""
    read: List[Tuple[int, Path, FrameResult]] = []
    seen: Dict[Tuple[str, int], Path] = {}
    for index, given in enumerate(results):
        path = Path(given)
        csv_path = path / RESULTS_FILE if path.is_dir() else path
        if not csv_path.is_file():
            raise FileNotFoundError(f"{given}: no {RESULTS_FILE} there")
        for row in standing_rows(read_results(csv_path)):
            key = (str(Path(row.image).resolve()) if row.image else row.image, row.frame)
            if key in seen:
                raise ValueError(f"{row.image} frame {row.frame} is in both {seen[key]} and {csv_path}: "
                                 "give each image's results once")
            seen[key] = csv_path
            read.append((index, csv_path, row))
    rows = []
    for index, csv_path, row in read:
        overlay = ""
        source = csv_path.parent / row.mask.replace("_mask.png", "_overlay.png") if row.mask else None
        if source is not None and source.is_file():
            overlay = f"{index}_{source.name}"
            images_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, images_dir / overlay)
        rows.append((row, overlay))
    return rows


def _number(value: Optional[float], digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _verdict_text(verdict: Verdict, cutoff: Cutoff) -> str:
    unit = f" {cutoff.unit}" if cutoff.unit else ""
    if verdict.value is None:
        return f"{cutoff.label}: n/a (needs {'a forearm level' if cutoff.key != 'inlet_csa_mm2' else 'inlet images'})"
    side = "at or above" if verdict.at_or_above else "below"
    return f"{cutoff.label}: {verdict.value:.2f}{unit}, {side} the cut-off {cutoff.threshold:g}{unit}"


def review_text(side: SideSummary) -> str:
    flagged = [i for level in side.levels.values() for i in level.images if i.review]
    n = sum(level.n for level in side.levels.values())
    return (f"{len(flagged)} of {n} images flagged REVIEW (wide CSA range): check their contours before "
            f"relying on the mean" if flagged else "")


def report_markdown(report: Report) -> str:
    cutoffs = {c.key: c for c in report.cutoffs}
    lines = ["# Median nerve CSA report", "", f"*{report.disclaimer}*", ""]
    for side in report.sides:
        lines += [f"## {side.patient}, {side.side}", "", "| level | n | mean CSA (mm^2) | SD (mm^2) | images (mm^2) |",
                  "|---|---|---|---|---|"]
        for level, summary in side.levels.items():
            images = ", ".join(f"{Path(i.image).name}{f' f{i.frame}' if i.frame else ''}"
                               f"{f' ({i.acquired})' if i.acquired else ''}: {i.text()}" for i in summary.images)
            lines.append(f"| {level} | {summary.n} | {summary.mean_mm2:.2f} | {_number(summary.sd_mm2)} | {images} |")
        lines += [""] + [f"- {_verdict_text(v, cutoffs[v.key])}" for v in side.verdicts] + [
            f"- {text}" for text in [review_text(side)] if text] + [""]
    if report.excluded:
        lines += ["## Not in any figure", ""] + [f"- {e['image']} frame {e['frame']}: {e['reason']}"
                                                  for e in report.excluded] + [""]
    lines += ["## Cut-offs", ""] + [f"- {c.label} >= {c.threshold:g}{' ' + c.unit if c.unit else ''}: {c.source}"
                                    for c in report.cutoffs]
    return "\n".join(lines) + "\n"


_STYLE = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}table{border-collapse:collapse;"
          "margin:.5em 0}td,th{border:1px solid #bbb;padding:.3em .6em;text-align:left}.above{color:#b00;"
          "font-weight:bold}.note{color:#555;font-style:italic}figure{display:inline-block;margin:.3em}"
          "figure img{width:18em}figcaption{font-size:.85em}")


def report_html(report: Report, plot: str) -> str:
    esc = html.escape
    cutoffs = {c.key: c for c in report.cutoffs}
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Median nerve CSA report</title>"
             f"<style>{_STYLE}</style></head><body><h1>Median nerve CSA report</h1>",
             f"<p class='note'>{esc(report.disclaimer)}</p>"]
    if plot:
        parts.append(f"<img src='{esc(plot)}' alt='CSA per patient and side against the inlet cut-off' "
                     f"style='max-width:100%'>")
    for side in report.sides:
        parts.append(f"<h2>{esc(side.patient)}, {esc(side.side)}</h2><table><tr><th>level</th><th>n</th>"
                     "<th>mean CSA (mm²)</th><th>SD (mm²)</th></tr>")
        for level, summary in side.levels.items():
            parts.append(f"<tr><td>{esc(level)}</td><td>{summary.n}</td><td>{summary.mean_mm2:.2f}</td>"
                         f"<td>{_number(summary.sd_mm2)}</td></tr>")
        parts.append("</table><ul>")
        for verdict in side.verdicts:
            css = " class='above'" if verdict.at_or_above else ""
            text = _verdict_text(verdict, cutoffs[verdict.key]).replace("mm^2", "mm²")
            parts.append(f"<li{css}>{esc(text)}</li>")
        review = review_text(side)
        parts.append((f"<li class='above'>{esc(review)}</li>" if review else "") + "</ul>")
        for level, summary in side.levels.items():
            for image in summary.images:
                caption = f"{Path(image.image).name}{f' frame {image.frame}' if image.frame else ''}, {level}: " \
                          f"{image.text(' mm²')}" + (f", {image.acquired}" if image.acquired else "")
                img = f"<img src='images/{esc(image.overlay)}' alt='{esc(caption)}'>" if image.overlay else ""
                parts.append(f"<figure>{img}<figcaption>{esc(caption)}</figcaption></figure>")
    if report.excluded:
        parts.append("<h2>Not in any figure</h2><ul>" + "".join(
            f"<li>{esc(e['image'])} frame {esc(e['frame'])}: {esc(e['reason'])}</li>" for e in report.excluded)
            + "</ul>")
    parts.append("<h2>Cut-offs</h2><ul>" + "".join(
        f"<li>{esc(c.label)} &ge; {c.threshold:g}{' ' + esc(c.unit.replace('mm^2', 'mm²')) if c.unit else ''}: "
        f"{esc(c.source)}</li>"
        for c in report.cutoffs) + "</ul></body></html>")
    return "".join(parts)


def write_report(results: Sequence[PathLike], out_dir: PathLike, cutoffs: Sequence[Cutoff] = DEFAULT_CUTOFFS) -> Report:
    """report.json, report.md, report.html, the overlays (images/) and report_csa.png in ``out_dir``, from
    results files. A folder that already holds a report is refused: nothing is overwritten."""
    out_dir = _new_report_folder(out_dir)
    return _write(summarise(_collect(results, out_dir / "images"), cutoffs), out_dir)


def write_report_rows(rows: Sequence[FrameResult], out_dir: PathLike,
                      cutoffs: Sequence[Cutoff] = DEFAULT_CUTOFFS) -> Report:
    """The report of results rows without overlays (the Slicer module's measurement table)."""
    out_dir = _new_report_folder(out_dir)
    return _write(summarise([(row, "") for row in rows], cutoffs), out_dir)


def _new_report_folder(out_dir: PathLike) -> Path:
    out_dir = Path(out_dir)
    taken = [name for name in REPORT_FILES if (out_dir / name).exists()]
    if taken:
        raise FileExistsError(f"{out_dir} already holds {', '.join(taken)}; give another --out")
    return out_dir


def _write(report: Report, out_dir: Path) -> Report:
    from .plots import plot_report_csa

    out_dir.mkdir(parents=True, exist_ok=True)
    plot = "report_csa.png" if report.sides else ""
    if plot:
        plot_report_csa(report, out_dir / plot)
    text = json.dumps(asdict(report), indent=1) + "\n"
    atomic_write(out_dir / "report.json", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    markdown, page = report_markdown(report), report_html(report, plot)
    atomic_write(out_dir / "report.md", lambda tmp: Path(tmp).write_text(markdown, encoding="utf-8"))
    atomic_write(out_dir / "report.html", lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return report
