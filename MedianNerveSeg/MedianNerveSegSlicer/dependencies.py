"""The Python packages the module needs, installed on first use after the user agrees.

Imports only slicer and the standard library: it runs before any of the packages it installs.
torch comes from the PyTorch extension (PyTorchUtils); the rest is pip-installed.
"""

import importlib.util
import traceback

import slicer
from slicer.i18n import tr as _

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
    "highdicom": "highdicom>=0.22",  # DICOM SEG and SR, out and in
}


def ready() -> bool:
    return importlib.util.find_spec("torch") is not None and all(
        importlib.util.find_spec(module) is not None for module in PIP_REQUIREMENTS)


def ensure() -> bool:
    """True when everything is installed, after installing what is missing; a failure ends in a dialog
    that says why."""
    if ready():
        return True
    try:
        return _install()
    except Exception as error:
        slicer.util.errorDisplay(_("Installing MedianNerveSeg's Python packages failed: {error}").format(
            error=error), detailedText=traceback.format_exc())
        return False


def _install() -> bool:
    if importlib.util.find_spec("torch") is None:
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            slicer.util.errorDisplay(_("MedianNerveSeg needs the PyTorch extension: install it from the "
                                       "Extensions Manager, restart Slicer and try again."))
            return False
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            if torchLogic.installTorch(askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT) is None:
                slicer.util.errorDisplay(_("PyTorch was not installed, so MedianNerveSeg cannot segment yet."))
                return False
    missing = [requirement for module, requirement in PIP_REQUIREMENTS.items()
               if importlib.util.find_spec(module) is None]
    if missing:
        if not slicer.util.confirmOkCancelDisplay(
                _("MedianNerveSeg needs these Python packages: {packages}.\nInstall them now (a few "
                  "minutes)?").format(packages=", ".join(missing))):
            return False
        slicer.util.pip_install(missing)
    return ready()
