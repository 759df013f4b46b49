"""Tests for the shared helpers in misc/: atomic writes, checkpoints, seeding, device, CLI types."""
from __future__ import annotations

import argparse
import importlib
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cli_helpers import cli_help
from misc import checkpoint as ckpt
from misc import run_dir
from misc.cli import add_renamed_argument, bool_flag, shard_spec
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

    def test_resume_restores_and_refuses_changed_architecture(self, tmp_path, caplog):
        """resume() loads network, optimizer and scheduler from a run directory; a changed network-defining
        argument is refused naming the file and the flag; other changes are warned about."""
        model, opt, sched = _tiny_training_state()
        args = argparse.Namespace(width=4, lr=1e-3, seed=0, resume="auto")
        ckpt.save_run_checkpoint(tmp_path, keep=True, kind="dum", models={"model": model}, optimizer=opt,
                                 scheduler=sched, epoch=3, iteration=9, args=args)
        assert (tmp_path / "checkpoint.pth").read_bytes() == (tmp_path / "checkpoints" / "0003.pth").read_bytes()
        model2, opt2, sched2 = _tiny_training_state()
        with torch.no_grad():
            for p in model2.parameters():
                p.add_(1.0)
        now = argparse.Namespace(width=4, lr=5e-4, seed=0, resume="auto")
        with caplog.at_level("WARNING"):
            state = ckpt.resume("auto", tmp_path, kind="dum", models={"model": model2}, optimizer=opt2,
                                scheduler=sched2, args=now, architecture={"width": None})
        assert state["epoch"] == 3 and state["iteration"] == 9
        assert "changed arguments" in caplog.text and "'lr': (0.001, 0.0005)" in caplog.text
        for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
            assert torch.equal(a, b)
        assert sched2.last_epoch == sched.last_epoch
        wider = argparse.Namespace(width=8, lr=1e-3, seed=0, resume="auto")
        with pytest.raises(ckpt.CheckpointError, match=r"checkpoint.pth: was trained with --width 4, this run "
                                                       r"asks for --width 8"):
            ckpt.resume("auto", tmp_path, kind="dum", models={"model": model2}, args=wider,
                        architecture={"width": None})
        # before a flag existed, checkpoints are taken to have had its stated value
        with pytest.raises(ckpt.CheckpointError, match="--depth 2, this run asks for --depth 3"):
            ckpt.resume(tmp_path, tmp_path, kind="dum", models={"model": model2},
                        args=argparse.Namespace(depth=3, seed=0), architecture={"depth": 2})

    def test_resume_refuses_changed_shapes(self, tmp_path):
        """A parameter of another shape is refused, naming the file and the parameter."""
        ckpt.save_run_checkpoint(tmp_path, kind="dum", models={"model": nn.Linear(2, 3)}, epoch=1)
        with pytest.raises(ckpt.CheckpointError, match=r"(?s)checkpoint.pth \[model\].*shape mismatch weight"):
            ckpt.resume("auto", tmp_path, kind="dum", models={"model": nn.Linear(2, 4)})
        with pytest.raises(ckpt.CheckpointError, match="has no 'head' network"):
            ckpt.resume("auto", tmp_path, kind="dum", models={"head": nn.Linear(2, 3)})

    def test_resume_sources(self, tmp_path):
        """'auto' in an empty run directory is a fresh start; a missing file or a directory without a
        checkpoint is an error that says what was looked for."""
        assert ckpt.resume("auto", tmp_path / "new", kind="dum", models={}) is None
        with pytest.raises(ckpt.CheckpointError, match="missing.pth: checkpoint file not found"):
            ckpt.resume(tmp_path / "missing.pth", tmp_path, kind="dum", models={})
        with pytest.raises(ckpt.CheckpointError, match="no checkpoint in it.*checkpoint_epoch_NNNN"):
            ckpt.resume(tmp_path, tmp_path, kind="dum", models={})


class TestRunDir:
    def test_newest_checkpoint_in_both_layouts(self, tmp_path):
        """checkpoint.pth first; else the kept checkpoint with most epochs, today's names and the older ones
        (generator checkpoints/checkpoint_epoch_NNNN.pth, DUM checkpoint_NNNN.pth) alike."""
        assert run_dir.find_checkpoint(tmp_path) is None and run_dir.find_checkpoint(tmp_path / "none") is None
        (tmp_path / "checkpoints").mkdir()
        for e in (2, 10, 9):
            (tmp_path / "checkpoints" / f"checkpoint_epoch_{e:04d}.pth").write_bytes(b"")
        (tmp_path / "checkpoint_0011.pth").write_bytes(b"")
        (tmp_path / "checkpoints" / "0010.pth").write_bytes(b"")
        (tmp_path / "checkpoints" / "notes.pth").write_bytes(b"")
        assert sorted(run_dir.kept_checkpoints(tmp_path)) == [2, 9, 10, 11]
        assert run_dir.epoch_checkpoint(tmp_path, 10) == tmp_path / "checkpoints" / "0010.pth"  # today's name wins
        assert run_dir.epoch_checkpoint(tmp_path, 3) is None
        assert run_dir.find_checkpoint(tmp_path) == tmp_path / "checkpoint_0011.pth"
        assert run_dir.is_legacy(tmp_path / "checkpoint_0011.pth") and not run_dir.is_legacy("checkpoints/0010.pth")
        (tmp_path / "checkpoint.pth").write_bytes(b"")
        assert run_dir.find_checkpoint(tmp_path) == tmp_path / "checkpoint.pth"
        assert run_dir.checkpoint_file(tmp_path) == tmp_path / "checkpoint.pth"
        assert run_dir.kept_checkpoint_file(tmp_path) == tmp_path / "checkpoint_0011.pth"  # generated.py's
        assert run_dir.checkpoint_file(tmp_path / "x.pkl") == tmp_path / "x.pkl"
        with pytest.raises(argparse.ArgumentTypeError, match="no checkpoint in it"):
            run_dir.checkpoint_file(_empty_dir(tmp_path / "empty"))

    def test_old_tensorboard_folder_is_renamed(self, tmp_path):
        """An older DUM run's tb/ becomes tensorboard/ (its events kept); an existing tensorboard/ is left alone."""
        (tmp_path / "tb").mkdir()
        (tmp_path / "tb" / "events.out.tfevents.1").write_bytes(b"x")
        assert run_dir.tensorboard_dir(tmp_path) == tmp_path / "tensorboard"
        assert (tmp_path / "tensorboard" / "events.out.tfevents.1").read_bytes() == b"x"
        assert not (tmp_path / "tb").exists()
        (tmp_path / "tb").mkdir()
        assert run_dir.tensorboard_dir(tmp_path) == tmp_path / "tensorboard" and (tmp_path / "tb").is_dir()


