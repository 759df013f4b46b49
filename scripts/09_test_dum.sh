#!/usr/bin/env bash
# Stage 9: score Dev and Test per video, pick the threshold on Dev, report ISO/IEC 30107-3 and the
# original's pooled metrics side by side.
#   CHECKPOINT + CROP_ROOT  ->  TEST_DIR/{dev,test}_scores.txt (the SCORE), {dev,test}_scores_{mean,cdcn}.txt
#                               (both scores, one pair each), missing_videos.txt, report.json, ROC/DET and
#                               histogram PNGs; every table says how many listed videos were scored;
#                               TEST_DIR/report/index.html, the HTML evaluation report (tables, figures and the
#                               worst errors with their faces and mu/sigma maps; open it in a browser)
# CHECKPOINT may be the released CDCN_U_P1.pkl or one of ours; the network is the one it was trained as.
# MODEL (as in scripts/08_train_dum.sh) finds the default DUM_DIR and TEST_DIR of that network and makes
# DUM/test.py check the checkpoint is one. Extra arguments go to DUM/test.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

CROP_ROOT=${CROP_ROOT:-work/oulu_crop}
PROTOCOL=${PROTOCOL:-1}
MODEL=${MODEL:-}                            # empty: whatever the checkpoint is
DUM_DIR=${DUM_DIR:-runs/dum$(model_tag "$MODEL")_p${PROTOCOL}}
CHECKPOINT=${CHECKPOINT:-$DUM_DIR/checkpoint.pth}
TEST_DIR=${TEST_DIR:-runs/test$(model_tag "$MODEL")_p${PROTOCOL}}
SCORE=${SCORE:-mean}                        # primary score (both are reported): mean (label-free) or cdcn (the original's)
FRAMES_PER_VIDEO=${FRAMES_PER_VIDEO:-0}     # 0 = all frames (as the original)
DEVICE=${DEVICE:-auto}
REPORT=${REPORT-$TEST_DIR/report}           # the HTML report's folder; REPORT= (empty) writes none
BOB_SCORES=${BOB_SCORES:-}                  # e.g. $TEST_DIR/bob/scores.csv: score files for bob.pad's 'bob pad metrics'

need "$CHECKPOINT" "DUM checkpoint (CHECKPOINT)" "scripts/08_train_dum.sh (or download the released CDCN_U_P1.pkl)"
need "$CROP_ROOT/protocols" "protocol lists in the crop root" "scripts/07_crop.sh"
stage "9/9 test $CHECKPOINT on protocol $PROTOCOL -> $TEST_DIR"
model=()
if [ -n "$MODEL" ]; then model=(--model "$MODEL"); fi
extra=()
if [ -n "$REPORT" ]; then extra+=(--report "$REPORT"); fi
if [ -n "$BOB_SCORES" ]; then extra+=(--bob-scores "$BOB_SCORES"); fi
run "$PY" -m DUM.test \
    --checkpoint "$CHECKPOINT" \
    "${model[@]}" \
    --crop-root "$CROP_ROOT" \
    --protocol "$PROTOCOL" \
    --score "$SCORE" \
    --frames-per-video "$FRAMES_PER_VIDEO" \
    --device "$DEVICE" \
    --output-dir "$TEST_DIR" \
    "${extra[@]}" \
    "$@"
