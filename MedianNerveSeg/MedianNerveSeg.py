"""MedianNerveSeg: segment the median nerve in wrist ultrasound, correct it, measure its CSA, save labels.

The scripted module's entry points only (as KitwareMedical/SlicerNNUnet's): the module, its parameter node,
a widget shell that builds MedianNerveSegSlicer.widget's panel, the module logic (the loaded models;
MedianNerveSegSlicer.dependencies installs the packages) and the self-test shell. The panel calls the scene
logic (MedianNerveSegSlicer.NerveSceneLogic) and background tasks, which call the pure-Python core
MedianNerveSegLib. Importing this file installs and imports nothing heavy."""

import os
import pathlib
from typing import Annotated

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)

# Node classes of loadable modules are not yet in the slicer namespace when this file is imported
# (Slicer's parameter node docs): import them from their module's package, or from MRMLCore in the
# Slicer versions where they moved there.
try:
    from vtkSlicerSegmentationsModuleMRMLPython import vtkMRMLSegmentationNode
except ImportError:
    from slicer import vtkMRMLSegmentationNode
try:
    from vtkSlicerMarkupsModuleMRMLPython import vtkMRMLMarkupsLineNode
except ImportError:
    from slicer import vtkMRMLMarkupsLineNode

DEFAULT_MODEL = "median_nerve_unet"


#
# MedianNerveSeg
#


class MedianNerveSeg(ScriptedLoadableModule):
    """Uses ScriptedLoadableModule base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Median Nerve Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations", "Sequences", "Markups"]
        self.parent.contributors = ["MedianNerveSeg developers (MedianNerveSeg project)"]
        self.parent.helpText = _("""
Segments the median nerve in transverse wrist ultrasound with a deep-learning model, lets you correct
the contour with clicks (the Nerve clicks effect) or the Segment Editor, measures the cross-sectional area
(CSA, mm<sup>2</sup>), perimeter, circularity, flattening ratio and branch count (live while you edit),
calibrates the pixel spacing, and saves corrected contours as training labels. CSA without a known spacing
is in pixels and flagged, never silently in mm<sup>2</sup>. The CTS classifier is for research, not diagnosis.
""")
        self.parent.acknowledgementText = _("""
The pretrained model was trained on the public median nerve ultrasound dataset of Smerilli et al.
and Di Cosmo et al. (Jesi). Built with 3D Slicer, MONAI and PyTorch.
""")
        from MedianNerveSegSlicer import registration  # imports only slicer: sample, clicks effect, DICOM plugin

        registration.register(os.path.dirname(__file__))


#
# MedianNerveSegParameterNode
#


@parameterNodeWrapper
class MedianNerveSegParameterNode:
    """
    inputVolume - the ultrasound image (a frame, or the proxy volume of a cine sequence).
    segmentation - the segmentation holding the "Median nerve" segment.
    modelName - installed model used by Segment (the list of models is filled at run time).
    device - "cpu" (always works) or "cuda".
    runtime - auto (OpenVINO float32 on the CPU when installed, else PyTorch), openvino-int8 (the model's
        int8 network: faster, its masks close to the float ones, not equal), or torch.
    spacingMm - mm/pixel used when loading or when applying a typed calibration (0: from the file).
    calibrationLine, calibrationLengthMm - a line drawn on the image and its true length.
    table - the measurement table (one row per image/frame).
    storeFolder, author - where training labels go and who corrected them.
    liveMeasure - re-measure after every edit of the segment.
    side, level - the wrist and where the image was taken, written with each measurement.
    trainEpochs - epochs of a training or fine-tune started from the module.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    modelName: str = DEFAULT_MODEL
    device: Annotated[str, Choice(["cpu", "cuda"])] = "cpu"
    runtime: Annotated[str, Choice(["auto", "openvino-int8", "torch"])] = "auto"
    spacingMm: Annotated[float, WithinRange(0.0, 10.0)] = 0.0
    calibrationLine: vtkMRMLMarkupsLineNode
    calibrationLengthMm: Annotated[float, WithinRange(0.0, 1000.0)] = 10.0
    table: vtkMRMLTableNode
    storeFolder: pathlib.Path
    author: str = ""
    liveMeasure: bool = True
    side: Annotated[str, Choice(["unknown", "left", "right"])] = "unknown"
    level: Annotated[str, Choice(["inlet", "forearm", "outlet"])] = "inlet"
    trainEpochs: Annotated[int, WithinRange(1, 1000)] = 30