def _empty_dir(path):
    path.mkdir()
    return path


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


def _renamed_parser():
    """A parser built the way the entry scripts build theirs: flags in a group, copied in through parents=."""
    inner = argparse.ArgumentParser(add_help=False)
    g = inner.add_argument_group("data")
    add_renamed_argument(g, "--prep-root", "--root", "--out", type=Path, required=True, help="the prepared root")
    add_renamed_argument(g, "--crop-root", "--data-root", type=Path, default=None, help="the crop root")
    return argparse.ArgumentParser(prog="tool", parents=[inner])


def test_renamed_argument(capsys):
    """Old spellings parse into the new name's dest, --help lists only the new names, a required renamed flag
    left out is an argparse error naming the new flag, a bad value one naming the spelling typed."""
    parser = _renamed_parser()
    for spelling in ("--prep-root", "--root", "--out"):
        assert vars(parser.parse_args([spelling, "p"])) == {"prep_root": Path("p"), "crop_root": None}
    assert parser.parse_args(["--root", "p", "--data-root", "c"]).crop_root == Path("c")
    shown = parser.format_help()
    assert "--prep-root PREP_ROOT" in shown and "--crop-root CROP_ROOT" in shown
    assert "the prepared root (required)" in shown  # the usage line brackets it, so its help says so
    assert not re.search(r"(?<![\w-])--(root|out|data-root)(?![\w-])", shown), shown
    for argv in ([], ["--crop-root", "c"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        assert "error: argument --prep-root: is required" in capsys.readouterr().err
    bad = argparse.ArgumentParser(prog="tool")
    add_renamed_argument(bad, "--workers", "--jobs", type=int, default=1, help="w")
    with pytest.raises(SystemExit):
        bad.parse_args(["--jobs", "many"])
    assert "argument --jobs: invalid int value: 'many'" in capsys.readouterr().err  # the spelling typed


# Every root that had another name before: (module, new flag, old flags, the other required arguments).
RENAMED_ROOTS = [
    ("data.extract_frame", "--prep-root", ("--out",), ["--input", "i"]),
    ("data.detect_faces", "--prep-root", ("--root",), []),
    ("data.depth", "--prep-root", ("--root",), []),
    ("data.make_train_list", "--prep-root", ("--root",), []),
    ("data.import_released_boxes", "--prep-root", ("--root",), ["--adapted-root", "a"]),
    ("generated", "--crop-root", ("--out-root",), ["--checkpoint", "c"]),
    ("DUM.train", "--crop-root", ("--data-root",), []),
    ("DUM.test", "--crop-root", ("--data-root",), ["--checkpoint", "c"]),
]


@pytest.mark.parametrize("module, new, old, rest", RENAMED_ROOTS, ids=[r[0] for r in RENAMED_ROOTS])
def test_old_root_flags_still_parse(module, new, old, rest):
    """Existing commands keep working: each old spelling gives the same arguments as the new name, and the
    script's --help shows only the new name."""
    parser = importlib.import_module(module).get_args_parser()
    want = vars(parser.parse_args([*rest, new, "ROOT"]))
    assert want[new[2:].replace("-", "_")] == Path("ROOT")
    for spelling in old:
        assert vars(parser.parse_args([*rest, spelling, "ROOT"])) == want
    shown = cli_help(["-m", module])
    assert shown.returncode == 0, shown.stderr
    assert f"{new} {new[2:].replace('-', '_').upper()}" in shown.stdout
    for spelling in old:
        assert not re.search(rf"(?<![\w-]){spelling}(?![\w-])", shown.stdout), (spelling, shown.stdout)


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
        from data import detect_faces, depth, extract_frame
        from DUM import test as dum_test, train as dum_train
        from DUM.make_dataset import crop_dataset
        from misc.workers import workers_type

        assert dum_test.get_args_parser().parse_args(["--checkpoint", "c", "--crop-root", "r"]).workers is None
        assert dum_train.get_args_parser().parse_args(["--crop-root", "r"]).workers is None
        assert train_generator.get_args_parser().parse_args(["--prep-root", "p"]).workers is None
        for stage, argv in ((extract_frame, ["--input", "i", "--prep-root", "o"]), (detect_faces, ["--prep-root", "r"]),
                            (depth, ["--prep-root", "r"]), (crop_dataset, ["--prep-root", "p", "--crop-root", "c"])):
            args = stage.get_args_parser().parse_args(argv + ["--workers", "auto"])
            assert args.workers is None and stage.get_args_parser().parse_args(argv).workers == 1
        with pytest.raises(argparse.ArgumentTypeError):
            workers_type("many")
