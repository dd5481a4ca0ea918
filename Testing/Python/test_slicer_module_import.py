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
WIDGET_FILE = MODULE_DIR / "MedianNerveSegSlicer" / "widget.py"
GLUE_FILES = (MODULE_FILE, WIDGET_FILE, *(MODULE_DIR / "MedianNerveSegSlicer" / f for f in ("tasks.py", "selftest.py")))
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


class FakeModules(Anything):
    """slicer.modules: any module, and no dicomPlugins until a module registers one (as in Slicer)."""

    def __getattr__(self, name):
        if name == "dicomPlugins":
            raise AttributeError(name)
        return Anything()


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
    slicer.modules = FakeModules()
    slicer.qMRMLSegmentEditorWidget = Anything
    slicer.vtkMRMLLayoutNode = Anything()

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
    sys.path.insert(0, str(MODULE_DIR)) if str(MODULE_DIR) not in sys.path else None
    for name in [m for m in sys.modules if m.startswith("MedianNerveSegSlicer.widget")]:
        del sys.modules[name]  # imported again under these stand-ins
    spec = importlib.util.spec_from_file_location("MedianNerveSeg", MODULE_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def module(fakes):
    return load_module()


def test_module_file_is_python39_syntax():
    for path in (MODULE_FILE, *sorted((MODULE_DIR / "MedianNerveSegSlicer").glob("*.py")),
                 *sorted((MODULE_DIR / "SegmentEditorNerveClicksLib").glob("*.py"))):
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))


def test_import_pulls_in_nothing_heavy(fakes, monkeypatch):
    for name in HEAVY:  # None in sys.modules: any import of them at import time raises ImportError
        monkeypatch.setitem(sys.modules, name, None)
    module = load_module()
    assert module.MedianNerveSegLogic.dependenciesReady is not None


def test_module_classes(module):
    assert issubclass(module.MedianNerveSeg, ScriptedLoadableModule)
    assert issubclass(module.MedianNerveSegWidget, ScriptedLoadableModuleWidget)
    assert issubclass(module.MedianNerveSegLogic, ScriptedLoadableModuleLogic)
    assert issubclass(module.MedianNerveSegTest, ScriptedLoadableModuleTest)
    parent = SimpleNamespace()
    module.MedianNerveSeg(parent)
    assert parent.categories == ["Segmentation"]
    # the DICOM browser's loader of our SEGs, registered as Slicer's own plugins are (called with no arguments)
    from MedianNerveSegSlicer import registration

    assert sys.modules["slicer"].modules.dicomPlugins["MedianNerveSegSEGPlugin"] is registration.nerve_seg_plugin
    assert parent.title and parent.contributors and parent.helpText and parent.acknowledgementText
    hints = module.MedianNerveSegParameterNode.parameterHints
    assert {"inputVolume", "segmentation", "modelName", "device", "spacingMm"} <= set(hints)
    for test in ("runTest", "setUp"):
        assert callable(getattr(module.MedianNerveSegTest, test))


def test_widget_setup_runs_under_stand_ins(module):
    widget = module.MedianNerveSegWidget(SimpleNamespace(isEntered=True))
    widget.setup()
    assert isinstance(widget.logic, module.MedianNerveSegLogic)
    assert widget.panel._parameterNode.modelName == module.DEFAULT_MODEL
    assert widget.panel._parameterNode.device == "cpu"
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
    tree = ast.parse(WIDGET_FILE.read_text(encoding="utf-8"))
    used = _attribute_chains(tree, "self.ui")
    assert used, "the panel uses no self.ui widget?"
    missing = used - set(ui_widgets())
    assert not missing, f"widgets used by the panel but absent from the .ui file: {sorted(missing)}"


def test_the_module_file_is_thin():
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    assert not _attribute_chains(tree, "self.ui") and not _attribute_chains(tree, "self.logic.sceneLogic")
    assert len(MODULE_FILE.read_text(encoding="utf-8").splitlines()) < 300


