"""Click refinement: the Refiner, the `refine` command's contract, the click benchmark, click training and
the provenance of a label refined with clicks."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from MedianNerveSegLib.cli import main
from MedianNerveSegLib.click_training import SIMULATED_ERRORS, simulated_error, training_click
from MedianNerveSegLib.clicks import Click, Crop
from MedianNerveSegLib.inference import Segmenter
from MedianNerveSegLib.io import read_image, read_mask
from MedianNerveSegLib.refine import Refiner, refined_mask
from MedianNerveSegLib.results import read_results
from MedianNerveSegLib.runtime import openvino_installed
from MedianNerveSegLib.zoo import ModelFolderError, load_info

from conftest import SPACING

IMAGE = "Pz001-001.png"


@pytest.fixture(scope="module")
def ai_mask(dataset_dir, tmp_path_factory):
    """The small segmenter's mask of IMAGE, as segment writes it (0/255 PNG)."""
    out = tmp_path_factory.mktemp("ai")
    assert main(["segment", str(dataset_dir / "images" / IMAGE), "--out", str(out), "--spacing", str(SPACING),
                 "--model", "median_nerve_unet_small", "--runtime", "torch"]) == 0
    return out / "Pz001-001_mask.png"


def test_a_click_model_and_a_segmenter_are_not_interchangeable(tiny_click_model):
    with pytest.raises(ModelFolderError, match="refine needs a click model"):
        Refiner("median_nerve_unet_small")
    with pytest.raises(ModelFolderError, match="is a click model, it does not segment a frame: use it with median-nerve-seg refine"):
        Segmenter(tiny_click_model)
    info = load_info(tiny_click_model)
    assert info.click_encoding and info.metrics["clicks"] == 1


def test_clicks_apply_one_at_a_time_and_none_leaves_the_mask(tiny_click_model, dataset_dir, ai_mask):
    refiner = Refiner(tiny_click_model)
    image = read_image(dataset_dir / "images" / IMAGE, spacing_mm=SPACING)
    mask = read_mask(ai_mask)
    unchanged = refiner.refine(image, mask, [])
    assert np.array_equal(unchanged.mask, mask) and unchanged.measurement.area_px == mask.sum()
    clicks = [Click(300, 200, True), Click(250, 260, False), Click(320, 210, True)]
    steps = refiner.refine_clicks(image, mask, clicks)
    assert [s.clicks for s in steps] == [tuple(clicks[:1]), tuple(clicks[:2]), tuple(clicks)]
    assert all(s.mask.shape == mask.shape and s.mask.dtype == bool and s.milliseconds > 0 for s in steps)
    assert steps[-1].measurement.area_mm2 == pytest.approx(steps[-1].mask.sum() * SPACING ** 2)
    again = refiner.refine(image, steps[0].mask, clicks[:2])  # the same inputs give the same mask
    assert np.array_equal(again.mask, steps[1].mask)


def test_refiner_errors_name_what_is_wrong(tiny_click_model, dataset_dir):
    refiner = Refiner(tiny_click_model)
    image = read_image(dataset_dir / "images" / IMAGE)
    with pytest.raises(ValueError, match="click \\+606,0 lies outside the image"):
        refiner.refine(image, np.zeros((468, 606), bool), [Click(606, 0, True)])
    with pytest.raises(ValueError, match="mask: 600x468 pixels, but the image is 606x468"):
        refiner.refine(image, np.zeros((468, 600), bool), [Click(6, 0, True)])


