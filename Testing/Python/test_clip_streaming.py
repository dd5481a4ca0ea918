"""Clips streamed: read a frame at a time, rows written as frames are done, a bad frame never the end of
the clip, an interrupted clip continued from the frame it stopped at, memory flat in the clip's length."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from MedianNerveSegLib.frames import LazyFrames
from MedianNerveSegLib.io import ImageReadError, close_image, open_image, read_image
from MedianNerveSegLib.pipeline import segment_files
from MedianNerveSegLib.results import read_results

from attack_cases import _set, save_dicom
from test_pipeline import ThresholdSegmenter


def _clip(n: int, h: int = 60, w: int = 80, marked: int = -1) -> np.ndarray:
    """n frames with a bright square moving down one row a frame; frame ``marked`` makes the segmenter fail."""
    frames = np.zeros((n, h, w), np.uint8)
    for index in range(n):
        frames[index, 10 + index % 20:30 + index % 20, 20:40] = 200
    if marked >= 0:
        frames[marked, 0, 0] = 77
    return frames


def _rle(path: Path) -> Path:
    """The same DICOM, RLE Lossless compressed: each frame is its own fragment."""
    from pydicom import dcmread
    from pydicom.uid import RLELossless

    ds = dcmread(path)
    ds.compress(RLELossless)
    ds.save_as(path)
    return path


@pytest.mark.parametrize("kind", ["MONOCHROME2", "MONOCHROME1", "RGB", "RLE"])
def test_an_opened_dicom_clip_gives_the_frames_read_image_gives(tmp_path, kind):
    frames = _clip(6)
    pixels = np.repeat(frames[..., None], 3, axis=3) * np.array([1, 0.5, 0.25]) if kind == "RGB" else frames
    path = save_dicom(tmp_path / "cine.dcm", pixels.astype(np.uint8), photometric="RGB" if kind == "RGB" else
                      "MONOCHROME2" if kind == "RLE" else kind, frames=6, region_cm=0.0062)
    if kind == "RLE":
        path = _rle(path)
    whole, opened = read_image(path), open_image(path)
    assert isinstance(opened.pixels, LazyFrames) and opened.pixels.shape == whole.pixels.shape
    for index in (0, 1, 2, 5, 3):  # in order, and back again
        np.testing.assert_array_equal(opened.frame(index), whole.frame(index))
        assert opened.frame(index).dtype == np.float32
    assert (opened.spacing_mm, opened.spacing_source, opened.metadata) == \
        (whole.spacing_mm, whole.spacing_source, {**whole.metadata, "original_shape": (6, 60, 80)})
    close_image(opened)


def test_a_multipage_tiff_clip_is_opened_frame_by_frame(tmp_path):
    frames = _clip(5)
    path = tmp_path / "cine.tiff"
    Image.fromarray(frames[0]).save(path, save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]])
    opened = open_image(path)
    assert isinstance(opened.pixels, LazyFrames) and opened.n_frames == 5
    np.testing.assert_array_equal(np.asarray(opened.pixels), read_image(path).pixels)
    close_image(opened)


def test_a_clip_missing_frames_is_refused_as_read_image_refuses_it(tmp_path):
    path = save_dicom(tmp_path / "short.dcm", _clip(3), frames=3, edit=_set(NumberOfFrames=5))
    with pytest.raises(ImageReadError) as whole:
        read_image(path)
    with pytest.raises(ImageReadError) as opened:
        open_image(path)
    assert str(opened.value) == str(whole.value)


def test_clip_rows_are_written_as_its_frames_are_done(tmp_path):
    path = save_dicom(tmp_path / "cine.dcm", _clip(5), frames=5)
    out = tmp_path / "out"
    seen = []

    class Recording(ThresholdSegmenter):
        def predict(self, image, index=0):
            seen.append(len(read_results(out / "measurements.csv")))  # rows on disk before this frame
            return super().predict(image, index)

    segment_files([path], out, Recording(), spacing_mm=0.1)
    assert seen == [0, 0, 1, 2, 3]  # a row is written once its files are, while the next frame is segmented
    assert len(read_results(out / "measurements.csv")) == 5


def test_a_bad_frame_is_an_error_row_and_the_clip_goes_on(tmp_path):
    path = save_dicom(tmp_path / "cine.dcm", _clip(5, marked=2), frames=5)
    summary = segment_files([path], tmp_path / "out", ThresholdSegmenter(), spacing_mm=0.1)
    rows = read_results(summary.results_path)
    assert [(r.frame, r.ok) for r in rows] == [(0, True), (1, True), (2, False), (3, True), (4, True)]
    assert rows[2].error == "network failed on this frame" and summary.n_failed == 1 and summary.n_frames == 4
    assert (tmp_path / "out" / "cine_csa.png").is_file()


def test_a_nan_frame_of_a_float_clip_is_refused_by_its_index(tmp_path):
    frames = _clip(4).astype(np.float32)
    frames[3, 5, 5] = np.nan
    path = tmp_path / "cine.tiff"
    Image.fromarray(frames[0]).save(path, save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]])
    summary = segment_files([path], tmp_path / "out", ThresholdSegmenter(), spacing_mm=0.1)
    rows = read_results(summary.results_path)
    assert [r.ok for r in rows] == [True, True, True, False]
    assert rows[3].frame == 3 and "1 of 4800 pixels of frame 3 are NaN or infinite" in rows[3].error


def test_an_interrupted_clip_continues_from_the_frame_it_stopped_at(tmp_path):
    path = save_dicom(tmp_path / "cine.dcm", _clip(6), frames=6)
    out = tmp_path / "out"

    class Interrupted(ThresholdSegmenter):
        def predict(self, image, index=0):
            if index == 3:
                raise KeyboardInterrupt
            return super().predict(image, index)

    with pytest.raises(KeyboardInterrupt):
        segment_files([path], out, Interrupted(), spacing_mm=0.1)
    assert [r.frame for r in read_results(out / "measurements.csv")] == [0, 1, 2]
    summary = segment_files([path], out, ThresholdSegmenter(), spacing_mm=0.1)
    rows = read_results(summary.results_path)
    assert [r.frame for r in rows] == list(range(6)) and summary.n_frames == 3 and summary.n_skipped == 0
    assert [r.mask for r in rows] == [f"cine_f{i:04d}_mask.png" for i in range(6)]  # one stem, nothing renamed
    for row, frame in zip(rows, _clip(6)):
        assert np.array_equal(np.asarray(Image.open(out / row.mask)) > 0, frame > 128)
    again = segment_files([path], out, ThresholdSegmenter(), spacing_mm=0.1)
    assert again.n_skipped == 1 and again.n_frames == 0 and len(read_results(again.results_path)) == 6


def test_no_overlay_writes_the_masks_and_no_pictures(tmp_path):
    path = save_dicom(tmp_path / "cine.dcm", _clip(3), frames=3)
    segment_files([path], tmp_path / "out", ThresholdSegmenter(), spacing_mm=0.1, overlay=False)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert not [n for n in names if n.endswith("_overlay.png")] and len([n for n in names if "_mask" in n]) == 3
    with pytest.raises(ValueError, match=r"overlay False -> True"):
        segment_files([path], tmp_path / "out", ThresholdSegmenter(), spacing_mm=0.1)


@pytest.mark.parametrize("kind", ["dicom", "nrrd-gzip"])
def test_segmenting_a_long_clip_holds_one_frame_at_a_time(tmp_path, kind):
    """A 400-frame clip is 7.7 MB as uint8 and 31 MB as float32; the batch's Python and NumPy allocations
    stay a small fraction of that (read whole, the float32 clip alone is allocated)."""
    n, h, w = 400, 120, 160
    frames = np.zeros((n, h, w), np.uint8)
    frames[:, 40:80, 50:90] = 200
    write = (lambda path, clip: save_dicom(path.with_suffix(".dcm"), clip, frames=len(clip))) if kind == "dicom" \
        else (lambda path, clip: _write_volume_clip(path.with_suffix(".nrrd"), clip, kind))
    path = write(tmp_path / "long", frames)
    del frames
    short = write(tmp_path / "short", _clip(3))  # imports and the plot's first draw,
    segment_files([short], tmp_path / "warm", ThresholdSegmenter(), spacing_mm=0.1, overlay=False)  # unmeasured
    tracemalloc.start()
    try:
        summary = segment_files([path], tmp_path / "out", ThresholdSegmenter(), spacing_mm=0.1, overlay=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.n_frames == n
    assert peak < n * h * w * 4 / 8, f"peak {peak / 1e6:.1f} MB"


def test_an_rgb_clip_read_whole_is_converted_to_grey_a_frame_at_a_time(tmp_path):
    """An RGB NRRD clip read whole (read_image; open_image streams it) is converted to grey holding one
    frame's float64 temporaries, not the clip's (100 RGB frames once peaked at 1.4 GB)."""
    import nrrd

    n, h, w = 40, 120, 160
    rgb = np.random.default_rng(0).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    path = tmp_path / "rgb.nrrd"
    nrrd.write(str(path), rgb, {"kinds": ["RGB-color", "domain", "domain", "domain"]}, index_order="C")
    read_image(path, 0.1)  # the readers' imports, outside the measure
    tracemalloc.start()
    try:
        image = read_image(path, 0.1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    assert image.pixels.shape == (n, h, w) and image.pixels.dtype == np.float32
    np.testing.assert_allclose(image.pixels, luma, atol=1e-3)
    assert peak < n * h * w * 12, f"peak {peak / (n * h * w):.1f} bytes a pixel"


def _interrupted_at(frame: int):
    class Interrupted(ThresholdSegmenter):
        def predict(self, image, index=0):
            if index == frame:
                raise KeyboardInterrupt
            return super().predict(image, index)
    return Interrupted()


def test_a_resumed_clip_keeps_its_outputs_from_an_input_of_the_same_name(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first = save_dicom(tmp_path / "a" / "scan.dcm", _clip(6), frames=6)
    other = save_dicom(tmp_path / "b" / "scan.dcm", _clip(6)[::-1].copy(), frames=6)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        segment_files([first], out, _interrupted_at(3), spacing_mm=0.1)
    summary = segment_files([first, other], out, ThresholdSegmenter(), spacing_mm=0.1)
    rows = read_results(summary.results_path)
    for path, frames in ((first, _clip(6)), (other, _clip(6)[::-1])):
        mine = sorted((r for r in rows if r.image == str(path)), key=lambda r: r.frame)
        assert [r.frame for r in mine] == list(range(6))
        for row, frame in zip(mine, frames):  # each mask is its own clip's frame, none written over
            assert np.array_equal(np.asarray(Image.open(out / row.mask)) > 0, frame > 128)
    assert len({r.mask for r in rows}) == 12


def test_a_done_clip_that_is_gone_keeps_its_rows_and_adds_no_error_row(tmp_path):
    path = save_dicom(tmp_path / "cine.dcm", _clip(4), frames=4)
    out = tmp_path / "out"
    segment_files([path], out, ThresholdSegmenter(), spacing_mm=0.1)
    path.rename(tmp_path / "moved.dcm")
    summary = segment_files([path], out, ThresholdSegmenter(), spacing_mm=0.1)
    assert summary.n_failed == 0 and summary.n_skipped == 1 and len(read_results(summary.results_path)) == 4
    assert len(summary.warnings) == 1 and str(path) in summary.warnings[0] and "4 frames done earlier" in \
        summary.warnings[0]


def test_a_clip_retried_after_a_bad_frame_is_reported_once_per_frame(tmp_path):
    from MedianNerveSegLib.report import write_report

    path = save_dicom(tmp_path / "cine.dcm", _clip(4, marked=2), frames=4)
    out = tmp_path / "out"
    segment_files([path], out, ThresholdSegmenter(), spacing_mm=0.1)
    segment_files([path], out, ThresholdSegmenter(), spacing_mm=0.1)  # frame 2 retried, fails again
    assert [(r.frame, r.ok) for r in read_results(out / "measurements.csv")] == [
        (0, True), (1, True), (2, False), (3, True), (2, False)]
    report = write_report([out], tmp_path / "report")
    (side,) = report.sides
    assert len(side.levels["inlet"].images) == 3 and [e["frame"] for e in report.excluded] == ["2"]


def test_a_clip_that_contradicts_the_side_is_one_error_row(tmp_path):
    from MedianNerveSegLib.pipeline import Labels

    path = save_dicom(tmp_path / "cine.dcm", _clip(5), frames=5, edit=_set(ImageLaterality="L"))
    summary = segment_files([path], tmp_path / "out", ThresholdSegmenter(), spacing_mm=0.1,
                            labels=Labels(side="right"))
    (row,) = read_results(summary.results_path)
    assert not row.ok and "--side right, but the file says left" in row.error and summary.n_failed == 1


def test_a_dicom_clip_with_a_bad_frame_gets_no_seg_and_says_which_frame(tmp_path):
    path = save_dicom(tmp_path / "cine.dcm", _clip(4, marked=1), frames=4,
                      edit=_set(FrameOfReferenceUID="1.2.826.0.1.3680043.8.498.1"))
    summary = segment_files([path], tmp_path / "out", ThresholdSegmenter(), spacing_mm=0.1, dicom_out=True)
    rows = read_results(summary.results_path)
    assert [r.ok for r in rows] == [True, False, True, True]
    assert all("dicom-out-failed" in r.flags for r in rows if r.ok)
    assert any("frame 1 could not be segmented" in w for w in summary.warnings)
    assert not list((tmp_path / "out").glob("*_seg.dcm"))


def test_a_clip_that_cannot_be_opened_lazily_leaves_no_file_open(tmp_path, monkeypatch):
    import PIL.Image

    from MedianNerveSegLib import frames as frames_module

    opened = []
    real_open = PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda *a, **k: opened.append(real_open(*a, **k)) or opened[-1])
    path = tmp_path / "cine.tiff"
    pages = [Image.fromarray(f) for f in _clip(3)]
    pages[0].save(path, save_all=True, append_images=pages[1:], compression="tiff_deflate")
    path.write_bytes(path.read_bytes()[:200])  # the first page's data cut short
    assert frames_module.open_tiff_clip(path, lambda page: page) is None
    assert opened and all(image.fp is None for image in opened)

    closed = []
    monkeypatch.setattr(LazyFrames, "close", lambda self: closed.append(self.path))
    clip = save_dicom(tmp_path / "cine.dcm", _clip(3), frames=3, region_cm=1e-9)  # a refused spacing
    with pytest.raises(ImageReadError):
        open_image(clip)
    assert closed == [clip]


def _write_volume_clip(path: Path, frames: np.ndarray, kind: str) -> Path:
    """A (T, H, W[, 3]) clip as NRRD (raw or gzip) or NIfTI (.nii, .nii.gz, scaled), 0.1 mm pixels, 0.05 s frames."""
    colour = frames.ndim == 4
    if kind.startswith("nrrd"):
        import nrrd

        header = {"encoding": "raw" if kind == "nrrd-raw" else "gzip",  # axes listed fastest first
                  "kinds": (["RGB-color"] if colour else []) + ["domain", "domain", "time"],
                  "spacings": ([np.nan] if colour else []) + [0.1, 0.1, 0.05]}
        nrrd.write(str(path), frames, header, index_order="C")
        return path
    if kind.startswith("mha"):
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(frames, isVector=colour)
        image.SetSpacing((0.1, 0.1, 0.05))
        sitk.WriteImage(image, str(path), useCompression=kind == "mha-compressed")
        return path
    import nibabel

    data = frames.transpose(2, 1, 0) if not colour else frames.transpose(2, 1, 0, 3)  # (x, y, t[, c])
    if colour:
        rgb = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])
        data = np.ascontiguousarray(data).view(rgb)[..., 0]
    image = nibabel.Nifti1Image(data, np.diag([0.1, 0.1, 1.0, 1.0]))
    image.header.set_xyzt_units("mm", "sec")
    if kind == "nifti-scaled":
        image.header.set_data_dtype(np.int16)
        image.header.set_slope_inter(0.5, 3.0)
    nibabel.save(image, str(path))
    return path


@pytest.mark.parametrize("kind,suffix,colour", [("nrrd-raw", ".nrrd", False), ("nrrd-gzip", ".nrrd", False),
                                                ("nrrd-gzip", ".nrrd", True), ("nifti", ".nii", False),
                                                ("nifti", ".nii.gz", False), ("nifti-scaled", ".nii.gz", False),
                                                ("nifti", ".nii", True), ("mha", ".mha", False),
                                                ("mha", ".mha", True), ("mha", ".mhd", False),
                                                ("mha-compressed", ".mha", False), ("mha-compressed", ".mha", True),
                                                ("mha-compressed", ".mhd", False)])
def test_an_nrrd_nifti_or_mha_clip_is_opened_frame_by_frame_as_read_image_reads_it(tmp_path, kind, suffix, colour):
    frames = _clip(6)
    if colour:
        frames = (np.repeat(frames[..., None], 3, axis=3) * np.array([1, 0.5, 0.25])).astype(np.uint8)
    path = _write_volume_clip(tmp_path / f"cine{suffix}", frames, kind)
    whole, opened = read_image(path), open_image(path)
    assert isinstance(opened.pixels, LazyFrames) and opened.pixels.shape == whole.pixels.shape == (6, 60, 80)
    for index in (0, 1, 2, 5, 3):  # in order, and back again
        np.testing.assert_array_equal(opened.frame(index), whole.frame(index))
        assert opened.frame(index).dtype == np.float32
    assert (opened.spacing_mm, opened.spacing_source, opened.metadata) == \
        (whole.spacing_mm, whole.spacing_source, whole.metadata)
    assert opened.spacing_mm == pytest.approx((0.1, 0.1))
    close_image(opened)


def test_a_cut_nrrd_clip_is_refused_as_read_image_refuses_it_and_a_cut_gzip_keeps_its_first_frames(tmp_path):
    raw = _write_volume_clip(tmp_path / "raw.nrrd", _clip(6), "nrrd-raw")
    raw.write_bytes(raw.read_bytes()[:-60 * 80 * 2])  # the header promises 6 frames, the file holds 4
    with pytest.raises(ImageReadError) as whole:
        read_image(raw)
    with pytest.raises(ImageReadError) as opened:
        open_image(raw)
    assert str(opened.value) == str(whole.value)

    import gzip

    full = _write_volume_clip(tmp_path / "full.nii", _clip(6), "nifti")
    cut = tmp_path / "cut.nii.gz"  # found cut only when frame 4 is decoded: frames 0-3 stand
    cut.write_bytes(gzip.compress(full.read_bytes()[:-60 * 80 * 2]))
    segment_files([cut], tmp_path / "out", ThresholdSegmenter(), spacing_mm=0.1, overlay=False)
    rows = read_results(tmp_path / "out")
    assert [r.frame for r in rows if r.ok] == [0, 1, 2, 3]
    assert [r.error for r in rows if not r.ok] == [f"frame {k} cannot be decoded (the file ends before frame 4)"
                                                   for k in (4, 5)]  # each missing frame said, as a DICOM's


def test_a_colour_picture_in_nrrd_is_one_image_not_a_clip_of_strips(tmp_path):
    import nrrd

    rgb = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    for kinds, data in ((["vector", "domain", "domain"], rgb), (["RGB-color", "domain", "domain"], rgb),
                        (["domain", "domain", "RGB-color"], rgb.transpose(2, 0, 1).copy())):
        path = tmp_path / f"{kinds[0]}.nrrd"  # a screenshot as SimpleITK writes it; a colour axis stored last
        nrrd.write(str(path), data, {"kinds": kinds, "encoding": "gzip"}, index_order="C")
        whole, opened = read_image(path), open_image(path)
        assert not isinstance(opened.pixels, LazyFrames)
        np.testing.assert_array_equal(opened.pixels, whole.pixels)


@pytest.mark.parametrize("suffix", [".nii", ".mha"])
def test_a_cut_uncompressed_nifti_or_mha_clip_is_refused_as_read_image_refuses_it(tmp_path, suffix):
    path = _write_volume_clip(tmp_path / f"cut{suffix}", _clip(6), "nifti" if suffix == ".nii" else "mha")
    path.write_bytes(path.read_bytes()[:-60 * 80 * 2])
    with pytest.raises(ImageReadError) as whole:
        read_image(path)
    with pytest.raises(ImageReadError) as opened:
        open_image(path)
    assert str(opened.value) == str(whole.value)


def test_a_cut_compressed_mha_clip_keeps_the_frames_before_the_cut(tmp_path):
    path = _write_volume_clip(tmp_path / "z.mha", _clip(6), "mha-compressed")
    path.write_bytes(path.read_bytes()[:-40])  # the zlib data ends in the last frames
    segment_files([path], tmp_path / "out", ThresholdSegmenter(), spacing_mm=0.1, overlay=False)
    rows = read_results(tmp_path / "out")
    cut = min(r.frame for r in rows if not r.ok)
    assert 0 < cut < 6 and [r.frame for r in rows if r.ok] == list(range(cut))
    assert [r.error for r in rows if not r.ok] == [f"frame {k} cannot be decoded (the file ends before frame {cut})"
                                                   for k in range(cut, 6)]


def test_a_compressed_mha_clip_is_decompressed_once_in_order(tmp_path, monkeypatch):
    import zlib

    from MedianNerveSegLib import frames

    path = _write_volume_clip(tmp_path / "z.mha", _clip(40), "mha-compressed")
    inflated = []
    decompressobj = zlib.decompressobj

    class Counting:
        def __init__(self):
            self._inflate = decompressobj()

        def decompress(self, data, max_length=0):
            part = self._inflate.decompress(data, max_length)
            inflated.append(len(part))
            return part

        def __getattr__(self, name):
            return getattr(self._inflate, name)

    monkeypatch.setattr(zlib, "decompressobj", Counting)
    opened = open_image(path)
    assert isinstance(opened.pixels, LazyFrames)
    for index in range(40):
        opened.frame(index)
    close_image(opened)
    assert sum(inflated) == 40 * 60 * 80 and max(inflated) <= 60 * 80  # each frame once, never the whole clip
    assert frames.ZlibStream  # the reader that does it


def test_after_the_data_ends_later_frames_fail_without_decoding_the_file_again():
    from MedianNerveSegLib.frames import FileEnded

    starts = []

    def frames_from(start):
        starts.append(start)
        for index in range(start, 5):
            if index >= 2:
                raise FileEnded(index)
            yield np.full((4, 4), index, np.uint8)

    frames = LazyFrames(Path("cut.nrrd"), 5, frames_from, lambda raw: raw)
    for index in (2, 3, 4):
        with pytest.raises(ImageReadError, match=f"frame {index} cannot be decoded .the file ends before frame 2"):
            frames[index]
    assert starts == [0, 2]  # the first frame, then one decode that found the end; frames 3 and 4 fail at once


def test_an_nrrd_with_time_as_its_fastest_axis_is_not_cut_into_strips(tmp_path):
    import nrrd

    path = tmp_path / "time_first.nrrd"
    nrrd.write(str(path), _clip(3).transpose(1, 2, 0).copy(), {"kinds": ["time", "domain", "domain"],
                                                               "encoding": "gzip"}, index_order="C")
    opened = open_image(path)  # read as read_image reads it, whatever that gives: never 60 frames of 80 x 3
    assert not isinstance(opened.pixels, LazyFrames)
    np.testing.assert_array_equal(opened.pixels, read_image(path).pixels)


def _damaged(path: Path, fails_midway: bool) -> Path:
    """``path``'s zlib data with 64 bytes of garbage at 40%: the first garbage that zlib refuses before the data's
    end (``fails_midway``), or one it decompresses to the end and refuses only by its length or checksum there."""
    import zlib

    data, start = path.read_bytes(), path.read_bytes().index(b"LOCAL\n") + len(b"LOCAL\n")
    at = start + (len(data) - start) * 2 // 5
    for seed in range(200):
        damaged = data[:at] + np.random.default_rng(seed).bytes(64) + data[at + 64:]
        inflate = zlib.decompressobj()
        try:
            inflate.decompress(damaged[start:], 60 * 64 * 64)
        except zlib.error:
            if fails_midway:
                break
            continue
        if not fails_midway:
            break
    path.write_bytes(damaged)
    return path


def test_damaged_compressed_data_ends_the_clip_there_without_decompressing_it_again(tmp_path, monkeypatch):
    from MedianNerveSegLib import frames

    clip = (np.random.default_rng(0).integers(0, 4, (60, 64, 64)) * 60).astype(np.uint8)  # compresses, not to nothing
    path = _damaged(_write_volume_clip(tmp_path / "z.mha", clip, "mha-compressed"), fails_midway=True)
    streams, stream = [], frames.ZlibStream

    def counted(handle, offset):
        streams.append(offset)
        return stream(handle, offset)

    monkeypatch.setattr(frames, "ZlibStream", counted)
    segment_files([path], tmp_path / "out", ThresholdSegmenter(), spacing_mm=0.1, overlay=False)
    rows = read_results(tmp_path / "out")
    first_bad = min(r.frame for r in rows if not r.ok)
    assert 0 < first_bad < 59 and [r.frame for r in rows if r.ok] == list(range(first_bad))
    assert all(f"data cannot be read from frame {first_bad} on" in r.error for r in rows if not r.ok)
    assert len(streams) <= 2  # opened, segmented in order; never decompressed again for each later frame


def test_compressed_data_that_does_not_end_right_refuses_the_last_frame(tmp_path):
    clip = (np.random.default_rng(0).integers(0, 4, (60, 64, 64)) * 60).astype(np.uint8)
    path = _damaged(_write_volume_clip(tmp_path / "z.mha", clip, "mha-compressed"), fails_midway=False)
    segment_files([path], tmp_path / "out", ThresholdSegmenter(), spacing_mm=0.1, overlay=False)
    rows = read_results(tmp_path / "out")
    assert [r.frame for r in rows if not r.ok] == [59]  # the stream is checked at its end, after the last frame
    assert "data cannot be read from frame 59 on" in rows[-1].error
