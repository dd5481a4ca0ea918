"""The task of *Segment all frames*: a clip's frames segmented in a background job, then taken into the scene."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from MedianNerveSegLib.jobs import DEFAULT_RUNNER, Runner, segmentation_flags, segmentation_job
from MedianNerveSegLib.runtime import version_label
from MedianNerveSegLib.tasks import Task
from MedianNerveSegLib.zoo import load_info, resolve_model


@dataclass
class ClipResult:
    """The per-frame segmentation (browsed with the clip), its CSA-per-frame table and the frames to check."""

    segmentation: Any
    table: Any
    flags: Dict[str, List[str]]


class ClipSegmentationTask(Task):
    """Exports the clip's frames to a work folder, segments them in a job, imports the result into the
    scene (``finish``); the work folder goes when the job's processes have ended (``cleanup``)."""

    ok_codes = (0, 1)  # 1: some frames failed, each named in the results and in ``flags``

    def __init__(self, scene_logic, volume_node, model: Optional[str] = None, device: str = "cpu",
                 runner: Runner = DEFAULT_RUNNER, low_confidence: float = 0.7, runtime: str = "auto") -> None:
        self.scene_logic, self.volume_node, self.low_confidence = scene_logic, volume_node, low_confidence
        self.runtime = runtime
        self.model_dir = resolve_model(model)
        self.work = Path(tempfile.mkdtemp(prefix="MedianNerveSeg-"))
        try:
            self.frames = scene_logic.export_frames(volume_node, self.work / "frames")
            super().__init__(segmentation_job(self.frames, self.work / "results", model=str(self.model_dir),
                                              device=device, runner=runner, runtime=runtime))
        except BaseException:
            self.cleanup()
            raise

    def describe(self, record: dict) -> str:
        return f"Segmenting frame {record.get('done', 0)} of {len(self.frames)}..."

    def finish(self, code: int) -> ClipResult:
        info = load_info(self.model_dir)
        results = self.work / "results"
        segmentation, table = self.scene_logic.import_frame_results(self.volume_node, results, self.frames,
                                                                    info.name,
                                                                    version_label(info.version, self.runtime),
                                                                    info.review_width_mm2)
        return ClipResult(segmentation, table, segmentation_flags(results, self.low_confidence))

    def cleanup(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
