"""The one pipeline: files -> frames -> Segmenter -> mask -> measurement -> results rows.

A batch never aborts on one input: a file that cannot be read or segmented becomes an error
row naming it and the reason, and the batch goes on. Rows are appended to the results file as
they are produced, so an interrupted run keeps what it did; a rerun into the same folder
skips the inputs already done. The next file is read, and a frame's files written, on threads
beside the network (:class:`ReadAhead`, ``hand_on``): a row is appended once its files are
written. Output names are unique: two inputs with equal stems (from different folders, or
``scan.1.png`` and ``scan.1.bmp``) never write over each other, nor over files already in the
folder.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections import deque
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from .data import DEFAULT_PATIENT_PATTERN
from .results import ENSEMBLE_JOIN, RESULTS_FILE, FrameResult, ResultsWriter, read_results
from .uncertainty import REVIEW_FLAG, csa_interval

PathLike = Union[str, Path]
Progress = Callable[[Iterable], Iterable]
# Adult median nerve CSA at the wrist is about 5-35 mm^2 (this dataset: 5.3-32.6); outside this
# range a value is more likely a segmentation or calibration error than anatomy.
PLAUSIBLE_CSA_MM2 = (1.0, 80.0)
RUN_SETTINGS_FILE = "segment_run.json"  # what a results folder was made with; a rerun must match it
REFINE_RECORD_SUFFIX = "_clicks.json"  # a refine folder's record of an image's clicks (refine_folder.py)
_OUTPUT_SUFFIXES = ("_mask.png", "_overlay.png", "_prob.png", "_mask.nrrd", ".seg.nrrd", "_csa.png", "_seg.dcm",
                    "_sr.dcm")


@dataclass
class StageTimes:
    """Seconds spent per stage of a batch (``benchmark-pipeline`` reports them per frame)."""

    seconds: Dict[str, float] = field(default_factory=dict)
    frames: int = 0

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - since
        return now


@dataclass
class BatchSummary:
    """What a batch did: files given, files skipped as already done, files that failed, frames written."""

    n_files: int
    n_skipped: int
    n_failed: int
    n_frames: int
    results_path: Path
    failures: List[FrameResult]
    warnings: List[str] = field(default_factory=list)  # outputs not written, the measurements kept


def input_stem(path: Path) -> str:
    """A file's name without its image extension (``scan.1.png`` -> ``scan.1``, ``a.nii.gz`` -> ``a``)."""
    name = path.name
    for suffix in (".nii.gz", ".seg.nrrd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem if path.suffix else name


def output_stems(paths: Sequence[Path], taken: Set[str] = frozenset()) -> Dict[Path, str]:
    """A unique output stem per input: its stem, else prefixed by its parent folders, else numbered.

    ``taken`` stems (outputs already in the folder) are never given out again.
    """
    taken = set(taken)
    stems: Dict[Path, str] = {}
    counts: Dict[str, int] = {}
    for path in paths:
        counts[input_stem(path)] = counts.get(input_stem(path), 0) + 1
    for path in paths:
        stem = input_stem(path)
        candidates = [stem] if counts[stem] == 1 else []
        parents = [p.name for p in path.resolve().parents if p.name][:3]
        candidates += ["_".join(reversed(parents[:depth])) + "_" + stem for depth in range(1, len(parents) + 1)]
        chosen = next((c for c in candidates if c not in taken), None)
        number = 2
        while chosen is None:
            chosen = f"{stem}-{number}" if f"{stem}-{number}" not in taken else None
            number += 1
        taken.add(chosen)
        stems[path] = chosen
    return stems


LEVELS = ("inlet", "forearm", "outlet")  # carpal tunnel inlet (the CSA of the cut-offs), forearm, outlet
SIDES = ("left", "right")


@dataclass(frozen=True)
class Labels:
    """What the user says of a batch's images: patient id, side and level (None: from each file)."""

    patient: Optional[str] = None
    side: Optional[str] = None
    level: str = "inlet"

    def __post_init__(self) -> None:
        if self.side not in (None, *SIDES):
            raise ValueError(f"--side must be one of {', '.join(SIDES)}, not {self.side!r}")
        if self.level not in LEVELS:
            raise ValueError(f"--level must be one of {', '.join(LEVELS)}, not {self.level!r}")


def patient_of(image, path: Path, pattern: str = DEFAULT_PATIENT_PATTERN) -> str:
    """The file's own patient id (DICOM PatientID), else the file name's (PzNNN), else ''."""
    own = getattr(image, "patient", "") if image is not None else ""
    if own:
        return own
    match = re.search(pattern, input_stem(path))
    return match.group(1) if match else ""


def side_of(image, labels: Labels) -> str:
    """The side the user gave, else the file's; a file that says the other side is refused."""
    own = image.side if image is not None else ""
    if labels.side and own and labels.side != own:
        raise ValueError(f"--side {labels.side}, but the file says {own} (DICOM laterality): check the image")
    return labels.side or own


def _existing_outputs(out_dir: Path) -> Set[str]:
    """The output stems in ``out_dir``: of each file, and of the clip a frame's file belongs to."""
    stems = set()
    for item in out_dir.iterdir() if out_dir.is_dir() else []:
        for suffix in _OUTPUT_SUFFIXES:
            if item.name.endswith(suffix):
                stem = item.name[: -len(suffix)]
                stems.add(stem)
                clip = _CLIP_FRAME.match(stem)
                if clip:
                    stems.add(clip.group(1))
    return stems


def _error_row(path: Path, error: BaseException) -> FrameResult:
    reason = getattr(error, "reason", None) or str(error) or type(error).__name__
    prefix = f"{path}: "
    return FrameResult(image=str(path), error=reason[len(prefix):] if reason.startswith(prefix) else reason)


def measurement_flags(found: bool, area_mm2: Optional[float]) -> List[str]:
    """What a reader of a measurement must know: no nerve, no spacing, an implausible CSA."""
    flags = [] if found else ["not-found"]
    if area_mm2 is None:
        flags.append("spacing-unknown")
    elif found and not PLAUSIBLE_CSA_MM2[0] <= area_mm2 <= PLAUSIBLE_CSA_MM2[1]:
        flags.append("implausible-csa")
    return flags


def measurement_columns(measurement) -> Dict[str, Any]:
    """A NerveMeasurement's columns of the results format, its flags included: the one mapping."""
    return {"found": measurement.found, "area_mm2": measurement.area_mm2, "area_px": measurement.area_px,
            "perimeter_mm": measurement.perimeter_mm, "circularity": measurement.circularity,
            "flattening_ratio": measurement.flattening_ratio, "ellipse_ratio": measurement.ellipse_ratio,
            "n_components": measurement.n_components, "spacing_mm": measurement.spacing_mm,
            "flags": measurement_flags(measurement.found, measurement.area_mm2)}


def frame_result(segmenter, image, index: int, path: Path, prediction, labels: Labels = Labels()) -> FrameResult:
    """The results row of one segmented frame (output file names filled in by the caller)."""
    from .measure import measure_mask

    columns = measurement_columns(measure_mask(prediction.mask, image.spacing_mm))
    interval = (csa_interval(prediction.band_px, columns["area_px"], image.spacing_mm, prediction.review_width_mm2)
                if prediction.found else None)
    flags = columns["flags"] + list(prediction.flags) + ([REVIEW_FLAG] if interval and interval.needs_review else [])
    return FrameResult(
        image=str(path), frame=index, patient=labels.patient or patient_of(image, path),
        side=side_of(image, labels), level=labels.level, acquired=image.acquired, time_s=image.frame_time_s(index),
        confidence=round(float(prediction.confidence), 4), spacing_source=image.spacing_source,
        model=segmenter.model_id, ms=round(prediction.milliseconds, 1),
        csa_low_mm2=interval.low_mm2 if interval else None, csa_high_mm2=interval.high_mm2 if interval else None,
        **{**columns, "found": prediction.found, "flags": flags})


def overlay_caption(result: FrameResult) -> List[str]:
    """What a clinician reads on an overlay: the CSA (or why there is none), side and level, the model."""
    if not result.found:
        csa = "nerve NOT FOUND"
    elif result.area_mm2 is None:
        csa = f"CSA {result.area_px} px (spacing unknown)"
    else:
        warnings = [word for flag, word in (("implausible-csa", "IMPLAUSIBLE"), (REVIEW_FLAG, "REVIEW"))
                    if flag in result.flags]  # first, where a narrow picture cannot cut them off
        csa = " ".join(warnings + [f"CSA {result.area_mm2:.2f} mm\u00b2"]) + (
            f" (range {result.csa_low_mm2:.1f}-{result.csa_high_mm2:.1f})" if result.csa_low_mm2 is not None else "")
    where = " ".join(part for part in (result.side or "side unknown", result.level) if part)
    frame = f", frame {result.frame}" + (f" ({result.time_s:.2f} s)" if result.time_s is not None else "")
    members = result.model.split(ENSEMBLE_JOIN)
    model = f"ensemble of {len(members)} models" if len(members) > 1 else result.model.replace("@", " ")
    return [csa, where + (frame if result.frame or result.time_s else ""), model]


@dataclass(frozen=True)
class Outputs:
    """What a batch writes per frame besides its results row: the mask PNG always; the annotated overlay
    (``overlay``), the probability map, masks in other formats; a DICOM SEG and SR per DICOM input."""

    overlay: bool = True
    save_prob: bool = False
    mask_formats: Sequence[str] = ()
    dicom_out: bool = False


def _name_frame_outputs(stem: str, outputs: Outputs, result: FrameResult) -> None:
    """Put the names of a frame's mask (and probability map) in its row."""
    result.mask = f"{stem}_mask.png"
    if outputs.save_prob:
        result.probability = f"{stem}_prob.png"


def _write_frame_outputs(out_dir: Path, stem: str, frame: np.ndarray, spacing_mm, prediction, outputs: Outputs,
                         result: FrameResult, caption: Sequence[str]) -> None:
    """Write the files a frame's row names (:func:`_name_frame_outputs`), and the overlay."""
    from .io import write_mask_png, write_overlay_png

    write_mask_png(out_dir / result.mask, prediction.mask)
    if outputs.overlay:
        write_overlay_png(out_dir / f"{stem}_overlay.png", frame, prediction.mask, caption=caption,
                          spacing_mm=spacing_mm)
    if outputs.save_prob:
        write_probability_png(out_dir / result.probability, prediction.probability)
    for name in outputs.mask_formats:
        suffix, write = MASK_WRITERS[name]()
        write(out_dir / f"{stem}{suffix}", prediction.mask, spacing_mm, result.side)


def _nrrd_writer():
    from .io import write_mask_nrrd
    return "_mask.nrrd", lambda path, mask, spacing, side: write_mask_nrrd(path, mask, spacing)


def _segmentation_writer():
    from .io import write_segmentation_nrrd
    return ".seg.nrrd", lambda path, mask, spacing, side: write_segmentation_nrrd(path, mask, spacing, side=side)


MASK_WRITERS = {"nrrd": _nrrd_writer, "seg.nrrd": _segmentation_writer}


_CLIP_FRAME = re.compile(r"^(.*)_f\d{4,}$")  # a clip frame's output stem: <stem>_fNNNN


class ReadAhead:
    """Opens the next file of a batch on a thread while this one is segmented: decoding releases the GIL, so it
    runs on the core the network's single-threaded steps leave free. One file ahead at most, and none over
    ``max_bytes`` (a clip read whole would be held twice); a file that cannot be opened raises when its turn
    comes, as it would unread."""

    def __init__(self, paths: Sequence[Path], spacing_mm, max_bytes: int = 64 << 20) -> None:
        self._following = {path: after for path, after in zip(paths, paths[1:])}
        self._spacing_mm, self._max_bytes = spacing_mm, max_bytes
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="median-nerve-seg-read")
        self._ahead: Dict[Path, Any] = {}

    def open(self, path: Path):
        """The opened image of ``path`` (close it with :func:`io.close_image`); starts opening the next file."""
        from .io import open_image

        ahead = self._ahead.get(path)
        after = self._following.get(path)
        if after is not None and after not in self._ahead and self._small(after):
            self._ahead[after] = self._pool.submit(open_image, after, self._spacing_mm)
        if ahead is None:
            return open_image(path, self._spacing_mm)
        try:
            image = ahead.result()  # (interrupted while it waits, close() still finds the file to close)
        except Exception:
            del self._ahead[path]  # not opened: nothing to close
            raise
        del self._ahead[path]
        return image

    def _small(self, path: Path) -> bool:
        try:
            return path.stat().st_size <= self._max_bytes
        except OSError:
            return False  # opened in its turn, which names the reason

    def close(self) -> None:
        """Release a file opened ahead and not used (an interrupted batch)."""
        from .io import close_image

        for ahead in self._ahead.values():
            if not ahead.cancel() and ahead.exception() is None:
                close_image(ahead.result())
        self._ahead.clear()
        self._pool.shutdown()