def test_every_scene_logic_call_exists_in_the_slicer_glue():
    used = set()
    for path in GLUE_FILES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for prefix in ("self.logic.sceneLogic", "scene", "self.scene_logic", "scene_logic"):
            used |= _attribute_chains(tree, prefix)
    logic_tree = ast.parse(LOGIC_FILE.read_text(encoding="utf-8"))
    [cls] = [n for n in logic_tree.body if isinstance(n, ast.ClassDef) and n.name == "NerveSceneLogic"]
    methods = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
    assert {"load_image", "segment", "measure", "update_table", "save_label", "export_segmentation",
            "scalar_volume", "browser_of", "export_frames", "import_frame_results"} <= used
    assert not used - methods, f"not methods of MedianNerveSegSlicer.NerveSceneLogic: {sorted(used - methods)}"


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
    assert node_types["inputVolumeSelector"] == ["vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode"]  # RGB too
    assert node_types["segmentationSelector"] == ["vtkMRMLSegmentationNode"]

    declared = {c.findtext("class") for c in root.iter("customwidget")}
    custom = {w.get("class") for w in widgets if not w.get("class").startswith("Q")}
    assert custom <= declared, f"custom widgets not declared: {custom - declared}"


def test_cmake_lists_every_script_and_resource():
    text = CMAKE_FILE.read_text(encoding="utf-8")
    assert "slicerMacroBuildScriptedModule" in text and "WITH_GENERIC_TESTS" in text
    listed = set(re.findall(r"^\s+([\w/${}.-]+\.\w+)\s*$", text, flags=re.MULTILINE))
    listed = {item.replace("${MODULE_NAME}", "MedianNerveSeg") for item in listed}
    scripts = {p.relative_to(MODULE_DIR).as_posix()
               for package in ("MedianNerveSegLib", "MedianNerveSegSlicer", "SegmentEditorNerveClicksLib")
               for p in (MODULE_DIR / package).rglob("*.py") if "__pycache__" not in p.parts}
    assert not scripts - listed, f"scripts missing from CMakeLists.txt: {sorted(scripts - listed)}"
    resources = {"MedianNerveSeg.py", "Resources/UI/MedianNerveSeg.ui", "Resources/Icons/MedianNerveSeg.png",
                 "SegmentEditorNerveClicksLib/SegmentEditorEffect.png"}
    for model in (MODULE_DIR / "MedianNerveSegLib" / "pretrained").iterdir():  # every shipped model
        resources |= {f"MedianNerveSegLib/pretrained/{model.name}/{name}" for name in ("model.pt", "model.json",
                                                                                      "MODEL_CARD.md")}
        int8 = model / "openvino_int8"  # --runtime openvino-int8
        resources |= {f"MedianNerveSegLib/pretrained/{model.name}/openvino_int8/{p.name}"
                      for p in (int8.iterdir() if int8.is_dir() else ())}
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
    from MedianNerveSegSlicer import registration

    registration.register_sample_data(str(MODULE_DIR))
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


class EndingTask:
    """A task whose process ends when the test says (the monitor's view of MedianNerveSegLib.tasks.Task)."""

    def __init__(self):
        from MedianNerveSegLib.tasks import TaskProgress, TaskState

        self.State, self.state, self.events = TaskState, TaskState.RUNNING, []
        self.progress = lambda: TaskProgress(2, 3, "Segmenting frame 2 of 3...")

    @property
    def active(self):
        return self.state is self.State.RUNNING

    def poll(self):
        return self.state

    def cancel(self):
        self.events.append("cancel")
        self.state = self.State.CANCELLED


@pytest.fixture()
def panel_module(module):
    import MedianNerveSegSlicer.widget as widget

    return widget


def test_task_monitor_shows_progress_then_reports_the_end_once(panel_module):
    task, bar, label, ended = EndingTask(), ProgressBar(), SimpleNamespace(text=""), []
    monitor = panel_module.TaskMonitor(task, bar, label, ended.append)
    monitor._poll()  # what the QTimer calls
    assert (bar.value, bar.maximum, bar.visible, label.text) == (2, 3, True, "Segmenting frame 2 of 3...") and not ended
    task.state = task.State.SUCCEEDED
    monitor._poll()
    assert ended == [task] and not bar.visible
    monitor.cancel()  # an ended task is not cancelled again
    assert task.events == [] and ended == [task]


