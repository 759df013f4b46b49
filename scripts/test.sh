#!/usr/bin/env bash
# Run the whole test suite (creates .venv on first use). Extra arguments go to pytest,
# e.g. `bash scripts/test.sh -m "not e2e"` or `bash scripts/test.sh tests/test_metrics.py`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

# Byte-compile everything first: a syntax error anywhere fails fast with a clear message.
"$PY" -m compileall -q -x "/\.(venv|git)/" . >/dev/null
"$PY" -m pytest "$@"
