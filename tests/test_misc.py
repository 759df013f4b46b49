"""Tests for the shared helpers in misc/: atomic writes, checkpoints, seeding, device, CLI types."""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from misc import checkpoint as ckpt
from misc.cli import bool_flag, shard_spec
from misc.device import resolve_device
from misc.io import TMP_MARK, atomic_open, atomic_write_json, atomic_write_text, remove_stale_temporaries
from misc.seed import get_rng_state, seed_everything, set_rng_state


class TestAtomicWrite:
    def test_exception_mid_write_keeps_old_content(self, tmp_path):
        """An error inside the write leaves the previous file intact and no temporary behind."""
        target = tmp_path / "list.txt"
        atomic_write_text(target, "old\n")
        with pytest.raises(RuntimeError):
            with atomic_open(target, "w") as f:
                f.write("half of the new con")
                raise RuntimeError("simulated crash")
        assert target.read_text() == "old\n"
        assert list(tmp_path.iterdir()) == [target]

    def test_killed_process_never_leaves_partial_file(self, tmp_path, repo_root):
        """SIGKILL in the middle of a write: the target does not exist, only a marked temporary does."""
        target = tmp_path / "scores.txt"
        code = textwrap.dedent(f"""
            import os, signal, sys
            sys.path.insert(0, {str(repo_root)!r})
            from misc.io import atomic_open
            with atomic_open({str(target)!r}, "w") as f:
                f.write("x" * 100000)
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        """)
        proc = subprocess.run([sys.executable, "-c", code])
        assert proc.returncode == -signal.SIGKILL
        assert not target.exists()
        leftovers = [p for p in tmp_path.iterdir() if TMP_MARK in p.name]
        assert len(leftovers) == 1
        assert remove_stale_temporaries(tmp_path) == 1
        assert list(tmp_path.iterdir()) == []

    def test_json_handles_numpy(self, tmp_path):
        """Metrics dicts with numpy scalars serialise."""
        atomic_write_json(tmp_path / "m.json", {"acer": np.float32(0.25), "n": np.int64(3)})
        assert '"acer": 0.25' in (tmp_path / "m.json").read_text()

    def test_read_mode_rejected(self, tmp_path):
        with pytest.raises(ValueError):
            with atomic_open(tmp_path / "x", "r"):
                pass


