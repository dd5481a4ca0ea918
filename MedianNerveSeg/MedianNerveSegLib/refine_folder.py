"""``refine`` into a folder: one image's mask refined with clicks, its results row and a record of every step.

A folder holds, per image (per clip frame), ``<stem>_r<N>_mask.png`` for its N-th refinement (never written
over), ``<stem>_mask.png`` and ``<stem>_overlay.png`` (the newest), its rows of ``measurements.csv`` (each
naming its ``_r<N>`` mask) and ``<stem>_clicks.json``, the record of the steps: the image's checksum, each
step's input mask, clicks, resulting mask and its checksum. Refining a mask that is one of the recorded results
continues that session (the model is given the clicks that made it). Everything is checked before anything is
written; writers of one folder take turns (a lock); an interrupted call leaves the files it wrote consistent:
a numbered mask without a row is skipped by the next call's numbering, never reused.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union


from .pipeline import REFINE_RECORD_SUFFIX as RECORD_SUFFIX
from .pipeline import RUN_SETTINGS_FILE, Labels, frame_result, input_stem, overlay_caption
from .results import RESULTS_FILE, FrameResult, ResultsWriter

PathLike = Union[str, Path]
LOCK_FILE = ".refine.lock"


@dataclass
class RefineOutcome:
    """What ``refine_file`` did: the results row, this call's refinements, every click of the session so far,
    the measurement of the mask it started from, and the files it wrote."""

    row: FrameResult
    steps: List[Any]
    session_clicks: List[Any]
    before: Any
    mask_path: Path
    step_mask_path: Path
    overlay_path: Path
    record_path: Path


def file_sha256(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _frame_index(image, frame: Optional[int], path: Path) -> int:
    if frame is None:
        if image.n_frames > 1:
            raise ValueError(f"{path}: a clip of {image.n_frames} frames: give --frame (0 to {image.n_frames - 1})")
        return 0
    if not 0 <= frame < image.n_frames:
        raise ValueError(f"{path}: --frame {frame} is not one of its frames (0 to {image.n_frames - 1})")
    return frame


_STEP_KEYS = {"step": int, "clicks": list, "session_clicks": list, "mask": str, "mask_sha256": str}


def read_record(path: Path) -> Dict[str, Any]:
    """A refine record, its steps' clicks parsed (``history``: (mask checksum, clicks) per step); ValueError naming
    the file when it is not one."""
    from .clicks import parse_click

    def refuse(why: str) -> ValueError:
        return ValueError(f"{path}: not a refine record ({why}); give another --out")

    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise refuse(str(error).splitlines()[0]) from None
    if not isinstance(record, dict) or not isinstance(record.get("steps"), list):
        raise refuse("no list of steps")
    if not isinstance(record.get("image_sha256"), str) or not isinstance(record.get("frame"), int):
        raise refuse("no image checksum and frame")
    history = []
    for number, step in enumerate(record["steps"], start=1):
        wrong = [key for key, kind in _STEP_KEYS.items() if not isinstance(step, dict) or
                 not isinstance(step.get(key), kind)]
        if wrong:
            raise refuse(f"step {number} lacks {', '.join(wrong)}")
        try:
            history.append((step["mask_sha256"], [parse_click(text) for text in step["session_clicks"]]))
        except ValueError as error:
            raise refuse(f"step {number}: {error}") from None
    return {**record, "history": history}


def _record(path: Path, image_sha256: str, image_path: Path, frame: int) -> Dict[str, Any]:
    """This folder's record of the image's frame (a new one when there is none); refused when it is another
    image's (by content: a moved image keeps its record, another image of the same name does not)."""
    if not path.exists():
        return {"image": str(image_path.resolve()), "image_sha256": image_sha256, "frame": frame, "steps": [],
                "history": []}
    record = read_record(path)
    if (record["image_sha256"], record["frame"]) != (image_sha256, frame):
        raise ValueError(f"{path}: records the refinement of another image or frame ({record.get('image')} frame "
                         f"{record['frame']}), not of {image_path} frame {frame}; give another --out")
    return record


def _next_step(out_dir: Path, stem: str, record: Dict[str, Any]) -> int:
    """One more than every step recorded and every ``<stem>_r<N>_mask.png`` present (one an interrupted call wrote)."""
    pattern = re.compile(rf"^{re.escape(stem)}_r(\d+)_mask\.png$")
    present = [int(m.group(1)) for m in (pattern.match(p.name) for p in out_dir.iterdir()) if m]
    return max([len(record["steps"]), *present]) + 1


