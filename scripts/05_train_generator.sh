#!/usr/bin/env bash
# Stage 5: train the DSDG generator (dual VAE) with the paper's settings from train_generator.sh.
#   PREP_ROOT (frames, boxes, train list)  ->  GEN_DIR/checkpoint.pth, checkpoints/NNNN.pth, grids/, tensorboard/
# Rerunning continues from the newest checkpoint (and does nothing when training is finished).
# The identity losses need the LightCNN-29 v2 weights (see ip_checkpoint/README.md); set
# NO_IDENTITY_LOSS=1 to train without them (this does not reproduce the paper). Extra arguments go to
# train_generator.py (e.g. --num-spoof-types 6 for SiW).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

PREP_ROOT=${PREP_ROOT:-work/oulu_prep}
PROTOCOL=${PROTOCOL:-1}
GEN_DIR=${GEN_DIR:-runs/generator_p${PROTOCOL}}
IP_MODEL=${IP_MODEL:-ip_checkpoint/LightCNN_29Layers_V2_checkpoint.pth.tar}
NO_IDENTITY_LOSS=${NO_IDENTITY_LOSS:-0}
DEVICE=${DEVICE:-auto}
NPROC=${NPROC:-1}                           # GPUs (or CPU processes) for torchrun
GEN_WORKERS=${GEN_WORKERS:-auto}            # data-loading processes per GPU (auto: the paper's 8, at most the cores)
# Paper values live in train_generator.sh; these override them only when set (small runs, demos).
GEN_IMAGE_SIZE=${GEN_IMAGE_SIZE:-}          # paper: 256
GEN_BATCH_SIZE=${GEN_BATCH_SIZE:-}          # paper: 240
GEN_EPOCHS=${GEN_EPOCHS:-}                  # paper: 200
GEN_ITERS_PER_EPOCH=${GEN_ITERS_PER_EPOCH:-}  # cap on iterations per epoch (paper: none)
GEN_SAVE_EVERY=${GEN_SAVE_EVERY:-}          # paper: 10

need "$PREP_ROOT/train_list/train_list_oulu_p${PROTOCOL}.txt" "generator training list" "scripts/04_make_train_list.sh"
extra=(--resume auto)
if [ "$NO_IDENTITY_LOSS" = 1 ]; then
    echo "note: NO_IDENTITY_LOSS=1: training without the LightCNN identity losses; this does not reproduce the paper"
    extra+=(--no-identity-loss)
else
    need "$IP_MODEL" "LightCNN-29 v2 weights (IP_MODEL)" "a download from the LightCNN authors: see ip_checkpoint/README.md (or set NO_IDENTITY_LOSS=1)"
fi
[ -n "$GEN_IMAGE_SIZE" ] && extra+=(--image-size "$GEN_IMAGE_SIZE")
[ -n "$GEN_BATCH_SIZE" ] && extra+=(--batch-size "$GEN_BATCH_SIZE")
[ -n "$GEN_EPOCHS" ] && extra+=(--epochs "$GEN_EPOCHS")
[ -n "$GEN_ITERS_PER_EPOCH" ] && extra+=(--max-iters-per-epoch "$GEN_ITERS_PER_EPOCH")
[ -n "$GEN_SAVE_EVERY" ] && extra+=(--save-every "$GEN_SAVE_EVERY" --sample-every "$GEN_SAVE_EVERY")

stage "5/9 train the generator, protocol $PROTOCOL -> $GEN_DIR"
PREP_ROOT="$PREP_ROOT" PROTOCOL="$PROTOCOL" OUT_DIR="$GEN_DIR" IP_MODEL="$IP_MODEL" DEVICE="$DEVICE" \
    NPROC="$NPROC" WORKERS="$GEN_WORKERS" \
    run bash train_generator.sh "${extra[@]}" "$@"
