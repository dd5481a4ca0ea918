"""The `median-nerve-seg` command line: segment, measure, evaluate, train, models."""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from . import __version__
from .cli_dataset import add_dataset_parser
from .runtime import REFINE_RUNTIMES, RUNTIMES

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _spacing(text: str):
    """'0.062' (isotropic) or '0.062,0.07' (row,col), in mm, within the plausible range."""
    from .spacing import SpacingError, parse_spacing

    try:
        return parse_spacing(text, "--spacing")
    except SpacingError as error:
        raise argparse.ArgumentTypeError(str(error))


def _positive(text: str) -> int:
    """A whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or value == "":
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


class _ResultPrinter:
    """Prints each result as it is produced: a table row on stdout, an error on stderr."""

    def __init__(self) -> None:
        self.rows = 0
        self.unknown_spacing = False
        print(f"{'image':<28} {'frame':>5} {'found':>5} {'conf':>5} {'CSA mm2':>8} {'CSA px':>7} {'perim mm':>8} "
              f"{'circ':>5} {'flat':>5} {'n':>2}  flags")

    def __call__(self, r) -> None:
        if r.error:
            print(f"error: {r.image}: {r.error}", file=sys.stderr)
            return
        self.rows += 1
        self.unknown_spacing |= r.spacing_mm is None
        found = "-" if r.found is None else ("yes" if r.found else "NO")
        print(f"{Path(r.image).name:<28} {r.frame:>5} {found:>5} {_fmt(r.confidence):>5} "
              f"{_fmt(r.area_mm2):>8} {_fmt(r.area_px):>7} {_fmt(r.perimeter_mm):>8} "
              f"{_fmt(r.circularity):>5} {_fmt(r.flattening_ratio):>5} {_fmt(r.n_components):>2}  "
              f"{','.join(r.flags)}", flush=True)

    def notes(self) -> None:
        if self.unknown_spacing:
            print("note: pixel spacing unknown for some images: CSA in pixels only (give --spacing MM)")


def cmd_segment(args: argparse.Namespace) -> int:
    from .inference import segmenter_of
    from .io import find_images
    from .pipeline import segment_files
    from .progress import tracker

    paths = find_images(args.inputs)
    if not paths:
        raise FileNotFoundError(f"no supported image in {', '.join(args.inputs)}")
    segmenter = segmenter_of(args.model or [], args.device, args.runtime)
    printer = _ResultPrinter()
    try:
        summary = segment_files(paths, Path(args.out), segmenter, args.spacing, args.save_prob, args.mask_formats,
                                progress=tracker("segment", "segmenting"), on_result=printer, labels=_labels(args),
                                dicom_out=args.dicom_out, overlay=args.overlay)
    except KeyboardInterrupt:
        print(f"interrupted: {printer.rows} frame(s) are in {Path(args.out) / 'measurements.csv'}; "
              "run the same command again to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    printer.notes()
    for warning in summary.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.dicom_out:
        from .io import format_of

        others = [p for p in paths if getattr(format_of(p), "name", "") != "dicom"]
        if others:
            print(f"note: {len(others)} input(s) are not DICOM (e.g. {others[0].name}): no DICOM SEG/SR for them")
    skipped = f", {summary.n_skipped} already done" if summary.n_skipped else ""
    print(f"wrote {summary.results_path}: {summary.n_frames} frame(s) from {summary.n_files} file(s){skipped}; "
          f"{summary.n_failed} file(s) failed" + (" (see the errors above)" if summary.n_failed else ""))
    return EXIT_SOME_FAILED if summary.n_failed else EXIT_OK


def _parsed_by(module: str, function: str):
    """An argparse type: ``function`` of ``module`` (imported when an argument is parsed, so that --help stays
    fast), its ValueError shown as argparse's one-line error."""
    def convert(text: str):
        parse = getattr(importlib.import_module(f".{module}", __package__), function)
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error))

    return convert


def cmd_refine(args: argparse.Namespace) -> int:
    from .refine import Refiner
    from .refine_folder import refine_file

    refiner = Refiner(args.model, args.device, args.runtime)
    outcome = refine_file(refiner, args.image, args.mask, args.clicks or [], Path(args.out), args.spacing,
                          args.frame, _labels(args))
    row, before = outcome.row, outcome.before
    unit = "mm^2" if row.area_mm2 is not None else "px"
    area = lambda m: f"{m.area_mm2:.2f}" if m.area_mm2 is not None else str(m.area_px)
    carried = len(outcome.session_clicks) - len(outcome.steps)
    print(f"{Path(args.image).name}: {len(outcome.steps)} click(s) ({' '.join(str(c) for c in args.clicks)})"
          + (f" after {carried} earlier click(s) of this session" if carried else "")
          + f": CSA {area(before)} -> {area(outcome.steps[-1].measurement)} {unit}, "
          f"{row.n_components} component(s), {row.ms:.0f} ms"
          + (f"; flags: {','.join(row.flags)}" if row.flags else ""))
    if row.area_mm2 is None:
        print("note: pixel spacing unknown: CSA in pixels only (give --spacing MM)")
    print(f"wrote {outcome.mask_path} ({outcome.step_mask_path.name}), {outcome.overlay_path.name}, "
          f"a row of {Path(args.out) / 'measurements.csv'}")
    return EXIT_OK


