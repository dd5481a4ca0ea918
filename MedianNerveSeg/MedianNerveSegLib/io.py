"""Reading ultrasound images and masks, writing masks, segmentations and overlays.

Every failure to read a file raises :class:`ImageReadError` with a short reason.
SimpleITK, nibabel, pydicom, pynrrd, slicerio and scikit-image are imported only where needed,
so that PNG reading and writing work with numpy and Pillow alone.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageSequence

from .image import SpacingSource, UltrasoundImage
from .spacing import SpacingError, parse_spacing

PathLike = Union[str, Path]
Spacing = Optional[Tuple[float, float]]

NERVE_SEGMENT_NAME = "Median nerve"

_SKIPPED_SUFFIXES = ("_mask.png", "_overlay.png", "_prob.png", "_csa.png", ".seg.nrrd", "_seg.dcm", "_sr.dcm")
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601
_FILL_ALPHA = 0.25
_DICOM_CM_UNITS = 3


class ImageReadError(ValueError):
    """A file that cannot be read as an image or mask."""

    def __init__(self, path: PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


# ----------------------------------------------------------------------------- the format registry

@dataclass
class _Decoded:
    """What a format's reader found: pixels, the file's own (row, col) spacing if it states one."""

    pixels: np.ndarray
    original_shape: Tuple[int, ...]
    spacing: Any = None  # raw values; read_image checks them with the one spacing parser
    spacing_source: str = SpacingSource.UNKNOWN
    metadata: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FileFormat:
    """One image format: its file endings and its readers (a mask reader returns the raw array)."""

    name: str
    suffixes: Tuple[str, ...]
    read_image: Callable[[Path], _Decoded]
    read_mask: Optional[Callable[[Path], np.ndarray]] = None


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _has_dicom_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def format_of(path: PathLike) -> Optional[FileFormat]:
    """The registered format of a file by its ending (a DICOM file also by its magic), None if unsupported."""
    path = Path(path)
    fmt = _BY_SUFFIX.get(_suffix(path))
    if fmt is None and _has_dicom_magic(path):
        fmt = _BY_SUFFIX[".dcm"]
    return fmt


def _is_listed_image(path: Path) -> bool:
    name = path.name.lower()
    return (path.is_file() and not name.startswith(".") and not name.endswith(_SKIPPED_SUFFIXES)
            and format_of(path) is not None)


def find_images(paths: Sequence[PathLike]) -> List[Path]:
    """Given files as they are, plus the supported images directly inside given folders (sorted)."""
    found: List[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            found.extend(sorted(p for p in item.iterdir() if _is_listed_image(p)))
        elif item.exists():
            found.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or directory")
    return found


# ----------------------------------------------------------------------------- pixels

def channels_to_grey(pixels: np.ndarray) -> np.ndarray:
    """(..., C) -> (...): BT.601 luma of RGB(A) as float32, the first channel otherwise. The one grey
    conversion; a clip is converted a frame at a time, so that its float64 temporaries are one frame's."""
    if pixels.shape[-1] < 3:
        return pixels[..., 0]
    if pixels.ndim > 3:
        grey = np.empty(pixels.shape[:-1], np.float32)
        for index, frame in enumerate(pixels):
            grey[index] = channels_to_grey(frame)
        return grey
    return (pixels[..., :3] @ np.array(_LUMA)).astype(np.float32)  # float64 sums, no float64 copy: 5 -> 1.8 ms


def _check_finite(path: Path, pixels: np.ndarray, what: str = "pixels") -> None:
    if np.issubdtype(pixels.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(pixels)))
        if bad:
            raise ImageReadError(path, f"{bad} of {pixels.size} {what} are NaN or infinite")


def _pil_array(frame: Image.Image) -> np.ndarray:
    """Pixels of a Pillow image; palette, bilevel and other colour spaces become RGB."""
    if frame.mode not in ("L", "LA", "RGB", "RGBA", "I", "I;16", "I;16B", "I;16L", "F"):
        frame = frame.convert("RGBA" if frame.mode == "PA" else "RGB")
    return np.asarray(frame)