def test_the_refined_mask_follows_the_clicks_and_keeps_what_the_click_did_not_address(tiny_click_model):
    info = load_info(tiny_click_model)
    mask = np.zeros((100, 100), bool)
    mask[20:40, 20:40] = True  # the nerve the click addresses
    mask[44:48, 44:48] = True  # a small separate component inside the crop, not addressed
    mask[70:90, 70:90] = True  # another component, outside the crop
    target = np.zeros_like(mask)
    target[20:40, 20:40] = True
    crop = Crop(10, 10, 50, 50, (64, 64))
    probability = np.zeros((100, 100), np.float32)
    probability[20:42, 20:42] = 0.9  # the model grows the nerve...
    probability[54:58, 54:58] = 0.9  # ...and calls a speck that neither the user nor the mask put there
    refined = refined_mask(probability, mask, target, [Click(41, 41, True)], crop, info, None)
    assert refined[41, 41] and refined[80, 80] and refined[45:47, 45:47].all()  # grown; the others kept whole
    assert not refined[56, 56]  # the unsupported speck dropped
    clicked = refined_mask(probability, mask, target, [Click(56, 56, True)], crop, info, None)
    assert clicked[56, 56]  # a positive click keeps its component, however small
    edge = refined_mask(probability, mask, target, [Click(42, 30, True), Click(21, 30, False)], crop, info, None)
    assert edge[30, 43] and not edge[30, 20]  # at the contour a click's 3 x 3 square takes its class
    deep = refined_mask(probability, mask, target, [Click(30, 30, False), Click(5, 5, True)], crop, info, None)
    assert deep[30, 30] and not deep[5, 5]  # never a hole in the nerve, nor an island of one click


def test_a_click_beside_the_nerve_leaves_the_nerve_whole(dataset_dir):
    refiner = Refiner()
    image = read_image(dataset_dir / "images" / IMAGE, spacing_mm=SPACING)
    mask = Segmenter(runtime="torch").predict(image).mask
    beside = refiner.refine(image, mask, [Click(100, 67, True)])  # outside the nerve's crop, whose own crop overlaps it
    assert (beside.mask & mask).sum() == mask.sum()
    speck = mask.copy()
    speck[295:305, 440:450] = True  # a separate component far from the click: not the click's business
    assert refiner.refine(image, speck, [Click(214, 65, True)]).mask[295:305, 440:450].all()


def test_a_click_far_from_the_nerve_changes_only_what_it_says(dataset_dir, ai_mask):
    refiner = Refiner()
    image = read_image(dataset_dir / "images" / IMAGE, spacing_mm=SPACING)
    mask = read_mask(ai_mask)
    far_background = refiner.refine(image, mask, [Click(300, 440, False)])
    assert np.array_equal(far_background.mask, mask)  # background already: nothing to change
    far_nerve = refiner.refine(image, mask, [Click(500, 420, True)])
    assert far_nerve.mask[420, 500] and (far_nerve.mask & mask).sum() == mask.sum()  # the nerve kept as it was
    empty = np.zeros_like(mask)
    only_background = refiner.refine_clicks(image, empty, [Click(213, 65, False), Click(240, 70, False)])
    assert not only_background[-1].mask.any()  # no nerve where nobody said there is one


def test_refiner_refuses_what_is_not_a_click_frame_or_runtime(tiny_click_model, dataset_dir):
    refiner = Refiner(tiny_click_model)
    image = read_image(dataset_dir / "images" / IMAGE)
    mask = np.zeros((468, 606), bool)
    with pytest.raises(ValueError, match="X and Y are whole pixels"):
        refiner.refine(image, mask, [Click(214.7, 65, True)])
    with pytest.raises(ValueError, match="'positive' is True \\(nerve\\) or False"):
        refiner.refine(image, mask, [Click(214, 65, "no")])
    with pytest.raises(ValueError, match="frame -1 is not one of its frames"):
        refiner.refine(image, mask, [Click(214, 65, True)], frame_index=-1)
    with pytest.raises(ValueError, match="a click model runs on auto, torch, openvino"):
        Refiner(tiny_click_model, runtime="bogus")


def _refine(image, mask, out, *clicks, model):
    args = ["refine", str(image), "--mask", str(mask), "--out", str(out), "--spacing", str(SPACING), "--model",
            str(model)]
    for click in clicks:
        args += ["--click", click]
    try:
        return main(args)
    except SystemExit as usage_error:  # argparse: usage, then the error on the last line
        return usage_error.code


