"""NerveSceneLogic: MRML nodes <-> the core (images, segmenter, measurement, dataset store).

The scene logic is given the MRML scene and the module logics it uses; it never reaches for
slicer.mrmlScene, slicer.app or slicer.modules, and imports no Qt. In Slicer the widget
passes ``slicer.mrmlScene``, ``slicer.modules.segmentations.logic()`` and
``slicer.modules.sequences.logic()``; in tests they are built from the slicer-core wheel.

Conventions
-----------
* A 2D image is a single-slice scalar volume: array (1, H, W), spacing (col, row, 1) and
  the IJK->RAS directions diag(-1, -1, 1) that Slicer gives 2D images read through ITK
  (identity LPS directions). Unknown spacing is stored as 1.0 and flagged with the node
  attribute ``MedianNerveSeg.SpacingSource = "unknown"``: it is then never read back as mm.
* A cine clip (T, H, W) becomes a vtkMRMLSequenceNode of T frame volumes with a sequence
  browser; ``load_image`` returns the browser's proxy volume (what the views show) and
  ``frame`` arguments index the sequence. Without a Sequences logic the clip becomes a
  multi-slice volume whose slice k is frame k (same ``frame`` arguments).
* A segmentation made by ``segment`` holds one segment "Median nerve" (terminology
  Tissue / Nerve of the DICOM master list, its recommended colour), has the volume as
  reference geometry, sits under the volume in the subject hierarchy, and records the
  frame, model, version, confidence and found flag in ``MedianNerveSeg.*`` attributes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from MedianNerveSegLib import codes
from MedianNerveSegLib.data import DEFAULT_PATIENT_PATTERN, patient_id
from MedianNerveSegLib.dataset import LabelledDataset
from MedianNerveSegLib.image import SpacingSource, UltrasoundImage
from MedianNerveSegLib.io import (NERVE_SEGMENT_NAME, channels_to_grey, format_of, read_image, read_mask,
                                  write_image_nrrd)
from MedianNerveSegLib.measure import NerveMeasurement, as_spacing, measure_mask
from MedianNerveSegLib.pipeline import measurement_columns, measurement_flags
from MedianNerveSegLib.results import RESULTS_FILE, FrameResult, read_results
from MedianNerveSegLib.runtime import version_label
from MedianNerveSegLib.uncertainty import REVIEW_FLAG, REVIEW_WIDTH_MM2, CsaInterval, csa_interval

PathLike = Union[str, Path]

ATTR_SPACING_SOURCE = "MedianNerveSeg.SpacingSource"
ATTR_SOURCE_FILE = "MedianNerveSeg.SourceFile"
ATTR_FRAME = "MedianNerveSeg.Frame"
ATTR_MODEL = "MedianNerveSeg.Model"
ATTR_MODEL_VERSION = "MedianNerveSeg.ModelVersion"
ATTR_CONFIDENCE = "MedianNerveSeg.Confidence"
ATTR_FOUND = "MedianNerveSeg.Found"
ATTR_MILLISECONDS = "MedianNerveSeg.Milliseconds"

NERVE_COLOR = tuple(c / 255.0 for c in codes.NERVE_COLOR)
LPS_2D_DIRECTIONS = ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))
TABLE_UNITS = {"area_px": "px", "area_mm2": "mm2", "perimeter_px": "px", "perimeter_mm": "mm", "csa_low_mm2": "mm2",
               "csa_high_mm2": "mm2"}


def _terminology_entry() -> str:
    return slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(*codes.slicer_terminology_arguments())


def _matrix(getter: Callable[[vtk.vtkMatrix4x4], None]) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    getter(matrix)
    return matrix


def _transform_point(matrix: vtk.vtkMatrix4x4, point: Tuple[float, float, float]) -> np.ndarray:
    return np.array(matrix.MultiplyPoint((float(point[0]), float(point[1]), float(point[2]), 1.0))[:3])


class NerveSceneLogic:
    """Slicer glue around MedianNerveSegLib; one instance per scene."""

    def __init__(self, scene, segmentations_logic, sequences_logic=None) -> None:
        self.scene = scene
        self.segmentations_logic = segmentations_logic
        self.sequences_logic = sequences_logic
        self._ai_masks: Dict[Tuple[str, int], np.ndarray] = {}  # (segmentation node ID, frame) -> the AI's mask
        self._ai_bands: Dict[Tuple[str, int], Tuple[Tuple[int, int], float]] = {}  # ... -> band px, review width
        self._click_sessions: Dict[Tuple[str, int], Any] = {}  # (segmentation node ID, frame) -> refine.ClickSession
        self._observations: Dict[int, Tuple[Any, List[int]]] = {}
        self._next_handle = 1
        # Node IDs are reused after File > Close Scene: per-scene state must not outlive it.
        scene.AddObserver(slicer.vtkMRMLScene.EndCloseEvent, self._on_scene_closed)

    def _on_scene_closed(self, caller=None, event=None) -> None:
        self._ai_masks.clear()
        self._ai_bands.clear()
        self._click_sessions.clear()
        for handle in list(self._observations):
            self.remove_observer(handle)

    # ------------------------------------------------------------------------- images

    def load_image(self, path: PathLike, spacing_mm=None):
        """An image file as a volume node (a cine as a sequence; see the module docstring)."""
        image = read_image(path, spacing_mm=spacing_mm)
        name = Path(path).name.split(".")[0]
        if image.n_frames > 1 and self.sequences_logic is not None:
            return self._load_sequence(image, name)
        volume = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        self._fill_volume(volume, image.pixels if image.pixels.ndim == 3 else image.pixels[np.newaxis], image)
        volume.CreateDefaultDisplayNodes()
        return volume

    def _fill_volume(self, volume, pixels: np.ndarray, image: UltrasoundImage) -> None:
        slicer.util.updateVolumeFromArray(volume, np.ascontiguousarray(pixels, dtype=np.float32))
        volume.SetIJKToRASDirections(*[v for row in LPS_2D_DIRECTIONS for v in row])
        row, col = image.spacing_mm or (1.0, 1.0)
        volume.SetSpacing(col, row, 1.0)
        volume.SetAttribute(ATTR_SPACING_SOURCE, image.spacing_source)
        volume.SetAttribute(ATTR_SOURCE_FILE, image.source)

    def _load_sequence(self, image: UltrasoundImage, name: str):
        sequence = self.scene.AddNewNodeByClass("vtkMRMLSequenceNode", f"{name} frames")
        sequence.SetIndexName("frame")
        sequence.SetIndexUnit("")
        for index in range(image.n_frames):
            frame = slicer.vtkMRMLScalarVolumeNode()
            self._fill_volume(frame, image.frame(index)[np.newaxis], image)
            sequence.SetDataNodeAtValue(frame, str(index))
        browser = self.scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", f"{name} browser")
        browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
        self.sequences_logic.AddSynchronizedNode(sequence, None, browser)
        proxy = browser.GetProxyNode(sequence)
        proxy.SetName(name)
        proxy.SetAttribute(ATTR_SPACING_SOURCE, image.spacing_source)
        proxy.SetAttribute(ATTR_SOURCE_FILE, image.source)
        proxy.CreateDefaultDisplayNodes()
        return proxy

    def scalar_volume(self, volume_node):
        """A vector (RGB) volume, e.g. a colour export loaded with Add Data, as a new grey scalar volume with
        the same geometry and the core's grey conversion; any other volume as it is. A clip's proxy stays
        as it is: its frames are converted one by one when they are read."""
        if not volume_node.IsA("vtkMRMLVectorVolumeNode") or self._sequence_of(volume_node) is not None:
            return volume_node
        grey = channels_to_grey(slicer.util.arrayFromVolume(volume_node))
        scalar = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode",
                                              self.scene.GenerateUniqueName(f"{volume_node.GetName()} grey"))
        slicer.util.updateVolumeFromArray(scalar, np.ascontiguousarray(grey, dtype=np.float32))
        scalar.CopyOrientation(volume_node)
        for key in (ATTR_SPACING_SOURCE, ATTR_SOURCE_FILE, "DICOM.instanceUIDs"):  # where it came from
            if volume_node.GetAttribute(key) is not None:
                scalar.SetAttribute(key, volume_node.GetAttribute(key))
        scalar.CreateDefaultDisplayNodes()
        self._place_under(scalar, volume_node)
        return scalar

    def browser_of(self, volume_node):
        """The sequence browser of a clip's proxy volume, or None (the widget shows its toolbar)."""
        if self.sequences_logic is None:
            return None
        return self.sequences_logic.GetFirstBrowserNodeForProxyNode(volume_node)

    def _sequence_of(self, volume_node):
        """The sequence whose proxy ``volume_node`` is, or None."""
        if self.sequences_logic is None:
            return None
        browser = self.sequences_logic.GetFirstBrowserNodeForProxyNode(volume_node)
        return browser.GetSequenceNode(volume_node) if browser is not None else None

    def n_frames(self, volume_node) -> int:
        """Frames of a sequence proxy, or slices of a volume."""
        sequence = self._sequence_of(volume_node)
        if sequence is not None:
            return sequence.GetNumberOfDataNodes()
        return volume_node.GetImageData().GetDimensions()[2]

    def current_frame(self, volume_node) -> int:
        """The frame a sequence browser shows (0 for a plain volume)."""
        if self.sequences_logic is None:
            return 0
        browser = self.sequences_logic.GetFirstBrowserNodeForProxyNode(volume_node)
        return browser.GetSelectedItemNumber() if browser is not None else 0

    def _frame_pixels(self, volume_node, frame: int) -> np.ndarray:
        if not 0 <= frame < self.n_frames(volume_node):
            raise IndexError(f"frame {frame} out of range: {volume_node.GetName()} has {self.n_frames(volume_node)}")
        sequence = self._sequence_of(volume_node)
        source, index = (sequence.GetNthDataNode(frame), 0) if sequence is not None else (volume_node, frame)
        pixels = slicer.util.arrayFromVolume(source)[index]
        if pixels.ndim == 3:  # vector (RGB) volume: the core reader's grey
            pixels = channels_to_grey(pixels)
        return pixels

    def _spacing(self, volume_node) -> Tuple[Optional[Tuple[float, float]], str]:
        """(row, col) mm and its source. A volume this logic did not load (no attribute) with 1 x 1
        spacing is taken as uncalibrated: Slicer gives PNG/JPEG images 1 mm, never true for wrist US."""
        col, row = (float(s) for s in volume_node.GetSpacing()[:2])
        source = volume_node.GetAttribute(ATTR_SPACING_SOURCE)
        if source is None:
            source = SpacingSource.UNKNOWN if (row, col) == (1.0, 1.0) else SpacingSource.FILE_HEADER
        return (None if source == SpacingSource.UNKNOWN else (row, col)), source

    def volume_to_image(self, volume_node, frame: int = 0) -> UltrasoundImage:
        """One frame of a volume node as the core's (H, W) image, with its spacing (None if unknown)."""
        spacing, source = self._spacing(volume_node)
        pixels = np.array(self._frame_pixels(volume_node, frame), dtype=np.float32)
        return UltrasoundImage(pixels, spacing, source, volume_node.GetAttribute(ATTR_SOURCE_FILE) or "",
                               {"node": volume_node.GetName(), "frame": frame})

    # ------------------------------------------------------------------------- segmentation

    def segment(self, volume_node, segmenter, frame: int = 0, segmentation_node=None):
        """Segment one frame -> (segmentation node with the "Median nerve" segment, Prediction)."""
        prediction = segmenter.predict(self.volume_to_image(volume_node, frame), 0)
        if segmentation_node is None:
            suffix = f" frame {frame}" if self.n_frames(volume_node) > 1 else ""
            segmentation_node = self.scene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", self.scene.GenerateUniqueName(f"{volume_node.GetName()}{suffix} segmentation"))
            segmentation_node.CreateDefaultDisplayNodes()
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        segmentation_node.SetAttribute(ATTR_FRAME, str(frame))
        self.set_segment_mask(segmentation_node, volume_node, prediction.mask)
        version = version_label(segmenter.info.version, segmenter.runtime)
        for key, value in ((ATTR_MODEL, segmenter.info.name), (ATTR_MODEL_VERSION, version),
                           (ATTR_CONFIDENCE, f"{prediction.confidence:.4f}"),
                           (ATTR_FOUND, "true" if prediction.found else "false"),
                           (ATTR_MILLISECONDS, f"{prediction.milliseconds:.1f}")):
            segmentation_node.SetAttribute(key, value)
        self._ai_masks[(segmentation_node.GetID(), frame)] = prediction.mask.copy()
        self._set_band((segmentation_node.GetID(), frame), prediction.band_px, prediction.review_width_mm2)
        self._place_under(segmentation_node, volume_node)
        return segmentation_node, prediction

    def frame_of(self, segmentation_node, volume_node) -> int:
        """The frame a segmentation shows: the browser's current frame for a per-frame segmentation
        (``import_frame_results``), else the frame ``segment`` recorded."""
        if self.sequences_logic is not None:
            browser = self.sequences_logic.GetFirstBrowserNodeForProxyNode(segmentation_node)
            if browser is not None and browser is self.sequences_logic.GetFirstBrowserNodeForProxyNode(volume_node):
                return browser.GetSelectedItemNumber()
        return int(segmentation_node.GetAttribute(ATTR_FRAME) or 0)

    # ------------------------------------------------------------------------- all frames of a clip

    def export_frames(self, volume_node, folder: PathLike) -> List[Path]:
        """Every frame as an NRRD with the volume's spacing, the input of a background ``segment`` job."""
        spacing, _ = self._spacing(volume_node)
        paths = [Path(folder) / f"frame{frame:04d}.nrrd" for frame in range(self.n_frames(volume_node))]
        for frame, path in enumerate(paths):
            write_image_nrrd(path, self._frame_pixels(volume_node, frame), spacing)
        return paths

    def import_frame_results(self, volume_node, results_dir: PathLike, frame_paths: List[Path],
                             model: str = "", model_version: str = "", review_width_mm2: float = REVIEW_WIDTH_MM2):
        """The masks a ``segment`` job wrote for ``export_frames``' files, as a per-frame segmentation.

        The frames' segmentations form a sequence browsed with the clip (edits of the shown frame
        are saved back into it). Returns (segmentation proxy node, table node with one row per frame).
        """
        sequence = self._sequence_of(volume_node)
        if sequence is None:
            raise ValueError(f"{volume_node.GetName()} is not a clip loaded as a sequence: segment its frames one by one")
        rows = _frame_results(Path(results_dir), frame_paths)
        browser = self.sequences_logic.GetFirstBrowserNodeForProxyNode(volume_node)
        name = volume_node.GetName()
        empty = np.zeros(self._frame_pixels(volume_node, 0).shape, bool)
        masks = [read_mask(Path(results_dir) / row.mask) if row is not None and row.ok else empty for row in rows]
        work = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        work.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        segmentations = self.scene.AddNewNodeByClass("vtkMRMLSequenceNode", f"{name} segmentation frames")
        segmentations.SetIndexName(sequence.GetIndexName())
        segmentations.SetIndexUnit(sequence.GetIndexUnit())
        segmentations.SetIndexType(sequence.GetIndexType())
        try:
            for frame, (row, mask) in enumerate(zip(rows, masks)):
                self.set_segment_mask(work, volume_node, mask)
                confidence = "" if row is None or row.confidence is None else f"{row.confidence:.4f}"
                found = "" if row is None or row.found is None else _cell_text(row.found)
                for key, value in ((ATTR_FRAME, str(frame)), (ATTR_MODEL, model), (ATTR_MODEL_VERSION, model_version),
                                   (ATTR_CONFIDENCE, confidence), (ATTR_FOUND, found)):
                    work.SetAttribute(key, value)
                segmentations.SetDataNodeAtValue(work, sequence.GetNthIndexValue(frame))
        finally:
            self.scene.RemoveNode(work)
        self.sequences_logic.AddSynchronizedNode(segmentations, None, browser)
        browser.SetSaveChanges(segmentations, True)
        proxy = browser.GetProxyNode(segmentations)
        proxy.SetName(self.scene.GenerateUniqueName(f"{name} segmentation"))
        proxy.CreateDefaultDisplayNodes()
        proxy.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        self._place_under(proxy, volume_node)
        spacing, _ = self._spacing(volume_node)
        table = self.measurement_table(f"{name} CSA per frame")
        for frame, (row, mask) in enumerate(zip(rows, masks)):
            self._ai_masks[(proxy.GetID(), frame)] = mask
            self._set_band((proxy.GetID(), frame), _band_of(row), review_width_mm2)
            measurement = measure_mask(mask, spacing)
            self.update_table(table, measurement, f"{name} frame {frame}", frame,
                              interval=csa_interval(_band_of(row), measurement.area_px, spacing, review_width_mm2))
        return proxy, table

    def _set_band(self, key: Tuple[str, int], band_px: Optional[Tuple[int, int]], review_width_mm2: float) -> None:
        if band_px is None:
            self._ai_bands.pop(key, None)
        else:
            self._ai_bands[key] = (band_px, review_width_mm2)

    def ai_interval(self, segmentation_node, volume_node) -> Optional[CsaInterval]:
        """The CSA interval (uncertainty.py) of the shown frame's AI mask at the volume's spacing now, while the
        segment is that mask: an edited contour, or an unknown spacing, has none."""
        key = (segmentation_node.GetID(), self.frame_of(segmentation_node, volume_node))
        stored, ai_mask = self._ai_bands.get(key), self._ai_masks.get(key)
        if stored is None or ai_mask is None:
            return None
        band, review_width_mm2 = stored
        mask = self.segment_mask(segmentation_node, volume_node)
        return csa_interval(band, int(mask.sum()), self._spacing(volume_node)[0], review_width_mm2) \
            if np.array_equal(mask, ai_mask) else None

    def csa_chart(self, table_node, title: str):
        """A plot chart of CSA (mm², or px when uncalibrated) against frame, from a per-frame table."""
        in_mm = not np.isnan(table_node.GetTable().GetColumnByName("area_mm2").GetValue(0))
        column, unit = ("area_mm2", "mm²") if in_mm else ("area_px", "px")
        series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{title} CSA")
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName("frame")
        series.SetYColumnName(column)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
        series.SetColor(*NERVE_COLOR)
        chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{title} CSA per frame")
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
        chart.SetTitle(f"{title}: median nerve CSA per frame")
        chart.SetXAxisTitle("frame")
        chart.SetYAxisTitle(f"CSA ({unit})")
        chart.SetLegendVisibility(False)
        return chart

    def nerve_segment_id(self, segmentation_node, create: bool = False) -> str:
        """ID of the "Median nerve" segment ("" when absent and not created)."""
        segmentation = segmentation_node.GetSegmentation()
        segment_id = segmentation.GetSegmentIdBySegmentName(NERVE_SEGMENT_NAME)
        if segment_id or not create:
            return segment_id
        segment_id = segmentation.AddEmptySegment("", NERVE_SEGMENT_NAME, NERVE_COLOR)
        segment = segmentation.GetSegment(segment_id)
        segment.SetTag(segment.GetTerminologyEntryTagName(), _terminology_entry())
        return segment_id

    def set_segment_mask(self, segmentation_node, volume_node, mask: np.ndarray) -> None:
        """Replace the "Median nerve" segment by a (H, W) mask on the volume's grid (frame from the node).

        Goes through vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment, the call the
        Segment Editor's effects use, so observers see the same events as for a manual edit.
        """
        segment_id = self.nerve_segment_id(segmentation_node, create=True)
        dims = volume_node.GetImageData().GetDimensions()
        if np.shape(mask) != (dims[1], dims[0]):
            raise ValueError(f"mask shape {np.shape(mask)} differs from the image {(dims[1], dims[0])}")
        labelmap = slicer.vtkOrientedImageData()
        labelmap.SetDimensions(dims)
        labelmap.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        labels = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dims[::-1])
        labels[:] = 0
        labels[self._slice_index(segmentation_node, volume_node)] = np.asarray(mask) != 0
        labelmap.SetImageToWorldMatrix(_matrix(volume_node.GetIJKToRASMatrix))
        if not self.segmentations_logic.SetBinaryLabelmapToSegment(
                labelmap, segmentation_node, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE):
            raise RuntimeError(f"could not set the mask of {segmentation_node.GetName()}")

    def _slice_index(self, segmentation_node, volume_node) -> int:
        """The slice of ``volume_node`` a segmentation's frame is on (0 unless a multi-slice cine)."""
        if self._sequence_of(volume_node) is not None:
            return 0
        return int(segmentation_node.GetAttribute(ATTR_FRAME) or 0)

    def segment_mask(self, segmentation_node, volume_node) -> np.ndarray:
        """The "Median nerve" segment as a (H, W) bool array on the volume's grid."""
        segment_id = self.nerve_segment_id(segmentation_node)
        if not segment_id:
            raise ValueError(f"{segmentation_node.GetName()} has no '{NERVE_SEGMENT_NAME}' segment")
        colors_before = self._node_ids("vtkMRMLColorTableNode")
        labelmap = self.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__MedianNerveSeg_temp__")
        try:
            ids = vtk.vtkStringArray()
            ids.InsertNextValue(segment_id)
            if not self.segmentations_logic.ExportSegmentsToLabelmapNode(
                    segmentation_node, ids, labelmap, volume_node, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY):
                raise RuntimeError(f"could not export {segmentation_node.GetName()}")
            labels = slicer.util.arrayFromVolume(labelmap)
            return labels[self._slice_index(segmentation_node, volume_node)] != 0
        finally:
            for node_id in self._node_ids("vtkMRMLColorTableNode") - colors_before:  # the export's colour table
                self.scene.RemoveNode(self.scene.GetNodeByID(node_id))
            if labelmap.GetDisplayNode() is not None:
                self.scene.RemoveNode(labelmap.GetDisplayNode())
            self.scene.RemoveNode(labelmap)

    def _node_ids(self, class_name: str) -> set:
        nodes = self.scene.GetNodesByClass(class_name)
        return {nodes.GetItemAsObject(i).GetID() for i in range(nodes.GetNumberOfItems())}

    def _place_under(self, node, parent_node) -> None:
        """Put ``node`` under ``parent_node`` in the subject hierarchy (items made if missing)."""
        sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)
        if sh is None:
            return
        parent_item = sh.GetItemByDataNode(parent_node) or sh.CreateItem(sh.GetSceneItemID(), parent_node)
        item = sh.GetItemByDataNode(node) or sh.CreateItem(parent_item, node)
        sh.SetItemParent(item, parent_item)

    def segment_editor_node(self, segmentation_node, volume_node, tag: str = "SegmentEditor"):
        """A Segment Editor parameter node (the singleton ``tag``: "SegmentEditor" is the Segment Editor
        module's) set to edit the nerve segment."""
        editor = self.scene.GetSingletonNode(tag, "vtkMRMLSegmentEditorNode")
        if editor is None:
            editor = slicer.vtkMRMLSegmentEditorNode()
            editor.SetSingletonTag(tag)
            editor = self.scene.AddNode(editor)
        editor.SetAndObserveSegmentationNode(segmentation_node)
        editor.SetAndObserveSourceVolumeNode(volume_node)
        editor.SetSelectedSegmentID(self.nerve_segment_id(segmentation_node, create=True))
        return editor

    # ------------------------------------------------------------------------- measurement

    def measure(self, segmentation_node, volume_node) -> NerveMeasurement:
        """CSA and shape of the nerve segment (in pixels, flagged, when the spacing is unknown)."""
        spacing, _ = self._spacing(volume_node)
        return measure_mask(self.segment_mask(segmentation_node, volume_node), spacing)

    def measurement_table(self, name: str = "Median nerve CSA"):
        """A new, empty table node for ``update_table``."""
        return self.scene.AddNewNodeByClass("vtkMRMLTableNode", self.scene.GenerateUniqueName(name))

    def update_table(self, table_node, measurement: NerveMeasurement, image_name: str,
                     frame: Optional[int] = None, side: str = "", level: str = "inlet",
                     interval: Optional[CsaInterval] = None) -> int:
        """Write the measurement as the row of ``image_name`` (added, or replaced if present); returns the row.
        ``frame`` (a clip's frame index) goes in a "frame" column, the x axis of ``csa_chart``; ``side``
        ("left", "right" or "") and ``level`` in their columns, for the report; the AI's CSA interval
        (``ai_interval``; empty for an edited contour) and its review flag."""
        values = dict(image=image_name, **({} if frame is None else {"frame": frame}), side=side, level=level,
                      **measurement.as_row(), csa_low_mm2=interval.low_mm2 if interval else None,
                      csa_high_mm2=interval.high_mm2 if interval else None,
                      review=interval.needs_review if interval else "")
        table = table_node.GetTable()
        for key, value in values.items():
            if table.GetColumnByName(key) is None:
                self._add_column(table_node, key, value)
        names = table.GetColumnByName("image")
        rows = [r for r in range(table.GetNumberOfRows()) if names.GetValue(r) == image_name]
        row = rows[0] if rows else table_node.AddEmptyRow()
        for key, value in values.items():
            column = table.GetColumnByName(key)
            if isinstance(column, vtk.vtkStringArray):
                column.SetValue(row, _cell_text(value))
            else:
                column.SetValue(row, math.nan if value is None else value)
        table.Modified()
        table_node.Modified()
        return row

    @staticmethod
    def _add_column(table_node, name: str, value: Any) -> None:
        if isinstance(value, (str, bool)):
            column = vtk.vtkStringArray()
        elif isinstance(value, int):
            column = vtk.vtkIntArray()
        else:
            column = vtk.vtkDoubleArray()
        column.SetName(name)
        column.SetNumberOfTuples(table_node.GetNumberOfRows())
        for row in range(table_node.GetNumberOfRows()):  # rows from before this column: empty, not 0
            column.SetValue(row, "" if isinstance(column, vtk.vtkStringArray) else
                            0 if isinstance(column, vtk.vtkIntArray) else math.nan)
        table_node.AddColumn(column)
        if name in TABLE_UNITS:
            table_node.SetColumnUnitLabel(name, TABLE_UNITS[name])

    def observe_live_measurement(self, segmentation_node, volume_node, callback: Callable[[NerveMeasurement], None],
                                 schedule: Optional[Callable[[Callable[[], None]], None]] = None) -> int:
        """Call ``callback(measurement)`` after every change of the nerve segment's content, the frame a
        clip's browser shows included; returns a handle. ``schedule(measure)``, when given, decides when
        to measure (the widget coalesces the several events of one brush stroke into one measurement).

        The node is observed, not its vtkSegmentation: a sequence browser replaces the proxy node's
        vtkSegmentation on every frame change, and the node forwards the events of the current one."""
        last: Dict[str, Any] = {"mask": None, "spacing": None}

        def measure() -> None:
            if self.scene.GetNodeByID(segmentation_node.GetID()) is not segmentation_node:
                return  # removed (or its scene closed) before a scheduled measurement ran
            mask = self.segment_mask(segmentation_node, volume_node)
            spacing, _ = self._spacing(volume_node)
            if spacing == last["spacing"] and last["mask"] is not None and np.array_equal(mask, last["mask"]):
                return  # one edit fires several events: measure it once
            last.update(mask=mask, spacing=spacing)
            callback(measure_mask(mask, spacing))

        def on_modified(caller, event) -> None:
            (schedule or (lambda run: run()))(measure)

        tags = [segmentation_node.AddObserver(event, on_modified)
                for event in (slicer.vtkSegmentation.SourceRepresentationModified,
                              slicer.vtkSegmentation.SegmentModified)]
        handle = self._next_handle
        self._next_handle += 1
        self._observations[handle] = (segmentation_node, tags)
        return handle

    def remove_observer(self, handle: int) -> None:
        """Stop a live measurement started by ``observe_live_measurement``."""
        node, tags = self._observations.pop(handle, (None, []))
        for tag in tags:
            node.RemoveObserver(tag)

    # ------------------------------------------------------------------------- calibration

    def set_spacing(self, volume_node, spacing_mm, source: str = SpacingSource.USER) -> None:
        """Calibrate a volume (every frame of a clip); its segmentations keep their pixels, those of a
        per-frame segmentation (``import_frame_results``) in every frame."""
        row, col = as_spacing(spacing_mm)
        sequence = self._sequence_of(volume_node)
        browser = self.sequences_logic.GetFirstBrowserNodeForProxyNode(volume_node) if sequence else None
        segmentations = self._segmentations_on(volume_node)
        per_frame = [n for n in segmentations if browser is not None
                     and self.sequences_logic.GetFirstBrowserNodeForProxyNode(n) is browser]
        single = [n for n in segmentations if n not in per_frame]
        shown = browser.GetSelectedItemNumber() if browser is not None else 0
        frames = range(self.n_frames(volume_node)) if per_frame else []
        masks = {(node.GetID(), None): self.segment_mask(node, volume_node) for node in single}
        for frame in frames:
            browser.SetSelectedItemNumber(frame)
            masks.update({(node.GetID(), frame): self.segment_mask(node, volume_node) for node in per_frame})
        items = [sequence.GetNthDataNode(i) for i in range(sequence.GetNumberOfDataNodes())] if sequence else []
        for node in [volume_node] + items:
            node.SetSpacing(col, row, node.GetSpacing()[2])
            node.SetAttribute(ATTR_SPACING_SOURCE, source)
        for frame in frames:  # the browser saves each re-masked frame back into the segmentation sequence
            browser.SetSelectedItemNumber(frame)
            for node in per_frame:
                node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
                self.set_segment_mask(node, volume_node, masks[(node.GetID(), frame)])
        if browser is not None:
            browser.SetSelectedItemNumber(shown)
        for node in single:
            node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
            self.set_segment_mask(node, volume_node, masks[(node.GetID(), None)])

    def _segmentations_on(self, volume_node) -> List[Any]:
        role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
        nodes = self.scene.GetNodesByClass("vtkMRMLSegmentationNode")
        found = [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]
        return [node for node in found if node.GetNodeReference(role) is volume_node
                and self.nerve_segment_id(node)]

    def calibrate_from_line(self, volume_node, line_node, length_mm: float) -> Tuple[float, float]:
        """Scale the spacing so that ``line_node`` (drawn on the image) measures ``length_mm``.

        The line's current length is in the current spacing's units (1 mm per pixel when the
        spacing is unknown); the pixel aspect ratio is kept. The line is moved with the image
        so that it stays on the same pixels. Returns the new (row, col) spacing in mm.
        """
        if not length_mm > 0:
            raise ValueError(f"the true length must be positive, got {length_mm}")
        ras_to_ijk = _matrix(volume_node.GetRASToIJKMatrix)
        ends = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
        line_node.GetLineStartPositionWorld(ends[0])
        line_node.GetLineEndPositionWorld(ends[1])
        ijk = [_transform_point(ras_to_ijk, end) for end in ends]
        col, row = volume_node.GetSpacing()[:2]
        di, dj = ijk[1][:2] - ijk[0][:2]
        current = math.hypot(di * col, dj * row)
        if current <= 0:
            raise ValueError("the calibration line has no length in the image plane")
        scale = float(length_mm) / current
        self.set_spacing(volume_node, (row * scale, col * scale), SpacingSource.USER)
        ijk_to_ras = _matrix(volume_node.GetIJKToRASMatrix)
        line_node.SetLineStartPositionWorld(_transform_point(ijk_to_ras, ijk[0]))
        line_node.SetLineEndPositionWorld(_transform_point(ijk_to_ras, ijk[1]))
        return row * scale, col * scale

    # ------------------------------------------------------------------------- click refinement

    def pixel_at(self, volume_node, ras: Tuple[float, float, float]) -> Tuple[int, int]:
        """(column, row) of the volume's pixel at a RAS position (a click in a slice view)."""
        ijk = _transform_point(_matrix(volume_node.GetRASToIJKMatrix), ras)
        return int(round(float(ijk[0]))), int(round(float(ijk[1])))

    def click_at(self, segmentation_node, volume_node, refiner, ras: Tuple[float, float, float],
                 positive: bool):
        """Refine the nerve segment of the frame shown with a click at a RAS position: nerve (``positive``) or
        background. The click model is given the clicks that made the current contour (after an undo, those of
        the contour it went back to; after an edit with another tool, none); an empty segmentation starts from
        nothing. Returns the core's Refinement (mask, measurement, every click so far, ms)."""
        from MedianNerveSegLib.clicks import Click, check_clicks
        from MedianNerveSegLib.refine import ClickSession  # imports torch: only once clicks are made

        frame = self.frame_of(segmentation_node, volume_node)
        image = self.volume_to_image(volume_node, frame)
        key = (segmentation_node.GetID(), frame)
        session = self._click_sessions.get(key)
        if session is None or session.refiner is not refiner:
            session = self._click_sessions[key] = ClickSession(refiner, image)
        session.image = image  # the spacing may have been calibrated since the last click
        mask = (self.segment_mask(segmentation_node, volume_node) if self.nerve_segment_id(segmentation_node)
                else np.zeros(image.pixels.shape, bool))
        click = Click(*self.pixel_at(volume_node, ras), positive)
        check_clicks([click], mask.shape, volume_node.GetName())
        refinement = session.click(mask, click)
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        self.set_segment_mask(segmentation_node, volume_node, refinement.mask)
        return refinement

    def click_provenance(self, segmentation_node, volume_node, mask: np.ndarray) -> Optional[Dict[str, Any]]:
        """How clicks made ``mask`` on the frame shown (the clicks, all clicks made, the click model); None
        without clicks."""
        session = self._click_sessions.get((segmentation_node.GetID(), self.frame_of(segmentation_node, volume_node)))
        return session.provenance(mask) if session is not None and session.made else None

    # ------------------------------------------------------------------------- CTS classifier (research use)

    def classify(self, volume_node, classifier, method: str = "gradcam"):
        """The core's classifier on the frame shown: (ClassPrediction, a volume of where it looked, by ``method``,
        on the image's grid: 0 outside its 15 mm crop)."""
        from MedianNerveSegLib.classify import explanation_map, map_on_frame

        frame = self.current_frame(volume_node)
        image = self.volume_to_image(volume_node, frame)
        prediction = classifier.classify(image)
        heat = map_on_frame(explanation_map(classifier, prediction, method), prediction.crop_box, image.pixels.shape)
        return prediction, self.map_volume(volume_node, frame, heat, f"{volume_node.GetName()} {method} map")

    def map_volume(self, volume_node, frame: int, heat: np.ndarray, name: str):
        """A frame-sized map as a scalar volume on ``volume_node``'s grid (its frame's slice of a multi-slice clip),
        coloured where it is above 5 % of its maximum, for the foreground layer."""
        node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", self.scene.GenerateUniqueName(name))
        dims = volume_node.GetImageData().GetDimensions()
        array = np.zeros(dims[::-1], np.float32)
        array[frame if dims[2] > 1 else 0] = heat
        slicer.util.updateVolumeFromArray(node, array)
        node.SetIJKToRASMatrix(_matrix(volume_node.GetIJKToRASMatrix))
        node.CreateDefaultDisplayNodes()
        display, top = node.GetDisplayNode(), float(max(heat.max(), 1e-6))
        display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeRainbow")
        display.SetAutoWindowLevel(False)
        display.SetWindowLevelMinMax(0.0, top)
        display.SetApplyThreshold(True)
        display.SetLowerThreshold(0.05 * top)
        self._place_under(node, volume_node)
        return node

    # ------------------------------------------------------------------------- saving

    def save_label(self, segmentation_node, volume_node, store_folder: PathLike, ai_mask: Optional[np.ndarray] = None,
                   author: str = "", model: str = "", model_version: str = "") -> Dict[str, Any]:
        """Save the frame and its (corrected) nerve label into a LabelledDataset; returns the provenance (with the
        clicks that refined the label, when it was refined with clicks).

        The store (created if the folder is new or empty) versions labels, never overwrites.
        ``ai_mask`` defaults to the mask ``segment`` produced for this node; ``model`` and
        ``model_version`` to the node's attributes. The patient comes from the volume name.
        """
        frame = self.frame_of(segmentation_node, volume_node)
        image = self.volume_to_image(volume_node, frame)
        store = LabelledDataset.init(store_folder)
        name = volume_node.GetName()
        sample_id = name if self.n_frames(volume_node) == 1 else f"{name}_f{frame:04d}"
        if ai_mask is None:
            ai_mask = self._ai_masks.get((segmentation_node.GetID(), frame))
        label = self.segment_mask(segmentation_node, volume_node)
        return store.add(image.pixels, label,
                         patient=patient_id(name, _store_pattern(store)), sample_id=sample_id,
                         source=image.source or name, author=author,
                         model=model or segmentation_node.GetAttribute(ATTR_MODEL) or "",
                         model_version=model_version or segmentation_node.GetAttribute(ATTR_MODEL_VERSION) or "",
                         ai_mask=ai_mask, spacing_mm=image.spacing_mm,
                         refinement=self.click_provenance(segmentation_node, volume_node, label))

    def table_results(self, table_node) -> List[FrameResult]:
        """The measurement table's rows as results rows (what ``report`` summarises); the patient from the
        image name, as ``save_label`` takes it."""
        table = table_node.GetTable()
        column = lambda name: table.GetColumnByName(name)

        def value(name: str, row: int):
            array = column(name)
            if array is None:
                return None
            cell = array.GetValue(row)
            if isinstance(array, vtk.vtkStringArray):
                return cell
            return None if isinstance(cell, float) and math.isnan(cell) else cell

        results = []
        for row in range(table.GetNumberOfRows()):
            name = value("image", row) or ""
            found, area_mm2 = value("found", row) == "true", value("area_mm2", row)
            review = [REVIEW_FLAG] if value("review", row) == "true" else []
            results.append(FrameResult(
                image=name, frame=int(value("frame", row) or 0), patient=patient_id(name.split(" frame ")[0]),
                side=value("side", row) or "", level=value("level", row) or "inlet", found=found,
                area_mm2=area_mm2, area_px=value("area_px", row), perimeter_mm=value("perimeter_mm", row),
                circularity=value("circularity", row), flattening_ratio=value("flattening_ratio", row),
                ellipse_ratio=value("ellipse_ratio", row), n_components=value("n_components", row),
                csa_low_mm2=value("csa_low_mm2", row), csa_high_mm2=value("csa_high_mm2", row),
                flags=measurement_flags(found, area_mm2) + review))
        return results

    def export_dicom(self, segmentation_node, volume_node, folder: PathLike, source_path: Optional[PathLike] = None,
                     side: str = "", level: str = "inlet") -> List[Path]:
        """The DICOM SEG and SR (TID 1500) of the shown frame's nerve, referencing the DICOM file the volume
        came from (``source_path``, default: the file ``load_image`` read)."""
        from MedianNerveSegLib.dicom_out import write_dicom_seg, write_dicom_sr

        source = Path(source_path or volume_node.GetAttribute(ATTR_SOURCE_FILE) or "")
        if not source.is_file() or getattr(format_of(source), "name", "") != "dicom":  # no need to decode it
            raise ValueError(f"{volume_node.GetName()} was not loaded from a DICOM file: no DICOM SEG/SR")
        if self.n_frames(volume_node) > 1:
            raise ValueError("a DICOM SEG of one frame of a clip is not supported: export the frames' masks instead")
        mask = self.segment_mask(segmentation_node, volume_node)
        spacing, _ = self._spacing(volume_node)
        measurement = measure_mask(mask, spacing)
        model = "@".join(filter(None, (segmentation_node.GetAttribute(ATTR_MODEL),
                                       segmentation_node.GetAttribute(ATTR_MODEL_VERSION)))) or "manual"
        row = FrameResult(image=str(source), side=side, level=level, model=model, **measurement_columns(measurement))
        folder = Path(folder)
        seg = write_dicom_seg(source, [mask], folder / f"{source.stem}_seg.dcm", model, side)
        if not (measurement.found and measurement.area_mm2 is not None):
            return [seg]
        return [seg, write_dicom_sr(source, seg, [row], folder / f"{source.stem}_sr.dcm", model)]

    def load_dicom_seg(self, path: PathLike, source_file: Callable[[str], Optional[str]] = lambda uid: None) -> list:
        """A segmentation node per image a DICOM SEG segments, on that image's volume: the loaded volume of its
        SOP Instance UID, else the file ``source_file`` gives for the UID (e.g. the DICOM database's), loaded.
        Read by pixel references (highdicom), so a SEG of an ultrasound without a Frame of Reference loads."""
        from MedianNerveSegLib.dicom_out import read_dicom_seg

        nodes = []
        for uid, mask in read_dicom_seg(path):
            volume = self.volume_of_instance(uid)
            if volume is None and source_file(uid):
                volume = self.load_image(source_file(uid))
            if volume is None:
                raise ValueError(f"{path}: the image it segments (SOP Instance UID {uid}) is not loaded: load it first")
            node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                self.scene.GenerateUniqueName(f"{volume.GetName()} DICOM SEG"))
            node.CreateDefaultDisplayNodes()
            node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
            self.set_segment_mask(node, volume, mask)
            nodes.append(node)
        return nodes

    def volume_of_instance(self, sop_instance_uid: str):
        """The volume node showing the DICOM image of this UID: a DICOM-browser load (subject hierarchy or the
        "DICOM.instanceUIDs" attribute) or a ``load_image`` of that file; None when none is loaded."""
        sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)
        item = sh.GetItemByUIDList(slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMInstanceUIDName(),
                                   sop_instance_uid) if sh else 0
        node = sh.GetItemDataNode(item) if item else None
        if node is not None and node.IsA("vtkMRMLVolumeNode"):
            return node
        for volume in self.scene.GetNodesByClass("vtkMRMLVolumeNode"):
            if sop_instance_uid in (volume.GetAttribute("DICOM.instanceUIDs") or "").split():
                return volume
            source = volume.GetAttribute(ATTR_SOURCE_FILE)
            if source and Path(source).is_file() and _sop_instance_uid(source) == sop_instance_uid:
                return volume
        return None

    def export_segmentation(self, segmentation_node, path: PathLike) -> Path:
        """Write the segmentation as a .seg.nrrd (Slicer's segmentation storage; slicerio reads it)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        storage = self.scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
        try:
            storage.SetFileName(str(path))
            if not storage.WriteData(segmentation_node):
                raise RuntimeError(f"could not write {path}")
        finally:
            self.scene.RemoveNode(storage)
        return path


def _frame_results(results_dir: Path, frame_paths: List[Path]) -> List[Optional[FrameResult]]:
    """The results row of each frame file of a ``segment`` job (None where it has none)."""
    path = results_dir / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{results_dir}: no {RESULTS_FILE} (did the segmentation job finish?)")
    by_input = {Path(r.image).resolve(): r for r in read_results(path)}
    return [by_input.get(Path(p).resolve()) for p in frame_paths]


def _sop_instance_uid(path: str) -> str:
    import pydicom

    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)
    except Exception:  # not a DICOM, or none in it
        return ""


def _band_of(row: Optional[FrameResult]) -> Optional[Tuple[int, int]]:
    """The uncertainty band in pixels of a ``segment`` job's row (its interval over its pixel area)."""
    if row is None or row.csa_low_mm2 is None or row.csa_high_mm2 is None or not row.spacing_mm:
        return None
    pixel_mm2 = row.spacing_mm[0] * row.spacing_mm[1]
    return round(row.csa_low_mm2 / pixel_mm2), round(row.csa_high_mm2 / pixel_mm2)


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _store_pattern(store: LabelledDataset) -> str:
    """The store's patient id pattern (datalist.json), default ``^(Pz\\d+)``."""
    try:
        return json.loads(store.datalist_path.read_text(encoding="utf-8")).get("patient_pattern") or DEFAULT_PATIENT_PATTERN
    except (OSError, ValueError):
        return DEFAULT_PATIENT_PATTERN
