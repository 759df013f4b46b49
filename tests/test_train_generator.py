"""Tests for the generator's dataset, training loop, checkpoints and resume (data/generation_dataset.py,
networks/engine.py, train_generator.py), on a tiny prepared root at 8x8 on CPU."""
from __future__ import annotations

import argparse
import json
import shutil

import cv2
import pytest
import torch
from torch.utils.data import DataLoader

from data.generation_dataset import GenerationDataset, GenerationListError
from generator_helpers import make_prep_root
from misc.checkpoint import CheckpointError, load_checkpoint
from networks.engine import train_one_epoch
from networks.generator import DualVAE
from networks.light_cnn import LightCNN29v2
from networks.losses import LossWeights, generator_loss
import train_generator
from cli_helpers import cli_help


def dataset(root, **kw):
    return GenerationDataset(root / "train_list" / "train_list_oulu_p1.txt", root / "train_images",
                             root / "train_bbox", image_size=kw.pop("image_size", 16), show_progress=False, **kw)


def train_args(root, out, *extra):
    argv = ["--prep-root", str(root), "--output-dir", str(out), "--image-size", "8", "--hdim", "8",
            "--batch-size", "4", "--workers", "0", "--device", "cpu", "--no-identity-loss", "--log-every", "1",
            "--num-grid", "3", *extra]
    return argparse.ArgumentParser(parents=[train_generator.get_args_parser()]).parse_args(argv)


class TestDataset:
    def test_pairs_spoof_with_live_of_same_subject(self, tmp_path):
        """One sample per spoof row; the partner is a live frame of the same subject; digit 2..5 -> class 0..3."""
        make_prep_root(tmp_path)
        ds = dataset(tmp_path)
        assert len(ds) == 2 * 4 * 2 and not ds.problems
        for i, row in enumerate(ds.spoof):
            live = ds.live_of_subject[row.subject][ds.live_partner(i)]
            assert live.subject == row.subject and live.live and row.spoof_type == row.digit - 2
        item = ds[0]
        assert item["spoof"].shape == item["live"].shape == (3, 16, 16)
        assert item["spoof"].dtype == torch.float32 and 0 <= item["spoof"].min() and item["spoof"].max() <= 1
        assert item["type"].item() == ds.spoof[0].spoof_type

    def test_partner_draw_is_seeded_per_epoch(self, tmp_path):
        """The same (seed, epoch) gives the same partners; epochs differ."""
        make_prep_root(tmp_path, frames_per_video=6)
        a, b = dataset(tmp_path), dataset(tmp_path)
        draws = lambda d: [d.live_partner(i) for i in range(len(d))]  # noqa: E731
        assert draws(a) == draws(b)
        first = draws(a)
        a.set_epoch(1)
        assert draws(a) != first

    def test_worker_processes_do_not_change_batches(self, tmp_path):
        """A worker process yields the same batches as loading in the main process (pairing is seeded)."""
        make_prep_root(tmp_path, frames_per_video=4)
        ds = dataset(tmp_path, image_size=8)
        ds.set_epoch(3)
        batches = [list(DataLoader(ds, batch_size=4, num_workers=w)) for w in (0, 1)]
        for a, b in zip(*batches):
            assert torch.equal(a["spoof"], b["spoof"]) and torch.equal(a["live"], b["live"])

    def test_bad_rows_are_skipped_and_named(self, tmp_path):
        """Malformed rows, missing frames, missing/broken boxes and unpaired subjects are listed, not fatal."""
        lines = make_prep_root(tmp_path, subjects=(1, 2, 3))
        (tmp_path / "train_images" / "1_1_01_2" / "1_1_01_2_1_scene.jpg").unlink()
        (tmp_path / "train_bbox" / "1_1_01_3" / "1_1_01_3_2_scene.dat").unlink()
        (tmp_path / "train_bbox" / "1_1_01_4" / "1_1_01_4_1_scene.dat").write_text("garbage\n")
        keep = [ln for ln in lines if not ln.startswith("1_1_03_1/")]  # subject 03 loses its live rows
        keep += ["only_two fields", "1_1_01_2/x.jpg 01 0 7"]
        (tmp_path / "train_list" / "train_list_oulu_p1.txt").write_text("\n".join(keep) + "\n")
        ds = dataset(tmp_path)
        text = "\n".join(ds.problems)
        assert "1_1_01_2_1_scene.jpg not found" in text
        assert "1_1_01_3_2_scene.dat not found" in text
        assert "1_1_01_4_1_scene.dat unreadable" in text
        assert "expected 4 space-separated fields" in text and "digit 2..5, got 7" in text
        assert text.count("subject 03 has no usable live frame") == 8
        assert len(ds.problems) == 3 + 2 + 8
        assert len(ds) == 3 * 8 - 3 - 8
        assert all(":" in p.split(" ")[0] for p in ds.problems)  # every message starts with file:line

    def test_no_usable_pair_is_an_error(self, tmp_path):
        """A list with no usable pair fails at build time, naming the list."""
        make_prep_root(tmp_path)
        for p in (tmp_path / "train_bbox").rglob("*.dat"):
            p.unlink()
        with pytest.raises(GenerationListError, match="train_list_oulu_p1.txt: no usable spoof/live pair"):
            dataset(tmp_path)

    def test_corrupt_frame_is_replaced_mid_epoch(self, tmp_path):
        """A frame that exists but does not decode yields another sample instead of an exception."""
        make_prep_root(tmp_path)
        ds = dataset(tmp_path)
        (tmp_path / "train_images" / ds.spoof[0].frame).write_bytes(b"not a jpeg")
        item = ds[0]
        assert item["spoof"].shape == (3, 16, 16)
        assert torch.equal(item["spoof"], ds[1]["spoof"])


