"""DICOM out, for PACS: a DICOM SEG of the nerve mask and a DICOM SR measurement report (TID 1500).

Both reference the source ultrasound image (a clip: each of its frames) and are written with
highdicom; the segment is coded as in :mod:`codes`. The SR holds each frame's CSA, perimeter and
flattening ratio. :func:`read_dicom_seg` reads such a SEG back by its pixel references alone, which is
what loads it in Slicer when the image has no Frame of Reference (MedianNerveSegSlicer.dicom_plugin).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from .codes import FLATTENING, NERVE, SIDES, TISSUE, WRIST_JOINT
from .io import NERVE_SEGMENT_NAME, atomic_write
from .results import ENSEMBLE_JOIN, FrameResult

PathLike = Union[str, Path]
_TYPE_2 = ("PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
           "ReferringPhysicianName", "AccessionNumber")
SEG_SERIES_NUMBER, SR_SERIES_NUMBER = 9801, 9802


def _code(value: Tuple[str, str, str]):
    from pydicom.sr.coding import Code

    return Code(*value)


def _source(path: PathLike):
    """The source dataset, with the Patient and Study attributes highdicom copies (empty when absent)."""
    import pydicom

    ds = pydicom.dcmread(str(path))
    for keyword in _TYPE_2:
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def _name_version(model: str) -> Tuple[str, str]:
    """("median_nerve_unet", "1.0.0") of a results row's "median_nerve_unet@1.0.0"; an ensemble's
    "a@1 + b@2" gives ("ensemble of 2: a + b", "1 + 2"); each at most 64 characters (DICOM LO)."""
    members = [member.partition("@") for member in model.split(ENSEMBLE_JOIN)]
    name = ENSEMBLE_JOIN.join(n for n, _, _ in members)
    name = f"ensemble of {len(members)}: {name}" if len(members) > 1 else name
    version = ENSEMBLE_JOIN.join(v for _, _, v in members if v)
    return _long_string(name or "unknown"), _long_string(version or "unknown")


def _long_string(text: str) -> str:
    return text if len(text) <= 64 else text[:61] + "..."


def _algorithm(model: str):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    name, version = _name_version(model)
    return hd.AlgorithmIdentificationSequence(name=name, version=version, family=codes.cid7162.ArtificialIntelligence)


def write_dicom_seg(source_path: PathLike, masks: Sequence[np.ndarray], out_path: PathLike, model: str,
                    side: str = "") -> Path:
    """A binary DICOM SEG of one mask per frame of the source image (frames without nerve are left out)."""
    import highdicom as hd

    source = _source(source_path)
    region = hd.sr.CodedConcept(*WRIST_JOINT)  # the anatomic region; its side as a modifier when known
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label=NERVE_SEGMENT_NAME, segmented_property_category=_code(TISSUE),
        segmented_property_type=_code(NERVE), algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=_algorithm(model), anatomic_regions=[region],
        primary_anatomic_structures=None)
    if side in SIDES:
        description.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [hd.sr.CodedConcept(*SIDES[side])]
    pixels = np.stack([np.asarray(m, bool) for m in masks])
    seg = hd.seg.Segmentation(
        source_images=[source], pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[description],
        series_instance_uid=hd.UID(), series_number=SEG_SERIES_NUMBER, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="MedianNerveSeg", manufacturer_model_name=_name_version(model)[0],
        software_versions=_name_version(model)[1], device_serial_number="n/a",
        series_description="Median nerve (AI)", omit_empty_frames=False)
    out_path = Path(out_path)
    atomic_write(out_path, lambda tmp: seg.save_as(tmp, enforce_file_format=True))
    return out_path


def _measurements(row: FrameResult, source_reference) -> List:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    values = [(codes.SCT.Area, row.area_mm2, hd.sr.CodedConcept("mm2", "UCUM", "mm2")),
              (codes.SCT.Perimeter, row.perimeter_mm, hd.sr.CodedConcept("mm", "UCUM", "mm")),
              (_code(FLATTENING), row.flattening_ratio, hd.sr.CodedConcept("1", "UCUM", "no units"))]
    return [hd.sr.Measurement(name=name, value=float(value), unit=unit, referenced_images=[source_reference])
            for name, value, unit in values if value is not None]


def write_dicom_sr(source_path: PathLike, seg_path: PathLike, rows: Sequence[FrameResult], out_path: PathLike,
                   model: str) -> Path:
    """A TID 1500 measurement report: per frame with a nerve, the CSA (mm^2), perimeter (mm) and flattening
    ratio of the SEG's segment on that frame of the source image. Rows without a spacing give no values."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    source, seg = _source(source_path), pydicom.dcmread(str(seg_path))
    side = next((r.side for r in rows if r.side), "")
    site = hd.sr.FindingSite(anatomic_location=_code(WRIST_JOINT),
                             laterality=_code(SIDES[side]) if side in SIDES else None)
    groups = []
    n_frames = int(source.get("NumberOfFrames", 1) or 1)
    for row in rows:
        if not row.ok or not row.found or row.area_mm2 is None:
            continue
        frame = row.frame + 1
        reference = hd.sr.SourceImageForMeasurement.from_source_image(
            source, referenced_frame_numbers=[frame] if n_frames > 1 else None)
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"Median nerve, frame {row.frame}"),
            referenced_segment=hd.sr.ReferencedSegmentationFrame(  # (from_segmentation misses a shared segment)
                seg.SOPClassUID, seg.SOPInstanceUID, frame_number=frame, segment_number=1,
                source_image=hd.sr.SourceImageForSegmentation(source.SOPClassUID, source.SOPInstanceUID,
                                                              [frame] if n_frames > 1 else None)),
            finding_type=_code(NERVE), finding_sites=[site], algorithm_id=hd.sr.AlgorithmIdentification(
                *_name_version(model)),
            measurements=_measurements(row, reference)))
    if not groups:
        raise ValueError(f"{source_path}: no frame with a nerve measured in mm^2, so no measurement report")
    observer = hd.sr.ObserverContext(observer_type=codes.DCM.Device,
                                     observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                                         uid=hd.UID(), name=_name_version(model)[0]))
    report = hd.sr.MeasurementReport(observation_context=hd.sr.ObservationContext(observer_device_context=observer),
                                     procedure_reported=_code(("73761001", "SCT", "Ultrasonography")),
                                     imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(evidence=[source, seg], content=report, series_instance_uid=hd.UID(),
                                 series_number=SR_SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=1,
                                 manufacturer="MedianNerveSeg", series_description="Median nerve CSA (AI)")
    out_path = Path(out_path)
    atomic_write(out_path, lambda tmp: sr.save_as(tmp, enforce_file_format=True))
    return out_path


def read_dicom_seg(path: PathLike) -> List[Tuple[str, np.ndarray]]:
    """(source SOP Instance UID, (H, W) bool mask of all segments) for each single-frame image a DICOM SEG
    segments: how a SEG without a Frame of Reference (an ultrasound's) is read back, by pixel references
    alone. A file that is no such SEG is a ValueError naming it."""
    import highdicom as hd

    try:
        seg = hd.seg.segread(str(path))
        uids = [sop for _, _, sop in seg.get_source_image_uids()]
        pixels = [seg.get_pixels_by_source_instance([uid], combine_segments=True) for uid in uids]
    except Exception as error:
        raise ValueError(f"{path}: not a DICOM SEG of single-frame images ({str(error).splitlines()[0][:160]})") \
            from None
    return [(uid, frame[0] > 0) for uid, frame in zip(uids, pixels)]


def dicom_refusal(image) -> Optional[str]:
    """Why no SEG/SR can reference this DICOM image (seen from its header alone), None when they can."""
    missing = [key for key in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")
               if not image.metadata.get(key)]
    if missing:
        return f"the DICOM has no {', '.join(missing)} for a SEG/SR to reference"
    if image.n_frames > 1 and not image.metadata.get("FrameOfReferenceUID"):
        return ("a multi-frame ultrasound without a Frame of Reference: highdicom writes a SEG only "
                "for single frames there; the frames' masks are the _fNNNN_mask.png files")
    return None


def write_dicom_outputs(path: Path, image, rows: Sequence[FrameResult], masks: Sequence[np.ndarray],
                        out_dir: Path, stem: str) -> List[Path]:
    """``<stem>_seg.dcm`` and, when some frame has a CSA in mm^2, ``<stem>_sr.dcm``, for a DICOM source;
    nothing for any other file. A DICOM that cannot be referenced is a ValueError saying why."""
    if image.metadata.get("format") != "dicom":
        return []
    refused = dicom_refusal(image)
    if refused:
        raise ValueError(refused)
    model = rows[0].model
    seg = write_dicom_seg(path, masks, out_dir / f"{stem}_seg.dcm", model, rows[0].side)
    if not any(r.found and r.area_mm2 is not None for r in rows):
        return [seg]
    return [seg, write_dicom_sr(path, seg, rows, out_dir / f"{stem}_sr.dcm", model)]
