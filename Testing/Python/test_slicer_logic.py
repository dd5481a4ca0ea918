"""The scene logic (NerveSceneLogic) on a real MRML scene (the slicer-core wheel); skipped where it is absent."""

import sys

import pytest

slicer = pytest.importorskip("slicer")

import numpy as np  # noqa: E402
import vtk  # noqa: E402
from PIL import Image  # noqa: E402

from conftest import REPO, SPACING  # noqa: E402

sys.path.insert(0, str(REPO / "MedianNerveSeg"))  # MedianNerveSegSlicer ships in the extension, not the wheel

from MedianNerveSegLib.dataset import LabelledDataset  # noqa: E402
from MedianNerveSegLib.inference import Segmenter  # noqa: E402
from MedianNerveSegLib.io import read_image, read_mask, to_uint8  # noqa: E402
from MedianNerveSegLib.measure import measure_mask  # noqa: E402
from MedianNerveSegSlicer import NerveSceneLogic  # noqa: E402
from MedianNerveSegLib.runtime import openvino_installed  # noqa: E402
from MedianNerveSegSlicer.logic import (ATTR_CONFIDENCE, ATTR_FOUND, ATTR_MODEL,  # noqa: E402
                                        ATTR_MODEL_VERSION, ATTR_SPACING_SOURCE)

IMAGE = "Pz001-001.png"
OTHER = "Pz002-001.png"


class Mrml:
    """A scene with the module logics Slicer would give the widget (built the way Slicer's app does)."""

    def __init__(self, sequences: bool = True) -> None:
        self.scene = slicer.vtkMRMLScene()
        self.app = slicer.vtkSlicerApplicationLogic()
        self.app.SetMRMLScene(self.scene)
        self.app.GetColorLogic().SetMRMLScene(self.scene)
        self.app.GetColorLogic().AddDefaultColorNodes()
        self.segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
        self.segmentations.SetMRMLScene(self.scene)
        self.segmentations.SetMRMLApplicationLogic(self.app)
        self.sequences = None
        if sequences:
            self.sequences = slicer.vtkSlicerSequencesLogic()
            self.sequences.SetMRMLScene(self.scene)
            self.sequences.SetMRMLApplicationLogic(self.app)
        self.logic = NerveSceneLogic(self.scene, self.segmentations, self.sequences)


@pytest.fixture()
def mrml():
    return Mrml()


@pytest.fixture(scope="module")
def segmenter():
    return Segmenter()


@pytest.fixture()
def image_path(dataset_dir):
    return dataset_dir / "images" / IMAGE


def _ijk_to_ras(volume):
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return matrix


def test_png_becomes_single_slice_volume_with_spacing(mrml, image_path):
    volume = mrml.logic.load_image(image_path, spacing_mm=SPACING)
    pixels = read_image(image_path).pixels
    h, w = pixels.shape
    assert volume.GetImageData().GetDimensions() == (w, h, 1)
    assert volume.GetSpacing() == pytest.approx((SPACING, SPACING, 1.0))
    assert volume.GetAttribute(ATTR_SPACING_SOURCE) == "user"
    directions = _ijk_to_ras(volume)
    assert [directions.GetElement(i, i) / volume.GetSpacing()[i] for i in range(3)] == pytest.approx([-1, -1, 1])
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume)[0], pixels)
    image = mrml.logic.volume_to_image(volume)
    assert image.spacing_mm == pytest.approx((SPACING, SPACING)) and image.spacing_source == "user"
    np.testing.assert_array_equal(image.pixels, pixels)


def test_unknown_spacing_is_flagged_not_mm(mrml, image_path, segmenter):
    volume = mrml.logic.load_image(image_path)
    assert volume.GetSpacing() == (1.0, 1.0, 1.0)
    assert volume.GetAttribute(ATTR_SPACING_SOURCE) == "unknown"
    assert mrml.logic.volume_to_image(volume).spacing_mm is None
    segmentation, _ = mrml.logic.segment(volume, segmenter)
    measurement = mrml.logic.measure(segmentation, volume)
    assert measurement.area_mm2 is None and measurement.area_unit == "px" and not measurement.spacing_known


