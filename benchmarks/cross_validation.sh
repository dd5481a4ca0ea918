#!/usr/bin/env bash
# Patient-level 5-fold cross-validation of a recipe (issue 17): every fold trained in parallel (one process per fold:
# on one GPU they share it), then each scored on its own patients and pooled over all images.
#   bash benchmarks/cross_validation.sh                     # the shipped default's recipe (training/monai_unet), GPU
#   DEVICE=cpu EPOCHS=1 MAX_IMAGES=16 FOLDS=2 bash benchmarks/cross_validation.sh   # a smoke run of the plumbing
#   CONFIG=benchmarks/configs/unet_small.json DEVICE=cpu EPOCHS=100 bash benchmarks/cross_validation.sh
#       # the small model's recipe (a TrainConfig JSON instead of a bundle) on 2 CPU cores: one thread per fold
#   FIRST_STAGES=benchmarks/results/cross_validation/unet_small CONFIG=benchmarks/configs/second_stage_small.json \
#       DEVICE=cpu EPOCHS=100 bash benchmarks/cross_validation.sh
#       # two-stage models: each fold's second stage after that fold's model of an earlier run (FIRST_STAGES/fold_<k>)
#   RUN_FOLDS="0 1 2" ...   # train and score only these of the FOLDS folds (less CPU time; fewer images scored)
# Writes $OUT/fold_<k>/ (the models, their logs) and $OUT/cv/ (cross_validation.md/.json, pooled/, fold_<k>/).
# nnU-Net v2 on the same folds: median-nerve-seg export-nnunet --dataset $DATA --out nnUNet_raw, then the commands
# it prints.
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${BUNDLE:-training/monai_unet}
CONFIG=${CONFIG:-}
DATA=${DATA:-../shared/data/median-nerve-us}
RECIPE=(--bundle "$BUNDLE")
[[ -n "$CONFIG" ]] && RECIPE=(--config "$CONFIG")
OUT=${OUT:-benchmarks/results/cross_validation/$(basename "${CONFIG:-$BUNDLE}" .json)}
FOLDS=${FOLDS:-5}
RUN_FOLDS=${RUN_FOLDS:-$(seq -s " " 0 $((FOLDS - 1)))}
DEVICE=${DEVICE:-cuda}
SPACING=${SPACING:-0.062}
extra=()
# on the CPU the folds share the cores: one thread each (more would only contend)
[[ "$DEVICE" == cpu ]] && export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
[[ -n "${EPOCHS:-}" ]] && extra+=(--epochs "$EPOCHS")
[[ -n "${MAX_IMAGES:-}" ]] && extra+=(--max-images "$MAX_IMAGES")
[[ -n "${INPUT_SIZE:-}" ]] && extra+=(--input-size $INPUT_SIZE)
for k in $RUN_FOLDS; do
  if ! [[ "$k" =~ ^[0-9]+$ ]] || (( k >= FOLDS )); then
    echo "error: RUN_FOLDS: '$k' is not a fold 0-$((FOLDS - 1))" >&2; exit 2
  fi
done
if [[ -z "${RUN_FOLDS// }" || $(tr ' ' '\n' <<< "$RUN_FOLDS" | grep . | sort | uniq -d) ]]; then
  echo "error: RUN_FOLDS='$RUN_FOLDS': give each fold once" >&2; exit 2
fi
if [[ -e "$OUT" ]]; then echo "error: $OUT exists: give another OUT (nothing is written over)" >&2; exit 2; fi
mkdir -p "$OUT"
pids=()
folds=()
for k in $RUN_FOLDS; do
  first=()
  [[ -n "${FIRST_STAGES:-}" ]] && first=(--first-stage "$FIRST_STAGES/fold_$k")
  .venv/bin/median-nerve-seg train "${RECIPE[@]}" --dataset "$DATA" --out "$OUT/fold_$k" --device "$DEVICE" \
      --folds "$FOLDS" --fold "$k" --spacing "$SPACING" "${first[@]}" "${extra[@]}" > "$OUT/fold_$k.log" 2>&1 &
  pids+=($!)
  folds+=("$k")
done
failed=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { echo "fold ${folds[$i]}: training exited $? (see $OUT/fold_${folds[$i]}.log)" >&2; failed=1; }
done
models=()
for k in $RUN_FOLDS; do [[ -f "$OUT/fold_$k/model.json" ]] && models+=("$OUT/fold_$k"); done
if (( ${#models[@]} == 0 )); then echo "error: no fold trained (see $OUT/fold_*.log)" >&2; exit 1; fi
.venv/bin/median-nerve-seg cross-validate --dataset "$DATA" --models "${models[@]}" --out "$OUT/cv" --spacing "$SPACING"
exit $failed
