#!/usr/bin/env bash
# Stage 1: decode the videos of the OULU-NPU release into JPEG frames.
#   OULU_ROOT/{Train,Dev,Test}_files/*.avi  ->  PREP_ROOT/<split>_images/<video>/<video>_<i>_scene.jpg
# Rerunning skips videos that are complete. Extra arguments go to data/extract_frame.py.
# Override any variable from the environment:
#   OULU_ROOT=/data/OULU-NPU PREP_ROOT=/data/oulu_prep bash scripts/01_extract_frames.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

OULU_ROOT=${OULU_ROOT:-datasets/OULU-NPU}   # the release: Train_files/ Dev_files/ Test_files/ Protocols/
PREP_ROOT=${PREP_ROOT:-work/oulu_prep}      # everything the data stages write goes here
SPLITS=${SPLITS:-train dev test}
EVERY=${EVERY:-1}                           # keep every k-th frame (1 = all, as the original)
MAX_FRAMES=${MAX_FRAMES:-0}                 # at most N frames per video (0 = no limit)
JPEG_QUALITY=${JPEG_QUALITY:-95}
EXTRACT_WORKERS=${EXTRACT_WORKERS:-auto}  # decoding processes (auto: one per usable core)

need "$OULU_ROOT" "OULU-NPU release folder (OULU_ROOT)" "the dataset owners (see docs/DATA.md: OULU-NPU, step by step), data/synthetic.py, or scripts/datasets/01_adapt.sh"
stage "1/9 extract frames: $OULU_ROOT -> $PREP_ROOT"
# shellcheck disable=SC2086  # SPLITS is a word list on purpose
run "$PY" -m data.extract_frame \
    --input "$OULU_ROOT" \
    --prep-root "$PREP_ROOT" \
    --splits $SPLITS \
    --every "$EVERY" \
    --max-frames "$MAX_FRAMES" \
    --jpeg-quality "$JPEG_QUALITY" \
    --workers "$EXTRACT_WORKERS" \
    "${STRICT_ARGS[@]}" \
    "$@"
