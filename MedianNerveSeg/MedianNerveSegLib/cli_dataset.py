"""The `dataset` command: a labelled-dataset store that grows with corrected masks."""

from __future__ import annotations

import argparse
import json
import sys

from .data import DEFAULT_PATIENT_PATTERN
from .spacing import parse_spacing

SPACING_HELP = ("pixel spacing in mm (0.062, or row,col) recorded for images whose file carries none "
                "(DICOM and NRRD keep their own); default: unknown")


def cmd_dataset_init(args: argparse.Namespace) -> int:
    from .dataset import LabelledDataset

    store = LabelledDataset.init(args.dir, name=args.name)
    print(f"labelled dataset at {store.folder} ({store.stats()['n_images']} image(s))")
    return 0


def cmd_dataset_add(args: argparse.Namespace) -> int:
    from .dataset import LabelledDataset
    from .refine_folder import refinement_of

    spacing = parse_spacing(args.spacing, "--spacing")
    refinement = refinement_of(args.label, args.image)
    record = LabelledDataset(args.dir).add(args.image, args.label, patient=args.patient, author=args.author,
                                           ai_mask=args.ai_mask, model=args.model,
                                           model_version=args.model_version, spacing_mm=spacing,
                                           refinement=refinement)
    if record.get("unchanged"):
        print(f"unchanged: {record['id']} label v{record['version']} already holds this label")
        return 0
    dsc = "" if record["ai_dsc"] is None else f", AI DSC {record['ai_dsc']:.3f}"
    if refinement:
        dsc += f", refined with {refinement['clicks_made']} click(s)"
    print(f"added {record['id']} label v{record['version']} (patient {record['patient']}{dsc})")
    return 0


def cmd_dataset_import(args: argparse.Namespace) -> int:
    from .dataset import LabelledDataset

    spacing = parse_spacing(args.spacing, "--spacing")
    counts = LabelledDataset(args.dir).import_folder(args.source, pattern=args.pattern, spacing_mm=spacing)
    for image, reason in counts["failed"]:
        print(f"failed: {image}: {reason}", file=sys.stderr)
    print(f"imported {counts['added']} new sample(s) from {args.source}: "
          f"{counts['unchanged']} unchanged, {len(counts['failed'])} failed")
    return 1 if counts["failed"] else 0


def cmd_dataset_split(args: argparse.Namespace) -> int:
    from .dataset import LabelledDataset

    splits = LabelledDataset(args.dir).split(args.val, args.test, args.seed)
    print(json.dumps(splits, indent=2))
    return 0


def cmd_dataset_stats(args: argparse.Namespace) -> int:
    from .dataset import LabelledDataset

    print(json.dumps(LabelledDataset(args.dir).stats(), indent=2))
    return 0


def add_dataset_parser(subparsers) -> None:
    """Add `dataset init|add|import|split|stats` to the top-level sub-commands."""
    dataset = subparsers.add_parser(
        "dataset", help="build a labelled dataset of images and versioned, provenance-tracked labels",
        description="A folder with images/, labels/<id>_v<N>.png, provenance/ and a MONAI datalist.json; "
                    "a new label for a stored image becomes a new version, never an overwrite.")
    sub = dataset.add_subparsers(dest="dataset_command", required=True)

    ini = sub.add_parser("init", help="create an empty labelled dataset (an existing one is left unchanged)")
    ini.add_argument("dir", help="dataset folder (new or empty)")
    ini.add_argument("--name", default="median-nerve", help="dataset name written to datalist.json")
    ini.set_defaults(func=cmd_dataset_init)

    add = sub.add_parser("add", help="add an image and its label (a new label version if the image is stored)")
    add.add_argument("dir", help="dataset folder")
    add.add_argument("--image", required=True, help="image file; its name (without extension) is the sample id")
    add.add_argument("--label", required=True, help="mask file (nonzero = nerve), same size as the image; a mask "
                     "written by refine records its clicks (from the <stem>_clicks.json beside it)")
    add.add_argument("--patient", default=None, help="patient id (default: from the file name, e.g. PzNNN)")
    add.add_argument("--author", default="", help="who drew or corrected the label")
    add.add_argument("--ai-mask", default=None, help="the AI mask the label was corrected from (records its DSC)")
    add.add_argument("--model", default="", help="model that produced the AI mask")
    add.add_argument("--model-version", default="", help="version of that model")
    add.add_argument("--spacing", default=None, metavar="MM", help=SPACING_HELP)
    add.set_defaults(func=cmd_dataset_add)

    imp = sub.add_parser("import", help="import a folder of images/ and masks/ of the same names "
                                        "(bad pairs are listed and skipped; exit 1 if any)")
    imp.add_argument("dir", help="dataset folder")
    imp.add_argument("--from", dest="source", required=True, help="folder with images/ and masks/")
    imp.add_argument("--pattern", default=DEFAULT_PATIENT_PATTERN,
                     help=f"regex whose first group is the patient id in a file name (default {DEFAULT_PATIENT_PATTERN})")
    imp.add_argument("--spacing", default=None, metavar="MM", help=SPACING_HELP)
    imp.set_defaults(func=cmd_dataset_import)

    spl = sub.add_parser("split", help="assign patients to training/validation/test (stable across additions)")
    spl.add_argument("dir", help="dataset folder")
    spl.add_argument("--val", type=float, default=0.2, help="fraction of patients for validation (default 0.2)")
    spl.add_argument("--test", type=float, default=0.0, help="fraction of patients for test (default 0)")
    spl.add_argument("--seed", type=int, default=0, help="seed of the assignment of new patients (default 0)")
    spl.set_defaults(func=cmd_dataset_split)

    sta = sub.add_parser("stats", help="print counts, splits, mean label CSA (px; mm2 over samples of known spacing), "
                                        "authors and models as JSON")
    sta.add_argument("dir", help="dataset folder")
    sta.set_defaults(func=cmd_dataset_stats)