def cmd_classify(args: argparse.Namespace) -> int:
    from .classify import Classifier, classify_files
    from .io import find_images

    paths = find_images(args.inputs)
    if not paths:
        raise FileNotFoundError(f"no supported image in {', '.join(args.inputs)}")
    classifier = Classifier(args.model, args.device)
    print(f"{classifier.model_id}: P({classifier.settings.classes[1]}) from a {classifier.settings.crop_mm:g} mm crop "
          f"around the nerve {classifier.segmenter.model_id} finds; labels: {classifier.settings.label_source}")

    def show(row) -> None:
        if row["error"]:
            print(f"error: {row['image']} frame {row['frame']}: {row['error']}", file=sys.stderr)
        else:
            print(f"{Path(row['image']).name:<28} {row['frame']:>5} {row['probability']:>6}  {row['label']}"
                  + (f"  maps: {row['maps']}" if row["maps"] else ""), flush=True)

    summary = classify_files(paths, Path(args.out), classifier, args.spacing, args.explain or [], on_row=show)
    skipped = f", {summary.n_skipped} already done" if summary.n_skipped else ""
    print(f"wrote {summary.path}: {summary.n_rows} row(s) from {summary.n_files} file(s){skipped}; "
          f"{summary.n_failed} file(s) failed")
    return EXIT_SOME_FAILED if summary.n_failed else EXIT_OK


def cmd_evaluate_classifiers(args: argparse.Namespace) -> int:
    from .classifier_eval import evaluate_classifiers

    evaluate_classifiers(Path(args.dataset), Path(args.out), args.models, args.labels, args.surrogate_csa,
                         args.spacing, args.segmenter, args.cutoff, args.device, args.resamples)
    print((Path(args.out) / "classifiers.md").read_text())
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    from .explain import explain_segmentation_files
    from .io import find_images

    paths = find_images(args.inputs)
    if not paths:
        raise FileNotFoundError(f"no supported image in {', '.join(args.inputs)}")
    failures = explain_segmentation_files(paths, Path(args.out), args.model, args.explain, args.spacing,
                                          args.device, log=print)
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return EXIT_SOME_FAILED if failures else EXIT_OK


def cmd_cross_validate(args: argparse.Namespace) -> int:
    from .cross_validation import cross_validate

    result = cross_validate(Path(args.dataset), args.models, Path(args.out), args.spacing, args.device)
    pooled = result["pooled"]
    print(f"{result['n_images']} images over {len(result['folds'])} folds: DSC {pooled['dice_mean']:.3f}"
          + (f", CSA MAE {pooled['csa_mae_mm2']:.2f} mm^2" if pooled.get("csa_mae_mm2") is not None else
             " (no CSA figure: give --spacing)")
          + f"; wrote {Path(args.out) / 'cross_validation.md'}")
    for error in result["errors"]:
        print(f"error: {error}", file=sys.stderr)
    return EXIT_SOME_FAILED if result["n_errors"] else EXIT_OK


def cmd_export_nnunet(args: argparse.Namespace) -> int:
    from .nnunet_export import export_nnunet

    done = export_nnunet(Path(args.dataset), Path(args.out), args.id, args.name, args.folds, args.seed)
    folder = Path(done["folder"])
    print(f"wrote {done['cases']} cases of {done['patients']} patients to {folder}; validation cases per fold: "
          f"{done['folds']}")
    print(f"next, with nnUNet_raw={folder.parent} and nnUNet_preprocessed, nnUNet_results set (nnU-Net v2.8.1 ran "
          f"these steps on this export): nnUNetv2_plan_and_preprocess -d {args.id} -c 2d --verify_dataset_integrity; "
          f"copy {folder / 'splits_final.json'} into $nnUNet_preprocessed/{folder.name}/ (nnU-Net's trainer then "
          f"validates each FOLD on our patients); nnUNetv2_train {args.id} 2d FOLD")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from .report import load_cutoffs, review_text, write_report

    report = write_report(args.results, Path(args.out), load_cutoffs(args.cutoffs))
    for side in report.sides:
        levels = ", ".join(f"{level} {s.mean_mm2:.2f} mm^2 (n={s.n})" for level, s in side.levels.items())
        flagged = [v.key for v in side.verdicts if v.at_or_above]
        print(f"{side.patient} {side.side}: {levels}" + (f"; at or above: {', '.join(flagged)}" if flagged else "")
              + (f"; {review_text(side)}" if review_text(side) else ""))
    for excluded in report.excluded:
        print(f"not in the report: {excluded['image']} frame {excluded['frame']}: {excluded['reason']}",
              file=sys.stderr)
    print(f"wrote {Path(args.out) / 'report.html'} (research use, not a diagnosis)")
    return EXIT_OK


def _add_label_options(parser: argparse.ArgumentParser) -> None:
    from .pipeline import LEVELS, SIDES

    parser.add_argument("--patient", default=None, help="patient id of every input (default: the DICOM "
                        "PatientID, else the PzNNN of the file name)")
    parser.add_argument("--side", default=None, choices=SIDES, help="the wrist (default: the DICOM laterality; "
                        "a file that says the other side is refused)")
    parser.add_argument("--level", default="inlet", choices=LEVELS,
                        help="where the images were taken: carpal tunnel inlet (default), forearm or outlet")


def _labels(args: argparse.Namespace):
    from .pipeline import Labels

    return Labels(args.patient, args.side, args.level)


