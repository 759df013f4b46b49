"""Speed of the DUM depth network (CDCN + DUM) against the original formulation, and of its data pipeline.

    python benchmarks/bench_dum.py                                   # paper size: 256x256, batch 4
    python benchmarks/bench_dum.py --image-size 64 --map-size 8      # demo size

Compared in one process, interleaved (A B A B ...), on the same weights and images:

* baseline: :class:`benchmarks.original.OriginalCDCN_U`, two convolutions per central-difference
  layer, NCHW float32, ``nn.Upsample`` on all three blocks, Adam one tensor at a time;
* ours: :class:`DUM.models.CDCN_U` as the project runs it: theta folded into the kernel's centre
  tap, channels_last; in inference each conv + BatchNorm + ReLU is one cached oneDNN convolution
  with the ReLU fused; in training the weight gradients are GEMMs (``DUM.kernels.conv3x3_weight_grad``).

Rows: inference in float32 (outputs must agree to 1e-5), inference with bf16 autocast (max
deviation reported), optionally ``torch.compile`` (compile time reported), a training step
(forward, DUM losses, backward, Adam), and the training data pipeline (read + augment + collate,
DataLoader with 0/1/2 workers) against the model's training rate, and every depth network of
``DUM/zoo.py`` (``--models``) as the trainer runs it: inference and training-step images/s measured
interleaved in the same run, each against cdcn_u's. Not a test: numbers depend on the machine and
its load.
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from benchmarks.common import count_flops, interleaved, sync  # noqa: E402
from benchmarks.original import OriginalCDCN_U, original_adam  # noqa: E402
from DUM import zoo  # noqa: E402
from DUM.losses import dum_losses  # noqa: E402
from DUM.models import CDCN_U  # noqa: E402
from misc.device import resolve_device  # noqa: E402
from misc.io import atomic_write_json  # noqa: E402
from misc.precision import native_cpu_bf16  # noqa: E402

INFER_TARGET, BF16_TARGET, TRAIN_TARGET = 3.5, 7.0, 3.0
MAX_DIFF = 1e-5


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("CDCN + DUM speed", add_help=False)
    p.add_argument("--image-size", type=int, default=256, help="input size (paper: 256). Default: %(default)s")
    p.add_argument("--map-size", type=int, default=32, help="depth map size (paper: 32). Default: %(default)s")
    p.add_argument("--batch-size", type=int, default=4, help="images per timed call. Default: %(default)s")
    p.add_argument("--rounds", "--steps", type=int, default=5,
                   help="timed calls per variant, interleaved (median reported). Default: %(default)s")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per variant first. Default: %(default)s")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None,
                   help="the bf16 autocast rows (inference, training step) beside the fp32 ones: 'bf16' timed in "
                        "full, 'auto' timed with fewer rounds where the CPU has no native bf16 "
                        "(misc.precision.native_cpu_bf16: it is then emulated and far slower), 'fp32' not timed. "
                        "Default: auto")
    p.add_argument("--bf16", choices=("auto", "on", "off"), default=None, help=argparse.SUPPRESS)  # older name
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile'd inference (inductor with freezing; compile time reported)")
    p.add_argument("--data-batch-size", type=int, default=64,
                   help="DataLoader batch for the data pipeline (paper: 64). Default: %(default)s")
    p.add_argument("--data-batches", type=int, default=4, help="batches timed per worker count. Default: %(default)s")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2],
                   help="DataLoader worker counts to time. Default: 0 1 2")
    p.add_argument("--skip-data", action="store_true", help="do not time the data pipeline")
    p.add_argument("--models", "--model", nargs="+", choices=zoo.NAMES, default=list(zoo.NAMES), metavar="MODEL",
                   help=f"depth networks of the per-network rows, any of {' '.join(zoo.NAMES)}. Default: all")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N. Default: %(default)s")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                   help="folder for bench_dum.json (default benchmarks/results)")
    return p


def trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give the BatchNorm layers non-trivial affine parameters and running statistics (a fresh
    network has 1/0/0/1, which would hide errors in BN folding)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)
                m.running_mean.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return model


def make_pair(args, device: torch.device):
    """(original, ours) with identical weights; ours in channels_last like DUM/train.py and load_model."""
    torch.manual_seed(0)
    original = trained_like(OriginalCDCN_U(map_size=args.map_size)).to(device)
    ours = CDCN_U(map_size=args.map_size)
    ours.load_state_dict(original.state_dict())
    return original, ours.to(device).to(memory_format=torch.channels_last)


def flops_per_image(args, train: bool, model: str = "cdcn_u") -> int:
    """Convolution + matmul FLOPs of one image through a network of ``DUM.zoo`` (forward, or a whole
    training step with its objective), counted on the meta device: 2 * C_in * C_out * k * k per output
    pixel, the direct convolution."""
    spec = zoo.get(model)
    with torch.device("meta"):
        net = spec.build(map_size=args.map_size).train(train)
        x = torch.randn(1, 3, args.image_size, args.image_size)
        target = torch.rand(1, args.map_size, args.map_size)
        generated = torch.zeros(1, dtype=torch.bool)

    def run():
        if not train:
            with torch.no_grad():
                net(x)
            return
        spec.losses(net(x), target, generated)["total"].backward()

    return count_flops(run)


def row(what: str, unit: str, base: Optional[float], ours: Optional[float], target: Optional[float],
        gflop_per_item: Optional[float] = None, extra_ok: bool = True, note: str = "", higher_is_better: bool = True,
        **more) -> dict:
    """One result row. ``base``/``ours`` are rates (items/s); ratio = ours / base."""
    ratio = None if not base or ours is None else ours / base
    met = None if target is None else bool(ratio is not None and ratio >= target and extra_ok)
    r = {"what": what, "unit": unit, "baseline": base, "ours": ours, "ratio": ratio, "target": target, "met": met,
         "gflops_baseline": None if base is None or gflop_per_item is None else base * gflop_per_item,
         "gflops_ours": None if ours is None or gflop_per_item is None else ours * gflop_per_item, "note": note}
    r.update(more)
    return r


def inference_rows(args, device: torch.device, log=print) -> List[dict]:
    original, ours = make_pair(args, device)
    original.eval(), ours.eval()
    b, s = args.batch_size, args.image_size
    x = torch.randn(b, 3, s, s, generator=torch.Generator().manual_seed(1)).to(device)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    gflop = flops_per_image(args, train=False) / 1e9
    with torch.no_grad():
        ref = original(x)[0]
        diff = (ours(x_cl).mu - ref).abs().max().item()
        log(f"  inference fp32: max |mu_ours - mu_original| = {diff:.2e}")
        t = interleaved({"original": lambda: original(x), "ours": lambda: ours(x_cl)}, args.rounds, args.warmup,
                        device)
    rows = [row("CDCN_U inference, fp32", "img/s", b / t["original"].median, b / t["ours"].median, INFER_TARGET,
                gflop, extra_ok=diff <= MAX_DIFF, note=f"max |diff| {diff:.1e} (limit {MAX_DIFF:.0e})",
                max_abs_diff=diff, timings={k: v.as_dict() for k, v in t.items()},
                cpu_ratio=t["original"].cpu_median / t["ours"].cpu_median)]
    log(f"  inference fp32: original {rows[-1]['baseline']:.2f} img/s, ours {rows[-1]['ours']:.2f} img/s")

    reps = bf16_rounds(args, device)
    if reps:
        fast = native_cpu_bf16()
        with torch.no_grad():
            def bf16():
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return ours(x_cl)
            dev = (bf16().mu.float() - ref).abs().max().item()
            t = interleaved({"original": lambda: original(x), "ours": bf16}, reps, min(args.warmup, 1), device)
        note = (f"max |deviation| {dev:.1e}; " + ("CPU has fast bf16 kernels" if fast else
                "this CPU has no AVX512-BF16/AMX: oneDNN emulates bf16, slower than fp32; the trainers "
                "leave bf16 off here (misc.precision.native_cpu_bf16)"))
        rows.append(row("CDCN_U inference, bf16 autocast (vs original fp32)", "img/s", b / t["original"].median,
                        b / t["ours"].median, BF16_TARGET, gflop, note=note, max_abs_deviation=dev,
                        cpu_bf16_supported=fast, timings={k: v.as_dict() for k, v in t.items()}))
        log(f"  inference bf16: ours {rows[-1]['ours']:.2f} img/s, deviation {dev:.1e}")

    if args.compile:
        rows.append(compile_row(args, original, ours, x, x_cl, ref, gflop, device, log))
    return rows


def bf16_rounds(args, device: torch.device) -> int:
    """Timed rounds of the bf16 autocast rows (0: not timed). Without AVX512-BF16/AMX oneDNN emulates
    bf16, several times slower than fp32: 'auto' then times it fewer times so the run stays short."""
    spec = args.precision or {"on": "bf16", "off": "fp32"}.get(getattr(args, "bf16", None) or "auto", "auto")
    if spec == "fp32" or device.type != "cpu":
        return 0
    return args.rounds if (spec == "bf16" or native_cpu_bf16()) else max(1, min(2, args.rounds))


def compile_row(args, original, ours, x, x_cl, ref, gflop, device, log) -> dict:
    """torch.compile (inductor, freezing: BN folded, weights pre-packed) inference against the original."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    model = copy.deepcopy(ours)
    try:
        compiled = torch.compile(model)
        with torch.no_grad():
            t0 = time.perf_counter()
            out = compiled(x_cl)
            sync(device)
            compile_s = time.perf_counter() - t0
            diff = (out.mu - ref).abs().max().item()
            t = interleaved({"original": lambda: original(x), "ours": lambda: compiled(x_cl)}, args.rounds,
                            args.warmup, device)
    except Exception as e:  # no C++ compiler, unsupported op, ...: report instead of failing the run
        log(f"  torch.compile failed: {type(e).__name__}: {e}")
        return row("CDCN_U inference, fp32, torch.compile", "img/s", None, None, None,
                   note=f"torch.compile failed: {type(e).__name__}: {str(e)[:200]}")
    finally:
        inductor_config.freezing = False
    b = args.batch_size
    log(f"  torch.compile: {compile_s:.0f} s to compile, {b / t['ours'].median:.2f} img/s, max |diff| {diff:.1e}")
    return row("CDCN_U inference, fp32, torch.compile (option)", "img/s", b / t["original"].median,
               b / t["ours"].median, None, gflop, note=f"compile + first call {compile_s:.0f} s; max |diff| {diff:.1e}",
               compile_s=compile_s, max_abs_diff=diff, timings={k: v.as_dict() for k, v in t.items()})


