"""Tests for MedianNerveSegLib.io: every supported format written for real, read back."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from PIL import Image

from MedianNerveSegLib.image import SpacingSource
from MedianNerveSegLib.io import (IMAGE_EXTENSIONS, ImageReadError, find_images, read_image, read_mask, to_uint8,
                                  write_mask_nrrd, write_mask_png, write_overlay_png, write_segmentation_nrrd)

from conftest import DATA as DATA_DIR

REAL_IMAGE = DATA_DIR / "images" / "Pz001-001.png"
REAL_MASK = DATA_DIR / "masks" / "Pz001-001.png"
needs_data = pytest.mark.skipif(not REAL_IMAGE.exists(), reason=f"dataset not found at {DATA_DIR}")

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"


def synthetic_rgb(h: int = 40, w: int = 60) -> np.ndarray:
    """A gray gradient with a saturated red marker, like a scanner export."""
    gray = np.tile(np.linspace(0, 200, w, dtype=np.uint8), (h, 1))
    rgb = np.repeat(gray[..., None], 3, axis=2)
    rgb[2:6, 2:10] = (255, 0, 0)
    return rgb


def disk_mask(h: int = 40, w: int = 60) -> np.ndarray:
    rows, cols = np.ogrid[:h, :w]
    return (rows - 18) ** 2 + (cols - 25) ** 2 <= 64


def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


# ----------------------------------------------------------------------------- DICOM builders

def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", region_cm: Optional[float] = None,
                pixel_spacing: Optional[list] = None, frames: int = 1, transfer_syntax: Optional[str] = None,
                with_pixels: bool = True) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_class = US_MULTIFRAME_STORAGE if frames > 1 else US_IMAGE_STORAGE
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.Manufacturer, ds.ManufacturerModelName = "US", "Acme", "Sono 1"
    colour = photometric != "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if region_cm is not None:
        region = Dataset()
        region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 0
        region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
        region.RegionLocationMaxX1, region.RegionLocationMaxY1 = ds.Columns - 1, ds.Rows - 1
        region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3
        region.PhysicalDeltaX = region.PhysicalDeltaY = region_cm
        ds.SequenceOfUltrasoundRegions = [region]
    if pixel_spacing is not None:
        ds.PixelSpacing = pixel_spacing
    if transfer_syntax is not None:  # compressed: a fragment no installed decoder can handle
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([b"\x00" * 64])
    elif with_pixels:
        ds.PixelData = pixels.astype(np.uint8).tobytes()
    dcmwrite(path, ds, enforce_file_format=True)
    return path


# ----------------------------------------------------------------------------- 2D raster formats

@needs_data
def test_real_png_becomes_grayscale_with_unknown_spacing():
    image = read_image(REAL_IMAGE)
    with Image.open(REAL_IMAGE) as img:
        rgb = np.asarray(img.convert("RGB"))
    assert image.pixels.shape == (468, 606)
    assert image.pixels.dtype == np.float32
    assert image.spacing_mm is None and image.spacing_source == SpacingSource.UNKNOWN
    assert image.source == str(REAL_IMAGE)
    assert image.metadata["format"] == "png" and image.metadata["original_shape"] == (468, 606, 3)
    gray = (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])
    assert gray.mean() > 0.9 and not gray.all()
    np.testing.assert_array_equal(image.pixels[gray], rgb[..., 0][gray].astype(np.float32))
    np.testing.assert_allclose(image.pixels[~gray], luma(rgb.astype(float))[~gray], atol=1e-3)


@needs_data
def test_real_mask_is_boolean_and_matches_file():
    mask = read_mask(REAL_MASK)
    with Image.open(REAL_MASK) as img:
        raw = np.asarray(img)
    assert mask.dtype == bool and mask.shape == (468, 606)
    np.testing.assert_array_equal(mask, raw > 0)
    assert 0 < mask.sum() < mask.size


@pytest.mark.parametrize("suffix", [".bmp", ".jpg", ".tif"])
def test_rgb_raster_with_marker_reads_as_gray(tmp_path, suffix):
    rgb = synthetic_rgb()
    path = tmp_path / f"frame{suffix}"
    Image.fromarray(rgb).save(path)
    image = read_image(path)
    assert image.pixels.shape == (40, 60) and image.pixels.dtype == np.float32
    assert image.spacing_source == SpacingSource.UNKNOWN
    with Image.open(path) as img:
        decoded = np.asarray(img.convert("RGB")).astype(float)  # JPEG is lossy
    np.testing.assert_allclose(image.pixels, luma(decoded), atol=1e-3)
    assert abs(image.pixels[3, 5] - 0.299 * 255) < 10  # the red marker is a dark gray
    if suffix != ".jpg":
        np.testing.assert_allclose(image.pixels, luma(rgb.astype(float)), atol=1e-3)


def test_16bit_png_keeps_values(tmp_path):
    values = (np.arange(32 * 48, dtype=np.uint16).reshape(32, 48) * 40)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    image = read_image(path)
    assert image.pixels.max() > 255
    np.testing.assert_array_equal(image.pixels, values.astype(np.float32))


def test_all_black_image_reads_as_zeros(tmp_path):
    path = tmp_path / "black.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(path)
    image = read_image(path)
    assert image.pixels.shape == (20, 30) and not image.pixels.any()


def test_multipage_tiff_is_a_clip(tmp_path):
    frames = [Image.fromarray(np.full((10, 12), v, np.uint8)) for v in (10, 20, 30)]
    path = tmp_path / "cine.tiff"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    image = read_image(path)
    assert image.pixels.shape == (3, 10, 12) and image.n_frames == 3
    assert image.pixels[2, 0, 0] == 30


# ----------------------------------------------------------------------------- header formats

@pytest.mark.parametrize("header", [
    {"spacings": [0.05, 0.07]},  # NRRD axes run x (columns) first
    {"space dimension": 2, "space directions": np.array([[0.05, 0.0], [0.0, 0.07]])},
], ids=["spacings", "space-directions"])
def test_nrrd_anisotropic_spacing_is_row_col(tmp_path, header):
    import nrrd

    pixels = np.random.default_rng(0).integers(0, 255, (30, 50), dtype=np.uint8)  # (rows, cols)
    path = tmp_path / "frame.nrrd"
    nrrd.write(str(path), pixels, header, index_order="C")
    image = read_image(path)
    assert image.pixels.shape == (30, 50)
    np.testing.assert_array_equal(image.pixels, pixels)
    assert image.spacing_mm == pytest.approx((0.07, 0.05))
    assert image.spacing_source == SpacingSource.FILE_HEADER


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha", ".nrrd"])
def test_simpleitk_formats_with_singleton_slice(tmp_path, suffix):
    import SimpleITK as sitk

    pixels = np.random.default_rng(1).integers(0, 255, (1, 30, 50)).astype(np.uint8)  # (z, y, x)
    itk = sitk.GetImageFromArray(pixels)
    itk.SetSpacing((0.05, 0.07, 2.0))  # x, y, z
    path = tmp_path / f"frame{suffix}"
    sitk.WriteImage(itk, str(path))
    image = read_image(path)
    assert image.pixels.shape == (30, 50)
    np.testing.assert_array_equal(image.pixels, pixels[0])
    assert image.spacing_mm == pytest.approx((0.07, 0.05))
    assert image.spacing_source == SpacingSource.FILE_HEADER
    assert image.metadata["original_shape"] == (1, 30, 50)


def test_3d_stack_is_frames(tmp_path):
    import SimpleITK as sitk

    pixels = np.random.default_rng(2).integers(0, 255, (4, 20, 25)).astype(np.uint8)
    itk = sitk.GetImageFromArray(pixels)
    itk.SetSpacing((0.1, 0.2, 1.0))
    path = tmp_path / "cine.mha"
    sitk.WriteImage(itk, str(path))
    image = read_image(path)
    assert image.pixels.shape == (4, 20, 25)
    assert image.spacing_mm == pytest.approx((0.2, 0.1))


def test_4d_volume_is_not_an_image(tmp_path):
    import nrrd

    path = tmp_path / "volume4d.nrrd"
    nrrd.write(str(path), np.zeros((2, 3, 20, 25), np.uint8), index_order="C")
    with pytest.raises(ImageReadError, match="not a 2D image"):
        read_image(path)


def test_spacing_override_is_user(tmp_path):
    path = tmp_path / "frame.png"
    Image.fromarray(synthetic_rgb()).save(path)
    assert read_image(path, spacing_mm=0.08).spacing_mm == (0.08, 0.08)
    image = read_image(path, spacing_mm=(0.07, 0.05))
    assert image.spacing_mm == (0.07, 0.05) and image.spacing_source == SpacingSource.USER
    with pytest.raises(ValueError):
        read_image(path, spacing_mm=(0.07, -1))


# ----------------------------------------------------------------------------- DICOM

def test_dicom_us_region_spacing(tmp_path):
    pixels = np.random.default_rng(3).integers(0, 255, (32, 40)).astype(np.uint8)
    path = write_dicom(tmp_path / "us.dcm", pixels, region_cm=0.0062, pixel_spacing=[0.5, 0.5])
    image = read_image(path)
    np.testing.assert_array_equal(image.pixels, pixels)
    assert image.spacing_mm == pytest.approx((0.062, 0.062))
    assert image.spacing_source == SpacingSource.DICOM_US_REGION
    assert image.metadata["Manufacturer"] == "Acme" and image.metadata["ManufacturerModelName"] == "Sono 1"
    assert image.metadata["format"] == "dicom"


def test_dicom_rgb_is_converted_by_luma(tmp_path):
    rgb = synthetic_rgb(32, 40)
    image = read_image(write_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB", region_cm=0.0062))
    assert image.pixels.shape == (32, 40)
    np.testing.assert_allclose(image.pixels, luma(rgb.astype(float)), atol=1e-3)


def test_dicom_ybr_full_is_converted_to_rgb_first(tmp_path):
    from pydicom.pixels import convert_color_space

    rgb = synthetic_rgb(32, 40)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    image = read_image(write_dicom(tmp_path / "ybr.dcm", ybr, photometric="YBR_FULL"))
    np.testing.assert_allclose(image.pixels, luma(rgb.astype(float)), atol=2.0)


def test_dicom_pixel_spacing_without_region(tmp_path):
    pixels = np.zeros((16, 24), np.uint8)
    image = read_image(write_dicom(tmp_path / "ps.dcm", pixels, pixel_spacing=[0.07, 0.05]))
    assert image.spacing_mm == pytest.approx((0.07, 0.05))
    assert image.spacing_source == SpacingSource.DICOM_PIXEL_SPACING


def test_dicom_without_extension_detected_by_magic(tmp_path):
    pixels = np.ones((16, 24), np.uint8)
    path = write_dicom(tmp_path / "IM_0001", pixels)
    image = read_image(path)
    assert image.pixels.shape == (16, 24) and image.spacing_source == SpacingSource.UNKNOWN


def test_multiframe_dicom_is_a_clip(tmp_path):
    pixels = np.random.default_rng(4).integers(0, 255, (5, 24, 32)).astype(np.uint8)
    image = read_image(write_dicom(tmp_path / "cine.dcm", pixels, region_cm=0.0062, frames=5))
    assert image.pixels.shape == (5, 24, 32) and image.n_frames == 5
    np.testing.assert_array_equal(image.pixels, pixels)
    assert image.spacing_mm == pytest.approx((0.062, 0.062))
    assert image.spacing_source == SpacingSource.DICOM_US_REGION
    assert image.metadata["NumberOfFrames"] == 5


def test_multiframe_rgb_dicom(tmp_path):
    rgb = np.stack([synthetic_rgb(24, 32)] * 3)
    image = read_image(write_dicom(tmp_path / "cine_rgb.dcm", rgb, photometric="RGB", frames=3))
    assert image.pixels.shape == (3, 24, 32)


# ----------------------------------------------------------------------------- read errors

def _bad_inputs(tmp_path: Path) -> dict:
    png = tmp_path / "good.png"
    Image.fromarray(synthetic_rgb()).save(png)
    cases = {"missing": tmp_path / "missing.png", "empty": tmp_path / "empty.png",
             "truncated": tmp_path / "truncated.png", "text": tmp_path / "text.png",
             "unsupported": tmp_path / "notes.txt", "no_pixels": tmp_path / "nopix.dcm",
             "compressed": tmp_path / "jpegls.dcm", "bad_nrrd": tmp_path / "bad.nrrd"}
    cases["empty"].write_bytes(b"")
    cases["truncated"].write_bytes(png.read_bytes()[:100])
    cases["text"].write_text("this is not an image\n")
    cases["unsupported"].write_text("hello\n")
    cases["bad_nrrd"].write_text("NRRD0004\ntype: uint8\n")
    write_dicom(cases["no_pixels"], np.zeros((8, 8), np.uint8), with_pixels=False)
    write_dicom(cases["compressed"], np.zeros((8, 8), np.uint8), transfer_syntax="1.2.840.10008.1.2.4.80")
    return cases


def test_bad_inputs_raise_image_read_error(tmp_path):
    cases = _bad_inputs(tmp_path)
    for name, path in cases.items():
        with pytest.raises(ImageReadError) as info:
            read_image(path)
        assert str(info.value).startswith(f"{path}: "), name
        assert info.value.path == path and info.value.reason, name
    with pytest.raises(ImageReadError, match="JPEG-LS"):
        read_image(cases["compressed"])
    with pytest.raises(ImageReadError, match="no pixel data"):
        read_image(cases["no_pixels"])
    with pytest.raises(ImageReadError, match="empty"):
        read_image(cases["empty"])


def test_bad_masks_raise_image_read_error(tmp_path):
    cases = _bad_inputs(tmp_path)
    for name in ("missing", "empty", "truncated", "text", "unsupported", "bad_nrrd"):
        with pytest.raises(ImageReadError) as info:
            read_mask(cases[name])
        assert str(info.value).startswith(f"{cases[name]}: "), name


def test_image_read_error_format():
    error = ImageReadError("a/b.png", "file is empty")
    assert str(error) == "a/b.png: file is empty" and isinstance(error, ValueError)
    assert (error.path, error.reason) == ("a/b.png", "file is empty")


# ----------------------------------------------------------------------------- masks and outputs

def test_mask_png_round_trip(tmp_path):
    mask = disk_mask()
    path = tmp_path / "out" / "frame_mask.png"
    write_mask_png(path, mask)
    with Image.open(path) as img:
        assert img.mode == "L" and img.size == (60, 40)
        assert set(np.unique(np.asarray(img))) == {0, 255}
    np.testing.assert_array_equal(read_mask(path), mask)
    assert [p.name for p in path.parent.iterdir()] == ["frame_mask.png"]  # no temp file left


def test_rgb_mask_any_channel(tmp_path):
    mask = disk_mask()
    rgba = np.zeros(mask.shape + (4,), np.uint8)
    rgba[..., 3] = 255  # opaque everywhere: alpha must not count
    rgba[mask, 1] = 200
    path = tmp_path / "rgb_mask.png"
    Image.fromarray(rgba).save(path)
    np.testing.assert_array_equal(read_mask(path), mask)


def test_mask_nrrd_round_trip_with_spacing(tmp_path):
    import nrrd

    mask = disk_mask()
    path = tmp_path / "mask.nrrd"
    write_mask_nrrd(path, mask, (0.07, 0.05))
    data, header = nrrd.read(str(path), index_order="C")
    assert data.dtype == np.uint8 and set(np.unique(data)) == {0, 1}
    np.testing.assert_allclose(header["space directions"], [[0.05, 0], [0, 0.07]])  # x (columns) first
    np.testing.assert_array_equal(read_mask(path), mask)
    assert read_image(path).spacing_mm == pytest.approx((0.07, 0.05))
    write_mask_nrrd(path, mask, None)
    assert "space directions" not in nrrd.read_header(str(path))


def test_segmentation_nrrd_round_trip(tmp_path):
    import slicerio

    mask = disk_mask()
    mask[0, :3] = True  # asymmetric, so a transposed or flipped read would fail
    path = tmp_path / "frame.seg.nrrd"
    write_segmentation_nrrd(path, mask, (0.07, 0.05))
    seg = slicerio.read_segmentation(str(path))
    assert slicerio.segment_names(seg) == ["Median nerve"]
    segment = seg["segments"][0]
    assert segment["labelValue"] == 1 and segment["color"] == pytest.approx([244 / 255, 214 / 255, 49 / 255])
    assert segment["terminology"]["type"] == ["SCT", "119410002", "Nerve"]  # as the Slicer module codes it
    assert seg["voxels"].shape == (60, 40, 1)  # (i, j, k) = (columns, rows, slice)
    np.testing.assert_allclose(np.diag(seg["ijkToLPS"])[:2], [0.05, 0.07])
    np.testing.assert_array_equal(read_mask(path), mask)


def test_segmentation_prefers_median_nerve_segment(tmp_path):
    import slicerio

    mask = disk_mask()
    other = np.zeros_like(mask)
    other[30:35, 40:50] = True
    seg = slicerio.create_segmentation((60, 40, 1), np.eye(4))
    slicerio.add_segment(seg, other.T[:, :, None], {"name": "Tendon"})
    slicerio.add_segment(seg, mask.T[:, :, None], {"name": "Median nerve"})
    path = tmp_path / "two.seg.nrrd"
    slicerio.write_segmentation(str(path), seg)
    np.testing.assert_array_equal(read_mask(path), mask)


def test_overlay_png(tmp_path):
    frame = np.random.default_rng(5).integers(0, 2000, (40, 60)).astype(np.float32)
    mask = disk_mask()
    path = tmp_path / "frame_overlay.png"
    write_overlay_png(path, frame, mask, color=(255, 215, 0))
    with Image.open(path) as img:
        assert img.mode == "RGB" and img.size == (60, 40)
        rgb = np.asarray(img)
    outline = np.all(rgb == (255, 215, 0), axis=-1)
    assert outline[18, 25 - 8] and outline[18, 25 + 8]  # left and right edges of the disk
    assert not outline[0, 0] and not outline[18, 25]
    outside = ~mask & ~outline
    np.testing.assert_array_equal(rgb[outside][:, 0], to_uint8(frame)[outside])
    with pytest.raises(ValueError):
        write_overlay_png(path, frame, mask[:-1])


def test_overlay_caption_above_the_frame_and_a_5_mm_scale_bar(tmp_path):
    frame = np.full((200, 300), 40, np.uint8)
    path = tmp_path / "captioned_overlay.png"
    write_overlay_png(path, frame, np.zeros((200, 300), bool), caption=["CSA 12.00 mm\u00b2", "right inlet"],
                      spacing_mm=0.05)
    rgb = np.asarray(Image.open(path))
    band = rgb.shape[0] - 200
    assert rgb.shape[1:] == (300, 3) and 10 < band < 40
    assert rgb[:band].max() == 255 and rgb[:band, :, 0].mean() < 60  # white text on black, above the image
    image = rgb[band:, :, 0]
    assert np.count_nonzero(image[-12] == 255) == 101  # the scale bar: 5 mm at 0.05 mm/pixel, 100 pixels
    np.testing.assert_array_equal(image[:150], 40)  # the anatomy is never covered


def test_to_uint8():
    np.testing.assert_array_equal(to_uint8(np.array([0.0, 127.6, 255.0])), [0, 128, 255])
    np.testing.assert_array_equal(to_uint8(np.array([100.0, 1100.0])), [0, 255])
    np.testing.assert_array_equal(to_uint8(np.full((2, 2), 300.0)), np.zeros((2, 2)))


# ----------------------------------------------------------------------------- finding files

def test_find_images_in_mixed_folder(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("b.png", "a.dcm", "c.nii.gz", "frame_mask.png", "frame_overlay.png", "notes.txt",
                 "frame.seg.nrrd", ".hidden.png"):
        (folder / name).write_bytes(b"x")
    write_dicom(folder / "IM_0001", np.zeros((8, 8), np.uint8))
    (folder / "sub").mkdir()
    (folder / "sub" / "d.png").write_bytes(b"x")
    loose = tmp_path / "loose.txt"
    loose.write_text("kept as given")
    found = find_images([folder, loose])
    assert [p.name for p in found] == ["IM_0001", "a.dcm", "b.png", "c.nii.gz", "loose.txt"]
    assert ".png" in IMAGE_EXTENSIONS and ".nii.gz" in IMAGE_EXTENSIONS
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_images([tmp_path / "nowhere"])