def _resumed_stem(rows: Sequence[FrameResult]) -> Optional[str]:
    """The output stem of a clip partly done by an earlier run (from its masks' names), None for a single frame."""
    mask = rows[0].mask if rows else ""
    match = _CLIP_FRAME.match(mask[: -len("_mask.png")]) if mask.endswith("_mask.png") else None
    return match.group(1) if match else None


def _segment_file(segmenter, path: Path, stem: str, out_dir: Path, reader: ReadAhead, writer: Executor,
                  outputs: Outputs, labels: Labels, earlier: Sequence[FrameResult], warnings: List[str],
                  times: StageTimes) -> Iterator[Tuple[FrameResult, Optional[Future]]]:
    """Each frame's row of one file, as it is made, with the writing of its files on ``writer`` (None when they
    are written already). A clip's frames are read one at a time; the frames an earlier run did, ``earlier``, are
    skipped. A frame that cannot be read or segmented is an error row and the clip goes on; a file that cannot be
    opened raises. A DICOM input with ``dicom_out`` writes its files at once and holds its rows until its SEG and
    SR are written (from those files), so that a row can say they were not."""
    from .dicom_out import dicom_refusal
    from .io import close_image

    since = time.perf_counter()
    image = reader.open(path)
    times.add("read", since)
    try:
        side_of(image, labels)  # a file that contradicts --side is one error row, not one a frame
        done = {row.frame: row for row in earlier}
        if image.n_frames > 1 and len(done) >= image.n_frames:
            return
        dicom = outputs.dicom_out and image.metadata.get("format") == "dicom"
        if dicom:  # its files are written here: the previous file's first, one overlay drawn at a time (one font)
            writer.submit(lambda: None).result()
        refusal = dicom_refusal(image) if dicom else None
        held, rows, writing = [], list(done.values()), {}
        for index in range(image.n_frames):
            if index in done:
                continue
            row, writing[index] = _segment_frame(segmenter, image, index, path, stem, out_dir,
                                                 None if dicom else writer, outputs, labels, times)
            rows.append(row)
            if dicom:
                held.append(row)
            else:
                yield row, writing[index]
        rows.sort(key=lambda r: r.frame)
        if dicom:
            failed = [str(r.frame) for r in rows if not r.ok]
            error = (refusal or (f"frame {', '.join(failed)} could not be segmented" if failed else None)
                     or _write_dicom(path, image, rows, out_dir, stem))
            if error:
                warnings.append(f"{path}: DICOM SEG/SR not written ({error})")
                for row in held:
                    if row.ok and "dicom-out-failed" not in row.flags:
                        row.flags.append("dicom-out-failed")
            yield from ((row, None) for row in held)
        measured = [vars(r) for r in rows if r.ok and _written(writing.get(r.frame))] if image.n_frames > 1 else []
        if measured:  # (a single frame's files are still being written while the next file is segmented)
            from .plots import plot_csa_per_frame

            where = f"{measured[0]['side'] or 'side unknown'}, {measured[0]['level']}"
            plot_csa_per_frame(measured, out_dir / f"{stem}_csa.png", f"{path.name} ({where})")
    finally:
        close_image(image)


