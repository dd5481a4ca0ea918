"""MedianNerveSegLib: the pure-Python core of MedianNerveSeg.

Median nerve segmentation and cross-sectional area (CSA) measurement in transverse
wrist ultrasound. Never imports slicer, qt, ctk or slicer.util: the Slicer module, the
command line and the MONAI bundles all call into this package.
"""

__version__ = "0.1.0"
