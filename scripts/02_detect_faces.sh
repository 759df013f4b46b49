#!/usr/bin/env bash
# Stage 2: MTCNN face box for every frame.
#   PREP_ROOT/<split>_images/  ->  PREP_ROOT/<split>_bbox/<video>/<video>_<i>_scene.dat
# Frames without a face are listed in PREP_ROOT/reports/bbox_no_face_<split>.txt.
# Extra arguments go to data/bbox.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

PREP_ROOT=${PREP_ROOT:-work/oulu_prep}
SPLITS=${SPLITS:-train dev test}
DETECT_MAX_SIDE=${DETECT_MAX_SIDE:-640}     # detect on frames shrunk to this side (0 = full size, as the original; 10x slower on 1080p)
BATCH_SIZE=${BATCH_SIZE:-8}                 # frames per MTCNN call
MTCNN_DEVICE=${MTCNN_DEVICE:-CPU:0}         # TensorFlow device, e.g. GPU:0
BBOX_WORKERS=${BBOX_WORKERS:-1}         # detector processes (TensorFlow already uses every core)

need "$PREP_ROOT/train_images" "extracted frames" "scripts/01_extract_frames.sh"
stage "2/9 face boxes (MTCNN): $PREP_ROOT"
# shellcheck disable=SC2086
run "$PY" -m data.bbox \
    --root "$PREP_ROOT" \
    --splits $SPLITS \
    --detect-max-side "$DETECT_MAX_SIDE" \
    --batch-size "$BATCH_SIZE" \
    --mtcnn-device "$MTCNN_DEVICE" \
    --workers "$BBOX_WORKERS" \
    "${STRICT_ARGS[@]}" \
    "$@"