#
# MedianNerveSegWidget
#


class MedianNerveSegWidget(ScriptedLoadableModuleWidget):
    """A shell around MedianNerveSegSlicer.widget.MedianNerveSegPanel (imported in setup, when Slicer builds
    the module's panel); see https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py"""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.logic = None
        self.panel = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        from MedianNerveSegSlicer.widget import MedianNerveSegPanel

        self.logic = MedianNerveSegLogic()
        self.panel = MedianNerveSegPanel(self, self.logic)

    def cleanup(self) -> None:
        if self.panel:
            self.panel.cleanup()

    def enter(self) -> None:
        self.panel.enter()

    def exit(self) -> None:
        self.panel.exit()


#
# MedianNerveSegLogic
#


class MedianNerveSegLogic(ScriptedLoadableModuleLogic):
    """Module logic: the parameter node, the dependency check and the loaded models (one per kind). The MRML
    work is the scene logic's (``sceneLogic``), which takes the scene and the module logics explicitly so that
    it is tested outside Slicer on the slicer-core wheel."""

    DEFAULT_MODEL = DEFAULT_MODEL

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._sceneLogic = None
        self._models = {}  # kind -> (settings, the core's model)

    def getParameterNode(self):
        return MedianNerveSegParameterNode(super().getParameterNode())

    @staticmethod
    def dependenciesReady() -> bool:
        from MedianNerveSegSlicer import dependencies

        return dependencies.ready()

    @staticmethod
    def ensureDependencies() -> bool:
        """torch through the PyTorch extension, the rest with pip, each after the user agrees."""
        from MedianNerveSegSlicer import dependencies

        return dependencies.ensure()

    @property
    def sceneLogic(self):
        """MedianNerveSegSlicer.NerveSceneLogic on Slicer's scene (imported after the dependency check)."""
        if self._sceneLogic is None:
            from MedianNerveSegSlicer import NerveSceneLogic

            self._sceneLogic = NerveSceneLogic(slicer.mrmlScene, slicer.modules.segmentations.logic(),
                                               slicer.modules.sequences.logic())
        return self._sceneLogic

    def _model(self, kind: str, settings: tuple, load):
        """The loaded model of a kind, loaded again when its settings change."""
        if self._models.get(kind, (None,))[0] != settings:
            self._models[kind] = (settings, load())
        return self._models[kind][1]

    def segmenter(self, modelName: str, device: str, runtime: str = "auto"):
        """The core's Segmenter for a model, device and runtime."""
        from MedianNerveSegLib.inference import Segmenter

        return self._model("segmenter", (modelName, device, runtime), lambda: Segmenter(modelName or None, device, runtime))

    def refiner(self, device: str):
        """The core's Refiner (the shipped click model)."""
        from MedianNerveSegLib.refine import Refiner

        return self._model("refiner", (device,), lambda: Refiner(None, device))

    def classifier(self, device: str):
        """The core's Classifier (the shipped CTS classifier, research use)."""
        from MedianNerveSegLib.classify import Classifier

        return self._model("classifier", (device,), lambda: Classifier(None, device))


#
# MedianNerveSegTest
#


class MedianNerveSegTest(ScriptedLoadableModuleTest):
    """The registered sample through load, segment, measure, calibrate, save and export, and a clip through
    *Segment all frames* (MedianNerveSegSlicer.selftest; runs in Slicer)."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        from MedianNerveSegSlicer.selftest import SelfTest

        self.setUp()
        SelfTest(self, MedianNerveSegLogic(), DEFAULT_MODEL).run()
        self.delayDisplay("Test passed")
