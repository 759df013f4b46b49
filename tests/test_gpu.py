"""CUDA tests (marker ``gpu``; skipped where torch sees no CUDA device: tests/conftest.py). Run them with
``bash benchmarks/gpu_check.sh`` (which also runs the GPU benchmark) or ``pytest -m gpu tests/test_gpu.py``.

* every depth network of DUM/zoo.py, the DSDG generator and LightCNN give on CUDA what they give on the
  CPU: inference in float32 (TF32 off), where the CPU runs its speed paths (fused conv + BN + ReLU), and
  training gradients in float64, where the CPU runs the GEMM weight gradient (inside
  ``float64_speed_paths``): ReLU/MaxPool networks are piecewise, so float32 gradients are compared nowhere.
  The CPU side runs twice, with the speed paths on and with all of them off (``DSDG_SPEED_PATHS=0``);
* the device-independent speed paths on CUDA: the folded central-difference kernel against the
  two-convolution reference, the generator's phase-kernel upsampling against the materialised one;
* AMP training steps (fp16 with a GradScaler, bf16) of every network stay finite and move the weights;
* channels_last gives the same outputs and gradients as the default layout;
* SyncBatchNorm under torchrun with one process (NCCL) gives the BatchNorm result;
* the DUM DataLoader with 2 workers and pinned memory delivers the batches of the main process;
* the pipeline on the prepared inputs (benchmarks/gpu_prep.py): DUM/train.py with fp16 on CUDA, DUM/test.py,
  the predictor on CUDA against the CPU, the ONNX export of the CUDA-trained checkpoint, train_generator.py
  (``benchmarks.gpu_check.pipeline_check``).
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from deploy_helpers import tiny_model
from DUM import zoo
from DUM.kernels import float64_speed_paths

pytestmark = pytest.mark.gpu

REPO = Path(__file__).resolve().parents[1]
CUDA = torch.device("cuda")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def gpu_inputs(tmp_path_factory) -> Path:
    """The prepared inputs: $DSDG_GPU_INPUTS (set by benchmarks/gpu_check.sh) or benchmarks/gpu_inputs;
    made here when neither exists and this machine can (data/synthetic.py needs scikit-image)."""
    from benchmarks import gpu_prep

    folder = Path(os.environ.get("DSDG_GPU_INPUTS", gpu_prep.DEFAULT_OUT))
    if not (folder / gpu_prep.MANIFEST).is_file():
        try:
            import skimage  # noqa: F401
        except ImportError:
            pytest.fail(f"{folder}: no prepared inputs, and this machine cannot make them (no scikit-image); run "
                        f"`python -m benchmarks.gpu_prep --out {folder}` on a CPU machine and carry the folder")
        folder = tmp_path_factory.mktemp("gpu_inputs") / "inputs"
        gpu_prep.prepare(folder, log=lambda *a: None)
    gpu_prep.check_inputs(folder)
    return folder


@pytest.fixture(autouse=True)
def exact_cuda_fp32():
    """TF32 off while a test runs: float32 on CUDA is then float32, comparable with the CPU."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(params=["on", "off"])
def speed_paths(request, monkeypatch):
    """Each CPU reference twice: with the CPU speed paths (the default) and with all of them off
    (DSDG_SPEED_PATHS=0, misc/speed_paths.py): CUDA must match both."""
    from misc.speed_paths import ENV

    monkeypatch.setenv(ENV, "1" if request.param == "on" else "0")
    return request.param


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (both moved to the CPU in float64)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def depth_loss(out, w_mu: torch.Tensor, w_var: torch.Tensor) -> torch.Tensor:
    """A loss on mu (and logvar) with fixed weights: deterministic, unlike the sampled map."""
    loss = (out.mu * w_mu).sum()
    return loss + (out.logvar * w_var).sum() if out.logvar is not None else loss


