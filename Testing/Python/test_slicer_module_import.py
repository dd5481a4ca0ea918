"""MedianNerveSeg.py imported under minimal stand-ins for qt, ctk, slicer and vtk (no Slicer needed).

Catches syntax, name and import errors of the scripted module, checks its classes, that it
imports nothing heavy at import time, that every ``self.ui.<name>`` it uses is a widget of the
.ui file, that every scene-logic call exists in MedianNerveSegSlicer, and that CMakeLists.txt
ships every script and resource.
"""

import ast
import contextlib
import importlib.util
import re
import sys
import types
import typing
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from conftest import REPO

MODULE_DIR = REPO / "MedianNerveSeg"
MODULE_FILE = MODULE_DIR / "MedianNerveSeg.py"
LOGIC_FILE = MODULE_DIR / "MedianNerveSegSlicer" / "logic.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "MedianNerveSeg.ui"
ICON_FILE = MODULE_DIR / "Resources" / "Icons" / "MedianNerveSeg.png"
CMAKE_FILE = MODULE_DIR / "CMakeLists.txt"
HEAVY = ("torch", "monai", "MedianNerveSegLib", "MedianNerveSegSlicer", "PyTorchUtils", "SampleData")


class Anything:
    """Stands for any Qt/Slicer object: every attribute, call and connection succeeds."""

    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        return Anything()

    def __call__(self, *args, **kwargs):
        return Anything()

    def __bool__(self):
        return True


class AnythingModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return Anything


class FakeMRMLNode:
    pass


class Validator:
    def __init__(self, *args):
        self.args = args


class FakeScene:
    StartCloseEvent, EndCloseEvent = 1, 2

    def GetFirstNodeByClass(self, className):
        return None


def parameter_node_wrapper(cls):
    """Like slicer.parameterNodeWrapper: resolves the annotations (NameError if one is wrong), gives defaults."""
    hints = typing.get_type_hints(cls, include_extras=True)
    defaults = {name: cls.__dict__.get(name) for name in hints}

    def __init__(self, parameterNode=None):
        for name, value in defaults.items():
            setattr(self, name, value)

    cls.__init__ = __init__
    cls.parameterHints = hints
    cls.connectGui = lambda self, ui: "gui-tag"
    cls.disconnectGui = lambda self, tag: None
    return cls


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent

    def setup(self):
        self.layout = Anything()

    def resourcePath(self, filename):
        return str(MODULE_DIR / "Resources" / filename)


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        pass

    def getParameterNode(self):
        return FakeMRMLNode()


class ScriptedLoadableModuleTest:
    def delayDisplay(self, message, msec=1000):
        pass


class VTKObservationMixin:
    def __init__(self):
        self.observations = []

    def addObserver(self, obj, event, method, group="none", priority=0.0):
        self.observations.append((obj, event, method))

    def removeObserver(self, obj, event, method):
        pass

    def removeObservers(self, method=None):
        self.observations = []


def ui_widgets():
    """{name: class} of every widget in the .ui file."""
    return {w.get("name"): w.get("class") for w in ET.parse(UI_FILE).getroot().iter("widget")}


def fake_modules():
    """sys.modules entries standing in for Slicer's Python environment."""
    slicer = types.ModuleType("slicer")
    for name in ("vtkMRMLScalarVolumeNode", "vtkMRMLTableNode", "vtkMRMLSegmentationNode", "vtkMRMLMarkupsLineNode"):
        setattr(slicer, name, type(name, (FakeMRMLNode,), {}))
    slicer.mrmlScene = FakeScene()
    slicer.app = Anything()
    slicer.modules = Anything()

    util = types.ModuleType("slicer.util")
    util.VTKObservationMixin = VTKObservationMixin
    util.loadUI = lambda path: Anything()
    util.childWidgetVariables = lambda widget: SimpleNamespace(**{name: Anything() for name in ui_widgets()})

    @contextlib.contextmanager
    def tryWithErrorDisplay(message=None, show=True, waitCursor=False):
        yield  # exceptions propagate, as in Slicer (which shows them first)

    util.tryWithErrorDisplay = tryWithErrorDisplay
    for name in ("errorDisplay", "confirmOkCancelDisplay", "pip_install", "selectModule", "setSliceViewerLayers",
                 "mainWindow", "delayDisplay"):
        setattr(util, name, Anything())

    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text

    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = parameter_node_wrapper
    wrapper.Choice = type("Choice", (Validator,), {})
    wrapper.WithinRange = type("WithinRange", (Validator,), {})

    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest):
        setattr(scripted, cls.__name__, cls)

    slicer.util, slicer.i18n, slicer.parameterNodeWrapper, slicer.ScriptedLoadableModule = util, i18n, wrapper, scripted
    vtk = AnythingModule("vtk")
    vtk.vtkCommand = SimpleNamespace(ModifiedEvent="ModifiedEvent")
    return {"slicer": slicer, "slicer.util": util, "slicer.i18n": i18n, "slicer.parameterNodeWrapper": wrapper,
            "slicer.ScriptedLoadableModule": scripted, "qt": AnythingModule("qt"), "ctk": AnythingModule("ctk"),
            "vtk": vtk, "vtkSlicerSegmentationsModuleMRMLPython": None, "vtkSlicerMarkupsModuleMRMLPython": None}


