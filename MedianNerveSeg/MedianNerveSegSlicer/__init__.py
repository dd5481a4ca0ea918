"""MedianNerveSegSlicer: the Slicer glue of MedianNerveSeg (MRML nodes and Qt <-> the core).

``logic`` (the scene logic) and ``tasks`` import slicer, vtk and MRML, never qt, ctk, slicer.app
or slicer.modules: they get the scene and the module logics from the caller, so they run in
Slicer and in pytest on the slicer-core wheel alike. ``widget`` is the module's Qt panel. All
computation lives in MedianNerveSegLib. Nothing is imported with the package itself, so that the
module can build its panel before the Python dependencies are installed.
"""

__all__ = ["NerveSceneLogic"]


def __getattr__(name):
    if name == "NerveSceneLogic":
        from .logic import NerveSceneLogic

        return NerveSceneLogic
    raise AttributeError(name)