def _segment_frame(segmenter, image, index: int, path: Path, stem: str, out_dir: Path, writer: Optional[Executor],
                   outputs: Outputs, labels: Labels, times: StageTimes) -> Tuple[FrameResult, Optional[Future]]:
    """One frame's row, and the writing of its files on ``writer`` (None: written here, before returning); an error
    row (naming the frame) when it cannot be done."""
    since = time.perf_counter()
    try:
        frame = image.frame(index)
        since = times.add("read", since)
        prediction = segmenter.predict(image, index)
        since = times.add("network", since)
        result = frame_result(segmenter, image, index, path, prediction, labels)
        since = times.add("measure", since)
        frame_stem = stem + (f"_f{index:04d}" if image.n_frames > 1 else "")
        _name_frame_outputs(frame_stem, outputs, result)
        write = (out_dir, frame_stem, frame, image.spacing_mm, prediction, outputs, result, overlay_caption(result))
        writing = writer.submit(_write_frame_outputs, *write) if writer else _write_frame_outputs(*write)
        times.add("write outputs", since)
    except Exception as error:
        if image.n_frames == 1:
            raise
        return _frame_error_row(path, index, error), None
    times.frames += 1
    return result, writing


def _written(writing: Optional[Future]) -> bool:
    """Whether a frame's files were written (waits for them)."""
    return writing is None or writing.exception() is None


