"""The one pipeline and the one results format: no lost work, no overwritten output, typed rows."""

import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from MedianNerveSegLib.inference import Prediction
from MedianNerveSegLib.pipeline import output_stems, segment_files
from MedianNerveSegLib.results import FrameResult, ResultsWriter, as_row, read_results


class ThresholdSegmenter:
    """Stands in for the network: the nerve is every pixel brighter than 128; raises on a marked frame."""

    info = SimpleNamespace(name="threshold", version="1")
    model_id = "threshold@1"

    def predict(self, image, index=0):
        frame = image.frame(index)
        if frame[0, 0] == 77:
            raise RuntimeError("network failed on this frame")
        mask = frame > 128
        return Prediction(mask.astype(np.float32), mask, 1.0, bool(mask.any()), 1.0)


def _square(path, offset, marker=0):
    pixels = np.zeros((60, 80), np.uint8)
    pixels[10 + offset:30 + offset, 20:40] = 200
    pixels[0, 0] = marker
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def test_equal_stems_never_overwrite_each_other(tmp_path):
    inputs = [_square(tmp_path / "a" / "scan.png", 0), _square(tmp_path / "b" / "scan.png", 5),
              _square(tmp_path / "a" / "scan.1.png", 10), _square(tmp_path / "a" / "scan.1.bmp", 15)]
    out = tmp_path / "out"
    summary = segment_files(inputs, out, ThresholdSegmenter(), spacing_mm=0.1)
    rows = read_results(summary.results_path)
    assert [r.image for r in rows] == [str(p) for p in inputs]
    assert len({r.mask for r in rows}) == 4
    for row, path in zip(rows, inputs):  # each mask is its own input's nerve
        written = np.asarray(Image.open(out / row.mask)) > 0
        assert np.array_equal(written, np.asarray(Image.open(path)) > 128)


def test_output_stems_avoid_files_already_in_the_folder(tmp_path):
    stems = output_stems([tmp_path / "x" / "scan.png"], taken={"scan"})
    assert stems[tmp_path / "x" / "scan.png"] == "x_scan"


def test_a_failing_file_is_an_error_row_and_the_batch_goes_on(tmp_path):
    inputs = [_square(tmp_path / "one.png", 0), _square(tmp_path / "bad.png", 0, marker=77),
              _square(tmp_path / "three.png", 0)]
    summary = segment_files(inputs, tmp_path / "out", ThresholdSegmenter())
    rows = read_results(summary.results_path)
    assert [r.ok for r in rows] == [True, False, True] and summary.n_failed == 1
    assert rows[1].image == str(inputs[1]) and rows[1].error == "network failed on this frame"


def test_a_rerun_continues_and_never_duplicates(tmp_path):
    first = [_square(tmp_path / f"im{i}.png", i) for i in range(3)]
    segment_files(first[:2], tmp_path / "out", ThresholdSegmenter(), spacing_mm=0.1)
    summary = segment_files(first, tmp_path / "out", ThresholdSegmenter(), spacing_mm=0.1)
    rows = read_results(summary.results_path)
    assert summary.n_skipped == 2 and [r.image for r in rows] == [str(p) for p in first]


def test_a_rerun_with_other_settings_is_refused_and_changes_nothing(tmp_path):
    inputs = [_square(tmp_path / f"im{i}.png", i) for i in range(2)]
    segment_files(inputs[:1], tmp_path / "out", ThresholdSegmenter(), spacing_mm=0.1)
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    with pytest.raises(ValueError, match=r"other settings \(save_prob False -> True\)"):
        segment_files(inputs, tmp_path / "out", ThresholdSegmenter(), spacing_mm=0.1, save_prob=True)
    with pytest.raises(ValueError, match=r"spacing_mm \[0.1, 0.1\] -> None"):
        segment_files(inputs, tmp_path / "out", ThresholdSegmenter())
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


