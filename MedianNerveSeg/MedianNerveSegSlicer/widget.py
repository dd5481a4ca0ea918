"""The module's panel: the .ui wired to the parameter node, the scene logic and the background tasks.

Imports only Qt and Slicer at import time: the core (MedianNerveSegLib) and the scene logic are
imported after the dependency check, inside the handlers. Long work runs as tasks
(:mod:`MedianNerveSegLib.tasks`, :mod:`MedianNerveSegSlicer.tasks`) that a :class:`TaskMonitor`
polls from a QTimer; cancelling one, or closing the module, ends its whole process tree.
"""

import importlib.util
import logging
import pathlib
import time
from typing import Callable

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.util import VTKObservationMixin

IMAGE_FILTER = ("Ultrasound images (*.png *.bmp *.jpg *.jpeg *.tif *.tiff *.nrrd *.nhdr *.nii *.nii.gz *.mha *.mhd "
                "*.dcm);;All files (*)")
LOW_CONFIDENCE = 0.7
LIVE_DELAY_MS = 150  # a brush stroke fires a burst of events: measure once it has ended
CLICK_EFFECT = "Nerve clicks"  # the Segment Editor effect of SegmentEditorNerveClicksLib
EDITOR_NODE_TAG = "MedianNerveSeg"  # the embedded Segment Editor's own parameter node, not the Segment Editor module's


def registerEffect(path: str) -> None:
    """Register a scripted Segment Editor effect (as Slicer's scripted effect template does): ``path`` is its
    file, whose folder's name and file name Slicer loads it by."""
    import qSlicerSegmentationsEditorEffectsPythonQt as effects

    effect = effects.qSlicerSegmentEditorScriptedEffect(None)
    effect.setPythonSource(path.replace("\\", "/"))
    effect.self().register()


class TaskMonitor:
    """Polls a task from a QTimer: progress bar and status text while it runs, ``ended(task)`` once when it
    has ended (succeeded, failed or cancelled). Slicer stays responsive: the work is in another process."""

    def __init__(self, task, progressBar, statusLabel, ended: Callable, intervalMs: int = 500) -> None:
        self.task, self._progressBar, self._statusLabel, self._ended = task, progressBar, statusLabel, ended
        self._progressBar.setValue(0)
        self._progressBar.show()
        self._timer = qt.QTimer()
        self._timer.setInterval(intervalMs)
        self._timer.connect("timeout()", self._poll)
        self._timer.start()

    def _poll(self) -> None:
        self.task.poll()
        progress = self.task.progress()
        self._progressBar.setMaximum(progress.total)  # 0: a busy indicator
        self._progressBar.setValue(progress.done)
        self._statusLabel.text = progress.text
        if not self.task.active:
            self._finish()

    def _finish(self) -> None:
        self._timer.stop()
        self._progressBar.hide()
        self._ended(self.task)

    def cancel(self) -> None:
        """End the task's processes, then its clean-up, then ``ended`` (with the task CANCELLED)."""
        if self.task.active:
            self.task.cancel()
            self._finish()


def comparisonHtml(rows) -> str:
    """The rows of the core's ``compare`` as a small HTML table (titles and digits from the metrics table)."""
    import html

    from MedianNerveSegLib.metrics import format_value, heading

    keys = ("dice_mean", "csa_mae_mm2", "csa_icc", "found_rate")
    lines = ["<table><tr><th>model</th>" + "".join(f"<th>{html.escape(heading(k))}</th>" for k in keys) + "</tr>"]
    lines += ["<tr><td>" + html.escape(str(r["model"])) + "</td>"
              + "".join(f"<td>{format_value(k, r.get(k))}</td>" for k in keys) + "</tr>" for r in rows]
    return "".join(lines) + f"</table>{rows[0]['n_images']} validation images"


