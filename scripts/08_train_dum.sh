#!/usr/bin/env bash
# Stage 8: train CDCN + DUM on real plus generated faces (plain CDCN + DUM when no Train_g list exists).
#   CROP_ROOT  ->  DUM_DIR/checkpoint.pth (+ checkpoints/NNNN.pth at each evaluation), log.txt, tensorboard/, eval/
# MODEL picks the depth network (DUM/zoo.py): cdcn_u (default), cdcn, depthnet_u or resnet18_u; other than
# cdcn_u, the default DUM_DIR gets its name (runs/dum_cdcn_p1). Rerunning continues from
# DUM_DIR/checkpoint.pth. Extra arguments go to DUM/train.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

CROP_ROOT=${CROP_ROOT:-work/oulu_crop}
PROTOCOL=${PROTOCOL:-1}
MODEL=${MODEL:-cdcn_u}                      # paper: cdcn_u (CDCN + DUM)
DUM_DIR=${DUM_DIR:-runs/dum$(model_tag "$MODEL")_p${PROTOCOL}}
DEVICE=${DEVICE:-auto}
NPROC=${NPROC:-1}                           # GPUs (or CPU processes) for torchrun
PRECISION=${PRECISION:-}                    # auto|fp32|bf16|fp16 (DUM/train.py --precision); empty: as AMP says
AMP=${AMP:-true}                            # the older switch: fp16 on CUDA; bf16 on CPUs with native bf16 only
IMAGE_SIZE=${IMAGE_SIZE:-256}               # paper: 256
MAP_SIZE=${MAP_SIZE:-32}                    # paper: 32
BATCH_SIZE=${BATCH_SIZE:-64}                # paper: 64 (48 real + 16 generated)
LR=${LR:-1e-4}                              # paper: 1e-4
EPOCHS=${EPOCHS:-1600}                      # paper: 1600
EVAL_START=${EVAL_START:-200}               # paper: first evaluation at epoch 200 ...
EVAL_EVERY=${EVAL_EVERY:-50}                # ... then every 50
DUM_WORKERS=${DUM_WORKERS:-auto}            # data-loading processes per GPU (0 = in the main process; auto: 4, at most the cores)
SEED=${SEED:-0}

need "$CROP_ROOT/train_images" "face crops" "scripts/07_crop.sh"
need "$CROP_ROOT/protocols" "protocol lists in the crop root" "scripts/07_crop.sh"
if [ "$NPROC" -gt 1 ]; then
    launch=("$PY" -m torch.distributed.run --standalone --nproc_per_node="$NPROC")
else
    launch=("$PY")
fi
if [ -n "$PRECISION" ]; then precision=(--precision "$PRECISION"); else precision=(--amp "$AMP"); fi
stage "8/9 train $MODEL, protocol $PROTOCOL -> $DUM_DIR"
run "${launch[@]}" DUM/train.py \
    --model "$MODEL" \
    --crop-root "$CROP_ROOT" \
    --protocol "$PROTOCOL" \
    --output-dir "$DUM_DIR" \
    --device "$DEVICE" \
    "${precision[@]}" \
    --image-size "$IMAGE_SIZE" \
    --map-size "$MAP_SIZE" \
    --theta 0.7 \
    --batch-size "$BATCH_SIZE" \
    --real-ratio 0.75 \
    --generated-weight 0.1 \
    --kl-weight 0.001 \
    --lr "$LR" \
    --weight-decay 5e-5 \
    --step-size 500 \
    --gamma 0.5 \
    --epochs "$EPOCHS" \
    --eval-start "$EVAL_START" \
    --eval-every "$EVAL_EVERY" \
    --workers "$DUM_WORKERS" \
    --seed "$SEED" \
    --resume auto \
    "$@"
