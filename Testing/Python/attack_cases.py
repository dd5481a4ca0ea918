"""The attack: malformed or awkward inputs for segment, measure, evaluate, model folders and the store.

Each :class:`Case` writes its inputs into a scratch folder and says what a trustworthy tool
does with them: a clear error (exit 1 or 2, no traceback, a stderr line naming the file or
option), a correct result (exit 0 or 1 and the numbers checked), or either. :func:`run_case`
runs the CLI in-process and classifies what really happened as one of :data:`OUTCOMES`.
Used by ``test_attack.py`` (every case must be a clear error or correct) and by
``benchmarks/attack_tally.py`` (the tally before and after a change).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

CLEAR, CORRECT, TRACEBACK, WRONG, UNCLEAR = "clear error", "correct", "traceback", "silently wrong", "unclear error"
OUTCOMES = (CLEAR, CORRECT, TRACEBACK, WRONG, UNCLEAR)
MODEL = "median_nerve_unet_small"  # the small shipped model: fast enough for every segment case
SPACING = 0.062
SIDE = 10  # the known square mask: SIDE x SIDE pixels


@dataclass
class Outcome:
    """What one CLI call did."""

    rc: Optional[int]
    stdout: str
    stderr: str
    out: Path
    escaped: str = ""  # the exception that escaped main(), formatted


@dataclass
class Run:
    """A prepared CLI call: argv, what a clear error names, and how to check a result."""

    argv: List[str]
    names: Sequence[str]
    check: Optional[Callable[[Outcome], Optional[str]]] = None  # None: correct, else what is wrong
    out: Optional[Path] = None
    cwd: Optional[Path] = None


@dataclass
class Case:
    name: str
    group: str
    expect: str  # "error", "result" or "either"
    build: Callable[[Path], Run]


@dataclass
class Verdict:
    name: str
    group: str
    expect: str
    outcome: str
    line: str  # the output line that shows it

    @property
    def ok(self) -> bool:
        return self.outcome in (CLEAR, CORRECT)


# ----------------------------------------------------------------------------- running


def _call_main(argv: List[str], cwd: Optional[Path]) -> Tuple[Optional[int], str, str, str]:
    from MedianNerveSegLib import cli

    out, err, escaped = io.StringIO(), io.StringIO(), ""
    previous = os.getcwd()
    try:
        if cwd:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = cli.main([str(a) for a in argv])
            except SystemExit as stop:
                rc = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)
            except Exception:  # an escaped exception is what the attack looks for
                rc, escaped = None, traceback.format_exc()
    finally:
        os.chdir(previous)
    return rc, out.getvalue(), err.getvalue(), escaped


def _naming_line(text: str, names: Sequence[str]) -> str:
    """The first error line naming one of ``names`` (else any such line but argparse's usage)."""
    naming = [line.strip() for line in text.splitlines() if any(str(name) in line for name in names)]
    errors = [line for line in naming if "error" in line.lower()]
    others = [line for line in naming if not line.startswith("usage:")]
    return (errors or others or [""])[0]


# Python's own messages passed on as the reason (not as a detail in parentheses after one):
# they name no cause a user can act on.
INTERNAL_MESSAGES = ("is not defined", "has no attribute", "has no len()", "unexpected keyword argument",
                     "index out of range", "not supported between instances", "cannot convert float",
                     "object is not", "NoneType", "must be a mapping", "[Errno 22]", "ufunc ", "Expecting value:")


def _internal(line: str) -> bool:
    import re

    reason, previous = line, None
    while reason != previous:  # drop the parenthesised details, innermost first
        reason, previous = re.sub(r"\([^()]*\)", "", reason), reason
    return any(text in reason for text in INTERNAL_MESSAGES)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _checked(run: Run, outcome: Outcome) -> Optional[str]:
    try:
        return run.check(outcome)  # type: ignore[misc]
    except Exception as error:  # the check itself could not read the result: that is a problem
        return f"result unreadable ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"


def classify(case: Case, run: Run, outcome: Outcome) -> Verdict:
    """Clear error / correct / traceback / silently wrong / unclear error, with the line that shows it."""
    def verdict(kind: str, line: str) -> Verdict:
        return Verdict(case.name, case.group, case.expect, kind, line[:300])

    if outcome.escaped or "Traceback" in outcome.stderr:
        text = outcome.escaped or outcome.stderr
        return verdict(TRACEBACK, _last_line(text))
    if outcome.rc not in (0, 1, 2):
        return verdict(UNCLEAR, f"exit {outcome.rc}: {_last_line(outcome.stderr)}")
    problem = None
    if case.expect in ("result", "either") and run.check is not None and outcome.rc in (0, 1):
        problem = _checked(run, outcome)
        if problem is None:
            return verdict(CORRECT, _last_line(outcome.stdout))
    if problem and outcome.rc == 1 and not problem.startswith(("exit", "result unreadable")):
        return verdict(WRONG, f"exit 1: {problem}")
    if outcome.rc in (1, 2):
        named = _naming_line(outcome.stderr, run.names)
        if case.expect == "result":
            return verdict(UNCLEAR, f"expected a result; exit {outcome.rc}: {named or _last_line(outcome.stderr)}")
        if named and _internal(named):
            return verdict(UNCLEAR, f"internal message: {named}")
        if named and len(named) < 400:
            return verdict(CLEAR, named)
        return verdict(UNCLEAR, f"exit {outcome.rc}, no line names {list(run.names)[:2]}: "
                                f"{_last_line(outcome.stderr) or _last_line(outcome.stdout)}")
    if case.expect == "error":
        return verdict(WRONG, f"exit 0, expected an error: {_last_line(outcome.stdout)}")
    return verdict(WRONG, f"exit 0: {problem or 'a result where only an error is right'}")


def run_case(case: Case, scratch: Path) -> Verdict:
    """Build the case's inputs under ``scratch`` (a fresh folder), run it, classify it."""
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        run = case.build(scratch)
    except Exception as error:  # a broken case is reported, not hidden
        return Verdict(case.name, case.group, case.expect, UNCLEAR, f"case could not be built: {error!r}")
    rc, stdout, stderr, escaped = _call_main(run.argv, run.cwd)
    return classify(case, run, Outcome(rc, stdout, stderr, run.out or scratch, escaped))


def tally(verdicts: Sequence[Verdict]) -> dict:
    counts = {"tried": len(verdicts)}
    counts.update({kind: sum(v.outcome == kind for v in verdicts) for kind in OUTCOMES})
    return counts


# ----------------------------------------------------------------------------- inputs


def ultrasound(h: int = 64, w: int = 80, seed: int = 0) -> np.ndarray:
    """A speckled frame with a dark oval: uint8 (h, w)."""
    rng = np.random.default_rng(seed)
    frame = rng.normal(110, 25, (h, w))
    yy, xx = np.mgrid[:h, :w]
    frame[((yy - h / 2) / (h / 5)) ** 2 + ((xx - w / 2) / (w / 4)) ** 2 < 1] -= 60
    return np.clip(frame, 0, 255).astype(np.uint8)


def square_mask(h: int = 64, w: int = 80, top: int = 20, left: int = 30) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[top:top + SIDE, left:left + SIDE] = 1
    return mask


def save_pil(path: Path, array: np.ndarray, mode: Optional[str] = None, **options) -> Path:
    from PIL import Image

    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(path, **options)
    return path


def save_palette_png(path: Path, pixels: np.ndarray, with_palette: bool = True) -> Path:
    """A palette (P mode) PNG; without its PLTE chunk when ``with_palette`` is False."""
    from PIL import Image

    image = Image.fromarray(pixels).convert("P")
    image.save(path, format="PNG")
    if not with_palette:
        _strip_png_chunk(path, b"PLTE")
    return path


def _strip_png_chunk(path: Path, chunk: bytes) -> None:
    """Remove every chunk of one type from a PNG (e.g. PLTE: a palette image without its palette)."""
    import struct

    data = path.read_bytes()
    out, pos = bytearray(data[:8]), 8
    while pos < len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        end = pos + 12 + length
        if data[pos + 4:pos + 8] != chunk:
            out += data[pos:end]
        pos = end
    path.write_bytes(bytes(out))


def save_tiff(path: Path, array: np.ndarray) -> Path:
    import tifffile

    tifffile.imwrite(path, array, photometric="minisblack")  # pages, not a planar RGB guess
    return path


def save_nrrd(path: Path, array: np.ndarray, **header) -> Path:
    import nrrd

    nrrd.write(str(path), array, header=header or None, index_order="C")
    return path


def save_itk(path: Path, array: np.ndarray, spacing: Optional[Tuple[float, ...]] = None) -> Path:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    if spacing is not None:
        image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def save_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", region_cm=None,
               pixel_spacing=None, frames: int = 1, with_pixels: bool = True, edit=None) -> Path:
    """A DICOM ultrasound file as test_io.write_dicom writes it, with a PatientID; ``edit(ds)`` damages it."""
    from pydicom import dcmread
    from pydicom.filewriter import dcmwrite

    from test_io import write_dicom

    grey = photometric != "RGB"  # test_io's writer makes every other photometric 3 samples per pixel
    write_dicom(path, pixels, "MONOCHROME2" if grey else photometric, region_cm, pixel_spacing, frames,
                with_pixels=with_pixels)
    ds = dcmread(path)
    ds.PatientID, ds.PhotometricInterpretation = "Pz901", photometric
    if edit:
        edit(ds)
    dcmwrite(path, ds, enforce_file_format=True)
    return path



