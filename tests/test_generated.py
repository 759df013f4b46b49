"""Tests for generated.py: folder layout, depth maps with the no-face fallback, protocol rows, safe reruns."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import generated
from data.protocol_lists import read_protocol
from misc.checkpoint import CheckpointError, save_checkpoint
from networks.engine import sample_pairs, to_uint8
from networks.generator import DualVAE
from cli_helpers import cli_help

TRAIN_ROWS = "+1,1_1_01_1\n-1,1_1_01_2\n-1,1_1_01_4\n+1,1_2_02_1\n"


def make_checkpoint(path: Path, image_size: int = 16, hdim: int = 8) -> DualVAE:
    torch.manual_seed(0)
    model = DualVAE(hdim=hdim, image_size=image_size)
    save_checkpoint(path, kind="generator", models=model.parts(), epoch=1,
                    args={"image_size": image_size, "hdim": hdim})
    return model


def make_crop_root(root: Path, protocol_dir: str = "Protocol_1", train_name: str = "Train.txt") -> None:
    (root / "protocols" / protocol_dir).mkdir(parents=True, exist_ok=True)
    (root / "protocols" / protocol_dir / train_name).write_text(TRAIN_ROWS)


def gen_args(ckpt: Path, out: Path, *extra: str) -> argparse.Namespace:
    argv = ["--checkpoint", str(ckpt), "--crop-root", str(out), "--num-pairs", "5", "--pairs-per-folder", "2",
            "--map-size", "8", "--device", "cpu", "--jpeg-quality", "100", *extra]
    return argparse.ArgumentParser(parents=[generated.get_args_parser()]).parse_args(argv)


def snapshot(root: Path) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One generation with the mesh backend (which finds no face in an untrained generator's output)."""
    tmp = tmp_path_factory.mktemp("gen")
    model = make_checkpoint(tmp / "gen.pth")
    make_crop_root(tmp / "crop")
    summary = generated.main(gen_args(tmp / "gen.pth", tmp / "crop"))
    return tmp, model, summary


class TestOutput:
    def test_layout_and_sizes(self, run):
        """p1_0_k / p1_1_k folders with 1-based <i>_scene.jpg pairs, maps only for live images, at map size."""
        tmp, _, _ = run
        crop = tmp / "crop"
        sizes = {0: 2, 1: 2, 2: 1}
        for k, n in sizes.items():
            for folder in (f"p1_0_{k}", f"p1_1_{k}"):
                names = sorted(p.name for p in (crop / "train_images" / folder).iterdir())
                assert names == [f"{i}_scene.jpg" for i in range(1, n + 1)]
            maps = sorted(p.name for p in (crop / "train_depth" / f"p1_1_{k}").iterdir())
            assert maps == [f"{i}_depth1D.jpg" for i in range(1, n + 1)]
        assert not (crop / "train_depth" / "p1_0_0").exists()
        assert cv2.imread(str(crop / "train_images" / "p1_0_0" / "1_scene.jpg")).shape == (16, 16, 3)
        depth = cv2.imread(str(crop / "train_depth" / "p1_1_0" / "1_depth1D.jpg"), cv2.IMREAD_GRAYSCALE)
        assert depth.shape == (8, 8) and depth.max() > 0  # the fallback mask marks the face region

    def test_no_face_falls_back_and_is_counted(self, run):
        """Every live image gets a map; the summary says how many came from the fallback backend."""
        tmp, _, summary = run
        assert summary["depth_maps_primary"] + summary["depth_maps_fallback"] == 5
        assert summary["depth_maps_fallback"] == 5  # random decoder output shows no face
        manifest = json.loads((tmp / "crop" / "generated_p1.json").read_text())
        assert manifest["summary"] == summary and manifest["settings"]["seed"] == 0

    def test_protocol_rows_after_real_rows(self, run):
        """Train_g.txt = Train.txt rows, then one live and one spoof row per folder."""
        tmp, _, _ = run
        text = (tmp / "crop" / "protocols" / "Protocol_1" / "Train_g.txt").read_text()
        assert text == TRAIN_ROWS + "1,p1_1_0\n0,p1_0_0\n1,p1_1_1\n0,p1_0_1\n1,p1_1_2\n0,p1_0_2\n"
        rows = read_protocol(tmp / "crop" / "protocols" / "Protocol_1" / "Train_g.txt")
        assert [r.generated for r in rows] == [False] * 4 + [True] * 6

    def test_images_are_the_rounded_decoder_pairs(self, run):
        """Folder k decodes prior samples from its own seed; one identity serves spoof and live; values rounded."""
        tmp, model, _ = run
        gen = torch.Generator().manual_seed(generated.folder_seed(0, 1))
        pairs = sample_pairs(model.netG.eval(), 2, gen)
        for i, (kind, channels) in enumerate([("0", slice(0, 3)), ("1", slice(3, 6))]):
            expected = to_uint8(pairs[:, channels])[1][..., ::-1]  # image 2, BGR
            written = cv2.imread(str(tmp / "crop" / "train_images" / f"p1_{kind}_1" / "2_scene.jpg"))
            # JPEG keeps luma at full resolution (quality 100) but subsamples colour: compare grey levels.
            grey = [cv2.cvtColor(x, cv2.COLOR_BGR2GRAY).astype(int) for x in (written, expected)]
            assert np.abs(grey[0] - grey[1]).mean() < 1.5

    def test_to_uint8_rounds(self):
        """10.6/255 becomes 11, not 10 (the original truncated)."""
        x = torch.full((1, 3, 1, 1), 10.6 / 255)
        assert to_uint8(x)[0, 0, 0, 0] == 11


