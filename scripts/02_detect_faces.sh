#!/usr/bin/env bash
# Stage 2: MTCNN face box for every frame.
#   PREP_ROOT/<split>_images/  ->  PREP_ROOT/<split>_bbox/<video>/<video>_<i>_scene.dat
# Frames without a face are listed in PREP_ROOT/reports/bbox_no_face_<split>.txt.
# Extra arguments go to data/detect_faces.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

PREP_ROOT=${PREP_ROOT:-work/oulu_prep}
SPLITS=${SPLITS:-train dev test}
MIN_FACE=${MIN_FACE:-auto}                  # smallest face searched: auto (a tenth of the frame, then half the last faces), N px, or original (the original's call, ~1 frame/s on 1080p)
DETECT_MAX_SIDE=${DETECT_MAX_SIDE:-0}       # also shrink frames to this longer side (0 = no limit)
BATCH_SIZE=${BATCH_SIZE:-16}                # frames of one video per MTCNN call
MTCNN_DEVICE=${MTCNN_DEVICE:-CPU:0}         # TensorFlow device, e.g. GPU:0
BBOX_WORKERS=${BBOX_WORKERS:-1}         # detector processes (TensorFlow already uses every core)

need "$PREP_ROOT/train_images" "extracted frames" "scripts/01_extract_frames.sh"
stage "2/9 face boxes (MTCNN): $PREP_ROOT"
# shellcheck disable=SC2086
run "$PY" -m data.detect_faces \
    --prep-root "$PREP_ROOT" \
    --splits $SPLITS \
    --min-face "$MIN_FACE" \
    --detect-max-side "$DETECT_MAX_SIDE" \
    --batch-size "$BATCH_SIZE" \
    --mtcnn-device "$MTCNN_DEVICE" \
    --workers "$BBOX_WORKERS" \
    "${STRICT_ARGS[@]}" \
    "$@"
