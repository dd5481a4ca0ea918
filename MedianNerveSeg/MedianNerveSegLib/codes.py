"""The codes that say what the segment is, declared once: DICOM SEG/SR, Slicer segmentations and .seg.nrrd.

As Slicer's DICOM master list codes a nerve (category Tissue, type Nerve, CID 7166) in the wrist
joint, with the side as the region's modifier; its recommended colour.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

Code = Tuple[str, str, str]  # (value, scheme, meaning)
TISSUE: Code = ("85756007", "SCT", "Tissue")
NERVE: Code = ("119410002", "SCT", "Nerve")
WRIST_JOINT: Code = ("74670003", "SCT", "Wrist joint")
SIDES: Dict[str, Code] = {"left": ("7771000", "SCT", "Left"), "right": ("24028007", "SCT", "Right")}
# No standard code for the clinicians' flattening ratio: a local code (coding schemes starting "99" are private).
FLATTENING: Code = ("FLATTENING", "99MNSEG", "Flattening ratio (transverse / antero-posterior diameter)")
NERVE_COLOR = (244, 214, 49)
CATEGORY_CONTEXT = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


def _scheme_first(code: Code) -> List[str]:
    value, scheme, meaning = code
    return [scheme, value, meaning]


def terminology(side: str = "") -> Dict[str, object]:
    """The segment's terminology as slicerio writes it into a .seg.nrrd."""
    entry: Dict[str, object] = {"contextName": CATEGORY_CONTEXT, "category": _scheme_first(TISSUE),
                                "type": _scheme_first(NERVE), "anatomicContextName": ANATOMIC_CONTEXT,
                                "anatomicRegion": _scheme_first(WRIST_JOINT)}
    if side in SIDES:
        entry["anatomicRegionModifier"] = _scheme_first(SIDES[side])
    return entry


def slicer_terminology_arguments(side: str = "") -> Tuple[str, ...]:
    """The 17 arguments of vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry for the segment."""
    modifier = SIDES.get(side, ("", "", ""))
    return (CATEGORY_CONTEXT, *TISSUE, *NERVE, "", "", "", ANATOMIC_CONTEXT, *WRIST_JOINT, *modifier)
