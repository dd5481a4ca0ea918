"""nnU-Net v2 as the peer, on the CPU (issue 17): whether nnU-Net's own trainer validates each fold on our patients
(the export's splits_final.json), and ms per frame of nnU-Net's own predictor for the 2d configuration its planner
chose on our export, with and without its mirroring test-time augmentation (nnU-Net's default is with).

Accuracy needs nnU-Net trained on a GPU (docs/benchmarks/cross_validation.md); its speed does not: the weights here are
untrained, made by nnU-Net's own trainer from the plans, and the compute is the trained network's. Run it with a Python
that has nnunetv2 (not this project's .venv), after ``export-nnunet``, ``nnUNetv2_plan_and_preprocess -d 501 -c 2d``
and copying splits_final.json into nnUNet_preprocessed/Dataset501_MedianNerve/:

    nnUNet_raw=... nnUNet_preprocessed=... nnUNet_results=... PYTHON_WITH_NNUNET benchmarks/nnunet_cpu.py \\
        --images $nnUNet_raw/Dataset501_MedianNerve/imagesTr --max-images 20 --out docs/benchmarks/nnunet

Writes nnunet_cpu.json and .md: the folds check, the plan (network, patch, parameters) and the median ms per frame
after the first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from PIL import Image

DATASET = "Dataset501_MedianNerve"


def trainer(fold: int):
    """nnU-Net's own trainer of the 2d configuration for ``fold``, on the CPU."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    pre = Path(os.environ["nnUNet_preprocessed"]) / DATASET
    plans, dataset = load_json(str(pre / "nnUNetPlans.json")), load_json(str(pre / "dataset.json"))
    return nnUNetTrainer({**plans, "continue_training": False}, "2d", fold, dataset, device=torch.device("cpu"))


def folds_check() -> list:
    """Per fold of the export's splits_final.json: whether nnU-Net's trainer trains and validates on exactly its
    cases."""
    splits = json.loads((Path(os.environ["nnUNet_preprocessed"]) / DATASET / "splits_final.json").read_text())
    rows = []
    for fold, split in enumerate(splits):
        train_cases, val_cases = trainer(fold).do_split()
        rows.append({"fold": fold, "validation_cases": len(val_cases),
                     "same_cases": sorted(val_cases) == sorted(split["val"]) and
                     sorted(train_cases) == sorted(split["train"])})
    return rows


def untrained_model_folder() -> Path:
    """nnU-Net's results folder for the 2d configuration, with an untrained fold-0 checkpoint (made once)."""
    from batchgenerators.utilities.file_and_folder_operations import save_json

    trainer_0 = trainer(0)
    plans, dataset = trainer_0.plans_manager.plans, trainer_0.dataset_json
    folder = Path(trainer_0.output_folder_base)
    if not (folder / "fold_0" / "checkpoint_final.pth").is_file():
        trainer_0.initialize()
        (folder / "fold_0").mkdir(parents=True, exist_ok=True)
        save_json(plans, str(folder / "plans.json"))
        save_json(dataset, str(folder / "dataset.json"))
        trainer_0.save_checkpoint(str(folder / "fold_0" / "checkpoint_final.pth"))
    return folder


def ms_per_frame(folder: Path, frames, mirroring: bool) -> dict:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(use_mirroring=mirroring, device=torch.device("cpu"), verbose=False,
                                allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), (0,), "checkpoint_final.pth")
    times = []
    for grey in frames:  # as nnU-Net's NaturalImage2DIO reads a PNG: (channel, 1, rows, columns), spacing 1 pixel
        start = time.perf_counter()
        predictor.predict_single_npy_array(grey[None, None], {"spacing": (999, 1, 1)})
        times.append(1000 * (time.perf_counter() - start))
    parameters = sum(p.numel() for p in predictor.network.parameters())
    return {"first_ms": times[0], "median_ms_after_first": float(np.median(times[1:])), "parameters": parameters,
            "patch_size": list(predictor.configuration_manager.patch_size),
            "network": predictor.configuration_manager.network_arch_class_name.rsplit(".", 1)[-1]}


def markdown(result: dict) -> str:
    plan, threads, folds = result["with_mirroring"], result["threads"], result["folds"]
    same = [row["fold"] for row in folds if row["same_cases"]]
    cases = [row["validation_cases"] for row in folds]
    return (f"nnU-Net's trainer trains and validates on exactly the export's cases in folds {same} of {len(folds)} "
            f"(validation cases per fold: {cases}).\n\n"
            f"nnU-Net v2 {result['nnunetv2']}, 2d configuration as planned on `export-nnunet`'s data: "
            f"{plan['network']}, {plan['parameters'] / 1e6:.1f} M parameters, patch {plan['patch_size'][0]} x "
            f"{plan['patch_size'][1]}. Its predictor (`predict_single_npy_array`) on {result['frames']} frames of "
            f"{result['frame_size'][0]} x {result['frame_size'][1]}, {threads} CPU "
            f"thread{'s' if threads != 1 else ''}, PyTorch {result['torch']}; median ms per frame after the first "
            "(untrained weights: the compute of a trained network, not its accuracy).\n\n"
            "| test-time mirroring | ms per frame | first frame ms |\n|---|---|---|\n"
            + "".join(f"| {label} | {result[key]['median_ms_after_first']:.0f} | {result[key]['first_ms']:.0f} |\n"
                      for label, key in (("on (nnU-Net's default)", "with_mirroring"), ("off", "without_mirroring"))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, required=True, help="export-nnunet's imagesTr (PNG frames)")
    parser.add_argument("--max-images", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    paths = sorted(args.images.glob("*.png"))[: args.max_images]
    if len(paths) < 2:
        raise SystemExit(f"error: {args.images}: fewer than 2 PNG frames to time")
    frames = [np.asarray(Image.open(path).convert("L"), np.float32) for path in paths]
    folder = untrained_model_folder()
    result = {"nnunetv2": version("nnunetv2"), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
              "folds": folds_check(), "frames": len(frames), "frame_size": list(frames[0].shape),
              "with_mirroring": ms_per_frame(folder, frames, True),
              "without_mirroring": ms_per_frame(folder, frames, False)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nnunet_cpu.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "nnunet_cpu.md").write_text(markdown(result))
    print((args.out / "nnunet_cpu.md").read_text())


if __name__ == "__main__":
    main()