def test_refine_command_contract(tiny_click_model, dataset_dir, ai_mask, tmp_path, capsys):
    image, out = dataset_dir / "images" / IMAGE, tmp_path / "refined"
    assert _refine(image, ai_mask, out, "+214,65", "-240,60", model=tiny_click_model) == 0
    printed = capsys.readouterr().out
    assert "2 click(s) (+214,65 -240,60)" in printed and "CSA " in printed
    mask, overlay = out / "Pz001-001_mask.png", out / "Pz001-001_overlay.png"
    assert set(np.unique(np.asarray(Image.open(mask)))) <= {0, 255} and Image.open(mask).size == (606, 468)
    picture = np.asarray(Image.open(overlay).convert("RGB"))
    band = picture.shape[0] - 468  # the caption above the image
    assert tuple(picture[band + 68, 217]) == (0, 200, 0) and tuple(picture[band + 63, 243]) == (230, 0, 0)
    rows = read_results(out / "measurements.csv")
    assert len(rows) == 1 and rows[0].image == str(image) and rows[0].model == "tiny_click@1.0.0"
    assert rows[0].mask == "Pz001-001_r1_mask.png" and rows[0].spacing_mm == (SPACING, SPACING)
    assert np.array_equal(read_mask(out / rows[0].mask), read_mask(mask))

    # refining its own mask again continues the session: the model is also given the two earlier clicks
    assert _refine(image, mask, out, "+210,70", model=tiny_click_model) == 0
    assert "after 2 earlier click(s)" in capsys.readouterr().out
    rows = read_results(out / "measurements.csv")
    assert [r.mask for r in rows] == ["Pz001-001_r1_mask.png", "Pz001-001_r2_mask.png"]
    record = json.loads((out / "Pz001-001_clicks.json").read_text())
    assert record["steps"][1]["session_clicks"] == ["+214,65", "-240,60", "+210,70"]
    assert record["steps"][1]["clicks"] == ["+210,70"]
    # from the AI's mask again: a new session, and the first refinement's file is kept as it was
    first = read_mask(out / "Pz001-001_r1_mask.png")
    assert _refine(image, ai_mask, out, "+214,65", model=tiny_click_model) == 0
    assert json.loads((out / "Pz001-001_clicks.json").read_text())["steps"][2]["session_clicks"] == ["+214,65"]
    assert np.array_equal(read_mask(out / "Pz001-001_r1_mask.png"), first)


@pytest.mark.parametrize("clicks, mask, message", [
    (["+606,10"], None, "Pz001-001.png: click +606,10 lies outside the image (606 columns x 468 rows"),
    (["-3,-4"], None, "click '-3,-4': expected +X,Y"),
    ([], None, "no click given: add --click +X,Y"),
    (["+3,4"], "other", "600x468 pixels, but the image is 606x468"),
])
def test_refine_command_refuses_bad_input_with_one_line(tiny_click_model, dataset_dir, ai_mask, tmp_path, capsys,
                                                        clicks, mask, message):
    if mask == "other":
        mask = tmp_path / "small.png"
        Image.fromarray(np.zeros((468, 600), np.uint8)).save(mask)
    code = _refine(dataset_dir / "images" / IMAGE, mask or ai_mask, tmp_path / "out", *clicks, model=tiny_click_model)
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in error[-1]
    assert not (tmp_path / "out" / "measurements.csv").exists()


def test_refine_writes_over_nothing(tiny_click_model, dataset_dir, ai_mask, tmp_path, capsys):
    image = dataset_dir / "images" / IMAGE
    assert _refine(image, ai_mask, ai_mask.parent, "+300,200", model=tiny_click_model) == 2  # a segment folder
    assert "holds segment results" in capsys.readouterr().err
    out = tmp_path / "out"
    out.mkdir()
    Image.fromarray(np.zeros((468, 606), np.uint8)).save(out / "Pz001-001_mask.png")  # not refine's
    assert _refine(image, ai_mask, out, "+300,200", model=tiny_click_model) == 2
    assert "Pz001-001_mask.png exists and is not a refinement recorded" in capsys.readouterr().err
    assert not read_mask(out / "Pz001-001_mask.png").any()


def test_a_clip_frame_is_refined_only_when_named(tiny_click_model, dataset_dir, tmp_path, capsys):
    import tifffile

    frames = np.stack([np.asarray(Image.open(dataset_dir / "images" / IMAGE).convert("L"))] * 3)
    clip = tmp_path / "clip.tif"
    tifffile.imwrite(clip, frames, photometric="minisblack")
    mask = tmp_path / "mask.png"
    Image.fromarray((read_mask(dataset_dir / "masks" / IMAGE) * 255).astype(np.uint8)).save(mask)
    assert _refine(clip, mask, tmp_path / "out", "+300,200", model=tiny_click_model) == 2
    assert "a clip of 3 frames: give --frame (0 to 2)" in capsys.readouterr().err
    assert main(["refine", str(clip), "--mask", str(mask), "--click", "+300,200", "--frame", "2", "--out",
                 str(tmp_path / "out"), "--model", str(tiny_click_model)]) == 0
    row = read_results(tmp_path / "out" / "measurements.csv")[0]
    assert row.frame == 2 and row.mask == "clip_f0002_r1_mask.png" and row.area_mm2 is None  # no spacing given
    assert "spacing-unknown" in row.flags


