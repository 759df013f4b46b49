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
