"""Checkpoints: plain ``state_dict``s plus metadata, saved atomically, loadable with ``weights_only=True``.

A checkpoint written by this project is one dict::

    {"format": "dsdg", "version": 1, "kind": "generator" | "dum" | ...,
     "models": {name: state_dict}, "optimizer": ..., "scheduler": ..., "scaler": ...,
     "epoch": <next epoch to run>, "iteration": <optimizer steps done>,
     "args": {flag: value}, "rng": <RNG states>, "code_version": {"sha", "dirty"}, "extra": {...}}

Only tensors, numbers, strings, lists and dicts go in, so ``torch.load(weights_only=True)`` (the
PyTorch >= 2.6 default) reads it and no class or module path is pickled. Model state_dicts are
taken from the unwrapped module: keys never carry DataParallel/DDP's ``module.`` prefix.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional

import torch
from torch import nn

from misc.io import atomic_open
from misc.logger import code_version

FORMAT = "dsdg"
VERSION = 1


class CheckpointError(RuntimeError):
    """A file that is not a usable checkpoint for what was asked (missing file, wrong kind, key mismatch)."""


def unwrap(model: nn.Module) -> nn.Module:
    """The bare network inside DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        else:
            return model


def plain(value: Any) -> Any:
    """Convert argparse values (Paths, tuples, namespaces) to types ``weights_only`` loading accepts."""
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    return str(value)


def save_checkpoint(path: str | Path, *, kind: str, models: Mapping[str, nn.Module],
                    optimizer: Optional[torch.optim.Optimizer] = None, scheduler: Any = None,
                    scaler: Any = None, epoch: int = 0, iteration: int = 0,
                    args: Any = None, rng: Optional[dict] = None, extra: Optional[dict] = None) -> Path:
    """Write one checkpoint atomically (temporary file + rename) and return its path."""
    state: Dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "kind": kind,
        "models": {name: unwrap(m).state_dict() for name, m in models.items()},
        "epoch": int(epoch), "iteration": int(iteration),
        "args": plain(args) if args is not None else {},
        "code_version": code_version(),
        "extra": plain(extra or {}),
    }
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    if rng is not None:
        state["rng"] = rng
    path = Path(path)
    with atomic_open(path, "wb") as f:
        torch.save(state, f)
    return path


def load_checkpoint(path: str | Path, map_location: Any = "cpu", kind: Optional[str] = None) -> Dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; check it is ours and, if given, of ``kind``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise CheckpointError(f"{path}: not a loadable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a checkpoint written by this project (no 'format': '{FORMAT}' entry)")
    if kind is not None and state.get("kind") != kind:
        raise CheckpointError(f"{path}: is a '{state.get('kind')}' checkpoint, expected '{kind}'")
    return state


def strip_prefix(state_dict: Mapping[str, Any], prefix: str = "module.") -> Dict[str, Any]:
    """Drop a DataParallel-style prefix from every key that has it."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, Any], source: str,
                           ignore: Iterable[str] = ()) -> None:
    """``load_state_dict`` that lists every missing, unexpected or wrongly-shaped key in one error.

    ``ignore`` names keys of the file that are known extras (e.g. a classifier head) and dropped.
    """
    ignore = set(ignore)
    sd = {k: v for k, v in state_dict.items() if k not in ignore}
    own = unwrap(model).state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shape = sorted(k for k in set(own) & set(sd)
                   if hasattr(sd[k], "shape") and tuple(sd[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shape:
        lines = [f"{source}: state_dict does not match {type(unwrap(model)).__name__}"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        for k in shape:
            lines.append(f"  shape mismatch {k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}")
        raise CheckpointError("\n".join(lines))
    unwrap(model).load_state_dict(sd, strict=True)


_EPOCH_RE = re.compile(r"(\d+)")


def latest_checkpoint(folder: str | Path, pattern: str = "checkpoint*.pth") -> Optional[Path]:
    """The newest checkpoint in ``folder``: ``last.pth`` if present, else the highest number in the name."""
    folder = Path(folder)
    if (folder / "last.pth").is_file():
        return folder / "last.pth"
    found: List[Path] = [p for p in folder.glob(pattern) if p.is_file()]
    if not found:
        return None

    def number(p: Path) -> int:
        nums = _EPOCH_RE.findall(p.stem)
        return int(nums[-1]) if nums else -1
    return max(found, key=number)