def _frame_error_row(path: Path, index: int, error: BaseException) -> FrameResult:
    result = _error_row(path, error)
    result.frame = index
    return result


def _write_dicom(path: Path, image, rows: Sequence[FrameResult], out_dir: Path, stem: str) -> Optional[str]:
    """Write the SEG/SR of a DICOM input from its frames' mask PNGs; the reason when it fails, else None."""
    from .dicom_out import write_dicom_outputs
    from .io import read_mask

    measured = [r for r in rows if r.ok]
    try:
        masks = [read_mask(out_dir / r.mask) for r in measured]
        write_dicom_outputs(path, image, measured, masks, out_dir, stem)
    except Exception as error:  # the measurement stands; the file is named with the reason
        return str(error)
    return None


def _run_settings(segmenter, spacing_mm, outputs: Outputs, labels: Labels) -> dict:
    from .spacing import parse_spacing

    spacing = parse_spacing(spacing_mm, "--spacing")
    return {"model": segmenter.model_id, "weights": weights_checksums(segmenter),
            "spacing_mm": list(spacing) if spacing else None, "save_prob": bool(outputs.save_prob),
            "mask_formats": sorted(outputs.mask_formats), "patient": labels.patient, "side": labels.side,
            "level": labels.level, "dicom_out": bool(outputs.dicom_out), "overlay": bool(outputs.overlay)}


