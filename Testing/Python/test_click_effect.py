"""The "Nerve clicks" Segment Editor effect under stand-ins for Slicer's effect base class (no Slicer needed):
what a click in a view does, and that Slicer's scripted-effect loader finds the class."""

import importlib.util
import sys
import types
from types import SimpleNamespace

import pytest

from test_slicer_module_import import MODULE_DIR, WIDGET_FILE, fake_modules

EFFECT_DIR = MODULE_DIR / "SegmentEditorNerveClicksLib"
EFFECT_FILE = EFFECT_DIR / "SegmentEditorEffect.py"
LEFT_PRESS, MOUSE_MOVE = "LeftButtonPressEvent", "MouseMoveEvent"


class AbstractScriptedSegmentEditorEffect:
    """Slicer's base class, as far as the effect uses it (SegmentEditorEffects/AbstractScriptedSegmentEditorEffect.py)."""

    def __init__(self, scriptedEffect):
        self.scriptedEffect = scriptedEffect

    def xyToRas(self, xy, viewWidget):
        return [float(xy[0]), float(xy[1]), 0.0]  # the stand-in view maps xy to RAS as they are


class ScriptedEffect:
    """qSlicerSegmentEditorScriptedEffect: records what the effect asks of it."""

    NotConfirmed, ConfirmedWithoutDialog, ConfirmedWithDialog = 0, 1, 2

    def __init__(self, calls, confirm=1):
        self.calls, self.confirm = calls, confirm

    def confirmCurrentSegmentVisible(self):
        return self.confirm

    def saveStateForUndo(self):
        self.calls.append("undo state")

    def parameterSetNode(self):
        return SimpleNamespace(GetSegmentationNode=lambda: "segmentation", GetSourceVolumeNode=lambda: "volume")

    def addOptionsWidget(self, widget):
        pass


class Interactor:
    def __init__(self, control=False, shift=False, alt=False):
        self.keys = (control, shift, alt)

    def GetControlKey(self):
        return self.keys[0]

    def GetShiftKey(self):
        return self.keys[1]

    def GetAltKey(self):
        return self.keys[2]

    def GetEventPosition(self):
        return (120, 80)


def _view(class_name="qMRMLSliceWidget"):
    return SimpleNamespace(className=lambda: class_name)


@pytest.fixture()
def effect_class(monkeypatch):
    for name, module in fake_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    effects = types.ModuleType("SegmentEditorEffects")
    effects.AbstractScriptedSegmentEditorEffect = AbstractScriptedSegmentEditorEffect
    monkeypatch.setitem(sys.modules, "SegmentEditorEffects", effects)
    sys.modules["vtk"].vtkCommand = SimpleNamespace(LeftButtonPressEvent=LEFT_PRESS, MouseMoveEvent=MOUSE_MOVE)
    calls = []

    def click_at(segmentation, volume, ras, positive):
        calls.append(("click", segmentation, volume, tuple(ras), positive))
        return "1 click(s) on this contour"

    panel = SimpleNamespace(clickAt=click_at)
    module_widget = SimpleNamespace(self=lambda: SimpleNamespace(panel=panel))
    sys.modules["slicer"].modules = SimpleNamespace(
        mediannerveseg=SimpleNamespace(widgetRepresentation=lambda: module_widget))
    spec = importlib.util.spec_from_file_location("SegmentEditorNerveClicksLib", EFFECT_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SegmentEditorEffect, calls


def _effect(effect_class, calls, confirm=1):
    effect = effect_class(ScriptedEffect(calls, confirm))
    effect.setupOptionsFrame()
    return effect


def test_a_left_click_marks_nerve_after_saving_the_undo_state(effect_class):
    cls, calls = effect_class
    effect = _effect(cls, calls)
    assert effect.processInteractionEvents(Interactor(), LEFT_PRESS, _view()) is True  # the click is the effect's
    assert calls == ["undo state", ("click", "segmentation", "volume", (120.0, 80.0, 0.0), True)]
    assert effect.statusLabel.text == "1 click(s) on this contour"


@pytest.mark.parametrize("keys", [dict(control=True), dict(shift=True)])
def test_control_or_shift_click_marks_background(effect_class, keys):
    cls, calls = effect_class
    _effect(cls, calls).processInteractionEvents(Interactor(**keys), LEFT_PRESS, _view())
    assert calls[-1][-1] is False


@pytest.mark.parametrize("interactor, event, view", [(Interactor(), MOUSE_MOVE, _view()),
                                                     (Interactor(alt=True), LEFT_PRESS, _view()),
                                                     (Interactor(), LEFT_PRESS, _view("qMRMLThreeDWidget"))])
def test_other_events_and_views_are_left_to_slicer(effect_class, interactor, event, view):
    cls, calls = effect_class
    assert _effect(cls, calls).processInteractionEvents(interactor, event, view) is False
    assert calls == []


def test_a_hidden_segment_the_user_did_not_confirm_is_not_changed(effect_class):
    cls, calls = effect_class
    assert _effect(cls, calls, confirm=ScriptedEffect.NotConfirmed).processInteractionEvents(
        Interactor(), LEFT_PRESS, _view()) is True
    assert calls == []


def test_slicer_finds_the_effect_class_and_the_panel_activates_it_by_name(effect_class):
    cls, calls = effect_class
    # qSlicerSegmentEditorScriptedEffect::setPythonSource: module = the folder's name, class = the file's name
    package = (EFFECT_DIR / "__init__.py").read_text()
    assert EFFECT_FILE.stem == cls.__name__ == "SegmentEditorEffect" and "from .SegmentEditorEffect import *" in package
    effect = cls(ScriptedEffect(calls))
    assert f'CLICK_EFFECT = "{effect.scriptedEffect.name}"' in WIDGET_FILE.read_text()
    assert (EFFECT_DIR / "SegmentEditorEffect.png").is_file()
    registration = (MODULE_DIR / "MedianNerveSegSlicer" / "registration.py").read_text()
    assert '"SegmentEditorNerveClicksLib", "SegmentEditorEffect.py"' in registration