def test_segment_measure_and_table(mrml, image_path, segmenter, dataset_dir):
    volume = mrml.logic.load_image(image_path, spacing_mm=SPACING)
    segmentation, prediction = mrml.logic.segment(volume, segmenter)

    segments = segmentation.GetSegmentation()
    assert segments.GetNumberOfSegments() == 1
    segment = segments.GetSegment(segments.GetNthSegmentID(0))
    assert segment.GetName() == "Median nerve"
    assert "SCT^119410002^Nerve" in segment.GetTerminology()
    assert segment.GetColor() == pytest.approx((244 / 255, 214 / 255, 49 / 255))
    role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
    assert segmentation.GetNodeReference(role) is volume
    assert segmentation.GetAttribute(ATTR_FOUND) == "true"
    assert float(segmentation.GetAttribute(ATTR_CONFIDENCE)) == pytest.approx(prediction.confidence, abs=1e-4)
    assert segmentation.GetAttribute(ATTR_MODEL) == segmenter.info.name
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml.scene)
    assert sh.GetItemParent(sh.GetItemByDataNode(segmentation)) == sh.GetItemByDataNode(volume)

    mask = mrml.logic.segment_mask(segmentation, volume)
    assert prediction.found and mask.any()
    np.testing.assert_array_equal(mask, prediction.mask)
    direct = segmenter.predict(read_image(image_path, spacing_mm=SPACING), 0)
    np.testing.assert_array_equal(mask, direct.mask)  # the volume round trip changes nothing

    measurement = mrml.logic.measure(segmentation, volume)
    assert measurement.as_row() == measure_mask(prediction.mask, SPACING).as_row()
    assert measurement.area_mm2 == pytest.approx(mask.sum() * SPACING ** 2)

    table = mrml.logic.measurement_table()
    assert mrml.logic.update_table(table, measurement, volume.GetName()) == 0
    assert mrml.logic.update_table(table, measurement, volume.GetName()) == 0  # same image: row replaced
    other = mrml.logic.load_image(dataset_dir / "images" / OTHER, spacing_mm=SPACING)
    other_segmentation, _ = mrml.logic.segment(other, segmenter)
    other_measurement = mrml.logic.measure(other_segmentation, other)
    assert mrml.logic.update_table(table, other_measurement, other.GetName()) == 1
    assert table.GetNumberOfRows() == 2
    columns = [table.GetColumnName(i) for i in range(table.GetNumberOfColumns())]
    assert columns[0] == "image" and {"area_mm2", "area_px", "perimeter_mm", "circularity"} <= set(columns)
    assert table.GetColumnUnitLabel("area_mm2") == "mm2"
    assert table.GetCellText(0, 0) == volume.GetName()
    assert table.GetTable().GetColumnByName("area_mm2").GetValue(0) == pytest.approx(measurement.area_mm2)
    assert table.GetTable().GetColumnByName("area_px").GetValue(1) == other_measurement.area_px
    assert table.GetCellText(0, columns.index("found")) == "true"


def test_live_measurement_follows_programmatic_edit(mrml, image_path, segmenter):
    volume = mrml.logic.load_image(image_path, spacing_mm=SPACING)
    segmentation, prediction = mrml.logic.segment(volume, segmenter)
    seen = []
    handle = mrml.logic.observe_live_measurement(segmentation, volume, seen.append)

    edited = prediction.mask.copy()
    rows, cols = np.nonzero(edited)
    edited[rows.min():rows.min() + 10, :] = False  # erase the top 10 rows of the nerve
    mrml.logic.set_segment_mask(segmentation, volume, edited)
    assert len(seen) == 1  # one edit, one measurement
    assert seen[-1].area_px == int(edited.sum()) < int(prediction.mask.sum())
    assert seen[-1].area_mm2 == pytest.approx(edited.sum() * SPACING ** 2)
    np.testing.assert_array_equal(mrml.logic.segment_mask(segmentation, volume), edited)

    mrml.logic.remove_observer(handle)
    mrml.logic.set_segment_mask(segmentation, volume, prediction.mask)
    assert len(seen) == 1


def test_calibration_from_markups_line(mrml, image_path, segmenter):
    volume = mrml.logic.load_image(image_path)  # PNG: spacing unknown
    segmentation, prediction = mrml.logic.segment(volume, segmenter)
    matrix = _ijk_to_ras(volume)
    line = mrml.scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", "ruler")
    for ijk in ((50, 200, 0), (150, 200, 0)):  # 100 px apart
        line.AddControlPointWorld(vtk.vtkVector3d(*matrix.MultiplyPoint((*ijk, 1))[:3]))
    assert line.GetLineLengthWorld() == pytest.approx(100.0)

    spacing = mrml.logic.calibrate_from_line(volume, line, 6.2)
    assert spacing == pytest.approx((0.062, 0.062))
    assert volume.GetSpacing()[:2] == pytest.approx((0.062, 0.062))
    assert volume.GetAttribute(ATTR_SPACING_SOURCE) == "user"
    assert line.GetLineLengthWorld() == pytest.approx(6.2)  # the line moved with the image
    np.testing.assert_array_equal(mrml.logic.segment_mask(segmentation, volume), prediction.mask)
    assert mrml.logic.measure(segmentation, volume).area_mm2 == pytest.approx(prediction.mask.sum() * 0.062 ** 2)


def test_save_label_versions_and_never_overwrites(mrml, image_path, segmenter, tmp_path):
    volume = mrml.logic.load_image(image_path, spacing_mm=SPACING)
    segmentation, prediction = mrml.logic.segment(volume, segmenter)
    store_folder = tmp_path / "store"

    first = mrml.logic.save_label(segmentation, volume, store_folder, author="tester")
    edited = prediction.mask.copy()
    edited[np.nonzero(edited)[0].min(), :] = False
    mrml.logic.set_segment_mask(segmentation, volume, edited)
    second = mrml.logic.save_label(segmentation, volume, store_folder, author="tester")

    assert (first["version"], second["version"]) == (1, 2)
    assert first["id"] == second["id"] == "Pz001-001" and first["patient"] == "Pz001"
    assert first["model"] == segmenter.info.name and first["model_version"] == segmenter.info.version
    assert first["ai_dsc"] == pytest.approx(1.0) and first["changed_pixels"] == 0
    assert second["changed_pixels"] == int((edited != prediction.mask).sum()) > 0
    assert second["spacing_mm"] == pytest.approx([SPACING, SPACING])
    store = LabelledDataset(store_folder)
    stats = store.stats()
    assert (stats["n_images"], stats["n_label_versions"]) == (1, 2)
    for version, mask in ((1, prediction.mask), (2, edited)):
        np.testing.assert_array_equal(read_mask(store_folder / "labels" / f"Pz001-001_v{version}.png"), mask)
    [sample] = store.samples()
    assert sample.mask.name == "Pz001-001_v2.png"
    np.testing.assert_array_equal(np.asarray(Image.open(sample.image)), to_uint8(read_image(image_path).pixels))


