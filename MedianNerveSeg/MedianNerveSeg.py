"""MedianNerveSeg: segment the median nerve in wrist ultrasound, correct it, measure its CSA, save labels.

A thin scripted module in the style of Slicer 5.x's template: the widget wires the UI to a
parameter node and calls MedianNerveSegSlicer.MedianNerveSegLogic (MRML glue), which calls
the pure-Python core MedianNerveSegLib. Both packages are imported lazily, after the
dependency check, so that importing this file installs and imports nothing heavy.
"""

import importlib.util
import logging
import os
import pathlib
import shutil
import tempfile
import time
from typing import Annotated, Callable, Optional, Tuple

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

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

# torch comes from the PyTorch extension (PyTorchUtils); the rest is pip-installed on first use.
TORCH_REQUIREMENT = ">=2.1"
PIP_REQUIREMENTS = {  # import name -> pip requirement; SimpleITK and numpy are Slicer's own
    "monai": "monai>=1.3",
    "scipy": "scipy",
    "skimage": "scikit-image>=0.20",
    "PIL": "pillow",
    "nrrd": "pynrrd",
    "nibabel": "nibabel",
    "slicerio": "slicerio>=1.0",
    "pydicom": "pydicom>=2.4",
}
DEFAULT_MODEL = "median_nerve_unet"
IMAGE_FILTER = "Ultrasound images (*.png *.bmp *.jpg *.jpeg *.tif *.tiff *.nrrd *.nhdr *.nii *.nii.gz *.mha *.mhd *.dcm);;All files (*)"
LOW_CONFIDENCE = 0.7
# A transverse wrist image of the public Jesi dataset (GPL-3.0; DL-UNet paper's repository), with its SHA-256.
SAMPLE_URL = "https://raw.githubusercontent.com/SasageyoOrg/cvdl-deep-mn/main/Dataset/Images/Pz001-001.bmp"
SAMPLE_SHA256 = "9be1310e87d68ab2d9e55b4cb26379ab2eb141da724025fc0b148375118b2da7"


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
        self.parent.contributors = ["MedianNerveSeg contributors"]
        self.parent.helpText = _("""
Segments the median nerve in transverse wrist ultrasound with a deep-learning model, lets you
correct the contour in the Segment Editor, measures the cross-sectional area (CSA, mm<sup>2</sup>),
perimeter, circularity, flattening ratio and branch count (live while you edit), calibrates the
pixel spacing (mm/pixel or a line of known length), and saves corrected contours as training labels.
CSA without a known spacing is reported in pixels and flagged, never silently in mm<sup>2</sup>.
""")
        self.parent.acknowledgementText = _("""
The pretrained model was trained on the public median nerve ultrasound dataset of Smerilli et al.
and Di Cosmo et al. (Jesi). Built with 3D Slicer, MONAI and PyTorch.
""")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """A wrist ultrasound image in the Sample Data module (downloaded on demand, checksum verified)."""
    import SampleData

    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="Median nerve ultrasound",
        sampleName="MedianNerveWrist1",
        thumbnailFileName=os.path.join(os.path.dirname(__file__), "Resources", "Icons", "MedianNerveSeg.png"),
        uris=SAMPLE_URL,
        fileNames="Pz001-001.bmp",
        checksums=f"SHA256:{SAMPLE_SHA256}",
        nodeNames="MedianNerveWrist1",
        loadFileType="VolumeFile",
    )


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
    spacingMm - mm/pixel used when loading or when applying a typed calibration (0: from the file).
    calibrationLine, calibrationLengthMm - a line drawn on the image and its true length.
    table - the measurement table (one row per image/frame).
    storeFolder, author - where training labels go and who corrected them.
    liveMeasure - re-measure after every edit of the segment.
    trainEpochs - epochs of a training or fine-tune started from the module.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    modelName: str = DEFAULT_MODEL
    device: Annotated[str, Choice(["cpu", "cuda"])] = "cpu"
    spacingMm: Annotated[float, WithinRange(0.0, 10.0)] = 0.0
    calibrationLine: vtkMRMLMarkupsLineNode
    calibrationLengthMm: Annotated[float, WithinRange(0.0, 1000.0)] = 10.0
    table: vtkMRMLTableNode
    storeFolder: pathlib.Path
    author: str = ""
    liveMeasure: bool = True
    trainEpochs: Annotated[int, WithinRange(1, 1000)] = 30


