"""The tiny demo run of the end-to-end tests (tests/conftest.py makes it once, tests/test_e2e.py checks it)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# The demo's dataset with 3 frames per video instead of 4, a generator that only shows it runs, and
# 225 CDCN + DUM steps instead of 600: about four minutes on two cores, and CDCN + DUM must still learn.
TINY = {
    "SYN_USERS": "15", "SYN_PHONES": "2", "SYN_FRAMES": "3", "SYN_SIZE": "320x240",
    "DEMO_GEN_SIZE": "32", "DEMO_GEN_BATCH": "4", "DEMO_GEN_EPOCHS": "1", "DEMO_GEN_ITERS": "3",
    "DEMO_PAIRS": "40", "DEMO_IMAGE_SIZE": "32", "DEMO_DUM_BATCH": "8", "DEMO_DUM_EPOCHS": "15",
    "DEMO_DUM_STEP": "10",
}
METRIC_KEYS = {"threshold", "apcer", "apcer_per_pai", "apcer_pooled", "bpcer", "acer", "acer_pooled", "hter",
               "eer_dev", "eer_test", "auc", "bpcer_at_apcer"}


def run_demo(repo_root: Path, demo_dir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, DSDG_PYTHON=sys.executable, DEMO_DIR=str(demo_dir), DEVICE="cpu", **TINY)
    return subprocess.run(["bash", "scripts/demo.sh"], cwd=repo_root, env=env, capture_output=True, text=True,
                          timeout=1500)
