#!/usr/bin/env bash
# DSDG generator on OULU-NPU: the paper's settings (the original train_generator.sh, Protocol 1),
# every hyper-parameter spelled out. Paths and run settings are variables that the environment can
# override (relative paths are relative to the repository root):
#   PREP_ROOT=/data/oulu_prep PROTOCOL=1 bash train_generator.sh
# Extra arguments go to train_generator.py, e.g. `bash train_generator.sh --resume auto`.
# Several GPUs: NPROC=4 bash train_generator.sh (torchrun; --batch-size stays the total batch).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/_env.sh"   # cd to the repository root, set $PY

PREP_ROOT=${PREP_ROOT:-work/oulu_prep}     # frames, boxes and lists from the data-preparation stages
PROTOCOL=${PROTOCOL:-1}                    # 1, 2, 3_k or 4_k
OUT_DIR=${OUT_DIR:-runs/generator_p${PROTOCOL}}
IP_MODEL=${IP_MODEL:-ip_checkpoint/LightCNN_29Layers_V2_checkpoint.pth.tar}
DEVICE=${DEVICE:-auto}
WORKERS=${WORKERS:-auto}                   # data-loading processes per GPU (auto: 8, at most the cores)
NPROC=${NPROC:-1}
SEED=${SEED:-0}

mkdir -p "$OUT_DIR"
if [ "$NPROC" -gt 1 ]; then
    LAUNCH=("$PY" -m torch.distributed.run --standalone --nproc_per_node="$NPROC")
else
    LAUNCH=("$PY")
fi

# train.log in $OUT_DIR keeps the log; the progress bar goes to the terminal.
"${LAUNCH[@]}" train_generator.py \
    --prep-root "$PREP_ROOT" \
    --protocol "$PROTOCOL" \
    --output-dir "$OUT_DIR" \
    --ip-model "$IP_MODEL" \
    --device "$DEVICE" \
    --workers "$WORKERS" \
    --seed "$SEED" \
    --image-size 256 \
    --hdim 128 \
    --num-spoof-types 4 \
    --bbox-format mtcnn \
    --face-scale 1.0 \
    --batch-size 240 \
    --epochs 200 \
    --lr 2e-4 \
    --adam-betas 0.9 0.999 \
    --lambda-align 50 \
    --lambda-ip 1000 \
    --lambda-pair 5 \
    --lambda-type 10 \
    --lambda-ort 1 \
    --warmup-epochs 1 \
    --warmup-factor 0.01 \
    --save-every 10 \
    --sample-every 10 \
    --log-every 20 \
    "$@"
