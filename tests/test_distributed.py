"""Tests for distributed training (misc/distributed.py, the DUM and generator trainers under torchrun):
batch sharding, 2-process CPU (gloo) runs that keep both ranks identical and write one set of outputs,
resuming their checkpoints in one process (N -> M) and in two (N -> N, exact), and a failing rank."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from data.generation_dataset import GenerationDataset
from dum_helpers import make_crop_root
from DUM import scoring
from DUM.weights import load_model
from DUM.datasets import RealGeneratedBatchSampler, VideoFramesDataset
from data.protocol_lists import read_protocol
from generator_helpers import make_prep_root
from misc.checkpoint import load_checkpoint, load_state_dict_strict
from misc.distributed import DistInfo, param_digest
from networks.generator import DualVAE
import train_generator

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 300  # a hung collective must fail the test, not the CI job


def run(cmd, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "DSDG_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT, **kw)


def torchrun(*args) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *map(str, args)])


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout + result.stderr


def digests(folder: Path) -> dict:
    return {p.name: p.read_text().strip() for p in sorted(folder.iterdir())}


# ----------------------------------------------------------------------------------------------
# Sharding (no processes)
# ----------------------------------------------------------------------------------------------

class TestSharding:
    def test_dum_sampler_ranks_split_each_global_batch(self):
        """2 ranks: each real row at most once per epoch, and each step's shards make the single-process batch."""
        gen = np.array([False] * 24 + [True] * 6)
        single = RealGeneratedBatchSampler(gen, 8, 0.75, seed=4)
        shards = [RealGeneratedBatchSampler(gen, 8, 0.75, seed=4, rank=r, world_size=2) for r in range(2)]
        for s in [single, *shards]:
            s.set_epoch(2)
        assert len(shards[0]) == len(shards[1]) == len(single) == 4
        steps = list(zip(single, *shards))
        for whole, a, b in steps:
            assert len(a) == len(b) == 4 and [gen[i] for i, _ in a] == [False] * 3 + [True]
            assert sorted(a + b) == sorted(whole)  # same rows *and* per-sample seeds
        real = [i for _, a, b in steps for i, _ in a + b if not gen[i]]
        assert len(real) == len(set(real)) and sorted(real) == list(range(24))

    def test_dum_sampler_uneven_split_is_refused(self):
        """A global batch whose real or generated part does not divide by the world size names a batch that does."""
        gen = np.array([False] * 12 + [True] * 4)
        with pytest.raises(ValueError, match="nearest batch size that does is 6"):
            RealGeneratedBatchSampler(gen, 4, 0.75, world_size=2)
        with pytest.raises(ValueError, match="is 6"):
            RealGeneratedBatchSampler(np.zeros(12, bool), 5, world_size=3)

    def test_generator_ranks_split_each_global_batch(self, tmp_path):
        """The generator's per-rank loaders (global --batch-size 4 over 2 ranks) make the single-process batches."""
        make_prep_root(tmp_path)
        ds = GenerationDataset(tmp_path / "train_list" / "train_list_oulu_p1.txt", tmp_path / "train_images",
                               tmp_path / "train_bbox", image_size=8, show_progress=False)
        args = train_generator.get_args_parser().parse_args(["--batch-size", "4", "--workers", "0", "--seed", "2"])

        def batches(rank, world):
            sampler, loader = train_generator.build_loader(ds, args, DistInfo(rank=rank, world_size=world))
            sampler.set_epoch(1)
            return [b["index"].tolist() for b in loader]

        single, a, b = batches(0, 1), batches(0, 2), batches(1, 2)
        assert len(single) == len(a) == len(b) == 4 and all(len(x) == 2 for x in a + b)
        assert [sorted(x + y) for x, y in zip(a, b)] == [sorted(s) for s in single]
        args.batch_size = 5
        with pytest.raises(SystemExit, match="must divide evenly over 2 processes"):
            train_generator.build_loader(ds, args, DistInfo(rank=0, world_size=2))


# ----------------------------------------------------------------------------------------------
# misc.distributed under torchrun: global-batch gradients, and a failing rank
# ----------------------------------------------------------------------------------------------

