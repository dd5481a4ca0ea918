"""DICOM out: the SEG and the SR (TID 1500) written for a DICOM input, read back with highdicom."""


import numpy as np
import pytest
from PIL import Image

from MedianNerveSegLib import codes
from MedianNerveSegLib.cli import main
from MedianNerveSegLib.io import ImageReadError, find_images, read_image, read_mask
from MedianNerveSegLib.results import read_results

from test_cli import _wrist_dicom

hd = pytest.importorskip("highdicom")


@pytest.fixture(scope="module")
def clip_out(dataset_dir, tmp_path_factory):
    """A right-wrist DICOM image, a 3-frame clip and a PNG, segmented with --dicom-out."""
    from pydicom import dcmread
    from pydicom.filewriter import dcmwrite

    tmp = tmp_path_factory.mktemp("dicom_out")
    pixels = np.asarray(Image.open(dataset_dir / "images" / "Pz010-002.png").convert("L"))
    source = _wrist_dicom(tmp / "image.dcm", pixels, "R", "HOSP-7")
    clip = _wrist_dicom(tmp / "clip.dcm", pixels, "R", "HOSP-7", frames=3, FrameTime="50")
    ds = dcmread(clip)
    ds.PixelData = np.stack([np.roll(pixels, 20 * k, axis=1) for k in range(3)]).astype(np.uint8).tobytes()
    dcmwrite(clip, ds, enforce_file_format=True)
    Image.fromarray(pixels).save(tmp / "plain.png")
    out = tmp / "out"
    assert main(["segment", str(source), str(clip), str(tmp / "plain.png"), "--spacing", "0.062", "--dicom-out",
                 "--mask-formats", "seg.nrrd", "--out", str(out)]) == 0
    return source, out


def test_the_seg_references_its_source_and_holds_each_frames_mask(clip_out):
    source, out = clip_out
    seg = hd.seg.segread(out / "image_seg.dcm")
    src = read_image(source)
    assert seg.Modality == "SEG" and seg.PatientID == "HOSP-7" and seg.NumberOfFrames == 1
    assert [r.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence
            for r in s.ReferencedInstanceSequence] == [src.metadata["SOPInstanceUID"]]
    description = seg.get_segment_description(1)
    assert description.segment_label == "Median nerve"
    assert (description.segmented_property_category.value, description.segmented_property_type.value) == (
        codes.TISSUE[0], codes.NERVE[0])
    region = description.AnatomicRegionSequence[0]
    assert (region.CodeValue, region.AnatomicRegionModifierSequence[0].CodeMeaning) == (codes.WRIST_JOINT[0], "Right")
    assert description.algorithm_identification[0].AlgorithmName == "median_nerve_unet"
    [row] = [r for r in read_results(out) if r.image.endswith("image.dcm")]
    np.testing.assert_array_equal(np.squeeze(seg.pixel_array) != 0, read_mask(out / row.mask))


def test_the_sr_holds_each_frames_csa_with_its_references(clip_out):
    source, out = clip_out
    sr = hd.sr.srread(out / "image_sr.dcm")
    seg = hd.seg.segread(out / "image_seg.dcm")
    rows = [r for r in read_results(out) if r.image.endswith("image.dcm")]
    assert all(r.found and r.side == "right" for r in rows)
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == 1
    for row, group in zip(rows, groups):
        values = {m.name.meaning: m.value for m in group.get_measurements()}
        assert values["Area"] == pytest.approx(row.area_mm2, abs=5e-7)  # to the results file's digits
        assert values["Perimeter"] == pytest.approx(row.perimeter_mm, abs=5e-5)
        assert values[codes.FLATTENING[2]] == pytest.approx(row.flattening_ratio, abs=5e-5)
        assert group.reference_type.meaning == "Referenced Segmentation Frame"
        segment, source_image = group.referenced_segmentation_frame
        reference = segment.ReferencedSOPSequence[0]
        assert (reference.ReferencedSOPInstanceUID, int(reference.ReferencedFrameNumber),
                int(reference.ReferencedSegmentNumber)) == (seg.SOPInstanceUID, 1, 1)
        assert source_image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == read_image(source).metadata[
            "SOPInstanceUID"]
        site = group.finding_sites[0]
        assert site.value.value == codes.WRIST_JOINT[0] and site.laterality.meaning == "Right"
    evidence = {item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                for study in sr.CurrentRequestedProcedureEvidenceSequence
                for item in study.ReferencedSeriesSequence}
    assert {seg.SOPInstanceUID, read_image(source).metadata["SOPInstanceUID"]} <= evidence


def test_a_clip_without_frame_of_reference_and_a_png_get_no_seg_and_say_why(clip_out):
    _, out = clip_out
    assert not [p for p in out.iterdir() if p.name.startswith(("plain_s", "clip_s"))]
    clip = [r for r in read_results(out) if r.image.endswith("clip.dcm")]
    assert [r.time_s for r in clip] == [0.0, 0.05, 0.1] and all("dicom-out-failed" in r.flags for r in clip)
    assert all(r.ok and r.area_mm2 for r in clip)  # the measurements stand


def test_results_are_not_read_back_as_images(clip_out):
    _, out = clip_out
    with pytest.raises(ImageReadError, match="a DICOM SEG object"):
        read_image(out / "image_seg.dcm")
    assert not [p for p in find_images([out]) if p.name.endswith((".dcm", "_overlay.png"))]


def test_the_cli_seg_nrrd_is_coded_as_the_slicer_module_codes_it(clip_out):
    import slicerio
    from slicerio.segmentation import terminology_entry_to_string

    _, out = clip_out
    [segment] = slicerio.read_segmentation(str(out / "image.seg.nrrd"))["segments"]
    assert segment["name"] == "Median nerve" and segment["terminology"] == codes.terminology("right")
    slicer = pytest.importorskip("slicer")
    module_entry = slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(
        *codes.slicer_terminology_arguments("right"))
    assert terminology_entry_to_string(segment["terminology"]) == module_entry


def test_a_seg_without_frame_of_reference_is_read_back_by_its_pixel_references(clip_out, tmp_path):
    from pydicom import dcmread

    from MedianNerveSegLib.dicom_out import read_dicom_seg

    source, out = clip_out
    assert "FrameOfReferenceUID" not in dcmread(out / "image_seg.dcm")  # what dcmqi cannot load
    [(uid, mask)] = read_dicom_seg(out / "image_seg.dcm")
    assert uid == dcmread(source).SOPInstanceUID
    np.testing.assert_array_equal(mask, read_mask(out / "image_mask.png") > 0)
    with pytest.raises(ValueError, match="image.dcm: not a DICOM SEG"):
        read_dicom_seg(source)


def test_an_ensemble_of_five_models_is_named_within_dicoms_limits(clip_out, tmp_path):
    from MedianNerveSegLib.dicom_out import write_dicom_seg

    source, out = clip_out
    model = " + ".join(f"median_nerve_unet_fold{k}@1.0.0+int8" for k in range(5))
    seg = hd.seg.segread(write_dicom_seg(source, [read_mask(out / "image_mask.png") > 0], tmp_path / "seg.dcm",
                                         model, "right"))
    assert seg.ManufacturerModelName.startswith("ensemble of 5: median_nerve_unet_fold0 + ")
    assert len(seg.ManufacturerModelName) <= 64 and len(seg.SoftwareVersions) <= 64
    assert str(seg.SoftwareVersions).startswith("1.0.0+int8 + 1.0.0+int8")
