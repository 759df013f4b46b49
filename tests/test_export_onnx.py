"""Tests for DUM/export_onnx.py: onnxruntime reproduces PyTorch, dynamic batch, metadata, refused exports."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from deploy_helpers import tiny_model, write_checkpoint, write_released
from DUM import export_onnx
from DUM.models import CentralDifferenceConv2d
from DUM.scoring import mean_depth_score
from DUM.weights import load_model
from cli_helpers import cli_help

REPO = Path(__file__).resolve().parents[1]


def export(*argv):
    return export_onnx.main(export_onnx.get_args_parser().parse_args([str(a) for a in argv]))


def metadata(path: Path) -> dict:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny checkpoint (32 px, 8 x 8 maps, Dev threshold 0.25) and its ONNX export."""
    d = tmp_path_factory.mktemp("export")
    ckpt = write_checkpoint(d / "checkpoint.pth", threshold=0.25)
    result = export("--checkpoint", ckpt, "--out", d / "model.onnx")
    return ckpt, d / "model.onnx", result


def test_fold_cdc_is_the_same_function():
    """The folded copy (plain convolutions) computes what the central-difference model computes."""
    model = tiny_model()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    folded = export_onnx.fold_cdc(model)
    assert all(m.theta == 0.0 for m in folded.modules() if isinstance(m, CentralDifferenceConv2d))
    torch.testing.assert_close(folded(x).mu, model(x).mu, atol=1e-5, rtol=1e-5)
    assert model.conv1[0].theta == 0.7  # the original is untouched


def test_onnxruntime_matches_pytorch(exported):
    """mu and the mean score of onnxruntime equal PyTorch's to 1e-4 for batches 1, 3 and 5 (dynamic axis)."""
    ckpt, path, result = exported
    assert max(result["max_abs_diff"].values()) <= 1e-4
    model = load_model(ckpt)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["mu", "score"]
    gen = torch.Generator().manual_seed(2)
    for b in (1, 3, 5):
        x = torch.rand(b, 3, 32, 32, generator=gen) * 2 - 1
        with torch.no_grad():
            mu = model(x).mu
        score = mean_depth_score(mu)  # the tester's per-frame mean score
        got_mu, got_score = session.run(None, {"input": x.numpy()})
        assert got_mu.shape == (b, 8, 8) and got_score.shape == (b,)
        assert np.abs(got_mu - mu.numpy()).max() <= 1e-4
        assert np.abs(got_score - score.numpy()).max() <= 1e-4
        assert mu.abs().mean() > 0.1  # the comparison is not between near-zero maps
    # the graph depends on its input: different faces, different scores
    assert np.ptp(got_score) > 1e-3


def test_graph_keeps_only_the_inference_path(exported):
    """No random sampling and no log-variance head in the exported graph; kernels are constants."""
    proto = onnx.load(str(exported[1]))
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"RandomNormal", "RandomNormalLike", "Exp"}
    assert "Conv" in ops and not any("logvar" in i.name for i in proto.graph.initializer)
    assert [i.name for i in proto.graph.input] == ["input"]


def test_metadata(exported):
    """Threshold, sizes, normalisation and provenance are in metadata_props; read_metadata types them."""
    ckpt, path, _ = exported
    props = metadata(path)
    assert props["dsdg.threshold"] == "0.25" and "epoch 2" in props["dsdg.threshold_source"]
    assert props["dsdg.image_size"] == "32" and props["dsdg.map_size"] == "8"
    assert props["dsdg.decision"] == "live iff score >= threshold" and props["dsdg.score"] == "mean"
    assert props["dsdg.checkpoint"] == str(ckpt) and props["dsdg.checkpoint_source"] == "checkpoint"
    assert props["dsdg.model"] == "cdcn_u"  # the network (DUM/zoo.py) the file was trained as
    info = export_onnx.read_metadata(props, str(path))
    assert info["model"] == "cdcn_u"
    assert info["threshold"] == 0.25 and info["image_size"] == 32 and info["face_scale"] == 1.3
    assert (info["input_mean"], info["input_scale"], info["channel_order"]) == (127.5, 128.0, "RGB")
    with pytest.raises(export_onnx.ExportError, match="export the model with"):
        export_onnx.read_metadata({}, "other.onnx")


def test_released_file_threshold_flag(tmp_path):
    """The released format exports (at a given size); --threshold is stored, and without it none is."""
    released = write_released(tmp_path / "CDCN_U_P1.pkl")
    export("--checkpoint", released, "--out", tmp_path / "a.onnx", "--image-size", 32)
    props = metadata(tmp_path / "a.onnx")
    assert "dsdg.threshold" not in props and props["dsdg.checkpoint_source"] == "released"
    assert props["dsdg.image_size"] == "32" and props["dsdg.map_size"] == "32"
    assert export_onnx.read_metadata(props)["threshold"] is None
    export("--checkpoint", released, "--out", tmp_path / "b.onnx", "--image-size", 32, "--threshold", 0.125)
    props = metadata(tmp_path / "b.onnx")
    assert props["dsdg.threshold"] == "0.125" and props["dsdg.threshold_source"] == "--threshold"


def test_mismatch_fails_and_writes_nothing(tmp_path, monkeypatch):
    """A graph that differs from PyTorch (here: kernels not folded) is refused and no file is left."""
    ckpt = write_checkpoint(tmp_path / "checkpoint.pth")

    def unfolded(model):  # drops the central-difference term instead of folding it
        plain = copy.deepcopy(model)
        for m in plain.modules():
            if isinstance(m, CentralDifferenceConv2d):
                m.theta = 0.0
        return plain.eval()

    monkeypatch.setattr(export_onnx, "fold_cdc", unfolded)
    with pytest.raises(export_onnx.ExportError, match="not written"):
        export("--checkpoint", ckpt, "--out", tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == [tmp_path / "checkpoint.pth"]


def test_every_flag_has_help():
    """Every option of the parser says what it does."""
    for action in export_onnx.get_args_parser()._actions:
        assert action.help, action.dest


@pytest.mark.parametrize("how", ["file", "module"])
def test_help_both_ways(how):
    """--help works as a file and as a module."""
    out = cli_help(["DUM/export_onnx.py"] if how == "file" else ["-m", "DUM.export_onnx"])
    assert out.returncode == 0 and "--image-size" in out.stdout and "--opset" in out.stdout


def test_bad_checkpoint_exits_naming_it(tmp_path):
    """A file that is no checkpoint: exit status 1, the message names it, no ONNX file."""
    bogus = tmp_path / "notes.pth"
    bogus.write_text("not a checkpoint")
    out = subprocess.run([sys.executable, "DUM/export_onnx.py", "--checkpoint", str(bogus), "--out",
                          str(tmp_path / "x.onnx")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and f"error: {bogus}" in out.stderr and not (tmp_path / "x.onnx").exists()