def cmd_measure(args: argparse.Namespace) -> int:
    from .pipeline import measure_files
    from .results import ResultsWriter

    printer = _ResultPrinter()
    rows = measure_files(args.masks, args.spacing, _labels(args))
    for row in rows:
        printer(row)
    printer.notes()
    if args.out:
        with ResultsWriter(args.out) as writer:
            for row in rows:
                writer.write(row)
    return EXIT_SOME_FAILED if any(r.error for r in rows) else EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Exit 0 when every image was scored, 1 when some could not be (each named on stderr)."""
    from .evaluate import evaluate_folders, spacing_from_results

    spacing = args.spacing
    if spacing is None:
        spacing, reason = spacing_from_results(Path(args.pred))
        if reason:
            print(f"warning: {reason}", file=sys.stderr)
    summary = evaluate_folders(Path(args.pred), Path(args.gt), Path(args.out), spacing,
                               probability_dir=args.prob, strict=args.strict)
    missing = summary["missing_predictions"]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        print(f"warning: {len(missing)} ground-truth mask(s) without a prediction in {args.pred} "
              f"({'counted as empty' if args.strict else 'left out; --strict counts them as empty'}): {shown}",
              file=sys.stderr)
    for error in summary["errors"]:
        print(f"error: {error}", file=sys.stderr)
    print(json.dumps({k: summary[k] for k in ("n", "dice_mean", "dice_median", "iou_mean", "hd95_mean_mm",
                                              "auc_mean", "found_rate", "csa_mae_mm2", "csa_icc", "csa_bias_mm2",
                                              "units", "n_errors")
                      if k in summary}, indent=2))
    print(f"wrote {Path(args.out) / 'metrics.csv'} and {Path(args.out) / 'summary.json'}")
    if summary["n_errors"]:
        print(f"{summary['n_errors']} image(s) could not be scored", file=sys.stderr)
        return 1
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train import SECOND_STAGE_INPUT_SIZE, config_from_json, train

    overrides = dict(architecture=args.architecture, epochs=args.epochs, batch_size=args.batch_size,
                     learning_rate=args.lr, device=args.device,
                     input_size=list(args.input_size) if args.input_size else None, max_images=args.max_images,
                     init_weights=args.init_weights, name=args.name, seed=args.seed, spacing_mm=args.spacing,
                     time_budget_s=args.time_budget, folds=args.folds, fold=args.fold)
    stop = (lambda: Path(args.stop_file).exists()) if args.stop_file else None
    if args.bundle:
        out = Path(args.out or Path(args.bundle) / "models")
        config = _bundle_config(Path(args.bundle), overrides, args.trust_bundle)
    else:
        if not args.out:
            raise ValueError("--out is required without --bundle")
        out = Path(args.out)
        config = config_from_json(args.config, **overrides)
    if args.labels and args.surrogate_csa is not None:
        raise ValueError("give --labels (diagnoses) or --surrogate-csa (the surrogate), not both")
    labels = {"labels": args.labels, "surrogate_csa_mm2": args.surrogate_csa, "weights": args.weights}
    config.classifier = replace(config.classifier, **{k: v for k, v in labels.items() if v is not None})
    config_file = json.loads(Path(args.config).read_text()) if args.config else {}
    if "second_stage" in config_file and not args.first_stage and not config.second_stage.first_stage:
        raise ValueError(f"--config {args.config} describes a second stage: give --first-stage MODEL")
    if args.first_stage:
        window = tuple(args.window_mm) if args.window_mm else config.second_stage.window_mm
        config.second_stage = replace(config.second_stage, first_stage=args.first_stage, window_mm=window)
        if not args.input_size and "input_size" not in config_file:
            config.input_size = SECOND_STAGE_INPUT_SIZE
    elif args.window_mm:
        raise ValueError("--window-mm is the second stage's window: give --first-stage MODEL with it")
    info = train(Path(args.dataset), out, config, stop=stop)
    print(json.dumps(info.metrics, indent=2))
    if info.metrics.get("failed"):
        print(f"error: training failed: {info.metrics['failed']}; {out} is kept for inspection only",
              file=sys.stderr)
        return 1
    use = ("refine IMAGE --mask MASK --click +X,Y --out DIR" if info.click_encoding else
           "classify IMAGE --out DIR" if info.classification else "segment IMAGE")
    print(f"model written to {out}; use it with: median-nerve-seg {use} --model {out}")
    return 0


def _bundle_config(bundle: Path, overrides: Dict[str, Any], trusted: bool = False):
    """The TrainConfig of a bundle (see bundle.train_config: untrusted bundles are refused)."""
    from .bundle import train_config

    return train_config(bundle, overrides, trusted)


def cmd_models(args: argparse.Namespace) -> int:
    from .models import MISSING_PACKAGE_HINT, MODEL_REGISTRY, available_models, build_model, count_parameters
    from .zoo import installed_models, load_info, model_name

    print("architectures:")
    usable = set(available_models()) | set(available_models("click")) | set(available_models("classifier"))
    for name, spec in sorted(MODEL_REGISTRY.items()):
        if name in usable:
            parameters = spec.parameters or count_parameters(build_model(name))
            print(f"  {name:<14} {parameters:>10,d} params  {spec.reference}")
        else:
            hints = "; ".join(MISSING_PACKAGE_HINT[p] for p in spec.requires)
            print(f"  {name:<14} {'-':>10}         {spec.reference} [not available here: {hints}]")
    print("installed models:")
    for folder in installed_models():
        info = load_info(folder)
        dice, clicks, auc = (info.metrics.get(key) for key in ("dice_mean", "clicks", "auc"))
        print(f"  {model_name(folder):<14} {info.architecture} v{info.version}"
              + (f"  val DSC {dice:.3f}" if dice is not None else "")
              + (f" after {clicks} simulated clicks (refine)" if clicks is not None else "")
              + (f"  val ROC AUC {auc:.3f} (classify)" if auc is not None and info.classification else "")
              + f"  ({folder})")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from .benchmark import run_benchmark
    from .train import config_from_json
    from .zoo import resolve_model

    base = config_from_json(args.config, epochs=args.epochs, time_budget_s=args.time_budget, device=args.device,
                            input_size=tuple(args.input_size) if args.input_size else None,
                            max_images=args.max_images, seed=args.seed, spacing_mm=args.spacing,
                            val_every=10 ** 6)  # last epoch only
    run_benchmark(Path(args.dataset), Path(args.out), base, args.models, cpu_timing=not args.no_cpu_timing,
                  trained=[resolve_model(m) for m in args.trained])
    print((Path(args.out) / "benchmark.md").read_text())
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .benchmark import compare_models

    compare_models(Path(args.dataset), args.models, Path(args.out), args.spacing, args.device)
    print((Path(args.out) / "comparison.md").read_text())
    return 0


def cmd_benchmark_speed(args: argparse.Namespace) -> int:
    from .inference import resolve_device
    from .speed import benchmark_speed

    benchmark_speed(Path(args.out), args.models, resolve_device(args.device), args.threads, args.repeats)
    print((Path(args.out) / "speed.md").read_text())
    return 0


def cmd_benchmark_pipeline(args: argparse.Namespace) -> int:
    from .inference import resolve_device
    from .io import find_images
    from .speed import benchmark_pipeline

    images = find_images(args.images)[: args.max_images]
    if not images:
        raise FileNotFoundError(f"no supported image in {', '.join(args.images)}")
    benchmark_pipeline(images, Path(args.out), args.model, args.spacing, resolve_device(args.device), args.threads,
                       args.runtime, args.overlay, args.repeats)
    print((Path(args.out) / "pipeline.md").read_text())
    return 0


def cmd_benchmark_clicks(args: argparse.Namespace) -> int:
    from .click_benchmark import benchmark_clicks

    benchmark_clicks(Path(args.dataset), Path(args.out), args.model, args.segmenter, args.spacing, args.device,
                     args.max_clicks, args.max_images, args.runtime)
    print((Path(args.out) / "clicks.md").read_text())
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from .quantize import quantize_model

    record = quantize_model(args.model, Path(args.dataset), args.spacing, progress=print)
    ms = record["network_ms_median"]
    print(f"{record['model']}: int8 {'accepted' if record['accepted'] else 'REFUSED'}: {record['verdict']}; "
          f"network {ms['float32']} -> {ms['int8']} ms/frame on this CPU; masks agree at DSC "
          f"{record['agreement']['dice_mean']:.4f}, CSA MAE {record['agreement']['csa_mae_mm2']:.3f} mm^2")
    return 0 if record["accepted"] else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="median-nerve-seg", description=(
        "Median nerve segmentation and cross-sectional area (CSA) in transverse wrist ultrasound."))
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    spacing_help = ("pixel spacing in mm, isotropic (0.062) or ROW,COL; overrides the file's own. "
                    "Without it, PNG/BMP/JPEG have no spacing and CSA is reported in pixels only")

    seg = sub.add_parser("segment", help="segment the median nerve and measure its CSA",
                         description="Segment every image (or every image in each folder) and write "
                                     "<stem>_mask.png, <stem>_overlay.png and measurements.csv to --out.")
    seg.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                     help="images (PNG, BMP, JPEG, TIFF, NRRD, NIfTI, MHA, DICOM) or folders of them")
    seg.add_argument("--out", required=True, help="output folder (created if missing)")
    seg.add_argument("--model", action="append", default=None,
                     help="installed model name or model folder (default: the shipped model); given several "
                          "times, their ensemble: the mean of their probability maps")
    seg.add_argument("--spacing", type=_spacing, default=None, metavar="MM", help=spacing_help)
    seg.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N where a GPU is available")
    seg.add_argument("--runtime", choices=RUNTIMES, default="auto",
                     help="network runtime: auto (default: OpenVINO on the CPU when installed, else PyTorch), torch, "
                          "openvino (masks match PyTorch's; see docs/benchmarks/pipeline.md)")
    seg.add_argument("--save-prob", action="store_true",
                     help="also write <stem>_prob.png, the nerve probability (0-255), for evaluate's AUC")
    seg.add_argument("--mask-formats", nargs="+", default=[], choices=["nrrd", "seg.nrrd"],
                     help="also write <stem>_mask.nrrd (with spacing) and/or <stem>.seg.nrrd "
                          "(a Slicer segmentation with a 'Median nerve' segment)")
    seg.add_argument("--no-overlay", dest="overlay", action="store_false",
                     help="write no <stem>_overlay.png (the annotated picture): for long clips, where drawing "
                          "and encoding a picture per frame costs more than the network")
    seg.add_argument("--dicom-out", action="store_true",
                     help="also write <stem>_seg.dcm (DICOM SEG of the nerve) and <stem>_sr.dcm (DICOM SR TID 1500 "
                          "with the CSA) for every DICOM input, for PACS")
    _add_label_options(seg)
    seg.set_defaults(func=cmd_segment)

    ref = sub.add_parser("refine", help="fix a nerve contour with clicks: + where nerve was missed, - where "
                                         "background was taken in",
                         description="Refines MASK (0/255, the AI's or a previous refine's) of IMAGE with a click "
                                     "model, one click at a time, and writes <stem>_mask.png, <stem>_overlay.png "
                                     "(clicks drawn) and a row of measurements.csv to --out; each refinement is also "
                                     "kept as <stem>_r<N>_mask.png and recorded in <stem>_clicks.json. Refining "
                                     "a mask that refine wrote to --out continues its session (the model is also "
                                     "given the clicks that made it).")
    ref.add_argument("image", metavar="IMAGE", help="the ultrasound image (any format segment reads)")
    ref.add_argument("--mask", required=True, help="the current mask of IMAGE, same size (0 background, nonzero nerve)")
    ref.add_argument("--click", dest="clicks", action="append", type=_parsed_by("clicks", "parse_click"),
                     metavar="+X,Y|-X,Y",
                     help="a click, X = column and Y = row in 0-based pixels of IMAGE: +X,Y marks nerve, -X,Y "
                          "background; repeat it for more clicks, applied in order")
    ref.add_argument("--out", required=True, help="output folder (created if missing; not a segment output folder)")
    ref.add_argument("--spacing", type=_spacing, default=None, metavar="MM", help=spacing_help)
    ref.add_argument("--model", default=None, help="click model: installed name or folder (default: the shipped "
                                                   "median_nerve_click)")
    ref.add_argument("--frame", type=int, default=None, help="the frame of a clip to refine (0-based; required "
                                                             "for a clip)")
    ref.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ref.add_argument("--runtime", choices=REFINE_RUNTIMES, default="auto",
                     help="network runtime: auto (default: OpenVINO on the CPU when installed, else PyTorch; the same "
                          "masks, and a new process starts without importing PyTorch), torch, openvino")
    _add_label_options(ref)
    ref.set_defaults(func=cmd_refine)

    cla = sub.add_parser("classify", help="CTS (or a classifier's other class) from a 15 x 15 mm crop around the "
                                          "nerve, without its CSA (Shinohara et al. 2022)",
                         description="Finds the nerve with the classifier's segmenter, crops 15 x 15 mm around it "
                                     "(from the pixel spacing: an image without one is refused) and writes "
                                     "classification.csv (image, frame, probability of the positive class, label, "
                                     "model, ...) to --out; with --explain, maps of where the classifier looked. "
                                     "Research use: the shipped classifier's positive class is a surrogate "
                                     "(enlarged nerve), never a diagnosis.")
    cla.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="images or folders of them")
    cla.add_argument("--out", required=True, help="output folder (created if missing)")
    cla.add_argument("--model", default=None, help="classifier: installed name or folder (default: the shipped one)")
    cla.add_argument("--spacing", type=_spacing, default=None, metavar="MM", help=spacing_help)
    cla.add_argument("--explain", type=_parsed_by("explain", "parse_methods"), default=None, metavar="METHODS",
                     help="comma-separated maps to write: occlusion, lime (needs captum and scikit-learn: the explain "
                          "extra), gradcam")
    cla.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    cla.set_defaults(func=cmd_classify)

    ecl = sub.add_parser("evaluate-classifiers", help="classifiers next to the CSA rule on held-out patients: "
                                                      "accuracy ... ROC AUC with bootstrap CIs, DeLong's test",
                         description="On the validation patients (a store's split, else seed 0 / 20 % by patient) "
                                     "that no model learnt from: each classifier and the CSA rule (the segmenter's "
                                     "CSA >= --cutoff) with Shinohara et al.'s figures, 95 % CIs from a bootstrap "
                                     "over patients, confusion matrices, DeLong's test against the CSA rule; writes "
                                     "classifiers.md, classifiers.json, per_image.csv and roc.png to --out.")
    ecl.add_argument("--dataset", required=True, help="images/ + masks/ folder or a dataset store")
    ecl.add_argument("--models", nargs="+", required=True, help="classifiers: installed names or folders")
    ecl.add_argument("--out", required=True, help="output folder")
    ecl.add_argument("--labels", default=None, metavar="CSV", help="diagnoses: label (CTS or control) per image or "
                                                                 "patient")
    ecl.add_argument("--surrogate-csa", type=float, default=None, metavar="MM2",
                     help="without diagnoses: label by the expert CSA >= MM2 (a surrogate, not a diagnosis)")
    ecl.add_argument("--cutoff", type=float, default=10.0, metavar="MM2", help="the CSA rule's cut-off (default 10)")
    ecl.add_argument("--segmenter", default=None, help="the model measuring the CSA (default: the shipped one)")
    ecl.add_argument("--spacing", type=_spacing, default=None, metavar="MM", help=spacing_help)
    ecl.add_argument("--resamples", type=_positive, default=2000, help="bootstrap resamples (default 2000)")
    ecl.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ecl.set_defaults(func=cmd_evaluate_classifiers)

    exp = sub.add_parser("explain", help="where a segmenter looked when it called the nerve: occlusion and Grad-CAM "
                                         "maps",
                         description="For each image, the segmenter's nerve score (its mean nerve probability over "
                                     "the mask it predicts) explained by occlusion sensitivity and Grad-CAM (its "
                                     "element-wise form, HiResCAM); writes <stem>_<method>.png (the map over the "
                                     "image) and .npy (the float map, at the network's input size) to --out.")
    exp.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    exp.add_argument("--out", required=True, help="output folder")
    exp.add_argument("--model", default=None, help="segmenter: installed name or folder (default: the shipped one)")
    exp.add_argument("--explain", type=_parsed_by("explain", "parse_methods"), default=["occlusion", "gradcam"],
                     metavar="METHODS",
                     help="comma-separated: occlusion, gradcam, lime (default occlusion,gradcam)")
    exp.add_argument("--spacing", type=_spacing, default=None, metavar="MM", help=spacing_help)
    exp.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    exp.set_defaults(func=cmd_explain)

    cvs = sub.add_parser("cross-validate", help="fold models (train --folds N --fold K) scored on their folds, and "
                                                "over all images together",
                         description="Each model segments the validation patients its model.json names; writes "
                                     "the pooled figures over every validated image, each fold's, their spread, "
                                     "and the masks, to --out (cross_validation.md/.json, pooled/, fold_<k>/).")
    cvs.add_argument("--dataset", required=True, help="images/ + masks/ folder, or a dataset store (its training and"
                     " validation samples)")
    cvs.add_argument("--models", nargs="+", required=True,
                     help="one model folder (or name) per fold; several of one fold are scored as their ensemble")
    cvs.add_argument("--out", required=True, help="output folder")
    cvs.add_argument("--spacing", type=_spacing, default=None, metavar="MM", help=spacing_help)
    cvs.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    cvs.set_defaults(func=cmd_cross_validate)

    nnu = sub.add_parser("export-nnunet", help="a dataset as nnU-Net v2 raw data with this project's patient folds",
                         description="Writes OUT/Dataset<ID>_<NAME>/ (imagesTr, labelsTr with 0/1 labels, "
                                     "dataset.json) and splits_final.json: patient-level folds, fold 0 of seed 0 "
                                     "being the shipped models' validation patients, so nnU-Net trains and "
                                     "validates on the same patients as the models here.")
    nnu.add_argument("--dataset", required=True, help="images/ + masks/ folder, or a dataset store (its training and"
                     " validation samples)")
    nnu.add_argument("--out", required=True, help="folder to hold Dataset<ID>_<NAME>/ (nnUNet_raw)")
    nnu.add_argument("--id", type=int, default=501, help="nnU-Net dataset id, 1-999 (default 501)")
    nnu.add_argument("--name", default="MedianNerve", help="dataset name (default MedianNerve)")
    nnu.add_argument("--folds", type=int, default=5, help="patient folds (default 5)")
    nnu.add_argument("--seed", type=int, default=0, help="the patient order's seed (default 0)")
    nnu.set_defaults(func=cmd_export_nnunet)

    mea = sub.add_parser("measure", help="measure masks drawn elsewhere (CSA, perimeter, shape)")
    mea.add_argument("masks", nargs="+", metavar="MASK", help="mask files: PNG/BMP (nonzero = nerve), NRRD, .seg.nrrd")
    mea.add_argument("--spacing", type=_spacing, default=None, metavar="MM", help=spacing_help)
    mea.add_argument("--out", default=None, help="also write the measurements to this CSV file (results format; "
                     "an existing results file is appended to)")
    _add_label_options(mea)
    mea.set_defaults(func=cmd_measure)

    eva = sub.add_parser("evaluate", help="compare predicted masks with ground truth (DSC, HD95, CSA agreement)",
                         description="Matches <stem>_mask.png or <stem>.png in --pred to <stem>.png in --gt; "
                                     "writes metrics.csv, summary.json and report.md to --out. Exit 1 when "
                                     "some images could not be scored (error rows in metrics.csv).")
    eva.add_argument("--pred", required=True, help="folder of predicted masks")
    eva.add_argument("--gt", required=True, help="folder of ground-truth masks")
    eva.add_argument("--out", required=True, help="output folder for metrics.csv and summary.json")
    eva.add_argument("--spacing", type=_spacing, default=None, metavar="MM",
                     help="pixel spacing in mm for mm-based metrics; without it, the one spacing of --pred's "
                          "measurements.csv, else pixels")
    eva.add_argument("--prob", default=None, metavar="DIR",
                     help="folder of <stem>_prob.png/.npy probability maps for the AUC (default: --pred, "
                          "where segment --save-prob writes them); without any, no AUC")
    eva.add_argument("--strict", action="store_true",
                     help="score ground-truth masks without a prediction as empty predictions "
                          "(default: list them on stderr and leave them out)")
    eva.set_defaults(func=cmd_evaluate)

    tra = sub.add_parser("train", help="train or fine-tune a model on a folder with images/ and masks/",
                         description="Patient-level split (PzNNN prefix), augmentation, BCE+Dice, AdamW with "
                                     "cosine schedule; writes a model folder usable with segment --model.")
    tra.add_argument("--dataset", required=True,
                     help="folder with images/ and masks/ of the same stems, or a dataset store")
    tra.add_argument("--out", default=None, help="model folder to write (default with --bundle: BUNDLE/models)")
    tra.add_argument("--bundle", default=None, help="train with a MONAI bundle's configs/train.json "
                                                    "(training/<model>); the options below override it")
    tra.add_argument("--trust-bundle", action="store_true",
                     help="run a --bundle from outside this project's training/ (its configs run code)")
    tra.add_argument("--config", default=None, help="JSON file of TrainConfig fields (options below override it)")
    tra.add_argument("--architecture", default=None, help="registry architecture (see `models`)")
    tra.add_argument("--epochs", type=int, default=None, help="training epochs (default 200)")
    tra.add_argument("--batch-size", type=int, default=None, help="batch size (default 16)")
    tra.add_argument("--lr", type=float, default=None, help="peak learning rate (default 2e-3)")
    tra.add_argument("--input-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                     help="network input size; must divide by 16 (default 288 384)")
    tra.add_argument("--max-images", type=int, default=None, help="use only the first N pairs (smoke runs)")
    tra.add_argument("--init-weights", default=None,
                     help="model name or folder to fine-tune from (its network, a tenth of the "
                          "recipe's lr unless --lr)")
    tra.add_argument("--name", default=None, help="model name written to model.json")
    tra.add_argument("--seed", type=int, default=None, help="seed of the patient split and training")
    tra.add_argument("--folds", type=int, default=None, metavar="N",
                     help="patient-level cross-validation: validate on --fold K of N patient folds (the folds of "
                          "export-nnunet; fold 0 of 5 is the default split's validation patients)")
    tra.add_argument("--fold", type=int, default=None, metavar="K", help="the fold validated on, 0 to N-1")
    tra.add_argument("--spacing", type=_spacing, default=None, metavar="MM",
                     help="pixel spacing in mm (or ROW,COL) of every image, for the validation's CSA "
                          "(default: each image's own; CSA left out where unknown)")
    tra.add_argument("--device", default=None, help="cpu (default) or cuda")
    tra.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                     help="training time: stops before the next epoch would end past it (at most --epochs)")
    tra.add_argument("--first-stage", default=None, metavar="MODEL",
                     help="train the second stage of a two-stage model: MODEL (a name or folder, trained on the same "
                          "patient split) finds the nerve, the new network re-segments a window around it at near "
                          "native resolution (input size 128 x 256 unless --input-size or --config gives one); MODEL's "
                          "network is copied into --out")
    tra.add_argument("--window-mm", type=float, nargs=2, default=None, metavar=("H", "W"),
                     help="the second stage's window in mm (default 8 16: the dataset's nerves are at most "
                          "3.7 x 13 mm)")
    tra.add_argument("--labels", default=None, metavar="CSV",
                     help="classifiers: a CSV of diagnoses with a label column (CTS or control) and an image or "
                          "patient column")
    tra.add_argument("--surrogate-csa", type=float, default=None, metavar="MM2",
                     help="classifiers without diagnoses: label each image by its expert CSA >= MM2 (a surrogate, "
                          "never called a diagnosis); needs the spacing")
    tra.add_argument("--weights", default=None, metavar="FILE",
                     help="classifiers: weights of the same network that you have (e.g. ImageNet), loaded where "
                          "they fit; nothing is downloaded")
    tra.add_argument("--stop-file", default=None,
                     help="end training after the epoch during which this file appears, and save the model")
    tra.set_defaults(func=cmd_train)

    cmp = sub.add_parser("compare", help="compare models on a dataset's validation patients (before/after a fine-tune)",
                         description="Segments the validation split of a dataset store (or the patient split of "
                                     "images/ + masks/) with each model and writes comparison.json and comparison.md.")
    cmp.add_argument("--dataset", required=True, help="dataset store, or images/ + masks/ folder")
    cmp.add_argument("--models", nargs="+", required=True, help="installed model names or model folders")
    cmp.add_argument("--out", required=True, help="output folder")
    cmp.add_argument("--spacing", type=_spacing, default=None, metavar="MM",
                     help="pixel spacing in mm (or ROW,COL) of every image (default: each image's own; "
                          "CSA left out where unknown)")
    cmp.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    cmp.set_defaults(func=cmd_compare)

    ben = sub.add_parser("benchmark", help="train every architecture under one budget and compare them",
                         description="Trains each registry architecture on the same patient split (skipping those "
                                     "with OUT/<model>/result.json), evaluates the held-out patients with the "
                                     "papers' metrics, times each on this CPU and writes benchmark.md/json.")
    ben.add_argument("--dataset", required=True, help="images/ + masks/ folder or a dataset store")
    ben.add_argument("--out", required=True, help="output folder (one model folder per architecture)")
    ben.add_argument("--models", nargs="*", default=None,
                     help="architectures to train (default: all; none with --models and no name)")
    ben.add_argument("--trained", nargs="+", default=[], metavar="MODEL",
                     help="also evaluate these trained models (names or folders) on the same patients")
    ben.add_argument("--config", default=None, help="JSON of TrainConfig fields shared by every model")
    ben.add_argument("--epochs", type=int, default=None, help="epochs per model (default 200)")
    ben.add_argument("--time-budget", type=float, default=None, help="seconds of training per model")
    ben.add_argument("--input-size", type=int, nargs=2, default=None, metavar=("H", "W"))
    ben.add_argument("--max-images", type=int, default=None, help="use only the first N pairs (smoke runs)")
    ben.add_argument("--seed", type=int, default=None, help="seed of the patient split")
    ben.add_argument("--spacing", type=_spacing, default=None, metavar="MM",
                     help="pixel spacing in mm (or ROW,COL) of every image (default: each image's own; "
                          "CSA left out where unknown)")
    ben.add_argument("--device", default=None, help="cpu (default) or cuda")
    ben.add_argument("--no-cpu-timing", action="store_true", help="skip the CPU ms/frame column (GPU machines)")
    ben.set_defaults(func=cmd_benchmark)

    spd = sub.add_parser("benchmark-speed", help="parameters, MFLOPs and ms/frame of each architecture",
                         description="Times each registry architecture on a 468 x 606 frame (batch 1 and 8) "
                                     "and writes speed.json and speed.md to --out.")
    spd.add_argument("--out", required=True, help="output folder")
    spd.add_argument("--models", nargs="+", default=None, help="architectures to time (default: all)")
    spd.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    spd.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    spd.add_argument("--repeats", type=int, default=5, help="timed passes per measurement (default 5)")
    spd.set_defaults(func=cmd_benchmark_speed)

    rep = sub.add_parser("report", help="per patient and side: CSA summary against the literature's cut-offs",
                         description="Reads results files (segment/measure output folders or measurements.csv) and "
                                     "writes report.html, report.md and report.json with the overlays to --out: "
                                     "per patient and side the CSA of each image, mean, SD and n per level, the "
                                     "wrist-to-forearm ratio and delta-CSA. Research use, not a diagnosis.")
    rep.add_argument("results", nargs="+", metavar="RESULTS", help="results folders or measurements.csv files")
    rep.add_argument("--out", required=True, help="a new folder for the report (a folder holding one is refused)")
    rep.add_argument("--cutoffs", default=None, metavar="JSON",
                     help='other thresholds: {"inlet_csa_mm2": {"threshold": 9, "source": "..."}, "wfr": ..., '
                          '"delta_csa_mm2": ...}')
    rep.set_defaults(func=cmd_report)

    pip = sub.add_parser("benchmark-pipeline", help="time segment per stage (read, network, measure, write)",
                         description="Runs segment on the images into a scratch folder and writes pipeline.json and "
                                     "pipeline.md to --out: ms per frame of each stage, end to end, and the "
                                     "hardware they were measured on.")
    pip.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR")
    pip.add_argument("--out", required=True, help="output folder")
    pip.add_argument("--model", default=None, help="installed model name or model folder (default: the shipped one)")
    pip.add_argument("--spacing", type=_spacing, default=None, metavar="MM", help=spacing_help)
    pip.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    pip.add_argument("--runtime", choices=RUNTIMES, default="auto",
                     help="network runtime: auto (default: OpenVINO on the CPU when installed, else PyTorch), torch, "
                          "openvino (masks match PyTorch's; see docs/benchmarks/pipeline.md)")
    pip.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    pip.add_argument("--max-images", type=int, default=50, help="images to time (default 50)")
    pip.add_argument("--no-overlay", dest="overlay", action="store_false", help="time segment --no-overlay")
    pip.add_argument("--repeats", type=int, default=1,
                     help="runs of the batch; each figure is their median (default 1)")
    pip.set_defaults(func=cmd_benchmark_pipeline)

    bcl = sub.add_parser("benchmark-clicks", help="simulate click refinement on the validation patients: DSC and "
                                                  "CSA error after 0-5 clicks, NoC@90/95, ms per click",
                         description="Starts from the segmenter's mask of each validation image (a store's split, "
                                     "else seed 0 / 20 % by patient) that neither model was trained on, clicks "
                                     "where the mask is most wrong, and writes clicks.md, clicks.json, "
                                     "per_image.csv and clicks.png to --out, for the click model and a baseline "
                                     "that only keeps or drops components of the segmenter's output.")
    bcl.add_argument("--dataset", required=True, help="images/ + masks/ folder or a dataset store")
    bcl.add_argument("--out", required=True, help="output folder")
    bcl.add_argument("--model", default=None, help="click model (default: the shipped median_nerve_click)")
    bcl.add_argument("--segmenter", default=None, help="the model whose masks the clicks correct (default: the "
                                                       "shipped median_nerve_unet)")
    bcl.add_argument("--spacing", type=_spacing, default=None, metavar="MM",
                     help="pixel spacing in mm of every image (default: each image's own; CSA errors left out "
                          "where unknown)")
    bcl.add_argument("--max-clicks", type=_positive, default=20, help="clicks per image, the NoC cap (default 20)")
    bcl.add_argument("--max-images", type=_positive, default=None, help="use only the first N validation images")
    bcl.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    bcl.add_argument("--runtime", choices=REFINE_RUNTIMES, default="auto",
                     help="the click model's runtime (default auto: OpenVINO on the CPU when installed)")
    bcl.set_defaults(func=cmd_benchmark_clicks)

    add_dataset_parser(sub)

    qua = sub.add_parser("quantize", help="make a model's int8 network (--runtime openvino-int8), checked on its "
                                          "held-out patients",
                         description="Quantizes the model with NNCF on the images of its training patients and "
                                     "writes MODEL/openvino_int8/ with quantization.json. Accepted (exit 0) only "
                                     "when, on its held-out patients (model.json), the mean DSC drops by at most "
                                     "0.005 and the CSA MAE grows by at most 0.1 mm^2; else exit 1, and nothing "
                                     "is written. Needs pip install "
                                     '"median-nerve-seg[int8]".')
    qua.add_argument("--model", default=None, help="installed model name or model folder (default: the shipped one)")
    qua.add_argument("--dataset", required=True, help="the dataset the model was trained on (images/, masks/)")
    qua.add_argument("--spacing", type=_spacing, default=None, metavar="MM", help=spacing_help)
    qua.set_defaults(func=cmd_quantize)

    mod = sub.add_parser("models", help="list architectures and installed models")
    mod.set_defaults(func=cmd_models)
    return parser


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _joined_clicks(argv: Sequence[str]) -> list:
    """``--click -X,Y`` as ``--click=-X,Y``: argparse would take a value starting with '-' for an option."""
    joined, tokens = [], iter(argv)
    for token in tokens:
        if token == "--click":
            value = next(tokens, None)
            joined.append(token if value is None else f"--click={value}")
        else:
            joined.append(token)
    return joined


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Exit codes: 0 all good, 1 some inputs failed (each named on stderr), 2 usage or setup error
    (one line), 130 interrupted (Ctrl-C or SIGTERM; finished results are kept)."""
    args = build_parser().parse_args(_joined_clicks(sys.argv[1:] if argv is None else list(argv)))
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main_thread else None
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (OSError, RuntimeError, KeyError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