def test_a_label_made_by_refine_records_its_clicks_in_the_store(tiny_click_model, dataset_dir, ai_mask, tmp_path):
    image, out = dataset_dir / "images" / IMAGE, tmp_path / "refined"
    assert _refine(image, ai_mask, out, "+214,65", "-240,60", model=tiny_click_model) == 0
    assert _refine(image, out / "Pz001-001_mask.png", out, "+210,70", model=tiny_click_model) == 0
    store = tmp_path / "store"
    assert main(["dataset", "init", str(store)]) == 0
    assert main(["dataset", "add", str(store), "--image", str(image), "--label", str(out / "Pz001-001_mask.png"),
                 "--ai-mask", str(ai_mask)]) == 0
    record = json.loads((store / "provenance" / "Pz001-001_v1.json").read_text())
    assert record["refinement"] == {"clicks": ["+214,65", "-240,60", "+210,70"], "clicks_made": 3,
                                    "click_model": "tiny_click@1.0.0"}
    assert main(["dataset", "add", str(store), "--image", str(image), "--label", str(ai_mask)]) == 0
    assert json.loads((store / "provenance" / "Pz001-001_v2.json").read_text())["refinement"] is None


def test_benchmark_clicks_tables_the_model_next_to_the_baseline(tiny_click_model, dataset_dir, tmp_path):
    out = tmp_path / "bench"
    assert main(["benchmark-clicks", "--dataset", str(dataset_dir), "--out", str(out), "--model",
                 str(tiny_click_model), "--segmenter", "median_nerve_unet_small", "--spacing", str(SPACING),
                 "--max-images", "2", "--max-clicks", "6"]) == 0
    result = json.loads((out / "clicks.json").read_text())
    assert result["n_images"] == 2 and set(result["methods"]) == {"click model", "baseline: keep or drop components"}
    for summary in result["methods"].values():
        assert summary["n_images"] == 2 and 0 <= summary["noc95_mean"] <= 6 and summary["dice_mean_0"] > 0.8
        assert summary["csa_mae_mm2_0"] is not None
    baseline = result["methods"]["baseline: keep or drop components"]
    assert baseline["dice_mean_5"] >= baseline["dice_mean_0"]  # it only drops components that are wrong
    assert len(result["dice_curve"]["click model"]) == 7
    table = (out / "clicks.md").read_text()
    assert "| click model |" in table and "NoC@95" in table and "threads" in table and "cores" in table
    assert (out / "clicks.png").is_file() and (out / "per_image.csv").is_file()


@pytest.mark.parametrize("kind", sorted(SIMULATED_ERRORS))
def test_each_simulated_error_changes_the_mask_near_the_nerve(dataset_dir, kind):
    truth = read_mask(dataset_dir / "masks" / IMAGE)
    radius = np.sqrt(truth.sum() / np.pi)
    changed = [SIMULATED_ERRORS[kind](truth, radius, np.random.default_rng(seed)) for seed in range(5)]
    for mask in changed:
        assert mask.shape == truth.shape and mask.any() and not np.array_equal(mask, truth)
        rows, cols = np.nonzero(mask ^ truth)
        centre = np.argwhere(truth).mean(axis=0)
        assert np.hypot(rows - centre[0], cols - centre[1]).max() < 5 * radius
    start = simulated_error(truth, np.random.default_rng(0))
    click = training_click(start, truth, np.random.default_rng(0), jitter=1.0)
    assert (truth[click.y, click.x] and not start[click.y, click.x]) if click.positive else \
        (start[click.y, click.x] and not truth[click.y, click.x])


needs_openvino = pytest.mark.skipif(not openvino_installed(), reason="OpenVINO is not installed")