WORKER = textwrap.dedent('''
    import sys, time
    import torch
    from misc.distributed import all_reduce_tensor_mean, finish_on_exit, gather_batch, init_distributed
    from networks.losses import identity_alignment_loss, orthogonality_loss

    def loss(z):  # the generator's two batch-level terms
        return identity_alignment_loss(z[:, :3], z[:, 3:6]) + orthogonality_loss(z[:, :3], z[:, 6:])

    info = init_distributed("cpu")
    with finish_on_exit(info):
        torch.manual_seed(0)
        layer, x = torch.nn.Linear(5, 9), torch.randn(8, 5)
        loss(layer(x)).backward()
        expected = layer.weight.grad.clone()
        layer.weight.grad = None
        mine = x[4 * info.rank: 4 * info.rank + 4]
        gathered = gather_batch(layer(mine))
        loss(gathered).backward()
        grad = all_reduce_tensor_mean(layer.weight.grad)  # what DDP does with the ranks' gradients
        assert torch.allclose(gathered, layer(x)), "gathered batch is not the global batch in rank order"
        assert torch.allclose(grad, expected, atol=1e-6), (grad - expected).abs().max()
        print(f"rank {info.rank}: global-batch gradient ok", flush=True)
        if info.rank == 1:
            raise RuntimeError("deliberate failure on rank 1")
        time.sleep(1)
        torch.distributed.all_reduce(torch.ones(1))  # rank 0 waits for a rank that is gone
        print("rank 0 passed the collective", flush=True)
''')


def test_global_batch_gradient_and_failing_rank(tmp_path):
    """gather_batch gives DDP the single-process gradient of batch-level terms; when one rank raises, the run
    ends promptly with a non-zero exit code and that rank's error, instead of leaving rank 0 waiting."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    t0 = time.monotonic()
    r = torchrun(script)
    out = r.stdout + r.stderr
    assert "rank 0: global-batch gradient ok" in out and "rank 1: global-batch gradient ok" in out, out[-3000:]
    assert r.returncode != 0 and "[rank 1] failed" in out and "deliberate failure on rank 1" in out
    assert "rank 0 passed the collective" not in out
    assert time.monotonic() - t0 < 120


# ----------------------------------------------------------------------------------------------
# The trainers under torchrun
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def crop_root(tmp_path_factory):
    return make_crop_root(tmp_path_factory.mktemp("crop"), image_size=32, map_size=4, frames=2, generated=2)


def dum_args(root, out, *extra):
    # Global batch 8 = 6 real + 2 generated: 3 + 1 per rank, 2 batches per epoch (12 real rows).
    return ["DUM/train.py", "--crop-root", root, "--output-dir", out, "--image-size", "32", "--map-size", "4",
            "--batch-size", "8", "--workers", "0", "--device", "cpu", "--seed", "3", "--lr", "1e-3",
            "--eval-start", "1", "--eval-every", "1", "--eval-plots", "false", *extra]


@pytest.fixture(scope="module")
def dum_run(crop_root, tmp_path_factory):
    """2 processes, 2 epochs, evaluated after each; every rank's parameter digest in <tmp>/digests."""
    tmp = tmp_path_factory.mktemp("dum2")
    log = ok(torchrun(*dum_args(crop_root, tmp / "run", "--epochs", "2", "--debug-param-digest", tmp / "digests")))
    return tmp, log