def _pil_frames(path: Path) -> List[np.ndarray]:
    try:
        with Image.open(path) as img:
            return [_pil_array(frame) for frame in ImageSequence.Iterator(img)]
    except Exception as exc:
        raise ImageReadError(path, f"not a valid or complete {_suffix(path)[1:].upper()} image") from exc


def _read_pil(path: Path) -> _Decoded:
    """PNG/BMP/JPEG/TIFF: every page of a multi-page file is a frame; they carry no spacing."""
    frames = _pil_frames(path)
    if len({f.shape for f in frames}) != 1:
        raise ImageReadError(path, "frames differ in size")
    stack = np.stack([channels_to_grey(f) if f.ndim == 3 else f for f in frames])
    return _Decoded(stack[0] if len(frames) == 1 else stack, frames[0].shape)


def _read_pil_mask(path: Path) -> np.ndarray:
    pages = _pil_frames(path)
    if len(pages) > 1:
        raise ImageReadError(path, f"{len(pages)} pages: a mask is one image (give the mask of the frame you mean)")
    arr = pages[0]
    if arr.ndim == 3:  # colour mask: any colour channel (never alpha) nonzero
        return np.any(arr[..., :3] if arr.shape[-1] >= 3 else arr[..., :1], axis=-1)
    return arr


def _squeeze_stack(path: Path, decoded: _Decoded, spacing_zyx: Sequence[Optional[float]]) -> _Decoded:
    """Drop singleton axes; keep (H, W) or (T, H, W) with the (row, col) spacing (None if not stated)."""
    arr = decoded.pixels
    keep = [axis for axis, size in enumerate(arr.shape) if size > 1]
    if len(keep) not in (2, 3):
        raise ImageReadError(path, f"not a 2D image or 2D+time stack (shape {arr.shape})")
    if len(keep) < arr.ndim:  # (an opened clip has no singleton axis, and no reshape)
        decoded.pixels = arr.reshape([arr.shape[axis] for axis in keep])
    row, col = spacing_zyx[keep[-2]], spacing_zyx[keep[-1]]
    if row is not None and col is not None:
        decoded.spacing, decoded.spacing_source = (row, col), SpacingSource.FILE_HEADER
    return decoded


def _read_itk_pixels(path: Path) -> Tuple[Any, np.ndarray]:
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(path))
        return img, sitk.GetArrayFromImage(img)
    except Exception as exc:
        raise ImageReadError(path, f"not a valid or complete {_suffix(path)[1:].upper()} image") from exc


def _stated(spacing_zyx: List[float]) -> List[Optional[float]]:
    """NIfTI and MetaImage writers store 1 mm when no spacing was given: exactly 1 x 1 mm in-plane
    is taken as not stated (no wrist ultrasound has 1 mm pixels)."""
    return [None if spacing_zyx[-2:] == [1.0, 1.0] else s for s in spacing_zyx]


def _read_metaimage(path: Path) -> _Decoded:
    img, arr = _read_itk_pixels(path)
    decoded = _Decoded(arr, arr.shape)
    if img.GetNumberOfComponentsPerPixel() > 1:
        decoded.pixels = channels_to_grey(arr)
    return _squeeze_stack(path, decoded, _stated([float(s) for s in reversed(img.GetSpacing())]))


def _nifti_array(path: Path) -> Tuple[np.ndarray, Any]:
    """Voxels (slowest axis first, as SimpleITK gives them) and header, read with nibabel: ITK 5's
    NIfTI reader silently turns NaN and Inf into 0 (ITK pull request 6683)."""
    import nibabel

    try:
        img = nibabel.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise ImageReadError(path, "not a valid or complete NIfTI image") from exc
    if data.dtype.names:  # RGB24 / RGBA32: one field per channel, channels last
        channels = np.stack([data[name] for name in data.dtype.names], axis=-1)
        return channels.transpose(tuple(reversed(range(data.ndim))) + (data.ndim,)), img.header
    return data.T, img.header


def _read_nifti(path: Path) -> _Decoded:
    arr, header = _nifti_array(path)
    colour = header.get_data_dtype().names is not None
    decoded = _Decoded(channels_to_grey(arr) if colour else arr, arr.shape)
    return _squeeze_stack(path, decoded, _nifti_spacing_zyx(header, arr.ndim - colour))


