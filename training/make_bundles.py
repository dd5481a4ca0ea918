"""Writes one MONAI bundle per registry architecture into training/<model>/.

    .venv/bin/python training/make_bundles.py

The bundles only reference the core package (`MedianNerveSegLib.*` targets); rerun this
after adding an architecture to the registry. models/ (trained weights) is left untouched.
"""

from __future__ import annotations

import json
import re
from importlib.metadata import version
from pathlib import Path

import monai
import numpy
import torch

from MedianNerveSegLib import __version__, models
from MedianNerveSegLib.models import MODEL_REGISTRY, available_models, build_model, count_parameters

HERE = Path(__file__).resolve().parent
MELNIC = ("Melnic et al., DL-UNet: a convolutional neural network for median nerve segmentation: "
          "100 epochs, batch 8, Adam lr 1e-3, ReduceLROnPlateau (x0.1), early stopping, BCE + Dice")
KIM = ("Kim et al. 2022, scale-attentional U-Net: batch 4, Adam lr 5e-4, Dice loss, shear augmentation")
PROJECT = ("MedianNerveSeg recipe (shipped model): 250 epochs, batch 16, AdamW lr 1e-3 with cosine decay, "
           "weight EMA, BCE + Dice")
PAPER_RECIPES = {
    MELNIC: {"epochs": 100, "batch_size": 8, "optimizer": "adam", "learning_rate": 1e-3, "scheduler": "plateau",
             "plateau_factor": 0.1, "plateau_patience": 2, "early_stopping": 5, "val_every": 5,
             "loss": "bce_dice", "ema_decay": 0.0},
    KIM: {"epochs": 100, "batch_size": 4, "optimizer": "adam", "learning_rate": 5e-4, "scheduler": "cosine",
          "loss": "dice", "ema_decay": 0.0, "val_every": 5},
    PROJECT: {"epochs": 250, "batch_size": 16, "optimizer": "adamw", "learning_rate": 1e-3, "scheduler": "cosine",
              "loss": "bce_dice", "ema_decay": 0.995, "val_every": 25},
}
MASK_RCNN = ("Di Cosmo et al. 2021 / Smerilli et al. 2022, Mask R-CNN: 150 epochs, SGD lr 1e-3 momentum 0.9, "
             "augmentation scale 0.8-1.2, translate +-20%, rotate +-10 deg, shear +-2 deg; loss = classification "
             "+ box + mask (+ RPN); best validation Dice kept")
PAPER_RECIPES[MASK_RCNN] = {"epochs": 150, "batch_size": 4, "optimizer": "sgd", "learning_rate": 1e-3,
                            "scheduler": "plateau", "plateau_factor": 0.1, "plateau_patience": 3, "val_every": 5,
                            "keep_best": True, "ema_decay": 0.0}
CLICKS = ("MedianNerveSeg click recipe: iterative training with simulated clicks (RITM, Sofiiuk et al. 2021): "
          "masks with the segmenter's errors or simulated ones, 0-3 clicks simulated by the network before the one "
          "trained on; 120 epochs, batch 16, AdamW lr 1e-3 with cosine decay, weight EMA, BCE + Dice")
PAPER_RECIPES[CLICKS] = {"epochs": 120, "batch_size": 16, "optimizer": "adamw", "learning_rate": 1e-3,
                         "scheduler": "cosine", "loss": "bce_dice", "ema_decay": 0.995, "val_every": 10}
CLICK_SETTINGS = {"initial_model": "median_nerve_unet", "ai_fraction": 0.4, "max_rounds": 3, "repeats": 2,
                  "val_clicks": 3}
SHINOHARA = ("Shinohara et al. 2022, CTS from the image without its CSA: a 15 x 15 mm crop centred on the nerve, "
             "flips, rotation +-10 deg, translation and shear (no intensity change); not their scaling 0.8-1.2, which "
             "changes the nerve's apparent area by up to 44 % and so the surrogate label (expert CSA >= 10 mm2) "
             "itself; their transfer learning replaced by random init here (--weights loads weights you have); the "
             "crop at 112 x 112 pixels (0.13 mm/pixel) to train in minutes on a CPU; 150 epochs, batch 16, AdamW lr "
             "1e-3 (SqueezeNet 1e-4, its ReLU-ended head dies at higher rates from scratch, over 60 epochs, "
             "where the AUC of a split of the training patients peaked) with cosine decay, weight EMA, cross-entropy; "
             "labels from a CSV of diagnoses, else the surrogate")
