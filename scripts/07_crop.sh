#!/usr/bin/env bash
# Stage 7: face crops and depth labels for DUM, all splits, cut with the same enlarged box.
#   PREP_ROOT (frames, boxes, maps)  ->  CROP_ROOT/<split>_images/ (IMAGE_SIZE) and <split>_depth/ (MAP_SIZE),
#                                        CROP_ROOT/protocols/ (copies of the release lists)
# Extra arguments go to DUM/make_dataset/crop_dataset.py (e.g. --train-first-frames 60 for SiW protocol 1).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

OULU_ROOT=${OULU_ROOT:-datasets/OULU-NPU}
PREP_ROOT=${PREP_ROOT:-work/oulu_prep}
CROP_ROOT=${CROP_ROOT:-work/oulu_crop}
SPLITS=${SPLITS:-train dev test}
IMAGE_SIZE=${IMAGE_SIZE:-256}               # paper: 256
MAP_SIZE=${MAP_SIZE:-32}                    # paper: 32
CROP_WORKERS=${CROP_WORKERS:-auto}          # cropping processes (auto: one per usable core)
SEED=${SEED:-0}

need "$OULU_ROOT/Protocols" "protocol lists" "the OULU-NPU release, data/synthetic.py, or scripts/datasets/01_adapt.sh for other datasets"
need "$PREP_ROOT/train_bbox" "face boxes" "scripts/02_detect_faces.sh"
need "$PREP_ROOT/train_depth" "depth maps" "scripts/03_depth_maps.sh"
stage "7/9 crop faces ${IMAGE_SIZE}px and maps ${MAP_SIZE}px -> $CROP_ROOT"
# shellcheck disable=SC2086
run "$PY" -m DUM.make_dataset.crop_dataset \
    --prep-root "$PREP_ROOT" \
    --crop-root "$CROP_ROOT" \
    --oulu-root "$OULU_ROOT" \
    --splits $SPLITS \
    --image-size "$IMAGE_SIZE" \
    --map-size "$MAP_SIZE" \
    --workers "$CROP_WORKERS" \
    "${STRICT_ARGS[@]}" \
    --seed "$SEED" \
    "$@"