@needs_openvino
def test_openvino_refines_as_pytorch_does(tiny_click_model, dataset_dir, ai_mask):
    frame = read_image(dataset_dir / "images" / IMAGE).frame(0)
    mask = read_mask(ai_mask)
    rows, cols = np.nonzero(mask)
    clicks = [Click(int(cols.mean()), int(rows.mean()), True), Click(int(cols.max()) + 3, int(rows.mean()), False)]
    torch_refiner = Refiner(tiny_click_model, runtime="torch")
    crop, _ = torch_refiner.crop(mask, clicks, (SPACING, SPACING))
    expected = torch_refiner.probability(frame, mask, clicks, crop)
    refiner = Refiner(tiny_click_model)  # auto: OpenVINO where it is installed
    assert refiner.runtime == "openvino"
    np.testing.assert_allclose(refiner.probability(frame, mask, clicks, crop), expected, atol=1e-4)
    with pytest.raises(ValueError, match="a click model runs on auto, torch, openvino \\(it has no int8 network\\)"):
        Refiner(tiny_click_model, runtime="openvino-int8")


@needs_openvino
def test_a_refine_call_starts_without_torch_once_its_network_is_cached(tiny_click_model, dataset_dir, ai_mask,
                                                                        tmp_path):
    command = [sys.executable, "-c", "import sys; from MedianNerveSegLib.cli import main; code = main(sys.argv[1:]); "
               "print('loaded:', *(m for m in ('torch', 'monai') if m in sys.modules)); sys.exit(code)",
               "refine", str(dataset_dir / "images" / IMAGE), "--mask", str(ai_mask), "--click", "-250,260",
               "--model", str(tiny_click_model)]
    env = dict(os.environ, MEDIAN_NERVE_SEG_CACHE=str(tmp_path / "cache"))
    first, second = (subprocess.run(command + ["--out", str(tmp_path / out)], env=env, capture_output=True, text=True)
                     for out in ("first", "second"))
    assert first.returncode == 0 and "loaded: torch monai" in first.stdout  # the first start converts
    assert second.returncode == 0 and second.stdout.strip().endswith("loaded:"), second.stdout + second.stderr
    assert np.array_equal(*(read_mask(tmp_path / out / "Pz001-001_mask.png") for out in ("first", "second")))


def test_fine_tuning_a_click_model_keeps_its_network_and_crops(tiny_click_model):
    from MedianNerveSegLib.train import config_from_json

    config = config_from_json(None, init_weights=str(tiny_click_model))
    info = load_info(tiny_click_model)
    assert config.architecture == "click_unet" and list(config.input_size) == [64, 64]
    assert config.clicks.encoding == info.click_encoding and config.arch_kwargs == info.arch_kwargs


def test_the_segmenters_benchmark_sends_click_models_to_their_own(dataset_dir, tmp_path, capsys):
    assert main(["benchmark", "--dataset", str(dataset_dir), "--out", str(tmp_path), "--models", "click_unet"]) == 2
    assert "click_unet: click models refine masks" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_the_shipped_click_model_fixes_held_out_contours(dataset_dir):
    """On patients neither shipped model learnt from, three simulated clicks bring the default model's masks
    closer to the expert's, and no image is made much worse."""
    from MedianNerveSegLib.data import list_samples, split_by_patient
    from MedianNerveSegLib.evaluate import dice
    from MedianNerveSegLib.refine import simulate_clicks

    refiner, segmenter = Refiner(), Segmenter(runtime="torch")
    assert set(load_info(refiner.model_dir).training["val_patients"]) == \
        set(load_info(segmenter.model_dir).training["val_patients"])
    _, held_out = split_by_patient(list_samples(dataset_dir))
    before, after = [], []
    for sample in held_out[:6]:
        image, truth = read_image(sample.image, spacing_mm=SPACING), read_mask(sample.mask)
        start = segmenter.predict(image).mask
        session = simulate_clicks(lambda mask, clicks: refiner.refine(image, mask, clicks).mask, start, truth,
                                  max_clicks=3, min_clicks=3)
        before.append(dice(start, truth))
        after.append(dice(session.mask_after(3), truth))
    assert np.mean(after) > np.mean(before) + 0.01, (before, after)
    assert min(np.subtract(after, before)) > -0.02, (before, after)