def test_a_prediction_flag_reaches_the_results_row(tmp_path):
    class ConstantFrameSegmenter(ThresholdSegmenter):
        def predict(self, image, index=0):
            empty = np.zeros(image.frame(index).shape, bool)
            return Prediction(empty.astype(np.float32), empty, 0.0, False, 1.0, ("constant-frame",))

    summary = segment_files([_square(tmp_path / "flat.png", 0)], tmp_path / "out", ConstantFrameSegmenter(), 0.1)
    assert read_results(summary.results_path)[0].flags == ["not-found", "constant-frame"]


def test_results_round_trip_typed(tmp_path):
    result = FrameResult(image="a/b.png", frame=2, patient="Pz001", found=True, confidence=0.98761,
                         area_mm2=12.5, area_px=3250, perimeter_mm=16.1, circularity=0.61, flattening_ratio=3.2,
                         n_components=2, spacing_mm=(0.062, 0.07), spacing_source="user", model="m@1", ms=10.5,
                         mask="b_mask.png", flags=["implausible-csa", "x"])
    result.area_mm2 = 100 * 0.062 * 0.062  # 0.3844: the CSV keeps mm^2 to 1e-6
    with ResultsWriter(tmp_path / "r.csv") as writer:
        writer.write(result)
        writer.write(FrameResult(image="c.png", error="file is empty"))
    back = read_results(tmp_path / "r.csv")
    assert back[0] == FrameResult(**{**vars(result), "confidence": 0.9876, "area_mm2": 0.3844})
    assert back[1].error == "file is empty" and back[1].found is None and back[1].spacing_mm is None
    assert as_row(back[0])["spacing_mm"] == "0.062x0.07"


def test_a_foreign_csv_is_refused_not_overwritten(tmp_path):
    foreign = tmp_path / "measurements.csv"
    foreign.write_text("name,value\nx,1\n")
    with pytest.raises(ValueError, match="not a results file"):
        ResultsWriter(foreign)
    assert foreign.read_text() == "name,value\nx,1\n"


def test_sigterm_keeps_every_finished_row_and_a_rerun_completes(tmp_path):
    """Whatever moment the signal lands at, the results file lists exactly the masks written."""
    inputs = tmp_path / "in"
    for i in range(40):
        _square(inputs / f"im{i:02d}.png", i % 20)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "MedianNerveSegLib", "segment", str(inputs), "--out", str(out),
               "--model", "median_nerve_unet_small", "--spacing", "0.1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if (out / "measurements.csv").is_file() and len((out / "measurements.csv").read_text().splitlines()) > 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    assert process.returncode in (130, 0), err
    if process.returncode == 130:
        assert "interrupted" in err and "Traceback" not in err
    rows = read_results(out / "measurements.csv")
    assert rows and all(r.ok and (out / r.mask).is_file() for r in rows)
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    rows = read_results(out / "measurements.csv")
    assert sorted(r.image for r in rows) == sorted(str(p) for p in inputs.iterdir())


def _record_opens(monkeypatch):
    """Wrap io.open_image/close_image: (path name, thread name) of each open, and the images closed."""
    import threading

    from MedianNerveSegLib import io

    opened, closed = [], []
    open_image, close_image = io.open_image, io.close_image

    def recording_open(path, spacing_mm=None):
        opened.append((path.name, threading.current_thread().name))
        return open_image(path, spacing_mm)

    def recording_close(image):
        closed.append(image)
        close_image(image)

    monkeypatch.setattr(io, "open_image", recording_open)
    monkeypatch.setattr(io, "close_image", recording_close)
    return opened, closed