def _nifti_spacing_zyx(header: Any, ndim: int) -> List[Optional[float]]:
    """The stated spacing (mm) of each of the ``ndim`` array axes, slowest first."""
    to_mm = {"meter": 1000.0, "micron": 0.001}.get(header.get_xyzt_units()[0], 1.0)
    zooms = [float(z) * to_mm for z in header.get_zooms()[:ndim]]
    return _stated(list(reversed(zooms)))


def _read_nifti_mask(path: Path) -> np.ndarray:
    return _nifti_array(path)[0]


def _nrrd_axis_spacings(path: Path, n_components: int) -> List[Optional[float]]:
    """Per array axis (slowest first), the spacing the NRRD header states ('space directions' or
    'spacings'), None for an axis without one; a component (colour) axis is left out."""
    import nrrd

    try:
        header = nrrd.read_header(str(path))
    except Exception as exc:
        raise ImageReadError(path, "not a valid NRRD header") from exc
    directions = header.get("space directions")
    if directions is not None:
        spacings = [None if d is None or not np.all(np.isfinite(np.asarray(d, float))) else float(np.linalg.norm(d))
                    for d in directions]
    else:
        spacings = [None if s is None or not np.isfinite(s) else float(s) for s in header.get("spacings", [])]
    spacings += [None] * (int(header.get("dimension", len(spacings))) - len(spacings))
    if n_components > 1:
        spacings = spacings[1:]  # NRRD axes are listed fastest first: the component axis leads
    return list(reversed(spacings))


def _read_nrrd(path: Path) -> _Decoded:
    img, arr = _read_itk_pixels(path)
    decoded = _Decoded(arr, arr.shape)
    n_components = img.GetNumberOfComponentsPerPixel()
    if n_components > 1:
        decoded.pixels = channels_to_grey(arr)
    return _squeeze_stack(path, decoded, _nrrd_axis_spacings(path, n_components))


def _read_metaimage_mask(path: Path) -> np.ndarray:
    return _read_itk_pixels(path)[1]


def _read_segmentation_mask(path: Path) -> np.ndarray:
    """The 'Median nerve' segment (else the first) of a Slicer .seg.nrrd, as (rows, cols)."""
    import slicerio

    try:
        seg = slicerio.read_segmentation(str(path))
    except Exception as exc:
        raise ImageReadError(path, "not a valid Slicer segmentation file") from exc
    segments = seg.get("segments") or []
    if not segments:
        raise ImageReadError(path, "segmentation has no segments")
    segment = next((s for s in segments if s.get("name") == NERVE_SEGMENT_NAME), segments[0])
    ijk = slicerio.segment_mask(seg, segment)  # axes (i, j, k) = (column, row, slice)
    return _squeeze_mask(path, ijk).T


def _read_nrrd_mask(path: Path) -> np.ndarray:
    import nrrd

    try:
        header = nrrd.read_header(str(path))
        if any(key.startswith(("Segment0_", "Segmentation_")) for key in header):
            return _read_segmentation_mask(path)
        data, _ = nrrd.read(str(path), index_order="C")
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(path, "not a valid or complete NRRD file") from exc
    return data


def _dicom_spacing(path: Path, ds: Any) -> Tuple[Any, str]:
    """(row, col) mm from the first ultrasound region in cm, else PixelSpacing / ImagerPixelSpacing."""
    try:
        for region in ds.get("SequenceOfUltrasoundRegions", None) or []:
            units = (region.get("PhysicalUnitsXDirection"), region.get("PhysicalUnitsYDirection"))
            dx, dy = region.get("PhysicalDeltaX"), region.get("PhysicalDeltaY")
            if units == (_DICOM_CM_UNITS, _DICOM_CM_UNITS) and dx and dy:
                return (float(dy) * 10.0, float(dx) * 10.0), SpacingSource.DICOM_US_REGION
        for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
            value = ds.get(keyword)
            if value is not None and len(value) == 2:
                return (float(value[0]), float(value[1])), SpacingSource.DICOM_PIXEL_SPACING
    except (TypeError, ValueError) as exc:
        raise ImageReadError(path, f"DICOM pixel spacing is not a number ({exc})") from exc
    return None, SpacingSource.UNKNOWN


