#!/usr/bin/env bash
# Stages 4-9 for every sub-protocol of a protocol, then the mean and standard deviation of every
# metric over the sub-protocols (each measured at its own Dev threshold).
#   PROTOCOL=3 bash scripts/run_protocol.sh                      OULU-NPU protocol 3: 3_1 .. 3_6
#   PROTOCOL=4 SUBPROTOCOLS="1 2" bash scripts/run_protocol.sh    only 4_1 and 4_2
#   PROTOCOL=2 bash scripts/run_protocol.sh                      a protocol without sub-protocols
#   OULU_ROOT=datasets/adapted PROTOCOL=siw_2 bash scripts/run_protocol.sh    an adapted dataset
# Needs stages 1-3 done for OULU_ROOT into PREP_ROOT (scripts/01-03, or scripts/datasets/02_prepare.sh).
# Every sub-protocol <t> gets RUNS_DIR/generator_p<t>, dum_p<t> and test_p<t> (dum_<MODEL>_p<t> and
# test_<MODEL>_p<t> for a MODEL other than cdcn_u, see scripts/08_train_dum.sh); the summary goes to
# RUNS_DIR/protocol_<PROTOCOL>.json. Rerunning resumes every stage. The size and schedule variables of
# scripts/05-09 (IMAGE_SIZE, EPOCHS, GEN_EPOCHS, ...) pass through from the environment.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

OULU_ROOT=${OULU_ROOT:-datasets/OULU-NPU}   # OULU-NPU release, or an adapted root (scripts/datasets/01_adapt.sh)
PREP_ROOT=${PREP_ROOT:-work/oulu_prep}
CROP_ROOT=${CROP_ROOT:-work/oulu_crop}
PROTOCOL=${PROTOCOL:-3}                     # 1 2 3 4 (OULU-NPU), siw_1 siw_2 siw_3 siwm casia replay, or one of a
                                            # protocol's sub-protocols
SUBPROTOCOLS=${SUBPROTOCOLS:-}              # e.g. "1 2": only these sub-protocols (default: all)
RUNS_DIR=${RUNS_DIR:-runs}
GENERATED=${GENERATED:-1}                   # 1: DSDG (generator + generated pairs); 0: plain CDCN + DUM
NUM_SPOOF_TYPES=${NUM_SPOOF_TYPES:-4}       # generator's spoof classes: OULU-NPU 4, SiW 6, SiW-M 13,
                                            # CASIA/Replay 3 (4 fits)
FIRST_FRAMES=${FIRST_FRAMES:-0}             # train on frames 1..N of each training video only (SiW protocol 1: 60)
FIRST_CROP_ROOT=${FIRST_CROP_ROOT:-${CROP_ROOT}_first${FIRST_FRAMES}}  # crop root of such a run (train crops only)
EVAL_MODE=${EVAL_MODE:-iso}                 # iso (ISO/IEC 30107-3) or cdcn (the original's rule) for the summary
STD_DDOF=${STD_DDOF:-1}                     # 1: sample standard deviation over sub-protocols; 0: population
TARGET_EER=${TARGET_EER:-0}                 # 1: also the rates at each Test set's own EER threshold (as SiW-M's
                                            # tables give them)
export OULU_ROOT PREP_ROOT

