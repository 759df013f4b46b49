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


@pytest.fixture(scope="session")
def tiny_demo(repo_root, tmp_path_factory):
    """One tiny run of scripts/demo.sh (tests/e2e_demo.py), made once per session: (its folder, the process)."""
    from e2e_demo import run_demo

    demo_dir = tmp_path_factory.mktemp("demo")
    proc = run_demo(repo_root, demo_dir)
    assert proc.returncode == 0, f"demo.sh failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return demo_dir, proc


def pytest_collection_modifyitems(config, items):
    """The tests on the tiny demo first, then the other end-to-end ones, then the rest (a stable sort, so
    every file keeps its own order). On two workers with --dist loadfile (scripts/test.sh) the longest chain
    then starts at once instead of after everything else."""
    def rank(item) -> int:
        if "tiny_demo" in getattr(item, "fixturenames", ()):
            return 0
        return 1 if item.get_closest_marker("e2e") else 2

    items.sort(key=rank)
    skip_without_cuda(items)


def skip_without_cuda(items) -> None:
    """Tests marked ``gpu`` need a CUDA device: where torch sees none they are skipped, saying so."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marker gpu; run benchmarks/gpu_check.sh on a GPU machine)")
    for item in gpu:
        item.add_marker(skip)
