#!/usr/bin/env bash
# Dataset stage 3: the intra-dataset protocols of one dataset, each through scripts/run_protocol.sh
# (generator list, generator, generated pairs, crops, CDCN + DUM, test, summary over folds).
#   DATASET=siw bash scripts/datasets/03_intra.sh      siw_1 (training on the first 60 frames), siw_2 (4 folds),
#                                                      siw_3 (2 folds); report APCER / BPCER / ACER (mean +- std)
#   DATASET=casia bash scripts/datasets/03_intra.sh    protocol casia; report eer_test (the usual CASIA-MFSD number)
#   DATASET=replay bash scripts/datasets/03_intra.sh   protocol replay; report hter (threshold at the devel EER)
#   DATASET=siwm bash scripts/datasets/03_intra.sh     siwm: 13 leave-one-spoof-type-out folds; APCER / BPCER / ACER /
#                                                      EER per type and their mean +- std (SUBPROTOCOLS="1 2": some)
# Needs scripts/datasets/01_adapt.sh and 02_prepare.sh. Summaries: RUNS_DIR/protocol_<name>.json.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../_env.sh"
source "$(dirname "${BASH_SOURCE[0]}")/../_common.sh"

DATASET=${DATASET:-casia}
ADAPTED_ROOT=${ADAPTED_ROOT:-datasets/adapted}
PREP_ROOT=${PREP_ROOT:-work/adapted_prep}
CROP_ROOT=${CROP_ROOT:-work/adapted_crop}
RUNS_DIR=${RUNS_DIR:-runs}
case "$DATASET" in
    siw) default_protocols="siw_1 siw_2 siw_3"; spoof_types=6 ;;
    siwm) default_protocols=siwm; spoof_types=13 ;;    # thirteen classes; each fold trains on twelve of them
    casia) default_protocols=casia; spoof_types=4 ;;   # three classes: warped, cut, video
    replay) default_protocols=replay; spoof_types=4 ;; # three classes: print, mobile, highdef
    *) echo "error: DATASET must be siw, siwm, casia or replay, not '$DATASET'" >&2; exit 1 ;;
esac
PROTOCOLS=${PROTOCOLS:-$default_protocols}
SIW_FIRST_FRAMES=${SIW_FIRST_FRAMES:-60}    # SiW protocol 1 trains on the first 60 frames of each video
# SiW-M's tables give the rates at each Test set's own EER threshold: add them beside the Dev-threshold ones.
target_eer=0
[ "$DATASET" = siwm ] && target_eer=1
TARGET_EER=${TARGET_EER:-$target_eer}

export OULU_ROOT="$ADAPTED_ROOT" PREP_ROOT CROP_ROOT RUNS_DIR
for p in $PROTOCOLS; do
    first=0
    [ "$p" = siw_1 ] && first=$SIW_FIRST_FRAMES
    PROTOCOL="$p" NUM_SPOOF_TYPES="$spoof_types" FIRST_FRAMES="$first" TARGET_EER="$TARGET_EER" \
        bash "$(dirname "${BASH_SOURCE[0]}")/../run_protocol.sh"
done
echo
echo "summaries: $(for p in $PROTOCOLS; do printf '%s ' "$RUNS_DIR/protocol_$p.json"; done)"
