"""What the module registers with Slicer as it is created: the sample image (Sample Data module), the *Nerve
clicks* Segment Editor effect and the DICOM browser's loader of our SEGs.

Imports only slicer and the standard library: it runs before the module's Python packages are installed.
"""

import os

import slicer

# A transverse wrist image of the public Jesi dataset (GPL-3.0; DL-UNet paper's repository), with its SHA-256.
SAMPLE_URL = "https://raw.githubusercontent.com/SasageyoOrg/cvdl-deep-mn/main/Dataset/Images/Pz001-001.bmp"
SAMPLE_SHA256 = "9be1310e87d68ab2d9e55b4cb26379ab2eb141da724025fc0b148375118b2da7"
DICOM_PLUGIN = "MedianNerveSegSEGPlugin"


def register(module_dir: str) -> None:
    """The sample and the effect once Slicer has started; the DICOM plugin now, as Slicer's own plugins are
    registered, so that the DICOM module finds it when it starts."""
    slicer.app.connect("startupCompleted()", lambda: register_sample_data(module_dir))
    slicer.app.connect("startupCompleted()", lambda: register_nerve_clicks_effect(module_dir))
    register_dicom_plugin()


def register_nerve_clicks_effect(module_dir: str) -> None:
    """The "Nerve clicks" Segment Editor effect of SegmentEditorNerveClicksLib/."""
    from MedianNerveSegSlicer.widget import registerEffect

    registerEffect(os.path.join(module_dir, "SegmentEditorNerveClicksLib", "SegmentEditorEffect.py"))


def register_sample_data(module_dir: str) -> None:
    """A wrist ultrasound image in the Sample Data module (downloaded on demand, checksum verified)."""
    import SampleData

    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="Median nerve ultrasound",
        sampleName="MedianNerveWrist1",
        thumbnailFileName=os.path.join(module_dir, "Resources", "Icons", "MedianNerveSeg.png"),
        uris=SAMPLE_URL,
        fileNames="Pz001-001.bmp",
        checksums=f"SHA256:{SAMPLE_SHA256}",
        nodeNames="MedianNerveWrist1",
        loadFileType="VolumeFile",
    )


def register_dicom_plugin() -> None:
    """The loader of a DICOM SEG of ultrasound without a Frame of Reference, which Slicer's own SEG plugin
    cannot load (dicom_plugin.py)."""
    try:
        slicer.modules.dicomPlugins
    except AttributeError:
        slicer.modules.dicomPlugins = {}
    slicer.modules.dicomPlugins[DICOM_PLUGIN] = nerve_seg_plugin


def nerve_seg_plugin():
    """A new plugin (the DICOM module calls the registered entry with no arguments)."""
    from MedianNerveSegSlicer.dicom_plugin import NerveSegPlugin

    return NerveSegPlugin()