#
# MedianNerveSegWidget
#


class MedianNerveSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Uses ScriptedLoadableModuleWidget base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._liveHandle = None
        self._liveNodes = (None, None)
        self._segmentationJob = None  # JobMonitor of "Segment all frames"
        self._trainingJob = None  # JobMonitor of Train or Compare
        self._trained = None  # (model before, model folder after) of the last finished training

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedianNerveSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedianNerveSegLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.loadImageButton.connect("clicked(bool)", self.onLoadImage)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.editButton.connect("clicked(bool)", self.onEdit)
        self.ui.measureButton.connect("clicked(bool)", self.onMeasure)
        self.ui.calibrateSpacingButton.connect("clicked(bool)", self.onCalibrateSpacing)
        self.ui.placeLineButton.connect("clicked(bool)", self.onPlaceLine)
        self.ui.calibrateLineButton.connect("clicked(bool)", self.onCalibrateLine)
        self.ui.saveLabelButton.connect("clicked(bool)", self.onSaveLabel)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.ui.segmentAllFramesButton.connect("clicked(bool)", self.onSegmentAllFrames)
        self.ui.cancelJobButton.connect("clicked(bool)", self.onCancelSegmentation)
        self.ui.trainButton.connect("clicked(bool)", self.onTrain)
        self.ui.stopTrainingButton.connect("clicked(bool)", self.onStopTraining)
        self.ui.compareButton.connect("clicked(bool)", self.onCompare)
        self.ui.modelComboBox.currentTextChanged.connect(self.onModelChanged)
        self.fillModelComboBox()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._stopLiveMeasurement()
        for monitor in (self._segmentationJob, self._trainingJob):
            if monitor:
                monitor.cancel()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self._stopLiveMeasurement()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: Optional[MedianNerveSegParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # In the .ui file a Qt dynamic property "SlicerParameterName" names each connected widget.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        p = self._parameterNode
        hasVolume = bool(p and p.inputVolume)
        hasSegmentation = bool(hasVolume and p.segmentation)
        segmenting, training = bool(self._segmentationJob), bool(self._trainingJob)
        self.ui.segmentButton.enabled = hasVolume and not segmenting
        self.ui.segmentAllFramesButton.enabled = (hasVolume and not segmenting
                                                  and self.logic.dependenciesReady()
                                                  and self.logic.sceneLogic.n_frames(p.inputVolume) > 1)
        self.ui.cancelJobButton.enabled = segmenting
        self.ui.trainButton.enabled = bool(p and str(p.storeFolder) not in ("", ".")) and not training
        self.ui.stopTrainingButton.enabled = training
        self.ui.compareButton.enabled = self._trained is not None and not training
        for button in (self.ui.editButton, self.ui.measureButton, self.ui.saveLabelButton, self.ui.exportButton):
            button.enabled = hasSegmentation
        self.ui.calibrateSpacingButton.enabled = hasVolume and p.spacingMm > 0
        self.ui.calibrateLineButton.enabled = hasVolume and bool(p.calibrationLine) and p.calibrationLengthMm > 0
        if p and self.ui.modelComboBox.currentText != p.modelName:
            self.ui.modelComboBox.setCurrentText(p.modelName)
        self._showSpacingSource()
        self._updateLiveMeasurement()

    # ------------------------------------------------------------------ models and dependencies

    def fillModelComboBox(self) -> None:
        """Installed models (needs torch: until the dependencies are installed only the default is listed)."""
        names = [DEFAULT_MODEL]
        if importlib.util.find_spec("torch") is not None:
            try:
                from MedianNerveSegLib import zoo

                names = [zoo.model_name(folder) for folder in zoo.installed_models()] or names
            except Exception as error:  # a broken model folder must not break the module's GUI
                logging.warning(f"MedianNerveSeg: could not list the installed models: {error}")
        current = self.ui.modelComboBox.currentText
        self.ui.modelComboBox.clear()
        self.ui.modelComboBox.addItems(names)
        if current in names:
            self.ui.modelComboBox.setCurrentText(current)
        self.fillTrainStartComboBox()

    def fillTrainStartComboBox(self) -> None:
        """"Fine-tune the selected model" first, then a new model of each registry architecture."""
        combo = self.ui.trainStartComboBox
        selected = combo.currentData
        combo.clear()
        combo.addItem(_("Fine-tune the selected model"), "")
        if self.logic.dependenciesReady():
            from MedianNerveSegLib.models import available_models

            for architecture in available_models():
                combo.addItem(_("New model: {architecture}").format(architecture=architecture), architecture)
        index = combo.findData(selected)
        if index != -1:
            combo.setCurrentIndex(index)

    def onModelChanged(self, name: str) -> None:
        if self._parameterNode and name and self._parameterNode.modelName != name:
            self._parameterNode.modelName = name

    # ------------------------------------------------------------------ buttons

    def onLoadImage(self) -> None:
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), _("Open an ultrasound image"), "", IMAGE_FILTER)
        if not path or not self.logic.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to load the image."), waitCursor=True):
            volume = self.logic.sceneLogic.load_image(path, self._parameterNode.spacingMm or None)
            self._parameterNode.inputVolume = volume
            self._parameterNode.segmentation = None
            slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutOneUpRedSliceView)
            slicer.util.setSliceViewerLayers(background=volume, fit=True)

    def onSegment(self) -> None:
        """Segment the current frame. Synchronous in this first version (well under a second per frame on a
        CPU with the shipped model), under a wait cursor; a background process with progress and Cancel
        comes with sequence-wide segmentation."""
        if not self.logic.ensureDependencies():
            return
        self.fillModelComboBox()
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Segmentation failed."), waitCursor=True):
            segmenter = self.logic.segmenter(p.modelName, p.device)
            frame = self.logic.sceneLogic.current_frame(p.inputVolume)
            segmentation, prediction = self.logic.sceneLogic.segment(p.inputVolume, segmenter, frame, p.segmentation)
            p.segmentation = segmentation
            self._showPrediction(prediction)
            self.onMeasure()

    def onSegmentAllFrames(self) -> None:
        """Segment every frame of the clip in a background process; then a per-frame segmentation
        browsed with the clip, a CSA-per-frame table and its plot."""
        if not self.logic.ensureDependencies():
            return
        from MedianNerveSegLib.jobs import segmentation_job, segmentation_progress
        from MedianNerveSegLib.zoo import load_info, resolve_model

        p = self._parameterNode
        volume = p.inputVolume
        with slicer.util.tryWithErrorDisplay(_("Could not start the segmentation."), waitCursor=True):
            modelFolder = resolve_model(p.modelName)
            work = pathlib.Path(tempfile.mkdtemp(prefix="MedianNerveSeg-"))
            frames = self.logic.sceneLogic.export_frames(volume, work / "frames")
            job = segmentation_job(frames, work / "results", model=modelFolder, device=p.device)

        def progress() -> Tuple[int, int, str]:
            done = segmentation_progress(work / "results", len(frames))["done"]
            return done, len(frames), _("Segmenting frame {done} of {total}...").format(done=done, total=len(frames))

        def finished(returnCode: int) -> None:
            self._segmentationJob = None
            try:
                if returnCode not in (0, 1):  # 1: some frames failed, each named in the results
                    slicer.util.errorDisplay(_("Segmentation of the frames failed."), detailedText=job.output())
                    return
                info = load_info(modelFolder)
                with slicer.util.tryWithErrorDisplay(_("Could not import the frames' segmentation."), waitCursor=True):
                    segmentation, table = self.logic.sceneLogic.import_frame_results(
                        volume, work / "results", frames, info.name, info.version)
                    self._showFrameFlags(work / "results", len(frames))
                    p.segmentation, p.table = segmentation, table
                    chart = self.logic.sceneLogic.csa_chart(table, volume.GetName())
                    slicer.modules.plots.logic().ShowChartInLayout(chart)
            finally:
                shutil.rmtree(work, ignore_errors=True)
                self._onParameterNodeModified()

        self._segmentationJob = JobMonitor(job, progress, finished, self.ui.jobProgressBar, self.ui.statusLabel,
                                           onCancel=lambda: shutil.rmtree(work, ignore_errors=True))
        self._onParameterNodeModified()

    def onCancelSegmentation(self) -> None:
        if self._segmentationJob:
            self._segmentationJob.cancel()
            self._segmentationJob = None
            self.ui.statusLabel.text = _("Segmentation cancelled")
            self._onParameterNodeModified()

    def _showFrameFlags(self, resultsFolder: pathlib.Path, frameCount: int) -> None:
        """Frames without a nerve or with a low confidence, named in the status line (never hidden)."""
        from MedianNerveSegLib.jobs import segmentation_flags

        flags = segmentation_flags(resultsFolder, LOW_CONFIDENCE)
        frame = lambda names: ", ".join(str(int(name[5:9])) for name in names)  # "frame0003.nrrd" -> 3
        text = _("{n} frames segmented.").format(n=frameCount - len(flags["failed"]))
        if flags["failed"]:
            text += " " + _("FAILED frames {frames}.").format(frames=frame(flags["failed"]))
        if flags["not_found"]:
            text += " " + _("NOT FOUND in frames {frames}.").format(frames=frame(flags["not_found"]))
        if flags["low_confidence"]:
            text += " " + _("Low confidence (check the contour) in frames {frames}.").format(frames=frame(flags["low_confidence"]))
        self.ui.statusLabel.text = text

    def onTrain(self) -> None:
        """Train (fine-tune the selected model, or a new architecture) on the dataset folder in a background
        process; the new model joins the model list when it ends."""
        if not self.logic.ensureDependencies():
            return
        from MedianNerveSegLib.jobs import training_job, training_progress
        from MedianNerveSegLib.zoo import bundle_dir, user_models_dir

        p = self._parameterNode
        store = pathlib.Path(str(p.storeFolder))
        if not (store / "datalist.json").is_file():
            slicer.util.errorDisplay(_("{folder} is not a dataset store yet: save some training labels there first.").format(folder=store))
            return
        architecture = self.ui.trainStartComboBox.currentData or None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"{architecture}-{stamp}" if architecture else f"{p.modelName}-ft-{stamp}"
        out = user_models_dir() / name
        epochs = p.trainEpochs
        with slicer.util.tryWithErrorDisplay(_("Could not start the training."), waitCursor=True):
            job = training_job(store, out, bundle=bundle_dir(architecture) if architecture else None,
                               init_weights=None if architecture else p.modelName, epochs=epochs,
                               device=p.device, architecture=architecture, name=name)
        before = p.modelName

        def progress() -> Tuple[int, int, str]:
            state = training_progress(out)
            text = _("Epoch {epoch} of {epochs}").format(epoch=state["epoch"], epochs=epochs)
            if "loss" in state:
                text += _(", loss {loss:.3f}").format(loss=state["loss"])
            if "dice_mean" in state:
                text += _(", validation Dice {dice:.3f}").format(dice=state["dice_mean"])
            return state["epoch"], epochs, text

        def finished(returnCode: int) -> None:
            self._trainingJob = None
            if returnCode != 0:
                slicer.util.errorDisplay(_("Training failed."), detailedText=job.output())
            else:
                self._trained = (before, out)
                self.fillModelComboBox()
                self.ui.trainStatusLabel.text = _("New model {name} is in the Model list ({folder}). "
                                                  "Compare it with {before} on the validation patients.").format(
                    name=name, folder=out, before=before)
            self._onParameterNodeModified()

        self._trainingJob = JobMonitor(job, progress, finished, self.ui.trainProgressBar, self.ui.trainStatusLabel)
        self._onParameterNodeModified()

    def onStopTraining(self) -> None:
        """End training after the current epoch; the model trained so far is saved."""
        if self._trainingJob:
            self._trainingJob.job.request_stop()
            self.ui.trainStatusLabel.text = _("Stopping after this epoch...")

    def onCompare(self) -> None:
        """Before/after on the store's validation patients, in the background."""
        from MedianNerveSegLib.jobs import comparison_job

        p = self._parameterNode
        before, after = self._trained
        out = after / "comparison"
        job = comparison_job(str(p.storeFolder), [before, after], out, device=p.device)

        def finished(returnCode: int) -> None:
            self._trainingJob = None
            if returnCode != 0:
                slicer.util.errorDisplay(_("Comparison failed."), detailedText=job.output())
            else:
                self.ui.comparisonLabel.text = comparisonHtml(out / "comparison.json")
                self.ui.trainStatusLabel.text = _("Compared on the validation patients ({folder})").format(folder=out)
            self._onParameterNodeModified()

        self._trainingJob = JobMonitor(job, lambda: (0, 0, _("Comparing the models on the validation patients...")),
                                       finished, self.ui.trainProgressBar, self.ui.trainStatusLabel)
        self._onParameterNodeModified()

    def onEdit(self) -> None:
        """Open the Segment Editor on the nerve segment, ready to paint/erase."""
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Could not open the Segment Editor.")):
            self.logic.sceneLogic.segment_editor_node(p.segmentation, p.inputVolume)
            slicer.util.selectModule("SegmentEditor")
            editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
            editor.setSegmentationNode(p.segmentation)
            editor.setSourceVolumeNode(p.inputVolume)
            editor.setCurrentSegmentID(self.logic.sceneLogic.nerve_segment_id(p.segmentation))

    def onMeasure(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Measurement failed.")):
            self._showMeasurement(self.logic.sceneLogic.measure(p.segmentation, p.inputVolume))

    def onCalibrateSpacing(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Calibration failed.")):
            self.logic.sceneLogic.set_spacing(p.inputVolume, p.spacingMm)
            self._afterCalibration()

    def onPlaceLine(self) -> None:
        """Create a line and enter place mode: click its two ends on a structure of known length."""
        line = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", _("Calibration line"))
        self._parameterNode.calibrationLine = line
        markupsLogic = slicer.modules.markups.logic()
        markupsLogic.SetActiveList(line)
        markupsLogic.StartPlaceMode(False)

    def onCalibrateLine(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Calibration failed.")):
            row, col = self.logic.sceneLogic.calibrate_from_line(p.inputVolume, p.calibrationLine, p.calibrationLengthMm)
            self.ui.statusLabel.text = _("Spacing set to {row:.4f} x {col:.4f} mm/pixel").format(row=row, col=col)
            self._afterCalibration()

    def onSaveLabel(self) -> None:
        p = self._parameterNode
        folder = str(p.storeFolder)
        if folder in ("", "."):
            slicer.util.errorDisplay(_("Choose the training dataset folder first (a new or empty folder, or an existing store)."))
            return
        if not slicer.util.confirmOkCancelDisplay(
                _("Save this image and its corrected nerve contour as a training label in\n{folder}?").format(folder=folder)):
            return
        with slicer.util.tryWithErrorDisplay(_("Saving the label failed; nothing was overwritten."), waitCursor=True):
            record = self.logic.sceneLogic.save_label(p.segmentation, p.inputVolume, folder, author=p.author)
            changed = record["changed_pixels"]
            self.ui.saveStatusLabel.text = _("Saved {id} label version {version} (patient {patient}{changed})").format(
                id=record["id"], version=record["version"], patient=record["patient"],
                changed="" if changed is None else _(", {n} pixels changed from the AI contour").format(n=changed))

    def onExport(self) -> None:
        p = self._parameterNode
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), _("Export segmentation"),
                                              f"{p.segmentation.GetName()}.seg.nrrd", "Slicer segmentation (*.seg.nrrd)")
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("Export failed.")):
            self.ui.statusLabel.text = _("Exported {path}").format(path=self.logic.sceneLogic.export_segmentation(p.segmentation, path))

    # ------------------------------------------------------------------ display

    def _afterCalibration(self) -> None:
        self._showSpacingSource()
        if self._parameterNode.segmentation:
            self.onMeasure()

    def _showSpacingSource(self) -> None:
        volume = self._parameterNode.inputVolume if self._parameterNode else None
        if not volume:
            self.ui.spacingSourceLabel.text = ""
            return
        source = volume.GetAttribute("MedianNerveSeg.SpacingSource") or "file-header"
        col, row = volume.GetSpacing()[:2]
        self.ui.spacingSourceLabel.text = (_("unknown: calibrate to measure in mm") if source == "unknown"
                                           else f"{row:.4f} x {col:.4f} mm/pixel ({source})")

    def _showPrediction(self, prediction) -> None:
        self.ui.foundLabel.text = _("yes") if prediction.found else _("NOT FOUND: check the image or draw the nerve")
        self.ui.confidenceLabel.text = f"{prediction.confidence:.2f}" + (
            _(" (low: check the contour)") if prediction.confidence < LOW_CONFIDENCE else "")
        self.ui.statusLabel.text = _("Segmented in {ms:.0f} ms").format(ms=prediction.milliseconds)

    def _showMeasurement(self, measurement) -> None:
        unit = "mm²" if measurement.spacing_known else "px"
        area = measurement.area_mm2 if measurement.spacing_known else measurement.area_px
        perimeter = measurement.perimeter_mm if measurement.spacing_known else measurement.perimeter_px
        self.ui.areaLabel.text = f"{area:.2f} {unit}" + ("" if measurement.spacing_known else _(" (spacing unknown)"))
        self.ui.perimeterLabel.text = f"{perimeter:.2f} {'mm' if measurement.spacing_known else 'px'}"
        self.ui.circularityLabel.text = "-" if measurement.circularity is None else f"{measurement.circularity:.3f}"
        self.ui.flatteningLabel.text = "-" if measurement.flattening_ratio is None else f"{measurement.flattening_ratio:.2f}"
        self.ui.componentsLabel.text = str(measurement.n_components)
        p = self._parameterNode
        if not p.table:
            p.table = self.logic.sceneLogic.measurement_table()
        frame = self.logic.sceneLogic.frame_of(p.segmentation, p.inputVolume)
        isClip = self.logic.sceneLogic.n_frames(p.inputVolume) > 1
        name = p.inputVolume.GetName() + (f" frame {frame}" if isClip else "")
        self.logic.sceneLogic.update_table(p.table, measurement, name, frame if isClip else None)

    def _updateLiveMeasurement(self) -> None:
        """Observe the selected segmentation so that every edit re-measures (when enabled)."""
        p = self._parameterNode
        nodes = (p.segmentation, p.inputVolume) if p and p.liveMeasure and p.segmentation and p.inputVolume else (None, None)
        if nodes == self._liveNodes:
            return
        self._stopLiveMeasurement()
        if nodes[0] is not None and self.logic.dependenciesReady():
            self._liveHandle = self.logic.sceneLogic.observe_live_measurement(nodes[0], nodes[1], self._showMeasurement)
            self._liveNodes = nodes

    def _stopLiveMeasurement(self) -> None:
        if self._liveHandle is not None:
            self.logic.sceneLogic.remove_observer(self._liveHandle)
        self._liveHandle, self._liveNodes = None, (None, None)


