"""Clips read a frame at a time: memory flat in the clip's length.

:func:`io.open_image` gives a multi-frame DICOM, a multi-page TIFF, or a 2D+time NRRD, NIfTI or
MetaImage an :class:`UltrasoundImage`
whose ``pixels`` is a :class:`LazyFrames`: each frame is decoded when asked for, converted to
grey float32 as :func:`io.read_image` converts a whole clip, and checked for NaN/Inf then (a bad
frame is refused naming its index; the frames before it stand). Any other file, or a clip
whose header promises more pixel data than the file holds, is read whole by its format's reader,
so that its errors stay the ones ``read_image`` gives.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Tuple

import numpy as np

RawFrames = Callable[[int], Iterator[np.ndarray]]  # the file's frames from index i on, as stored


class FileEnded(ValueError):
    """The file's data ends, or cannot be read on (``reason``), before a frame: every later frame is missing too."""

    def __init__(self, frame: int, reason: str = "") -> None:
        super().__init__(f"the data cannot be read from frame {frame} on ({reason})" if reason
                         else f"the file ends before frame {frame}")
        self.frame = frame


class LazyFrames:
    """A (T, H, W) clip whose frames are decoded one at a time, in order (the last one kept)."""

    ndim = 3

    def __init__(self, path: Path, n_frames: int, frames_from: RawFrames,
                 to_grey: Callable[[np.ndarray], np.ndarray], close: Callable[[], None] = lambda: None) -> None:
        self.path, self._frames_from, self._to_grey, self._close = path, frames_from, to_grey, close
        self._iterator: Optional[Iterator[np.ndarray]] = None
        self._next_index = 0
        self._cached: Tuple[int, Optional[np.ndarray]] = (-1, None)
        self._ended: Optional[FileEnded] = None  # where the data ran out (later frames fail at once)
        first = self[0]
        self.shape = (n_frames, *first.shape)
        self.dtype = first.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> np.ndarray:
        from .io import ImageReadError, _check_finite

        index = int(index)
        if self._cached[0] == index:
            return self._cached[1]
        if hasattr(self, "shape") and not 0 <= index < len(self):
            raise IndexError(f"frame {index} of a {len(self)}-frame clip")
        if self._ended is not None and index >= self._ended.frame:  # not decoded again from the start
            raise ImageReadError(self.path, f"frame {index} cannot be decoded ({self._ended})")
        if self._iterator is None or index != self._next_index:  # a jump: decode again from that frame
            self._iterator, self._next_index = self._frames_from(index), index
        try:
            raw = next(self._iterator)
        except Exception as exc:
            self._iterator = None
            self._ended = exc if isinstance(exc, FileEnded) else self._ended
            raise ImageReadError(self.path, f"frame {index} cannot be decoded ({str(exc).splitlines()[0][:160]})") \
                from exc
        self._next_index += 1
        frame = np.ascontiguousarray(self._to_grey(raw), dtype=np.float32)
        _check_finite(self.path, frame, f"pixels of frame {index}")
        self._cached = (index, frame)
        return frame

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """The whole clip in memory (for a caller that needs it all, e.g. a Slicer volume)."""
        whole = np.stack([self[i] for i in range(len(self))])
        return whole if dtype is None else whole.astype(dtype)

    def close(self) -> None:
        self._iterator = None
        self._close()


def open_dicom_clip(path: Path, grey: Callable[[Any, np.ndarray], np.ndarray]):
    """(header dataset, LazyFrames) of a multi-frame DICOM, or None to read the file whole."""
    import pydicom
    from pydicom.pixels import iter_pixels
    from pydicom.pixels.utils import get_expected_length

    try:
        with open(path, "rb") as handle:
            ds = pydicom.dcmread(handle, force=True, stop_before_pixels=True)
            header_end = handle.tell()
        n_frames = int(ds.get("NumberOfFrames") or 1)
        syntax = ds.file_meta.TransferSyntaxUID
        if n_frames < 2 or str(ds.get("Modality", "")) in ("SEG", "SR", "PR"):
            return None
        if not syntax.is_encapsulated and path.stat().st_size - header_end < get_expected_length(ds):
            return None  # truncated, or a wrong Rows/Bits: the whole read says which
        frames = LazyFrames(path, n_frames, lambda start: iter_pixels(str(path), indices=range(start, n_frames)),
                            lambda raw: grey(ds, raw))
    except Exception:  # anything odd: the whole read gives its own, established error
        return None
    return ds, frames


def open_tiff_clip(path: Path, grey: Callable[[np.ndarray], np.ndarray]) -> Optional[LazyFrames]:
    """LazyFrames of a multi-page TIFF, or None for a single page (or a file to read whole)."""
    from PIL import Image

    from .io import _pil_array

    image = None
    try:
        image = Image.open(path)
        n_frames = int(getattr(image, "n_frames", 1))
        if n_frames < 2:
            image.close()
            return None

        def pages(start: int) -> Iterator[np.ndarray]:
            for index in range(start, n_frames):
                image.seek(index)
                yield _pil_array(image)

        frames = LazyFrames(path, n_frames, pages, grey, image.close)
    except Exception:
        if image is not None:
            image.close()
        return None
    if any(image.seek(i) or image.size != (frames.shape[2], frames.shape[1]) for i in range(n_frames)):
        frames.close()
        return None  # pages of another size: the whole read refuses the file
    return frames


