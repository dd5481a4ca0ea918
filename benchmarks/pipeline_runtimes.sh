#!/usr/bin/env bash
# Per-stage time of `segment` for both shipped models on both runtimes (PyTorch, OpenVINO):
# docs/benchmarks/pipeline/<model>-<runtime>/pipeline.{md,json}. Run from the repository root
# on a quiet machine, with openvino installed in .venv; the dataset beside the repository.
set -euo pipefail
images=${1:-../shared/data/median-nerve-us/images}
for model in median_nerve_unet median_nerve_unet_small; do
  for runtime in torch openvino; do
    .venv/bin/median-nerve-seg benchmark-pipeline "$images" --max-images 40 --spacing 0.062 --threads 2 \
      --model "$model" --runtime "$runtime" --out "docs/benchmarks/pipeline/$model-$runtime"
  done
done
