#!/usr/bin/env bash
# The paper's ablation in miniature: CDCN vs CDCN + DUM, trained on real faces vs real + generated pairs,
# several seeds each; writes OUT/ablation.md, ablation.json and ablation.png (see experiments/ablation.py).
#   bash scripts/ablation.sh --out runs/ablation                                  synthetic data, 60-90 min on 2 cores
#   bash scripts/ablation.sh --out runs/ablation_oulu --oulu-root datasets/OULU-NPU
#   bash scripts/ablation.sh --out runs/ablation_smoke --quick                    smoke test (numbers mean nothing)
# Rerunning the same command resumes. Every argument goes to experiments/ablation.py (--help lists them).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

stage "ablation (experiments/ablation.py)"
run "$PY" -m experiments.ablation "$@"