def _dicom_pixels(path: Path, ds: Any) -> np.ndarray:
    """Decoded pixels as grey; pydicom 3 returns YBR data as RGB (as_rgb=True by default)."""
    try:
        arr = ds.pixel_array
    except Exception as exc:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        detail = f" with transfer syntax {ts.name} ({ts})" if ts else ""
        raise ImageReadError(path, f"cannot decode the DICOM pixel data{detail}") from exc
    return _dicom_grey(ds, arr)


def _dicom_grey(ds: Any, arr: np.ndarray) -> np.ndarray:
    """Decoded pixels (a frame or a clip) as grey: palette and colour to luma, MONOCHROME1 inverted."""
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
    elif photometric == "MONOCHROME1":
        bits = int(ds.get("BitsStored", 8))
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if ds.get("PixelRepresentation") == 1 else (0, 2 ** bits - 1)
        arr = (lo + hi) - arr.astype(np.float64)
    colour = photometric == "PALETTE COLOR" or int(ds.get("SamplesPerPixel", 1)) > 1
    return channels_to_grey(arr) if colour else arr


def _read_dicom(path: Path) -> _Decoded:
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), force=True)
    except Exception as exc:
        raise ImageReadError(path, "not a readable DICOM file") from exc
    if str(ds.get("Modality", "")) in ("SEG", "SR", "PR"):
        raise ImageReadError(path, f"a DICOM {ds.Modality} object (a result), not an ultrasound image")
    if "PixelData" not in ds:
        raise ImageReadError(path, "DICOM file has no pixel data")
    arr = _dicom_pixels(path, ds)
    if arr.ndim not in (2, 3):
        raise ImageReadError(path, f"not a 2D image or 2D+time stack (shape {arr.shape})")
    spacing, source = _dicom_spacing(path, ds)
    return _Decoded(arr, tuple(arr.shape), spacing, source, _dicom_metadata(path, ds))


_DICOM_TEXT = ("Manufacturer", "ManufacturerModelName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID",
               "SOPInstanceUID", "SOPClassUID", "FrameOfReferenceUID")


def _dicom_metadata(path: Path, ds: Any) -> Dict[str, Any]:
    """What a report and a DICOM SEG/SR need: device, patient, side, acquisition time, frame times, UIDs."""
    meta: Dict[str, Any] = {key: str(ds.get(key)) for key in _DICOM_TEXT if ds.get(key) not in (None, "")}
    side = str(ds.get("ImageLaterality") or ds.get("Laterality") or "").upper()
    if side in ("L", "R"):
        meta["Laterality"] = side
    if ds.get("NumberOfFrames") not in (None, ""):
        meta["NumberOfFrames"] = int(ds.NumberOfFrames)
    acquired = _dicom_datetime(ds)
    if acquired:
        meta["AcquisitionDateTime"] = acquired
    try:
        if ds.get("FrameTimeVector") is not None:  # ms from the previous frame, the first 0
            meta["FrameTimesS"] = [float(t) / 1000 for t in np.cumsum([float(v) for v in ds.FrameTimeVector])]
        elif ds.get("FrameTime") not in (None, ""):
            meta["FrameTimeS"] = float(ds.FrameTime) / 1000
    except (TypeError, ValueError) as exc:
        raise ImageReadError(path, f"DICOM frame time is not a number ({exc})") from exc
    return meta


def _dicom_datetime(ds: Any) -> str:
    """ISO 8601 acquisition (else content, else series) date and time; '' when the file has none."""
    text = str(ds.get("AcquisitionDateTime") or "")
    if not text:
        for prefix in ("Acquisition", "Content", "Series", "Study"):
            date, time = str(ds.get(f"{prefix}Date") or ""), str(ds.get(f"{prefix}Time") or "")
            if date:
                text = date + time
                break
    digits = text.split("+")[0].split("-")[0]
    if len(digits) < 8 or not digits[:8].isdigit():
        return ""
    iso = f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}"
    clock = digits[8:14]
    return iso + (f"T{clock[:2]}:{clock[2:4]}:{clock[4:6]}" if len(clock) == 6 and clock.isdigit() else "")