class TestOptimisation:
    def test_few_steps_lower_reconstruction(self):
        """On a fixed tiny batch, a few Adam steps lower the reconstruction loss."""
        torch.manual_seed(0)
        model = DualVAE(hdim=8, image_size=8)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        spoof, live, kind = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), torch.tensor([0, 3])

        def rec_loss():
            with torch.no_grad():
                torch.manual_seed(1)
                return generator_loss(model(spoof, live), spoof, live, kind, LossWeights())[1]["rec"].item()

        before = rec_loss()
        batch = {"spoof": spoof, "live": live, "type": kind}
        stats, it = train_one_epoch(model, [batch] * 6, opt, torch.device("cpu"), 0, LossWeights(), scale=0.01)
        assert it == 6 and set(stats) >= {"rec", "kl", "align", "type", "ort", "total"}
        assert rec_loss() < 0.8 * before

    def test_classifier_is_trained(self):
        """The spoof-type classifier gets gradients and changes (the original never optimised it)."""
        torch.manual_seed(0)
        model = DualVAE(hdim=8, image_size=8)
        before = model.netCls.fc.weight.clone()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        batch = {"spoof": torch.rand(2, 3, 8, 8), "live": torch.rand(2, 3, 8, 8), "type": torch.tensor([0, 2])}
        train_one_epoch(model, [batch], opt, torch.device("cpu"), 1, LossWeights())
        assert not torch.equal(before, model.netCls.fc.weight)

    def test_non_finite_loss_stops(self):
        """A NaN in the loss stops training with a message naming the epoch and the terms."""
        torch.manual_seed(0)
        model = DualVAE(hdim=8, image_size=8)
        opt = torch.optim.Adam(model.parameters())
        batch = {"spoof": torch.full((2, 3, 8, 8), float("nan")), "live": torch.rand(2, 3, 8, 8),
                 "type": torch.tensor([0, 1])}
        with pytest.raises(FloatingPointError, match="epoch 1"):
            train_one_epoch(model, [batch], opt, torch.device("cpu"), 0, LossWeights())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run 'a': 3 epochs straight. Run 'b': 1 epoch, then resumed to 3. Run 'old': b's first epoch in the
    run directory of older versions (checkpoints/checkpoint_epoch_NNNN.pth only), resumed to 3. Two
    iterations per epoch."""
    tmp = tmp_path_factory.mktemp("train")
    make_prep_root(tmp / "prep")
    common = ("--max-iters-per-epoch", "2", "--save-every", "3", "--sample-every", "2")
    train_generator.main(train_args(tmp / "prep", tmp / "a", "--epochs", "3", *common))
    train_generator.main(train_args(tmp / "prep", tmp / "b", "--epochs", "1", *common))
    shutil.copytree(tmp / "b", tmp / "old")
    (tmp / "old" / "checkpoint.pth").unlink()
    (tmp / "old" / "checkpoints" / "0001.pth").rename(tmp / "old" / "checkpoints" / "checkpoint_epoch_0001.pth")
    train_generator.main(train_args(tmp / "prep", tmp / "b", "--epochs", "3", "--resume", "auto", *common))
    train_generator.main(train_args(tmp / "prep", tmp / "old", "--epochs", "3", "--resume", "auto", *common))
    return tmp


class TestTrainScript:
    def test_outputs_and_checkpoint_content(self, runs):
        """Checkpoints hold state_dicts of all four nets (classifier included), optimizer and RNG; grids are
        written at full resolution; TensorBoard events and one JSON log line per epoch exist."""
        out = runs / "a"
        state = load_checkpoint(out / "checkpoint.pth", kind="generator")
        assert state["epoch"] == 3 and state["iteration"] == 3 * 2
        assert set(state["models"]) == {"netE_spoof", "netE_live", "netG", "netCls"}
        assert "fc.weight" in state["models"]["netCls"] and "optimizer" in state and "rng" in state
        assert state["args"]["image_size"] == 8
        numbered = sorted(p.name for p in (out / "checkpoints").iterdir())
        assert numbered == ["0001.pth", "0003.pth"]  # first, every 3rd, last
        assert (out / "checkpoints" / "0003.pth").read_bytes() == (out / "checkpoint.pth").read_bytes()
        for name in ("inputs", "reconstructions", "samples"):
            grid = cv2.imread(str(out / "grids" / f"epoch_0002_{name}.png"))
            # 3 pairs side by side, the 8 px images shown at 96 px, with row and column labels (tests/test_grids.py);
            # the reconstructions grid has each row of inputs above its row of reconstructions.
            rows = 2 if name == "reconstructions" else 1
            assert grid.shape[1] > 6 * 96 and rows * 96 < grid.shape[0] < (rows + 1) * 96 + 60, (name, grid.shape)
        assert list((out / "tensorboard").glob("events.out.tfevents.*"))
        lines = [json.loads(ln) for ln in (out / "log.txt").read_text().splitlines()]
        assert [ln["epoch"] for ln in lines] == [1, 2, 3] and "train_rec" in lines[0]
        assert (out / "skipped_rows.txt").read_text() == ""

    @pytest.mark.parametrize("run", ["b", "old"])
    def test_resume_matches_uninterrupted_run(self, runs, run):
        """1 epoch + resume to 3 gives bitwise the same parameters and optimizer state as 3 epochs straight,
        also from a run directory of the older layout."""
        a = load_checkpoint(runs / "a" / "checkpoints" / "0003.pth")
        b = load_checkpoint(runs / run / "checkpoints" / "0003.pth")
        assert a["epoch"] == b["epoch"] == 3 and a["iteration"] == b["iteration"]
        for net in a["models"]:
            for k, v in a["models"][net].items():
                assert torch.equal(v, b["models"][net][k]), f"{net}.{k}"
        for pid, st in a["optimizer"]["state"].items():
            assert torch.equal(st["exp_avg_sq"], b["optimizer"]["state"][pid]["exp_avg_sq"])
        assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
        old = runs / "old" / "checkpoints" / "checkpoint_epoch_0001.pth"
        assert ("resumed from " + str(old) in (runs / run / "train.log").read_text()) == (run == "old")

    def test_resume_with_other_width_is_refused(self, runs):
        """A checkpoint of the original width (512) is not loaded into a --max-channels 64 run."""
        args = train_args(runs / "prep", runs / "b", "--epochs", "4", "--max-channels", "64", "--resume",
                          str(runs / "b" / "checkpoints" / "0001.pth"))
        with pytest.raises(CheckpointError, match="0001.pth: was trained with --max-channels 512, this run asks "
                                                  "for --max-channels 64"):
            train_generator.main(args)

    def test_resume_with_other_image_size_is_refused(self, runs):
        """A checkpoint of another size is not silently loaded."""
        args = train_args(runs / "prep", runs / "b", "--epochs", "4", "--resume", str(runs / "b"))
        args.image_size = 16
        with pytest.raises(CheckpointError, match=r"checkpoint.pth: was trained with --image-size 8, this run asks "
                                                  r"for --image-size 16"):
            train_generator.main(args)

    def test_missing_lightcnn_stops_with_instructions(self, tmp_path):
        """Without the LightCNN file (and without --no-identity-loss) training stops and says what to do."""
        make_prep_root(tmp_path / "prep")
        args = train_args(tmp_path / "prep", tmp_path / "run", "--ip-model", str(tmp_path / "none.pth.tar"))
        args.no_identity_loss = False
        with pytest.raises(SystemExit) as e:
            train_generator.main(args)
        assert "AlfredXiangWu/LightCNN" in str(e.value) and "--no-identity-loss" in str(e.value)

    def test_identity_losses_with_official_format_file(self, tmp_path):
        """With a LightCNN file in the official format the identity and pair terms are trained and logged."""
        make_prep_root(tmp_path / "prep")
        torch.manual_seed(0)
        sd = {f"module.{k}": v for k, v in LightCNN29v2().state_dict().items()}
        sd["module.fc2.weight"] = torch.zeros(3, 256)
        ip = tmp_path / "LightCNN_29Layers_V2_checkpoint.pth.tar"
        torch.save({"epoch": 1, "arch": "LightCNN-29v2", "state_dict": sd}, ip, _use_new_zipfile_serialization=False)
        args = train_args(tmp_path / "prep", tmp_path / "run", "--ip-model", str(ip), "--epochs", "1",
                          "--max-iters-per-epoch", "1")
        args.no_identity_loss = False
        train_generator.main(args)
        line = json.loads((tmp_path / "run" / "log.txt").read_text().splitlines()[0])
        assert line["train_ip"] > 0 and line["train_pair"] >= 0 and line["iteration"] == 1


@pytest.mark.parametrize("how", [["train_generator.py"], ["-m", "train_generator"]])
def test_entry_point_help(repo_root, how):
    """The script runs as a file and as a module and documents its flags."""
    out = cli_help(how)
    assert out.returncode == 0, out.stderr
    assert "--lambda-ip" in out.stdout and "paper: 1000" in out.stdout
