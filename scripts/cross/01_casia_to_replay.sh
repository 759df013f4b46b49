#!/usr/bin/env bash
# Cross-dataset run 1: train on CASIA-MFSD (threshold from its carved Dev set), test on Replay-Attack.
# All variables of scripts/cross/cross_dataset.sh apply (ADAPTED_ROOT, PREP_ROOT, CROP_ROOT, RUNS_DIR, ...).
set -euo pipefail
SOURCE=casia TARGET=replay exec bash "$(dirname "${BASH_SOURCE[0]}")/cross_dataset.sh" "$@"