here="$(dirname "${BASH_SOURCE[0]}")"
need "$OULU_ROOT/Protocols" "protocol lists" "the OULU-NPU release, data/synthetic.py or scripts/datasets/01_adapt.sh"
need "$PREP_ROOT/train_bbox" "face boxes" "scripts/02_detect_faces.sh (or scripts/datasets/02_prepare.sh)"
expand='import sys; from data.protocol_lists import expand_protocol; print(*expand_protocol(sys.argv[1]))'
read -r -a TAGS <<< "$("$PY" -c "$expand" "$PROTOCOL")"
if [ -n "$SUBPROTOCOLS" ]; then
    picked=()
    for k in $SUBPROTOCOLS; do
        for t in "${TAGS[@]}"; do [ "${t##*_}" = "$k" ] && picked+=("$t"); done
    done
    [ ${#picked[@]} -gt 0 ] || { echo "error: SUBPROTOCOLS='$SUBPROTOCOLS' matches none of ${TAGS[*]}" >&2; exit 1; }
    TAGS=("${picked[@]}")
fi
echo "protocol $PROTOCOL: ${TAGS[*]}"

# Crops are shared by all sub-protocols; a first-frames run trains on crops of its own (its Dev and
# Test crops are the shared ones, linked).
export CROP_ROOT
bash "$here/07_crop.sh"
crop_roots=("$CROP_ROOT")
if [ "$FIRST_FRAMES" -gt 0 ]; then
    crop_roots+=("$FIRST_CROP_ROOT")
    CROP_ROOT="$FIRST_CROP_ROOT" SPLITS=train bash "$here/07_crop.sh" --train-first-frames "$FIRST_FRAMES"
    for d in dev_images dev_depth test_images test_depth; do
        [ -e "$FIRST_CROP_ROOT/$d" ] || ln -s "$(cd "$CROP_ROOT" && pwd)/$d" "$FIRST_CROP_ROOT/$d"
    done
    CROP_ROOT="$FIRST_CROP_ROOT"
fi

# list_path TAG SPLIT: the crop root's copy of a sub-protocol's Dev or Test list.
list_path() {
    "$PY" -c 'import sys; from data.protocol_lists import parse_protocol_name, protocol_path
proto, sub = parse_protocol_name(sys.argv[2]); print(protocol_path(sys.argv[1], proto, sys.argv[3], sub))' \
        "$CROP_ROOT/protocols" "$1" "$2"
}

dev_scores=()
test_scores=()
dev_lists=()
test_lists=()
reports=()
for t in "${TAGS[@]}"; do
    gen_dir="$RUNS_DIR/generator_p$t"
    if [ "$GENERATED" = 1 ]; then
        first=()
        [ "$FIRST_FRAMES" -gt 0 ] && first=(--first-frames "$FIRST_FRAMES")
        PROTOCOL="$t" bash "$here/04_make_train_list.sh" "${first[@]}"
        PROTOCOL="$t" GEN_DIR="$gen_dir" bash "$here/05_train_generator.sh" --num-spoof-types "$NUM_SPOOF_TYPES"
        PROTOCOL="$t" GEN_DIR="$gen_dir" CROP_ROOT="$CROP_ROOT" bash "$here/06_generate.sh"
    fi
    tag="$(model_tag "${MODEL:-}")"
    PROTOCOL="$t" CROP_ROOT="$CROP_ROOT" DUM_DIR="$RUNS_DIR/dum${tag}_p$t" bash "$here/08_train_dum.sh"
    PROTOCOL="$t" CROP_ROOT="$CROP_ROOT" DUM_DIR="$RUNS_DIR/dum${tag}_p$t" TEST_DIR="$RUNS_DIR/test${tag}_p$t" \
        bash "$here/09_test_dum.sh"
    dev_scores+=("$RUNS_DIR/test${tag}_p$t/dev_scores.txt")
    test_scores+=("$RUNS_DIR/test${tag}_p$t/test_scores.txt")
    dev_lists+=("$(list_path "$t" Dev)")
    test_lists+=("$(list_path "$t" Test)")
    reports+=("$RUNS_DIR/test${tag}_p$t/report.json")
done

stage "protocol $PROTOCOL: ${#TAGS[@]} sub-protocol(s), $EVAL_MODE rule -> $RUNS_DIR/protocol_$PROTOCOL.json"
# The summary names each sub-protocol (SiW-M's by the spoof type it leaves out).
names='import sys; from data.other_benchmarks import subprotocol_names; print(*subprotocol_names(sys.argv[1:]))'
names_line="$("$PY" -c "$names" "${TAGS[@]}")"    # an assignment, so that a failure stops the script (set -e)
read -r -a NAMES <<< "$names_line"
target=()
[ "$TARGET_EER" = 1 ] && target=(--target-eer)
run "$PY" -m DUM.evaluate --dev "${dev_scores[@]}" --test "${test_scores[@]}" --mode "$EVAL_MODE" \
    --dev-list "${dev_lists[@]}" --test-list "${test_lists[@]}" --names "${NAMES[@]}" "${target[@]}" \
    --std-ddof "$STD_DDOF" --json "$RUNS_DIR/protocol_$PROTOCOL.json"
report_failures "$PREP_ROOT" "${crop_roots[@]}" "${reports[@]}"
