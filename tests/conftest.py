"""Shared pytest fixtures: the repository root and the optional ../shared folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# ../shared exists only inside this workplace; tests that need it skip cleanly elsewhere.
SHARED = REPO_ROOT.parent / "shared"

# TensorFlow (MTCNN) and MediaPipe print pages of notes on import; keep test logs readable.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("DSDG_NO_PROGRESS", "1")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The workplace's ../shared folder, or a skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present (only available inside the development workplace)")
    return SHARED