PAPER_RECIPES[SHINOHARA] = {"epochs": 150, "batch_size": 16, "optimizer": "adamw", "learning_rate": 1e-3,
                            "scheduler": "cosine", "ema_decay": 0.995, "val_every": 10}
SETTINGS_OF = {"squeezenet1_1": {"epochs": 60, "learning_rate": 1e-4}}  # a network's own departure from its recipe
CLASSIFIER_SETTINGS = {"labels": None, "surrogate_csa_mm2": 10.0, "weights": None, "crop_mm": 15.0,
                       "segmenter": "median_nerve_unet"}
RECIPE_OF = {"click_unet": CLICKS, "squeezenet1_1": SHINOHARA, "mobilenet_v2": SHINOHARA, "efficientnet_b0": SHINOHARA,
             "mask_rcnn": MASK_RCNN, "unet": MELNIC, "lunet": MELNIC, "dbunet": MELNIC, "dlunet": MELNIC,
             "sa_unet": KIM, "attention_unet": KIM, "unetpp": KIM, "multiresunet": KIM}
AUGMENT_OF = {KIM: {"shear_deg": 15.0}, SHINOHARA: {"scale": [1.0, 1.0], "gamma": [1.0, 1.0], "contrast": [1.0, 1.0], "speckle_sd": 0.0,
                                                     "noise_sd": 0.0},
              MASK_RCNN: {"translate": 0.2, "flip_lr": 0.0, "gamma": [1.0, 1.0], "contrast": [1.0, 1.0],
                          "speckle_sd": 0.0, "noise_sd": 0.0}}
RESULTS_OF = {"mask_rcnn": """Trained with `median-nerve-seg train --bundle training/mask_rcnn --device cuda` on an H100 (ended
after 81 epochs, 15 minutes): DSC 0.836 +- 0.198 (median 0.898) on the 41 held-out images, box IoU
>= 0.7 in 80.5 %, CSA ICC 0.55; the papers report DSC 0.868 and 83.7 % detected, from COCO weights.
See docs/benchmarks/benchmark.md."""}
CLASSIFIER_RESULTS = """Trained with this bundle on 2 CPU cores, evaluated on the 41 held-out images against the surrogate label
(`evaluate-classifiers --surrogate-csa 10`): ROC AUC {auc} (95 % CI {ci}), against 0.962 for the CSA rule. {note}
See docs/benchmarks/classifiers.md."""
RESULTS_OF.update({
    "squeezenet1_1": CLASSIFIER_RESULTS.format(auc="0.907", ci="0.755-0.994",
                                               note="Shipped as `median_nerve_classifier`."),
    "mobilenet_v2": CLASSIFIER_RESULTS.format(auc="0.794", ci="0.625-0.939", note=""),
    "efficientnet_b0": CLASSIFIER_RESULTS.format(auc="0.699", ci="0.424-0.896", note="")})
INPUT_SIZE = [288, 384]
INPUT_SIZE_OF = {"mask_rcnn": [468, 606],  # the frame as it is: the network letterboxes it to 512 x 512 itself
                 "click_unet": [256, 256],  # the crop around the nerve and the clicks
                 **{name: [112, 112] for name in ("squeezenet1_1", "mobilenet_v2", "efficientnet_b0")}}  # 15 mm


def is_click(name: str) -> bool:
    return MODEL_REGISTRY[name].kind == "click"


def is_classifier(name: str) -> bool:
    return MODEL_REGISTRY[name].kind == "classifier"


def network_def(name: str) -> dict:
    """The registry's constructor of ``name`` (in MedianNerveSegLib.models) with its default arch_kwargs."""
    spec = MODEL_REGISTRY[name]
    if getattr(models, spec.build.__name__, None) is not spec.build:
        raise RuntimeError(f"{name}: MedianNerveSegLib.models does not export {spec.build.__name__}")
    return {"_target_": f"MedianNerveSegLib.models.{spec.build.__name__}", **spec.defaults}


