"""Tests for DUM/engine.py training and DUM/train.py (learning, checkpoints, exact resume, CLI)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from data.protocol_lists import read_protocol
from DUM import engine, train
from DUM.weights import load_model
from DUM.datasets import DUMTrainDataset, train_list_path
from DUM.models import CDCN_U
from misc.checkpoint import load_checkpoint
from dum_helpers import make_crop_root
from cli_helpers import cli_help

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def crop_root(tmp_path_factory):
    return make_crop_root(tmp_path_factory.mktemp("crop"), image_size=32, map_size=4, frames=2, generated=2)


def _args(root, out, *extra):
    return train.get_args_parser().parse_args(
        ["--crop-root", str(root), "--output-dir", str(out), "--image-size", "32", "--map-size", "4",
         "--batch-size", "4", "--iters-per-epoch", "2", "--workers", "0", "--device", "cpu", "--seed", "3",
         "--lr", "1e-3", *extra])


def test_training_steps_lower_the_loss(crop_root):
    """A few Adam steps on fixed synthetic batches reduce the DUM objective."""
    torch.manual_seed(0)
    rows = read_protocol(train_list_path(crop_root, "1"))
    ds = DUMTrainDataset(crop_root, rows, image_size=32, map_size=4)
    batches = [default_collate([ds[(i, i)] for i in range(0, len(ds), 2)])]  # live, attack and generated rows
    model = CDCN_U(map_size=4).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = engine.train_one_epoch(model, batches, opt, torch.device("cpu"), 0)
    for epoch in range(1, 6):
        last = engine.train_one_epoch(model, batches, opt, torch.device("cpu"), epoch)
    assert last["loss"] < 0.5 * first["loss"]
    assert last["real_abs"] < first["real_abs"] and last["gen_abs"] < first["gen_abs"]


def test_resume_equals_uninterrupted_run(crop_root, tmp_path):
    """Stopping after epoch 2 and resuming gives the uninterrupted run's weights, in today's run directory
    and in one of the older layout (checkpoint_NNNN.pth beside the run's files, TensorBoard in tb/)."""
    quick = ["--eval-start", "3", "--eval-test", "false", "--eval-plots", "false"]
    full = train.main(_args(crop_root, tmp_path / "full", "--epochs", "3", *quick))
    train.main(_args(crop_root, tmp_path / "part", "--epochs", "2", *quick))
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "part", old)
    (old / "checkpoints" / "0002.pth").rename(old / "checkpoint_0002.pth")  # the older DUM names, and only
    (old / "checkpoints").rmdir()                                            # the kept one: found by its number
    (old / "checkpoint.pth").unlink()
    (old / "tensorboard").rename(old / "tb")
    resumed = train.main(_args(crop_root, tmp_path / "part", "--epochs", "3", "--resume", "auto", *quick))
    resumed_old = train.main(_args(crop_root, old, "--epochs", "3", "--resume", "auto", *quick))
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pth", kind="dum")
    for b in (load_checkpoint(run / "checkpoint.pth", kind="dum") for run in (tmp_path / "part", old)):
        assert a["epoch"] == b["epoch"] == 3 and a["args"]["model"] == "cdcn_u"  # the default network, stored
        for k, v in a["models"]["model"].items():
            assert torch.equal(v, b["models"]["model"][k]), k
        assert a["optimizer"]["state"][0]["exp_avg"].equal(b["optimizer"]["state"][0]["exp_avg"])
    assert full["train_loss"] == resumed["train_loss"] == resumed_old["train_loss"]
    assert "resumed from " + str(old / "checkpoint_0002.pth") in (old / "train.log").read_text()
    assert len(list((old / "tensorboard").iterdir())) == 2 and not (old / "tb").exists()  # one folder of curves
    assert (old / "checkpoints" / "0003.pth").is_file()  # the last epoch, evaluated, kept under today's name


def test_outputs_of_an_evaluated_run(crop_root, tmp_path):
    """Eval writes score files, metrics and grids; the checkpoint stores the Dev threshold."""
    out = tmp_path / "run"
    record = train.main(_args(crop_root, out, "--epochs", "2", "--eval-start", "1", "--eval-every", "1"))
    assert {"dev_threshold", "test_acer", "train_real_kl"} <= set(record)
    ckpt = load_checkpoint(out / "checkpoints" / "0002.pth", kind="dum")
    assert ckpt["extra"]["score"] == "mean" and ckpt["extra"]["threshold"] == record["dev_threshold"]
    lines = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    for name in ("dev_scores.txt", "test_scores.txt", "metrics.json", "roc_det.png"):
        assert (out / "eval" / "epoch_0002" / name).is_file()
    assert (out / "grids" / "epoch_0001.png").is_file() and any((out / "tensorboard").iterdir())
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["0001.pth", "0002.pth"]  # each evaluation
    assert json.loads((out / "args.json").read_text())["map_size"] == 4
    model, meta = load_model(out / "checkpoint.pth", return_meta=True)
    assert model.map_size == 4 and meta["extra"]["threshold"] == record["dev_threshold"]


def test_real_only_list(crop_root, tmp_path):
    """With --train-list Train.txt (no generated rows) every batch is real."""
    out = tmp_path / "real"
    train.main(_args(crop_root, out, "--epochs", "1", "--eval-start", "5",
                     "--train-list", str(crop_root / "protocols" / "Protocol_1" / "Train.txt")))
    rec = json.loads((out / "log.txt").read_text().splitlines()[-1])
    assert "train_real_abs" in rec and "train_gen_abs" not in rec


@pytest.mark.parametrize("how", [["DUM/train.py"], ["-m", "DUM.train"]])
def test_help_both_ways(how):
    """The script prints its help as a file and as a module."""
    r = cli_help(how)
    assert r.returncode == 0 and "--generated-weight" in r.stdout and "paper" in r.stdout


def test_colour_jitter_flag_keeps_colours_when_off():
    """--colour-jitter false leaves the pixels alone; the paper's default shifts them."""
    rng_image = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (16, 16, 3), generator=rng_image, dtype=torch.uint8).numpy()
    depth = torch.zeros(4, 4).numpy()
    parser = train.get_args_parser()
    off = train.training_augment(parser.parse_args(["--crop-root", "x", "--colour-jitter", "false"]))
    on = train.training_augment(parser.parse_args(["--crop-root", "x"]))
    off.erase_p = off.flip_p = off.cutout_p = 0.0
    on.erase_p = on.flip_p = on.cutout_p = 0.0
    kept, _ = off(image.copy(), depth, np.random.default_rng(0))
    shifted, _ = on(image.copy(), depth, np.random.default_rng(0))
    assert np.array_equal(kept, image)
    assert not np.array_equal(shifted, image)