def training_rows(args, device: torch.device, log=print) -> List[dict]:
    """One optimisation step: forward, the DUM losses (48/16 real/generated weighting), backward, Adam."""
    original, ours = make_pair(args, device)
    ours_nchw = copy.deepcopy(ours).to(memory_format=torch.contiguous_format)
    b, s, m = args.batch_size, args.image_size, args.map_size
    g = torch.Generator().manual_seed(2)
    x = torch.randn(b, 3, s, s, generator=g).to(device)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    target = torch.rand(b, m, m, generator=g).to(device)
    generated = torch.arange(b, device=device) >= int(0.75 * b)
    # DUM/train.py: Adam(lr 1e-4, weight decay 5e-5), PyTorch's default implementation.
    opts = {"original": original_adam(original.parameters(), 1e-4, 5e-5),
            "ours": torch.optim.Adam(ours.parameters(), lr=1e-4, weight_decay=5e-5),
            "ours_nchw": torch.optim.Adam(ours_nchw.parameters(), lr=1e-4, weight_decay=5e-5)}
    models = {"original": (original, x), "ours": (ours, x_cl), "ours_nchw": (ours_nchw, x)}

    def step(name):
        model, inp = models[name]
        out = model(inp)
        mu, logvar, sample = out[0], out[1], out[2]
        loss = dum_losses(mu, logvar, sample, target, generated)["total"]
        opts[name].zero_grad(set_to_none=True)
        loss.backward()
        opts[name].step()

    for mdl, _ in models.values():
        mdl.train()
    gflop = flops_per_image(args, train=True) / 1e9
    t = interleaved({k: (lambda k=k: step(k)) for k in models}, max(1, args.rounds - 2), args.warmup, device)
    base = b / t["original"].median
    rows = [row("CDCN_U training step, fp32", "img/s", base, b / t["ours"].median, TRAIN_TARGET, gflop,
                note="forward + losses + backward + Adam; channels_last as DUM/train.py",
                timings={k: v.as_dict() for k, v in t.items()},
                cpu_ratio=t["original"].cpu_median / t["ours"].cpu_median),
            row("CDCN_U training step, fp32, NCHW (for comparison)", "img/s", base, b / t["ours_nchw"].median, None,
                gflop, note="same model without channels_last")]
    log(f"  training: original {base:.2f} img/s, ours {rows[0]['ours']:.2f} img/s (NCHW {rows[1]['ours']:.2f})")
    reps = bf16_rounds(args, device)
    if reps:
        def bf16_step():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = ours(x_cl)
            loss = dum_losses(out[0].float(), out[1].float(), out[2].float(), target, generated)["total"]
            opts["ours"].zero_grad(set_to_none=True)
            loss.backward()
            opts["ours"].step()

        t = interleaved({"original": lambda: step("original"), "ours": bf16_step}, max(1, reps - 2),
                        min(args.warmup, 1), device)
        fast = native_cpu_bf16()
        rows.append(row("CDCN_U training step, bf16 autocast (vs original fp32)", "img/s", b / t["original"].median,
                        b / t["ours"].median, None, gflop, native_bf16=fast,
                        note="DUM/train.py --precision bf16; " + ("native bf16" if fast else
                             "this CPU has no native bf16: emulated, slower than fp32"),
                        timings={k: v.as_dict() for k, v in t.items()}))
        log(f"  training bf16: ours {rows[-1]['ours']:.2f} img/s")
    return rows


