"""TensorBoard writer shared by the trainers."""
from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Optional


def summary_writer(log_dir: str | Path, purge_step: Optional[int] = None):
    """A ``torch.utils.tensorboard.SummaryWriter`` that does not import TensorFlow.

    TensorBoard imports TensorFlow whenever it is installed (it is, for MTCNN). That costs several
    seconds and memory, and a process that imports TensorFlow before ``torch._dynamo`` (which
    ``torch.optim.Adam`` pulls in) dies with a segmentation fault on these machines. The
    ``tensorboard.compat.notf`` marker module is TensorBoard's own switch to its TF-free stub,
    which has everything that writing event files needs.
    """
    if "tensorflow" not in sys.modules:
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(log_dir), purge_step=purge_step)
