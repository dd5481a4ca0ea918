"""Render the module panel (Resources/UI/MedianNerveSeg.ui) to a PNG for the README, outside Slicer.

Slicer's own widgets are replaced by their nearest Qt widgets (ctkCollapsibleButton -> QGroupBox,
qMRMLNodeComboBox -> QComboBox, ctkDirectoryButton -> QPushButton), and the labels show what the
module displays for the dataset image Pz001-001 segmented by the shipped model. Needs PySide6
(``pip install PySide6-Essentials`` in a separate environment) and the core on the path:

    PYTHONPATH=MedianNerveSeg QT_QPA_PLATFORM=offscreen python docs/tools/render_slicer_panel.py \
        ../shared/data/median-nerve-us/images/Pz001-001.png docs/slicer-panel.png
"""

import re
import sys
from pathlib import Path

from PySide6.QtCore import QBuffer, QByteArray
from PySide6.QtUiTools import QUiLoader
from PySide6.QtWidgets import (QApplication, QCheckBox, QComboBox, QDoubleSpinBox, QGroupBox, QLabel, QLineEdit,
                               QPushButton, QSpinBox)

UI = Path(__file__).resolve().parents[2] / "MedianNerveSeg" / "Resources" / "UI" / "MedianNerveSeg.ui"
STAND_INS = {"ctkCollapsibleButton": "QGroupBox", "qMRMLNodeComboBox": "QComboBox", "ctkDirectoryButton": "QPushButton",
             "qMRMLWidget": "QWidget"}


def plain_qt_ui() -> bytes:
    text = UI.read_text(encoding="utf-8")
    text = re.sub(r"<customwidgets>.*</customwidgets>", "", text, flags=re.S)
    text = re.sub(r"<connections>.*</connections>", "", text, flags=re.S)
    for custom, plain in STAND_INS.items():
        text = text.replace(f'class="{custom}"', f'class="{plain}"')
    return text.encode("utf-8")


def main(image_path: str, out_path: str) -> None:
    from MedianNerveSegLib.inference import Segmenter
    from MedianNerveSegLib.io import read_image
    from MedianNerveSegLib.measure import measure_mask

    image = read_image(image_path, 0.062)
    segmenter = Segmenter()
    segmenter.predict(image)  # warm-up: the panel shows the time of a warm model
    prediction = segmenter.predict(image)
    measurement = measure_mask(prediction.mask, image.spacing_mm)

    app = QApplication.instance() or QApplication(sys.argv)
    data = QByteArray(plain_qt_ui())
    buffer = QBuffer(data)
    panel = QUiLoader().load(buffer)
    for box in panel.findChildren(QGroupBox):
        box.setTitle(box.property("text") or box.title())
    find = lambda cls, name: panel.findChild(cls, name)
    find(QComboBox, "inputVolumeSelector").addItem(Path(image_path).stem)
    find(QComboBox, "modelComboBox").addItem("median_nerve_unet")
    find(QComboBox, "deviceComboBox").addItems(["cpu", "cuda"])
    find(QComboBox, "segmentationSelector").addItem(f"{Path(image_path).stem} segmentation")
    find(QComboBox, "tableSelector").addItem("Median nerve CSA")
    find(QComboBox, "lineSelector").addItem("Calibration line")
    find(QComboBox, "trainStartComboBox").addItem("Fine-tune the selected model")
    find(QComboBox, "sideComboBox").addItems(["right", "left", "unknown"])
    find(QComboBox, "levelComboBox").addItems(["inlet", "forearm", "outlet"])
    find(QPushButton, "storeFolderButton").setText("~/median-nerve-labels")
    find(QLineEdit, "authorLineEdit").setText("sonographer")
    panel.findChild(QCheckBox, "liveMeasureCheckBox").setChecked(True)  # the parameter node's defaults
    panel.findChild(QDoubleSpinBox, "lineLengthSpinBox").setValue(10.0)
    panel.findChild(QSpinBox, "trainEpochsSpinBox").setValue(30)
    values = {"spacingSourceLabel": "0.0620 x 0.0620 mm/pixel (user)",
              "foundLabel": "yes" if prediction.found else "NOT FOUND",
              "confidenceLabel": f"{prediction.confidence:.2f}",
              "areaLabel": f"{measurement.area_mm2:.2f} mm²", "perimeterLabel": f"{measurement.perimeter_mm:.2f} mm",
              "circularityLabel": f"{measurement.circularity:.3f}",
              "flatteningLabel": f"{measurement.flattening_ratio:.2f}",
              "componentsLabel": str(measurement.n_components),
              "statusLabel": f"Segmented in {prediction.milliseconds:.0f} ms"}
    for name, text in values.items():
        find(QLabel, name).setText(text)
    panel.resize(380, panel.sizeHint().height())
    app.processEvents()
    panel.grab().save(out_path)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