def test_the_next_file_is_read_while_this_one_is_segmented(tmp_path, monkeypatch):
    opened, _ = _record_opens(monkeypatch)
    inputs = [_square(tmp_path / f"im{i}.png", i) for i in range(3)]

    class WaitingSegmenter(ThresholdSegmenter):
        def predict(self, image, index=0):  # the next file's read has begun before this frame's network runs
            following = {"im0.png": "im1.png", "im1.png": "im2.png"}.get(image.source.rsplit("/", 1)[-1])
            deadline = time.monotonic() + 30
            while following and following not in [name for name, _ in opened] and time.monotonic() < deadline:
                time.sleep(0.01)
            self.seen = getattr(self, "seen", []) + [following in [name for name, _ in opened]]
            return super().predict(image, index)

    segmenter = WaitingSegmenter()
    summary = segment_files(inputs, tmp_path / "out", segmenter, spacing_mm=0.1)
    assert segmenter.seen == [True, True, False] and summary.n_frames == 3
    threads = dict(opened)
    assert threads["im0.png"] == "MainThread"
    assert threads["im1.png"].startswith("median-nerve-seg-read") and threads["im2.png"].startswith("median-nerve")
    rows = read_results(summary.results_path)  # the rows, in the inputs' order, each its own file's nerve
    assert [r.image for r in rows] == [str(p) for p in inputs]
    assert [r.area_px for r in rows] == [400, 400, 400]


def test_an_unreadable_file_read_ahead_is_its_own_error_row(tmp_path, monkeypatch):
    _record_opens(monkeypatch)
    broken = tmp_path / "im1.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
    inputs = [_square(tmp_path / "im0.png", 0), broken, _square(tmp_path / "im2.png", 2)]
    summary = segment_files(inputs, tmp_path / "out", ThresholdSegmenter(), spacing_mm=0.1)
    rows = read_results(summary.results_path)
    assert [r.ok for r in rows] == [True, False, True] and rows[1].image == str(broken)
    assert "not a valid or complete PNG" in rows[1].error


def test_an_interrupted_batch_closes_the_clip_it_read_ahead(tmp_path, monkeypatch):
    opened, closed = _record_opens(monkeypatch)
    clip = tmp_path / "im1.tif"
    pages = [Image.fromarray(np.full((60, 80), 10 * i, np.uint8)) for i in range(3)]
    pages[0].save(clip, save_all=True, append_images=pages[1:])

    class InterruptedSegmenter(ThresholdSegmenter):
        def predict(self, image, index=0):
            deadline = time.monotonic() + 30
            while "im1.tif" not in [name for name, _ in opened] and time.monotonic() < deadline:
                time.sleep(0.01)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        segment_files([_square(tmp_path / "im0.png", 0), clip], tmp_path / "out", InterruptedSegmenter())
    assert any(image.source == str(clip) for image in closed)


def test_a_frames_files_are_written_beside_the_next_frame_and_its_row_after_them(tmp_path, monkeypatch):
    import threading

    from MedianNerveSegLib import io

    writers, overlapped, write_overlay = set(), [], io.write_overlay_png
    segmenting = {name: threading.Event() for name in ("im0.png", "im1.png", "im2.png", "im3.png")}

    class SignallingSegmenter(ThresholdSegmenter):
        def predict(self, image, index=0):
            segmenting[Path(image.source).name].set()
            return super().predict(image, index)

    def waiting_write(path, *args, **kwargs):  # im0's overlay is written while im1 is segmented
        writers.add(threading.current_thread().name)
        if path.name == "im0_overlay.png":
            overlapped.append(segmenting["im1.png"].wait(timeout=30))
        write_overlay(path, *args, **kwargs)

    monkeypatch.setattr(io, "write_overlay_png", waiting_write)
    inputs = [_square(tmp_path / f"im{i}.png", i) for i in range(4)]
    out, handed_on = tmp_path / "out", []
    segment_files(inputs, out, SignallingSegmenter(), spacing_mm=0.1,
                  on_result=lambda row: handed_on.append((out / row.mask).is_file()
                                                         and (out / row.mask.replace("_mask", "_overlay")).is_file()))
    assert overlapped == [True] and handed_on == [True] * 4
    assert len(writers) == 1 and writers.pop().startswith("median-nerve-seg-write")
    assert [r.area_px for r in read_results(out / "measurements.csv")] == [400] * 4


