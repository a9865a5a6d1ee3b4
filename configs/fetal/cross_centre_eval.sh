#!/usr/bin/env bash
# Cross-centre evaluation of a fetal parcellation model (issue 19): per tissue Dice / HD95 with each volume's
# own brain mask, without a mask (the model finding the brain itself; skipped for a model whose card requires
# a mask) and with the brain mask of the classical extraction (`losslab fetal brain-mask`), per centre.
# Usage: configs/fetal/cross_centre_eval.sh DATA_DIR [MODEL]   (from the repository root)
#   DATA_DIR: one folder per centre, each holding one folder per case with srr.nii.gz, mask.nii.gz and
#             parcellation.nii.gz (labels 0..8 as in ../shared/data/fetal-sb-atlas), e.g. the neurotypical
#             atlases of LucasFidon/trustworthy-ai-fetal-brain-segmentation (docs/fetal.md says which).
#   MODEL:    registry name or model folder (default fetal-leafdice-1.6mm).
# Writes under OUT (default losslab-output/fetal/cross-centre/MODEL): per centre the predictions
# (with_mask/, no_mask/, extracted_mask/), the extracted masks and their Dice against the given masks (brain_masks/),
# evaluate's table.md / table.json, times.tsv (wall seconds of each command, Python start included),
# segment.log (what the commands print, with segment's own seconds), and summary.json / summary.md over the
# centres (configs/fetal/cross_centre_summary.py).
set -euo pipefail
DATA=${1:?usage: configs/fetal/cross_centre_eval.sh DATA_DIR [MODEL]}
MODEL=${2:-fetal-leafdice-1.6mm}
OUT=${OUT:-losslab-output/fetal/cross-centre/$(basename "$MODEL")}
LOSSLAB=${LOSSLAB:-python -m losslab}
PYTHON=${PYTHON:-python}

now() { date +%s.%N; }
mkdir -p "$OUT"
# whether the model runs without a mask (its card does not require one)
NO_MASK=$($PYTHON -c 'import sys; from losslab import models; c = models.find_card(sys.argv[1]); print("no" if c is not None and c.mask_policy == "required" else "yes")' "$MODEL")
for CENTRE_DIR in "$DATA"/*/; do
  CENTRE=$(basename "$CENTRE_DIR")
  ls "$CENTRE_DIR"*/srr.nii.gz >/dev/null 2>&1 || continue
  O="$OUT/$CENTRE"
  mkdir -p "$O/with_mask" "$O/extracted_mask" "$O/brain_masks"
  [ "$NO_MASK" = yes ] && mkdir -p "$O/no_mask"
  printf 'case\tcondition\tseconds\n' > "$O/times.tsv"
  : > "$O/segment.log"
  for CASE_DIR in "$CENTRE_DIR"*/; do
    CASE=$(basename "$CASE_DIR")
    [ -f "$CASE_DIR/srr.nii.gz" ] || continue
    # 1. with the case's own brain mask
    T0=$(now)
    $LOSSLAB fetal segment "$MODEL" "$CASE_DIR/srr.nii.gz" --mask "$CASE_DIR/mask.nii.gz" \
      -o "$O/with_mask/$CASE.nii.gz" --overwrite | tee -a "$O/segment.log"
    printf '%s\twith_mask\t%s\n' "$CASE" "$(echo "$(now) - $T0" | bc)" >> "$O/times.tsv"
    # 2. without a mask: the model finds the brain itself
    if [ "$NO_MASK" = yes ]; then
      T0=$(now)
      $LOSSLAB fetal segment "$MODEL" "$CASE_DIR/srr.nii.gz" -o "$O/no_mask/$CASE.nii.gz" --overwrite \
        | tee -a "$O/segment.log"
      printf '%s\tno_mask\t%s\n' "$CASE" "$(echo "$(now) - $T0" | bc)" >> "$O/times.tsv"
    fi
    # 3. the classical brain extraction, scored against the given mask, then segment with it
    T0=$(now)
    $LOSSLAB fetal brain-mask "$CASE_DIR/srr.nii.gz" -o "$O/brain_masks/$CASE.nii.gz" --overwrite \
      | tee -a "$O/segment.log"
    printf '%s\tbrain_mask\t%s\n' "$CASE" "$(echo "$(now) - $T0" | bc)" >> "$O/times.tsv"
    $LOSSLAB metrics "$CASE_DIR/mask.nii.gz" "$O/brain_masks/$CASE.nii.gz" --labels 1 --json \
      > "$O/brain_masks/$CASE.json"
    T0=$(now)
    $LOSSLAB fetal segment "$MODEL" "$CASE_DIR/srr.nii.gz" --mask "$O/brain_masks/$CASE.nii.gz" \
      -o "$O/extracted_mask/$CASE.nii.gz" --overwrite | tee -a "$O/segment.log"
    printf '%s\textracted_mask\t%s\n' "$CASE" "$(echo "$(now) - $T0" | bc)" >> "$O/times.tsv"
  done
  # 4. per tissue Dice / HD95 against the case's parcellation (Wilcoxon: each condition vs the given mask)
  METHODS=(--method with_mask="$O/with_mask")
  [ "$NO_MASK" = yes ] && METHODS+=(--method no_mask="$O/no_mask")
  METHODS+=(--method extracted_mask="$O/extracted_mask")
  $LOSSLAB fetal evaluate --reference "$CENTRE_DIR" "${METHODS[@]}" \
    --baseline with_mask --leaf with_mask -o "$O/table.md" --json "$O/table.json" --overwrite
done

# 5. Summary over the centres under OUT: per tissue and mean Dice / HD95, the gap, brain-mask Dice, time.
$PYTHON "$(dirname "$0")/cross_centre_summary.py" "$OUT"
