"""``--help`` of an entry point, the way its tests check both ways of running it."""
from __future__ import annotations

import io
import runpy
import subprocess
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]


def cli_help(how: Sequence[str]) -> subprocess.CompletedProcess:
    """``python FILE --help`` runs in a child process from the repository root, because what it checks is the
    script's own import setup (a file run puts its folder, not the root, first on ``sys.path``).
    ``python -m MODULE --help`` runs the module's ``__main__`` code in this process through runpy, as the
    interpreter's -m does, which saves a second interpreter and its seconds-long torch import."""
    how = [str(h) for h in how]
    if how[0] != "-m":
        return subprocess.run([sys.executable, *how, "--help"], cwd=REPO, capture_output=True, text=True,
                              timeout=120)
    out, err, argv, code = io.StringIO(), io.StringIO(), sys.argv, 0
    sys.argv = [how[1], "--help"]
    try:
        with redirect_stdout(out), redirect_stderr(err), warnings.catch_warnings():
            # the module was imported by the tests already; running it again as __main__ is what -m does
            warnings.filterwarnings("ignore", "'.*' found in sys.modules", RuntimeWarning)
            runpy.run_module(how[1], run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess(["-m", how[1], "--help"], code, out.getvalue(), err.getvalue())
