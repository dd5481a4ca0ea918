"""Peak memory of `segment` on long cine clips: docs/benchmarks/clip_memory.{json,md}.

Builds clips of N frames (the dataset's 606 x 468 images in turn, grey, 0.062 mm pixels) in a scratch
folder: a multi-frame DICOM (US region spacing), or a gzip NRRD, NIfTI (.nii.gz) or MetaImage (.mha;
mha-zlib: compressed) with time as the last axis; runs ``median-nerve-seg segment CLIP --no-overlay`` on each as a new process and records its peak
resident memory (ru_maxrss) and wall time per frame. Run from the repository root, the dataset beside it:

    .venv/bin/python benchmarks/clip_memory.py [--frames 500 5000] [--format dicom|nrrd|nifti|mha|mha-zlib]

``--command`` times another checkout's CLI instead (the "before" figures: a worktree of an older commit).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO.parent / "shared" / "data" / "median-nerve-us" / "images"


def write_clip(path: Path, n_frames: int, images: Path = IMAGES) -> Path:
    """A multi-frame grey US DICOM of the dataset's images in turn (pixel data built frame by frame)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sources = sorted(images.glob("*.png"))[:40]
    frames = [np.asarray(Image.open(p).convert("L")) for p in sources]
    frames = [f for f in frames if f.shape == frames[0].shape]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.Modality, ds.PatientID = "US", "Pz999"
    ds.Rows, ds.Columns = frames[0].shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.NumberOfFrames, ds.FrameTime = n_frames, 33.3
    region = Dataset()
    region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 0
    region.RegionLocationMinX0 = region.RegionLocationMinY0 = 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = ds.Columns - 1, ds.Rows - 1
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX = region.PhysicalDeltaY = 0.0062
    ds.SequenceOfUltrasoundRegions = [region]
    pixels = bytearray(n_frames * frames[0].size)
    for index in range(n_frames):
        start = index * frames[0].size
        pixels[start:start + frames[0].size] = frames[index % len(frames)].tobytes()
    ds.PixelData = bytes(pixels)
    del pixels
    ds.save_as(path, enforce_file_format=True)
    return path


def write_volume_clip(path: Path, n_frames: int, images: Path = IMAGES) -> Path:
    """The same frames as a gzip NRRD (.nrrd), NIfTI (.nii.gz) or MetaImage (.mha; .zlib.mha compressed), time the
    slowest axis."""
    sources = sorted(images.glob("*.png"))[:40]
    frames = [np.asarray(Image.open(p).convert("L")) for p in sources]
    frames = [f for f in frames if f.shape == frames[0].shape]
    clip = np.empty((n_frames, *frames[0].shape), np.uint8)
    for index in range(n_frames):
        clip[index] = frames[index % len(frames)]
    if path.suffix == ".mha":
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(clip)
        image.SetSpacing((0.062, 0.062, 0.0333))
        sitk.WriteImage(image, str(path), useCompression=path.name.endswith(".zlib.mha"))
    elif path.suffix == ".nrrd":
        import nrrd

        nrrd.write(str(path), clip, {"encoding": "gzip", "kinds": ["domain", "domain", "time"],
                                     "spacings": [0.062, 0.062, 0.0333]}, index_order="C")
    else:
        import nibabel

        image = nibabel.Nifti1Image(clip.transpose(2, 1, 0), np.diag([0.062, 0.062, 1.0, 1.0]))
        image.header.set_xyzt_units("mm", "sec")
        nibabel.save(image, str(path))
    return path


SUFFIXES = {"dicom": ".dcm", "nrrd": ".nrrd", "nifti": ".nii.gz", "mha": ".mha", "mha-zlib": ".zlib.mha"}


def measured(command: list) -> dict:
    """Exit code, peak resident memory (MB) and wall time of ``command`` run as a new process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage
    wall = time.perf_counter() - start
    err = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    return {"rc": os.waitstatus_to_exitcode(status), "peak_rss_mb": round(usage.ru_maxrss / 1024),  # kB on Linux
            "wall_s": round(wall, 1), "stderr": err[-2000:]}


def run(frames: int, scratch: Path, cli: list, model: str, fmt: str = "dicom") -> dict:
    clip = scratch / f"clip{frames}{SUFFIXES[fmt]}"
    # Built in a process of its own: a forked child's ru_maxrss starts from its parent's high-water mark
    # (Linux keeps it across exec), so a clip built here would count as the measured command's memory.
    subprocess.run([sys.executable, __file__, "--write-clip", str(clip), str(frames)], check=True)
    out = scratch / f"out{frames}"
    overlays = "--no-overlay" not in subprocess.run([*cli, "segment", "--help"], capture_output=True, text=True).stdout
    command = [*cli, "segment", str(clip), "--out", str(out), "--model", model] + ([] if overlays else ["--no-overlay"])
    result = measured(command)
    if result["rc"] not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed:\n{result['stderr']}")
    rows = (out / "measurements.csv").read_text().count("\n") - 1
    return {"frames": frames, "clip_mb_uint8": round(frames * 606 * 468 / 1e6, 1), "peak_rss_mb": result["peak_rss_mb"],
            "rows": rows, "wall_s": result["wall_s"], "ms_per_frame": round(1000 * result["wall_s"] / frames, 1),
            "overlays": overlays, "format": fmt}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[500, 5000])
    parser.add_argument("--model", default="median_nerve_unet_small")
    parser.add_argument("--command", default=str(REPO / ".venv" / "bin" / "median-nerve-seg"),
                        help="the median-nerve-seg CLI to measure (default: this checkout's)")
    parser.add_argument("--format", choices=sorted(SUFFIXES), default="dicom", help="the clip's file format")
    parser.add_argument("--label", default="streamed")
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "clip_memory.json"))
    parser.add_argument("--write-clip", nargs=2, metavar=("PATH", "FRAMES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_clip:
        path, n_frames = Path(args.write_clip[0]), int(args.write_clip[1])
        (write_clip if path.suffix == ".dcm" else write_volume_clip)(path, n_frames)
        return
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    rows = []
    for frames in args.frames:
        with tempfile.TemporaryDirectory(dir=os.environ.get("CLIP_SCRATCH")) as scratch:
            rows.append(run(frames, Path(scratch), args.command.split(), args.model, args.format))
            print(rows[-1], flush=True)
    import platform

    results[args.label] = {"model": args.model, "python": platform.python_version(), "runs": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
