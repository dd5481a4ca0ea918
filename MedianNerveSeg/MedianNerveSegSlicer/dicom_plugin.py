"""A DICOM plugin that loads a DICOM SEG of images without a Frame of Reference (ultrasound), such as the SEG
``segment --dicom-out`` and the panel's export write.

Slicer's own SEG plugin (DICOMSegmentationPlugin, 0.95 confidence) converts through dcmqi's
segimage2itkimage, which needs the plane orientation and position that such images lack
(QIICR/dcmqi#319): it fails on them. This plugin offers only those SEGs, at a higher confidence, and
reads them by pixel references (NerveSceneLogic.load_dicom_seg, highdicom) onto the source image's
volume, loading that image from the DICOM database when it is not loaded yet.

Imports only slicer and DICOMLib at import time: the DICOM module instantiates every plugin when it
starts, before MedianNerveSeg's Python packages may be installed.
"""

import logging

import slicer
from DICOMLib import DICOMLoadable, DICOMPlugin

CONFIDENCE = 0.99  # above Slicer's SEG plugin (0.95), which cannot load these


class NerveSegPlugin(DICOMPlugin):
    def __init__(self) -> None:
        super().__init__()
        self.loadType = "DICOM SEG without frame of reference (MedianNerveSeg)"

    def examineForImport(self, fileLists):
        """A loadable for each DICOM SEG file that has no Frame of Reference UID."""
        loadables = []
        for files in fileLists:
            for path in files:
                value = lambda tag: slicer.dicomDatabase.fileValue(path, self.tags[tag])
                if value("modality") != "SEG" or value("frameOfReferenceUID"):
                    continue
                loadable = DICOMLoadable()
                loadable.files = [path]
                loadable.name = value("seriesDescription") or "DICOM SEG"
                loadable.tooltip = f"{loadable.name}: a segmentation of images without a frame of reference"
                loadable.selected = True
                loadable.confidence = CONFIDENCE
                loadable.referencedInstanceUIDs = referenced_instance_uids(path)
                loadables.append(loadable)
        return loadables

    def load(self, loadable) -> bool:
        logic = scene_logic()
        if logic is None:
            return False
        try:
            nodes = [node for path in loadable.files
                     for node in logic.load_dicom_seg(path, slicer.dicomDatabase.fileForInstance)]
        except Exception as error:  # the browser shows that the load failed; the reason goes to the log
            logging.error(f"MedianNerveSeg could not load the DICOM SEG: {error}")
            return False
        for node in nodes:
            self.addSeriesInSubjectHierarchy(loadable, node)
        return bool(nodes)


def referenced_instance_uids(path: str) -> list:
    """The SOP Instance UIDs a SEG references (what the browser offers to load with it)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return [item.ReferencedSOPInstanceUID for series in ds.get("ReferencedSeriesSequence", [])
                for item in series.get("ReferencedInstanceSequence", [])]
    except Exception:
        return []


def scene_logic():
    """The module's scene logic, once its Python packages are installed (None when the user declines)."""
    logic = slicer.util.getModuleLogic("MedianNerveSeg")
    return logic.sceneLogic if logic.ensureDependencies() else None