def train_config(name: str) -> dict:
    recipe = RECIPE_OF.get(name, PROJECT)
    settings = dict(PAPER_RECIPES[recipe], **SETTINGS_OF.get(name, {}), augment=dict(AUGMENT_OF.get(recipe, {})))
    return {
        "imports": ["$from MedianNerveSegLib.train import train"],
        "bundle_root": ".",
        "dataset_dir": "../shared/data/median-nerve-us",
        "output_dir": "$@bundle_root + '/models'",
        "device": "cpu",
        "epochs": settings.pop("epochs"),
        "input_size": INPUT_SIZE_OF.get(name, INPUT_SIZE),
        "init_weights": None,
        "network_def": network_def(name),
        "augment": {"_target_": "MedianNerveSegLib.augment.AugmentConfig", **settings.pop("augment")},
        **({"clicks": {"_target_": "MedianNerveSegLib.train.ClickTrainConfig", **CLICK_SETTINGS}} if is_click(name)
           else {}),
        **({"classifier": {"_target_": "MedianNerveSegLib.train.ClassifierTrainConfig", **CLASSIFIER_SETTINGS}}
           if is_classifier(name) else {}),
        "train_config": {"_target_": "MedianNerveSegLib.train.TrainConfig", "name": name, "architecture": name,
                         "epochs": "@epochs", "input_size": "@input_size", "device": "@device",
                         "init_weights": "@init_weights", "augment": "@augment",
                         **({"clicks": "@clicks", "spacing_mm": 0.062} if is_click(name) else {}),
                         **({"classifier": "@classifier", "spacing_mm": 0.062} if is_classifier(name) else {}),
                         **settings},
        "run": "$train(@dataset_dir, @output_dir, @train_config)",
    }


def inference_config(name: str) -> dict:
    if is_classifier(name):
        return {
            "imports": ["$from MedianNerveSegLib.bundle import run_classify"],
            "bundle_root": ".",
            "input_dir": "../shared/data/median-nerve-us/images",
            "output_dir": "$@bundle_root + '/eval/classify'",
            "model": None,
            "spacing_mm": 0.062,  # the Jesi PNGs carry none; None: each image's own (the 15 mm crop needs one)
            "device": "cpu",
            "explain": [],  # any of occlusion, lime, gradcam
            "network_def": network_def(name),
            "run": "$run_classify(@bundle_root, @input_dir, @output_dir, @model, @spacing_mm, @device, @explain)",
        }
    if is_click(name):
        return {
            "imports": ["$from MedianNerveSegLib.bundle import run_refine"],
            "bundle_root": ".",
            "image": "../shared/data/median-nerve-us/images/Pz001-001.png",
            "mask": "../shared/data/median-nerve-us/masks/Pz001-001.png",  # the current mask (the AI's, say)
            "clicks": ["+300,200"],  # +X,Y nerve, -X,Y background; X = column, Y = row, 0-based pixels
            "output_dir": "$@bundle_root + '/eval/refine'",
            "model": None,
            "spacing_mm": None,  # the image's own; give 0.062 for the Jesi PNGs, which carry none
            "device": "cpu",
            "network_def": network_def(name),
            "run": "$run_refine(@bundle_root, @image, @mask, @clicks, @output_dir, @model, @spacing_mm, @device)",
        }
    return {
        "imports": ["$from MedianNerveSegLib.bundle import run_inference"],
        "bundle_root": ".",
        "input_dir": "../shared/data/median-nerve-us/images",
        "output_dir": "$@bundle_root + '/eval/segment'",
        "model": None,
        "spacing_mm": None,  # each image's own; give 0.062 for the Jesi PNGs, which carry none
        "device": "cpu",
        "network_def": network_def(name),
        "run": "$run_inference(@bundle_root, @input_dir, @output_dir, @model, @spacing_mm, @device)",
    }