FORMATS = (
    FileFormat("png", (".png",), _read_pil, _read_pil_mask),
    FileFormat("bmp", (".bmp",), _read_pil, _read_pil_mask),
    FileFormat("jpeg", (".jpg", ".jpeg"), _read_pil),
    FileFormat("tiff", (".tif", ".tiff"), _read_pil, _read_pil_mask),
    FileFormat("nrrd", (".nrrd", ".nhdr"), _read_nrrd, _read_nrrd_mask),
    FileFormat("nifti", (".nii", ".nii.gz"), _read_nifti, _read_nifti_mask),
    FileFormat("metaimage", (".mha", ".mhd"), _read_metaimage, _read_metaimage_mask),
    FileFormat("dicom", (".dcm",), _read_dicom),
)
_BY_SUFFIX = {suffix: fmt for fmt in FORMATS for suffix in fmt.suffixes}
IMAGE_EXTENSIONS = tuple(_BY_SUFFIX)
_SPACING_ORIGINS = {SpacingSource.FILE_HEADER: "header", SpacingSource.DICOM_US_REGION: "DICOM ultrasound region",
                    SpacingSource.DICOM_PIXEL_SPACING: "DICOM pixel spacing"}


# ----------------------------------------------------------------------------- reading

def _check_file(path: Path) -> FileFormat:
    if not path.exists():
        raise ImageReadError(path, "file not found")
    if path.is_dir():
        raise ImageReadError(path, "is a directory, not a file")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "file is empty")
    fmt = format_of(path)
    if fmt is None:
        raise ImageReadError(path, f"unsupported file type '{_suffix(path) or 'no extension'}'")
    return fmt


def _file_spacing(path: Path, decoded: _Decoded) -> Spacing:
    """The file's own spacing, refused in one line when it is not a plausible ultrasound spacing."""
    try:
        return parse_spacing(decoded.spacing, str(path))
    except SpacingError as error:
        origin = _SPACING_ORIGINS.get(decoded.spacing_source, decoded.spacing_source)
        raise ImageReadError(path, f"{origin} {error.reason}; give --spacing to measure it anyway") from None


def read_image(path: PathLike, spacing_mm: Optional[Union[float, Sequence[float]]] = None) -> UltrasoundImage:
    """Read a frame (H, W) or clip (T, H, W) as float32 grayscale with its pixel spacing.

    ``spacing_mm`` (a number, or a (row, col) pair) overrides the file's spacing. A spacing the
    file does not really state is unknown, never assumed; NaN or infinite pixels are refused.
    """
    path = Path(path)
    fmt = _check_file(path)
    decoded = fmt.read_image(path)
    _check_finite(path, decoded.pixels)
    decoded.pixels = np.ascontiguousarray(decoded.pixels, dtype=np.float32)
    return _image(path, fmt, decoded, spacing_mm)


