"""Progress bars: one wrapper around tqdm so every loop looks and behaves the same."""
from __future__ import annotations

import os
import sys
from typing import Iterable, Optional, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Optional[Iterable[T]] = None, desc: str = "", total: Optional[int] = None,
             unit: str = "it", leave: bool = True, **kwargs) -> "tqdm[T]":
    """A tqdm bar on stderr, silent on non-main distributed ranks and when ``DSDG_NO_PROGRESS=1``.

    When stderr is not a terminal (CI logs, ``tee``) the bar refreshes at most every 10 s so that
    log files stay readable.
    """
    rank = int(os.environ.get("RANK", "0"))
    disable = kwargs.pop("disable", None)
    if disable is None:
        disable = rank != 0 or os.environ.get("DSDG_NO_PROGRESS") == "1"
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 10.0)
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, disable=disable,
                dynamic_ncols=True, **kwargs)