def weights_checksums(segmenter) -> List[str]:
    """The checksum of each model folder a segmenter runs (each member of an ensemble, both stages of a two-stage
    model; none for one without a folder): two folders of one name@version (the folds of a cross-validation, say)
    are told apart."""
    from .runtime import model_checksum
    from .zoo import MODEL_JSON, WEIGHTS

    return [model_checksum([folder / MODEL_JSON, folder / WEIGHTS]) for folder in getattr(segmenter, "folders", [])]


_SETTINGS_ADDED = {"overlay": True}  # settings recorded since a later version: an older folder had the default


def check_run_settings(out_dir: Path, settings: dict) -> None:
    """Record the settings of a new results folder; refuse to continue one made with other settings
    (its finished rows would be skipped, and the folder would mix two kinds of result)."""
    from .io import atomic_write

    refined = next(out_dir.glob(f"*{REFINE_RECORD_SUFFIX}"), None)
    if refined is not None:
        raise ValueError(f"{out_dir} holds refine results ({refined.name}): give segment a folder of its own")
    path = out_dir / RUN_SETTINGS_FILE
    if path.is_file():
        try:
            recorded = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: not readable ({error}); use another --out") from None
        changed = [f"{key} {recorded.get(key, _SETTINGS_ADDED.get(key))!r} -> {value!r}"
                   for key, value in settings.items() if recorded.get(key, _SETTINGS_ADDED.get(key)) != value]
        if changed:
            raise ValueError(f"{out_dir} holds results made with other settings ({'; '.join(changed)}); "
                             "give another --out, or the same settings to continue it")
        return
    text = json.dumps(settings, indent=1) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def segment_files(paths: Sequence[PathLike], out_dir: PathLike, segmenter, spacing_mm=None,
                  save_prob: bool = False, mask_formats: Sequence[str] = (),
                  progress: Optional[Progress] = None,
                  on_result: Optional[Callable[[FrameResult], None]] = None,
                  labels: Labels = Labels(), dicom_out: bool = False,
                  timings: Optional[StageTimes] = None, overlay: bool = True) -> BatchSummary:
    """Segment each file (every frame of a clip) into ``out_dir``; see the module docstring.

    ``spacing_mm`` overrides every file's own spacing, ``labels`` say the patient, side and level
    (a file that says another side is an error row). ``dicom_out`` adds a DICOM SEG and SR per DICOM
    input (:mod:`dicom_out`); ``overlay`` False writes no annotated overlay PNGs. ``on_result`` sees
    each row as written; ``timings`` collects the seconds spent per stage. A clip's rows are written
    as its frames are done, and a rerun continues a clip from the first frame not done.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = Outputs(overlay, save_prob, tuple(mask_formats), dicom_out)
    settings = _run_settings(segmenter, spacing_mm, outputs, labels)
    results_path = out_dir / RESULTS_FILE
    earlier: Dict[str, List[FrameResult]] = {}
    for row in read_results(results_path) if results_path.is_file() else []:
        if row.ok:
            earlier.setdefault(row.image, []).append(row)
    paths = [Path(p) for p in paths]
    todo = [p for p in paths if str(p) not in earlier or _resumed_stem(earlier[str(p)])]
    resumed = {p: _resumed_stem(earlier[str(p)]) for p in todo if str(p) in earlier}
    taken = _existing_outputs(out_dir) | set(resumed.values())  # a resumed clip keeps its stem to itself
    stems = {**output_stems([p for p in todo if p not in resumed], taken), **resumed}
    times = timings if timings is not None else StageTimes()
    failures: List[FrameResult] = []
    warnings: List[str] = []
    n_frames, n_skipped, failed = 0, len(paths) - len(todo), set()
    reader = ReadAhead(todo, spacing_mm)
    held: Deque[Tuple[Path, FrameResult, Optional[Future]]] = deque()  # rows whose files are being written

    def hand_on() -> None:
        """Write the first held row once its files are written (a failed write makes it the frame's error row); it
        stays held until then, so that an interrupted batch still writes it."""
        nonlocal n_frames
        since = time.perf_counter()
        path, row, writing = held[0]
        if not _written(writing):
            row = _frame_error_row(path, row.frame, writing.exception())
        since = times.add("write outputs", since)
        held.popleft()
        writer.write(row)
        if on_result:
            on_result(row)
        times.add("results row", since)
        n_frames += row.ok
        if not row.ok:
            failures.append(row)
            failed.add(path)

    with ResultsWriter(results_path) as writer, contextlib.closing(reader), \
            ThreadPoolExecutor(1, thread_name_prefix="median-nerve-seg-write") as output_writer:
        check_run_settings(out_dir, settings)
        try:
            for path in (progress(todo) if progress else todo):
                rows = _segment_file(segmenter, path, stems[path], out_dir, reader, output_writer, outputs, labels,
                                     earlier.get(str(path), []), warnings, times)
                n_new = 0
                while True:
                    try:
                        row, writing = next(rows)
                    except StopIteration:
                        break
                    except Exception as error:  # one bad file is a row, never the end of the batch
                        if n_new == 0 and earlier.get(str(path)):  # done before: its rows stand, none duplicated
                            warnings.append(f"{path}: not opened again ({_error_row(path, error).error}); the "
                                            f"{len(earlier[str(path)])} frames done earlier stand")
                            break
                        row, writing = _error_row(path, error), None
                    n_new += 1
                    held.append((path, row, writing))
                    while len(held) > 1:  # the earlier frame's files were written while this one was segmented
                        hand_on()
                n_skipped += path in resumed and n_new == 0
        finally:  # an interrupted batch keeps the rows whose files it was writing
            while held:
                hand_on()
    return BatchSummary(len(paths), n_skipped, len(failed), n_frames, results_path, failures, warnings)


def measure_files(paths: Sequence[PathLike], spacing_mm=None, labels: Labels = Labels()) -> List[FrameResult]:
    """Results rows of masks drawn elsewhere; an unreadable mask is an error row."""
    from .io import read_mask
    from .measure import measure_mask
    from .spacing import parse_spacing

    spacing = parse_spacing(spacing_mm, "--spacing")
    rows = []
    for path in map(Path, paths):
        try:
            measurement = measure_mask(read_mask(path), spacing)
        except Exception as error:
            rows.append(_error_row(path, error))
            continue
        rows.append(FrameResult(
            image=str(path), patient=labels.patient or patient_of(None, path), side=labels.side or "",
            level=labels.level, spacing_source="user" if spacing else "unknown", mask=path.name,
            **measurement_columns(measurement)))
    return rows


def write_probability_png(path: Path, probability: np.ndarray) -> None:
    """A probability map (0..1) as an 8-bit PNG of p x 255 (what ``evaluate`` reads for the AUC)."""
    from PIL import Image

    from .io import atomic_write

    pixels = np.clip(np.round(np.asarray(probability, np.float64) * 255), 0, 255).astype(np.uint8)
    atomic_write(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))