def test_a_frame_whose_files_cannot_be_written_is_its_error_row(tmp_path, monkeypatch):
    from MedianNerveSegLib import io

    write_overlay = io.write_overlay_png

    def failing_write(path, *args, **kwargs):
        if "im1" in str(path):
            raise OSError(28, "No space left on device")
        write_overlay(path, *args, **kwargs)

    monkeypatch.setattr(io, "write_overlay_png", failing_write)
    inputs = [_square(tmp_path / f"im{i}.png", i) for i in range(3)]
    summary = segment_files(inputs, tmp_path / "out", ThresholdSegmenter(), spacing_mm=0.1)
    rows = read_results(summary.results_path)
    assert [(Path(r.image).name, r.ok) for r in rows] == [("im0.png", True), ("im1.png", False), ("im2.png", True)]
    assert "No space left on device" in rows[1].error and summary.n_failed == 1 and summary.n_frames == 2


def test_an_interrupted_batch_keeps_the_row_whose_files_were_being_written(tmp_path):
    inputs = [_square(tmp_path / f"im{i}.png", i) for i in range(3)]

    class InterruptedSegmenter(ThresholdSegmenter):
        def predict(self, image, index=0):
            if image.source.endswith("im2.png"):
                raise KeyboardInterrupt
            return super().predict(image, index)

    with pytest.raises(KeyboardInterrupt):
        segment_files(inputs, tmp_path / "out", InterruptedSegmenter(), spacing_mm=0.1)
    rows = read_results(tmp_path / "out" / "measurements.csv")
    assert [Path(r.image).name for r in rows] == ["im0.png", "im1.png"]
    assert all((tmp_path / "out" / r.mask).is_file() for r in rows)
    summary = segment_files(inputs, tmp_path / "out", ThresholdSegmenter(), spacing_mm=0.1)  # the rerun finishes it
    assert summary.n_skipped == 2 and len(read_results(summary.results_path)) == 3


def test_ctrl_c_while_a_frames_files_are_written_keeps_its_row_and_the_rerun_adds_no_copy(tmp_path, monkeypatch):
    import threading

    from MedianNerveSegLib import io, pipeline

    im2_segmented, write_overlay, wait_for_files = threading.Event(), io.write_overlay_png, pipeline._written
    interrupted = []

    class SignallingSegmenter(ThresholdSegmenter):
        def predict(self, image, index=0):
            prediction = super().predict(image, index)
            if image.source.endswith("im2.png"):
                im2_segmented.set()
            return prediction

    def slow_write(path, *args, **kwargs):  # im1's files are still being written when the batch waits for them
        if path.name == "im1_overlay.png":
            im2_segmented.wait(timeout=30)
            time.sleep(0.3)
        write_overlay(path, *args, **kwargs)

    def ctrl_c_in_the_wait(writing):  # the user's Ctrl-C, raised where the batch waits for a frame's files
        if im2_segmented.is_set() and writing is not None and not writing.done() and not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt
        return wait_for_files(writing)

    monkeypatch.setattr(io, "write_overlay_png", slow_write)
    monkeypatch.setattr(pipeline, "_written", ctrl_c_in_the_wait)
    inputs = [_square(tmp_path / f"im{i}.png", i) for i in range(4)]
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        segment_files(inputs, out, SignallingSegmenter(), spacing_mm=0.1)
    assert interrupted
    rows = read_results(out / "measurements.csv")
    assert [Path(r.image).name for r in rows] == [p.name for p in inputs[:len(rows)]] and len(rows) >= 2
    assert sorted(p.name for p in out.glob("*_mask.png")) == sorted(r.mask for r in rows)  # no file without its row
    monkeypatch.setattr(io, "write_overlay_png", write_overlay)
    segment_files(inputs, out, ThresholdSegmenter(), spacing_mm=0.1)
    rows = read_results(out / "measurements.csv")
    assert [Path(r.image).name for r in rows] == [p.name for p in inputs]
    assert sorted(p.name for p in out.glob("*_mask.png")) == [f"im{i}_mask.png" for i in range(4)]