def test_export_seg_nrrd_is_read_by_slicerio(mrml, image_path, segmenter, tmp_path):
    slicerio = pytest.importorskip("slicerio")
    volume = mrml.logic.load_image(image_path, spacing_mm=SPACING)
    segmentation, prediction = mrml.logic.segment(volume, segmenter)
    path = mrml.logic.export_segmentation(segmentation, tmp_path / "nerve.seg.nrrd")
    seg = slicerio.read_segmentation(str(path))
    assert [s["name"] for s in seg["segments"]] == ["Median nerve"]
    assert seg["segments"][0]["terminology"]["type"] == ["SCT", "119410002", "Nerve"]
    np.testing.assert_array_equal(read_mask(path), prediction.mask)


def test_segment_editor_node_selects_the_nerve(mrml, image_path, segmenter):
    volume = mrml.logic.load_image(image_path, spacing_mm=SPACING)
    segmentation, _ = mrml.logic.segment(volume, segmenter)
    editor = mrml.logic.segment_editor_node(segmentation, volume)
    assert editor is mrml.scene.GetSingletonNode("SegmentEditor", "vtkMRMLSegmentEditorNode")
    assert editor.GetSegmentationNode() is segmentation and editor.GetSourceVolumeNode() is volume
    assert segmentation.GetSegmentation().GetSegment(editor.GetSelectedSegmentID()).GetName() == "Median nerve"


@pytest.fixture()
def cine_path(image_path, tmp_path):
    """A 3-frame TIFF clip: the image shifted sideways by 0, 20 and 40 pixels."""
    frame = np.asarray(Image.open(image_path).convert("L"))
    frames = [Image.fromarray(np.roll(frame, 20 * k, axis=1)) for k in range(3)]
    path = tmp_path / "Pz001-clip.tif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return path


@pytest.mark.parametrize("sequences", [True, False], ids=["sequence", "multi-slice"])
def test_cine_frames(sequences, cine_path, segmenter):
    mrml = Mrml(sequences)
    clip = read_image(cine_path, spacing_mm=SPACING)
    volume = mrml.logic.load_image(cine_path, spacing_mm=SPACING)
    assert mrml.logic.n_frames(volume) == 3
    if sequences:  # a sequence of single-slice frames, browsed through its proxy volume
        assert volume.GetImageData().GetDimensions()[2] == 1
        browser = mrml.sequences.GetFirstBrowserNodeForProxyNode(volume)
        assert browser.GetSequenceNode(volume).GetNumberOfDataNodes() == 3
    else:  # a multi-slice volume, slice k = frame k
        assert volume.GetImageData().GetDimensions()[2] == 3
    for k in range(3):
        np.testing.assert_array_equal(mrml.logic.volume_to_image(volume, k).pixels, clip.frame(k))

    segmentation, prediction = mrml.logic.segment(volume, segmenter, frame=1)
    np.testing.assert_array_equal(prediction.mask, segmenter.predict(clip, 1).mask)
    np.testing.assert_array_equal(mrml.logic.segment_mask(segmentation, volume), prediction.mask)
    assert mrml.logic.measure(segmentation, volume).area_px == int(prediction.mask.sum())

    mrml.logic.set_spacing(volume, 0.1)
    if sequences:  # every frame is calibrated, not only the one shown
        browser.SetSelectedItemNumber(2)
        assert volume.GetSpacing()[:2] == pytest.approx((0.1, 0.1))
    assert mrml.logic.volume_to_image(volume, 2).spacing_mm == pytest.approx((0.1, 0.1))
    np.testing.assert_array_equal(mrml.logic.segment_mask(segmentation, volume), prediction.mask)
    with pytest.raises(IndexError):
        mrml.logic.volume_to_image(volume, 3)


