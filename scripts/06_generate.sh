#!/usr/bin/env bash
# Stage 6: sample paired spoof/live images from the trained generator, with depth maps for the live
# ones, straight into the DUM crop root, and write the extended protocol Train_g.txt.
#   GEN_DIR/checkpoint.pth  ->  CROP_ROOT/train_images/p<PROTOCOL>_{0,1}_<k>/, CROP_ROOT/train_depth/...,
#                               CROP_ROOT/protocols/Protocol_N/Train[_k]_g.txt
# Rerunning skips complete folders. Extra arguments go to generated.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

OULU_ROOT=${OULU_ROOT:-datasets/OULU-NPU}
CROP_ROOT=${CROP_ROOT:-work/oulu_crop}
PROTOCOL=${PROTOCOL:-1}
GEN_DIR=${GEN_DIR:-runs/generator_p${PROTOCOL}}
GEN_CHECKPOINT=${GEN_CHECKPOINT:-$GEN_DIR}  # a file, or a run directory: its newest checkpoint (docs/RUNS.md)
NUM_PAIRS=${NUM_PAIRS:-20000}               # original generated.py: 20,000 pairs (the released list used 35,000)
PAIRS_PER_FOLDER=${PAIRS_PER_FOLDER:-100}
MAP_SIZE=${MAP_SIZE:-32}                    # depth-map side written for the DUM trainer (paper: 32)
DEPTH_BACKEND=${DEPTH_BACKEND:-mesh}
DEVICE=${DEVICE:-auto}
SEED=${SEED:-0}

need "$OULU_ROOT/Protocols" "protocol lists" "the OULU-NPU release, data/synthetic.py, or scripts/datasets/01_adapt.sh for other datasets"
need "$GEN_CHECKPOINT" "generator checkpoint or run directory" "scripts/05_train_generator.sh"
stage "6/9 generate $NUM_PAIRS pairs from $GEN_CHECKPOINT -> $CROP_ROOT"
run "$PY" generated.py \
    --checkpoint "$GEN_CHECKPOINT" \
    --crop-root "$CROP_ROOT" \
    --protocol "$PROTOCOL" \
    --protocols-dir "$OULU_ROOT/Protocols" \
    --num-pairs "$NUM_PAIRS" \
    --pairs-per-folder "$PAIRS_PER_FOLDER" \
    --map-size "$MAP_SIZE" \
    --depth-backend "$DEPTH_BACKEND" \
    --device "$DEVICE" \
    --seed "$SEED" \
    "$@"