# ----------------------------------------------------------------------------------------------
# The networks on CUDA against the CPU
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", zoo.NAMES)
def test_depth_network_inference_cuda_equals_cpu(name, speed_paths):
    """Eval outputs (mu, logvar) in float32: the CPU's fused conv + BN + ReLU path (and the plain one)
    against cuDNN."""
    cpu = tiny_model(map_size=8, image_size=64, model=name).eval()
    gpu = copy.deepcopy(cpu).to(CUDA)
    x = channels_last(torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    with torch.no_grad():
        want, got = cpu(x), gpu(x.to(CUDA))
    assert rel_diff(got.mu, want.mu) < 1e-4, name
    if want.logvar is not None:
        assert rel_diff(got.logvar, want.logvar) < 1e-4, name


@pytest.mark.parametrize("name", zoo.NAMES)
def test_depth_network_training_gradients_cuda_equal_cpu(name, speed_paths):
    """Training-mode forward and every parameter gradient in float64: the CPU's GEMM weight gradient on
    channels_last inputs (and the plain path) against CUDA; the BatchNorm running statistics move alike."""
    torch.manual_seed(0)
    cpu = zoo.get(name).build(map_size=8).double().to(memory_format=torch.channels_last).train()
    gpu = copy.deepcopy(cpu).to(CUDA)
    g = torch.Generator().manual_seed(2)
    x = channels_last(torch.randn(4, 3, 64, 64, generator=g, dtype=torch.float64))
    w_mu, w_var = torch.randn(4, 8, 8, generator=g, dtype=torch.float64), torch.randn(4, 8, 8, generator=g,
                                                                                        dtype=torch.float64)
    with float64_speed_paths():
        depth_loss(cpu(x), w_mu, w_var).backward()
    depth_loss(gpu(x.to(CUDA)), w_mu.to(CUDA), w_var.to(CUDA)).backward()
    for (n, p), q in zip(cpu.named_parameters(), gpu.parameters()):
        if p.grad is None:
            assert q.grad is None, n
            continue
        assert rel_diff(q.grad, p.grad) < 1e-9, n
    for (n, b), c in zip(cpu.named_buffers(), gpu.buffers()):
        if b.is_floating_point():
            assert rel_diff(c, b) < 1e-9 or float(b.abs().max()) == 0, n


def test_folded_central_difference_equals_reference_on_cuda():
    """CDCN_U with the theta fold (one convolution) against the two-convolution reference, on CUDA, float64."""
    from DUM.models import CDCN_U

    torch.manual_seed(0)
    folded = CDCN_U(map_size=8).double().to(CUDA).train()
    reference = CDCN_U(map_size=8, folded=False).double().to(CUDA).train()
    reference.load_state_dict(folded.state_dict())
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 64, 64, generator=g, dtype=torch.float64).to(CUDA)
    w = torch.randn(2, 8, 8, generator=g, dtype=torch.float64).to(CUDA)
    a, b = folded(x), reference(x)
    assert rel_diff(a.mu, b.mu) < 1e-10
    depth_loss(a, w, w).backward()
    depth_loss(b, w, w).backward()
    for (n, p), q in zip(folded.named_parameters(), reference.parameters()):
        assert rel_diff(p.grad, q.grad) < 1e-9, n


def generator_loss_parts(model, spoof, live, z, w_rec):
    """A deterministic function of both encoders and the decoder (the full forward samples latents)."""
    mu_s, logvar_s, mu_a, logvar_a = model.netE_spoof(spoof)
    mu_l, logvar_l = model.netE_live(live)
    enc = (mu_s * logvar_s).sum() + (mu_a - logvar_a).sum() + (mu_l * logvar_l).sum()
    return enc + (model.netG(z) * w_rec).sum(), model.netCls(mu_a)


def test_generator_cuda_equals_cpu(speed_paths):
    """DualVAE at 64 px in float64: decoder (phase-kernel upsampling, or materialised with the speed paths
    off) outputs, spoof-type logits and every gradient on CUDA against the CPU."""
    from networks.generator import DualVAE

    torch.manual_seed(0)
    cpu = DualVAE(hdim=16, image_size=64).double()
    gpu = copy.deepcopy(cpu).to(CUDA)
    g = torch.Generator().manual_seed(4)
    spoof, live = (torch.rand(2, 3, 64, 64, generator=g, dtype=torch.float64) for _ in range(2))
    z = torch.randn(2, 48, generator=g, dtype=torch.float64)
    w = torch.randn(2, 6, 64, 64, generator=g, dtype=torch.float64)
    (la, logits_a), (lb, logits_b) = (generator_loss_parts(cpu, spoof, live, z, w),
                                      generator_loss_parts(gpu, spoof.to(CUDA), live.to(CUDA), z.to(CUDA), w.to(CUDA)))
    assert rel_diff(lb, la) < 1e-10 and rel_diff(logits_b, logits_a) < 1e-10
    la.backward()
    lb.backward()
    for (n, p), q in zip(cpu.named_parameters(), gpu.parameters()):
        if p.grad is not None:
            assert rel_diff(q.grad, p.grad) < 1e-9, n


