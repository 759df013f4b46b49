#!/usr/bin/env bash
# Stage 9: score Dev and Test per video, pick the threshold on Dev, report ISO/IEC 30107-3 and the
# original's pooled metrics side by side.
#   CHECKPOINT + CROP_ROOT  ->  TEST_DIR/{dev,test}_scores.txt, report.json, ROC/DET and histogram PNGs
# CHECKPOINT may be the released CDCN_U_P1.pkl or one of ours. Extra arguments go to DUM/test.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

CROP_ROOT=${CROP_ROOT:-work/oulu_crop}
PROTOCOL=${PROTOCOL:-1}
DUM_DIR=${DUM_DIR:-runs/dum_p${PROTOCOL}}
CHECKPOINT=${CHECKPOINT:-$DUM_DIR/checkpoint.pth}
TEST_DIR=${TEST_DIR:-runs/test_p${PROTOCOL}}
SCORE=${SCORE:-mean}                        # mean (label-free, default) or cdcn (the original's ratio to the GT map)
FRAMES_PER_VIDEO=${FRAMES_PER_VIDEO:-0}     # 0 = all frames (as the original)
DEVICE=${DEVICE:-auto}

need "$CHECKPOINT" "DUM checkpoint (CHECKPOINT)" "scripts/08_train_dum.sh (or download the released CDCN_U_P1.pkl)"
need "$CROP_ROOT/protocols" "protocol lists in the crop root" "scripts/07_crop.sh"
stage "9/9 test $CHECKPOINT on protocol $PROTOCOL -> $TEST_DIR"
run "$PY" -m DUM.test \
    --checkpoint "$CHECKPOINT" \
    --data-root "$CROP_ROOT" \
    --protocol "$PROTOCOL" \
    --score "$SCORE" \
    --frames-per-video "$FRAMES_PER_VIDEO" \
    --device "$DEVICE" \
    --output-dir "$TEST_DIR" \
    "$@"
