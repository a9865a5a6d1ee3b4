#!/usr/bin/env bash
# The label-set paper's protocol (Sec. 4, Table 2) on the spina bifida atlas, at a coarse grid on CPU.
# Usage: [RECIPE=cross_centre] configs/fetal/run_protocol.sh [SPACING_MM] [EPOCHS] [MEMBERS]   (from the repository root)
# Defaults: 2.4 mm, 40 epochs, 3 members per method. On a GPU: configs/fetal/run_protocol.sh 0.8 300 10
# (then set "device" and larger "features" in the configs as you like).
set -euo pipefail
SPACING=${1:-2.4}
EPOCHS=${2:-40}
MEMBERS=${3:-3}
# The fully supervised baseline trains on the fully annotated volumes only (1 of the 11 here: 1 step per
# epoch instead of 4): it gets 4x the epochs, so every method makes about the same number of Adam steps.
FS_EPOCHS=${FS_EPOCHS:-$((EPOCHS * 4))}
ATLAS=${ATLAS:-../shared/data/fetal-sb-atlas}
OUT=${OUT:-losslab-output/fetal}
LOSSLAB=${LOSSLAB:-python -m losslab}
METHODS=${METHODS:-"leaf_dice fully_supervised soft_target_dice marginal_dice"}   # which to train
EXTRA=${EXTRA:-}   # more training overrides for every method, e.g. EXTRA="amp=true" (bf16 on CPUs that have it)
# RECIPE=paper: each method's config as it is (the paper's augmentation); RECIPE=cross_centre: every method
# with the augmentation and normalisation of the shipped model's recipe (configs/fetal/cross_centre-1.6mm.json)
RECIPE=${RECIPE:-paper}
RECIPE_ARGS=()
case "$RECIPE" in
  paper) ;;
  cross_centre)
    mapfile -t RECIPE_ARGS < <(${PYTHON:-python} -c '
import json
c = json.load(open("configs/fetal/cross_centre-1.6mm.json"))
print("data.normalize=" + c["data"]["normalize"])
for name, value in c["augmentation"].items():
    print(f"augmentation.{name}=" + json.dumps(value, separators=(",", ":")))') ;;
  *) echo "RECIPE must be paper or cross_centre, got $RECIPE" >&2; exit 2 ;;
esac
TEST_CASES="GA23_notoperated GA26_operated GA30_operated GA33_operated"   # losslab.labelsets.atlas.PROTOCOL_TEST_CASES

# 1. Table-1 patterns on the 11 training volumes (the 4 test volumes are excluded), resampled to SPACING
#    and cropped to the brain mask's bounding box + 8 mm (segment crops to the mask the same way).
[ -f "$OUT/data-${SPACING}mm/dataset.json" ] || \
  $LOSSLAB fetal make-partial "$ATLAS" "$OUT/data-${SPACING}mm" --spacing "$SPACING" --seed 0 --crop-margin 8

# 2. Four methods, same network and optimiser; ensembles of MEMBERS members (paper: 10).
for METHOD in $METHODS; do
  N=$EPOCHS; [ "$METHOD" = fully_supervised ] && N=$FS_EPOCHS
  $LOSSLAB train "configs/fetal/$METHOD.json" "data.manifest=$PWD/$OUT/data-${SPACING}mm/dataset.json" \
    "epochs=$N" "early_stopping.patience=$N" "ensemble.members=$MEMBERS" "output_dir=$PWD/$OUT/$METHOD" \
    ${RECIPE_ARGS[@]+"${RECIPE_ARGS[@]}"} $EXTRA
done

# 3. Segment the held-out atlas volumes at their native 0.8 mm grid (resampled to the model grid and back).
for METHOD in fully_supervised soft_target_dice marginal_dice leaf_dice; do
  for CASE in $TEST_CASES; do
    $LOSSLAB fetal segment "$OUT/$METHOD" "$ATLAS/$CASE/srr.nii.gz" --mask "$ATLAS/$CASE/mask.nii.gz" \
      --spacing "$SPACING" -o "$OUT/predictions/$METHOD/$CASE.nii.gz" --overwrite
  done
done

# 4. Table 2 layout.
$LOSSLAB fetal evaluate --reference "$ATLAS" --cases $TEST_CASES \
  --method fully_supervised="$OUT/predictions/fully_supervised" \
  --method soft_target_dice="$OUT/predictions/soft_target_dice" \
  --method marginal_dice="$OUT/predictions/marginal_dice" \
  --method leaf_dice="$OUT/predictions/leaf_dice" \
  -o "$OUT/table2.md" --json "$OUT/table2.json" --overwrite
