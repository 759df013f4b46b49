#!/usr/bin/env bash
# Cross-dataset run 2: train on Replay-Attack (threshold from its devel set), test on CASIA-MFSD.
# All variables of scripts/cross/cross_dataset.sh apply (ADAPTED_ROOT, PREP_ROOT, CROP_ROOT, RUNS_DIR, ...).
set -euo pipefail
SOURCE=replay TARGET=casia exec bash "$(dirname "${BASH_SOURCE[0]}")/cross_dataset.sh" "$@"
