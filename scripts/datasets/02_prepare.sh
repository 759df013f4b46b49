#!/usr/bin/env bash
# Dataset stage 2: pipeline stages 1-3 (frames, face boxes, depth maps) on an adapted root.
#   ADAPTED_ROOT=datasets/adapted PREP_ROOT=work/adapted_prep bash scripts/datasets/02_prepare.sh
# BOXES=face takes SiW's boxes from its .face files (data/import_released_boxes.py) instead of running MTCNN on
# them; videos of other datasets in the same root still get MTCNN boxes. The variables of
# scripts/01-03 (SPLITS, EXTRACT_WORKERS, BBOX_WORKERS, DEPTH_WORKERS, DETECT_MAX_SIDE, DEPTH_BACKEND, STRICT, ...)
# pass through. A failed video is reported and left out (STRICT=1 stops at it); the run ends with what failed where.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../_env.sh"
source "$(dirname "${BASH_SOURCE[0]}")/../_common.sh"

ADAPTED_ROOT=${ADAPTED_ROOT:-datasets/adapted}
PREP_ROOT=${PREP_ROOT:-work/adapted_prep}
BOXES=${BOXES:-mtcnn}                       # mtcnn, or face: SiW's .face boxes
FACE_FORMAT=${FACE_FORMAT:-ltrb}            # numbers on a .face line: ltrb = x1 y1 x2 y2, or xywh
SPLITS=${SPLITS:-train dev test}

scripts="$(dirname "${BASH_SOURCE[0]}")/.."
need "$ADAPTED_ROOT/Protocols" "adapted root" "scripts/datasets/01_adapt.sh"
export PREP_ROOT SPLITS
OULU_ROOT="$ADAPTED_ROOT" bash "$scripts/01_extract_frames.sh"
if [ "$BOXES" = face ]; then
    stage "2/9 face boxes from SiW's .face files: $PREP_ROOT"
    # shellcheck disable=SC2086
    run "$PY" -m data.import_released_boxes --prep-root "$PREP_ROOT" --adapted-root "$ADAPTED_ROOT" --dataset SIW \
        --face-format "$FACE_FORMAT" --splits $SPLITS "${STRICT_ARGS[@]}"
elif [ "$BOXES" != mtcnn ]; then
    echo "error: BOXES must be mtcnn or face, not '$BOXES'" >&2
    exit 1
fi
bash "$scripts/02_detect_faces.sh"          # skips videos whose boxes are complete (imported ones too)
bash "$scripts/03_depth_maps.sh"
report_failures "$PREP_ROOT"
