"""The in-Slicer self-test: the registered sample image (downloaded with its checksum) through the whole
workflow and a click of the "Nerve clicks" effect, and a 3-frame clip through *Segment all frames*' task. Run
by the module's test class."""

import os
import tempfile
import time

import numpy as np
import slicer

SCANNER_SPACING_MM = 0.062  # the Jesi dataset's scanner (its README): the sample's BMP carries no spacing
TASK_TIMEOUT_S = 600


class SelfTest:
    """``case`` is the ScriptedLoadableModuleTest (asserts, delayDisplay); ``logic`` the module logic."""

    def __init__(self, case, logic, model: str) -> None:
        self.case, self.logic, self.model = case, logic, model

    def run(self) -> None:
        slicer.mrmlScene.Clear(0)
        self.case.assertTrue(self.logic.ensureDependencies())
        self.test_sample_image()
        slicer.mrmlScene.Clear(0)
        self.test_clip()

    def _sample(self):
        """The registered sample as the grey, calibrated volume the user would segment."""
        import SampleData

        scene = self.logic.sceneLogic
        volume = scene.scalar_volume(SampleData.downloadSample("MedianNerveWrist1"))
        scene.set_spacing(volume, SCANNER_SPACING_MM)
        return volume

    def test_sample_image(self) -> None:
        from MedianNerveSegLib.measure import measure_mask
        from MedianNerveSegLib.pipeline import PLAUSIBLE_CSA_MM2

        scene = self.logic.sceneLogic
        volume = self._sample()
        segmentation, prediction = scene.segment(volume, self.logic.segmenter(self.model, "cpu"))
        self.case.assertTrue(prediction.found, "the nerve of the sample image was not found")
        measurement = scene.measure(segmentation, volume)
        self.case.assertTrue(PLAUSIBLE_CSA_MM2[0] <= measurement.area_mm2 <= PLAUSIBLE_CSA_MM2[1],
                             f"implausible CSA {measurement.area_mm2} mm2")
        self.case.assertEqual(measurement.as_row(), measure_mask(prediction.mask, SCANNER_SPACING_MM).as_row())
        self.case.delayDisplay(f"Segmented the sample: CSA {measurement.area_mm2:.2f} mm2")
        table = scene.measurement_table()
        scene.update_table(table, measurement, volume.GetName())
        self.case.assertEqual(table.GetNumberOfRows(), 1)
        with tempfile.TemporaryDirectory() as folder:
            record = scene.save_label(segmentation, volume, os.path.join(folder, "store"), author="self-test")
            self.case.assertEqual((record["version"], record["changed_pixels"]), (1, 0))
            exported = scene.export_segmentation(segmentation, os.path.join(folder, "nerve.seg.nrrd"))
            self.case.assertTrue(os.path.isfile(str(exported)))
        self.test_click(volume, segmentation)

    def test_click(self, volume, segmentation) -> None:
        """The "Nerve clicks" effect is registered, and a nerve click at the contour's centre keeps the nerve and
        is recorded with the label saved from it."""
        import vtk

        from MedianNerveSegSlicer.widget import CLICK_EFFECT

        scene = self.logic.sceneLogic
        editor = slicer.qMRMLSegmentEditorWidget()
        editor.setMRMLScene(slicer.mrmlScene)
        self.case.assertIsNotNone(editor.effectByName(CLICK_EFFECT), f"the {CLICK_EFFECT} effect is not registered")
        rows, cols = np.nonzero(scene.segment_mask(segmentation, volume))
        row, col = int(np.median(rows)), int(np.median(cols))
        matrix = vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(matrix)
        ras = matrix.MultiplyPoint((col, row, 0, 1))[:3]
        refinement = scene.click_at(segmentation, volume, self.logic.refiner("cpu"), ras, True)
        self.case.assertTrue(refinement.mask[row, col], "a nerve click at the nerve's centre lost it")
        with tempfile.TemporaryDirectory() as folder:
            record = scene.save_label(segmentation, volume, os.path.join(folder, "store"), author="self-test")
            self.case.assertEqual(record["refinement"]["clicks_made"], 1)
        self.case.delayDisplay(f"One click: CSA {refinement.measurement.area_mm2:.2f} mm2")

    def test_clip(self) -> None:
        """Three shifted copies of the sample as a clip, segmented by the background task, browsed per frame."""
        from PIL import Image

        from MedianNerveSegLib.tasks import TaskState
        from MedianNerveSegSlicer.tasks import ClipSegmentationTask

        scene = self.logic.sceneLogic
        frame = np.asarray(scene.volume_to_image(self._sample()).pixels, np.uint8)
        with tempfile.TemporaryDirectory() as folder:
            clip = os.path.join(folder, "Pz001-clip.tif")
            frames = [Image.fromarray(np.roll(frame, 15 * k, axis=1)) for k in range(3)]
            frames[0].save(clip, save_all=True, append_images=frames[1:])
            volume = scene.load_image(clip, SCANNER_SPACING_MM)
            task = ClipSegmentationTask(scene, volume, self.model)
            deadline = time.time() + TASK_TIMEOUT_S
            while task.poll() is TaskState.RUNNING and time.time() < deadline:
                slicer.app.processEvents()
                time.sleep(0.2)
            task.cancel()  # no-op unless it ran past the deadline
            self.case.assertEqual(task.state, TaskState.SUCCEEDED, task.error)
        table = task.result.table
        self.case.assertEqual(table.GetNumberOfRows(), 3)
        self.case.assertEqual(task.result.flags["not_found"], [])
        browser = scene.browser_of(volume)
        for k in range(3):
            browser.SetSelectedItemNumber(k)
            self.case.assertEqual(scene.frame_of(task.result.segmentation, volume), k)
            self.case.assertEqual(int(scene.segment_mask(task.result.segmentation, volume).sum()),
                                  int(table.GetTable().GetColumnByName("area_px").GetValue(k)))
        self.case.delayDisplay("Clip segmented frame by frame")