def network_rows(args, device: torch.device, log=print) -> List[dict]:
    """Inference (eval, no autograd) and training-step (forward, the network's objective, backward,
    Adam) images/s of each network in ``args.models``, as DUM/train.py and DUM/test.py run them
    (channels_last, the speed paths on); the networks are interleaved in one timing loop per kind, and
    each row's baseline column is cdcn_u's rate from the same loop (when cdcn_u is among them)."""
    b, s, m = args.batch_size, args.image_size, args.map_size
    g = torch.Generator().manual_seed(3)
    x = torch.randn(b, 3, s, s, generator=g).to(device).contiguous(memory_format=torch.channels_last)
    target = torch.rand(b, m, m, generator=g).to(device)
    generated = torch.arange(b, device=device) >= int(0.75 * b)
    nets, opts = {}, {}
    for name in args.models:
        torch.manual_seed(0)
        nets[name] = trained_like(zoo.get(name).build(map_size=m)).to(device).to(memory_format=torch.channels_last)
        opts[name] = torch.optim.Adam(nets[name].parameters(), lr=1e-4, weight_decay=5e-5)

    def infer(name):
        with torch.no_grad():
            nets[name](x)

    def step(name):
        loss = zoo.get(name).losses(nets[name](x), target, generated)["total"]
        opts[name].zero_grad(set_to_none=True)
        loss.backward()
        opts[name].step()

    rows = []
    for kind, fn, train, reps in (("inference", infer, False, args.rounds), ("training step", step, True,
                                                                             max(1, args.rounds - 2))):
        for net in nets.values():
            net.train(train)
        t = interleaved({name: (lambda name=name: fn(name)) for name in nets}, reps, args.warmup, device)
        base = b / t["cdcn_u"].median if "cdcn_u" in t else None
        for name in nets:
            spec = zoo.get(name)
            gflop = flops_per_image(args, train=train, model=name) / 1e9
            rate = b / t[name].median
            rows.append(row(f"{name} {kind}, fp32", "img/s", base, rate, None, gflop,
                            note=f"{spec.cls.__name__}, {gflop:.2f} GFLOP/img; baseline column: cdcn_u in the same run",
                            model=name, gflop_per_image=gflop, timings={name: t[name].as_dict()},
                            parameters=sum(p.numel() for p in nets[name].parameters())))
            log(f"  {name} {kind}: {rate:.2f} img/s ({gflop:.2f} GFLOP/img)")
    return rows


