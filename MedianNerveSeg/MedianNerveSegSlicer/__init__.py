"""MedianNerveSegSlicer: the Slicer glue of MedianNerveSeg (MRML nodes <-> the core).

Imports slicer, vtk and MRML, never qt, ctk, slicer.app or slicer.modules: the Logic gets
its scene and module logics from the caller, so it runs in Slicer and in pytest on the
slicer-core wheel alike. All computation lives in MedianNerveSegLib.
"""

from .logic import MedianNerveSegLogic

__all__ = ["MedianNerveSegLogic"]