def test_all_frames_segmented_by_a_job_become_a_browsed_segmentation_with_a_csa_plot(cine_path, segmenter, tmp_path):
    from MedianNerveSegLib.cli import main as cli_main

    mrml = Mrml()
    clip = read_image(cine_path, spacing_mm=SPACING)
    volume = mrml.logic.load_image(cine_path, spacing_mm=SPACING)
    frames = mrml.logic.export_frames(volume, tmp_path / "frames")
    assert [p.name for p in frames] == ["frame0000.nrrd", "frame0001.nrrd", "frame0002.nrrd"]
    exported = read_image(frames[2])
    np.testing.assert_array_equal(exported.pixels, clip.frame(2))
    assert exported.spacing_mm == pytest.approx((SPACING, SPACING))

    assert cli_main(["segment", *map(str, frames), "--out", str(tmp_path / "results")]) == 0  # what the job runs
    segmentation, table = mrml.logic.import_frame_results(volume, tmp_path / "results", frames, "m", "1.0")
    browser = mrml.sequences.GetFirstBrowserNodeForProxyNode(volume)
    assert mrml.sequences.GetFirstBrowserNodeForProxyNode(segmentation) is browser
    expected = [segmenter.predict(clip, k).mask for k in range(3)]
    for k in (2, 0, 1):  # the segmentation follows the browsed frame
        browser.SetSelectedItemNumber(k)
        assert mrml.logic.frame_of(segmentation, volume) == k
        np.testing.assert_array_equal(mrml.logic.segment_mask(segmentation, volume), expected[k])
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml.scene)
    assert sh.GetItemParent(sh.GetItemByDataNode(segmentation)) == sh.GetItemByDataNode(volume)

    assert table.GetNumberOfRows() == 3
    areas = table.GetTable().GetColumnByName("area_mm2")
    assert [areas.GetValue(k) for k in range(3)] == pytest.approx([m.sum() * SPACING ** 2 for m in expected])
    assert [table.GetTable().GetColumnByName("frame").GetValue(k) for k in range(3)] == [0, 1, 2]

    chart = mrml.logic.csa_chart(table, volume.GetName())
    series = chart.GetNthPlotSeriesNode(0)
    assert (series.GetTableNode(), series.GetXColumnName(), series.GetYColumnName()) == (table, "frame", "area_mm2")
    assert chart.GetYAxisTitle() == "CSA (mm²)"

    browser.SetSelectedItemNumber(1)  # correct frame 1, then save it: the label is frame 1's, with its AI diff
    edited = expected[1].copy()
    edited[np.nonzero(edited)[0].min(), :] = False
    mrml.logic.set_segment_mask(segmentation, volume, edited)
    browser.SetSelectedItemNumber(2)
    browser.SetSelectedItemNumber(1)  # the edit was stored in frame 1 of the segmentation sequence
    np.testing.assert_array_equal(mrml.logic.segment_mask(segmentation, volume), edited)
    record = mrml.logic.save_label(segmentation, volume, tmp_path / "store")
    assert record["id"] == "Pz001-clip_f0001" and record["model"] == "m"
    assert record["changed_pixels"] == int((edited != expected[1]).sum()) > 0


def test_all_frames_need_a_sequence(cine_path, tmp_path):
    mrml = Mrml(sequences=False)
    volume = mrml.logic.load_image(cine_path, spacing_mm=SPACING)
    with pytest.raises(ValueError, match="not a clip loaded as a sequence"):
        mrml.logic.import_frame_results(volume, tmp_path, [])


def _clip_segmented_by_a_job(cine_path, tmp_path):
    """A clip and its per-frame segmentation, as *Segment all frames* leaves them."""
    from MedianNerveSegLib.cli import main as cli_main

    mrml = Mrml()
    volume = mrml.logic.load_image(cine_path, spacing_mm=SPACING)
    frames = mrml.logic.export_frames(volume, tmp_path / "frames")
    assert cli_main(["segment", *map(str, frames), "--out", str(tmp_path / "results")]) == 0
    segmentation, _ = mrml.logic.import_frame_results(volume, tmp_path / "results", frames)
    return mrml, volume, segmentation, mrml.sequences.GetFirstBrowserNodeForProxyNode(volume)


def _frame_masks(mrml, volume, segmentation, browser):
    masks = []
    for k in range(3):
        browser.SetSelectedItemNumber(k)
        masks.append(mrml.logic.segment_mask(segmentation, volume))
    return masks


def test_calibrating_a_clip_keeps_every_frames_segmentation(cine_path, tmp_path):
    """Once only the shown frame was re-masked: frames 1 and 2 fell from ~3345 to ~1270 px."""
    mrml, volume, segmentation, browser = _clip_segmented_by_a_job(cine_path, tmp_path)
    before = _frame_masks(mrml, volume, segmentation, browser)
    browser.SetSelectedItemNumber(1)
    mrml.logic.set_spacing(volume, 0.1)
    assert browser.GetSelectedItemNumber() == 1
    assert [m.sum() for m in _frame_masks(mrml, volume, segmentation, browser)] == [m.sum() for m in before]
    for k, mask in enumerate(before):
        browser.SetSelectedItemNumber(k)
        np.testing.assert_array_equal(mrml.logic.segment_mask(segmentation, volume), mask)
        assert mrml.logic.measure(segmentation, volume).area_mm2 == pytest.approx(mask.sum() * 0.01)


def test_live_measurement_follows_the_browsed_frame(cine_path, tmp_path):
    """The browser swaps the proxy's vtkSegmentation on each frame change; an edit of frame 1 once
    produced no measurement at all."""
    mrml, volume, segmentation, browser = _clip_segmented_by_a_job(cine_path, tmp_path)
    seen = []
    mrml.logic.observe_live_measurement(segmentation, volume, seen.append)
    for frame in (1, 2):
        browser.SetSelectedItemNumber(frame)
        edited = mrml.logic.segment_mask(segmentation, volume)
        edited[np.nonzero(edited)[0].min():np.nonzero(edited)[0].min() + 5 + frame, :] = False
        mrml.logic.set_segment_mask(segmentation, volume, edited)
        assert seen and seen[-1].area_px == int(edited.sum())


