#!/usr/bin/env bash
# ICE editing (ice-editing-shahin2023): the shipped 64^3 models and the Table 1 / Fig. 3 evaluation, on CPU.
# Usage (from the repository root): configs/ice/run_protocol.sh [METHODS]   default: "editing ce dice intercnn"
# Each step is resumable: a run folder that already holds a finished run is skipped.
set -euo pipefail
METHODS=${1:-"editing ce dice intercnn"}
LOSSLAB=${LOSSLAB:-python -m losslab}
OUT=losslab-output
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

# 1. 100 simulated cases at 64^3 x 2.2048 mm (seeds 0-99): train 70 / val 15 / test 15 (held out).
[ -f $OUT/ice64/dataset.json ] || $LOSSLAB ice simulate $OUT/ice64 --cases 100 --size 64 --spacing 2.2048 --seed 0

# 2. The segmentation model (the source of y_init): ice_segmentation U-Net, CE on y, 48^3 crops.
[ -f $OUT/ice64-runs/segmentation/model.pt ] || $LOSSLAB train configs/ice/segmentation-64.json

# 3. The editing models, one config per method of Table 1 (y_init: the segmentation model's prediction).
for METHOD in $METHODS; do
  [ -f $OUT/ice64-runs/$METHOD/model.pt ] || $LOSSLAB ice train configs/ice/$METHOD-64.json
done

# 4. The paper's protocol on the 15 held-out test cases.
MODELS=""
for METHOD in $METHODS; do MODELS="$MODELS $METHOD=$OUT/ice64-runs/$METHOD/model.pt"; done
$LOSSLAB ice evaluate $OUT/ice64 --segmentation-model $OUT/ice64-runs/segmentation/model.pt \
  --editing-model $MODELS --edits 10 --split test -o docs/ice-results/64 --json docs/ice-results/64/evaluation.json --overwrite
#    Table 1 again with y_cas = the edited frame's contour alone (far = preservation alone).
$LOSSLAB ice evaluate $OUT/ice64 --segmentation-model $OUT/ice64-runs/segmentation/model.pt \
  --editing-model $MODELS --edits 1 --split test --metric-contours edited -o docs/ice-results/64-edited --overwrite

# 5. Ship: slim checkpoints and cards (held-out metrics read from step 4's JSONs) under LossLab/losslab/models/.
python configs/ice/ship_models.py docs/ice-results/64/evaluation.json docs/ice-results/64-edited/evaluation.json