class MedianNerveSegPanel(VTKObservationMixin):
    """Everything the module shows. ``moduleWidget`` is the scripted module's widget (its layout,
    resources and whether the module is entered); ``logic`` the module logic (parameter node,
    dependencies, segmenter cache, scene logic)."""

    def __init__(self, moduleWidget, logic) -> None:
        VTKObservationMixin.__init__(self)
        self.moduleWidget, self.logic = moduleWidget, logic
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._liveHandle = None
        self._liveNodes = (None, None)
        self._pendingMeasure = None
        self._clipMonitor = None  # TaskMonitor of "Segment all frames"
        self._trainingMonitor = None  # TaskMonitor of Train or Compare
        self._trained = None  # (model before, model folder after) of the last finished training

        uiWidget = slicer.util.loadUI(moduleWidget.resourcePath("UI/MedianNerveSeg.ui"))
        moduleWidget.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.editor = slicer.qMRMLSegmentEditorWidget()  # as Slicer's Segment Editor module makes it
        self.editor.setMaximumNumberOfUndoStates(10)
        self.editor.setMRMLScene(slicer.mrmlScene)
        self.ui.correctCollapsibleButton.layout().addWidget(self.editor)

        self._liveTimer = qt.QTimer()
        self._liveTimer.setSingleShot(True)
        self._liveTimer.setInterval(LIVE_DELAY_MS)
        self._liveTimer.connect("timeout()", self._runPendingMeasure)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        for button, handler in (
                (self.ui.loadImageButton, self.onLoadImage), (self.ui.segmentButton, self.onSegment),
                (self.ui.editButton, self.onEdit), (self.ui.clickFixButton, self.onClickFix),
                (self.ui.classifyButton, self.onClassify),
                (self.ui.measureButton, self.onMeasure),
                (self.ui.calibrateSpacingButton, self.onCalibrateSpacing), (self.ui.placeLineButton, self.onPlaceLine),
                (self.ui.calibrateLineButton, self.onCalibrateLine), (self.ui.saveLabelButton, self.onSaveLabel),
                (self.ui.exportButton, self.onExport), (self.ui.dicomExportButton, self.onDicomExport),
                (self.ui.reportButton, self.onReport), (self.ui.segmentAllFramesButton, self.onSegmentAllFrames),
                (self.ui.cancelJobButton, self.onCancelSegmentation), (self.ui.trainButton, self.onTrain),
                (self.ui.stopTrainingButton, self.onStopTraining), (self.ui.compareButton, self.onCompare)):
            button.connect("clicked(bool)", handler)
        self.ui.modelComboBox.currentTextChanged.connect(self.onModelChanged)
        self.fillModelComboBox()
        self.initializeParameterNode()

    # ------------------------------------------------------------------ module life

    def cleanup(self) -> None:
        """Module closed: stop observing, end every running task's processes."""
        self._stopLiveMeasurement()
        for monitor in (self._clipMonitor, self._trainingMonitor):
            if monitor:
                monitor.cancel()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        self.editor.installKeyboardShortcuts()

    def exit(self) -> None:
        self.editor.setActiveEffect(None)
        self.editor.uninstallKeyboardShortcuts()
        self.editor.removeViewObservations()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self._stopLiveMeasurement()
        self.editor.setSegmentationNode(None)
        self.editor.removeViewObservations()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.moduleWidget.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode) -> None:
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
        if self._convertColourInput():
            return  # setting the grey volume modified the parameter node again
        hasVolume = bool(p and p.inputVolume)
        hasSegmentation = bool(hasVolume and p.segmentation)
        segmenting, training = bool(self._clipMonitor), bool(self._trainingMonitor)
        self.ui.segmentButton.enabled = hasVolume and not segmenting
        self.ui.segmentAllFramesButton.enabled = (hasVolume and not segmenting
                                                  and self.logic.dependenciesReady()
                                                  and self.logic.sceneLogic.n_frames(p.inputVolume) > 1)
        self.ui.cancelJobButton.enabled = segmenting
        self.ui.trainButton.enabled = bool(p and str(p.storeFolder) not in ("", ".")) and not training
        self.ui.stopTrainingButton.enabled = training
        self.ui.compareButton.enabled = self._trained is not None and not training
        for button in (self.ui.editButton, self.ui.clickFixButton, self.ui.measureButton, self.ui.saveLabelButton,
                       self.ui.exportButton, self.ui.dicomExportButton):
            button.enabled = hasSegmentation
        self.ui.reportButton.enabled = bool(p and p.table)
        self.ui.classifyButton.enabled = hasVolume
        self.ui.calibrateSpacingButton.enabled = hasVolume and p.spacingMm > 0
        self.ui.calibrateLineButton.enabled = hasVolume and bool(p.calibrationLine) and p.calibrationLengthMm > 0
        if p and self.ui.modelComboBox.currentText != p.modelName:
            self.ui.modelComboBox.setCurrentText(p.modelName)
        self._showSpacingSource()
        self._updateLiveMeasurement()

    def _convertColourInput(self) -> bool:
        """A colour (vector) volume selected in the image selector becomes its grey scalar volume."""
        p = self._parameterNode
        volume = p.inputVolume if p else None
        if volume is None or not volume.IsA("vtkMRMLVectorVolumeNode") or not self.logic.dependenciesReady():
            return False
        scalar = self.logic.sceneLogic.scalar_volume(volume)
        if scalar is volume:
            return False
        p.inputVolume = scalar
        slicer.util.setSliceViewerLayers(background=scalar, fit=True)
        return True

    # ------------------------------------------------------------------ models and dependencies

    def fillModelComboBox(self) -> None:
        """Installed models (needs torch: until the dependencies are installed only the default is listed)."""
        names = [self.logic.DEFAULT_MODEL]
        if importlib.util.find_spec("torch") is not None:
            try:
                from MedianNerveSegLib import zoo

                names = [zoo.model_name(folder) for folder in zoo.installed_segmenters()] or names
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

    # ------------------------------------------------------------------ image and segmentation

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
            browser = self.logic.sceneLogic.browser_of(volume)
            if browser is not None:  # Slicer shows the toolbar only for scenes it imports itself
                slicer.modules.sequences.showSequenceBrowser(browser)

    def onSegment(self) -> None:
        """Segment the current frame, synchronously under a wait cursor (well under a second on a CPU)."""
        if not self.logic.ensureDependencies():
            return
        self.fillModelComboBox()
        self._convertColourInput()
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Segmentation failed."), waitCursor=True):
            segmenter = self.logic.segmenter(p.modelName, p.device, p.runtime)
            frame = self.logic.sceneLogic.current_frame(p.inputVolume)
            segmentation, prediction = self.logic.sceneLogic.segment(p.inputVolume, segmenter, frame, p.segmentation)
            p.segmentation = segmentation
            self._showPrediction(prediction)
            self.onMeasure()

    def onSegmentAllFrames(self) -> None:
        """Every frame of the clip in a background task; then a per-frame segmentation browsed with the clip,
        a CSA-per-frame table and its plot."""
        if not self.logic.ensureDependencies():
            return
        from MedianNerveSegSlicer.tasks import ClipSegmentationTask

        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Could not start the segmentation."), waitCursor=True):
            task = ClipSegmentationTask(self.logic.sceneLogic, p.inputVolume, p.modelName, p.device,
                                        low_confidence=LOW_CONFIDENCE, runtime=p.runtime)
            self._clipMonitor = TaskMonitor(task, self.ui.jobProgressBar, self.ui.statusLabel, self._onClipTaskEnded)
        self._onParameterNodeModified()

    def _onClipTaskEnded(self, task) -> None:
        from MedianNerveSegLib.tasks import TaskState

        self._clipMonitor = None
        p = self._parameterNode
        if task.state is TaskState.SUCCEEDED:
            p.segmentation, p.table = task.result.segmentation, task.result.table
            self._showFrameFlags(task.result.flags, len(task.frames))
            chart = self.logic.sceneLogic.csa_chart(task.result.table, p.inputVolume.GetName())
            slicer.modules.plots.logic().ShowChartInLayout(chart)
        elif task.state is TaskState.FAILED:
            slicer.util.errorDisplay(_("Segmentation of the frames failed."), detailedText=task.error)
        else:
            self.ui.statusLabel.text = _("Segmentation cancelled")
        self._onParameterNodeModified()

    def onCancelSegmentation(self) -> None:
        if self._clipMonitor:
            self._clipMonitor.cancel()

    def _showFrameFlags(self, flags, frameCount: int) -> None:
        """Frames without a nerve or with a low confidence, named in the status line (never hidden)."""
        frame = lambda names: ", ".join(str(int(name[5:9])) for name in names)  # "frame0003.nrrd" -> 3
        text = _("{n} frames segmented.").format(n=frameCount - len(flags["failed"]))
        if flags["failed"]:
            text += " " + _("FAILED frames {frames}.").format(frames=frame(flags["failed"]))
        if flags["not_found"]:
            text += " " + _("NOT FOUND in frames {frames}.").format(frames=frame(flags["not_found"]))
        if flags["low_confidence"]:
            text += " " + _("Low confidence (check the contour) in frames {frames}.").format(
                frames=frame(flags["low_confidence"]))
        self.ui.statusLabel.text = text

    # ------------------------------------------------------------------ training

    def onTrain(self) -> None:
        """Train (fine-tune the selected model, or a new architecture) on the dataset store in a background
        task; the new model joins the model list when it ends."""
        if not self.logic.ensureDependencies():
            return
        from MedianNerveSegLib.tasks import TrainingTask
        from MedianNerveSegLib.zoo import bundle_dir, user_models_dir

        p = self._parameterNode
        store = pathlib.Path(str(p.storeFolder))
        if not (store / "datalist.json").is_file():
            slicer.util.errorDisplay(_("{folder} is not a dataset store yet: save some training labels there "
                                       "first.").format(folder=store))
            return
        architecture = self.ui.trainStartComboBox.currentData or None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"{architecture}-{stamp}" if architecture else f"{p.modelName}-ft-{stamp}"
        before = p.modelName
        with slicer.util.tryWithErrorDisplay(_("Could not start the training."), waitCursor=True):
            task = TrainingTask(store, user_models_dir() / name, p.trainEpochs,
                                bundle=bundle_dir(architecture) if architecture else None,
                                init_weights=None if architecture else p.modelName, device=p.device,
                                architecture=architecture, name=name)
            self._trainingMonitor = TaskMonitor(task, self.ui.trainProgressBar, self.ui.trainStatusLabel,
                                                lambda ended: self._onTrainingEnded(ended, before, name))
        self._onParameterNodeModified()

    def _onTrainingEnded(self, task, before: str, name: str) -> None:
        from MedianNerveSegLib.tasks import TaskState

        self._trainingMonitor = None
        if task.state is TaskState.SUCCEEDED:
            self._trained = (before, task.result)
            self.fillModelComboBox()
            self.ui.trainStatusLabel.text = _("New model {name} is in the Model list ({folder}). "
                                              "Compare it with {before} on the validation patients.").format(
                name=name, folder=task.result, before=before)
        elif task.state is TaskState.FAILED:
            slicer.util.errorDisplay(_("Training failed."), detailedText=task.error)
        else:
            self.ui.trainStatusLabel.text = _("Training cancelled")
        self._onParameterNodeModified()

    def onStopTraining(self) -> None:
        """End training after the current epoch; the model trained so far is saved."""
        if self._trainingMonitor:
            self._trainingMonitor.task.stop()

    def onCompare(self) -> None:
        """Before/after on the store's validation patients, in the background."""
        from MedianNerveSegLib.tasks import ComparisonTask, TaskState

        p = self._parameterNode
        before, after = self._trained
        out = after / "comparison"

        def ended(task) -> None:
            self._trainingMonitor = None
            if task.state is TaskState.SUCCEEDED:
                self.ui.comparisonLabel.text = comparisonHtml(task.result)
                self.ui.trainStatusLabel.text = _("Compared on the validation patients ({folder})").format(folder=out)
            elif task.state is TaskState.FAILED:
                slicer.util.errorDisplay(_("Comparison failed."), detailedText=task.error)
            self._onParameterNodeModified()

        with slicer.util.tryWithErrorDisplay(_("Could not start the comparison."), waitCursor=True):
            task = ComparisonTask(str(p.storeFolder), [before, after], out, device=p.device)
            self._trainingMonitor = TaskMonitor(task, self.ui.trainProgressBar, self.ui.trainStatusLabel, ended)
        self._onParameterNodeModified()

    # ------------------------------------------------------------------ correct, measure, calibrate, save

    def onEdit(self, effect: str = "Paint") -> None:
        """The embedded Segment Editor on the nerve segment, ``effect`` active; the live values stay in view above it."""
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Could not start editing.")):
            editorNode = self.logic.sceneLogic.segment_editor_node(p.segmentation, p.inputVolume, EDITOR_NODE_TAG)
            self.editor.setMRMLSegmentEditorNode(editorNode)
            self.editor.setSegmentationNode(p.segmentation)
            self.editor.setSourceVolumeNode(p.inputVolume)
            self.editor.setCurrentSegmentID(self.logic.sceneLogic.nerve_segment_id(p.segmentation))
            self.ui.correctCollapsibleButton.collapsed = False
            self.editor.setActiveEffectByName(effect)

    def onClickFix(self) -> None:
        """The embedded Segment Editor with the "Nerve clicks" effect (SegmentEditorNerveClicksLib) active."""
        if self.logic.ensureDependencies():
            self.onEdit(CLICK_EFFECT)

    def clickAt(self, segmentationNode, volumeNode, ras, positive: bool) -> str:
        """A click of the "Nerve clicks" effect: refine the nerve segment (the live CSA follows); the status text."""
        if not self.logic.ensureDependencies():
            return _("The click model needs PyTorch and MONAI: install them first.")
        refiner = self.logic.refiner(self._parameterNode.device)
        refinement = self.logic.sceneLogic.click_at(segmentationNode, volumeNode, refiner, ras, positive)
        m = refinement.measurement
        csa = (_("{area:.2f} mm²").format(area=m.area_mm2) if m.area_mm2 is not None
               else _("{area} px (spacing unknown)").format(area=m.area_px))
        return _("{n} click(s) on this contour: CSA {csa} ({ms:.0f} ms, {model})").format(
            n=len(refinement.clicks), csa=csa, ms=refinement.milliseconds, model=refiner.model_id)

    def onClassify(self) -> None:
        """The shipped CTS classifier on the frame shown (a 15 mm crop around the nerve it finds), its probability,
        and the map of where it looked over the image (foreground layer). Research use, never a diagnosis."""
        if not self.logic.ensureDependencies():
            return
        p, method = self._parameterNode, self.ui.explainMethodComboBox.currentText
        with slicer.util.tryWithErrorDisplay(_("Classification failed."), waitCursor=True):
            classifier = self.logic.classifier(p.device)
            prediction, mapNode = self.logic.sceneLogic.classify(p.inputVolume, classifier, method)
            slicer.util.setSliceViewerLayers(foreground=mapNode, foregroundOpacity=0.5)
            self.ui.classifyResultLabel.text = _(
                "P({positive}) = {p:.2f}: {label} ({model}; labels: {source}). Research use, not a diagnosis.").format(
                positive=classifier.settings.classes[1], p=prediction.probability, label=prediction.label,
                model=classifier.model_id, source=classifier.settings.label_source)

    def onMeasure(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Measurement failed.")):
            self._showMeasurement(self.logic.sceneLogic.measure(p.segmentation, p.inputVolume))

    def onCalibrateSpacing(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Calibration failed."), waitCursor=True):
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
        with slicer.util.tryWithErrorDisplay(_("Calibration failed."), waitCursor=True):
            row, col = self.logic.sceneLogic.calibrate_from_line(p.inputVolume, p.calibrationLine, p.calibrationLengthMm)
            self.ui.statusLabel.text = _("Spacing set to {row:.4f} x {col:.4f} mm/pixel").format(row=row, col=col)
            self._afterCalibration()

    def onSaveLabel(self) -> None:
        p = self._parameterNode
        folder = str(p.storeFolder)
        if folder in ("", "."):
            slicer.util.errorDisplay(_("Choose the training dataset folder first (a new or empty folder, or an "
                                       "existing store)."))
            return
        if not slicer.util.confirmOkCancelDisplay(
                _("Save this image and its corrected nerve contour as a training label in\n{folder}?").format(
                    folder=folder)):
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
            self.ui.statusLabel.text = _("Exported {path}").format(
                path=self.logic.sceneLogic.export_segmentation(p.segmentation, path))

    def _side(self) -> str:
        return "" if self._parameterNode.side == "unknown" else self._parameterNode.side

    def onDicomExport(self) -> None:
        """A DICOM SEG and SR of the shown image's nerve, for an image that came from a DICOM file."""
        p = self._parameterNode
        if importlib.util.find_spec("highdicom") is None:  # not among the first-use packages: it may update pydicom
            if not slicer.util.confirmOkCancelDisplay(_("DICOM export needs the highdicom package, which may update "
                                                        "pydicom. Install it now?")):
                return
            with slicer.util.tryWithErrorDisplay(_("Installing highdicom failed."), waitCursor=True):
                slicer.util.pip_install("highdicom")
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Folder for the DICOM SEG and SR"))
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay(_("DICOM export failed."), waitCursor=True):
            written = self.logic.sceneLogic.export_dicom(p.segmentation, p.inputVolume, folder,
                                                         self._dicomSource(p.inputVolume), self._side(), p.level)
            self.ui.statusLabel.text = _("Wrote {files}").format(files=", ".join(path.name for path in written))

    @staticmethod
    def _dicomSource(volume):
        """The file of a volume the DICOM module loaded (its instance UID in the DICOM database), else None."""
        uids = (volume.GetAttribute("DICOM.instanceUIDs") or "").split()
        return slicer.dicomDatabase.fileForInstance(uids[0]) if len(uids) == 1 and slicer.dicomDatabase else None

    def onReport(self) -> None:
        """The measurement table as a CSA report per patient and side (a new folder in the chosen one)."""
        from MedianNerveSegLib.report import write_report_rows

        p = self._parameterNode
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Folder for the report"))
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay(_("Writing the report failed; nothing was overwritten."),
                                             waitCursor=True):
            out = pathlib.Path(folder) / f"MedianNerveSeg report {time.strftime('%Y%m%d-%H%M%S')}"
            report = write_report_rows(self.logic.sceneLogic.table_results(p.table), out)
            self.ui.saveStatusLabel.text = _("Report of {n} patient sides in {folder} (research use, not a "
                                             "diagnosis)").format(n=len(report.sides), folder=out)
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(out / "report.html")))

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
        self.ui.perimeterLabel.text = f"{perimeter:.2f} {'mm' if measurement.spacing_known else 'px'}"
        self.ui.circularityLabel.text = "-" if measurement.circularity is None else f"{measurement.circularity:.3f}"
        self.ui.flatteningLabel.text = "-" if measurement.flattening_ratio is None else f"{measurement.flattening_ratio:.2f}"
        self.ui.componentsLabel.text = str(measurement.n_components)
        p = self._parameterNode
        interval = self.logic.sceneLogic.ai_interval(p.segmentation, p.inputVolume)
        note = "" if measurement.spacing_known else _(" (spacing unknown)")
        if interval is not None:  # the AI's contour, unedited: how sure the network was of it
            note += _(" (range {low:.1f}-{high:.1f})").format(low=interval.low_mm2, high=interval.high_mm2)
            note += _("  REVIEW: the network is unsure of this contour, check it") if interval.needs_review else ""
        self.ui.areaLabel.text = f"{area:.2f} {unit}{note}"
        if not p.table:
            p.table = self.logic.sceneLogic.measurement_table()
        frame = self.logic.sceneLogic.frame_of(p.segmentation, p.inputVolume)
        isClip = self.logic.sceneLogic.n_frames(p.inputVolume) > 1
        name = p.inputVolume.GetName() + (f" frame {frame}" if isClip else "")
        self.logic.sceneLogic.update_table(p.table, measurement, name, frame if isClip else None, self._side(), p.level,
                                           interval)

    def _updateLiveMeasurement(self) -> None:
        """Observe the selected segmentation so that every edit re-measures (when enabled)."""
        p = self._parameterNode
        nodes = (p.segmentation, p.inputVolume) if p and p.liveMeasure and p.segmentation and p.inputVolume else (None, None)
        if nodes == self._liveNodes:
            return
        self._stopLiveMeasurement()
        if nodes[0] is not None and self.logic.dependenciesReady():
            self._liveHandle = self.logic.sceneLogic.observe_live_measurement(
                nodes[0], nodes[1], self._showMeasurement, schedule=self._scheduleMeasure)
            self._liveNodes = nodes

    def _scheduleMeasure(self, measure: Callable[[], None]) -> None:
        self._pendingMeasure = measure
        self._liveTimer.start()  # restarted by every event of the stroke

    def _runPendingMeasure(self) -> None:
        measure, self._pendingMeasure = self._pendingMeasure, None
        if measure is not None:
            with slicer.util.tryWithErrorDisplay(_("Measurement failed.")):
                measure()

    def _stopLiveMeasurement(self) -> None:
        self._liveTimer.stop()
        self._pendingMeasure = None
        if self._liveHandle is not None:
            self.logic.sceneLogic.remove_observer(self._liveHandle)
        self._liveHandle, self._liveNodes = None, (None, None)