#
# Background jobs
#


class JobMonitor:
    """Polls a core BackgroundJob from a QTimer: progress bar and status text while it runs, a callback
    with the exit code when it ends. Slicer stays responsive: the work is in another process."""

    def __init__(self, job, progress: Callable[[], Tuple[int, int, str]], finished: Callable[[int], None],
                 progressBar, statusLabel, onCancel: Optional[Callable[[], None]] = None, intervalMs: int = 500) -> None:
        self.job, self._progress, self._finished = job, progress, finished
        self._progressBar, self._statusLabel, self._onCancel = progressBar, statusLabel, onCancel
        self._progressBar.setValue(0)
        self._progressBar.show()
        self._timer = qt.QTimer()
        self._timer.setInterval(intervalMs)
        self._timer.connect("timeout()", self._poll)
        self._timer.start()

    def _poll(self) -> None:
        returnCode = self.job.poll()
        value, maximum, text = self._progress()
        self._progressBar.setMaximum(maximum)  # 0: a busy indicator
        self._progressBar.setValue(value)
        self._statusLabel.text = text
        if returnCode is not None:
            self._timer.stop()
            self._progressBar.hide()
            self._finished(returnCode)

    def cancel(self) -> None:
        self._timer.stop()
        self.job.cancel()
        self._progressBar.hide()
        if self._onCancel:
            self._onCancel()


