#!/usr/bin/env bash
# Run a training script on several processes of this machine with torchrun (one per GPU; gloo
# processes on a machine without GPUs). The first argument is the script, the rest its flags:
#   NPROC=4 bash scripts/distributed_train.sh DUM/train.py --crop-root work/crop --output-dir runs/dum_p1
#   NPROC=2 bash scripts/distributed_train.sh train_generator.py --prep-root work/oulu_prep --no-identity-loss
# --batch-size stays the global batch: each process takes 1/NPROC of it.
# Several machines: run torchrun yourself on each with --nnodes/--node_rank/--rdzv-* (see docs/DISTRIBUTED.md).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"   # cd to the repository root, set $PY

NPROC=${NPROC:-2}
if [ "$#" -lt 1 ]; then
    echo "usage: NPROC=N bash scripts/distributed_train.sh SCRIPT.py [flags...]" >&2
    exit 2
fi

# The progress bar of rank 0 goes to the terminal; the other ranks are quiet.
exec "$PY" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" "$@"
