"""MONAI bundles (training/<architecture>): the trust check, the training config, the inference run.

A bundle's configs are code: parsing one runs its ``$`` expressions and builds its ``_target_``
objects. ``train --bundle`` therefore parses only this project's own bundles unless the user
marks a bundle trusted.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from .zoo import BUNDLES_DIR

PathLike = Union[str, Path]


def is_project_bundle(bundle: PathLike) -> bool:
    """True when ``bundle`` really lies inside this project's training/ folder (links resolved)."""
    root = Path(os.path.realpath(BUNDLES_DIR))
    real = Path(os.path.realpath(bundle))
    return real != root and root in real.parents


def check_trusted(bundle: PathLike, trusted: bool = False) -> None:
    """Refuse, before anything of it is read, a bundle that is neither the project's nor trusted."""
    if not (trusted or is_project_bundle(bundle)):
        raise ValueError(f"{bundle}: not one of this project's bundles; bundle configs run code: "
                         "pass --trust-bundle if you trust it")


def train_config(bundle: Path, overrides: Dict[str, Any], trusted: bool = False):
    """The TrainConfig of a bundle's configs/train.json with the command line's overrides (None: keep
    the bundle's). Its "run" is ``train(dataset_dir, output_dir, train_config)``; the CLI calls
    ``train`` itself, with the stop file. Fine-tuning (init_weights) without a learning rate takes a
    tenth of the recipe's."""
    check_trusted(bundle, trusted)
    from monai.bundle import ConfigParser

    from .train import FINE_TUNE_LR_FACTOR, TrainConfig

    config_file = bundle / "configs" / "train.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{bundle}: not a bundle (no configs/train.json)")
    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser["bundle_root"] = str(bundle)
    rest = dict(overrides)
    top_level = {key: rest.pop(key, None) for key in ("epochs", "device", "input_size", "init_weights")}
    for key, value in top_level.items():
        if value is not None:
            parser[key] = value
    for key, value in rest.items():
        if value is not None:
            parser[f"train_config#{key}"] = value
    if top_level["init_weights"] and rest.get("learning_rate") is None:
        parser["train_config#learning_rate"] = FINE_TUNE_LR_FACTOR * parser.get_parsed_content(
            "train_config#learning_rate", default=TrainConfig.learning_rate)
    return parser.get_parsed_content("train_config")


def run_inference(bundle_root: PathLike, inputs: Union[PathLike, Sequence[PathLike]], output_dir: PathLike,
                  model: Optional[PathLike] = None, spacing_mm: Any = None, device: str = "cpu") -> int:
    """Segment ``inputs`` (files or folders) into ``output_dir`` with ``model`` (default: the bundle's
    models/) through the project's pipeline; inference.json's "run". Returns 0 when every file was
    segmented; raises SystemExit (exit status 1, one line) when some failed, so the bundle run fails."""
    from .inference import Segmenter
    from .io import find_images
    from .pipeline import segment_files
    from .spacing import parse_spacing

    given = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    spacing = parse_spacing(spacing_mm, "spacing_mm")
    paths = find_images(given)
    if not paths:
        raise FileNotFoundError(f"no supported image in {', '.join(map(str, given))}")
    segmenter = Segmenter(model or Path(bundle_root) / "models", device)
    summary = segment_files(paths, Path(output_dir), segmenter, spacing)
    print(f"wrote {summary.results_path}: {summary.n_frames} frame(s) from {summary.n_files} file(s)")
    if summary.n_failed:
        for failure in summary.failures:
            print(f"error: {failure.image}: {failure.error}", file=sys.stderr)
        raise SystemExit(f"{summary.n_failed} of {summary.n_files} file(s) failed; see {summary.results_path}")
    return 0


def run_refine(bundle_root: PathLike, image: PathLike, mask: PathLike, clicks: Sequence[str], output_dir: PathLike,
               model: Optional[PathLike] = None, spacing_mm: Any = None, device: str = "cpu") -> int:
    """Refine ``mask`` of ``image`` with ``clicks`` ('+X,Y' nerve, '-X,Y' background) into ``output_dir`` with
    ``model`` (default: the bundle's models/), as ``median-nerve-seg refine`` does; a click bundle's inference.json
    "run". Returns 0; a bad input raises with the reason."""
    from .clicks import parse_click
    from .refine import Refiner
    from .refine_folder import refine_file

    outcome = refine_file(Refiner(model or Path(bundle_root) / "models", device), image, mask,
                          [parse_click(text) for text in clicks], Path(output_dir), spacing_mm)
    print(f"wrote {outcome.mask_path} and a row of {Path(output_dir) / 'measurements.csv'}")
    return 0


def run_click_benchmark(bundle_root: PathLike, dataset_dir: PathLike, output_dir: PathLike,
                        model: Optional[PathLike] = None, spacing_mm: Any = None, device: str = "cpu",
                        max_images: Optional[int] = None) -> int:
    """``median-nerve-seg benchmark-clicks`` with ``model`` (default: the bundle's models/); a click bundle's
    evaluate.json "run"."""
    from .click_benchmark import benchmark_clicks

    benchmark_clicks(Path(dataset_dir), Path(output_dir), str(model or Path(bundle_root) / "models"),
                     spacing_mm=spacing_mm, device=device, max_images=max_images)
    print((Path(output_dir) / "clicks.md").read_text())
    return 0


def run_classify(bundle_root: PathLike, inputs: Union[PathLike, Sequence[PathLike]], output_dir: PathLike,
                 model: Optional[PathLike] = None, spacing_mm: Any = None, device: str = "cpu",
                 explain: Sequence[str] = ()) -> int:
    """``median-nerve-seg classify`` with ``model`` (default: the bundle's models/); a classifier bundle's
    inference.json "run". Raises SystemExit (status 1) when some file failed, naming each."""
    from .classify import Classifier, classify_files
    from .io import find_images

    given = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    paths = find_images(given)
    if not paths:
        raise FileNotFoundError(f"no supported image in {', '.join(map(str, given))}")
    summary = classify_files(paths, Path(output_dir), Classifier(model or Path(bundle_root) / "models", device),
                             spacing_mm, list(explain))
    print(f"wrote {summary.path}: {summary.n_rows} row(s) from {summary.n_files} file(s)")
    if summary.n_failed:
        raise SystemExit(f"{summary.n_failed} of {summary.n_files} file(s) failed; see {summary.path}")
    return 0


def run_classifier_evaluation(bundle_root: PathLike, dataset_dir: PathLike, output_dir: PathLike,
                              model: Optional[PathLike] = None, labels: Optional[PathLike] = None,
                              spacing_mm: Any = None, device: str = "cpu") -> int:
    """``median-nerve-seg evaluate-classifiers`` of ``model`` (default: the bundle's models/) with ``labels``
    (default: the surrogate expert CSA >= 10 mm2); a classifier bundle's evaluate.json "run"."""
    from .classifier_eval import evaluate_classifiers

    evaluate_classifiers(Path(dataset_dir), Path(output_dir), [str(model or Path(bundle_root) / "models")],
                         labels_csv=str(labels) if labels else None, surrogate_csa_mm2=None if labels else 10.0,
                         spacing_mm=spacing_mm, device=device)
    print((Path(output_dir) / "classifiers.md").read_text())
    return 0