class TestRerun:
    def test_rerun_skips_and_repairs(self, tmp_path):
        """A rerun leaves complete folders alone and redoes an interrupted one with identical bytes."""
        make_checkpoint(tmp_path / "gen.pth")
        make_crop_root(tmp_path / "crop")
        (tmp_path / "crop" / "train_images" / "p1_1_0").mkdir(parents=True)  # an existing folder is no problem
        args = gen_args(tmp_path / "gen.pth", tmp_path / "crop", "--depth-backend", "mask")
        generated.main(args)
        before = snapshot(tmp_path / "crop")
        again = generated.main(gen_args(tmp_path / "gen.pth", tmp_path / "crop", "--depth-backend", "mask"))
        assert again["folders_skipped"] == 3 and again["pairs_generated"] == 0
        assert snapshot(tmp_path / "crop") == before
        (tmp_path / "crop" / "train_depth" / "p1_1_1" / "2_depth1D.jpg").unlink()  # as if killed mid-folder
        (tmp_path / "crop" / "train_images" / "p1_0_1" / "2_scene.jpg").unlink()
        repaired = generated.main(gen_args(tmp_path / "gen.pth", tmp_path / "crop", "--depth-backend", "mask"))
        assert repaired["folders_generated"] == 1 and repaired["folders_skipped"] == 2
        assert snapshot(tmp_path / "crop") == before

    def test_other_settings_need_overwrite(self, tmp_path):
        """Different settings over existing output stop with a message; --overwrite regenerates."""
        make_checkpoint(tmp_path / "gen.pth")
        make_crop_root(tmp_path / "crop")
        generated.main(gen_args(tmp_path / "gen.pth", tmp_path / "crop", "--depth-backend", "mask"))
        before = snapshot(tmp_path / "crop")
        with pytest.raises(SystemExit, match="seed: 0 -> 5"):
            generated.main(gen_args(tmp_path / "gen.pth", tmp_path / "crop", "--depth-backend", "mask",
                                    "--seed", "5"))
        assert snapshot(tmp_path / "crop") == before
        out = generated.main(gen_args(tmp_path / "gen.pth", tmp_path / "crop", "--depth-backend", "mask",
                                      "--seed", "5", "--overwrite"))
        assert out["folders_generated"] == 3 and snapshot(tmp_path / "crop") != before

    def test_sub_protocol_names(self, tmp_path):
        """Protocol 3_2 reads Train_2.txt, writes Train_2_g.txt and names folders p3_2_*."""
        make_checkpoint(tmp_path / "gen.pth")
        make_crop_root(tmp_path / "crop", "Protocol_3", "Train_2.txt")
        generated.main(gen_args(tmp_path / "gen.pth", tmp_path / "crop", "--depth-backend", "mask",
                                "--protocol", "3_2", "--num-pairs", "2"))
        assert (tmp_path / "crop" / "train_images" / "p3_2_0_0" / "2_scene.jpg").is_file()
        assert (tmp_path / "crop" / "protocols" / "Protocol_3" / "Train_2_g.txt").read_text().endswith(
            "1,p3_2_1_0\n0,p3_2_0_0\n")