def comparisonHtml(path: pathlib.Path) -> str:
    """The comparison.json of the core's ``compare`` as a small HTML table (titles and digits from the metrics table)."""
    import html
    import json

    from MedianNerveSegLib.metrics import format_value, heading

    rows = json.loads(path.read_text())
    keys = ("dice_mean", "csa_mae_mm2", "csa_icc", "found_rate")
    lines = ["<table><tr><th>model</th>" + "".join(f"<th>{html.escape(heading(k))}</th>" for k in keys) + "</tr>"]
    lines += ["<tr><td>" + html.escape(str(r["model"])) + "</td>"
              + "".join(f"<td>{format_value(k, r.get(k))}</td>" for k in keys) + "</tr>" for r in rows]
    return "".join(lines) + f"</table>{rows[0]['n_images']} validation images"


#
# MedianNerveSegLogic
#


class MedianNerveSegLogic(ScriptedLoadableModuleLogic):
    """Module logic: the parameter node, the dependency check and the cached segmenter. Everything
    else is MedianNerveSegSlicer.MedianNerveSegLogic (``sceneLogic``), which takes the scene and the
    module logics explicitly so that it is tested outside Slicer on the slicer-core wheel."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._sceneLogic = None
        self._segmenter = None
        self._segmenterKey = None

    def getParameterNode(self):
        return MedianNerveSegParameterNode(super().getParameterNode())

    @staticmethod
    def dependenciesReady() -> bool:
        return importlib.util.find_spec("torch") is not None and all(
            importlib.util.find_spec(module) is not None for module in PIP_REQUIREMENTS)

    def ensureDependencies(self) -> bool:
        """torch through the PyTorch extension, the rest with pip, each after the user agrees."""
        if self.dependenciesReady():
            return True
        if importlib.util.find_spec("torch") is None:
            try:
                import PyTorchUtils
            except ModuleNotFoundError:
                slicer.util.errorDisplay(_("MedianNerveSeg needs the PyTorch extension: install it from the "
                                           "Extensions Manager, restart Slicer and try again."))
                return False
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            if not torchLogic.torchInstalled():
                torch = torchLogic.installTorch(askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT)
                if torch is None:
                    return False
        missing = [requirement for module, requirement in PIP_REQUIREMENTS.items() if importlib.util.find_spec(module) is None]
        if missing:
            if not slicer.util.confirmOkCancelDisplay(
                    _("MedianNerveSeg needs these Python packages: {packages}.\nInstall them now (a few minutes)?").format(
                        packages=", ".join(missing))):
                return False
            with slicer.util.tryWithErrorDisplay(_("Installing the Python packages failed."), waitCursor=True):
                slicer.util.pip_install(missing)
        return self.dependenciesReady()

    @property
    def sceneLogic(self):
        """MedianNerveSegSlicer.MedianNerveSegLogic on Slicer's scene (imported after the dependency check)."""
        if self._sceneLogic is None:
            from MedianNerveSegSlicer import MedianNerveSegLogic as SceneLogic

            self._sceneLogic = SceneLogic(slicer.mrmlScene, slicer.modules.segmentations.logic(),
                                          slicer.modules.sequences.logic())
        return self._sceneLogic

    def segmenter(self, modelName: str, device: str):
        """The core's Segmenter for a model and device, loaded once."""
        if self._segmenterKey != (modelName, device):
            from MedianNerveSegLib.inference import Segmenter

            self._segmenter = Segmenter(modelName or None, device)
            self._segmenterKey = (modelName, device)
        return self._segmenter


