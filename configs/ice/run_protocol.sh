#!/usr/bin/env bash
# ICE editing (ice-editing-shahin2023): the shipped 64^3 models, trained on the wide atrium prior, and their
# evaluation on two shape families they never saw (the earlier phantom; real left atria when LA_MASKS is set).
# Usage (from the repository root): configs/ice/run_protocol.sh [METHODS]   default: "editing ce"
#   LA_MASKS="path/to/*.nii.gz" configs/ice/run_protocol.sh   also simulates and evaluates real LA masks
# Each step is resumable: a run folder that already holds a finished run is skipped.
set -euo pipefail
METHODS=${1:-"editing ce"}
LOSSLAB=${LOSSLAB:-python -m losslab}
OUT=losslab-output
RES=docs/ice-results/atrium64
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

# 1. Training data: 400 atria of the wide prior at 64^3 x 2.2048 mm (seeds 0-399): train 280 / val 60 / test 60.
[ -f $OUT/ice64-atrium/dataset.json ] || $LOSSLAB ice simulate $OUT/ice64-atrium --cases 400 --size 64 --spacing 2.2048 --seed 0
#    Held-out family 1: the earlier phantom (seeds 0-99; its 15 test cases, seeds 85-99, are used).
[ -f $OUT/ice64/dataset.json ] || $LOSSLAB ice simulate $OUT/ice64 --prior phantom --cases 100 --size 64 --spacing 2.2048 --seed 0
#    Held-out family 2: real LA masks (licensed for evaluation only, not in this repository; docs/ice.md).
if [ -n "${LA_MASKS:-}" ] && [ ! -f $OUT/ice64-real/dataset.json ]; then
  # shellcheck disable=SC2086
  $LOSSLAB ice simulate $OUT/ice64-real --anatomy $LA_MASKS --cases "$(ls $LA_MASKS | wc -l)" --size 64 --spacing 2.2048 --seed 5000
fi

# 2. The segmentation model (the source of y_init): a 5-level ice_segmentation U-Net, CE on y, 48^3 crops.
[ -f $OUT/ice64-runs/segmentation/model.pt ] || $LOSSLAB train configs/ice/segmentation-64.json
#    The editing models' y_init comes from the same run stopped after 5 epochs (the best of its first five; the
#    editing runs started while the segmentation run went on): the same config, seed and schedule, epochs=5.
[ -f $OUT/ice64-runs/segmentation-e5/model.pt ] || $LOSSLAB train configs/ice/segmentation-64.json epochs=5 \
  output_dir=$OUT/ice64-runs/segmentation-e5

# 3. The editing models (y_init: the segmentation model's prediction, 30 % perturbed y; own-output sequences).
for METHOD in $METHODS; do
  [ -f $OUT/ice64-runs/$METHOD/model.pt ] || $LOSSLAB ice train configs/ice/$METHOD-64.json
done

MODELS=""
for METHOD in $METHODS; do MODELS="$MODELS $METHOD=$OUT/ice64-runs/$METHOD/model.pt"; done
SEG="--segmentation-model $OUT/ice64-runs/segmentation/model.pt"
# 4. The paper's protocol (Table 1 with both readings of y_cas, Fig. 3) on the held-out phantom test cases.
$LOSSLAB ice evaluate $OUT/ice64 $SEG --editing-model $MODELS --edits 10 --split test -o $RES/table1-phantom --overwrite
$LOSSLAB ice evaluate $OUT/ice64 $SEG --editing-model $MODELS --edits 1 --split test --metric-contours edited \
  -o $RES/table1-phantom-edited --overwrite
# 5. The ideal-user protocol on the held-out families.
$LOSSLAB ice evaluate $OUT/ice64 $SEG --editing-model $MODELS --protocol ideal --edits 10 --split test -o $RES/ideal-phantom --overwrite
if [ -f $OUT/ice64-real/dataset.json ]; then
  $LOSSLAB ice evaluate $OUT/ice64-real $SEG --editing-model $MODELS --protocol ideal --edits 10 --split all \
    -o $RES/ideal-real --overwrite
  $LOSSLAB ice evaluate $OUT/ice64-real $SEG --editing-model $MODELS --edits 10 --split all -o $RES/table1-real --overwrite
fi

# 6. Ship: slim checkpoints and cards (metrics read from the JSONs above, never typed in).
python configs/ice/ship_models.py $RES
