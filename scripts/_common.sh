# Helpers for the numbered pipeline scripts (sourced after _env.sh).

# need PATH WHAT MAKER: stop with a clear message when an input of this stage is missing.
need() {
    if [ ! -e "$1" ]; then
        echo "error: $2 not found: $1" >&2
        echo "       it is made by $3 (or point the variable at an existing one)" >&2
        exit 1
    fi
}

# stage TITLE: a visible header per stage in long logs.
stage() {
    echo
    echo "==== $* ===="
}

# run CMD...: print the exact command (so it can be copied and rerun by hand), then run it.
run() {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    "$@"
}

# model_tag MODEL: the run-folder suffix of a depth network, "_<MODEL>" (nothing for the paper's cdcn_u),
# so that runs of different networks do not resume each other's checkpoints.
model_tag() {
    if [ -n "${1:-}" ] && [ "$1" != cdcn_u ]; then
        printf '_%s' "$1"
    fi
}

# STRICT=1: every per-video stage stops at its first failed video and exits 1, which stops the
# drivers (set -e). Default 0: a failed video is reported, counted and listed in the stage's
# reports/<stage>.json, the stage exits 0 and the pipeline goes on without it; the drivers end by
# printing what failed where (report_failures).
STRICT=${STRICT:-0}
STRICT_ARGS=()
if [ "$STRICT" = 1 ]; then
    STRICT_ARGS=(--strict)
elif [ "$STRICT" != 0 ]; then
    echo "error: STRICT must be 0 or 1, not '$STRICT'" >&2
    exit 1
fi

# report_failures PATH...: the end-of-run summary of the stages' reports under these roots and of
# DUM/test.py report.json files (data/failures.py); missing paths are skipped.
report_failures() {
    stage "what failed where (per-video failures do not stop the run; STRICT=1 makes them stop it)"
    "$PY" -m data.failures "$@"
}