@pytest.fixture()
def fakes(monkeypatch):
    """The stand-ins in sys.modules (restored afterwards)."""
    modules = fake_modules()
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return modules


def load_module():
    spec = importlib.util.spec_from_file_location("MedianNerveSeg", MODULE_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def module(fakes):
    return load_module()


def test_module_file_is_python39_syntax():
    for path in (MODULE_FILE, *sorted((MODULE_DIR / "MedianNerveSegSlicer").glob("*.py"))):
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))


def test_import_pulls_in_nothing_heavy(fakes, monkeypatch):
    for name in HEAVY:  # None in sys.modules: any import of them at import time raises ImportError
        monkeypatch.setitem(sys.modules, name, None)
    module = load_module()
    assert module.MedianNerveSegLogic.dependenciesReady is not None


def test_module_classes(module):
    assert issubclass(module.MedianNerveSeg, ScriptedLoadableModule)
    assert issubclass(module.MedianNerveSegWidget, ScriptedLoadableModuleWidget)
    assert issubclass(module.MedianNerveSegWidget, VTKObservationMixin)
    assert issubclass(module.MedianNerveSegLogic, ScriptedLoadableModuleLogic)
    assert issubclass(module.MedianNerveSegTest, ScriptedLoadableModuleTest)
    parent = SimpleNamespace()
    module.MedianNerveSeg(parent)
    assert parent.categories == ["Segmentation"]
    assert parent.title and parent.contributors and parent.helpText and parent.acknowledgementText
    hints = module.MedianNerveSegParameterNode.parameterHints
    assert {"inputVolume", "segmentation", "modelName", "device", "spacingMm"} <= set(hints)
    for test in ("runTest", "test_MedianNerveSeg1", "setUp"):
        assert callable(getattr(module.MedianNerveSegTest, test))


def test_widget_setup_runs_under_stand_ins(module):
    widget = module.MedianNerveSegWidget(SimpleNamespace(isEntered=True))
    widget.setup()
    assert isinstance(widget.logic, module.MedianNerveSegLogic)
    assert widget._parameterNode.modelName == module.DEFAULT_MODEL
    assert widget._parameterNode.device == "cpu"
    widget.exit()
    widget.enter()
    widget.cleanup()


