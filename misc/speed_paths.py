"""The one switch of every CPU speed path: DUM/kernels.py (the depth networks' GEMM weight gradient,
folded central-difference kernels and fused conv + BN + ReLU inference) and networks/upsample.py (the
generator decoder's phase-kernel upsampling).

Each speed path computes the operator its network states, only faster; off, the networks run their
reference formulas layer by layer. Turn them off to debug, or on hardware where one is wrong:

    DSDG_SPEED_PATHS=0 python DUM/train.py ...      # the whole process

    with speed_paths(False):                        # one block (tests)
        out = model(x)

The environment variable is read at every check, so it also works when set after the import; the
context manager, process-wide and not thread-local, overrides it for its block.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Optional

ENV = "DSDG_SPEED_PATHS"
_ON, _OFF = ("1", "true", "on", "yes", ""), ("0", "false", "off", "no")

_override: Optional[bool] = None  # set only by speed_paths()


def speed_paths_enabled() -> bool:
    """Whether the speed paths may run: the innermost :func:`speed_paths` block's choice, else
    ``$DSDG_SPEED_PATHS`` (unset: on). ValueError naming the variable for a value that is neither."""
    if _override is not None:
        return _override
    value = os.environ.get(ENV, "").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ValueError(f"{ENV}={os.environ[ENV]!r}: expected 0 (speed paths off) or 1 (on, the default)")


@contextlib.contextmanager
def speed_paths(enabled: bool) -> Iterator[None]:
    """Within the block the speed paths are on (``True``) or off (``False``), whatever the environment
    says; the previous state comes back when the block ends, normally or by an exception."""
    global _override
    previous, _override = _override, bool(enabled)
    try:
        yield
    finally:
        _override = previous
