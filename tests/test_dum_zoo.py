"""Tests for the depth networks of DUM/zoo.py (cdcn_u, cdcn, depthnet_u, resnet18_u): each builds with the
original's layout and is recognised from its keys, runs its speed paths exactly, trains and resumes through
DUM/train.py, is tested by DUM/test.py, exports to ONNX and scores; MODEL= in scripts/08 and 09."""
from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from benchmarks.bench_dum import trained_like
from deploy_helpers import write_checkpoint
from dum_helpers import make_crop_root
from DUM import export_onnx, kernels, models, predict, train, zoo
from DUM import test as dum_test
from DUM.weights import load_model
from DUM.kernels import float64_speed_paths
from DUM.models import DepthOutput
from misc.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from original_keys import original_keys

REPO = Path(__file__).resolve().parents[1]
NAMES = zoo.NAMES
OTHERS = [n for n in NAMES if n != "cdcn_u"]  # cdcn_u end to end: test_dum_train, test_dum_test, test_export_onnx
CPU = torch.device("cpu")


def _other(name: str) -> str:
    """Another network than ``name`` (for mismatch errors)."""
    return "resnet18_u" if name != "resnet18_u" else "cdcn"


def _net(name: str, seed: int, map_size: int = 4, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A network with non-trivial BatchNorm statistics (benchmarks.bench_dum.trained_like), channels_last."""
    torch.manual_seed(seed)
    net = trained_like(zoo.get(name).build(map_size=map_size), seed).to(dtype)
    return net.to(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes(name):
    """(B, 3, 48, 48) -> 6 x 6 maps (input / 8) and the features; plain CDCN: no logvar, sample is the ReLU'd map."""
    spec = zoo.get(name)
    net = spec.build(map_size=6)
    x = torch.randn(2, 3, 48, 48)
    out = net(x)
    assert isinstance(out, DepthOutput) and out.mu.shape == out.sample.shape == (2, 6, 6) and out.x_input is x
    channels = (128, 196, 256) if name == "resnet18_u" else (128, 128, 128)
    assert out.x_concat.shape == (2, sum(channels), 6, 6)
    for feature, c, size in zip((out.x_block1, out.x_block2, out.x_block3), channels, (24, 12, 6)):
        assert feature.shape == (2, c, size, size)
    if spec.uncertainty:
        assert out.logvar.shape == (2, 6, 6) and not torch.equal(out.sample, out.mu)
    else:
        assert out.logvar is None and out.sample is out.mu and (out.mu >= 0).all()
    assert zoo.spec_of(net) is spec


def test_parameter_counts_and_frozen_lastconv3():
    """Parameters of each network (the table in docs/DUM.md); ResNet18_U's unused lastconv3 is kept but frozen."""
    counts = {name: sum(p.numel() for p in zoo.get(name).build().parameters()) for name in NAMES}
    assert counts == {"cdcn_u": 2_245_592, "cdcn": 2_245_016, "depthnet_u": 2_245_592, "resnet18_u": 4_983_256}
    resnet = zoo.get("resnet18_u").build()
    assert not any(p.requires_grad for p in resnet.lastconv3.parameters())
    assert all(p.requires_grad for n, p in resnet.named_parameters() if not n.startswith("lastconv3"))


def _original_layout(name: str) -> dict:
    """{key: shape} of the original code's state_dict of ``name`` (tests/data/original_state_dict_keys.json).

    cdcn has no entry there: ZitongYu/CDCN's CDCN is CDCN_u's trunk with ``lastconv3`` (a central
    difference conv 64 -> 1) instead of the two heads.
    """
    original = {"cdcn_u": "CDCN_u", "cdcn": "CDCN_u", "depthnet_u": "depthnet_u", "resnet18_u": "ResNet18_u"}
    shapes = dict(original_keys(original[name]))
    if name == "cdcn":
        shapes = {k: s for k, s in shapes.items() if not k.startswith(("mu_head", "logvar_head"))}
        shapes["lastconv3.0.conv.weight"] = (1, 64, 3, 3)
    return shapes


def _random_state_dict(shapes: dict, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(100)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[key] = torch.randn(shape, generator=g) * 0.05
    return sd


@pytest.mark.parametrize("name", NAMES)
def test_original_layout_loads_strictly(name, tmp_path):
    """A DataParallel state_dict in the original's layout (keys and shapes of the spec, random values) is
    recognised as its network, loads strictly with every tensor in place, and runs."""
    shapes = _original_layout(name)
    assert {k: tuple(v.shape) for k, v in zoo.get(name).build().state_dict().items()} == shapes
    sd = _random_state_dict(shapes)
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "original.pkl")
    net, meta = load_model(tmp_path / "original.pkl", map_size=8, return_meta=True)
    assert meta["model"] == name and meta["source"] == "released" and type(net) is zoo.get(name).cls
    for key, value in net.state_dict().items():
        assert torch.equal(value, sd[key]), key
    with torch.no_grad():
        assert torch.isfinite(net(torch.randn(1, 3, 64, 64)).mu).all()


@pytest.mark.parametrize("name", NAMES)
def test_bare_state_dict_round_trip(name, tmp_path):
    """Our network saved with DataParallel's ``module.`` prefix loads back as itself;
    --model naming it agrees, naming another network is an error naming both."""
    net = _net(name, 1)
    path = tmp_path / "weights.pkl"
    torch.save(torch.nn.DataParallel(net).state_dict(), path)
    loaded, meta = load_model(path, map_size=4, return_meta=True)
    assert meta["model"] == name and type(loaded) is type(net)
    for key, value in net.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    assert type(load_model(path, map_size=4, model=name)) is type(net)
    other = _other(name)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(path))}: its keys are those of '{name}', not of '{other}'"):
        load_model(path, model=other)