def evaluate_config(name: str) -> dict:
    if is_classifier(name):
        return {
            "imports": ["$from MedianNerveSegLib.bundle import run_classifier_evaluation"],
            "bundle_root": ".",
            "dataset_dir": "../shared/data/median-nerve-us",
            "output_dir": "$@bundle_root + '/eval/classifier'",
            "model": None,
            "labels": None,  # a CSV of diagnoses; None: the surrogate expert CSA >= 10 mm2
            "spacing_mm": 0.062,
            "device": "cpu",
            "run": "$run_classifier_evaluation(@bundle_root, @dataset_dir, @output_dir, @model, @labels, "
                   "@spacing_mm, @device)",
        }
    if is_click(name):
        return {
            "imports": ["$from MedianNerveSegLib.bundle import run_click_benchmark"],
            "bundle_root": ".",
            "dataset_dir": "../shared/data/median-nerve-us",
            "output_dir": "$@bundle_root + '/eval/clicks'",
            "model": None,
            "spacing_mm": 0.062,  # the Jesi dataset's; None: each image's own
            "device": "cpu",
            "max_images": None,  # all the validation images the models were not trained on
            "run": "$run_click_benchmark(@bundle_root, @dataset_dir, @output_dir, @model, @spacing_mm, @device, "
                   "@max_images)",
        }
    return {
        "imports": ["$from MedianNerveSegLib.cli import main"],
        "bundle_root": ".",
        "pred_dir": "$@bundle_root + '/eval/segment'",
        "gt_dir": "../shared/data/median-nerve-us/masks",
        "output_dir": "$@bundle_root + '/eval/metrics'",
        "spacing_mm": None,  # None: the spacing segment measured with (its measurements.csv)
        "run": "$main(['evaluate', '--pred', @pred_dir, '--gt', @gt_dir, '--out', @output_dir]"
               " + ([] if @spacing_mm is None else ['--spacing', str(@spacing_mm)]))",
    }


CLASSIFIER_IO_NOTE = ("Input: a 15 x 15 mm crop of the grayscale image centred on the median nerve that the segmenter "
                      "finds, resampled to spatial_shape (0-255, z-scored). Output: two logits (the other class, the "
                      "positive class); softmax >= the model's threshold calls the positive class.")
CLICK_IO_NOTE = ("Input: four channels of a square crop around the current mask and the clicks (1.6 times their "
                 "extent, at least 10 mm), resampled to spatial_shape: the grayscale image (0-255, z-scored), the "
                 "current mask (0-1) and the positive and negative click disks (0-1, radius 5 pixels). Output: one "
                 "channel of nerve logits of the crop; pasted back into the frame, sigmoid > the model's threshold "
                 "gives the refined mask.")
IO_NOTE = ("Input: an 8-bit grayscale frame (0-255), z-scored per image and resized to spatial_shape before the "
           "network. Output: one channel of nerve logits; sigmoid > the model's threshold gives the mask that is "
           "written (0 background, 1 median nerve; stored as 0/255 in <stem>_mask.png).")


def environment(name: str) -> dict:
    """Package versions and parameter count of ``name``: measured here when its optional packages import,
    else those its metadata.json was last written with (Mask R-CNN's bundle on a machine without torchvision)."""
    spec = MODEL_REGISTRY[name]
    if name in available_models(spec.kind):
        return {"monai_version": monai.__version__, "pytorch_version": torch.__version__.split("+")[0],
                "numpy_version": numpy.__version__,
                "optional_packages_version": {"median-nerve-seg": __version__,
                                              **{package: version(package) for package in spec.requires}},
                "parameters": count_parameters(build_model(name))}
    path = HERE / name / "configs" / "metadata.json"
    if not path.is_file():
        raise RuntimeError(f"{name}: install {', '.join(spec.requires)} to write its first bundle")
    old = json.loads(path.read_text())
    packages = {**old.get("required_packages_version", {}), **old.get("optional_packages_version", {})}
    return {**{key: old[key] for key in ("monai_version", "pytorch_version", "numpy_version")},
            "optional_packages_version": {"median-nerve-seg": __version__,
                                          **{package: packages[package] for package in spec.requires}},
            "parameters": int(re.search(r"([\d,]+) parameters\.", old["description"]).group(1).replace(",", ""))}


CLASS_OUTPUT = {"type": "probabilities", "format": "classes", "value_range": [0, 1], "num_channels": 2,
                "spatial_shape": [], "dtype": "float32", "is_patch_data": False,
                "channel_def": {"0": "the other class (control)", "1": "the positive class (CTS, or the surrogate)"}}