def _frames_of_stream(path: Path, open_stream: Callable[[], Any], offset: int, n_frames: int, frame_bytes: int,
                      decode: Callable[[bytes], np.ndarray], compressed: bool) -> RawFrames:
    """The frames of a file whose frames lie one after another from ``offset`` of the (decompressed) stream. A
    ``compressed`` stream must end, its checksum right, after the last frame: else the last frame is refused."""

    def frames_from(start: int) -> Iterator[np.ndarray]:
        with open_stream() as stream:
            for index in range(start, n_frames):
                try:
                    if index == start:
                        stream.seek(offset + start * frame_bytes)  # a compressed stream decompresses up to there
                    data = stream.read(frame_bytes)
                    if compressed and index == n_frames - 1 and stream.read(1):  # (at its end it checks its checksum)
                        raise ValueError("the compressed data holds more than the header says: it is damaged")
                except Exception as error:  # damaged data: the frames after it cannot be reached either
                    raise FileEnded(index, str(error).splitlines()[0][:160] or type(error).__name__) from error
                if len(data) < frame_bytes:
                    raise FileEnded(index)
                yield decode(data)

    return frames_from


NRRD_COLOUR_KINDS = ("RGB-color", "RGBA-color", "3-color", "4-color", "vector")
NRRD_FRAME_KINDS = ("domain", "space")  # the axes of a frame; an axis of another kind ITK reads as components
NRRD_CLIP_KINDS = NRRD_FRAME_KINDS + ("time",)  # the clip's axis, the slowest


def open_nrrd_clip(path: Path, grey: Callable[[np.ndarray], np.ndarray]) -> Optional[Tuple[int, LazyFrames]]:
    """(colour components, LazyFrames) of a 2D+time NRRD whose frames are stored one after another (raw or gzip
    data in the file, time the slowest axis), or None to read the file whole."""
    import gzip

    import nrrd
    from nrrd.reader import _determine_datatype

    try:
        with open(path, "rb") as handle:
            header = nrrd.read_header(handle)
            offset = handle.tell()
        sizes = [int(size) for size in header["sizes"]]
        kinds = list(header.get("kinds") or ["domain"] * len(sizes))
        components = sizes[0] if len(sizes) == 4 and kinds[0] in NRRD_COLOUR_KINDS else 1
        encoding = header.get("encoding")
        skips = ("data file", "datafile", "line skip", "lineskip", "byte skip", "byteskip")
        if len(sizes) != 3 + (components > 1) or min(sizes) < 2 or encoding not in ("raw", "gzip", "gz") \
                or any(kind not in NRRD_FRAME_KINDS for kind in kinds[components > 1:-1]) \
                or kinds[-1] not in NRRD_CLIP_KINDS \
                or any(header.get(key) for key in skips):
            return None  # a colour picture, a colour or time axis elsewhere, data elsewhere: the whole read
        dtype, n_frames = _determine_datatype(header), sizes[-1]
        frame_shape = tuple(reversed(sizes[:-1]))  # NRRD lists the fastest axis first: (H, W) or (H, W, C)
        frame_bytes = dtype.itemsize * int(np.prod(sizes[:-1]))
        if encoding == "raw" and path.stat().st_size - offset < n_frames * frame_bytes:
            return None  # truncated: the whole read says so
        compressed = encoding != "raw"

        @contextlib.contextmanager
        def open_stream() -> Iterator[Any]:
            with open(path, "rb") as handle:
                if not compressed:
                    yield handle
                    return
                handle.seek(offset)  # the gzip data follows the header
                with gzip.GzipFile(fileobj=handle, mode="rb") as stream:
                    yield stream

        raw = _frames_of_stream(path, open_stream, 0 if compressed else offset, n_frames, frame_bytes,
                                lambda data: np.frombuffer(data, dtype).reshape(frame_shape), compressed)
        return components, LazyFrames(path, n_frames, raw, grey)
    except Exception:  # anything odd: the whole read gives its own, established error
        return None


def open_nifti_clip(path: Path, grey: Callable[[np.ndarray], np.ndarray]) -> Optional[Tuple[Any, LazyFrames]]:
    """(header, LazyFrames) of a 2D+time NIfTI (.nii or .nii.gz) whose time axis is its last, or None to read the
    file whole. Frames are scaled as nibabel scales the whole array (scl_slope, scl_inter)."""
    import nibabel
    from nibabel.openers import ImageOpener
    from nibabel.volumeutils import apply_read_scaling

    try:
        image = nibabel.load(str(path))
        shape = image.shape
        plane = [size for size in shape[:-1] if size > 1]
        if len(shape) < 3 or len(plane) != 2 or shape[-1] < 2 or min(shape[:2]) < 2:
            return None
        header, proxy = image.header, image.dataobj
        dtype, n_frames = header.get_data_dtype(), shape[-1]
        frame_shape = (shape[1], shape[0])  # x is the fastest axis: a frame is (y, x)
        frame_bytes = dtype.itemsize * shape[0] * shape[1]
        compressed = str(path).endswith(".gz")
        if not compressed and path.stat().st_size < int(proxy.offset) + n_frames * frame_bytes:
            return None  # truncated: the whole read says so

        def decode(data: bytes) -> np.ndarray:
            frame = np.frombuffer(data, dtype).reshape(frame_shape)
            if dtype.names:  # RGB24 / RGBA32: one field per channel
                return np.stack([frame[name] for name in dtype.names], axis=-1)
            return apply_read_scaling(frame, proxy.slope, proxy.inter)

        raw = _frames_of_stream(path, lambda: ImageOpener(str(path), "rb"), int(proxy.offset), n_frames,
                                frame_bytes, decode, compressed)
        return header, LazyFrames(path, n_frames, raw, grey)
    except Exception:
        return None