def test_keys_of_no_network_name_the_file_and_the_nearest(tmp_path):
    """A state_dict that fits no network: the error names the file, the nearest network and its missing key;
    with --model the strict load names the file and the network asked for."""
    sd = zoo.get("resnet18_u").build().state_dict()
    del sd["layer3.1.left.4.running_var"]
    torch.save(sd, tmp_path / "broken.pkl")
    with pytest.raises(CheckpointError, match=r"(?s)broken\.pkl: its keys fit none.*nearest: resnet18_u.*missing keys"
                                              r".*layer3\.1\.left\.4\.running_var"):
        load_model(tmp_path / "broken.pkl")
    with pytest.raises(CheckpointError, match=r"(?s)broken\.pkl \(as resnet18_u\).*layer3\.1\.left\.4\.running_var"):
        load_model(tmp_path / "broken.pkl", model="resnet18_u")


def test_checkpoint_model_is_stored_and_enforced(tmp_path):
    """A checkpoint builds the network it stores; --model another one is an error naming both; a checkpoint
    without the entry (written before --model) is recognised by its keys."""
    path = write_checkpoint(tmp_path / "cdcn.pth", model="cdcn")
    net, meta = load_model(path, return_meta=True)
    assert type(net) is models.CDCN and meta["model"] == "cdcn" and meta["source"] == "checkpoint"
    with pytest.raises(CheckpointError, match=r"cdcn\.pth: was trained as 'cdcn', not 'cdcn_u'"):
        load_model(path, model="cdcn_u")
    save_checkpoint(tmp_path / "old.pth", kind="dum", models={"model": models.DepthNet_U(map_size=4)},
                    args={"map_size": 4, "theta": 0.7})
    assert load_model(tmp_path / "old.pth", return_meta=True)[1]["model"] == "depthnet_u"


# ----------------------------------------------------------------------------------------------
# Speed paths, per network
# ----------------------------------------------------------------------------------------------

# Stride-1 3x3 convolutions with >= 16 input channels (the GEMM weight gradient's domain), and
# conv + BN layers that inference fuses, in each network.
GEMM_CONVS = {"cdcn_u": 11, "cdcn": 12, "depthnet_u": 11, "resnet18_u": 15}
FUSED_CONVS = {"cdcn_u": 12, "cdcn": 12, "depthnet_u": 12, "resnet18_u": 22}


@pytest.mark.parametrize("name", NAMES)
def test_gemm_weight_gradient_equals_plain_path_in_float64(name, monkeypatch):
    """A training step's parameter gradients with the GEMM weight gradient equal those of the plain path, both
    in float64 (float32 rounding flips ReLU/MaxPool kinks), to 1e-10 relative; the GEMM path really ran."""
    net = _net(name, 2, map_size=2, dtype=torch.float64).train()  # 16 px: float64 convolutions are slow
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    weights = [torch.randn(2, 2, 2, generator=g, dtype=torch.float64) for _ in range(2)]
    calls = []
    apply = kernels._Conv3x3ChannelsLast.apply
    monkeypatch.setattr(kernels._Conv3x3ChannelsLast, "apply", lambda *a: calls.append(1) or apply(*a))

    def gradients(fast: bool) -> dict:
        net.zero_grad(set_to_none=True)
        torch.manual_seed(3)  # the same reparameterisation noise for both paths
        with float64_speed_paths() if fast else contextlib.nullcontext():
            out = net(x)
        loss = (out.sample * weights[0]).sum() + (0 if out.logvar is None else (out.logvar * weights[1]).sum())
        loss.backward()
        return {n: p.grad.clone() for n, p in net.named_parameters() if p.requires_grad}

    plain = gradients(fast=False)
    assert not calls
    fast = gradients(fast=True)
    assert len(calls) == GEMM_CONVS[name]
    for key, ref in plain.items():
        assert (fast[key] - ref).abs().max() <= 1e-10 * ref.abs().max().clamp(min=1e-30), key