def test_dum_two_processes(crop_root, dum_run, tmp_path):
    """DUM on 2 CPU processes: equal parameters on both ranks, one set of outputs (rank 0), a checkpoint
    without 'module.' and the threshold of a single-process evaluation."""
    tmp, log = dum_run
    out = tmp / "run"
    d = digests(tmp / "digests")
    assert list(d) == ["rank0.txt", "rank1.txt"] and d["rank0.txt"] == d["rank1.txt"]
    assert len(list((out / "tensorboard").iterdir())) == 1 and (out / "args.json").is_file()
    assert [ln.count('"epoch"') for ln in (out / "log.txt").read_text().splitlines()] == [1, 1]
    assert (out / "train.log").read_text().count("epoch 2/2 lr") == 1 and log.count("epoch 2/2 lr") == 1
    assert [p.name for p in out.glob("*.pth")] == ["checkpoint.pth"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["0001.pth", "0002.pth"]
    ckpt = load_checkpoint(out / "checkpoints" / "0002.pth", kind="dum")
    assert not any(k.startswith("module.") for k in ckpt["models"]["model"])
    assert len(ckpt["rng"]["ranks"]) == 2
    model = load_model(out / "checkpoints" / "0002.pth")
    assert param_digest(model) == d["rank0.txt"]
    # Rank 0 evaluated alone, exactly as a single process does.
    lists = crop_root / "protocols" / "Protocol_1"
    dev, test = (VideoFramesDataset(crop_root, s.lower(), read_protocol(lists / f"{s}.txt"), 32, 4)
                 for s in ("Dev", "Test"))
    report = scoring.evaluate(model, dev, test, torch.device("cpu"), tmp_path / "eval", plots=False)
    assert report["metrics"]["iso"]["threshold"] == ckpt["extra"]["threshold"]


def test_dum_resume_in_one_process(crop_root, dum_run, tmp_path):
    """N -> M: the 2-process checkpoint resumes in a single process and trains a third epoch."""
    tmp, _ = dum_run
    ckpt = tmp / "run" / "checkpoints" / "0002.pth"
    log = ok(run([sys.executable, *map(str, dum_args(crop_root, tmp_path / "single", "--epochs", "3",
                                                     "--resume", ckpt))]))
    assert "saved by 2 process(es), resumed on 1: rank 0 only" in log
    before = load_checkpoint(ckpt, kind="dum")["models"]["model"]["conv1.0.conv.weight"]
    third = load_checkpoint(tmp_path / "single" / "checkpoint.pth", kind="dum")
    assert third["epoch"] == 3 and not torch.equal(third["models"]["model"]["conv1.0.conv.weight"], before)


@pytest.mark.slow
def test_dum_resume_on_two_processes_is_exact(crop_root, dum_run, tmp_path):
    """N -> N: resuming epoch 1's checkpoint on 2 processes reproduces epoch 2 bit for bit."""
    tmp, _ = dum_run
    ok(torchrun(*dum_args(crop_root, tmp_path / "again", "--epochs", "2", "--resume",
                          tmp / "run" / "checkpoints" / "0001.pth", "--debug-param-digest", tmp_path / "digests")))
    assert digests(tmp_path / "digests") == digests(tmp / "digests")
    a = load_checkpoint(tmp / "run" / "checkpoints" / "0002.pth", kind="dum")
    b = load_checkpoint(tmp_path / "again" / "checkpoint.pth", kind="dum")
    for k, v in a["models"]["model"].items():
        assert torch.equal(v, b["models"]["model"][k]), k
    assert torch.equal(a["optimizer"]["state"][0]["exp_avg_sq"], b["optimizer"]["state"][0]["exp_avg_sq"])


def gen_args(prep, out, *extra):
    # Global batch 4 = 2 per rank; 16 spoof samples -> 4 batches per epoch, capped at 2.
    return ["train_generator.py", "--prep-root", prep, "--output-dir", out, "--image-size", "8", "--hdim", "8",
            "--batch-size", "4", "--workers", "0", "--device", "cpu", "--no-identity-loss", "--num-grid", "3",
            "--log-every", "1", "--max-iters-per-epoch", "2", *extra]


def test_generator_two_processes(tmp_path):
    """The generator on 2 CPU processes: equal parameters on both ranks, one set of outputs, a checkpoint
    without 'module.' that resumes in a single process and trains on."""
    make_prep_root(tmp_path / "prep")
    out = tmp_path / "run"
    log = ok(torchrun(*gen_args(tmp_path / "prep", out, "--epochs", "1", "--debug-param-digest", tmp_path / "d")))
    d = digests(tmp_path / "d")
    assert list(d) == ["rank0.txt", "rank1.txt"] and d["rank0.txt"] == d["rank1.txt"]
    assert len(list((out / "tensorboard").iterdir())) == 1 and len((out / "log.txt").read_text().splitlines()) == 1
    assert log.count("epoch 1/1") == 1 and (out / "train.log").read_text().count("epoch 1/1") == 1
    assert len(list((out / "grids").iterdir())) == 3
    path = out / "checkpoints" / "0001.pth"
    ckpt = load_checkpoint(path, kind="generator")
    assert ckpt["iteration"] == 2 and len(ckpt["rng"]["ranks"]) == 2
    model = DualVAE(hdim=8, image_size=8)
    for name, part in model.parts().items():  # strict: a 'module.' prefix would be an unexpected key
        load_state_dict_strict(part, ckpt["models"][name], f"{path} [{name}]")
    assert param_digest(model) == d["rank0.txt"]
    del ckpt

    log = ok(run([sys.executable, *map(str, gen_args(tmp_path / "prep", out, "--epochs", "2", "--resume", "auto",
                                                     "--debug-param-digest", tmp_path / "d1"))]))
    assert "saved by 2 process(es), resumed on 1: rank 0 only" in log
    assert load_checkpoint(out / "checkpoints" / "0002.pth")["iteration"] == 4
    assert digests(tmp_path / "d1")["rank0.txt"] != d["rank0.txt"]
