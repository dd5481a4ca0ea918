"""The "Nerve clicks" Segment Editor effect: a click on the image refines the median nerve contour.

Left click: nerve (+) where the contour missed some; Ctrl or Shift + left click: background (-) where it
took some in. Each click refines the "Median nerve" segment at once with MedianNerveSeg's click model,
given the clicks that made the current contour (MedianNerveSegLib.refine.ClickSession); Undo works as for
any effect, and the module's live CSA updates. The work is the scene logic's (NerveSceneLogic.click_at):
this file only turns a click in a slice view into a position, as Slicer's Islands effect does. It is
registered by the MedianNerveSeg module (as Slicer's scripted effect template registers its effect).
"""

import os

import qt
import vtk

import slicer
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """Refine the median nerve segment with positive and negative clicks."""

    def __init__(self, scriptedEffect):
        scriptedEffect.name = "Nerve clicks"  # no tr: modules find effects by name
        scriptedEffect.title = "Nerve clicks"
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = False  # clicks on an empty segmentation draw the nerve from nothing
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def icon(self):
        iconPath = os.path.join(os.path.dirname(__file__), "SegmentEditorEffect.png")
        return qt.QIcon(iconPath) if os.path.exists(iconPath) else qt.QIcon()

    def helpText(self):
        return ("<html>Fix the median nerve contour with clicks (MedianNerveSeg click model).<br>"
                "<b>Left click</b>: nerve the contour missed. <b>Ctrl or Shift + left click</b>: background it "
                "took in. Each click refines the <i>Median nerve</i> segment at once; Undo takes a click back.")

    def setupOptionsFrame(self):
        self.statusLabel = qt.QLabel("Click on the image: left = nerve, Ctrl/Shift + left = background.")
        self.statusLabel.wordWrap = True
        self.scriptedEffect.addOptionsWidget(self.statusLabel)

    def createCursor(self, widget):
        return slicer.util.mainWindow().cursor

    def processInteractionEvents(self, callerInteractor, eventId, viewWidget):
        if viewWidget.className() != "qMRMLSliceWidget" or eventId != vtk.vtkCommand.LeftButtonPressEvent:
            return False
        if callerInteractor.GetAltKey():
            return False
        confirmed = self.scriptedEffect.confirmCurrentSegmentVisible()
        if confirmed in (self.scriptedEffect.NotConfirmed, self.scriptedEffect.ConfirmedWithDialog):
            return True  # as the Islands effect: the dialog took the button release
        positive = not (callerInteractor.GetControlKey() or callerInteractor.GetShiftKey())
        parameters = self.scriptedEffect.parameterSetNode()
        module = slicer.modules.mediannerveseg.widgetRepresentation().self()
        ras = self.xyToRas(callerInteractor.GetEventPosition(), viewWidget)
        self.scriptedEffect.saveStateForUndo()
        with slicer.util.tryWithErrorDisplay("Refining the nerve contour failed.", waitCursor=True):
            status = module.panel.clickAt(parameters.GetSegmentationNode(), parameters.GetSourceVolumeNode(),
                                          ras, positive)
            self.statusLabel.text = status
        return True