@pytest.mark.parametrize("name", NAMES)
def test_fused_inference_equals_layer_by_layer(name):
    """Eval without autograd (each conv + BN (+ ReLU) one cached convolution; ResNet blocks included) gives
    the layer-by-layer eval output to 1e-5 relative, in float32: a forward pass is continuous, kinks or not."""
    net = _net(name, 4).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4)).contiguous(
        memory_format=torch.channels_last)
    with torch.no_grad():
        fused = net(x).mu
    assert sum(getattr(m, "_fused", None) is not None for m in net.modules()) == FUSED_CONVS[name]
    with torch.enable_grad():  # autograd on: every layer runs on its own
        reference = net(x).mu.detach()
    assert (fused - reference).abs().max() <= 1e-5 * reference.abs().max()


# ----------------------------------------------------------------------------------------------
# Training, testing, export and prediction of each network
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def train_root(tmp_path_factory):
    """Training rows only (real and generated): without Dev/Test lists, runs do not evaluate."""
    return make_crop_root(tmp_path_factory.mktemp("train"), image_size=32, map_size=4, frames=2,
                          users={"Train": [1, 2]}, generated=2)


@pytest.fixture(scope="module")
def eval_root(tmp_path_factory):
    """Train (with generated rows), Dev and Test lists, one frame per video, 8 x 8 maps."""
    return make_crop_root(tmp_path_factory.mktemp("eval"), image_size=32, map_size=8, frames=1, generated=1)


def _train(root: Path, out: Path, name: str, *extra: str) -> dict:
    args = train.get_args_parser().parse_args(
        ["--model", name, "--crop-root", str(root), "--output-dir", str(out), "--image-size", "32", "--map-size", "4",
         "--batch-size", "2", "--iters-per-epoch", "1", "--workers", "0", "--device", "cpu", "--seed", "5",
         "--lr", "1e-3", *extra])
    return train.main(args)


@pytest.mark.parametrize("name", OTHERS)
def test_trains_and_resumes_exactly(name, train_root, tmp_path):
    """DUM/train.py --model: the network's loss terms are logged, the checkpoint stores the name, and stopping
    after epoch 1 and resuming gives the uninterrupted run's weights. Batches of 1 real + 1 generated sample."""
    full = _train(train_root, tmp_path / "full", name, "--epochs", "2")
    _train(train_root, tmp_path / "part", name, "--epochs", "1")
    resumed = _train(train_root, tmp_path / "part", name, "--epochs", "2", "--resume", "auto")
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pth", kind="dum")
    b = load_checkpoint(tmp_path / "part" / "checkpoint.pth", kind="dum")
    assert a["args"]["model"] == b["args"]["model"] == name and a["epoch"] == b["epoch"] == 2
    for key, value in a["models"]["model"].items():
        assert torch.equal(value, b["models"]["model"][key]), key
    assert full["train_loss"] == resumed["train_loss"]
    uncertain = zoo.get(name).uncertainty
    assert {"train_real_abs", "train_real_contrast", "train_gen_abs", "train_gen_contrast"} <= set(full)
    assert ("train_real_kl" in full) == ("train_sigma" in full) == uncertain
    grid = cv2.imread(str(tmp_path / "full" / "grids" / "epoch_0002.png"))
    # rows of 32 px faces shown at 96 px, under the title and column labels: a sigma row only with DUM
    assert (grid.shape[0] > 4 * 96) == uncertain and grid.shape[0] > 3 * 96


def test_resuming_as_another_network_stops(train_root, tmp_path):
    """--resume of a run trained as one network with --model another stops, naming both, before any step."""
    save_checkpoint(tmp_path / "checkpoint.pth", kind="dum", models={"model": models.CDCN(map_size=4)}, epoch=1,
                    args={"model": "cdcn", "map_size": 4})
    with pytest.raises(CheckpointError, match="checkpoint.pth: was trained with --model cdcn, this run asks for --model resnet18_u"):
        _train(train_root, tmp_path, "resnet18_u", "--epochs", "2", "--resume", "auto")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pth", "train.log"]  # nothing trained or written
    assert load_checkpoint(tmp_path / "checkpoint.pth", kind="dum")["epoch"] == 1