def _tiny_training_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(2, 3, 8, 8))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(3):
        loss = model(torch.randn(2, 3, 8, 8)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model, opt, sched


class TestCheckpoint:
    def test_round_trip_weights_only(self, tmp_path):
        """A checkpoint loads with torch.load(weights_only=True) and restores model, optimizer, scheduler, RNG."""
        model, opt, sched = _tiny_training_state()
        args = argparse.Namespace(lr=1e-3, out=tmp_path, sizes=(64, 32), flag=True)
        seed_everything(3)
        rng = get_rng_state()
        expected_draws = (random.random(), np.random.rand(), torch.rand(1).item())
        path = ckpt.save_checkpoint(tmp_path / "c.pth", kind="dum", models={"model": nn.DataParallel(model)},
                                    optimizer=opt, scheduler=sched, epoch=7, iteration=21, args=args, rng=rng,
                                    extra={"threshold": 0.5})
        raw = torch.load(path, weights_only=True)  # the PyTorch >= 2.6 default must work
        assert raw["epoch"] == 7 and raw["iteration"] == 21 and raw["kind"] == "dum"
        assert raw["args"]["out"] == str(tmp_path) and raw["args"]["sizes"] == [64, 32]
        assert not any(k.startswith("module.") for k in raw["models"]["model"])
        assert raw["extra"]["threshold"] == 0.5 and "sha" in raw["code_version"]

        state = ckpt.load_checkpoint(path, kind="dum")
        model2, opt2, sched2 = _tiny_training_state()
        with torch.no_grad():
            for p in model2.parameters():
                p.add_(1.0)
        ckpt.load_state_dict_strict(model2, state["models"]["model"], str(path))
        opt2.load_state_dict(state["optimizer"])
        sched2.load_state_dict(state["scheduler"])
        for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
            assert torch.equal(a, b)
        assert sched2.last_epoch == sched.last_epoch
        assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
        set_rng_state(state["rng"])
        assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected_draws

    def test_wrong_kind_and_foreign_file(self, tmp_path):
        """Loading names the file and what is wrong with it."""
        model, *_ = _tiny_training_state()
        path = ckpt.save_checkpoint(tmp_path / "g.pth", kind="generator", models={"netG": model})
        with pytest.raises(ckpt.CheckpointError, match="expected 'dum'"):
            ckpt.load_checkpoint(path, kind="dum")
        torch.save(model.state_dict(), tmp_path / "plain.pth")
        with pytest.raises(ckpt.CheckpointError, match="not a checkpoint written by this project"):
            ckpt.load_checkpoint(tmp_path / "plain.pth")
        (tmp_path / "junk.pth").write_bytes(b"not a zip")
        with pytest.raises(ckpt.CheckpointError, match="junk.pth"):
            ckpt.load_checkpoint(tmp_path / "junk.pth")
        with pytest.raises(ckpt.CheckpointError, match="not found"):
            ckpt.load_checkpoint(tmp_path / "missing.pth")

    def test_strict_load_lists_keys(self):
        """Missing, unexpected and mis-shaped keys are all named in one error."""
        model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
        sd = ckpt.strip_prefix({"module." + k: v for k, v in model.state_dict().items()})
        sd.pop("1.bias")
        sd["2.weight"] = torch.zeros(1)
        sd["0.weight"] = torch.zeros(5, 5)
        with pytest.raises(ckpt.CheckpointError) as e:
            ckpt.load_state_dict_strict(model, sd, "file.pkl")
        msg = str(e.value)
        assert "file.pkl" in msg and "1.bias" in msg and "2.weight" in msg and "0.weight" in msg

    def test_latest_checkpoint(self, tmp_path):
        for e in (2, 10, 9):
            (tmp_path / f"checkpoint_{e:04d}.pth").write_bytes(b"")
        assert ckpt.latest_checkpoint(tmp_path).name == "checkpoint_0010.pth"
        (tmp_path / "last.pth").write_bytes(b"")
        assert ckpt.latest_checkpoint(tmp_path).name == "last.pth"
        assert ckpt.latest_checkpoint(tmp_path / "none") is None


def test_seed_everything_is_reproducible():
    """Same seed, same draws from python, numpy and torch."""
    seed_everything(123)
    a = (random.random(), np.random.rand(), torch.rand(2))
    seed_everything(123)
    b = (random.random(), np.random.rand(), torch.rand(2))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_resolve_device():
    """auto falls back to CPU here; nonsense is rejected; CUDA without a GPU explains itself."""
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            resolve_device("cuda:0")


def test_cli_types():
    assert bool_flag("True") is True and bool_flag("0") is False
    with pytest.raises(argparse.ArgumentTypeError):
        bool_flag("maybe")
    assert shard_spec("2/8") == (2, 8)
    for bad in ("0/4", "5/4", "x", "1/2/3"):
        with pytest.raises(argparse.ArgumentTypeError):
            shard_spec(bad)


def test_atomic_files_get_normal_permissions(tmp_path):
    """Finished files are as readable as open() would make them (mkstemp alone gives 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    atomic_write_text(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask


class TestWorkers:
    """Default worker counts never exceed the usable cores (misc/workers.py), in every entry point."""

    @pytest.fixture
    def two_cores(self, monkeypatch):
        from misc import workers
        monkeypatch.setattr(workers.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        return workers

    def test_defaults_are_capped_and_said(self, two_cores, caplog):
        import logging
        log = logging.getLogger("dsdg.test")
        with caplog.at_level(logging.INFO, logger="dsdg.test"):
            assert two_cores.resolve_workers(None, 4, "data loading workers", log) == 2
        assert "data loading workers: 2 (the default 4, capped at the 2 usable CPU cores)" in caplog.text
        assert two_cores.resolve_workers(None, 1, "w") == 1
        assert two_cores.resolve_workers(None, None, "w") == 2            # 'auto' of a process pool
        with caplog.at_level(logging.INFO, logger="dsdg.test"):
            assert two_cores.resolve_workers(8, 4, "w", log) == 8         # asked for: kept, with a warning
        assert "more than the 2 usable CPU cores" in caplog.text
        assert two_cores.resolve_workers(8, None, "w", cap_explicit=True) == 2
        assert two_cores.resolve_workers(0, 4, "w") == 0

    def test_torchrun_processes_share_the_cores(self, two_cores, monkeypatch):
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
        assert two_cores.resolve_workers(None, 8, "w") == 0  # 4 processes on 2 cores: load in the main process
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        assert two_cores.resolve_workers(None, 8, "w") == 1

    def test_every_entry_point_defaults_to_auto(self):
        import train_generator
        from data import bbox, depth, extract_frame
        from DUM import test as dum_test, train as dum_train
        from DUM.make_dataset import crop_dataset
        from misc.workers import workers_type

        assert dum_test.get_args_parser().parse_args(["--checkpoint", "c", "--data-root", "r"]).workers is None
        assert dum_train.get_args_parser().parse_args(["--data-root", "r"]).workers is None
        assert train_generator.get_args_parser().parse_args(["--prep-root", "p"]).workers is None
        for stage, argv in ((extract_frame, ["--input", "i", "--out", "o"]), (bbox, ["--root", "r"]),
                            (depth, ["--root", "r"]), (crop_dataset, ["--prep-root", "p", "--crop-root", "c"])):
            args = stage.get_args_parser().parse_args(argv + ["--workers", "auto"])
            assert args.workers is None and stage.get_args_parser().parse_args(argv).workers == 1
        with pytest.raises(argparse.ArgumentTypeError):
            workers_type("many")
