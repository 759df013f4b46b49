# Sourced by every script in scripts/: go to the repository root and make sure the Python
# environment exists. On first use it creates .venv and installs requirements.txt (about two
# minutes); afterwards it reinstalls only when requirements.txt changes.
# Set DSDG_PYTHON=/path/to/python to use an environment of your own instead.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

if [ -n "${DSDG_PYTHON:-}" ]; then
    PY="$DSDG_PYTHON"
else
    VENV="$REPO_ROOT/.venv"
    PY="$VENV/bin/python"
    want="$(sha256sum requirements.txt | cut -d' ' -f1)"
    have="$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)"
    if [ ! -x "$PY" ] || [ "$want" != "$have" ]; then
        echo ">> setting up $VENV from requirements.txt (first run only; a few minutes)"
        python3 -m venv "$VENV"
        "$PY" -m pip install --quiet --upgrade pip
        "$PY" -m pip install --quiet -r requirements.txt
        echo "$want" > "$VENV/.requirements.sha256"
    fi
fi
export PY
# TensorFlow (inside MTCNN) and MediaPipe print pages of start-up notes at their default levels.
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
export GLOG_minloglevel="${GLOG_minloglevel:-2}"
