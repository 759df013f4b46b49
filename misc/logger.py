"""Console + file logging and run provenance (git sha, sorted args)."""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_REPO_ROOT = Path(__file__).resolve().parents[1]


def setup_logging(log_file: Optional[str | Path] = None, main_process: bool = True,
                  level: int = logging.INFO) -> logging.Logger:
    """Configure the root logger once: console always, ``log_file`` (appended) when given.

    Non-main distributed ranks only report warnings, so a multi-GPU run prints each line once.
    Returns the ``dsdg`` logger that the project's modules log through.
    """
    root = logging.getLogger()
    for h in list(root.handlers):  # re-entrant: tests and notebooks call this repeatedly
        root.removeHandler(h)
        h.close()
    root.setLevel(level if main_process else logging.WARNING)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter(_FORMAT, "%H:%M:%S"))
    root.addHandler(console)
    if log_file is not None and main_process:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file, mode="a", encoding="utf-8")
        fh.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(fh)
    # TensorFlow and matplotlib are chatty at INFO.
    for noisy in ("tensorflow", "matplotlib", "PIL", "absl", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return logging.getLogger("dsdg")


def code_version() -> Dict[str, object]:
    """Git commit of the code that is running, and whether the tree had uncommitted changes."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=_REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    try:
        sha = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        sha, dirty = "", False
    return {"sha": sha or "unknown", "dirty": dirty}


def log_run_header(logger: logging.Logger, args: argparse.Namespace) -> None:
    """First lines of every run: the code version and every resolved argument, sorted."""
    v = code_version()
    logger.info("code version %s%s", v["sha"], " (uncommitted changes)" if v["dirty"] else "")
    for k, val in sorted(vars(args).items()):
        logger.info("  %s = %s", k, val)