#
# MedianNerveSegTest
#


class MedianNerveSegTest(ScriptedLoadableModuleTest):
    """Walks load -> segment -> measure -> calibrate -> save -> export through the logic (runs in Slicer)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_MedianNerveSeg1()
        self.setUp()
        self.test_MedianNerveSegClip()

    def _testImage(self, folder):
        """A dataset image when MEDIAN_NERVE_DATA points to the dataset, else a synthetic ultrasound-like frame."""
        data = os.environ.get("MEDIAN_NERVE_DATA")
        if data and os.path.isfile(os.path.join(data, "images", "Pz001-001.png")):
            return os.path.join(data, "images", "Pz001-001.png")
        import numpy as np
        from PIL import Image

        rows, cols = np.mgrid[0:288, 0:384]
        pixels = 60 + 40 * np.sin(rows / 9.0) + np.random.default_rng(0).normal(0, 12, rows.shape)
        pixels[((rows - 150) / 22.0) ** 2 + ((cols - 190) / 40.0) ** 2 < 1] = 25  # a dark oval "nerve"
        path = os.path.join(folder, "synthetic-us.png")
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
        return path

    def test_MedianNerveSeg1(self):
        import tempfile

        import numpy as np

        self.delayDisplay("Starting the test")
        logic = MedianNerveSegLogic()
        self.assertTrue(logic.ensureDependencies())
        from MedianNerveSegLib.measure import measure_mask

        scene = logic.sceneLogic
        with tempfile.TemporaryDirectory() as folder:
            volume = scene.load_image(self._testImage(folder), 0.062)
            self.assertEqual(volume.GetImageData().GetDimensions()[2], 1)
            self.assertAlmostEqual(volume.GetSpacing()[0], 0.062)

            segmentation, prediction = scene.segment(volume, logic.segmenter(DEFAULT_MODEL, "cpu"))
            self.assertEqual(segmentation.GetSegmentation().GetNumberOfSegments(), 1)
            mask = scene.segment_mask(segmentation, volume)
            self.assertTrue(np.array_equal(mask, prediction.mask))
            self.delayDisplay("Segmented")

            measurement = scene.measure(segmentation, volume)
            self.assertEqual(measurement.as_row(), measure_mask(prediction.mask, 0.062).as_row())
            table = scene.measurement_table()
            scene.update_table(table, measurement, volume.GetName())
            self.assertEqual(table.GetNumberOfRows(), 1)

            record = scene.save_label(segmentation, volume, os.path.join(folder, "store"), author="self-test")
            self.assertEqual(record["version"], 1)
            exported = scene.export_segmentation(segmentation, os.path.join(folder, "nerve.seg.nrrd"))
            self.assertTrue(os.path.isfile(str(exported)))
        logging.info("MedianNerveSeg self-test passed")
        self.delayDisplay("Test passed")

    def test_MedianNerveSegClip(self):
        """A 3-frame clip: segmented in a background job, browsed per frame, CSA per frame in a table and a plot."""
        import tempfile

        import numpy as np
        from PIL import Image

        logic = MedianNerveSegLogic()
        self.assertTrue(logic.ensureDependencies())
        from MedianNerveSegLib.jobs import segmentation_job

        scene = logic.sceneLogic
        with tempfile.TemporaryDirectory() as folder:
            frame = np.asarray(Image.open(self._testImage(folder)).convert("L"))
            clip = os.path.join(folder, "clip.tif")
            frames = [Image.fromarray(np.roll(frame, 15 * k, axis=1)) for k in range(3)]
            frames[0].save(clip, save_all=True, append_images=frames[1:])
            volume = scene.load_image(clip, 0.062)
            self.assertEqual(scene.n_frames(volume), 3)
            paths = scene.export_frames(volume, os.path.join(folder, "frames"))
            job = segmentation_job(paths, os.path.join(folder, "results"), model=DEFAULT_MODEL)
            self.assertEqual(job.wait(300), 0, job.output())
            segmentation, table = scene.import_frame_results(volume, os.path.join(folder, "results"), paths)
            self.assertEqual(table.GetNumberOfRows(), 3)
            chart = scene.csa_chart(table, volume.GetName())
            slicer.modules.plots.logic().ShowChartInLayout(chart)
            browser = slicer.modules.sequences.logic().GetFirstBrowserNodeForProxyNode(volume)
            for k in range(3):
                browser.SetSelectedItemNumber(k)
                self.assertEqual(scene.frame_of(segmentation, volume), k)
                self.assertEqual(int(scene.segment_mask(segmentation, volume).sum()),
                                 int(table.GetTable().GetColumnByName("area_px").GetValue(k)))
        self.delayDisplay("Clip test passed")