def _metaimage_header(path: Path) -> Tuple[dict, int]:
    """The MetaImage header's fields (up to ElementDataFile) by name, and the byte where its data begins (LOCAL)."""
    fields, end = {}, 0
    with open(path, "rb") as handle:
        for line in handle:
            end += len(line)
            key, _, value = line.decode("latin-1").partition("=")
            fields[key.strip()] = value.strip()
            if key.strip() == "ElementDataFile" or len(fields) > 100:
                break
    return fields, end


METAIMAGE_TYPES = {"MET_UCHAR": "u1", "MET_CHAR": "i1", "MET_USHORT": "u2", "MET_SHORT": "i2", "MET_UINT": "u4",
                   "MET_INT": "i4", "MET_ULONG_LONG": "u8", "MET_LONG_LONG": "i8", "MET_FLOAT": "f4",
                   "MET_DOUBLE": "f8"}


class ZlibStream:
    """A file's zlib stream from ``offset``, decompressed as it is read; ``seek`` goes forward by decompressing."""

    def __init__(self, handle: Any, offset: int) -> None:
        import zlib

        handle.seek(offset)
        self._handle, self._inflate, self._position = handle, zlib.decompressobj(), 0

    def read(self, size: int) -> bytes:
        parts, have = [], 0
        while have < size and not self._inflate.eof:
            data = self._inflate.unconsumed_tail or self._handle.read(1 << 16)
            if not data:
                break
            part = self._inflate.decompress(data, size - have)
            parts.append(part)
            have += len(part)
        self._position += have
        return b"".join(parts)

    def seek(self, position: int) -> None:
        if position < self._position:
            raise ValueError("a zlib stream is read forward only")
        while self._position < position and self.read(min(position - self._position, 1 << 20)):
            pass


def open_metaimage_clip(path: Path, grey: Callable[[np.ndarray], np.ndarray]
                        ) -> Optional[Tuple[Tuple[float, ...], int, LazyFrames]]:
    """(spacing per axis, slowest first; colour components; LazyFrames) of a 2D+time MetaImage (.mha, or .mhd with
    its data file), or None to read the file whole. Uncompressed frames are read as regions (SimpleITK streams
    them); compressed data (zlib) is decompressed as the frames are read, in order."""
    import SimpleITK as sitk

    try:
        header, header_end = _metaimage_header(path)
        local = header.get("ElementDataFile") == "LOCAL"
        data = path if local else path.parent / header.get("ElementDataFile", "")
        if not data.is_file():
            return None
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        size = reader.GetSize()
        if len(size) != 3 or min(size) < 2:
            return None
        n_frames, components = size[2], reader.GetNumberOfComponents()
        spacing = tuple(reversed(reader.GetSpacing()))
        if header.get("CompressedData", "False").lower() == "true":
            if "HeaderSize" in header:
                return None  # bytes to skip in a compressed data file: ITK's reader knows how
            big_endian = "true" in (header.get("BinaryDataByteOrderMSB", "").lower(),
                                    header.get("ElementByteOrderMSB", "").lower())
            dtype = np.dtype(METAIMAGE_TYPES[header["ElementType"]]).newbyteorder(">" if big_endian else "<")
            frame_shape = (size[1], size[0]) + ((components,) if components > 1 else ())

            @contextlib.contextmanager
            def open_stream() -> Iterator[ZlibStream]:
                with open(data, "rb") as handle:
                    yield ZlibStream(handle, header_end if local else 0)

            raw = _frames_of_stream(path, open_stream, 0, n_frames, dtype.itemsize * int(np.prod(frame_shape)),
                                    lambda chunk: np.frombuffer(chunk, dtype).reshape(frame_shape), True)
            return spacing, components, LazyFrames(path, n_frames, raw, grey)

        def frames_from(start: int) -> Iterator[np.ndarray]:
            for index in range(start, n_frames):
                reader.SetExtractIndex((0, 0, index))
                reader.SetExtractSize((size[0], size[1], 0))
                yield sitk.GetArrayFromImage(reader.Execute())

        first = next(frames_from(0))
        if data.stat().st_size < n_frames * first.nbytes:
            return None  # truncated: the whole read says so
        return spacing, components, LazyFrames(path, n_frames, frames_from, grey)
    except Exception:
        return None