def metadata(name: str) -> dict:
    spec = MODEL_REGISTRY[name]
    measured = environment(name)
    shape = lambda channels: {"spatial_shape": INPUT_SIZE_OF.get(name, INPUT_SIZE), "dtype": "float32",
                              "num_channels": channels, "is_patch_data": False}
    inputs = {"0": "image", "1": "current mask", "2": "positive clicks", "3": "negative clicks"} if is_click(name) \
        else {"0": "image"}
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
        "version": "0.2.0",
        "changelog": {"0.2.0": "network_def; inference through the project's pipeline, non-zero exit when a file "
                               "fails; numeric value ranges and the written mask's channel_def",
                      "0.1.0": "first bundle, from the MedianNerveSeg architecture registry"},
        **{key: measured[key] for key in ("monai_version", "pytorch_version", "numpy_version",
                                          "optional_packages_version")},
        "name": f"Median nerve {'CTS classification' if is_classifier(name) else 'segmentation'}: {name}",
        "task": ("Refinement of a median nerve contour with clicks" if is_click(name) else
                 "Carpal tunnel syndrome (or a surrogate) from a crop around the median nerve" if is_classifier(name)
                 else "Median nerve segmentation") + " in transverse wrist ultrasound",
        "description": f"{spec.reference}. {measured['parameters']:,} parameters. "
                       f"{CLICK_IO_NOTE if is_click(name) else CLASSIFIER_IO_NOTE if is_classifier(name) else IO_NOTE}",
        "authors": "MedianNerveSeg developers",
        "copyright": "Copyright (c) MedianNerveSeg developers",
        "data_source": "Jesi median nerve ultrasound dataset (SasageyoOrg/cvdl-deep-mn, GPL-3.0)",
        "data_type": "png",
        "intended_use": ("Research; not a diagnosis: trained on the surrogate label, it calls an enlarged nerve"
                         if is_classifier(name) else
                         "Research; pre-segmentation to be checked and corrected by an expert"),
        "references": [spec.reference, RECIPE_OF.get(name, PROJECT)],
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "modality": "US",
                                 "value_range": [0, 255], "channel_def": inputs, **shape(len(inputs))}},
            "outputs": {"pred": CLASS_OUTPUT if is_classifier(name) else
                        {"type": "image", "format": "segmentation", "value_range": [0, 1],
                         "channel_def": {"0": "background", "1": "median nerve"}, **shape(1)}},
        },
    }


LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""


USE_SEGMENTER = """Segment and evaluate with the trained weights (the default input, the Jesi dataset's PNGs, carries
no pixel spacing: give its 0.062 mm, or CSA is reported in pixels; a DICOM's own spacing needs no
`--spacing_mm`, which would override it):

    python -m monai.bundle run --config_file training/{name}/configs/inference.json --bundle_root training/{name} --spacing_mm 0.062
    python -m monai.bundle run --config_file training/{name}/configs/evaluate.json --bundle_root training/{name}

`median-nerve-seg segment IMAGE --model training/{name}/models` uses the same weights; inference.json
runs the same pipeline (`MedianNerveSegLib.bundle.run_inference`) and exits non-zero when a file
failed (each named in `measurements.csv`). `network_def` in train.json and inference.json builds the
network: `ConfigParser` of either file, `get_parsed_content("network_def")`.

"""
USE_CLASSIFIER = """Classify images (the 15 mm crop centred on the nerve the segmenter finds; the Jesi PNGs carry no
spacing: give its 0.062 mm) with explanation maps, and evaluate the classifier on the held-out patients
next to the CSA rule (diagnostic accuracy with bootstrap 95 % CIs, DeLong's test):

    python -m monai.bundle run --config_file training/{name}/configs/inference.json --bundle_root training/{name} \\
        --explain "['occlusion','gradcam']"
    python -m monai.bundle run --config_file training/{name}/configs/evaluate.json --bundle_root training/{name} \\
        --labels diagnoses.csv

`median-nerve-seg classify IMAGE_OR_DIR --model training/{name}/models --out DIR` uses the same weights
through the same pipeline (`MedianNerveSegLib.bundle.run_classify`), and `median-nerve-seg
evaluate-classifiers --models training/{name}/models` the same evaluation. Training takes labels from
`--labels CSV` (`median-nerve-seg train --bundle training/{name} --dataset DIR --labels diagnoses.csv`); without
one, the bundle trains on the surrogate "expert CSA >= 10 mm2" of the shared dataset, which is not a diagnosis.

"""
USE_CLICKS = """Refine a mask with clicks, and benchmark the click model on the validation patients (the simulated user
clicks where the mask is most wrong; DSC and CSA error after 0-5 clicks, NoC@90/95, ms per click; the
Jesi PNGs carry no pixel spacing: give its 0.062 mm):

    python -m monai.bundle run --config_file training/{name}/configs/inference.json --bundle_root training/{name} \\
        --image IMAGE --mask MASK --clicks "['+300,200','-250,260']" --spacing_mm 0.062
    python -m monai.bundle run --config_file training/{name}/configs/evaluate.json --bundle_root training/{name}

`median-nerve-seg refine IMAGE --mask MASK --click +X,Y --out DIR --model training/{name}/models` uses
the same weights through the same pipeline (`MedianNerveSegLib.bundle.run_refine`), and
`median-nerve-seg benchmark-clicks --model training/{name}/models` the same benchmark.
`network_def` in train.json and inference.json builds the network: `ConfigParser` of either file,
`get_parsed_content("network_def")`.

"""


