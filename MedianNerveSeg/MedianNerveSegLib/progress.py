"""Structured progress lines: how a command run as a background job tells its caller how far it is.

With :data:`PROGRESS_ENV` set (background jobs set it), commands print one line per step,
``@progress {"task": "segment", "done": 3, "total": 10, ...}``, on stdout; the job's reader
thread parses them (:func:`parse`). A terminal user sees the usual progress bar instead.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, Iterable, Iterator, Optional, Sequence, TypeVar

PROGRESS_ENV = "MEDIAN_NERVE_SEG_PROGRESS"
PREFIX = "@progress "
T = TypeVar("T")


def enabled() -> bool:
    return bool(os.environ.get(PROGRESS_ENV))


def report(task: str, done: int, total: int, **values: Any) -> None:
    """One progress line (only when :data:`PROGRESS_ENV` is set)."""
    if enabled():
        record = {"task": task, "done": int(done), "total": int(total), **values}
        print(PREFIX + json.dumps(record), file=sys.stdout, flush=True)


def parse(line: str) -> Optional[Dict[str, Any]]:
    """The record of a progress line; None for any other line (or a damaged one)."""
    if not line.startswith(PREFIX):
        return None
    try:
        record = json.loads(line[len(PREFIX):])
    except ValueError:
        return None
    return record if isinstance(record, dict) and {"task", "done", "total"} <= set(record) else None


def track(items: Sequence[T], task: str, description: str) -> Iterator[T]:
    """Iterate over ``items`` with a progress line after each (as a job) or a progress bar (in a terminal)."""
    if enabled():
        report(task, 0, len(items))
        for done, item in enumerate(items, 1):
            yield item
            report(task, done, len(items))
        return
    from tqdm import tqdm

    yield from tqdm(items, desc=description, unit="file", file=sys.stderr, disable=len(items) < 2)


def tracker(task: str, description: str):
    """``track`` as the ``progress`` callable of :func:`pipeline.segment_files`."""
    def wrap(items: Iterable[T]) -> Iterator[T]:
        return track(list(items), task, description)
    return wrap
