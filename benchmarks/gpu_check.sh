#!/usr/bin/env bash
# The GPU check in one command (benchmarks/gpu_check.py): the CUDA tests (pytest -m gpu), the pipeline on
# the carried inputs and the GPU benchmark, every result under --out, at most --budget seconds (480).
#
#   python -m benchmarks.gpu_prep --out benchmarks/gpu_inputs           # first, on a CPU machine (~10 s, < 1 MB)
#   bash benchmarks/gpu_check.sh --out gpu_results                      # then on the CUDA machine
#   bash benchmarks/gpu_check.sh --dry-run --out runs/gpu_dry_run       # the same code on the CPU (CI)
#
# Uses $DSDG_PYTHON, else python3 when it has torch (the GPU machine's), else the repository's .venv.
# No network, no TensorFlow, mtcnn or mediapipe needed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -n "${DSDG_PYTHON:-}" ]; then
    PY="$DSDG_PYTHON"
elif python3 -c "import torch" 2>/dev/null || [ ! -x .venv/bin/python ]; then
    PY=python3
else
    PY=.venv/bin/python
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" -m benchmarks.gpu_check --python "$PY" "$@"