class TestErrors:
    def test_fallback_none_stops_naming_the_image(self, tmp_path):
        """With --fallback-backend none, a live image without a face stops the run and is named."""
        make_checkpoint(tmp_path / "gen.pth")
        make_crop_root(tmp_path / "crop")
        with pytest.raises(RuntimeError, match=r"p1_1_0/1_scene\.jpg: depth backend 'mesh' found no face"):
            generated.main(gen_args(tmp_path / "gen.pth", tmp_path / "crop", "--fallback-backend", "none"))

    def test_missing_train_list_fails_first(self, tmp_path):
        """No Train list: a clear exit before anything is generated."""
        make_checkpoint(tmp_path / "gen.pth")
        with pytest.raises(SystemExit, match="Train.txt not found"):
            generated.main(gen_args(tmp_path / "gen.pth", tmp_path / "crop"))
        assert not (tmp_path / "crop" / "train_images").exists()

    def test_plain_decoder_state_dict(self, tmp_path):
        """A module-prefixed decoder state_dict loads with --image-size/--hdim."""
        model = make_checkpoint(tmp_path / "gen.pth")
        torch.save({f"module.{k}": v for k, v in model.netG.state_dict().items()}, tmp_path / "netG.pth")
        decoder, source = generated.load_decoder(tmp_path / "netG.pth", image_size=16, hdim=8)
        assert source["plain_state_dict"] and torch.equal(decoder.fc[0].weight, model.netG.fc[0].weight)

    def test_pickled_module_checkpoint_is_explained(self, tmp_path):
        """An original-style checkpoint (a pickled module) is refused with the conversion recipe."""
        torch.save({"epoch": 200, "model": torch.nn.Linear(2, 2)}, tmp_path / "netG_model_epoch_200_iter_0.pth")
        with pytest.raises(CheckpointError, match="pickled DataParallel modules"):
            generated.load_decoder(tmp_path / "netG_model_epoch_200_iter_0.pth")


@pytest.mark.parametrize("how", [["generated.py"], ["-m", "generated"]])
def test_entry_point_help(repo_root, how):
    """The script runs as a file and as a module and documents its flags."""
    out = cli_help(how)
    assert out.returncode == 0, out.stderr
    assert "--pairs-per-folder" in out.stdout and "--fallback-backend" in out.stdout


class TestOriginalDefaults:
    def test_jpeg_quality_and_fallback_labels(self, tmp_path, capsys):
        """By default images are saved at PIL's default quality (75), as the original did, and live faces
        the mesh cannot read get the ellipsoid label, as dark as mesh maps, not the flat mask at 255; the log
        and the summary say where the labels came from."""
        import io

        from PIL import Image

        make_checkpoint(tmp_path / "gen.pth")
        make_crop_root(tmp_path / "crop")
        argv = ["--checkpoint", str(tmp_path / "gen.pth"), "--crop-root", str(tmp_path / "crop"), "--num-pairs", "5",
                "--pairs-per-folder", "5", "--map-size", "8", "--device", "cpu"]
        args = argparse.ArgumentParser(parents=[generated.get_args_parser()]).parse_args(argv)
        assert (args.jpeg_quality, args.fallback_backend) == (75, "ellipsoid")
        summary = generated.main(args)
        logged = capsys.readouterr().out  # setup_logging logs to stdout
        written = tmp_path / "crop" / "train_images" / "p1_1_0" / "1_scene.jpg"
        with Image.open(written) as im:
            tables = im.quantization
            buf = io.BytesIO()
            im.convert("RGB").save(buf, "JPEG")  # PIL's default quality
        assert tables == Image.open(buf).quantization
        labels = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
                  for p in sorted((tmp_path / "crop" / "train_depth" / "p1_1_0").iterdir())]
        means = [float(m.mean()) for m in labels]
        assert all(100 < m < 145 for m in means), means  # mesh maps of real faces: 123 +- 6; the mask: 202
        assert summary["depth_labels"]["fallback"] == 5 and summary["depth_labels"]["fallback_backend"] == "ellipsoid"
        assert ("depth labels of the 5 generated live faces: 0 (0.0 %) from 'mesh', 5 (100.0 %) from the fallback "
                "'ellipsoid'") in logged
        assert "most generated live faces got the fallback label" in logged


def test_narrow_generator_checkpoint_rebuilds_its_decoder(tmp_path):
    """A checkpoint of a --max-channels generator loads into a decoder of that width (and the samples are
    its decoder's); one without the key gets the original's 512."""
    torch.manual_seed(3)
    model = DualVAE(hdim=8, image_size=16, max_channels=16)
    save_checkpoint(tmp_path / "narrow.pth", kind="generator", models=model.parts(), epoch=1,
                    args={"image_size": 16, "hdim": 8, "max_channels": 16})
    decoder, _ = generated.load_decoder(tmp_path / "narrow.pth")
    assert decoder.max_channels == 16
    z = torch.randn(3, 24)
    with torch.no_grad():
        assert torch.equal(decoder.eval()(z), model.netG.eval()(z))
    make_checkpoint(tmp_path / "full.pth")
    assert generated.load_decoder(tmp_path / "full.pth")[0].max_channels == 512
