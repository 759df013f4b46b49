#!/usr/bin/env bash
# Stage 4: the generator's training list for one protocol.
#   -> PREP_ROOT/train_list/train_list_oulu_p<PROTOCOL>.txt
# Extra arguments go to data/make_train_list.py (e.g. --first-frames 60 for SiW protocol 1).
# A Train video without usable frames (it failed an earlier stage) is left out of the list and
# named (--allow-missing); STRICT=1 refuses to write the list instead.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

OULU_ROOT=${OULU_ROOT:-datasets/OULU-NPU}
PREP_ROOT=${PREP_ROOT:-work/oulu_prep}
PROTOCOL=${PROTOCOL:-1}                     # 1, 2, 3_k or 4_k (k = 1..6)
FRAMES_PER_VIDEO=${FRAMES_PER_VIDEO:-40}    # as in the released list
SEED=${SEED:-0}

need "$OULU_ROOT/Protocols" "protocol lists" "the OULU-NPU release, data/synthetic.py, or scripts/datasets/01_adapt.sh for other datasets"
need "$PREP_ROOT/train_bbox" "face boxes" "scripts/02_detect_faces.sh"
missing=(--allow-missing)
if [ "$STRICT" = 1 ]; then missing=(); fi
stage "4/9 generator training list, protocol $PROTOCOL"
run "$PY" -m data.make_train_list \
    --prep-root "$PREP_ROOT" \
    --oulu-root "$OULU_ROOT" \
    --protocol "$PROTOCOL" \
    --frames-per-video "$FRAMES_PER_VIDEO" \
    --seed "$SEED" \
    "${missing[@]}" \
    "$@"