def _attribute_chains(tree, prefix):
    """Names used as ``<prefix>.<name>`` (e.g. prefix "self.ui") in a parsed file."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and ast.unparse(node.value) == prefix:
            names.add(node.attr)
    return names


def test_every_ui_name_used_exists_in_the_ui_file():
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    used = _attribute_chains(tree, "self.ui")
    assert used, "the module uses no self.ui widget?"
    missing = used - set(ui_widgets())
    assert not missing, f"widgets used by MedianNerveSeg.py but absent from the .ui file: {sorted(missing)}"


def test_every_scene_logic_call_exists_in_the_slicer_glue():
    module_tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    used = _attribute_chains(module_tree, "self.logic.sceneLogic") | _attribute_chains(module_tree, "scene")
    logic_tree = ast.parse(LOGIC_FILE.read_text(encoding="utf-8"))
    [cls] = [n for n in logic_tree.body if isinstance(n, ast.ClassDef) and n.name == "MedianNerveSegLogic"]
    methods = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
    assert {"load_image", "segment", "measure", "update_table", "save_label", "export_segmentation"} <= used
    assert not used - methods, f"not methods of MedianNerveSegSlicer.MedianNerveSegLogic: {sorted(used - methods)}"


def test_ui_file_is_consistent(module):
    root = ET.parse(UI_FILE).getroot()
    widgets = list(root.iter("widget"))
    names = [w.get("name") for w in widgets]
    assert len(names) == len(set(names)), "duplicate widget names"
    assert root.find("widget").get("class") == "qMRMLWidget"

    hints = module.MedianNerveSegParameterNode.parameterHints
    for w in widgets:  # every SlicerParameterName names a parameter
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                assert prop.findtext("string") in hints, f"{w.get('name')}: unknown parameter {prop.findtext('string')}"

    combos = {w.get("name"): w for w in widgets if w.get("class") == "qMRMLNodeComboBox"}
    connected = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)" and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert set(combos) <= connected, f"node combo boxes without the scene connection: {set(combos) - connected}"
    node_types = {name: [s.text for s in w.find("property[@name='nodeTypes']/stringlist")] for name, w in combos.items()}
    assert node_types["inputVolumeSelector"] == ["vtkMRMLScalarVolumeNode"]
    assert node_types["segmentationSelector"] == ["vtkMRMLSegmentationNode"]

    declared = {c.findtext("class") for c in root.iter("customwidget")}
    custom = {w.get("class") for w in widgets if not w.get("class").startswith("Q")}
    assert custom <= declared, f"custom widgets not declared: {custom - declared}"


def test_cmake_lists_every_script_and_resource():
    text = CMAKE_FILE.read_text(encoding="utf-8")
    assert "slicerMacroBuildScriptedModule" in text and "WITH_GENERIC_TESTS" in text
    listed = set(re.findall(r"^\s+([\w/${}.-]+\.\w+)\s*$", text, flags=re.MULTILINE))
    listed = {item.replace("${MODULE_NAME}", "MedianNerveSeg") for item in listed}
    scripts = {p.relative_to(MODULE_DIR).as_posix() for package in ("MedianNerveSegLib", "MedianNerveSegSlicer")
               for p in (MODULE_DIR / package).rglob("*.py") if "__pycache__" not in p.parts}
    assert not scripts - listed, f"scripts missing from CMakeLists.txt: {sorted(scripts - listed)}"
    resources = {"MedianNerveSeg.py", "Resources/UI/MedianNerveSeg.ui", "Resources/Icons/MedianNerveSeg.png"}
    for model in (MODULE_DIR / "MedianNerveSegLib" / "pretrained").iterdir():  # every shipped model
        resources |= {f"MedianNerveSegLib/pretrained/{model.name}/{name}" for name in ("model.pt", "model.json",
                                                                                      "MODEL_CARD.md")}
    assert resources <= listed
    for item in listed:
        assert (MODULE_DIR / item).is_file(), f"CMakeLists.txt lists a missing file: {item}"


def test_icon_is_a_128_px_png():
    with Image.open(ICON_FILE) as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)


def test_sample_data_is_the_dataset_readme_image(module, monkeypatch):
    registered = {}
    sample_data = types.ModuleType("SampleData")
    sample_data.SampleDataLogic = SimpleNamespace(registerCustomSampleDataSource=lambda **kw: registered.update(kw))
    monkeypatch.setitem(sys.modules, "SampleData", sample_data)
    module.registerSampleData()
    assert registered["uris"].endswith("Dataset/Images/Pz001-001.bmp")
    readme = (REPO.parent / "shared" / "data" / "median-nerve-us" / "README.md")
    if readme.is_file():  # the checksum the dataset's README publishes for that file
        assert registered["checksums"].split(":")[1] in readme.read_text()
    assert Path(registered["thumbnailFileName"]).is_file()


class ProgressBar:
    def __init__(self):
        self.value, self.maximum, self.visible = None, None, False

    def setValue(self, value):
        self.value = value

    def setMaximum(self, maximum):
        self.maximum = maximum

    def show(self):
        self.visible = True

    def hide(self):
        self.visible = False


def test_job_monitor_reports_progress_then_the_exit_code(module, dataset_dir, tmp_path):
    from MedianNerveSegLib.jobs import segmentation_job, segmentation_progress

    images = sorted((dataset_dir / "images").iterdir())[:2]
    job = segmentation_job(images, tmp_path / "out", spacing_mm=0.062)
    bar, label, ended = ProgressBar(), SimpleNamespace(text=""), []
    progress = lambda: (segmentation_progress(tmp_path / "out", 2)["done"], 2, "segmenting")
    monitor = module.JobMonitor(job, progress, ended.append, bar, label)
    assert bar.visible
    job.wait(180)
    monitor._poll()  # what the QTimer calls
    assert ended == [0] and (bar.value, bar.maximum, bar.visible) == (2, 2, False) and label.text == "segmenting"


def test_job_monitor_cancel_stops_the_process(module, tmp_path):
    from MedianNerveSegLib.jobs import BackgroundJob

    job = BackgroundJob(["train", "--dataset", str(tmp_path), "--out", str(tmp_path / "m")], tmp_path / "log").start()
    cleaned = []
    monitor = module.JobMonitor(job, lambda: (0, 0, ""), lambda code: None, ProgressBar(), SimpleNamespace(text=""),
                                onCancel=lambda: cleaned.append(True))
    monitor.cancel()
    assert job.poll() is not None and cleaned == [True]


def test_comparison_html_lists_each_model(module, tmp_path):
    path = tmp_path / "comparison.json"
    path.write_text('[{"model": "before", "n_images": 4, "dice_mean": 0.9, "csa_mae_mm2": 1.0, "csa_icc": 0.8, '
                    '"found_rate": 1.0}, {"model": "after", "n_images": 4, "dice_mean": 0.93, "csa_mae_mm2": null, '
                    '"csa_icc": 0.9, "found_rate": 1.0}]')
    html = module.comparisonHtml(path)
    assert "<td>before</td><td>0.900</td><td>1.00</td>" in html
    assert "<td>after</td><td>0.930</td><td>n/a</td>" in html and "<th>CSA MAE (mm^2)</th>" in html and html.endswith("4 validation images")
