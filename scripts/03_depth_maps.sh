#!/usr/bin/env bash
# Stage 3: dense face depth maps, the supervision signal for live faces.
#   PREP_ROOT/<split>_images/ + <split>_bbox/  ->  PREP_ROOT/<split>_depth/<video>/<video>_<i>_depth1D.jpg
# DEPTH_BACKEND: mesh (MediaPipe face mesh; default), mask (flat face ellipse) or
# import (maps from your own PRNet run in IMPORT_DIR). Extra arguments go to data/depth.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

PREP_ROOT=${PREP_ROOT:-work/oulu_prep}
SPLITS=${SPLITS:-train dev test}
DEPTH_BACKEND=${DEPTH_BACKEND:-mesh}
IMPORT_DIR=${IMPORT_DIR:-}                  # only for DEPTH_BACKEND=import
DEPTH_WORKERS=${DEPTH_WORKERS:-auto}        # depth processes, one face mesh each (auto: one per usable core)

need "$PREP_ROOT/train_bbox" "face boxes" "scripts/02_detect_faces.sh"
extra=()
if [ "$DEPTH_BACKEND" = import ]; then
    need "$IMPORT_DIR" "folder of PRNet depth maps (IMPORT_DIR)" "your PRNet run (see docs/DATA.md: 3. Depth maps)"
    extra=(--import-dir "$IMPORT_DIR")
fi
stage "3/9 depth maps ($DEPTH_BACKEND): $PREP_ROOT"
# shellcheck disable=SC2086
run "$PY" -m data.depth \
    --prep-root "$PREP_ROOT" \
    --splits $SPLITS \
    --backend "$DEPTH_BACKEND" \
    --workers "$DEPTH_WORKERS" \
    "${STRICT_ARGS[@]}" \
    "${extra[@]}" \
    "$@"
