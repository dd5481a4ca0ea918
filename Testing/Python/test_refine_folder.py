"""A refine output folder: nothing written over or lost with several writers, interruptions, damaged records,
moved or look-alike images; and the click benchmark's and overlay's edges."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from MedianNerveSegLib.cli import main
from MedianNerveSegLib.clicks import Click
from MedianNerveSegLib.io import read_mask, write_overlay_png
from MedianNerveSegLib.refine_folder import refinement_of
from MedianNerveSegLib.results import read_results

from conftest import SPACING

IMAGE = "Pz001-001.png"


@pytest.fixture()
def image(dataset_dir, tmp_path):
    copy = tmp_path / "in" / IMAGE
    copy.parent.mkdir()
    shutil.copy(dataset_dir / "images" / IMAGE, copy)
    return copy


@pytest.fixture()
def mask(dataset_dir, tmp_path):
    path = tmp_path / "expert_mask.png"
    shutil.copy(dataset_dir / "masks" / IMAGE, path)
    return path


def _args(image, mask, out, model, *clicks):
    args = ["refine", str(image), "--mask", str(mask), "--out", str(out), "--spacing", str(SPACING), "--model",
            str(model)]
    for click in clicks:
        args += ["--click", click]
    return args


def test_writers_of_one_folder_take_turns(tiny_click_model, image, mask, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "MedianNerveSegLib"] + _args(image, mask, out, tiny_click_model, "+214,61")
    runs = [subprocess.Popen(command[:-1] + [f"+214,6{k}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for k in range(3)]
    assert [run.wait(timeout=600) for run in runs] == [0, 0, 0]
    rows = read_results(out / "measurements.csv")
    assert sorted(r.mask for r in rows) == [f"Pz001-001_r{n}_mask.png" for n in (1, 2, 3)]
    for row in rows:  # each row's mask is the file it names
        assert int(read_mask(out / row.mask).sum()) == row.area_px
    assert [s["step"] for s in json.loads((out / "Pz001-001_clicks.json").read_text())["steps"]] == [1, 2, 3]


def test_an_interrupted_call_leaves_a_number_that_is_never_reused(tiny_click_model, image, mask, tmp_path):
    out = tmp_path / "out"
    assert main(_args(image, mask, out, tiny_click_model, "+214,65")) == 0
    orphan = out / "Pz001-001_r2_mask.png"  # written by a call interrupted before its row and record
    Image.fromarray(np.zeros((468, 606), np.uint8)).save(orphan)
    assert main(_args(image, out / "Pz001-001_mask.png", out, tiny_click_model, "-200,60")) == 0
    assert [r.mask for r in read_results(out / "measurements.csv")] == ["Pz001-001_r1_mask.png",
                                                                       "Pz001-001_r3_mask.png"]
    assert not read_mask(orphan).any()  # left as it was


def test_a_results_file_of_another_kind_is_refused_before_anything_is_written(tiny_click_model, image, mask,
                                                                             tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "measurements.csv").write_text("a,b\n1,2\n")
    assert main(_args(image, mask, out, tiny_click_model, "+214,65")) == 2
    assert "measurements.csv: not a results file" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".refine.lock", "measurements.csv"]


def test_a_results_file_with_a_cut_or_unended_last_row(tiny_click_model, image, mask, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_args(image, mask, out, tiny_click_model, "+214,65")) == 0
    results = out / "measurements.csv"
    results.write_bytes(results.read_bytes().rstrip(b"\r\n"))  # a whole last row without its line end
    assert main(_args(image, out / "Pz001-001_mask.png", out, tiny_click_model, "-200,60")) == 0
    assert [r.mask for r in read_results(results)] == ["Pz001-001_r1_mask.png", "Pz001-001_r2_mask.png"]
    with open(results, "a") as handle:
        handle.write("/x/y.png,0,Pz")  # a row cut short
    assert main(_args(image, out / "Pz001-001_mask.png", out, tiny_click_model, "-201,60")) == 2
    assert "line 4: unreadable row" in capsys.readouterr().err
    assert not (out / "Pz001-001_r3_mask.png").exists()


def test_segment_and_refine_keep_to_folders_of_their_own(tiny_click_model, image, mask, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_args(image, mask, out, tiny_click_model, "+214,65")) == 0
    assert main(["segment", str(image), "--out", str(out), "--spacing", str(SPACING)]) == 2
    assert "holds refine results (Pz001-001_clicks.json)" in capsys.readouterr().err
    assert not (out / "segment_run.json").exists() and len(read_results(out / "measurements.csv")) == 1


def test_a_folder_in_the_way_is_refused_before_anything_is_written(tiny_click_model, image, mask, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "Pz001-001_overlay.png").mkdir(parents=True)
    assert main(_args(image, mask, out, tiny_click_model, "+214,65")) == 2
    assert "Pz001-001_overlay.png is a folder" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".refine.lock", "Pz001-001_overlay.png"]


def test_a_record_with_clicks_outside_the_image_is_named(tiny_click_model, image, mask, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_args(image, mask, out, tiny_click_model, "+214,65")) == 0
    record = out / "Pz001-001_clicks.json"
    data = json.loads(record.read_text())
    data["steps"][0]["session_clicks"] = ["+9999,9999"]
    record.write_text(json.dumps(data))
    assert main(_args(image, out / "Pz001-001_mask.png", out, tiny_click_model, "-200,60")) == 2
    assert "Pz001-001_clicks.json: click +9999,9999 lies outside the image" in capsys.readouterr().err


@pytest.mark.parametrize("record, why", [
    ("not json", "not a refine record"),
    ('{"steps": ["abc"], "image_sha256": "x", "frame": 0}', "step 1 lacks"),
    ('{"steps": [], "image": 5}', "no image checksum and frame"),
    ('{"steps": [{"step": 1, "clicks": [], "session_clicks": ["zz"], "mask": "m", "mask_sha256": "x"}], '
     '"image_sha256": "x", "frame": 0}', "step 1: click 'zz'"),
])
def test_a_damaged_record_is_one_line_naming_it(tiny_click_model, image, mask, tmp_path, capsys, record, why):
    out = tmp_path / "out"
    out.mkdir()
    (out / "Pz001-001_clicks.json").write_text(record)
    assert main(_args(image, mask, out, tiny_click_model, "+214,65")) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "Pz001-001_clicks.json: " in error[0] and why in error[0]


def test_the_record_knows_its_image_by_content_not_by_name(tiny_click_model, image, mask, tmp_path, capsys,
                                                          dataset_dir):
    out = tmp_path / "out"
    assert main(_args(image, mask, out, tiny_click_model, "+214,65")) == 0
    moved = tmp_path / "elsewhere" / IMAGE
    moved.parent.mkdir()
    shutil.move(image, moved)
    assert main(_args(moved, out / "Pz001-001_mask.png", out, tiny_click_model, "-200,60")) == 0
    assert "after 1 earlier click(s)" in capsys.readouterr().out  # the same image: its session goes on
    impostor = tmp_path / "other" / IMAGE  # another patient's image under the same name
    impostor.parent.mkdir()
    shutil.copy(dataset_dir / "images" / "Pz002-001.png", impostor)
    assert main(_args(impostor, mask, out, tiny_click_model, "+214,65")) == 2
    assert "records the refinement of another image" in capsys.readouterr().err
    assert refinement_of(out / "Pz001-001_mask.png", moved)["clicks_made"] == 2
    assert refinement_of(out / "Pz001-001_mask.png", impostor) is None  # not this image's clicks


def test_a_mask_of_several_pages_is_refused(tiny_click_model, image, tmp_path, capsys):
    pages = [Image.fromarray(np.zeros((468, 606), np.uint8)), Image.fromarray(np.full((468, 606), 255, np.uint8))]
    stack = tmp_path / "masks.tif"
    pages[0].save(stack, save_all=True, append_images=pages[1:])
    assert main(_args(image, stack, tmp_path / "out", tiny_click_model, "+214,65")) == 2
    assert "2 pages: a mask is one image" in capsys.readouterr().err


def test_benchmark_clicks_tables_only_the_clicks_it_made(tiny_click_model, dataset_dir, tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["benchmark-clicks", "--dataset", str(dataset_dir), "--out", str(out), "--model",
                 str(tiny_click_model), "--segmenter", "median_nerve_unet_small", "--spacing", str(SPACING),
                 "--max-images", "1", "--max-clicks", "3"]) == 0
    table = (out / "clicks.md").read_text()
    assert "DSC after 3" in table and "DSC after 5" not in table and "not at 95 in 3" in table
    for bad in (["--max-clicks", "0"], ["--max-images", "-1"]):
        with pytest.raises(SystemExit):
            main(["benchmark-clicks", "--dataset", str(dataset_dir), "--out", str(out)] + bad)
        assert "is not a whole number of at least 1" in capsys.readouterr().err


def _disc_pixels(path, band_from, colour):
    picture = np.asarray(Image.open(path).convert("RGB"))
    return int(np.all(picture[picture.shape[0] - band_from:] == colour, axis=-1).sum()), picture.shape[0] - band_from


def test_clicks_on_the_edge_are_drawn_whole_and_a_long_caption_wraps(tmp_path):
    frame, empty = np.full((120, 160), 80, np.uint8), np.zeros((120, 160), bool)
    caption = ["CSA 12.34 mm\u00b2  IMPLAUSIBLE", "side unknown inlet", "median_nerve_click 1.0.0", "3 clicks"]
    write_overlay_png(tmp_path / "edge.png", frame, empty, caption=caption,
                      clicks=[Click(0, 0, True), Click(159, 119, False)])
    write_overlay_png(tmp_path / "middle.png", frame, empty, clicks=[Click(80, 60, True), Click(100, 60, False)])
    for colour in ((0, 200, 0), (230, 0, 0)):  # each edge disc about as whole as one in the middle, not a quarter
        middle = _disc_pixels(tmp_path / "middle.png", 120, colour)[0]
        assert middle > 10 and _disc_pixels(tmp_path / "edge.png", 120, colour)[0] >= 0.75 * middle
    band = np.asarray(Image.open(tmp_path / "edge.png")).shape[0] - 120
    assert band > 40  # the caption took more than one line rather than being cut off