def readme(name: str) -> str:
    spec = MODEL_REGISTRY[name]
    title = ("median nerve contour refinement with clicks" if is_click(name) else
             "CTS classification from a crop around the median nerve" if is_classifier(name)
             else "median nerve segmentation")
    return f"""# {name}: {title} bundle

{spec.reference}. Recipe: {RECIPE_OF.get(name, PROJECT)}.

Train (from the repository root; `--dataset_dir` may be a folder with images/ + masks/,
split by patient, or a MedianNerveSeg dataset store, whose own split is used):

    python -m monai.bundle run --config_file training/{name}/configs/train.json \\
        --bundle_root training/{name} --dataset_dir ../shared/data/median-nerve-us --device cuda

or `median-nerve-seg train --bundle training/{name} --dataset DIR`. On several GPUs (one process
each, DistributedDataParallel; rank 0 writes the model):

    torchrun --nproc_per_node=NUM_GPUS -m monai.bundle run \\
        --config_file "['training/{name}/configs/train.json','training/{name}/configs/multi_gpu_train.json']" \\
        --bundle_root training/{name} --dataset_dir DIR

Fine-tune with
`--init_weights MODEL_DIR` (`median-nerve-seg train --bundle ... --init-weights MODEL` also lowers the
learning rate to a tenth of the recipe's). Training writes models/model.pt, models/model.json,
models/training_log.csv and models/learning_curve.png.

{(USE_CLICKS if is_click(name) else USE_CLASSIFIER if is_classifier(name) else USE_SEGMENTER).format(name=name)}## Bundles are code: run only bundles you trust

A bundle's configs are not data: parsing one runs its `$` expressions as Python and imports and
calls whatever its `_target_` entries name, with your permissions, before any training starts. A
bundle from elsewhere can therefore read, change or send your files. `median-nerve-seg train
--bundle DIR` runs only the bundles in this project's training/ folder; for any other bundle it
stops without reading it unless you pass `--trust-bundle`, after reading its configs yourself.
`python -m monai.bundle run` has no such check.
""" + (f"\n## Results\n\n{RESULTS_OF[name]}\n" if name in RESULTS_OF else "")


def write_bundle(name: str) -> None:
    folder = HERE / name
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "docs").mkdir(exist_ok=True)
    for file_name, content in (("train.json", train_config(name)), ("multi_gpu_train.json", {"device": "cuda"}),
                               ("inference.json", inference_config(name)),
                               ("evaluate.json", evaluate_config(name)), ("metadata.json", metadata(name))):
        (folder / "configs" / file_name).write_text(json.dumps(content, indent=2) + "\n")
    (folder / "configs" / "logging.conf").write_text(LOGGING_CONF)
    (folder / "docs" / "README.md").write_text(readme(name))
    (folder / "LICENSE").write_text("Apache License 2.0: see the MedianNerveSeg repository's licence. "
                                    "Weights trained on GPL-3.0 data carry that data's terms.\n")


if __name__ == "__main__":
    for model_name in sorted(MODEL_REGISTRY):
        write_bundle(model_name)
        print(f"wrote training/{model_name}")