def open_image(path: PathLike, spacing_mm: Optional[Union[float, Sequence[float]]] = None) -> UltrasoundImage:
    """As :func:`read_image`, but a clip (a multi-frame DICOM, multi-page TIFF, or 2D+time NRRD, NIfTI or MHA) is
    opened, not read: its frames are decoded one at a time as they are asked for (:mod:`frames`); close it
    with :func:`close_image`."""
    from .frames import open_dicom_clip, open_metaimage_clip, open_nifti_clip, open_nrrd_clip, open_tiff_clip

    path = Path(path)
    fmt = _check_file(path)
    if fmt.name == "dicom":
        opened = open_dicom_clip(path, _dicom_grey)
        if opened is not None:
            ds, frames = opened
            with _closed_on_error(frames):
                spacing, source = _dicom_spacing(path, ds)
                decoded = _Decoded(frames, frames.shape, spacing, source, _dicom_metadata(path, ds))
                return _image(path, fmt, decoded, spacing_mm)
    elif fmt.name == "tiff":
        frames = open_tiff_clip(path, _grey_page)
        if frames is not None:
            with _closed_on_error(frames):
                return _image(path, fmt, _Decoded(frames, frames.shape), spacing_mm)
    elif fmt.name == "nrrd":
        opened = open_nrrd_clip(path, _grey_page)
        if opened is not None:
            components, frames = opened
            with _closed_on_error(frames):
                decoded = _Decoded(frames, frames.shape + ((components,) if components > 1 else ()))
                decoded = _squeeze_stack(path, decoded, _nrrd_axis_spacings(path, components))
                return _image(path, fmt, decoded, spacing_mm)
    elif fmt.name == "nifti":
        opened = open_nifti_clip(path, _grey_page)
        if opened is not None:
            header, frames = opened
            with _closed_on_error(frames):
                colour = header.get_data_dtype().names
                decoded = _Decoded(frames, frames.shape + ((len(colour),) if colour else ()))
                spacing_zyx = _nifti_spacing_zyx(header, len(header.get_data_shape()))
                decoded = _squeeze_stack(path, decoded, [s for s, n in zip(spacing_zyx, reversed(
                    header.get_data_shape())) if n > 1])
                return _image(path, fmt, decoded, spacing_mm)
    elif fmt.name == "metaimage":
        opened = open_metaimage_clip(path, _grey_page)
        if opened is not None:
            spacing_zyx, components, frames = opened
            with _closed_on_error(frames):
                decoded = _Decoded(frames, frames.shape + ((components,) if components > 1 else ()))
                decoded = _squeeze_stack(path, decoded, _stated(list(spacing_zyx)))
                return _image(path, fmt, decoded, spacing_mm)
    return read_image(path, spacing_mm)


def _grey_page(page: np.ndarray) -> np.ndarray:
    return channels_to_grey(page) if page.ndim == 3 else page


@contextlib.contextmanager
def _closed_on_error(frames) -> Iterator[None]:
    """Close an opened clip when its image cannot be made (a refused spacing, say): no file left open."""
    try:
        yield
    except BaseException:
        frames.close()
        raise


def close_image(image: UltrasoundImage) -> None:
    """Release the file an opened clip reads its frames from (nothing for pixels in memory)."""
    close = getattr(image.pixels, "close", None)
    if close is not None:
        close()


def _image(path: Path, fmt: FileFormat, decoded: _Decoded, spacing_mm) -> UltrasoundImage:
    if spacing_mm is not None:
        spacing, source = parse_spacing(spacing_mm, "spacing"), SpacingSource.USER
    else:
        spacing, source = _file_spacing(path, decoded), decoded.spacing_source
    return UltrasoundImage(decoded.pixels, spacing, source, str(path),
                           {"format": fmt.name, "original_shape": tuple(decoded.original_shape),
                            **decoded.metadata})


def _squeeze_mask(path: Path, mask: np.ndarray) -> np.ndarray:
    mask = np.squeeze(mask)
    if mask.ndim != 2:
        raise ImageReadError(path, f"mask is not 2D (shape {mask.shape})")
    return mask


def read_mask(path: PathLike) -> np.ndarray:
    """A binary nerve mask (H, W) from a PNG/BMP/TIFF, NRRD, NIfTI/MHA or Slicer .seg.nrrd file."""
    path = Path(path)
    fmt = _check_file(path)
    if fmt.read_mask is None:
        raise ImageReadError(path, f"unsupported mask file type '{_suffix(path)}'")
    raw = fmt.read_mask(path)
    _check_finite(path, raw, "mask values")
    return _squeeze_mask(path, raw) != 0


# ----------------------------------------------------------------------------- writing

try:
    import fcntl

    def _try_lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
except ImportError:  # Windows
    import msvcrt

    def _try_lock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


class FolderLock:
    """Exclusive lock on a lock file (``<folder>/.lock``) for writers that must not interleave (a dataset store,
    a refine folder); the OS releases it if the holder dies. ``what`` names the folder in the timeout error."""

    def __init__(self, path: PathLike, what: str, timeout: float = 60.0) -> None:
        self.path, self.what, self.timeout, self.fd = Path(path), what, timeout, -1

    def __enter__(self) -> "FolderLock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                _try_lock(self.fd)
                return self
            except OSError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise RuntimeError(f"{self.path}: {self.what} locked by another process for {self.timeout:.0f} s")
                time.sleep(0.02)

    def __exit__(self, *exc: Any) -> None:
        _unlock(self.fd)
        os.close(self.fd)


