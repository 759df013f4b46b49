#!/usr/bin/env bash
# Dataset stage 1: check a downloaded release (SiW, SiW-M, CASIA-MFSD or Replay-Attack) and write it as an
# adapted root in the OULU-NPU layout that every pipeline stage reads: links to the videos under
# normalised ids, protocol lists, a metadata table.
#   DATASET=casia  RELEASE_ROOT=/data/CASIA-MFSD  bash scripts/datasets/01_adapt.sh
#   DATASET=replay RELEASE_ROOT=/data/replayattack bash scripts/datasets/01_adapt.sh   (same ADAPTED_ROOT:
#                                                     the cross-dataset runs need both in one root)
# A release that does not look as expected stops with a list of what was expected and what was found.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../_env.sh"
source "$(dirname "${BASH_SOURCE[0]}")/../_common.sh"

DATASET=${DATASET:-casia}                   # siw, siwm, casia or replay
case "$DATASET" in
    siw) default_release=datasets/SiW_release ;;
    siwm) default_release=datasets/SiW-M ;;
    casia) default_release=datasets/CASIA-MFSD ;;
    replay) default_release=datasets/replayattack ;;
    *) echo "error: DATASET must be siw, siwm, casia or replay, not '$DATASET'" >&2; exit 1 ;;
esac
RELEASE_ROOT=${RELEASE_ROOT:-$default_release}   # SiW: holds Train/ Test/; SiW-M: Live/ Replay/ Paper/ Mask/ Makeup/
                                                 # Partial/; CASIA-MFSD: train_release/ test_release/;
                                                 # Replay-Attack: train/ devel/ test/
ADAPTED_ROOT=${ADAPTED_ROOT:-datasets/adapted}   # written here; other datasets' files in it are kept
COUNTS=${COUNTS:-official}                  # official: check the published counts; any: names and structure only
LINK=${LINK:-symlink}                       # symlink, hardlink or copy
DEV_FRACTION=${DEV_FRACTION:-0.2}           # SiW, CASIA-MFSD (no Dev set): share of training subjects made Dev;
                                            # SiW-M: share of the training live videos and of each spoof type
SEED=${SEED:-0}                             # seed of that Dev draw
FACE_FILES=${FACE_FILES:-true}              # SiW: require a .face box file beside every video

need "$RELEASE_ROOT" "the $DATASET release (RELEASE_ROOT)" "the dataset owners (see docs/DATA.md: Other datasets)"
extra=()
case "$DATASET" in
    siw) extra=(--siw-root "$RELEASE_ROOT" --dev-fraction "$DEV_FRACTION" --seed "$SEED" --face-files "$FACE_FILES") ;;
    siwm) extra=(--siwm-root "$RELEASE_ROOT" --dev-fraction "$DEV_FRACTION" --seed "$SEED") ;;
    casia) extra=(--casia-root "$RELEASE_ROOT" --dev-fraction "$DEV_FRACTION" --seed "$SEED") ;;
    replay) extra=(--replay-root "$RELEASE_ROOT") ;;
esac
stage "adapt $DATASET: $RELEASE_ROOT -> $ADAPTED_ROOT"
run "$PY" -m "data.adapters.$DATASET" "${extra[@]}" --out "$ADAPTED_ROOT" --counts "$COUNTS" --link "$LINK"
