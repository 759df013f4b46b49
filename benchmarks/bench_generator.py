"""Speed of the DSDG generator: one optimisation step and prior sampling, at a chosen size and batch.

    python benchmarks/bench_generator.py --image-size 64 --batch-size 8
    python benchmarks/bench_generator.py --image-size 256 --batch-size 4 --identity-loss true --amp true

Random weights and random images (speed does not depend on them); LightCNN, when enabled, is a
randomly initialised LightCNN-29 v2 of the official shape. Prints seconds per step (median of
``--steps`` after ``--warmup`` steps) and images per second. Not a test: numbers depend on the machine.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from misc.cli import bool_flag  # noqa: E402
from misc.device import add_device_argument, resolve_device  # noqa: E402
from networks.engine import autocast, sample_pairs  # noqa: E402
from networks.generator import DualVAE  # noqa: E402
from networks.light_cnn import LightCNN29v2  # noqa: E402
from networks.losses import LossWeights, generator_loss  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("generator benchmark", add_help=False)
    p.add_argument("--image-size", type=int, default=64, help="generator image size. Default: %(default)s.")
    p.add_argument("--hdim", type=int, default=128, help="latent size. Default: %(default)s.")
    p.add_argument("--batch-size", type=int, default=8, help="batch size. Default: %(default)s.")
    p.add_argument("--identity-loss", type=bool_flag, default=False,
                   help="include the LightCNN identity and pair losses. Default: %(default)s.")
    p.add_argument("--amp", type=bool_flag, default=False,
                   help="mixed precision (float16 on CUDA, bfloat16 on CPU). Default: %(default)s.")
    p.add_argument("--steps", type=int, default=5, help="timed steps. Default: %(default)s.")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first. Default: %(default)s.")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default).")
    add_device_argument(p)
    return p


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = DualVAE(args.hdim, args.image_size).to(device)
    lightcnn = LightCNN29v2().to(device).eval().requires_grad_(False) if args.identity_loss else None
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, fused=True)  # as train_generator.py
    scaler = torch.amp.GradScaler("cuda", enabled=args.amp and device.type == "cuda")
    b, s = args.batch_size, args.image_size
    spoof, live = torch.rand(b, 3, s, s, device=device), torch.rand(b, 3, s, s, device=device)
    kind = torch.randint(0, 4, (b,), device=device)
    weights = LossWeights()

    def step() -> None:
        with autocast(device, args.amp):
            out = model(spoof, live)
            total, _ = generator_loss(out, spoof, live, kind, weights, lightcnn)
        opt.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.step(opt)
        scaler.update()

    times, cpu = [], []
    for i in range(args.warmup + args.steps):
        sync(device)
        t, c = time.perf_counter(), time.process_time()
        step()
        sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    med = statistics.median(times)
    print(f"device {device}, {s}x{s}, batch {b}, identity loss {args.identity_loss}, amp {args.amp}, "
          f"threads {torch.get_num_threads()}")
    # CPU seconds (all threads) say more than wall time on a machine shared with other jobs.
    print(f"train step: {med:.3f} s wall, {statistics.median(cpu):.3f} s CPU (median of {len(times)}), "
          f"{b / med:.1f} pairs/s")

    gen = torch.Generator().manual_seed(0)
    with autocast(device, args.amp):
        sample_pairs(model.netG, b, gen, device)
        sync(device)
        t = time.perf_counter()
        for _ in range(args.steps):
            sample_pairs(model.netG, b, gen, device)
        sync(device)
    dt = (time.perf_counter() - t) / args.steps
    print(f"sampling: {dt:.3f} s per batch of {b}, {b / dt:.1f} pairs/s")


if __name__ == "__main__":
    main(argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__.split("\n")[0]).parse_args())