# ----------------------------------------------------------------------------------------------
# Data pipeline
# ----------------------------------------------------------------------------------------------

def make_crop_root(root: Path, image_size: int, map_size: int, videos: int = 8, frames: int = 4) -> Path:
    """A small crop root (contract 3) of real-face JPEG crops (skimage's astronaut, jittered) with
    depth maps, half live and half attacks, and its Protocol_1/Train.txt."""
    import cv2
    from skimage import data as skdata

    from data.protocol_lists import ProtocolRow, format_protocol
    from misc.io import atomic_write_image, atomic_write_text

    rgb = skdata.astronaut()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:map_size, 0:map_size] / max(map_size - 1, 1)
    depth = (255 * np.sqrt(np.clip(1 - ((xx - .5) / .33) ** 2 - ((yy - .5) / .42) ** 2, 0, 1))).astype(np.uint8)
    rows = []
    for v in range(videos):
        video = f"1_1_{v // 2 + 1:02d}_{1 if v % 2 == 0 else 2}"
        rows.append(ProtocolRow(1 if v % 2 == 0 else -1, video))
        for i in range(1, frames + 1):
            cx, cy, side = 224 + rng.integers(-6, 7), 118 + rng.integers(-6, 7), int(139 * rng.uniform(0.95, 1.05))
            crop = rgb[cy - side // 2:cy + side // 2, cx - side // 2:cx + side // 2, ::-1]
            img = cv2.resize(np.ascontiguousarray(crop), (image_size, image_size), interpolation=cv2.INTER_AREA)
            atomic_write_image(root / "train_images" / video / f"{video}_{i}_scene.jpg", img)
            atomic_write_image(root / "train_depth" / video / f"{video}_{i}_depth1D.jpg", depth)
    atomic_write_text(root / "protocols" / "Protocol_1" / "Train.txt", format_protocol(rows))
    return root


def data_rows(args, train_img_s: Optional[float], log=print) -> List[dict]:
    """Samples/s of the DUM training pipeline (JPEG read + resize + augmentation + normalise + collate)
    through a DataLoader as DUM/train.py builds it, for each worker count, against the model's rate."""
    from data.protocol_lists import read_protocol
    from DUM.datasets import DUMTrainDataset, RealGeneratedBatchSampler
    from DUM.transforms import TrainAugment
    from misc.seed import worker_init_fn

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_dum_data_") as tmp:
        root = make_crop_root(Path(tmp), args.image_size, args.map_size)
        train_rows = read_protocol(root / "protocols" / "Protocol_1" / "Train.txt")
        dataset = DUMTrainDataset(root, train_rows, args.image_size, args.map_size, augment=TrainAugment())
        for workers in args.workers:
            sampler = RealGeneratedBatchSampler(dataset.generated, args.data_batch_size, 0.75, seed=0,
                                                iters_per_epoch=args.data_batches + 1)
            loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                persistent_workers=workers > 0, worker_init_fn=worker_init_fn)
            t0, c0 = time.perf_counter(), time.process_time()
            it = iter(loader)
            next(it)  # worker start-up and the first batch
            startup = time.perf_counter() - t0
            t1 = time.perf_counter()
            n = 0
            for batch in it:
                n += batch["image"].shape[0]
            rate = n / (time.perf_counter() - t1)
            del it, loader
            note = f"start-up + first batch {startup:.2f} s; batches of {args.data_batch_size} at {args.image_size} px"
            rows.append(row(f"DUM training data pipeline, {workers} worker(s)", "img/s", train_img_s, rate, 1.0,
                            note=note + "; baseline column = our training step's img/s (target: loader >= model)",
                            startup_s=startup, main_process_cpu_s=time.process_time() - c0))
            log(f"  data pipeline, {workers} workers: {rate:.0f} img/s (model trains {train_img_s or 0:.2f} img/s)")
    return rows


def main(args: argparse.Namespace, log=print) -> Dict[str, object]:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    log(f"CDCN_U at {args.image_size}x{args.image_size}, batch {args.batch_size}, {torch.get_num_threads()} threads")
    rows = inference_rows(args, device, log) + training_rows(args, device, log) + network_rows(args, device, log)
    if not args.skip_data:
        train = next(r for r in rows if r["what"].startswith("CDCN_U training step"))
        rows += data_rows(args, train["ours"], log)
    result = {"image_size": args.image_size, "map_size": args.map_size, "batch_size": args.batch_size,
              "rounds": args.rounds, "device": str(device), "threads": torch.get_num_threads(), "rows": rows}
    if args.out is not None:
        atomic_write_json(Path(args.out) / "bench_dum.json", result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__.split("\n\n")[0])
    main(parser.parse_args())