@pytest.mark.parametrize("name", OTHERS)
def test_test_script_builds_the_checkpoints_network(name, eval_root, tmp_path):
    """DUM/test.py takes the network from the checkpoint and reports it; --model another one stops."""
    ckpt = write_checkpoint(tmp_path / "checkpoint.pth", model=name)  # 32 px, 8 x 8 maps

    def run(*extra):
        return dum_test.main(dum_test.get_args_parser().parse_args(
            ["--checkpoint", str(ckpt), "--crop-root", str(eval_root), "--output-dir", str(tmp_path / "out"),
             "--workers", "0", "--device", "cpu", "--plots", "false", *extra]))

    report = run()
    assert report["model"] == name and report["map_size"] == 8
    assert json.loads((tmp_path / "out" / "report.json").read_text())["model"] == name
    assert report["dev"]["videos"] == report["test"]["videos"] == 12 and "iso" in report["metrics"]
    with pytest.raises(CheckpointError, match=f"was trained as '{name}', not '{_other(name)}'"):
        run("--model", _other(name))


@pytest.mark.parametrize("name", OTHERS)
def test_onnx_export_and_scorers(name, tmp_path):
    """export_onnx writes the network's graph (dsdg.model in the metadata) within 1e-4 of PyTorch; the ONNX
    and PyTorch scorers of DUM/predict.py give the same scores; --model must match the file."""
    ckpt = write_checkpoint(tmp_path / "checkpoint.pth", model=name)
    out = tmp_path / "model.onnx"
    result = export_onnx.main(export_onnx.get_args_parser().parse_args(["--checkpoint", str(ckpt), "--out", str(out)]))
    assert result["model"] == name and max(result["max_abs_diff"].values()) <= 1e-4
    proto = onnx.load(str(out))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["dsdg.model"] == name and export_onnx.read_metadata(props)["model"] == name
    assert not {n.op_type for n in proto.graph.node} & {"RandomNormal", "RandomNormalLike", "Exp"}
    faces = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(6)) * 2 - 1
    torch_scorer, onnx_scorer = predict.TorchScorer(ckpt, CPU), predict.OnnxScorer(out, CPU)
    assert torch_scorer.model == onnx_scorer.model == name
    scores = torch_scorer(faces)
    assert np.abs(onnx_scorer(faces) - scores).max() <= 1e-4 and np.ptp(scores) > 1e-3
    with pytest.raises(export_onnx.ExportError, match=f"holds '{name}'"):
        predict.OnnxScorer(out, CPU, model=_other(name))
    with pytest.raises(CheckpointError, match=f"trained as '{name}'"):
        predict.TorchScorer(ckpt, CPU, model=_other(name))


def test_numbered_scripts_with_model(train_root, eval_root, tmp_path):
    """MODEL=cdcn bash scripts/08_train_dum.sh trains plain CDCN; scripts/09_test_dum.sh tests that checkpoint
    as CDCN (the network read from it, MODEL checked)."""
    env = dict(os.environ, DSDG_PYTHON=sys.executable, MODEL="cdcn", DUM_DIR=str(tmp_path / "dum"),
               TEST_DIR=str(tmp_path / "test"), DEVICE="cpu")
    train_env = dict(env, CROP_ROOT=str(train_root), IMAGE_SIZE="32", MAP_SIZE="4", BATCH_SIZE="2", EPOCHS="1",
                     DUM_WORKERS="0", AMP="false")
    done = subprocess.run(["bash", "scripts/08_train_dum.sh", "--iters-per-epoch", "1"], cwd=REPO, env=train_env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "--model cdcn " in done.stdout  # the printed command
    assert load_checkpoint(tmp_path / "dum" / "checkpoint.pth", kind="dum")["args"]["model"] == "cdcn"
    done = subprocess.run(["bash", "scripts/09_test_dum.sh", "--workers", "0", "--plots", "false"], cwd=REPO,
                          env=dict(env, CROP_ROOT=str(eval_root)), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "test" / "report.json").read_text())
    assert report["model"] == "cdcn" and report["checkpoint"] == str(tmp_path / "dum" / "checkpoint.pth")
    assert report["dev"]["videos"] == 12
    # the HTML report by default (REPORT= turns it off), its path printed, the worst errors drawn
    index = tmp_path / "test" / "report" / "index.html"
    assert f"--report {index.parent}" in done.stdout and f"evaluation report: {index}" in done.stdout
    assert report["report"] == str(index) and list(index.parent.glob("errors/*.png"))