def refine_file(refiner, image_path: PathLike, mask_path: PathLike, clicks: Sequence[Any], out_dir: PathLike,
                spacing_mm=None, frame: Optional[int] = None, labels: Labels = Labels()) -> RefineOutcome:
    """Refine the mask of one image (one frame of a clip) with ``clicks``, applied one at a time, into ``out_dir``
    (see the module docstring). A folder holding ``segment`` results, a ``<stem>_mask.png`` that refine did not
    write, or a results file of another kind are refused before anything is written."""
    from .clicks import check_clicks
    from .inference import Prediction
    from .io import FolderLock, atomic_write, read_image, read_mask, write_mask_png, write_overlay_png
    from .measure import measure_mask
    from .refine import check_mask, clicks_of, mask_digest

    image_path, mask_path, out_dir = Path(image_path), Path(mask_path), Path(out_dir)
    if not clicks:
        raise ValueError("no click given: add --click +X,Y where the nerve was missed, --click -X,Y where "
                         "background was taken in (X = column, Y = row)")
    if (out_dir / RUN_SETTINGS_FILE).is_file():
        raise ValueError(f"{out_dir} holds segment results ({RUN_SETTINGS_FILE}): give refine a folder of its own")
    image = read_image(image_path, spacing_mm)
    index = _frame_index(image, frame, image_path)
    mask = check_mask(read_mask(mask_path), image.frame(index).shape, str(mask_path))
    check_clicks(clicks, mask.shape, str(image_path))
    stem = input_stem(image_path) + (f"_f{index:04d}" if image.n_frames > 1 else "")
    out_dir.mkdir(parents=True, exist_ok=True)
    with FolderLock(out_dir / LOCK_FILE, "refine folder"):
        ResultsWriter.can_continue(out_dir / RESULTS_FILE)  # one of another kind is refused before any write
        record_path = out_dir / f"{stem}{RECORD_SUFFIX}"
        record = _record(record_path, file_sha256(image_path), image_path, index)
        history = record.pop("history")
        for _, recorded in history:
            check_clicks(recorded, mask.shape, str(record_path))
        latest = out_dir / f"{stem}_mask.png"
        if latest.exists() and mask_digest(read_mask(latest)) not in {digest for digest, _ in history}:
            raise ValueError(f"{latest} exists and is not a refinement recorded in {record_path.name}: "
                             "give another --out")
        carried = list(clicks_of(history, mask))
        session = carried + list(clicks)
        steps = refiner.refine_clicks(image, mask, session, index, already=len(carried))
        final = steps[-1]
        number = _next_step(out_dir, stem, record)
        step_path = out_dir / f"{stem}_r{number}_mask.png"
        overlay = out_dir / f"{stem}_overlay.png"
        folders = [p.name for p in (latest, overlay, record_path) if p.is_dir()]
        if folders:
            raise ValueError(f"{out_dir}: {', '.join(folders)} is a folder, not a file refine can write; "
                             "give another --out")
        found = bool(final.mask.any())
        confidence = float(final.probability[final.mask].mean()) if found else float(final.probability.max())
        ms = sum(step.milliseconds for step in steps)
        row = frame_result(refiner, image, index, image_path,
                           Prediction(final.probability, final.mask, confidence, found, ms), labels)
        row.mask = step_path.name
        source = next((s["mask"] for s in reversed(record["steps"]) if s["mask_sha256"] == mask_digest(mask)), None)
        record["steps"].append({"step": number, "input_mask": source or str(mask_path.resolve()),
                                "clicks": [str(c) for c in clicks], "session_clicks": [str(c) for c in session],
                                "model": refiner.model_id, "mask": step_path.name,
                                "mask_sha256": mask_digest(final.mask), "area_px": row.area_px,
                                "area_mm2": row.area_mm2, "ms": round(ms, 1)})
        with ResultsWriter(out_dir / RESULTS_FILE) as writer:  # opened first: a file it cannot append to stops all
            write_mask_png(step_path, final.mask)
            writer.write(row)
        text = json.dumps(record, indent=1) + "\n"
        atomic_write(record_path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        write_mask_png(latest, final.mask)
        write_overlay_png(overlay, image.frame(index), final.mask, caption=overlay_caption(row) + [
            f"{len(session)} click{'s' if len(session) != 1 else ''}"], spacing_mm=image.spacing_mm, clicks=session)
    return RefineOutcome(row, steps, session, measure_mask(mask, image.spacing_mm), latest, step_path, overlay,
                         record_path)


def refinement_of(label: PathLike, image: PathLike) -> Optional[Dict[str, Any]]:
    """How ``refine`` made ``label`` of ``image``, from the records beside the label: the clicks that made it, every
    click made on that image in that folder up to it, and the click model; None when refine did not (a record of
    another image, by content, never counts)."""
    from .io import read_mask
    from .refine import mask_digest

    label = Path(label)
    try:
        digest, image_sha256 = mask_digest(read_mask(label)), file_sha256(image)
    except Exception:  # not a readable mask or image: the store's own checks name it
        return None
    for record_path in sorted(label.parent.glob(f"*{RECORD_SUFFIX}")):
        try:
            record = read_record(record_path)
        except ValueError:
            continue
        steps = record["steps"]
        if record["image_sha256"] != image_sha256:
            continue
        for number in range(len(steps), 0, -1):  # the newest refinement that gave this mask
            step = steps[number - 1]
            if step["mask_sha256"] == digest:
                return {"clicks": list(step["session_clicks"]), "click_model": step.get("model", ""),
                        "clicks_made": sum(len(earlier["clicks"]) for earlier in steps[:number])}
    return None
