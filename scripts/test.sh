#!/usr/bin/env bash
# Run the whole test suite (creates .venv on first use). Extra arguments go to pytest,
# e.g. `bash scripts/test.sh -m "not e2e"` or `bash scripts/test.sh tests/test_metrics.py`.
# Tests run on TEST_WORKERS processes (default 2; 0 runs them in this one), one test file per process at a
# time (--dist loadfile, so a file's fixtures are built once). Much of the suite waits on child processes
# that start Python, torch and TensorFlow, so two workers finish sooner even on two cores.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

# Byte-compile everything first: a syntax error anywhere fails fast with a clear message.
"$PY" -m compileall -q -x "/\.(venv|git)/" . >/dev/null
if "$PY" -c "import xdist" 2>/dev/null; then
    workers=${TEST_WORKERS:-2}
    # Each worker (and the processes it starts) gets its share of the cores for torch's threads: with two
    # workers of two threads each on two cores, the threads wait on each other (measured on three test files:
    # 151 s with the default threads, 111 s with one thread per worker).
    if [ -z "${OMP_NUM_THREADS:-}" ] && [ "$workers" -gt 0 ]; then
        share=$(( $(nproc) / workers ))
        export OMP_NUM_THREADS=$(( share > 0 ? share : 1 ))
    fi
    # --no-loadscope-reorder: files in the order tests/conftest.py sorts them (the longest chain first),
    # not by their number of tests
    "$PY" -m pytest -n "$workers" --dist loadfile --no-loadscope-reorder "$@"
else  # an environment of your own (DSDG_PYTHON) without pytest-xdist: one process
    echo ">> pytest-xdist is not installed in $PY: the tests run in one process"
    "$PY" -m pytest "$@"
fi
