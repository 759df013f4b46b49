#!/usr/bin/env bash
# Cross-dataset test: train on SOURCE (its protocol's Train list, threshold at the EER of its Dev
# list), test on TARGET's Test list. Reports the HTER on TARGET at the SOURCE Dev threshold, and the
# original code's rule (HTER at the EER threshold of TARGET's own scores, optimistic) beside it.
#   SOURCE=casia TARGET=replay bash scripts/cross/cross_dataset.sh  (see 01_casia_to_replay.sh, 02_replay_to_casia.sh)
# Both datasets must be adapted into one ADAPTED_ROOT and prepared into one PREP_ROOT
# (scripts/datasets/01_adapt.sh twice, then 02_prepare.sh). The model is the SOURCE run of
# scripts/run_protocol.sh (trained here if it is not there yet; its intra-dataset test comes along).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../_env.sh"
source "$(dirname "${BASH_SOURCE[0]}")/../_common.sh"

SOURCE=${SOURCE:-casia}
TARGET=${TARGET:-replay}
ADAPTED_ROOT=${ADAPTED_ROOT:-datasets/adapted}
PREP_ROOT=${PREP_ROOT:-work/adapted_prep}
CROP_ROOT=${CROP_ROOT:-work/adapted_crop}
RUNS_DIR=${RUNS_DIR:-runs}
CROSS_DIR=${CROSS_DIR:-$RUNS_DIR/cross$(model_tag "${MODEL:-}")_${SOURCE}_to_${TARGET}}
GENERATED=${GENERATED:-1}                   # 1: DSDG; 0: plain CDCN + DUM
EVAL_MODE=${EVAL_MODE:-iso}                 # iso or cdcn (the original's sklearn-ROC threshold and tie rule)

scripts="$(dirname "${BASH_SOURCE[0]}")/.."
for d in "$SOURCE/Train" "$TARGET/Test"; do
    need "$ADAPTED_ROOT/Protocols/Protocol_$d.txt" "${d%/*} lists" "scripts/datasets/01_adapt.sh (DATASET=${d%/*})"
done
export OULU_ROOT="$ADAPTED_ROOT" PREP_ROOT CROP_ROOT RUNS_DIR GENERATED

PROTOCOL="$SOURCE" bash "$scripts/run_protocol.sh"
PROTOCOL="$SOURCE" DUM_DIR="$RUNS_DIR/dum$(model_tag "${MODEL:-}")_p$SOURCE" TEST_DIR="$CROSS_DIR" \
    bash "$scripts/09_test_dum.sh" --test-list "$CROP_ROOT/protocols/Protocol_$TARGET/Test.txt"
stage "cross-dataset $SOURCE -> $TARGET: HTER on $TARGET Test at the $SOURCE Dev threshold -> $CROSS_DIR/metrics.json"
run "$PY" -m DUM.evaluate --dev "$CROSS_DIR/dev_scores.txt" --test "$CROSS_DIR/test_scores.txt" \
    --dev-list "$CROP_ROOT/protocols/Protocol_$SOURCE/Dev.txt" \
    --test-list "$CROP_ROOT/protocols/Protocol_$TARGET/Test.txt" \
    --mode "$EVAL_MODE" --target-eer --json "$CROSS_DIR/metrics.json"
report_failures "$CROSS_DIR/report.json"