def test_task_monitor_cancel_ends_the_task_then_reports_it(panel_module):
    task, ended = EndingTask(), []
    monitor = panel_module.TaskMonitor(task, ProgressBar(), SimpleNamespace(text=""), ended.append)
    monitor.cancel()
    assert task.events == ["cancel"] and ended == [task] and task.state is task.State.CANCELLED


def test_loading_a_clip_shows_its_sequence_browser(module, monkeypatch):
    """Slicer shows the browser toolbar only for scenes it imports; an importer calls showSequenceBrowser
    (qSlicerSequencesModule.h, as DICOMImageSequencePlugin does)."""
    import MedianNerveSegSlicer.widget as widget

    shown, browser = [], object()
    monkeypatch.setattr(widget.slicer, "modules", SimpleNamespace(sequences=SimpleNamespace(
        showSequenceBrowser=shown.append)), raising=False)
    monkeypatch.setattr(widget.qt, "QFileDialog", SimpleNamespace(getOpenFileName=lambda *a: "clip.tif"),
                        raising=False)
    shell = module.MedianNerveSegWidget(SimpleNamespace(isEntered=True))
    shell.setup()
    shell.logic = shell.panel.logic = SimpleNamespace(
        ensureDependencies=lambda: True, dependenciesReady=lambda: False,
        sceneLogic=SimpleNamespace(load_image=lambda path, spacing: Anything(), browser_of=lambda volume: browser))
    shell.panel.onLoadImage()
    assert shown == [browser]


def test_comparison_html_lists_each_model(panel_module):
    rows = [{"model": "before", "n_images": 4, "dice_mean": 0.9, "csa_mae_mm2": 1.0, "csa_icc": 0.8, "found_rate": 1.0},
            {"model": "after", "n_images": 4, "dice_mean": 0.93, "csa_mae_mm2": None, "csa_icc": 0.9,
             "found_rate": 1.0}]
    html = panel_module.comparisonHtml(rows)
    assert "<td>before</td><td>0.900</td><td>1.00</td>" in html
    assert "<td>after</td><td>0.930</td><td>n/a</td>" in html and "<th>CSA MAE (mm^2)</th>" in html
    assert html.endswith("4 validation images")


def test_extension_is_ready_for_the_extensions_index():
    """What the Slicer Extensions Index checks: a licence, a catalog entry (Slicer's schema v1.0.2 keys)
    that agrees with CMakeLists.txt, contributors as "Name (Organisation)", and URLs of files that exist."""
    import json

    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    meta = dict(re.findall(r'^set\((EXTENSION_\w+) "([^"]*)"\)', text, flags=re.MULTILINE))
    entry = json.loads((REPO / "MedianNerveSeg.json").read_text(encoding="utf-8"))
    allowed = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "dicom_support_rule", "build_subdirectory", "enabled", "tier"}
    assert {"$schema", "category", "scm_url"} <= set(entry) <= allowed
    assert entry["category"] == meta["EXTENSION_CATEGORY"]
    assert entry["scm_url"].removesuffix(".git") == meta["EXTENSION_HOMEPAGE"]
    assert entry["build_dependencies"] == meta["EXTENSION_DEPENDS"].split()
    assert "Apache License" in (REPO / "LICENSE").read_text(encoding="utf-8")
    assert re.fullmatch(r"[^(),]+ \([^()]+\)(, [^(),]+ \([^()]+\))*", meta["EXTENSION_CONTRIBUTORS"])
    raw = meta["EXTENSION_HOMEPAGE"].replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/"
    for url in [meta["EXTENSION_ICONURL"], *meta["EXTENSION_SCREENSHOTURLS"].split()]:
        assert url.startswith(raw) and (REPO / url[len(raw):]).is_file(), url