def truncated(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: max(1, len(data) // 2)])
    return path


# ----------------------------------------------------------------------------- result checks


def _rows(outcome: Outcome):
    """The rows of the results file, typed by the project's results module (a plain reading for
    code from before that module existed)."""
    try:
        from MedianNerveSegLib.results import read_results
    except ImportError:
        return _plain_rows(outcome.out / "measurements.csv")
    return read_results(outcome.out / "measurements.csv")


def _number(text: str, kind=float):
    try:
        return kind(float(text)) if text not in ("", "None", "nan") else None
    except ValueError:
        return None


def _plain_rows(path: Path):
    import csv
    import re
    from types import SimpleNamespace

    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            numbers = [float(v) for v in re.findall(r"[-+0-9.eE]+|nan|inf", row.get("spacing_mm", ""))]
            rows.append(SimpleNamespace(
                image=row.get("image", ""), frame=_number(row.get("frame", "0"), int), model=row.get("model", ""),
                found={"True": True, "yes": True, "False": False, "no": False}.get(row.get("found", "")),
                area_mm2=_number(row.get("area_mm2", "")), area_px=_number(row.get("area_px", ""), int),
                spacing_mm=tuple(numbers) if len(numbers) == 2 else None, error=row.get("error", ""),
                flags=row.get("flags", ""), mask=row.get("mask") or f"{Path(row.get('image', '')).stem}_mask.png"))
    return rows


def _flags(row) -> List[str]:
    flags = row.flags if isinstance(row.flags, (list, tuple)) else str(row.flags or "").split(";")
    return [f.replace("_", "-").lower() for f in flags if f]


def _close(a: float, b: float, rel: float = 1e-3) -> bool:
    return a is not None and math.isclose(float(a), float(b), rel_tol=rel, abs_tol=1e-6)


def row_problem(row, spacing: Optional[Tuple[float, float]], area_px: Optional[int] = None) -> Optional[str]:
    """What is wrong with one result row given the true spacing (None: unknown) and pixel area."""
    if row.error:
        return f"error row: {row.error}"
    if area_px is not None and row.area_px != area_px:
        return f"area_px {row.area_px}, expected {area_px}"
    if row.area_px is None or row.area_px < 0:
        return f"area_px {row.area_px!r}"
    if spacing is None:
        if row.area_mm2 is not None or row.spacing_mm is not None:
            return f"spacing unknown, yet spacing {row.spacing_mm} and CSA {row.area_mm2} mm2"
        if "spacing-unknown" not in _flags(row):
            return f"spacing unknown but not flagged (flags {row.flags!r})"
        return None
    if row.spacing_mm is None or not all(_close(a, b) for a, b in zip(row.spacing_mm, spacing)):
        return f"spacing {row.spacing_mm}, expected {spacing}"
    if not _close(row.area_mm2, row.area_px * spacing[0] * spacing[1]):
        return f"CSA {row.area_mm2} mm2 != {row.area_px} px x {spacing[0]} x {spacing[1]}"
    return None


def segmented(spacing: Optional[Tuple[float, float]], frames: int = 1, shape: Optional[Tuple[int, int]] = None,
              spacing_either: bool = False):
    """Check: ``frames`` good rows, the given spacing (or unknown and flagged), masks of ``shape``."""
    def check(outcome: Outcome) -> Optional[str]:
        rows = _rows(outcome)
        if outcome.rc != 0:
            return f"exit {outcome.rc}"
        if len(rows) != frames:
            return f"{len(rows)} row(s), expected {frames}"
        for row in rows:
            problem = row_problem(row, spacing)
            if problem and spacing_either:
                problem = row_problem(row, None)
            if problem:
                return problem
            if shape is not None:
                from PIL import Image

                with Image.open(outcome.out / row.mask) as mask:
                    if mask.size[::-1] != tuple(shape):
                        return f"mask {row.mask} is {mask.size[::-1]}, the image {shape}"
        return None
    return check


def measured(spacing: Optional[Tuple[float, float]], area_px: int = SIDE * SIDE, spacing_either: bool = False,
             tolerance_px: int = 0):
    """Check for `measure --out`: one row, the known pixel area and CSA = px x spacing^2 (or unknown, flagged)."""
    def check(outcome: Outcome) -> Optional[str]:
        rows = _rows(outcome)
        if outcome.rc != 0 or len(rows) != 1:
            return f"exit {outcome.rc}, {len(rows)} row(s)"
        row = rows[0]
        if row.error:
            return f"error row: {row.error}"
        if abs((row.area_px or 0) - area_px) > tolerance_px:
            return f"area_px {row.area_px}, expected {area_px}"
        problem = row_problem(row, spacing)
        if problem and spacing_either:
            problem = row_problem(row, None)
        return problem
    return check


# ----------------------------------------------------------------------------- cases: images


def _segment(path_of: Callable[[Path], Path], check=None, extra: Sequence[str] = (), names: Sequence[str] = ()):
    def build(tmp: Path) -> Run:
        path = path_of(tmp)
        out = tmp / "out"
        return Run(["segment", str(path), "--out", str(out), "--model", MODEL, *extra],
                   [path.name, *names], check, out)
    return build


def _img(name: str, write: Callable[[Path], object]) -> Callable[[Path], Path]:
    def path_of(tmp: Path) -> Path:
        path = tmp / name
        write(path)
        return path
    return path_of


def _bytes(name: str, data: bytes) -> Callable[[Path], Path]:
    return _img(name, lambda p: p.write_bytes(data))


U8 = ultrasound()
SHAPE = U8.shape
ISO = (SPACING, SPACING)


def image_cases() -> List[Case]:
    seg = _segment
    unknown = segmented(None, shape=SHAPE)
    known = segmented(ISO, shape=SHAPE)
    either_spacing = segmented(ISO, spacing_either=True)  # the file's 0.062 mm, or unknown and flagged
    rgb = np.stack([U8, U8 // 2, 255 - U8], -1).astype(np.uint8)
    f32 = U8.astype(np.float32) / 255
    nan = f32.copy()
    nan[10, 10] = np.nan
    inf = f32.copy()
    inf[5, 5] = np.inf
    clip = np.stack([U8, np.roll(U8, 3, 1), np.roll(U8, 6, 1)])
    cases = [
        ("png 8-bit grey", "result", seg(_img("g8.png", lambda p: save_pil(p, U8)), unknown)),
        ("png 16-bit grey", "result", seg(_img("g16.png", lambda p: save_pil(p, U8.astype(np.uint16) * 257)), unknown)),
        ("png RGB", "result", seg(_img("rgb.png", lambda p: save_pil(p, rgb)), unknown)),
        ("png RGBA", "result", seg(_img("rgba.png", lambda p: save_pil(p, rgb, "RGBA")), unknown)),
        ("png grey+alpha", "result", seg(_img("la.png", lambda p: save_pil(p, U8, "LA")), unknown)),
        ("png palette", "result", seg(_img("pal.png", lambda p: save_palette_png(p, U8)), unknown)),
        ("png palette without PLTE", "either", seg(_img("nopal.png", lambda p: save_palette_png(p, U8, False)), unknown)),
        ("png bilevel", "either", seg(_img("bw.png", lambda p: save_pil(p, (U8 > 100).astype(np.uint8) * 255, "1")), unknown)),
        ("bmp grey", "result", seg(_img("g.bmp", lambda p: save_pil(p, U8)), unknown)),
        ("bmp RGB", "result", seg(_img("c.bmp", lambda p: save_pil(p, rgb)), unknown)),
        ("jpeg grey", "result", seg(_img("g.jpg", lambda p: save_pil(p, U8)), unknown)),
        ("jpeg RGB", "result", seg(_img("c.jpeg", lambda p: save_pil(p, rgb)), unknown)),
        ("tiff 8-bit", "result", seg(_img("g.tif", lambda p: save_tiff(p, U8)), unknown)),
        ("tiff 16-bit", "result", seg(_img("g16.tiff", lambda p: save_tiff(p, U8.astype(np.uint16) * 257)), unknown)),
        ("tiff float32", "result", seg(_img("f.tif", lambda p: save_tiff(p, f32)), unknown)),
        ("tiff multi-page", "result", seg(_img("clip.tif", lambda p: save_tiff(p, clip)), segmented(None, frames=3))),
        ("tiff float NaN pixel", "error", seg(_img("nan.tif", lambda p: save_tiff(p, nan)))),
        ("tiff float Inf pixel", "error", seg(_img("inf.tif", lambda p: save_tiff(p, inf)))),
        ("png constant 0", "result", seg(_img("zero.png", lambda p: save_pil(p, np.zeros(SHAPE, np.uint8))),
                                         _not_found(SHAPE))),
        ("png constant 255", "result", seg(_img("white.png", lambda p: save_pil(p, np.full(SHAPE, 255, np.uint8))),
                                           _not_found(SHAPE))),
        ("png 1x1", "either", seg(_img("tiny.png", lambda p: save_pil(p, np.array([[7]], np.uint8))),
                                  segmented(None, shape=(1, 1)))),
        ("png 2x3", "either", seg(_img("tiny23.png", lambda p: save_pil(p, U8[:2, :3])),
                                  segmented(None, shape=(2, 3)))),
        ("png 1x3000", "either", seg(_img("thin.png", lambda p: save_pil(p, ultrasound(1, 3000))),
                                     segmented(None, shape=(1, 3000)))),
        ("png 3000x3000", "either", seg(_img("huge.png", lambda p: save_pil(p, ultrasound(3000, 3000))),
                                        segmented(None, shape=(3000, 3000)))),
        ("png named .jpg", "either", seg(_img("png_as.jpg", lambda p: save_pil(p, U8, format="PNG")), unknown)),
        ("jpeg named .png", "either", seg(_img("jpg_as.png", lambda p: save_pil(p, U8, format="JPEG")), unknown)),
        ("text named .png", "error", seg(_bytes("text.png", b"this is not an image\n"))),
        ("text named .dcm", "error", seg(_bytes("text.dcm", b"this is not a DICOM file\n" * 20))),
        ("text named .nrrd", "error", seg(_bytes("text.nrrd", b"hello\n"))),
        ("text named .nii.gz", "error", seg(_bytes("text.nii.gz", b"hello\n"))),
        ("unsupported .txt", "error", seg(_bytes("notes.txt", b"0.062\n"))),
        ("no extension, not DICOM", "error", seg(_bytes("noext", b"\x00" * 300))),
        ("missing file", "error", seg(lambda tmp: tmp / "missing.png")),
    ]
    for suffix in (".png", ".bmp", ".jpg", ".tif", ".nrrd", ".dcm", ".nii.gz", ".mha"):
        cases.append((f"empty {suffix}", "error", seg(_bytes(f"empty{suffix}", b""))))
    writers = {".png": lambda p: save_pil(p, U8), ".bmp": lambda p: save_pil(p, U8),
               ".jpg": lambda p: save_pil(p, U8), ".tif": lambda p: save_tiff(p, U8),
               ".nrrd": lambda p: save_nrrd(p, U8, encoding="raw"), ".dcm": lambda p: save_dicom(p, U8),
               ".mha": lambda p: save_itk(p, U8)}
    for suffix, write in writers.items():
        cases.append((f"truncated {suffix}", "error",
                      seg(_img(f"cut{suffix}", lambda p, w=write: truncated(Path(w(p) or p))))))
    cases += nrrd_itk_cases(unknown, known, either_spacing, nan, inf, clip, f32)
    cases += dicom_cases(unknown, known, either_spacing, rgb, clip)
    return [Case(name, "image", expect, build) for name, expect, build in cases]


def _not_found(shape):
    def check(outcome: Outcome) -> Optional[str]:
        problem = segmented(None, shape=shape)(outcome)
        if problem:
            return problem
        row = _rows(outcome)[0]
        return None if row.found is False and row.area_px == 0 else f"found {row.found}, {row.area_px} px in a constant frame"
    return check


def nrrd_itk_cases(unknown, known, either_spacing, nan, inf, clip, f32):
    seg = _segment
    return [
        ("nrrd no spacing", "result", seg(_img("nospace.nrrd", lambda p: save_nrrd(p, U8)), unknown)),
        ("nrrd spacings nan", "result", seg(_img("nanspace.nrrd", lambda p: save_nrrd(
            p, U8, spacings=np.array([np.nan, np.nan]))), unknown)),
        ("nrrd spacings 0.062", "result", seg(_img("space.nrrd", lambda p: save_nrrd(
            p, U8, spacings=np.array([SPACING, SPACING]))), known)),
        ("nrrd space directions 0.062", "result", seg(_img("dirs.nrrd", lambda p: save_nrrd(
            p, U8, **{"space dimension": 2,
            "space directions": np.array([[SPACING, 0], [0, SPACING]]), "space origin": np.zeros(2)})), known)),
        ("nrrd spacings 0", "either", seg(_img("zerospace.nrrd", lambda p: save_nrrd(
            p, U8, spacings=np.array([0.0, 0.0]))), unknown)),
        ("nrrd spacings negative", "either", seg(_img("negspace.nrrd", lambda p: save_nrrd(
            p, U8, spacings=np.array([-SPACING, -SPACING]))), unknown)),
        ("nrrd spacings inf", "either", seg(_img("infspace.nrrd", lambda p: save_nrrd(
            p, U8, spacings=np.array([np.inf, np.inf]))), unknown)),
        ("nrrd spacings 1 mm", "either", seg(_img("onemm.nrrd", lambda p: save_nrrd(
            p, U8, spacings=np.array([1.0, 1.0]))), segmented((1.0, 1.0)))),
        ("nrrd spacings 50 mm", "either", seg(_img("bigspace.nrrd", lambda p: save_nrrd(
            p, U8, spacings=np.array([50.0, 50.0]))), unknown)),
        ("nrrd 3D clip", "either", seg(_img("clip.nrrd", lambda p: save_nrrd(p, clip)), segmented(None, frames=3))),
        ("nrrd 4D", "either", seg(_img("four.nrrd", lambda p: save_nrrd(p, np.zeros((2, 3, 16, 16), np.uint8))))),
        ("nrrd float64", "result", seg(_img("f64.nrrd", lambda p: save_nrrd(p, U8.astype(np.float64))), unknown)),
        ("nrrd int16 negative", "result", seg(_img("i16.nrrd", lambda p: save_nrrd(
            p, U8.astype(np.int16) - 128)), unknown)),
        ("nrrd int64", "result", seg(_img("i64.nrrd", lambda p: save_nrrd(p, U8.astype(np.int64))), unknown)),
        ("nrrd float NaN pixel", "error", seg(_img("nanpix.nrrd", lambda p: save_nrrd(p, nan)))),
        ("nrrd float Inf pixel", "error", seg(_img("infpix.nrrd", lambda p: save_nrrd(p, inf)))),
        ("nrrd all NaN", "error", seg(_img("allnan.nrrd", lambda p: save_nrrd(p, np.full(SHAPE, np.nan, np.float32))))),
        ("nifti default spacing", "result", seg(_img("default.nii.gz", lambda p: save_itk(p, U8)), unknown)),
        ("nifti 0.062 spacing", "either", seg(_img("spaced.nii.gz", lambda p: save_itk(p, U8, (SPACING, SPACING))),
                                              either_spacing)),
        ("nifti NaN pixel", "error", seg(_img("nan.nii.gz", lambda p: save_itk(p, nan)))),
        ("mha default spacing", "result", seg(_img("default.mha", lambda p: save_itk(p, U8)), unknown)),
        ("mha 0.062 spacing", "result", seg(_img("spaced.mha", lambda p: save_itk(p, U8, (SPACING, SPACING))), known)),
        ("mha Inf pixel", "error", seg(_img("inf.mha", lambda p: save_itk(p, inf)))),
        ("mha 3D clip", "either", seg(_img("clip.mha", lambda p: save_itk(p, clip)), segmented(None, frames=3))),
        ("mha float32", "result", seg(_img("f32.mha", lambda p: save_itk(p, f32)), unknown)),
    ]


def _set(**values):
    def edit(ds):
        for key, value in values.items():
            setattr(ds, key, value)
    return edit


def _drop(*keywords):
    def edit(ds):
        for keyword in keywords:
            if keyword in ds:
                delattr(ds, keyword)
    return edit


def dicom_cases(unknown, known, either_spacing, rgb, clip):
    seg = _segment

    def dcm_k(name, pixels=U8, **kwargs):
        return _img(name, lambda p: save_dicom(p, pixels, **kwargs))

    return [
        ("dicom no spacing", "result", seg(dcm_k("plain.dcm"), unknown)),
        ("dicom US region 0.0062 cm", "result", seg(dcm_k("region.dcm", region_cm=SPACING / 10), known)),
        ("dicom US region NaN", "either", seg(dcm_k("region_nan.dcm", region_cm=float("nan")), unknown)),
        ("dicom US region Inf", "either", seg(dcm_k("region_inf.dcm", region_cm=float("inf")), unknown)),
        ("dicom US region 0", "either", seg(dcm_k("region_zero.dcm", region_cm=0.0), unknown)),
        ("dicom US region negative", "either", seg(dcm_k("region_neg.dcm", region_cm=-0.0062), unknown)),
        ("dicom US region 1e-9 cm", "either", seg(dcm_k("region_tiny.dcm", region_cm=1e-9), unknown)),
        ("dicom PixelSpacing 0.062", "result", seg(dcm_k("ps.dcm", pixel_spacing=["0.062", "0.062"]), known)),
        ("dicom PixelSpacing 'abc'", "either", seg(dcm_k("ps_abc.dcm", pixel_spacing=None,
                                                         edit=_raw_pixel_spacing(b"abc\\abc")), unknown)),
        ("dicom PixelSpacing one value", "either", seg(dcm_k("ps_one.dcm", pixel_spacing=["0.062"]), unknown)),
        ("dicom missing pixel data", "error", seg(dcm_k("nopix.dcm", with_pixels=False))),
        ("dicom BitsAllocated 16 for 8-bit data", "error", seg(dcm_k("bits16.dcm", edit=_set(BitsAllocated=16,
                                                                                             BitsStored=16,
                                                                                             HighBit=15)))),
        ("dicom BitsAllocated 12", "error", seg(dcm_k("bits12.dcm", edit=_set(BitsAllocated=12)))),
        ("dicom BitsAllocated 0", "error", seg(dcm_k("bits0.dcm", edit=_set(BitsAllocated=0)))),
        ("dicom MONOCHROME1", "result", seg(dcm_k("mono1.dcm", photometric="MONOCHROME1"), unknown)),
        ("dicom RGB", "result", seg(dcm_k("rgb.dcm", pixels=rgb, photometric="RGB"), unknown)),
        ("dicom PALETTE COLOR without LUT", "error", seg(dcm_k("palette.dcm", photometric="PALETTE COLOR"))),
        ("dicom multi-frame with US region", "result", seg(dcm_k("clip.dcm", pixels=clip, frames=3,
                                                                 region_cm=SPACING / 10), segmented(ISO, frames=3))),
        ("dicom multi-frame, frames missing", "error", seg(dcm_k("short.dcm", pixels=clip, frames=3,
                                                                 edit=_set(NumberOfFrames=5)))),
        ("dicom Rows wrong", "error", seg(dcm_k("rows.dcm", edit=_set(Rows=200)))),
        ("dicom without extension", "either", seg(dcm_k("dicomfile", region_cm=SPACING / 10), known)),
        ("dicom named .png", "either", seg(dcm_k("dicom_as.png", region_cm=SPACING / 10), known)),
        ("dicom no Modality, no SOP class", "either", seg(dcm_k("bare.dcm", edit=_drop("Modality")), unknown)),
    ]


def _raw_pixel_spacing(raw: bytes):
    def edit(ds):
        from pydicom.dataelem import RawDataElement
        from pydicom.tag import Tag

        ds[Tag(0x0028, 0x0030)] = RawDataElement(Tag(0x0028, 0x0030), "DS", len(raw), raw, 0, False, True)
    return edit


# ----------------------------------------------------------------------------- cases: spacings and batches


BAD_SPACINGS = ("0", "-1", "nan", "inf", "1e-9", "1e9", "abc", "1,2,3", "", "0.062,0", "-0.062")


def spacing_cases() -> List[Case]:
    cases = []
    png = _img("scan.png", lambda p: save_pil(p, U8))
    for value in BAD_SPACINGS:
        cases.append(Case(f"segment --spacing {value!r}", "spacing", "error",
                          _segment(png, extra=["--spacing", value], names=["--spacing"])))
        cases.append(Case(f"measure --spacing {value!r}", "spacing", "error", _measure(
            "sq.png", lambda p: save_pil(p, square_mask() * 255), extra=["--spacing", value], names=["--spacing"])))
    cases += [
        Case("segment --spacing 0.062", "spacing", "result",
             _segment(png, segmented(ISO, shape=SHAPE), extra=["--spacing", "0.062"])),
        Case("segment --spacing overrides a NaN US region", "spacing", "result",
             _segment(_img("nanreg.dcm", lambda p: save_dicom(p, U8, region_cm=float("nan"))),
                      segmented(ISO), extra=["--spacing", "0.062"])),
        Case("segment --spacing overrides nrrd 1 mm", "spacing", "result",
             _segment(_img("one.nrrd", lambda p: save_nrrd(p, U8, spacings=np.array([1.0, 1.0]))),
                      segmented(ISO), extra=["--spacing", "0.062"])),
        Case("evaluate --spacing nan", "spacing", "error", _evaluate(4, 4, extra=["--spacing", "nan"],
                                                                    names=["--spacing"])),
    ]
    for value, pair in (("0.062", ISO), ("0.05,0.1", (0.05, 0.1)), ("0.05x0.1", (0.05, 0.1)),
                        ("0.005", (0.005, 0.005)), ("1.0", (1.0, 1.0))):
        cases.append(Case(f"measure --spacing {value}", "spacing", "result", _measure(
            "sq.png", lambda p: save_pil(p, square_mask() * 255), measured(pair), ["--spacing", value])))
    return cases


def batch_cases() -> List[Case]:
    def mixed(tmp: Path) -> Run:
        good1, good2 = save_pil(tmp / "a.png", U8), save_pil(tmp / "c.png", U8)
        bad = save_dicom(tmp / "b.dcm", U8, region_cm=float("nan"))
        text = (tmp / "d.png")
        text.write_bytes(b"not a png")
        out = tmp / "out"

        def check(outcome: Outcome) -> Optional[str]:
            rows = {Path(r.image).name: r for r in _rows(outcome)}
            if set(rows) != {"a.png", "b.dcm", "c.png", "d.png"}:
                return f"rows for {sorted(rows)}"
            for name in ("a.png", "c.png"):
                problem = row_problem(rows[name], None)
                if problem:
                    return f"{name}: {problem}"
            if not rows["d.png"].error:
                return "d.png (not an image) has no error row"
            if rows["b.dcm"].error == "" and row_problem(rows["b.dcm"], None):
                return f"b.dcm: {row_problem(rows['b.dcm'], None)}"
            if outcome.rc != 1 or "d.png" not in outcome.stderr:
                return f"exit {outcome.rc}; stderr does not name d.png"
            return None
        return Run(["segment", good1, bad, good2, text, "--out", out, "--model", MODEL], ["d.png"], check, out)

    def same_stems(tmp: Path, names=("a/scan.png", "b/scan.png")) -> Run:
        paths = []
        for name in names:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            paths.append(save_pil(tmp / name, U8))
        out = tmp / "out"

        def check(outcome: Outcome) -> Optional[str]:
            rows = _rows(outcome)
            if {r.image for r in rows} != {str(p) for p in paths}:
                return f"rows name {[r.image for r in rows]}"
            masks = {r.mask for r in rows}
            if len(masks) != len(paths) or not all((outcome.out / m).is_file() for m in masks):
                return f"masks {sorted(masks)} overwrite each other"
            return None
        return Run(["segment", *paths, "--out", out, "--model", MODEL], ["scan"], check, out)

    return [
        Case("segment batch with two bad files", "batch", "result", mixed),
        Case("segment a/scan.png b/scan.png", "batch", "result", same_stems),
        Case("segment scan.1.png scan.2.png", "batch", "result",
             lambda tmp: same_stems(tmp, ("scan.1.png", "scan.2.png"))),
        Case("segment scan.1.png scan.1.bmp", "batch", "result",
             lambda tmp: same_stems(tmp, ("scan.1.png", "scan.1.bmp"))),
    ]


# ----------------------------------------------------------------------------- cases: measure


def _measure(name: str, write, check=None, extra: Sequence[str] = (), names: Sequence[str] = ()):
    def build(tmp: Path) -> Run:
        path = tmp / name
        write(path)
        out = tmp / "out"
        out.mkdir()
        return Run(["measure", str(path), "--out", str(out / "measurements.csv"), *extra],
                   [path.name, *names], check, out)
    return build


def mask_cases() -> List[Case]:
    sq = square_mask()
    sp = ["--spacing", "0.062"]
    rgb = np.stack([sq * 255] * 3, -1).astype(np.uint8)
    nan = sq.astype(np.float32)
    nan[0, 0] = np.nan

    def seg_nrrd(p):
        from MedianNerveSegLib.io import write_segmentation_nrrd

        write_segmentation_nrrd(p, sq.astype(bool), (SPACING, SPACING))

    m = _measure
    cases = [
        ("mask png 0/255", "result", m("m.png", lambda p: save_pil(p, sq * 255), measured(ISO), sp)),
        ("mask png 0/1", "result", m("m01.png", lambda p: save_pil(p, sq), measured(ISO), sp)),
        ("mask png no spacing", "result", m("m.png", lambda p: save_pil(p, sq * 255), measured(None))),
        ("mask png 16-bit", "result", m("m16.png", lambda p: save_pil(p, sq.astype(np.uint16) * 65535),
                                        measured(ISO), sp)),
        ("mask png RGB", "result", m("mrgb.png", lambda p: save_pil(p, rgb), measured(ISO), sp)),
        ("mask png palette", "result", m("mpal.png", lambda p: save_pil(p, sq * 255, "P"), measured(ISO), sp)),
        ("mask png bilevel", "result", m("mbw.png", lambda p: save_pil(p, sq * 255, "1"), measured(ISO), sp)),
        ("mask bmp", "result", m("m.bmp", lambda p: save_pil(p, sq * 255), measured(ISO), sp)),
        ("mask tiff", "result", m("m.tif", lambda p: save_tiff(p, sq * 255), measured(ISO), sp)),
        ("mask jpeg (lossy)", "either", m("m.jpg", lambda p: save_pil(p, sq * 255), measured(ISO, tolerance_px=10), sp)),
        ("mask nrrd", "result", m("m.nrrd", lambda p: save_nrrd(p, sq), measured(ISO), sp)),
        ("mask nrrd header spacing 0.062", "result", m("mh.nrrd", lambda p: save_nrrd(
            p, sq, spacings=np.array([SPACING, SPACING])), measured(ISO, spacing_either=True))),
        ("mask nrrd header spacing 1 mm", "result", m("m1.nrrd", lambda p: save_nrrd(
            p, sq, spacings=np.array([1.0, 1.0])), measured((1.0, 1.0), spacing_either=True))),
        ("mask seg.nrrd", "result", m("m.seg.nrrd", seg_nrrd, measured(ISO), sp)),
        ("mask nifti", "result", m("m.nii.gz", lambda p: save_itk(p, sq), measured(ISO), sp)),
        ("mask mha", "result", m("m.mha", lambda p: save_itk(p, sq), measured(ISO), sp)),
        ("mask empty (no nerve)", "result", m("none.png", lambda p: save_pil(p, sq * 0), _empty_mask, sp)),
        ("mask float NaN nrrd", "error", m("mnan.nrrd", lambda p: save_nrrd(p, nan), extra=sp)),
        ("mask 3D nrrd", "error", m("m3.nrrd", lambda p: save_nrrd(p, np.stack([sq, sq, sq])), extra=sp)),
        ("mask empty file", "error", m("e.png", lambda p: p.write_bytes(b""), extra=sp)),
        ("mask truncated png", "error", m("t.png", lambda p: truncated(save_pil(p, ultrasound())), extra=sp)),
        ("mask text as png", "error", m("x.png", lambda p: p.write_bytes(b"hello"), extra=sp)),
        ("mask unsupported .txt", "error", m("x.txt", lambda p: p.write_bytes(b"1"), extra=sp)),
        ("mask missing", "error", m("gone.png", lambda p: None, extra=sp)),
    ]
    return [Case(name, "measure", expect, build) for name, expect, build in cases]


def _empty_mask(outcome: Outcome) -> Optional[str]:
    rows = _rows(outcome)
    if len(rows) != 1 or rows[0].error:
        return f"{len(rows)} row(s) {rows[0].error if rows else ''}"
    row = rows[0]
    if row.found is not False or row.area_px != 0:
        return f"found {row.found}, {row.area_px} px in an empty mask"
    return None if row.area_mm2 in (None, 0.0) else f"CSA {row.area_mm2} of an empty mask"


# ----------------------------------------------------------------------------- cases: model folders


def installed_model_dir(name: str = MODEL) -> Path:
    import MedianNerveSegLib

    return Path(MedianNerveSegLib.__file__).parent / "pretrained" / name


def _model_folder(edit_json=None, raw_json: Optional[str] = None, weights: Optional[bytes] = None,
                  drop: Sequence[str] = (), torch_object=None):
    def build(tmp: Path) -> Run:
        folder = tmp / "broken_model"
        shutil.copytree(installed_model_dir(), folder)
        info = json.loads((folder / "model.json").read_text())
        if edit_json:
            edit_json(info)
        (folder / "model.json").write_text(raw_json if raw_json is not None else json.dumps(info))
        if weights is not None:
            (folder / "model.pt").write_bytes(weights)
        if torch_object is not None:
            import torch

            torch.save(torch_object(), folder / "model.pt")
        for name in drop:
            (folder / name).unlink()
        image = save_pil(tmp / "scan.png", U8)
        out = tmp / "out"
        return Run(["segment", image, "--out", out, "--model", folder],
                   ["broken_model", "model.json", "model.pt"], None, out)
    return build


def _setter(key, value):
    return lambda info: info.__setitem__(key, value)


def model_cases() -> List[Case]:
    import torch

    mf = _model_folder
    cases = [
        ("model.json a list", mf(raw_json="[1, 2, 3]")),
        ("model.json invalid JSON", mf(raw_json="{\"name\": ")),
        ("model.json empty", mf(raw_json="")),
        ("model.json a string", mf(raw_json="\"model\"")),
        ("threshold 2", mf(_setter("threshold", 2))),
        ("threshold NaN", mf(raw_json=None, edit_json=_setter("threshold", float("nan")))),
        ("threshold -0.5", mf(_setter("threshold", -0.5))),
        ("threshold a string", mf(_setter("threshold", "0.5"))),
        ("input_size 17x23", mf(_setter("input_size", [17, 23]))),
        ("input_size 0x0", mf(_setter("input_size", [0, 0]))),
        ("input_size one value", mf(_setter("input_size", [288]))),
        ("input_size a string", mf(_setter("input_size", "288x384"))),
        ("unknown architecture", mf(_setter("architecture", "no_such_net"))),
        ("architecture a number", mf(_setter("architecture", 5))),
        ("arch_kwargs a list", mf(_setter("arch_kwargs", [16, 32]))),
        ("arch_kwargs other channels", mf(_setter("arch_kwargs", {"channels": [8, 16, 32, 64, 128],
                                                                  "num_res_units": 2}))),
        ("arch_kwargs unknown key", mf(_setter("arch_kwargs", {"no_such_option": 1}))),
        ("normalization unknown", mf(_setter("normalization", "magic"))),
        ("min_component_mm2 negative", mf(_setter("min_component_mm2", -1))),
        ("min_branch_fraction 5", mf(_setter("min_branch_fraction", 5))),
        ("architecture missing", mf(lambda info: info.pop("architecture"))),
        ("model.pt missing", mf(drop=["model.pt"])),
        ("model.json missing", mf(drop=["model.json"])),
        ("model.pt empty", mf(weights=b"")),
        ("model.pt foreign bytes", mf(weights=b"PK\x03\x04 this is not a checkpoint" * 10)),
        ("model.pt a list", mf(torch_object=lambda: [1, 2, 3])),
        ("model.pt another network's weights", mf(torch_object=lambda: {"conv.weight": torch.zeros(3, 3)})),
        ("model.pt truncated", mf(weights=(installed_model_dir() / "model.pt").read_bytes()[:5000])),
    ]
    result = [Case(name, "model", "error", build) for name, build in cases]

    def missing_folder(tmp: Path) -> Run:
        image = save_pil(tmp / "scan.png", U8)
        return Run(["segment", image, "--out", tmp / "out", "--model", tmp / "no_such_model"],
                   ["no_such_model"], None, tmp / "out")

    result.append(Case("model folder missing", "model", "error", missing_folder))
    for name in ("median_nerve_unet", MODEL):
        result.append(Case(f"cwd folder named {name}", "model", "result", _shadowed(name)))
    return result


def _shadowed(name: str):
    """A broken folder in the cwd named like an installed model: the installed model must be used."""
    def build(tmp: Path) -> Run:
        (tmp / name).mkdir()
        (tmp / name / "model.json").write_text("[\"not this one\"]")
        image = save_pil(tmp / "scan.png", U8)
        out = tmp / "out"
        version = json.loads((installed_model_dir(name) / "model.json").read_text())["version"]

        def check(outcome: Outcome) -> Optional[str]:
            rows = _rows(outcome)
            if len(rows) != 1 or rows[0].error:
                return f"{len(rows)} row(s) {rows[0].error if rows else ''}"
            return None if rows[0].model == f"{name}@{version}" else f"model {rows[0].model!r}"
        return Run(["segment", image, "--out", out, "--model", name], [name], check, out, cwd=tmp)
    return build


# ----------------------------------------------------------------------------- cases: evaluate


def _evaluate(n_gt: int, n_pred: int, damage=None, extra: Sequence[str] = (), names: Sequence[str] = (),
              check=None, pred_name: Optional[str] = None, empty_pred: bool = False):
    def build(tmp: Path) -> Run:
        gt, pred = tmp / "gt", tmp / (pred_name or "pred")
        gt.mkdir()
        pred.mkdir(exist_ok=True)
        for i in range(n_gt):
            save_pil(gt / f"Pz{i:03d}_img.png", square_mask(top=10 + i) * 255)
        for i in range(n_pred):
            mask = square_mask(top=10 + i) * (0 if empty_pred else 255)
            save_pil(pred / f"Pz{i:03d}_img_mask.png", mask)
        if damage:
            damage(pred)
        given = tmp / "perd" if pred_name == "typo" else pred
        return Run(["evaluate", "--pred", given, "--gt", gt, "--out", tmp / "eval", *extra],
                   [given.name, *names], check, tmp / "eval")
    return build


def _summary(n: int, dice: float, n_errors: int = 0, named: Sequence[str] = ()):
    def check(outcome: Outcome) -> Optional[str]:
        summary = json.loads((outcome.out / "summary.json").read_text())
        if summary.get("n") != n:
            return f"n {summary.get('n')}, expected {n} scored images"
        if not _close(summary.get("dice_mean"), dice):
            return f"DSC {summary.get('dice_mean')}, expected {dice}"
        if summary.get("n_errors", 0) != n_errors:
            return f"n_errors {summary.get('n_errors')}, expected {n_errors}"
        missing = [name for name in named if name not in outcome.stderr]
        if missing:
            return f"stderr does not name {missing}"
        return None
    return check


def evaluate_cases() -> List[Case]:
    def shape_mismatch(pred: Path) -> None:
        save_pil(pred / "Pz001_img_mask.png", np.zeros((30, 30), np.uint8))

    def corrupt(pred: Path) -> None:
        (pred / "Pz002_img_mask.png").write_bytes(b"broken")

    def clear(pred: Path) -> None:
        for item in pred.iterdir():
            item.unlink()

    cases = [
        ("evaluate mistyped --pred", "error", _evaluate(4, 4, pred_name="typo")),
        ("evaluate empty --pred", "error", _evaluate(4, 0)),
        ("evaluate --pred of other files", "error", _evaluate(4, 0, damage=lambda p: save_pil(p / "x.png", U8))),
        ("evaluate partial --pred", "result", _evaluate(4, 2, check=_summary(2, 1.0, named=["Pz002_img"]))),
        ("evaluate all present", "result", _evaluate(4, 4, check=_summary(4, 1.0))),
        ("evaluate all-empty predictions", "result", _evaluate(4, 4, check=_summary(4, 0.0), empty_pred=True)),
        ("evaluate shape mismatch", "result", _evaluate(4, 4, shape_mismatch,
                                                        check=_summary(3, 1.0, 1, named=["Pz001_img"]))),
        ("evaluate corrupt prediction", "result", _evaluate(4, 4, corrupt,
                                                            check=_summary(3, 1.0, 1, named=["Pz002_img"]))),
    ]
    result = [Case(name, "evaluate", expect, build) for name, expect, build in cases]

    def missing_gt(tmp: Path) -> Run:
        (tmp / "pred").mkdir()
        save_pil(tmp / "pred" / "a_mask.png", square_mask() * 255)
        return Run(["evaluate", "--pred", tmp / "pred", "--gt", tmp / "no_gt", "--out", tmp / "eval"],
                   ["no_gt"], None, tmp / "eval")

    def empty_gt(tmp: Path) -> Run:
        (tmp / "pred").mkdir()
        (tmp / "gt_empty").mkdir()
        save_pil(tmp / "pred" / "a_mask.png", square_mask() * 255)
        return Run(["evaluate", "--pred", tmp / "pred", "--gt", tmp / "gt_empty", "--out", tmp / "eval"],
                   ["gt_empty"], None, tmp / "eval")

    result += [Case("evaluate missing --gt", "evaluate", "error", missing_gt),
               Case("evaluate empty --gt", "evaluate", "error", empty_gt)]
    return result


# ----------------------------------------------------------------------------- cases: dataset store


def _store(tmp: Path, n: int = 4) -> Path:
    """A store named 'attack-set' with n samples of n patients, split 50% validation."""
    from MedianNerveSegLib.dataset import LabelledDataset

    store = LabelledDataset.init(tmp / "store", name="attack-set")
    for i in range(n):
        store.add(ultrasound(seed=i), square_mask(top=10 + i), patient=f"Pz{i:03d}", sample_id=f"Pz{i:03d}_img")
    store.split(0.5, 0.0, 0)
    return store.folder


def _datalist(folder: Path) -> dict:
    return json.loads((folder / "datalist.json").read_text())


def _damaged(damage: Callable[[Path], None]):
    def build(tmp: Path) -> Run:
        folder = _store(tmp)
        before = _datalist(folder)
        damage(folder / "datalist.json")

        def check(outcome: Outcome) -> Optional[str]:
            after = _datalist(folder)
            for key in ("name", "split_settings", "patient_split", "validation", "training"):
                if after.get(key) != before.get(key):
                    return f"datalist {key} {after.get(key)!r} after recovery, was {before.get(key)!r}"
            return None
        return Run(["dataset", "stats", folder], ["datalist.json", str(folder)], check, tmp)
    return build


def store_cases() -> List[Case]:
    def garbage(path: Path) -> None:
        path.write_text("{ this is not json")

    def half(path: Path) -> None:
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])

    def known_image_other_patient(tmp: Path) -> Run:
        folder = _store(tmp)
        image = save_pil(tmp / "copy_of_pz000.png", ultrasound(seed=0))
        label = save_pil(tmp / "copy_label.png", square_mask() * 255)
        return Run(["dataset", "add", folder, "--image", image, "--label", label, "--patient", "Pz777"],
                   ["Pz000_img"], None, tmp)

    def identical_label(tmp: Path) -> Run:
        folder = _store(tmp)
        image = save_pil(tmp / "Pz000_img.png", ultrasound(seed=0))
        label = save_pil(tmp / "label.png", square_mask(top=10) * 255)

        def check(outcome: Outcome) -> Optional[str]:
            labels = sorted(p.name for p in (folder / "labels").glob("Pz000_img_v*.png"))
            return None if labels == ["Pz000_img_v1.png"] else f"identical label stored as {labels}"
        return Run(["dataset", "add", folder, "--image", image, "--label", label, "--patient", "Pz000"],
                   ["Pz000_img"], check, tmp)

    def leftover_temp(tmp: Path, age_s: float) -> Run:
        """Temp files of a crashed writer (older than the store's STALE_TMP_S) go on open; a live
        writer's fresh one stays."""
        from MedianNerveSegLib.dataset import STALE_TMP_S

        folder = _store(tmp)
        leftovers = [folder / ".datalist.json.1a2b3c4d.tmp", folder / "images" / ".Pz009_img.png.deadbeef.tmp",
                     folder / "provenance" / ".Pz009_img_v1.json.0badf00d.tmp"]
        for path in leftovers:
            path.write_bytes(b"half-written")
            os.utime(path, (time.time() - age_s,) * 2)
        stale = age_s > STALE_TMP_S

        def check(outcome: Outcome) -> Optional[str]:
            left = [p.name for p in leftovers if p.exists()]
            if stale:
                return f"stale temp files left: {left}" if left else None
            return None if len(left) == len(leftovers) else f"a live writer's temp files removed: {left}"
        return Run(["dataset", "stats", folder], [str(folder)], check, tmp)

    def import_bad_pairs(tmp: Path) -> Run:
        folder = _store(tmp, 0)
        source = tmp / "source"
        (source / "images").mkdir(parents=True)
        (source / "masks").mkdir()
        for i in range(2):
            save_pil(source / "images" / f"Pz10{i}_ok.png", ultrasound(seed=10 + i))
            save_pil(source / "masks" / f"Pz10{i}_ok.png", square_mask() * 255)
        save_pil(source / "images" / "Pz200_shape.png", ultrasound(seed=20))
        save_pil(source / "masks" / "Pz200_shape.png", np.zeros((10, 10), np.uint8))
        save_pil(source / "images" / "Pz201_corrupt.png", ultrasound(seed=21))
        (source / "masks" / "Pz201_corrupt.png").write_bytes(b"broken")
        (source / "images" / "Pz202_badimage.png").write_bytes(b"broken")
        save_pil(source / "masks" / "Pz202_badimage.png", square_mask() * 255)

        def check(outcome: Outcome) -> Optional[str]:
            stored = sorted(e["id"] for name in ("training", "validation", "test")
                            for e in _datalist(folder).get(name, []))
            if stored != ["Pz100_ok", "Pz101_ok"]:
                return f"stored {stored}"
            unnamed = [n for n in ("Pz200_shape", "Pz201_corrupt", "Pz202_badimage") if n not in outcome.stderr]
            if unnamed or outcome.rc != 1:
                return f"exit {outcome.rc}; bad pairs not named: {unnamed}"
            return None
        return Run(["dataset", "import", folder, "--from", source], ["Pz200_shape", "Pz201_corrupt"], check, tmp)

    def add_label_shape(tmp: Path) -> Run:
        folder = _store(tmp, 1)
        image = save_pil(tmp / "Pz050_img.png", ultrasound(seed=50))
        label = save_pil(tmp / "small_label.png", np.zeros((8, 8), np.uint8))
        return Run(["dataset", "add", folder, "--image", image, "--label", label], ["small_label"], None, tmp)

    def add_bad_image(tmp: Path) -> Run:
        folder = _store(tmp, 1)
        image = tmp / "Pz051_img.png"
        image.write_bytes(b"broken")
        label = save_pil(tmp / "label.png", square_mask() * 255)
        return Run(["dataset", "add", folder, "--image", image, "--label", label], ["Pz051_img.png"], None, tmp)

    def add_nan_image(tmp: Path) -> Run:
        folder = _store(tmp, 1)
        frame = ultrasound(seed=52).astype(np.float32)
        frame[3, 3] = np.nan
        image = save_nrrd(tmp / "Pz052_img.nrrd", frame)
        label = save_pil(tmp / "label.png", square_mask() * 255)
        return Run(["dataset", "add", folder, "--image", image, "--label", label], ["Pz052_img.nrrd"], None, tmp)

    def not_a_store(tmp: Path) -> Run:
        (tmp / "plain").mkdir()
        (tmp / "plain" / "notes.txt").write_text("hello")
        return Run(["dataset", "stats", tmp / "plain"], ["plain"], None, tmp)

    return [
        Case("store datalist.json garbage", "store", "either", _damaged(garbage)),
        Case("store datalist.json truncated", "store", "either", _damaged(half)),
        Case("store datalist.json empty", "store", "either", _damaged(lambda p: p.write_text(""))),
        Case("store datalist.json a list", "store", "either", _damaged(lambda p: p.write_text("[]"))),
        Case("store datalist.json deleted", "store", "either", _damaged(lambda p: p.unlink())),
        Case("store known image under another patient", "store", "error", known_image_other_patient),
        Case("store identical label", "store", "result", identical_label),
        Case("store leftover temp files", "store", "result", lambda tmp: leftover_temp(tmp, 3600)),
        Case("store a live writer's temp files", "store", "result", lambda tmp: leftover_temp(tmp, 0)),
        Case("store import with bad pairs", "store", "result", import_bad_pairs),
        Case("store add label of another shape", "store", "error", add_label_shape),
        Case("store add unreadable image", "store", "error", add_bad_image),
        Case("store add NaN image", "store", "error", add_nan_image),
        Case("store stats of a plain folder", "store", "error", not_a_store),
    ]


def _results(tmp: Path, rows: Sequence[dict], name: str = "results") -> Path:
    """A results folder holding ``rows`` (FrameResult fields) in the project's results format."""
    from MedianNerveSegLib.results import FrameResult, ResultsWriter

    with ResultsWriter(tmp / name / "measurements.csv") as writer:
        for row in rows:
            writer.write(FrameResult(**row))
    return tmp / name


MM_ROW = {"image": "Pz301-001.png", "patient": "Pz301", "side": "right", "level": "inlet", "found": True,
          "area_mm2": 12.5, "area_px": 3252}


def report_cases() -> List[Case]:
    def report(results, names, check=None, extra=()):
        def build(tmp: Path) -> Run:
            given = results(tmp)
            given = given if isinstance(given, list) else [given]
            return Run(["report", *map(str, given), "--out", str(tmp / "report"), *extra], names, check, tmp / "report")
        return build

    def cutoffs(text):
        def build(tmp: Path) -> Run:
            (tmp / "cutoffs.json").write_text(text)
            return report(lambda t: _results(t, [MM_ROW]), ["cutoffs.json"],
                          extra=["--cutoffs", str(tmp / "cutoffs.json")])(tmp)
        return build

    def taken(tmp: Path) -> Run:
        (tmp / "report").mkdir()
        (tmp / "report" / "report.json").write_text("{}")
        return Run(["report", str(_results(tmp, [MM_ROW])), "--out", str(tmp / "report")], ["report"], None, tmp)

    def summary_of(check):
        def read(outcome: Outcome) -> Optional[str]:
            return check(json.loads((outcome.out / "report.json").read_text()))
        return read

    def one_side(data) -> Optional[str]:
        sides = data["sides"]
        if len(sides) != 1 or sides[0]["levels"]["inlet"]["mean_mm2"] != 12.5:
            return f"sides {sides}"
        return None

    def only_excluded(data) -> Optional[str]:
        reasons = [e["reason"] for e in data["excluded"]]
        return None if not data["sides"] and reasons and reasons[0].startswith("spacing unknown") else f"{data}"

    def dicom_without_uid(tmp: Path) -> Run:
        from pydicom import dcmread
        from pydicom.filewriter import dcmwrite

        path = save_dicom(tmp / "nouid.dcm", U8, region_cm=SPACING / 10)
        ds = dcmread(path)
        del ds.SOPInstanceUID  # (the file meta keeps its own copy)
        dcmwrite(path, ds, enforce_file_format=True)

        def check(outcome: Outcome) -> Optional[str]:
            rows = _rows(outcome)
            if not rows or not all("dicom-out-failed" in r.flags for r in rows):
                return f"rows {[r.flags for r in rows]}"
            return None if "nouid.dcm: DICOM SEG/SR not written" in outcome.stderr else "no warning naming it"
        return Run(["segment", str(path), "--out", str(tmp / "out"), "--model", MODEL, "--dicom-out"],
                   ["nouid.dcm"], check, tmp / "out")

    def other_side(tmp: Path) -> Run:
        from pydicom import dcmread
        from pydicom.filewriter import dcmwrite

        path = save_dicom(tmp / "left.dcm", U8, region_cm=SPACING / 10)
        ds = dcmread(path)
        ds.ImageLaterality = "L"
        dcmwrite(path, ds, enforce_file_format=True)
        return Run(["segment", str(path), "--out", str(tmp / "out"), "--model", MODEL, "--side", "right"],
                   ["left.dcm"], None, tmp / "out")

    return [
        Case("report of a missing folder", "report", "error", report(lambda t: t / "nothing", ["nothing"])),
        Case("report of a foreign CSV", "report", "error", report(
            lambda t: (t / "other.csv", (t / "other.csv").write_text("a,b\n1,2\n"))[0], ["other.csv"])),
        Case("report cut-offs not JSON", "report", "error", cutoffs("{ nope")),
        Case("report unknown cut-off", "report", "error", cutoffs('{"csa": {"threshold": 9}}')),
        Case("report threshold without source", "report", "error", cutoffs('{"inlet_csa_mm2": {"threshold": 9}}')),
        Case("report threshold not a number", "report", "error", cutoffs('{"wfr": {"threshold": "x"}}')),
        Case("report into a folder holding one", "report", "error", taken),
        Case("report of one image given twice", "report", "error", report(
            lambda t: [_results(t, [MM_ROW])] * 2, ["Pz301-001.png"])),
        Case("report of rows in mm^2", "report", "result", report(lambda t: _results(t, [MM_ROW]), [],
                                                                     summary_of(one_side))),
        Case("report of rows in pixels only", "report", "result", report(
            lambda t: _results(t, [{**MM_ROW, "area_mm2": None}]), [], summary_of(only_excluded))),
        Case("segment --dicom-out of a DICOM without a SOP instance UID", "report", "result", dicom_without_uid),
        Case("segment --side against the DICOM's laterality", "report", "error", other_side),
        Case("segment --level not a level", "report", "error", _segment(
            _img("lvl.png", lambda p: save_pil(p, U8)), extra=["--level", "wrist"], names=["--level"])),
    ]


def all_cases() -> List[Case]:
    """Every case of the attack, in a stable order with unique names."""
    cases = (image_cases() + spacing_cases() + batch_cases() + mask_cases() + model_cases()
             + evaluate_cases() + store_cases() + report_cases())
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    return cases