def test_generator_phase_upsampling_equals_materialised_on_cuda():
    """The decoder's phase-kernel path (Decoder.forward) against its layers run one by one with the
    nearest 2x upsampling materialised (nn.Sequential.forward of Decoder.main), on CUDA, float64."""
    from networks.generator import Decoder

    torch.manual_seed(0)
    dec = Decoder(hdim=16, image_size=64).double().to(CUDA)
    z = torch.randn(3, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(5)).to(CUDA)
    h = dec.fc(z).view(3, -1, 4, 4)
    assert rel_diff(dec(z), dec.main(h)) < 1e-10


def test_lightcnn_cuda_equals_cpu():
    """LightCNN-29 v2 features (random weights of the official shape) on CUDA against the CPU, float32."""
    from networks.light_cnn import LightCNN29v2

    torch.manual_seed(0)
    cpu = LightCNN29v2().eval()
    gpu = copy.deepcopy(cpu).to(CUDA)
    x = torch.rand(3, 1, 128, 128, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert rel_diff(gpu(x.to(CUDA)), cpu(x)) < 1e-4


# ----------------------------------------------------------------------------------------------
# Mixed precision, memory format
# ----------------------------------------------------------------------------------------------

def _amp_steps(step, model, precision: str, steps: int = 5) -> list:
    """``steps`` optimisation steps under autocast; returns the losses."""
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    losses = []
    for _ in range(steps):
        with torch.autocast("cuda", dtype=dtype):
            loss = step()
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(float(loss))
    return losses


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("name", zoo.NAMES)
def test_depth_network_amp_training_is_finite(name, precision):
    """Five steps of each depth network's own objective (48/16 real/generated weighting) at 64 px:
    finite losses, finite weights that moved (fp16: with the GradScaler, which may skip the first steps)."""
    spec = zoo.get(name)
    torch.manual_seed(0)
    model = spec.build(map_size=8).to(CUDA).to(memory_format=torch.channels_last).train()
    before = copy.deepcopy(model.state_dict())
    g = torch.Generator().manual_seed(7)
    x = channels_last(torch.rand(8, 3, 64, 64, generator=g) * 2 - 1).to(CUDA)
    target = torch.rand(8, 8, 8, generator=g).to(CUDA)
    generated = torch.arange(8, device=CUDA) >= 6
    losses = _amp_steps(lambda: spec.losses(model(x), target, generated)["total"], model, precision)
    assert all(torch.isfinite(torch.tensor(losses))), losses
    state = model.state_dict()
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert any(not torch.equal(state[k], before[k]) for k in state if k.endswith("weight"))


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_generator_amp_training_is_finite(precision):
    """Five generator steps with the LightCNN identity losses (random weights) at 64 px: finite."""
    from networks.generator import DualVAE
    from networks.light_cnn import LightCNN29v2
    from networks.losses import LossWeights, generator_loss

    torch.manual_seed(0)
    model = DualVAE(hdim=16, image_size=64).to(CUDA).train()
    lightcnn = LightCNN29v2().to(CUDA).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(8)
    spoof, live = (torch.rand(4, 3, 64, 64, generator=g).to(CUDA) for _ in range(2))
    kind = torch.randint(0, 4, (4,), generator=g).to(CUDA)
    losses = _amp_steps(lambda: generator_loss(model(spoof, live), spoof, live, kind, LossWeights(), lightcnn)[0],
                        model, precision)
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_channels_last_equals_default_layout_on_cuda():
    """CDCN_U on CUDA: channels_last and contiguous inputs/weights give the same eval outputs (float32)
    and the same training gradients (float64); the trainers use channels_last."""
    base = tiny_model(map_size=8, image_size=64).to(CUDA)
    cl = copy.deepcopy(base).to(memory_format=torch.channels_last)
    x = (torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(9)) * 2 - 1).to(CUDA)
    with torch.no_grad():
        assert rel_diff(cl.eval()(channels_last(x)).mu, base.eval()(x).mu) < 1e-5
    base, cl = base.double().train(), cl.double().train()
    w = torch.randn(4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(10)).to(CUDA)
    depth_loss(cl(channels_last(x.double())), w, w).backward()
    depth_loss(base(x.double()), w, w).backward()
    for (n, p), q in zip(base.named_parameters(), cl.parameters()):
        assert rel_diff(q.grad, p.grad) < 1e-9, n


# ----------------------------------------------------------------------------------------------
# SyncBatchNorm under torchrun, DataLoader workers
# ----------------------------------------------------------------------------------------------

