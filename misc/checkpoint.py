"""Checkpoints: plain ``state_dict``s plus metadata, saved atomically, loadable with ``weights_only=True``.

A checkpoint written by this project is one dict::

    {"format": "dsdg", "version": 1, "kind": "generator" | "dum" | ...,
     "models": {name: state_dict}, "optimizer": ..., "scheduler": ..., "scaler": ...,
     "epoch": <next epoch to run>, "iteration": <optimizer steps done>,
     "args": {flag: value}, "rng": <RNG states>, "code_version": {"sha", "dirty"}, "extra": {...}}

Only tensors, numbers, strings, lists and dicts go in, so ``torch.load(weights_only=True)`` (the
PyTorch >= 2.6 default) reads it and no class or module path is pickled. Model state_dicts are
taken from the unwrapped module: keys never carry DataParallel/DDP's ``module.`` prefix.

Both trainers write them into the run directory of misc/run_dir.py (:func:`save_run_checkpoint`) and
continue a run through :func:`resume`, with one policy for changed arguments and shapes.
"""
from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional

import torch
from torch import nn

from misc import run_dir as run_dir_layout
from misc.distributed import restore_rng_state, unwrap
from misc.io import atomic_open
from misc.logger import code_version

FORMAT = "dsdg"
VERSION = 1

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A file that is not a usable checkpoint for what was asked (missing file, wrong kind, key mismatch)."""


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


# Arguments whose change on resume is expected, so not reported.
RESUME_QUIET = ("resume", "epochs", "output_dir", "debug_param_digest")


def save_run_checkpoint(run_dir: str | Path, *, keep: bool = False, **state: Any) -> Path:
    """Write a run's latest checkpoint, ``<run_dir>/checkpoint.pth`` (:func:`save_checkpoint`'s keywords;
    ``epoch`` is the number of epochs done); with ``keep`` also ``checkpoints/NNNN.pth`` (misc/run_dir.py).
    Returns the latest path."""
    latest = save_checkpoint(run_dir_layout.latest_path(run_dir), **state)
    if keep:
        # A copy, not a second serialisation: the same bytes, and no second pass over ~0.5 GB of tensors.
        with open(latest, "rb") as src, atomic_open(run_dir_layout.kept_path(run_dir, state.get("epoch", 0)),
                                                    "wb") as dst:
            shutil.copyfileobj(src, dst, 16 << 20)
    return latest


def resume_path(source: str | Path, run_dir: str | Path) -> Optional[Path]:
    """The file ``--resume`` names: 'auto' = the newest checkpoint of ``run_dir`` (None when it has none: a
    fresh start), a run directory = its newest checkpoint, else the file itself."""
    if str(source) == "auto":
        found = run_dir_layout.find_checkpoint(run_dir)
        if found is None:
            log.info("--resume auto: no checkpoint in %s yet, starting from scratch", run_dir)
        return found
    path = Path(source)
    if path.is_dir():
        found = run_dir_layout.find_checkpoint(path)
        if found is None:
            raise CheckpointError(f"--resume {run_dir_layout.describe_missing(path)}")
        return found
    if not path.is_file():
        raise CheckpointError(f"--resume {path}: checkpoint file not found")
    return path


def check_architecture(path: Path, saved: Mapping[str, Any], args: Any, architecture: Mapping[str, Any]) -> None:
    """Refuse a checkpoint whose network-defining arguments differ from this run's.

    ``architecture`` maps each such argument to the value that checkpoints written before it existed had
    (None: such checkpoints are not checked for it).
    """
    for key, before in architecture.items():
        was = saved.get(key, before)
        now = getattr(args, key)
        if was is not None and plain(was) != plain(now):
            flag = "--" + key.replace("_", "-")
            raise CheckpointError(f"{path}: was trained with {flag} {was}, this run asks for {flag} {now}; resume "
                                  f"with {flag} {was}, or start a new run in another --output-dir")


def resume(source: str | Path, run_dir: str | Path, *, kind: str, models: Mapping[str, nn.Module],
           optimizer: Optional[torch.optim.Optimizer] = None, scheduler: Any = None, scaler: Any = None,
           args: Any = None, architecture: Mapping[str, Any] = {}, info: Any = None,
           map_location: Any = "cpu") -> Optional[Dict[str, Any]]:
    """Continue a run from ``--resume`` (:func:`resume_path`), for both trainers; every rank calls it.

    Loads the networks, optimizer, scheduler, AMP scaler and (with the run's ``info``, a
    ``misc.distributed.DistInfo``) the random state, and returns the checkpoint (``epoch``: epochs done,
    ``iteration``, ``extra``, ...), or None for a fresh start. One policy: a change of a network-defining
    argument (``architecture``, :func:`check_architecture`) or of any parameter's name or shape
    (:func:`load_state_dict_strict`) is refused with a message naming the file and the parameter, since a
    partial resume would silently lose the training; any other changed argument is logged as a warning.
    Checkpoints of the older run-directory layouts (misc/run_dir.py) resume the same way.
    """

    path = resume_path(source, run_dir)
    if path is None:
        return None
    state = load_checkpoint(path, map_location=map_location, kind=kind)
    saved = state.get("args", {})
    check_architecture(path, saved, args, architecture)
    for name, model in models.items():
        if name not in state["models"]:
            raise CheckpointError(f"{path}: has no '{name}' network (it holds {', '.join(sorted(state['models']))})")
        load_state_dict_strict(model, state["models"][name], f"{path} [{name}]")
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):  # a disabled scaler saved an empty dict, which loads nowhere
        scaler.load_state_dict(state["scaler"])
    if "rng" in state and info is not None:
        how = restore_rng_state(state["rng"], info, args.seed, int(state["epoch"]))
        log.info("random state: saved by %d process(es), resumed on %d: %s",
                 len(state["rng"].get("ranks", [None])), info.world_size, how)
    if args is not None:
        changed = {k: (v, plain(getattr(args, k))) for k, v in saved.items()
                   if k not in RESUME_QUIET and hasattr(args, k) and v != plain(getattr(args, k))}
        if changed:
            log.warning("resuming with changed arguments (checkpoint -> now): %s", changed)
    if run_dir_layout.is_legacy(path):
        log.info("%s is named as older versions named checkpoints; this run writes %s and %s/NNNN.pth and "
                 "leaves the old files where they are", path, run_dir_layout.LATEST, run_dir_layout.KEPT)
    log.info("resumed from %s: %d epochs done, %d iterations", path, state["epoch"], state.get("iteration", 0))
    return state
