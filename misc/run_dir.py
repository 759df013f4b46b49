"""The run directory: what train_generator.py and DUM/train.py write in ``--output-dir``, and where the
programs that read a run (generated.py, DUM/test.py, DUM/predict.py, DUM/export_onnx.py, the ablation, the
shell scripts) find things in it. One layout for both trainers::

    <output-dir>/
      checkpoint.pth          the latest checkpoint (what --resume auto continues from)
      checkpoints/NNNN.pth    the kept checkpoints, NNNN = epochs done
      tensorboard/            TensorBoard events
      grids/                  image grids (PNG)
      args.json               the resolved arguments of the latest start
      train.log               the text log (every start appends)
      log.txt                 one JSON line per epoch

plus what one trainer alone writes (the generator's ``skipped_rows.txt``, DUM's ``eval/epoch_NNNN/``).

Run directories of older versions still resume and are still read: the generator kept
``checkpoints/checkpoint_epoch_NNNN.pth`` (no ``checkpoint.pth``), DUM kept ``checkpoint_NNNN.pth`` beside
``checkpoint.pth`` and wrote TensorBoard events to ``tb/``. Their checkpoints count as kept ones of their
epoch; new ones get the new names, and the old files are left where they are.
"""
from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Dict, Optional

LATEST = "checkpoint.pth"
KEPT = "checkpoints"
TENSORBOARD = "tensorboard"
GRIDS = "grids"
ARGS = "args.json"
LOG = "train.log"
EPOCH_LOG = "log.txt"

_KEPT_NAME = re.compile(r"(\d+)\.pth")
# (folder inside the run directory, file name) of the kept checkpoints of older versions
_LEGACY_KEPT = ((KEPT, re.compile(r"checkpoint_epoch_(\d+)\.pth")),   # train_generator.py
                (".", re.compile(r"checkpoint_(\d+)\.pth")))          # DUM/train.py
LEGACY_TENSORBOARD = "tb"   # DUM/train.py

log = logging.getLogger(__name__)


def latest_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / LATEST


def kept_path(run_dir: str | Path, epoch: int) -> Path:
    """Where the kept checkpoint of ``epoch`` (epochs done) goes: ``checkpoints/NNNN.pth``."""
    return Path(run_dir) / KEPT / f"{int(epoch):04d}.pth"


def kept_checkpoints(run_dir: str | Path) -> Dict[int, Path]:
    """{epochs done: file} of every kept checkpoint, in the layout of today and the older ones (today's
    name wins where both exist for one epoch)."""
    run_dir = Path(run_dir)
    found: Dict[int, Path] = {}
    for folder, pattern in _LEGACY_KEPT + ((KEPT, _KEPT_NAME),):  # today's last, so that it overwrites
        where = run_dir / folder
        if not where.is_dir():
            continue
        for p in where.iterdir():
            m = pattern.fullmatch(p.name)
            if m and p.is_file():
                found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def is_legacy(path: str | Path) -> bool:
    """Whether ``path`` is a kept checkpoint named as older versions named them."""
    return any(pattern.fullmatch(Path(path).name) for _, pattern in _LEGACY_KEPT)


def find_checkpoint(run_dir: str | Path) -> Optional[Path]:
    """The newest checkpoint of a run: ``checkpoint.pth``, else the kept one with the most epochs (an older
    generator run has only those); None when there is none."""
    latest = latest_path(run_dir)
    if latest.is_file():
        return latest
    kept = kept_checkpoints(run_dir)
    return kept[max(kept)] if kept else None


def epoch_checkpoint(run_dir: str | Path, epoch: int) -> Optional[Path]:
    """The kept checkpoint of ``epoch`` in either layout, or None."""
    return kept_checkpoints(run_dir).get(int(epoch))


def describe_missing(run_dir: str | Path) -> str:
    """What a run directory without a checkpoint lacks, for error messages."""
    return (f"{run_dir}: no checkpoint in it (looked for {LATEST}, {KEPT}/NNNN.pth and the older names "
            f"{KEPT}/checkpoint_epoch_NNNN.pth and checkpoint_NNNN.pth)")


def checkpoint_file(path: str | Path) -> Path:
    """A checkpoint file as given, or for a run directory its newest checkpoint (:func:`find_checkpoint`).

    Used as the argparse ``type`` of the readers' ``--checkpoint``, so ``--checkpoint runs/dum_p1`` works
    for both layouts; a directory without a checkpoint is an argument error that says what was looked for.
    """
    path = Path(path)
    if not path.is_dir():
        return path
    found = find_checkpoint(path)
    if found is None:
        raise argparse.ArgumentTypeError(describe_missing(path))
    return found


def kept_checkpoint_file(path: str | Path) -> Path:
    """As :func:`checkpoint_file`, but a run directory gives its newest *kept* checkpoint (else its
    ``checkpoint.pth``). For generated.py: the generator keeps every checkpoint it writes, so that is the same
    file as the latest, under a name that says its epoch, which generated.py's rerun check records."""
    path = Path(path)
    if not path.is_dir():
        return path
    kept = kept_checkpoints(path)
    return kept[max(kept)] if kept else checkpoint_file(path)


def tensorboard_dir(run_dir: str | Path) -> Path:
    """``<run_dir>/tensorboard``. An older DUM run's ``tb/`` is renamed to it first (when there is no
    ``tensorboard/`` yet), so a resumed run's curves continue in one place. Call on the main process only."""
    run_dir = Path(run_dir)
    new, old = run_dir / TENSORBOARD, run_dir / LEGACY_TENSORBOARD
    if old.is_dir() and not new.exists():
        old.rename(new)
        log.info("%s: older layout, renamed to %s", old, new)
    return new