SYNC_BN_WORKER = textwrap.dedent('''
    import copy, os, sys
    import torch
    import torch.distributed as dist
    from torch import nn
    from DUM import zoo

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    assert os.environ["WORLD_SIZE"] == "1", os.environ["WORLD_SIZE"]
    dist.init_process_group("nccl")
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    torch.cuda.set_device(device)
    torch.manual_seed(0)
    plain = zoo.get("cdcn_u").build(map_size=8).to(device).to(memory_format=torch.channels_last)
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(plain))  # as DUM/train.build_model does
    n_sync = sum(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
    assert n_sync == sum(isinstance(m, nn.BatchNorm2d) for m in plain.modules()) > 0, n_sync
    ddp = nn.parallel.DistributedDataParallel(synced, device_ids=[device.index])
    x = (torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1).to(device)
    x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(6, 8, 8, generator=torch.Generator().manual_seed(2)).to(device)
    loss = lambda out: (out.mu * w).sum() + (out.logvar * w).sum()  # every parameter gets a gradient (DDP)
    loss(ddp(x)).backward()
    loss(plain(x)).backward()
    worst = 0.0
    for (n, p), q in zip(plain.named_parameters(), synced.parameters()):
        worst = max(worst, float((p.grad - q.grad).abs().max() / p.grad.abs().max().clamp(min=1e-30)))
    stats = max(float((a - b).abs().max()) for a, b in zip(plain.buffers(), synced.buffers()) if a.is_floating_point())
    print(f"sync-bn layers {n_sync} worst relative gradient difference {worst:.2e} running stats {stats:.2e}")
    assert worst < 1e-3 and stats < 1e-5, (worst, stats)
    dist.destroy_process_group()
    print("sync-bn ok")
''')


def test_sync_batchnorm_under_torchrun_one_process(tmp_path):
    """torchrun --nproc_per_node=1, NCCL: CDCN_U with SyncBatchNorm inside DDP gives the gradients and
    running statistics of plain BatchNorm (a world of one)."""
    script = tmp_path / "sync_bn_worker.py"
    script.write_text(SYNC_BN_WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                           str(script)], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and "sync-bn ok" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]


def test_dataloader_workers_pinned_batches_equal_main_process(gpu_inputs):
    """The DUM training loader as DUM/train.py builds it (pin_memory on CUDA) with 2 workers delivers,
    moved to CUDA, exactly the batches of the main process (per-sample seeds: augmentation included)."""
    from torch.utils.data import DataLoader

    from data.protocol_lists import read_protocol
    from DUM.datasets import DUMTrainDataset, RealGeneratedBatchSampler
    from DUM.transforms import TrainAugment
    from misc.seed import worker_init_fn

    crop = gpu_inputs / "crop"
    rows = read_protocol(crop / "protocols" / "Protocol_1" / "Train.txt")
    dataset = DUMTrainDataset(crop, rows, 64, 8, augment=TrainAugment())

    def batches(workers: int):
        sampler = RealGeneratedBatchSampler(dataset.generated, 4, 0.75, seed=3, iters_per_epoch=3)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=True,
                            worker_init_fn=worker_init_fn, generator=torch.Generator().manual_seed(0))
        out = []
        for b in loader:
            assert workers == 0 or b["image"].is_pinned()
            out.append({k: v.to(CUDA, non_blocking=True) for k, v in b.items() if torch.is_tensor(v)})
        return out

    main, workers = batches(0), batches(2)
    assert len(main) == len(workers) == 3
    for a, b in zip(main, workers):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------------
# The pipeline: train on CUDA, test, predict, export, the generator
# ----------------------------------------------------------------------------------------------

def test_train_test_predict_export_on_cuda(gpu_inputs, tmp_path):
    """benchmarks.gpu_check.pipeline_check on CUDA: DUM/train.py (fp16, 2 workers), DUM/test.py scores every
    Dev and Test video, the predictor's CUDA scores equal the CPU's, the ONNX export of the CUDA-trained
    checkpoint scores the same faces alike, train_generator.py trains."""
    from benchmarks.gpu_check import pipeline_check

    facts = pipeline_check(gpu_inputs, tmp_path, "cuda", log=print)
    assert facts["test_videos_scored"]["dev"] > 0 and facts["test_videos_scored"]["test"] > 0
    assert facts["predict_max_abs_diff_vs_cpu"] <= 1e-2 * max(1.0, abs(facts["threshold"]))
