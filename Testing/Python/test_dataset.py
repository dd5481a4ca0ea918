"""The labelled-dataset store: versions, provenance, patient splits, locking and crash recovery."""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from PIL import Image

from MedianNerveSegLib.cli_dataset import add_dataset_parser
from MedianNerveSegLib.dataset import SPLITS, LabelledDataset

from conftest import REPO

SHAPE = (24, 32)
REAL_STEMS = ["Pz001-001", "Pz002-001", "Pz002-002", "Pz004-001", "Pz004-002",
              "Pz005-001", "Pz005-002", "Pz006-001", "Pz007-001", "Pz007-002"]


def _image(value: int = 0) -> np.ndarray:
    rng = np.random.default_rng(value)
    return rng.integers(0, 256, SHAPE, dtype=np.uint8)


def _box(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


def _png(path, pixels: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _datalist(folder):
    return json.loads((folder / "datalist.json").read_text())


def _entries(datalist):
    return [e for name in SPLITS for e in datalist[name]]


def _committed(folder):
    """Newest committed version of each id, straight from the provenance file names."""
    newest = {}
    for path in (folder / "provenance").glob("*.json"):
        sample_id, version = path.stem.rsplit("_v", 1)
        newest[sample_id] = max(newest.get(sample_id, 0), int(version))
    return newest


def _assert_consistent(folder):
    datalist = _datalist(folder)
    for entry in _entries(datalist):
        assert (folder / entry["image"]).is_file() and (folder / entry["label"]).is_file()
    assert {e["id"]: e["label_version"] for e in _entries(datalist)} == _committed(folder)
    assert LabelledDataset(folder).rebuild() == datalist


def _run_python(code: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO / "MedianNerveSeg"))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def store(tmp_path):
    return LabelledDataset.init(tmp_path / "store", name="test-set")


@pytest.fixture
def real_pairs(dataset_dir, tmp_path):
    """A copy of 10 real pairs from 6 patients."""
    folder = tmp_path / "source"
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
        for stem in REAL_STEMS:
            shutil.copy(dataset_dir / sub / f"{stem}.png", folder / sub / f"{stem}.png")
    return folder


# ----------------------------------------------------------------------------- layout and adding

def test_init_creates_the_layout_and_reinit_is_a_no_op(tmp_path):
    store = LabelledDataset.init(tmp_path / "ds", name="wrist", description="corrected masks")
    for sub in ("images", "labels", "provenance"):
        assert (store.folder / sub).is_dir()
    datalist = _datalist(store.folder)
    assert datalist["name"] == "wrist" and datalist["description"] == "corrected masks"
    assert datalist["modality"] == {"0": "US"} and datalist["labels"] == {"0": "background", "1": "median nerve"}
    assert datalist["numTraining"] == 0 and all(datalist[name] == [] for name in SPLITS)
    store.add(_image(), _box(2, 8, 2, 8), sample_id="Pz001-001")
    before = (store.folder / "datalist.json").read_bytes()
    assert LabelledDataset.init(store.folder, name="other").folder == store.folder
    assert (store.folder / "datalist.json").read_bytes() == before


def test_init_refuses_a_foreign_folder_and_open_needs_a_store(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        LabelledDataset.init(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a labelled dataset"):
        LabelledDataset(tmp_path)


def test_add_from_a_file_path(store, tmp_path):
    rgb = np.stack([_image(1)] * 3, axis=-1)
    path = _png(tmp_path / "in" / "Pz012-003.png", rgb)
    record = store.add(path, _box(3, 9, 4, 12), spacing_mm=0.062)
    assert (record["id"], record["patient"], record["version"]) == ("Pz012-003", "Pz012", 1)
    assert record["source"] == str(path) and record["spacing_mm"] == [0.062, 0.062]
    with Image.open(store.folder / "images" / "Pz012-003.png") as stored:
        assert stored.mode == "L"
        np.testing.assert_array_equal(np.asarray(stored), _image(1))
    with Image.open(store.folder / "labels" / "Pz012-003_v1.png") as label:
        assert set(np.unique(np.asarray(label))) == {0, 255}
    [entry] = _datalist(store.folder)["training"]
    assert entry == {"image": "images/Pz012-003.png", "label": "labels/Pz012-003_v1.png",
                     "patient": "Pz012", "id": "Pz012-003", "label_version": 1, "spacing_mm": [0.062, 0.062]}


def test_add_from_arrays(store):
    anonymous = store.add(_image(2), _box(0, 4, 0, 4))
    assert anonymous["id"].startswith("img-") and anonymous["patient"] == anonymous["id"]
    named = store.add(_image(3).astype(np.float32), _box(0, 4, 0, 4) * 255, sample_id="Pz050-001")
    assert named["patient"] == "Pz050" and named["spacing_mm"] is None
    given = store.add(_image(4)[np.newaxis], _box(0, 4, 0, 4)[np.newaxis], sample_id="x 1", patient="P7")
    assert (given["id"], given["patient"]) == ("x_1", "P7")
    assert [s.image.name for s in store.samples()] == sorted(f"{r['id']}.png" for r in (anonymous, named, given))


def test_second_label_is_a_new_version(store):
    store.add(_image(), _box(2, 8, 2, 8), sample_id="Pz001-001")
    v1 = store.folder / "labels" / "Pz001-001_v1.png"
    v1_bytes = v1.read_bytes()
    image_bytes = (store.folder / "images" / "Pz001-001.png").read_bytes()
    record = store.add(_image(), _box(2, 10, 2, 10), sample_id="Pz001-001", author="expert")
    assert record["version"] == 2 and v1.read_bytes() == v1_bytes
    assert (store.folder / "images" / "Pz001-001.png").read_bytes() == image_bytes
    [entry] = _entries(_datalist(store.folder))
    assert entry["label"] == "labels/Pz001-001_v2.png" and entry["label_version"] == 2
    [sample] = store.samples()
    assert sample.mask == store.folder / "labels" / "Pz001-001_v2.png"
    assert store.stats()["n_label_versions"] == 2


def test_same_id_with_a_different_image_is_refused(store):
    store.add(_image(1), _box(2, 8, 2, 8), sample_id="Pz001-001")
    with pytest.raises(ValueError, match="different image"):
        store.add(_image(2), _box(2, 8, 2, 8), sample_id="Pz001-001")


def test_provenance_fields(store):
    start = datetime.now(timezone.utc).replace(microsecond=0)
    label, ai = _box(0, 10, 0, 10), _box(0, 10, 5, 15)  # 100 px each, 50 px overlap
    record = store.add(_image(), label, sample_id="Pz003-001", author="dr. a", model="unet",
                       model_version="1.2", ai_mask=ai, spacing_mm=(0.06, 0.07), note="clear image")
    saved = json.loads((store.folder / "provenance" / "Pz003-001_v1.json").read_text())
    assert saved == record
    assert record["ai_dsc"] == pytest.approx(0.5) and record["changed_pixels"] == 100
    assert (record["author"], record["model"], record["model_version"]) == ("dr. a", "unet", "1.2")
    assert record["spacing_mm"] == [0.06, 0.07] and record["note"] == "clear image"
    saved_at = datetime.fromisoformat(record["saved_at"])
    assert saved_at.utcoffset() == timedelta(0)
    assert start <= saved_at <= datetime.now(timezone.utc)
    for key, path in (("image_sha256", "images/Pz003-001.png"), ("label_sha256", "labels/Pz003-001_v1.png")):
        assert record[key] == hashlib.sha256((store.folder / path).read_bytes()).hexdigest()
    plain = store.add(_image(9), label, sample_id="Pz003-002")
    assert plain["ai_dsc"] is None and plain["changed_pixels"] is None


def test_shape_mismatch_is_a_clear_error_and_writes_nothing(store):
    with pytest.raises(ValueError, match=r"label shape \(24, 30\) differs from the image shape \(24, 32\)"):
        store.add(_image(), np.zeros((24, 30), bool), sample_id="Pz001-001")
    with pytest.raises(ValueError, match="AI mask shape"):
        store.add(_image(), _box(0, 2, 0, 2), ai_mask=np.zeros((5, 5)), sample_id="Pz001-001")
    assert not any((store.folder / "images").iterdir()) and store.stats()["n_images"] == 0


# ----------------------------------------------------------------------------- import, split, stats

def test_import_folder_counts_patients_and_skips_duplicates(store, real_pairs):
    assert store.import_folder(real_pairs) == {"added": 10, "unchanged": 0, "failed": []}
    samples = store.samples()
    assert [s.image.stem for s in samples] == REAL_STEMS
    assert sorted({s.patient for s in samples}) == ["Pz001", "Pz002", "Pz004", "Pz005", "Pz006", "Pz007"]
    with Image.open(samples[0].image) as image:
        assert image.mode == "L" and image.size == (606, 468)
    assert store.import_folder(real_pairs) == {"added": 0, "unchanged": 10, "failed": []}
    stats = store.stats()
    assert (stats["n_images"], stats["n_patients"], stats["n_label_versions"]) == (10, 6, 10)
    assert stats["authors"] == {"import": 10}


def test_split_is_by_patient_and_stable(store):
    for p in range(20):
        for k in range(2):
            store.add(_image(p * 2 + k), _box(0, p + 1, 0, 3), sample_id=f"Pz{p:03d}-{k:03d}")
    counts = store.split(val_fraction=0.2, test_fraction=0.1, seed=3)
    assert {name: counts[name]["patients"] for name in SPLITS} == {"training": 14, "validation": 4, "test": 2}
    first = {name: {s.patient for s in store.samples(name)} for name in SPLITS}
    assert not (first["training"] & first["validation"] or first["training"] & first["test"]
                or first["validation"] & first["test"])
    assert store.split(val_fraction=0.2, test_fraction=0.1, seed=3) == counts
    for p in range(20, 30):  # new patients arrive later
        store.add(_image(100 + p), _box(0, 3, 0, 3), sample_id=f"Pz{p:03d}-000")
    store.split(val_fraction=0.2, test_fraction=0.1, seed=3)
    later = {name: {s.patient for s in store.samples(name)} for name in SPLITS}
    for name in SPLITS:
        assert first[name] <= later[name]
    assert sum(map(len, later.values())) == 30 and len(later["validation"]) == 6
    assert LabelledDataset(store.folder).rebuild()["patient_split"] == _datalist(store.folder)["patient_split"]


def test_samples_rejects_an_unknown_split(store):
    with pytest.raises(ValueError, match="split must be one of"):
        store.samples("val")


def test_stats_numbers(store):
    store.add(_image(1), _box(0, 10, 0, 10), sample_id="Pz001-001", author="a", model="unet", model_version="1")
    store.add(_image(1), _box(0, 10, 0, 5), sample_id="Pz001-001", author="b", model="unet",
              model_version="1", ai_mask=_box(0, 10, 0, 10))
    store.add(_image(2), _box(0, 2, 0, 10), sample_id="Pz002-001", author="a")
    stats = store.stats()
    assert (stats["n_images"], stats["n_patients"], stats["n_label_versions"]) == (2, 2, 3)
    assert stats["mean_csa_px"] == pytest.approx((50 + 20) / 2)
    assert stats["ai_dsc_mean"] == pytest.approx(2 * 50 / 150)
    assert stats["authors"] == {"a": 2, "b": 1} and stats["models"] == {"unet@1": 2}
    assert stats["splits"]["training"] == {"images": 2, "patients": 2}


# ----------------------------------------------------------------------------- concurrency and crashes

WRITER = """
    import pathlib, sys, time
    import numpy as np
    from MedianNerveSegLib.dataset import LabelledDataset

    store, tag, barrier = LabelledDataset(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
    (barrier / tag).touch()
    while len(list(barrier.iterdir())) < 2:  # start both writers together
        time.sleep(0.001)
    for i in range(10):
        label = np.zeros((24, 32), bool)
        label[1:3 + i, 2:9] = True
        image = np.full((24, 32), 10 * i + int(tag[-1]), np.uint8)  # one image, one patient
        store.add(image, label, sample_id=f"{tag}-{i:03d}", author=tag)
"""


def test_two_writer_processes_lose_nothing(store, tmp_path):
    (tmp_path / "barrier").mkdir()
    writers = [_run_python(WRITER, str(store.folder), tag, str(tmp_path / "barrier")) for tag in ("Pz901", "Pz902")]
    for writer in writers:
        assert writer.wait(timeout=60) == 0, writer.stderr.read()
    datalist = _datalist(store.folder)
    assert len(_entries(datalist)) == 20 and datalist["numTraining"] == 20
    assert store.stats()["authors"] == {"Pz901": 10, "Pz902": 10}
    _assert_consistent(store.folder)


CRASHER = """
    import os, sys, time
    import numpy as np
    from MedianNerveSegLib.dataset import LabelledDataset

    folder, sample_id, killed_writing = sys.argv[1:]
    store = LabelledDataset(folder)
    real_replace = os.replace

    def announced_replace(src, dst):
        name = os.path.relpath(dst, folder).replace(os.sep, "/")
        print(name, flush=True)
        if name == killed_writing:
            time.sleep(60)  # killed here, with the temporary file written and not yet in place
        real_replace(src, dst)

    os.replace = announced_replace
    label = np.zeros((24, 32), bool)
    label[4:12, 4:12] = True
    store.add(np.full((24, 32), 7 if sample_id == "Pz001-001" else 8, np.uint8), label, sample_id=sample_id)
"""


@pytest.mark.parametrize("sample_id, killed_writing, committed", [
    ("Pz009-001", "images/Pz009-001.png", False),
    ("Pz009-001", "labels/Pz009-001_v1.png", False),
    ("Pz009-001", "provenance/Pz009-001_v1.json", False),
    ("Pz009-001", "datalist.json", True),  # committed, not yet listed
    ("Pz001-001", "provenance/Pz001-001_v2.json", False),  # a new version of a stored image
    ("Pz001-001", "datalist.json", True),
])
def test_a_killed_add_leaves_a_consistent_store(store, sample_id, killed_writing, committed):
    store.add(np.full(SHAPE, 7, np.uint8), _box(0, 4, 0, 4), sample_id="Pz001-001")
    crasher = _run_python(CRASHER, str(store.folder), sample_id, killed_writing)
    written = []
    while killed_writing not in written:
        written.append(crasher.stdout.readline().strip())
        assert len(written) <= 4, (written, crasher.stderr.read())
    crasher.kill()  # SIGKILL: no cleanup, the lock is released by the OS
    crasher.wait(timeout=10)
    assert any(p.name.endswith(".tmp") for p in store.folder.rglob(".*"))  # the orphan temporary file

    reopened = LabelledDataset(store.folder)
    _assert_consistent(store.folder)
    version = 2 if sample_id == "Pz001-001" else 1
    assert (_committed(store.folder).get(sample_id) == version) is committed
    pixels = 7 if sample_id == "Pz001-001" else 8  # as the crasher: another image for another patient
    record = reopened.add(np.full(SHAPE, pixels, np.uint8), _box(0, 6, 0, 6), sample_id=sample_id)
    assert record["version"] == (version + 1 if committed else version)
    _assert_consistent(store.folder)


def test_the_datalist_is_rebuilt_from_the_files(store):
    store.add(_image(1), _box(0, 4, 0, 4), sample_id="Pz001-001")
    store.add(_image(1), _box(0, 5, 0, 5), sample_id="Pz001-001")
    store.add(_image(2), _box(0, 4, 0, 4), sample_id="Pz002-001")
    store.split(val_fraction=0.5, seed=1)
    expected = _datalist(store.folder)
    stale = dict(expected, training=[], validation=[])  # misses every committed sample
    (store.folder / "datalist.json").write_text(json.dumps(stale))
    assert len(LabelledDataset(store.folder).samples()) == 2 and _datalist(store.folder) == expected
    (store.folder / "datalist.json").unlink()
    rebuilt = LabelledDataset(store.folder).rebuild()
    assert {e["id"]: e["label_version"] for e in _entries(rebuilt)} == {"Pz001-001": 2, "Pz002-001": 1}


# ----------------------------------------------------------------------------- command line

def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_dataset_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_cli_end_to_end(tmp_path, capsys):
    source = tmp_path / "source"
    for p in range(5):
        _png(source / "images" / f"Pz{p:03d}-001.png", _image(p))
        _png(source / "masks" / f"Pz{p:03d}-001.png", _box(0, 3 + p, 0, 4).astype(np.uint8) * 255)
    folder = str(tmp_path / "ds")
    assert _cli("dataset", "init", folder, "--name", "cli-set") == 0
    assert _cli("dataset", "import", folder, "--from", str(source), "--pattern", r"^(Pz\d+)") == 0
    assert "imported 5 new sample(s)" in capsys.readouterr().out
    assert _cli("dataset", "add", folder, "--image", str(source / "images" / "Pz001-001.png"),
                "--label", str(source / "masks" / "Pz001-001.png")) == 0
    assert "unchanged: Pz001-001 label v1" in capsys.readouterr().out
    corrected = _png(tmp_path / "corrected.png", _box(0, 4, 0, 4).astype(np.uint8) * 255)
    ai = _png(tmp_path / "ai.png", _box(0, 4, 0, 8).astype(np.uint8) * 255)
    assert _cli("dataset", "add", folder, "--image", str(source / "images" / "Pz000-001.png"),
                "--label", str(corrected), "--author", "dr. b", "--ai-mask", str(ai),
                "--model", "unet", "--model-version", "2") == 0
    assert "added Pz000-001 label v2 (patient Pz000, AI DSC 0.667)" in capsys.readouterr().out
    assert _cli("dataset", "split", folder, "--val", "0.4", "--seed", "0") == 0
    assert json.loads(capsys.readouterr().out)["validation"]["patients"] == 2
    assert _cli("dataset", "stats", folder) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["n_images"], stats["n_label_versions"]) == (5, 6)
    assert stats["authors"] == {"dr. b": 1, "import": 5} and stats["models"] == {"unet@2": 1}
    assert _datalist(tmp_path / "ds")["name"] == "cli-set"
    with pytest.raises(FileNotFoundError):
        _cli("dataset", "stats", str(source))


# ----------------------------------------------------------------------------- issue 12: trustworthy store

def test_spacing_is_recorded_per_sample_and_a_file_keeps_its_own(store, tmp_path):
    from MedianNerveSegLib.io import write_image_nrrd

    source = tmp_path / "source"
    _png(source / "images" / "Pz001-001.png", _image(1))
    write_image_nrrd(source / "images" / "Pz002-001.nrrd", _image(2), spacing_mm=(0.05, 0.07))
    for stem in ("Pz001-001", "Pz002-001"):
        _png(source / "masks" / f"{stem}.png", _box(0, 10, 0, 10).astype(np.uint8) * 255)
    assert store.import_folder(source, spacing_mm="0.08")["added"] == 2
    assert [s.spacing_mm for s in store.samples()] == [(0.08, 0.08), (0.05, 0.07)]
    assert [e["spacing_mm"] for e in _entries(_datalist(store.folder))] == [[0.08, 0.08], [0.05, 0.07]]
    store.add(_image(3), _box(0, 10, 0, 5), sample_id="Pz003-001")  # no spacing known
    store.add(source / "images" / "Pz001-001.png", _box(0, 5, 0, 10))  # a new version keeps the spacing
    stats = store.stats()
    assert stats["n_unknown_spacing"] == 1 and stats["mean_csa_px"] == pytest.approx((50 + 100 + 50) / 3)
    assert stats["mean_csa_mm2"] == pytest.approx((50 * 0.08 ** 2 + 100 * 0.05 * 0.07) / 2)
    assert store.samples()[2].spacing_mm is None
    with pytest.raises(ValueError, match="spacing_mm.*'abc'"):
        store.add(_image(4), _box(0, 2, 0, 2), spacing_mm="abc")


def test_the_same_image_under_another_patient_is_refused(store):
    store.add(_image(1), _box(0, 4, 0, 4), sample_id="Pz001-001")
    with pytest.raises(ValueError, match="already stored as sample 'Pz001-001' of patient 'Pz001'"):
        store.add(_image(1), _box(0, 4, 0, 4), sample_id="Pz002-007")
    with pytest.raises(ValueError, match="of patient 'Pz001'; refusing it under patient 'P9'"):
        store.add(_image(1), _box(0, 6, 0, 6), sample_id="Pz001-001", patient="P9")
    assert store.add(_image(1), _box(0, 5, 0, 5), sample_id="Pz001-009")["version"] == 1  # same patient: allowed
    assert _committed(store.folder) == {"Pz001-001": 1, "Pz001-009": 1}


def test_an_identical_label_is_unchanged(store):
    first = store.add(_image(1), _box(0, 4, 0, 4), sample_id="Pz001-001", author="a")
    again = store.add(_image(1), _box(0, 4, 0, 4) * 255, sample_id="Pz001-001", author="b")
    assert again["unchanged"] is True and again["version"] == 1 and again["author"] == "a"
    assert {k: v for k, v in again.items() if k != "unchanged"} == first
    assert _committed(store.folder) == {"Pz001-001": 1} and store.stats()["authors"] == {"a": 1}
    assert store.add(_image(1), _box(0, 5, 0, 5), sample_id="Pz001-001")["version"] == 2


@pytest.mark.parametrize("damage", ["{not json", "[]", '{"training": 3}'])
def test_a_damaged_datalist_is_rebuilt_with_its_name_settings_and_split(store, damage):
    for p in range(6):
        store.add(_image(p), _box(0, p + 2, 0, 4), sample_id=f"Pz{p:03d}-001")
    store.split(val_fraction=0.5, seed=4)
    store.add(_image(10), _box(0, 4, 0, 4), sample_id="Pz010-001")  # assigned after the split
    expected = _datalist(store.folder)
    (store.folder / "datalist.json").write_text(damage)
    reopened = LabelledDataset(store.folder)
    assert _datalist(store.folder) == expected and expected["name"] == "test-set"
    assert {s.patient for s in reopened.samples("validation")} == set(
        p for p, split in expected["patient_split"].items() if split == "validation")
    [backup] = store.folder.glob("datalist.json.damaged-*")
    assert backup.read_text() == damage


def test_stale_temporary_files_are_removed_on_open(store):
    store.add(_image(1), _box(0, 4, 0, 4), sample_id="Pz001-001")
    old = [store.folder / ".datalist.json.0123abcd.tmp", store.folder / "labels" / ".Pz001-001_v2.png.89abcdef.tmp"]
    fresh = store.folder / "images" / ".Pz002-001.png.fedcba98.tmp"  # a live writer's, maybe
    for path in (*old, fresh):
        path.write_bytes(b"partial")
    hour_ago = datetime.now().timestamp() - 3600
    for path in old:
        os.utime(path, (hour_ago, hour_ago))
    LabelledDataset(store.folder)
    assert not any(path.exists() for path in old) and fresh.exists()
    assert (store.folder / "labels" / "Pz001-001_v1.png").is_file()


def test_import_goes_on_past_bad_pairs_and_names_them(tmp_path, capsys):
    source = tmp_path / "source"
    for p in range(3):
        _png(source / "images" / f"Pz{p:03d}-001.png", _image(p))
        _png(source / "masks" / f"Pz{p:03d}-001.png", _box(0, 3, 0, 4).astype(np.uint8) * 255)
    (source / "images" / "Pz003-001.png").write_bytes(b"not a png")
    _png(source / "masks" / "Pz003-001.png", _box(0, 3, 0, 4).astype(np.uint8) * 255)
    _png(source / "images" / "Pz004-001.png", _image(4))
    _png(source / "masks" / "Pz004-001.png", np.zeros((5, 5), np.uint8))
    _png(source / "images" / "Pz005-001.png", _image(5))  # no mask
    folder = str(tmp_path / "ds")
    assert _cli("dataset", "init", folder) == 0
    capsys.readouterr()
    assert _cli("dataset", "import", folder, "--from", str(source), "--spacing", "0.062") == 1
    out, err = capsys.readouterr()
    assert "imported 3 new sample(s)" in out and "0 unchanged, 3 failed" in out
    lines = err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("failed: ") for line in lines)
    assert "Pz003-001.png" in lines[0]
    assert "Pz004-001.png" in lines[1] and "shape (5, 5) differs" in lines[1]
    assert "Pz005-001.png" in lines[2] and "no mask masks/Pz005-001.png" in lines[2]
    assert [s.spacing_mm for s in LabelledDataset(folder).samples()] == [(0.062, 0.062)] * 3
    assert _cli("dataset", "import", folder, "--from", str(source)) == 1
    assert "imported 0 new sample(s) from" in capsys.readouterr().out


def test_cli_spacing_is_checked_and_stats_give_mm2(tmp_path, capsys):
    from MedianNerveSegLib.spacing import SpacingError

    folder = str(tmp_path / "ds")
    image = _png(tmp_path / "Pz001-001.png", _image(1))
    label = _png(tmp_path / "label.png", _box(0, 10, 0, 10).astype(np.uint8) * 255)
    assert _cli("dataset", "init", folder) == 0
    with pytest.raises(SpacingError, match="--spacing"):
        _cli("dataset", "add", folder, "--image", str(image), "--label", str(label), "--spacing", "0")
    assert _cli("dataset", "add", folder, "--image", str(image), "--label", str(label), "--spacing", "0.1") == 0
    capsys.readouterr()
    assert _cli("dataset", "stats", folder) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["mean_csa_mm2"] == pytest.approx(1.0) and stats["n_unknown_spacing"] == 0
