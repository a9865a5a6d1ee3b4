#!/usr/bin/env bash
# The shipped fetal model (issue 19): a 3-member leaf-Dice ensemble at 1.6 mm trained with the cross-centre
# recipe (configs/fetal/cross_centre-1.6mm.json: affine + elastic deformation, bias field, gamma / contrast,
# blur, lower resolution, noise, standardisation, and the brain-mask augmentation that lets it find the brain
# itself) on the 11 training volumes of the CC0 atlas with every tissue annotated, packaged as float16 with
# held-out Dice / HD95 on the 4 test volumes no member saw (native 0.8 mm grid).
# With CROSS_CENTRE=DATA_DIR (one folder per centre, see cross_centre_eval.sh) it also measures the model on
# other centres' volumes, with their masks and without, and writes those figures and the mask rule on the card.
# Usage (from the repository root): [CROSS_CENTRE=DATA_DIR] configs/fetal/ship_model.sh [EPOCHS]
#   (default 350: about 22 min per member on 2 CPU cores with bf16; on a GPU add device=cuda and wider
#   features for the paper-sized model, or a finer grid with SPACING=0.8)
set -euo pipefail
EPOCHS=${1:-350}
SPACING=${SPACING:-1.6}
NAME=${NAME:-fetal-leafdice-${SPACING}mm}
ATLAS=${ATLAS:-../shared/data/fetal-sb-atlas}
OUT=${OUT:-losslab-output/fetal}
LOSSLAB=${LOSSLAB:-python -m losslab}
PYTHON=${PYTHON:-python}
CROSS_CENTRE=${CROSS_CENTRE:-}
TEST_CASES="GA23_notoperated GA26_operated GA30_operated GA33_operated"   # losslab.labelsets.atlas.PROTOCOL_TEST_CASES
DATA="$OUT/data-${SPACING}mm-full"
RUN="$OUT/cross_centre-${SPACING}mm"

# 1. the 11 training volumes (the 4 test volumes excluded), every tissue annotated (--min-full 11), resampled
#    to SPACING and cropped to the brain mask's bounding box + 8 mm (the images are not masked)
[ -f "$DATA/dataset.json" ] || $LOSSLAB fetal make-partial "$ATLAS" "$DATA" --spacing "$SPACING" --seed 0 \
  --crop-margin 8 --min-full 11
# 2. train (resumable: run the same command again after an interruption, it goes on with --resume)
RESUME=""; [ -d "$RUN" ] && RESUME="--resume"
[ -f "$RUN/ensemble.json" ] || $LOSSLAB train configs/fetal/cross_centre-1.6mm.json $RESUME \
  "data.manifest=$PWD/$DATA/dataset.json" "epochs=$EPOCHS" "early_stopping.patience=$EPOCHS" "output_dir=$PWD/$RUN"

# 3. package: float16 members, the card with the held-out figures
TRAINING=$($PYTHON - "$DATA" "$EPOCHS" "$SPACING" <<'PY'
import json, sys
data, epochs, spacing = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
manifest = json.load(open(f"{data}/dataset.json"))
print(json.dumps({
    "volumes": manifest["splits"]["train"],
    "fully_annotated": manifest["splits"].get("full", []),
    "data": "fetal-sb-atlas (CC0), every tissue annotated; spina bifida fetuses, GA 21-34 weeks",
    "data_command": f"losslab fetal make-partial ATLAS {data} --spacing {spacing:g} --seed 0 --crop-margin 8 --min-full 11",
    "config": "configs/fetal/cross_centre-1.6mm.json",
    "command": f"configs/fetal/ship_model.sh {epochs}  (losslab train configs/fetal/cross_centre-1.6mm.json "
               f"epochs={epochs} early_stopping.patience={epochs})",
    "loss": "leaf_dice", "epochs": epochs, "batch_size": 3, "optimizer": "adam 1e-3",
    "precision": "bfloat16 autocast on CPU (amp=true)", "members": 3, "grid_mm": spacing,
    "augmentation": json.load(open("configs/fetal/cross_centre-1.6mm.json"))["augmentation"],
}))
PY
)
$LOSSLAB fetal package "$RUN" "LossLab/losslab/models/$NAME" --name "$NAME" --spacing "$SPACING" "$SPACING" "$SPACING" \
  --overwrite --atlas "$ATLAS" --test-cases $TEST_CASES --training "$TRAINING" \
  --task "fetal brain parcellation (8 tissues) of T2w MRI, with or without a brain mask (leaf-Dice, cross-centre augmentation)"

# 4. other centres: with and without a mask; the figures and the mask rule onto the card
if [ -n "$CROSS_CENTRE" ]; then
  EVAL="$OUT/cross-centre/$NAME"
  OUT="$EVAL" LOSSLAB="$LOSSLAB" PYTHON="$PYTHON" configs/fetal/cross_centre_eval.sh "$CROSS_CENTRE" "LossLab/losslab/models/$NAME"
  $PYTHON configs/fetal/cross_centre_card.py "LossLab/losslab/models/$NAME" "$EVAL" "$CROSS_CENTRE" \
    --source "${CROSS_CENTRE_SOURCE:-$CROSS_CENTRE}"
fi