def test_closing_the_scene_forgets_its_ai_masks(mrml, image_path, dataset_dir, segmenter, tmp_path):
    """After File > Close Scene node IDs are reused: a label drawn by hand must not be compared with
    the previous scene's AI mask."""
    volume = mrml.logic.load_image(image_path, spacing_mm=SPACING)
    segmentation, _ = mrml.logic.segment(volume, segmenter)
    old_id = segmentation.GetID()
    mrml.scene.Clear(0)
    volume = mrml.logic.load_image(dataset_dir / "images" / OTHER, spacing_mm=SPACING)
    drawn = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    assert drawn.GetID() == old_id  # the situation of the defect
    drawn.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    mrml.logic.set_segment_mask(drawn, volume, read_mask(dataset_dir / "masks" / OTHER))
    record = mrml.logic.save_label(drawn, volume, tmp_path / "store")
    assert record["changed_pixels"] is None and record.get("ai_dsc") is None


def test_an_rgb_volume_becomes_a_grey_one_with_its_geometry(mrml, image_path, segmenter):
    """A 24-bit colour export loaded with Add Data or DICOM is a vtkMRMLVectorVolumeNode, which the image
    selector did not offer: the logic converts it to the grey volume the core would read."""
    from MedianNerveSegLib.io import channels_to_grey

    grey = np.asarray(Image.open(image_path).convert("L"))
    rgb = np.stack([grey, grey // 2, 255 - grey], axis=-1).astype(np.uint8)
    vector = mrml.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "Pz001 colour")
    slicer.util.updateVolumeFromArray(vector, rgb[np.newaxis])
    vector.SetSpacing(SPACING, SPACING, 1.0)
    vector.SetOrigin(5.0, -3.0, 0.0)
    vector.SetAttribute("DICOM.instanceUIDs", "1.2.3.4")  # as Slicer's DICOM plugins set it
    scalar = mrml.logic.scalar_volume(vector)
    assert scalar.GetAttribute("DICOM.instanceUIDs") == "1.2.3.4"  # DICOM export still finds the file
    assert scalar.IsA("vtkMRMLScalarVolumeNode") and not scalar.IsA("vtkMRMLVectorVolumeNode")
    assert scalar.GetSpacing() == pytest.approx((SPACING, SPACING, 1.0)) and scalar.GetOrigin() == (5.0, -3.0, 0.0)
    np.testing.assert_allclose(slicer.util.arrayFromVolume(scalar)[0], channels_to_grey(rgb), atol=1e-3)
    assert mrml.logic.scalar_volume(scalar) is scalar
    segmentation, prediction = mrml.logic.segment(scalar, segmenter)
    assert prediction.found and mrml.logic.measure(segmentation, scalar).area_px == int(prediction.mask.sum())


def test_live_measurement_can_wait_for_the_end_of_a_stroke(mrml, image_path, segmenter):
    """With a scheduler (the widget's debounce timer), an edit's several events cost one export, later."""
    volume = mrml.logic.load_image(image_path, spacing_mm=SPACING)
    segmentation, prediction = mrml.logic.segment(volume, segmenter)
    pending, seen = [], []
    mrml.logic.observe_live_measurement(segmentation, volume, seen.append, schedule=pending.append)
    edited = prediction.mask.copy()
    edited[np.nonzero(edited)[0].min(), :] = False
    mrml.logic.set_segment_mask(segmentation, volume, edited)
    assert seen == [] and len(pending) >= 1  # nothing exported during the stroke
    pending[-1]()
    assert [m.area_px for m in seen] == [int(edited.sum())]


def test_side_and_level_in_the_table_and_the_report_from_it(mrml, image_path, segmenter, dataset_dir, tmp_path):
    from MedianNerveSegLib.report import summarise

    table = mrml.logic.measurement_table()
    for name, side in ((IMAGE, "right"), (OTHER, "left")):
        volume = mrml.logic.load_image(dataset_dir / "images" / name, spacing_mm=SPACING)
        segmentation, _ = mrml.logic.segment(volume, segmenter)
        mrml.logic.update_table(table, mrml.logic.measure(segmentation, volume), volume.GetName(), side=side,
                                level="inlet")
    assert [table.GetTable().GetColumnByName("side").GetValue(r) for r in range(2)] == ["right", "left"]
    rows = mrml.logic.table_results(table)
    assert [(r.patient, r.side, r.level, r.found) for r in rows] == [("Pz001", "right", "inlet", True),
                                                                      ("Pz002", "left", "inlet", True)]
    areas = table.GetTable().GetColumnByName("area_mm2")
    report = summarise([(r, "") for r in rows])
    assert [s.levels["inlet"].mean_mm2 for s in report.sides] == pytest.approx([areas.GetValue(0), areas.GetValue(1)])


def test_dicom_seg_and_sr_of_an_image_loaded_from_dicom(mrml, image_path, segmenter, tmp_path):
    hd = pytest.importorskip("highdicom")
    from test_cli import _wrist_dicom

    pixels = np.asarray(Image.open(image_path).convert("L"))
    source = _wrist_dicom(tmp_path / "wrist.dcm", pixels, "R", "HOSP-3")
    volume = mrml.logic.load_image(source)
    segmentation, prediction = mrml.logic.segment(volume, segmenter)
    seg_path, sr_path = mrml.logic.export_dicom(segmentation, volume, tmp_path / "out", side="right")
    seg = hd.seg.segread(seg_path)
    np.testing.assert_array_equal(np.squeeze(seg.pixel_array) != 0, prediction.mask)
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == \
        read_image(source).metadata["SOPInstanceUID"]
    [group] = hd.sr.srread(sr_path).content.get_planar_roi_measurement_groups()
    area = {m.name.meaning: m.value for m in group.get_measurements()}["Area"]
    assert area == pytest.approx(prediction.mask.sum() * SPACING ** 2)
    png = mrml.logic.load_image(image_path, spacing_mm=SPACING)
    png_segmentation, _ = mrml.logic.segment(png, segmenter)
    with pytest.raises(ValueError, match="not loaded from a DICOM file"):
        mrml.logic.export_dicom(png_segmentation, png, tmp_path / "png")


@pytest.mark.skipif(not openvino_installed(), reason="openvino is not installed")
def test_a_segmentation_by_the_int8_network_and_its_saved_label_name_it(mrml, image_path, tmp_path):
    int8 = Segmenter(runtime="openvino-int8")
    volume = mrml.logic.load_image(image_path, spacing_mm=SPACING)
    segmentation, _ = mrml.logic.segment(volume, int8)
    assert segmentation.GetAttribute(ATTR_MODEL_VERSION) == f"{int8.info.version}+int8"
    record = mrml.logic.save_label(segmentation, volume, tmp_path / "store")
    assert (record["model"], record["model_version"]) == (int8.info.name, f"{int8.info.version}+int8")


class _DiskRefiner:
    """Stands in for the core's Refiner: a disk around the newest click, one pixel larger per click given."""

    model_id = "disks@0"

    def refine(self, image, mask, clicks, frame_index=0):
        from MedianNerveSegLib.refine import Refinement

        rows, cols = np.ogrid[:mask.shape[0], :mask.shape[1]]
        disk = (rows - clicks[-1].y) ** 2 + (cols - clicks[-1].x) ** 2 <= (20 + len(clicks)) ** 2
        new = (mask | disk) if clicks[-1].positive else (mask & ~disk)
        return Refinement(new, new.astype(np.float32), measure_mask(new, image.spacing_mm), tuple(clicks), 1.0)


def _ras_of_pixel(volume, column, row):
    return tuple(_ijk_to_ras(volume).MultiplyPoint((column, row, 0, 1))[:3])


def test_clicks_in_a_view_refine_the_nerve_segment_and_the_saved_label_says_how(mrml, image_path, segmenter,
                                                                                 tmp_path):
    from MedianNerveSegLib.clicks import Click

    volume = mrml.logic.load_image(image_path, spacing_mm=SPACING)
    segmentation, prediction = mrml.logic.segment(volume, segmenter)
    refiner = _DiskRefiner()
    assert mrml.logic.pixel_at(volume, _ras_of_pixel(volume, 300.4, 199.6)) == (300, 200)
    first = mrml.logic.click_at(segmentation, volume, refiner, _ras_of_pixel(volume, 100, 100), True)
    assert first.clicks == (Click(100, 100, True),) and first.mask[100, 100] and not prediction.mask[100, 100]
    np.testing.assert_array_equal(mrml.logic.segment_mask(segmentation, volume), first.mask)
    assert mrml.logic.measure(segmentation, volume).area_px == first.mask.sum()
    second = mrml.logic.click_at(segmentation, volume, refiner, _ras_of_pixel(volume, 115, 100), False)
    assert second.clicks == (Click(100, 100, True), Click(115, 100, False)) and not second.mask[100, 115]
    mrml.logic.set_segment_mask(segmentation, volume, first.mask)  # what Undo does
    third = mrml.logic.click_at(segmentation, volume, refiner, _ras_of_pixel(volume, 120, 100), True)
    assert third.clicks == (Click(100, 100, True), Click(120, 100, True))
    record = mrml.logic.save_label(segmentation, volume, tmp_path / "store")
    assert record["refinement"] == {"clicks": ["+100,100", "+120,100"], "clicks_made": 3, "click_model": "disks@0"}
    assert record["model"] == segmenter.info.name and record["changed_pixels"] > 0

    with pytest.raises(ValueError, match="lies outside the image"):
        mrml.logic.click_at(segmentation, volume, refiner, _ras_of_pixel(volume, 700, 100), True)
    drawn = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")  # no nerve segment yet: drawn from nothing
    mrml.logic.click_at(drawn, volume, refiner, _ras_of_pixel(volume, 300, 200), True)
    assert mrml.logic.segment_mask(drawn, volume)[200, 300] and mrml.logic.nerve_segment_id(drawn)
    mrml.scene.Clear(0)  # a closed scene's clicks are forgotten with its AI masks
    assert not mrml.logic._click_sessions


def test_the_classifier_and_its_map_over_the_image(mrml, image_path, tiny_classifier):
    from MedianNerveSegLib.classify import Classifier

    volume = mrml.logic.load_image(image_path, spacing_mm=SPACING)
    classifier = Classifier(tiny_classifier, segmenter="median_nerve_unet_small")
    prediction, map_node = mrml.logic.classify(volume, classifier, "gradcam")
    assert 0 <= prediction.probability <= 1 and prediction.label in classifier.settings.classes
    heat = slicer.util.arrayFromVolume(map_node)[0]
    assert heat.shape == slicer.util.arrayFromVolume(volume)[0].shape
    box = prediction.crop_box
    outside = np.ones(heat.shape, bool)
    outside[max(box.top, 0):box.top + box.height, max(box.left, 0):box.left + box.width] = False
    assert not heat[outside].any()  # nothing outside the 15 mm crop the classifier saw
    assert map_node.GetSpacing() == pytest.approx(volume.GetSpacing())
    assert map_node.GetDisplayNode().GetApplyThreshold()
    unknown = mrml.logic.load_image(image_path)  # no spacing: no 15 mm crop
    with pytest.raises(ValueError, match="needs the pixel spacing"):
        mrml.logic.classify(unknown, classifier, "gradcam")


def test_the_ai_interval_is_in_the_table_until_the_contour_is_edited(mrml, image_path, segmenter, cine_path,
                                                                     tmp_path):
    from MedianNerveSegLib.cli import main as cli_main
    from MedianNerveSegLib.results import read_results
    from MedianNerveSegLib.uncertainty import csa_interval

    volume = mrml.logic.load_image(image_path, spacing_mm=SPACING)
    segmentation, prediction = mrml.logic.segment(volume, segmenter)
    interval = mrml.logic.ai_interval(segmentation, volume)
    assert interval == csa_interval(prediction.band_px, int(prediction.mask.sum()), (SPACING, SPACING))
    assert interval.low_mm2 <= mrml.logic.measure(segmentation, volume).area_mm2 <= interval.high_mm2
    table = mrml.logic.measurement_table()
    mrml.logic.update_table(table, mrml.logic.measure(segmentation, volume), volume.GetName(), interval=interval)
    assert table.GetTable().GetColumnByName("csa_low_mm2").GetValue(0) == pytest.approx(interval.low_mm2)
    assert table.GetColumnUnitLabel("csa_high_mm2") == "mm2"
    row = mrml.logic.table_results(table)[0]
    assert (row.csa_low_mm2, row.csa_high_mm2) == pytest.approx((interval.low_mm2, interval.high_mm2))
    assert ("review" in row.flags) == interval.needs_review

    edited = prediction.mask.copy()
    edited[np.nonzero(edited)[0].min(), :] = False
    mrml.logic.set_segment_mask(segmentation, volume, edited)
    assert mrml.logic.ai_interval(segmentation, volume) is None  # the network's range says nothing of an edit
    mrml.logic.update_table(table, mrml.logic.measure(segmentation, volume), volume.GetName(), interval=None)
    assert np.isnan(table.GetTable().GetColumnByName("csa_low_mm2").GetValue(0))
    assert "review" not in mrml.logic.table_results(table)[0].flags

    clip = Mrml()  # a clip's frames segmented by the job carry their rows' intervals
    clip_volume = clip.logic.load_image(cine_path, spacing_mm=SPACING)
    frames = clip.logic.export_frames(clip_volume, tmp_path / "frames")
    assert cli_main(["segment", *map(str, frames), "--out", str(tmp_path / "results")]) == 0
    clip_segmentation, clip_table = clip.logic.import_frame_results(clip_volume, tmp_path / "results", frames)
    rows = sorted(read_results(tmp_path / "results"), key=lambda r: r.image)
    lows = clip_table.GetTable().GetColumnByName("csa_low_mm2")
    assert [lows.GetValue(k) for k in range(3)] == pytest.approx([r.csa_low_mm2 for r in rows], abs=1e-5)
    browser = clip.sequences.GetFirstBrowserNodeForProxyNode(clip_volume)
    browser.SetSelectedItemNumber(2)
    assert clip.logic.ai_interval(clip_segmentation, clip_volume).high_mm2 == pytest.approx(rows[2].csa_high_mm2,
                                                                                           abs=1e-5)


@pytest.fixture(scope="module")
def dicom_seg(dataset_dir, tmp_path_factory):
    """A wrist ultrasound DICOM without a Frame of Reference and the DICOM SEG ``segment --dicom-out`` wrote."""
    from MedianNerveSegLib.cli import main as cli_main
    from test_cli import _wrist_dicom

    tmp = tmp_path_factory.mktemp("dicom_seg")
    pixels = np.asarray(Image.open(dataset_dir / "images" / OTHER).convert("L"))
    source = _wrist_dicom(tmp / "image.dcm", pixels, "L", "HOSP-9")
    assert cli_main(["segment", str(source), "--dicom-out", "--out", str(tmp / "out")]) == 0
    return source, tmp / "out" / "image_seg.dcm", read_mask(tmp / "out" / "image_mask.png") > 0


def test_a_dicom_seg_without_frame_of_reference_loads_onto_its_image(dicom_seg, dataset_dir):
    import pydicom

    source, seg, expected = dicom_seg
    uid = pydicom.dcmread(source).SOPInstanceUID
    mrml = Mrml()  # the image loaded by the module: found by its file
    volume = mrml.logic.load_image(source)
    [node] = mrml.logic.load_dicom_seg(seg)
    np.testing.assert_array_equal(mrml.logic.segment_mask(node, volume), expected)
    segment = node.GetSegmentation().GetNthSegment(0)
    assert segment.GetName() == "Median nerve" and "SCT^119410002^Nerve" in segment.GetTerminology()

    browser = Mrml()  # loaded by the DICOM browser: found by the instance UIDs on its subject hierarchy item
    volume = browser.logic.load_image(dataset_dir / "images" / OTHER)
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(browser.scene)
    item = sh.CreateItem(sh.GetSceneItemID(), volume)  # as DICOMPlugin.addSeriesInSubjectHierarchy does
    sh.SetItemUID(item, slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMInstanceUIDName(), f"1.2.3 {uid}")
    [node] = browser.logic.load_dicom_seg(seg)
    np.testing.assert_array_equal(browser.logic.segment_mask(node, volume), expected)

    fresh = Mrml()  # not loaded yet: loaded from the file the database gives for its UID
    [node] = fresh.logic.load_dicom_seg(seg, {uid: str(source)}.get)
    assert fresh.logic.volume_of_instance(uid) is not None
    np.testing.assert_array_equal(fresh.logic.segment_mask(node, fresh.logic.volume_of_instance(uid)), expected)
    with pytest.raises(ValueError, match=f"image_seg.dcm: the image it segments .*{uid}.* is not loaded"):
        Mrml().logic.load_dicom_seg(seg)


def test_the_dicom_plugin_offers_only_segs_without_frame_of_reference_and_loads_them(dicom_seg, monkeypatch,
                                                                                     tmp_path):
    """Under a stand-in of Slicer's DICOMLib (DICOMPlugin's tags and DICOMLoadable's fields, as in
    Modules/Scripted/DICOMLib/DICOMPlugin.py) and of slicer.dicomDatabase."""
    import importlib
    import types

    import pydicom

    source, seg, expected = dicom_seg
    with_frame = tmp_path / "with_frame_seg.dcm"
    ds = pydicom.dcmread(seg)
    ds.FrameOfReferenceUID = pydicom.uid.generate_uid()
    ds.save_as(with_frame)

    class DICOMLoadable:
        def __init__(self):
            self.files, self.name, self.tooltip, self.selected, self.confidence = [], "Unknown", "", False, 0.5

    class DICOMPlugin:
        def __init__(self):
            self.loadType = "Generic DICOM"
            self.tags = {"seriesDescription": "0008,103E", "frameOfReferenceUID": "0020,0052",
                         "modality": "0008,0060", "instanceUID": "0008,0018"}
            self.in_hierarchy = []

        def addSeriesInSubjectHierarchy(self, loadable, node):
            self.in_hierarchy.append(node)

    class Database:
        @staticmethod
        def fileValue(path, tag):
            element = pydicom.dcmread(path, stop_before_pixels=True).get(tuple(int(p, 16) for p in tag.split(",")))
            return "" if element is None else str(element.value)

        @staticmethod
        def fileForInstance(uid):
            return str(source) if uid == pydicom.dcmread(source).SOPInstanceUID else ""

    monkeypatch.setitem(sys.modules, "DICOMLib", types.SimpleNamespace(DICOMLoadable=DICOMLoadable,
                                                                       DICOMPlugin=DICOMPlugin))
    monkeypatch.setattr(slicer, "dicomDatabase", Database, raising=False)
    plugin_module = importlib.reload(importlib.import_module("MedianNerveSegSlicer.dicom_plugin"))
    mrml = Mrml()
    monkeypatch.setattr(plugin_module, "scene_logic", lambda: mrml.logic)

    plugin = plugin_module.NerveSegPlugin()
    [loadable] = plugin.examineForImport([[str(seg), str(with_frame)], [str(source)]])
    assert loadable.files == [str(seg)] and loadable.confidence > 0.95 and loadable.selected  # above Slicer's
    assert loadable.referencedInstanceUIDs == [pydicom.dcmread(source).SOPInstanceUID]
    assert plugin.load(loadable)
    [node] = plugin.in_hierarchy
    volume = mrml.logic.volume_of_instance(loadable.referencedInstanceUIDs[0])  # loaded from the database
    np.testing.assert_array_equal(mrml.logic.segment_mask(node, volume), expected)
    broken = DICOMLoadable()
    broken.files = [str(source)]  # not a SEG: the load fails, logged, no exception into the browser
    assert plugin.load(broken) is False


def test_a_column_added_to_a_table_with_rows_leaves_them_empty(mrml, image_path, segmenter):
    volume = mrml.logic.load_image(image_path, spacing_mm=SPACING)
    segmentation, _ = mrml.logic.segment(volume, segmenter)
    table = mrml.logic.measurement_table()
    mrml.logic.update_table(table, mrml.logic.measure(segmentation, volume), "older")
    for name in ("csa_low_mm2", "csa_high_mm2", "review"):  # a table from before these columns
        table.RemoveColumn(table.GetColumnIndex(name))
    interval = mrml.logic.ai_interval(segmentation, volume)
    mrml.logic.update_table(table, mrml.logic.measure(segmentation, volume), "newer", interval=interval)
    older, newer = mrml.logic.table_results(table)
    assert older.csa_low_mm2 is None and older.csa_high_mm2 is None and "review" not in older.flags
    assert newer.csa_low_mm2 == pytest.approx(interval.low_mm2)


def test_the_slicer_review_flag_takes_the_models_own_width(mrml, image_path, tmp_path):
    from test_uncertainty import _model_with_review_width

    volume = mrml.logic.load_image(image_path, spacing_mm=SPACING)
    model = _model_with_review_width(tmp_path / "model", 1e-6)
    segmentation, _ = mrml.logic.segment(volume, Segmenter(model))
    interval = mrml.logic.ai_interval(segmentation, volume)
    assert interval.review_width_mm2 == 1e-6 and interval.needs_review
