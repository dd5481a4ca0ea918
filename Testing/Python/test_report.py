"""The clinical report: per patient and side, against the literature's cut-offs."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from MedianNerveSegLib.cli import main
from MedianNerveSegLib.report import DEFAULT_CUTOFFS, load_cutoffs, summarise
from MedianNerveSegLib.results import FrameResult, read_results

from test_cli import _wrist_dicom


def _row(patient, side, level, csa, **extra):
    return FrameResult(image=f"{patient}-{side}-{level}-{csa}.dcm", patient=patient, side=side, level=level,
                       found=True, area_mm2=csa, area_px=int(csa / 0.003844), **extra), ""


def test_summary_ratios_and_cut_offs_known_answers():
    rows = [_row("P1", "right", "inlet", 12.0), _row("P1", "right", "inlet", 14.0),
            _row("P1", "right", "forearm", 8.0), _row("P1", "left", "inlet", 9.0),
            _row("P2", "right", "inlet", 11.0), _row("P2", "right", "forearm", 10.0)]
    report = summarise(rows)
    by = {(s.patient, s.side): s for s in report.sides}
    right = by[("P1", "right")]
    assert (right.levels["inlet"].n, right.levels["inlet"].mean_mm2) == (2, 13.0)
    assert right.levels["inlet"].sd_mm2 == pytest.approx(2 ** 0.5)
    assert right.wfr == pytest.approx(13 / 8) and right.delta_csa_mm2 == pytest.approx(5.0)
    assert {v.key: v.at_or_above for v in right.verdicts} == {"inlet_csa_mm2": True, "wfr": True,
                                                              "delta_csa_mm2": True}
    left = by[("P1", "left")]
    assert left.levels["inlet"].sd_mm2 is None and left.wfr is None
    assert {v.key: v.at_or_above for v in left.verdicts} == {"inlet_csa_mm2": False, "wfr": None,
                                                             "delta_csa_mm2": None}
    p2 = by[("P2", "right")]  # 11 / 10: above the CSA cut-off, below WFR 1.4 and delta-CSA 2
    assert {v.key: v.at_or_above for v in p2.verdicts} == {"inlet_csa_mm2": True, "wfr": False,
                                                           "delta_csa_mm2": False}


def test_rows_that_cannot_count_are_listed_with_their_reason():
    rows = [_row("P1", "right", "inlet", 12.0),
            (FrameResult(image="px.png", patient="P1", side="right", level="inlet", found=True, area_px=3000), ""),
            (FrameResult(image="none.png", patient="P1", found=False, area_px=0, area_mm2=0.0), ""),
            (FrameResult(image="bad.png", error="file is empty"), ""),
            _row("P1", "right", "inlet", 95.0, flags=["implausible-csa"])]
    report = summarise(rows)
    assert [s.levels["inlet"].n for s in report.sides] == [1]
    reasons = {e["image"]: e["reason"] for e in report.excluded}
    assert reasons["px.png"].startswith("spacing unknown") and reasons["none.png"] == "no nerve found"
    assert reasons["bad.png"] == "error: file is empty" and reasons["P1-right-inlet-95.0.dcm"].startswith("implausible")


def test_cut_offs_can_be_changed_only_with_a_source(tmp_path):
    path = tmp_path / "cutoffs.json"
    path.write_text(json.dumps({"inlet_csa_mm2": {"threshold": 9.0}}))
    with pytest.raises(ValueError, match="needs its source"):
        load_cutoffs(path)
    path.write_text(json.dumps({"inlet_csa_mm2": {"threshold": 9.0, "source": "local protocol 2026"}}))
    inlet = next(c for c in load_cutoffs(path) if c.key == "inlet_csa_mm2")
    assert (inlet.threshold, inlet.source) == (9.0, "local protocol 2026")
    path.write_text(json.dumps({"csa": {"threshold": 9.0}}))
    with pytest.raises(ValueError, match="unknown cut-offs"):
        load_cutoffs(path)
    assert all(c.source for c in DEFAULT_CUTOFFS)


def test_report_from_dicom_of_two_patients_both_sides_two_levels(dataset_dir, tmp_path):
    images = sorted((dataset_dir / "images").glob("Pz01[0-9]-*.png"))[:8]
    inlet, forearm = tmp_path / "inlet", tmp_path / "forearm"
    for folder in (inlet, forearm):
        folder.mkdir()
    for k, image in enumerate(images):  # the forearm level of this test reuses inlet pictures
        pixels = np.asarray(Image.open(image).convert("L"))
        _wrist_dicom((inlet if k < 4 else forearm) / f"{image.stem}.dcm", pixels, "RL"[k % 2], f"HOSP-{k % 4 // 2}")
    assert main(["segment", str(inlet), "--out", str(tmp_path / "r_inlet")]) == 0
    assert main(["segment", str(forearm), "--out", str(tmp_path / "r_forearm"), "--level", "forearm"]) == 0
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "r_inlet"), str(tmp_path / "r_forearm"), "--out", str(out)]) == 0
    data = json.loads((out / "report.json").read_text())
    rows = read_results(tmp_path / "r_inlet") + read_results(tmp_path / "r_forearm")
    assert {(s["patient"], s["side"]) for s in data["sides"]} == {(f"HOSP-{p}", side) for p in (0, 1)
                                                                 for side in ("left", "right")}
    for side in data["sides"]:
        mean = {level: np.mean([r.area_mm2 for r in rows if (r.patient, r.side, r.level) ==
                                (side["patient"], side["side"], level)]) for level in ("inlet", "forearm")}
        assert side["levels"]["inlet"]["mean_mm2"] == pytest.approx(mean["inlet"])
        assert side["wfr"] == pytest.approx(mean["inlet"] / mean["forearm"])
        assert side["delta_csa_mm2"] == pytest.approx(mean["inlet"] - mean["forearm"])
    page = (out / "report.html").read_text()
    assert "Research use only" in page and "Hobson-Webb" in page and page.count("<figure>") == 8
    shown = re.findall(r"src='images/([^']+)'", page)
    assert len(shown) == 8 and all((out / "images" / name).is_file() for name in shown)
    markdown = (out / "report.md").read_text()
    assert (out / "report_csa.png").is_file() and "HOSP-0, right" in markdown
    assert "(2026-11-30T14:25:01)" in markdown and "2026-11-30T14:25:01" in page  # each image's acquisition
    assert main(["report", str(tmp_path / "r_inlet"), "--out", str(out)]) == 2  # never overwritten


def test_an_image_given_twice_is_refused_not_counted_twice(tmp_path):
    from MedianNerveSegLib.results import ResultsWriter

    with ResultsWriter(tmp_path / "a" / "measurements.csv") as writer:
        writer.write(_row("P1", "right", "inlet", 12.0)[0])
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "a" / "measurements.csv"),
                 "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()  # nothing written
