#!/usr/bin/env bash
# Per-stage time of `segment` for both shipped models on each runtime (PyTorch, OpenVINO float32,
# OpenVINO int8), on 40 dataset PNGs with overlays and without, and on a 300-frame DICOM clip without,
# each figure the median of 5 runs:
# docs/benchmarks/pipeline/<model>-<runtime>[-no-overlay|-clip]/pipeline.{md,json}. Run from the
# repository root on a quiet machine, with openvino installed in .venv; the dataset beside the repository.
# MODELS="median_nerve_unet" reruns one model's rows.
set -euo pipefail
images=${1:-../shared/data/median-nerve-us/images}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
.venv/bin/python benchmarks/clip_memory.py --write-clip "$scratch/clip300.dcm" 300
bench() {  # OUT_NAME MODEL RUNTIME INPUT [benchmark-pipeline options]
  local name=$1 model=$2 runtime=$3 input=$4
  shift 4
  .venv/bin/median-nerve-seg benchmark-pipeline "$input" --max-images 40 --repeats 5 --spacing 0.062 --threads 2 \
    --model "$model" --runtime "$runtime" --out "docs/benchmarks/pipeline/$name" "$@"
}
for model in ${MODELS:-median_nerve_unet median_nerve_unet_small}; do
  for runtime in torch openvino openvino-int8; do
    bench "$model-$runtime" "$model" "$runtime" "$images"
  done
  bench "$model-openvino-int8-no-overlay" "$model" openvino-int8 "$images" --no-overlay
  bench "$model-openvino-int8-clip" "$model" openvino-int8 "$scratch/clip300.dcm" --no-overlay
done