def atomic_write(path: PathLike, write: Callable[[str], None], tmp_suffix: str = "") -> None:
    """Call ``write`` on a temporary file next to ``path``, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{tmp_suffix}")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _as_mask2d(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2D mask, got shape {mask.shape}")
    return mask != 0


def write_mask_png(path: PathLike, mask: np.ndarray) -> None:
    """Write a mask as an 8-bit single-channel 0/255 PNG."""
    pixels = _as_mask2d(mask).astype(np.uint8) * 255
    atomic_write(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG", compress_level=1))


def write_mask_nrrd(path: PathLike, mask: np.ndarray, spacing_mm: Spacing = None) -> None:
    """Write a mask as a uint8 0/1 NRRD, with (row, col) spacing in the space directions when known."""
    _write_nrrd2d(path, _as_mask2d(mask).astype(np.uint8), spacing_mm)


def write_image_nrrd(path: PathLike, pixels: np.ndarray, spacing_mm: Spacing = None) -> None:
    """Write a 2D frame as an NRRD (its own dtype), with spacing when known; ``read_image`` reads it back."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2D frame, got shape {pixels.shape}")
    _write_nrrd2d(path, pixels, spacing_mm)


def _write_nrrd2d(path: PathLike, data: np.ndarray, spacing_mm: Spacing) -> None:
    import nrrd

    header: Dict[str, Any] = {"encoding": "gzip", "kinds": ["domain", "domain"]}
    if spacing_mm is not None:
        row, col = parse_spacing(spacing_mm, str(path))
        header.update({"space dimension": 2, "space directions": np.array([[col, 0.0], [0.0, row]]),
                       "space origin": np.zeros(2)})
    atomic_write(path, lambda tmp: nrrd.write(tmp, data, header, index_order="C"), ".nrrd")


def write_segmentation_nrrd(path: PathLike, mask: np.ndarray, spacing_mm: Spacing = None,
                            segment_name: str = NERVE_SEGMENT_NAME, side: str = "") -> None:
    """Write a Slicer .seg.nrrd with one segment (label value 1) on a single-slice grid, coded and
    coloured as the Slicer module codes it (:mod:`codes`)."""
    import slicerio

    from .codes import NERVE_COLOR, terminology

    row, col = parse_spacing(spacing_mm, str(path)) if spacing_mm is not None else (1.0, 1.0)
    ijk = _as_mask2d(mask).T[:, :, np.newaxis]  # slicerio voxels are (i, j, k) = (column, row, slice)
    seg = slicerio.create_segmentation(ijk.shape, np.diag([col, row, 1.0, 1.0]))
    seg.update({"containedRepresentationNames": ["Binary labelmap"], "masterRepresentation": "Binary labelmap"})
    slicerio.add_segment(seg, ijk, {"id": "Segment_1", "name": segment_name,
                                    "color": [c / 255.0 for c in NERVE_COLOR], "terminology": terminology(side)})
    atomic_write(path, lambda tmp: slicerio.write_segmentation(tmp, seg), ".seg.nrrd")


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """Pixels as uint8: kept if already within 0..255, else scaled by their own min/max."""
    values = np.asarray(frame, dtype=np.float64)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if lo < 0 or hi > 255:
        values = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def write_overlay_png(path: PathLike, frame: np.ndarray, mask: np.ndarray,
                      color: Tuple[int, int, int] = (255, 215, 0), caption: Sequence[str] = (),
                      spacing_mm: Spacing = None, clicks: Sequence[Any] = ()) -> None:
    """Write an RGB PNG of the frame with the mask lightly filled and outlined (2 px) in ``color``; the
    ``caption`` (CSA, side, model) on a black band above the frame, a 5 mm scale bar bottom right when the
    spacing is known, and ``clicks`` (:class:`clicks.Click`) as discs: green with + for nerve, red with -
    for background."""
    from skimage.segmentation import find_boundaries

    gray = to_uint8(frame)
    nerve = _as_mask2d(mask)
    if gray.shape != nerve.shape:
        raise ValueError(f"frame {gray.shape} and mask {nerve.shape} differ in shape")
    rgb = np.repeat(gray[..., np.newaxis], 3, axis=2)
    tint = np.asarray(color, dtype=np.float64)
    rgb[nerve] = np.round(rgb[nerve] * (1.0 - _FILL_ALPHA) + tint * _FILL_ALPHA).astype(np.uint8)
    rows, cols = np.nonzero(nerve)
    if rows.size:  # the outline, found on the nerve's bounding box (plus the 1-pixel ring it can reach)
        top, left = max(rows.min() - 1, 0), max(cols.min() - 1, 0)
        box = (slice(top, rows.max() + 2), slice(left, cols.max() + 2))
        rgb[box][find_boundaries(nerve[box], mode="thick")] = color
    picture = Image.fromarray(rgb)
    if clicks:
        _draw_clicks(picture, clicks)
    picture = _annotate(picture, caption, parse_spacing(spacing_mm, str(path)) if spacing_mm is not None else None)
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG", compress_level=1))  # lossless, ~4x faster


def _draw_clicks(picture: Image.Image, clicks: Sequence[Any]) -> None:
    """Each click as a disc at its pixel: green with + (nerve), red with - (background)."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(picture)
    radius = max(4, picture.height // 70)
    for click in clicks:  # a click on the image's edge is drawn just inside it, whole
        x = min(max(click.x + 0.5, radius + 1), picture.width - radius - 1)
        y = min(max(click.y + 0.5, radius + 1), picture.height - radius - 1)
        fill = (0, 200, 0) if click.positive else (230, 0, 0)
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill, outline=(255, 255, 255))
        arm = radius * 0.6
        draw.line((x - arm, y, x + arm, y), fill=(255, 255, 255), width=2)
        if click.positive:
            draw.line((x, y - arm, x, y + arm), fill=(255, 255, 255), width=2)


_SCALE_BAR_MM = 5.0


@functools.lru_cache(maxsize=4)
def _font(size: int):
    """DejaVu Sans (shipped with matplotlib: it has the superscript 2), else Pillow's own font."""
    from PIL import ImageFont

    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans", fallback_to_default=False), size)
    except Exception:  # no matplotlib font: Pillow's default
        return ImageFont.load_default(size=size)


def _caption_lines(parts: Sequence[str], font, width: float) -> List[str]:
    """The caption's parts joined by "  |  " on as few lines as fit ``width`` pixels (a part is never split)."""
    from PIL import ImageDraw

    measure = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength
    lines: List[str] = []
    for part in parts:
        joined = f"{lines[-1]}  |  {part}" if lines else part
        if lines and measure(joined, font=font) <= width:
            lines[-1] = joined
        else:
            lines.append(part)
    return lines


def _annotate(picture: Image.Image, caption: Sequence[str], spacing: Spacing) -> Image.Image:
    """The caption on a black band above the image (never over the anatomy), a scale bar in its bottom right."""
    from PIL import ImageDraw

    if not caption and spacing is None:
        return picture
    size = max(11, picture.height // 32)
    font = _font(size)
    if caption:
        lines = _caption_lines(caption, font, picture.width - 12)
        band = (size + 6) * len(lines) + 6
        framed = Image.new("RGB", (picture.width, picture.height + band), (0, 0, 0))
        framed.paste(picture, (0, band))
        ImageDraw.Draw(framed).multiline_text((6, 5), "\n".join(lines), fill=(255, 255, 255), font=font, spacing=6)
        picture = framed
    if spacing is not None:
        draw = ImageDraw.Draw(picture)
        length = int(round(_SCALE_BAR_MM / spacing[1]))
        if length < picture.width // 2:
            right, bottom = picture.width - 10, picture.height - 10
            draw.rectangle((right - length, bottom - 4, right, bottom), fill=(255, 255, 255))
            label = f"{_SCALE_BAR_MM:g} mm"
            width = draw.textlength(label, font=font)
            draw.text((right - length / 2 - width / 2, bottom - 8 - size), label, fill=(255, 255, 255), font=font)
    return picture
