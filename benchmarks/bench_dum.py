"""Speed of the DUM depth network (CDCN + DUM): inference and training steps, per variant.

    python benchmarks/bench_dum.py --image-size 64 --map-size 8 --batch-size 16
    python benchmarks/bench_dum.py --image-size 256 --map-size 32 --batch-size 4 --device cuda

Variants, each on the same random weights and images:

* ``explicit``: every central-difference layer as two convolutions (the original's formula);
* ``folded``: theta folded into the 3x3 kernel's centre tap (one convolution, the default);
* ``folded+cl``: plus channels_last memory format (what the trainer uses);
* ``folded+cl+amp``: plus autocast (bf16 on CPUs with fast bf16 kernels, fp16 on CUDA); skipped
  on CPUs without them, where bf16 convolutions take a slow reference path.

Also times the training data pipeline (read/augment/normalise one batch) from a throw-away crop
root, from disk and preloaded. Prints images per second (median of ``--steps`` after
``--warmup``) and writes ``<out>/bench_dum.json``. Not a test: numbers depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.data import default_collate  # noqa: E402

from DUM.engine import autocast, cpu_bf16_supported  # noqa: E402
from DUM.losses import dum_losses  # noqa: E402
from DUM.models import CDCN_U  # noqa: E402
from misc.device import resolve_device  # noqa: E402
from misc.io import atomic_write_json  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("CDCN + DUM speed", add_help=False)
    p.add_argument("--image-size", type=int, default=64, help="input size (paper: 256; demo: 64)")
    p.add_argument("--map-size", type=int, default=8, help="depth map size (paper: 32; demo: 8)")
    p.add_argument("--batch-size", type=int, default=16, help="images per step (default 16)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per measurement (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--variants", nargs="+", default=["explicit", "folded", "folded+cl", "folded+cl+amp"],
                   help="which variants to time (default: all four)")
    p.add_argument("--skip-data", action="store_true", help="do not time the data pipeline")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                   help="folder for bench_dum.json (default benchmarks/results)")
    return p


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_variant(name: str, args: argparse.Namespace, device: torch.device) -> dict:
    """Images/s for inference (no_grad, eval) and one training step (forward, losses, backward, Adam)."""
    torch.manual_seed(0)
    cl = "+cl" in name
    amp = name.endswith("+amp")
    model = CDCN_U(map_size=args.map_size, folded=name != "explicit").to(device)
    fmt = torch.channels_last if cl else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device).contiguous(memory_format=fmt)
    target = torch.rand(args.batch_size, args.map_size, args.map_size, device=device)
    generated = torch.arange(args.batch_size, device=device) >= int(0.75 * args.batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=5e-5)

    def infer():
        with torch.no_grad(), autocast(device, amp):
            model(x)

    def train_step():
        with autocast(device, amp):
            out = model(x)
        loss = dum_losses(out.mu.float(), out.logvar.float(), out.sample.float(), target, generated)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.eval()
    t_inf = _median_time(infer, args.steps, args.warmup, device)
    model.train()
    t_train = _median_time(train_step, args.steps, args.warmup, device)
    return {"variant": name, "infer_img_s": args.batch_size / t_inf, "train_img_s": args.batch_size / t_train}


def time_data(args: argparse.Namespace) -> dict:
    """Samples/s of DUMTrainDataset (read + augment + normalise + collate), from disk and preloaded."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from dum_helpers import make_crop_root

    from data.oulu import read_protocol
    from DUM.datasets import DUMTrainDataset
    from DUM.transforms import TrainAugment

    with tempfile.TemporaryDirectory() as tmp:
        root = make_crop_root(Path(tmp), image_size=args.image_size, map_size=args.map_size, frames=4)
        rows = read_protocol(root / "protocols" / "Protocol_1" / "Train.txt")
        out = {}
        for label, mb in (("disk", 0), ("preloaded", 256)):
            ds = DUMTrainDataset(root, rows, args.image_size, args.map_size, augment=TrainAugment(), preload_mb=mb)
            keys = [(i % len(ds), i) for i in range(args.batch_size)]
            t = _median_time(lambda: default_collate([ds[k] for k in keys]), args.steps, 1, torch.device("cpu"))
            out[f"data_{label}_samples_s"] = args.batch_size / t
    return out


def main(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    can_amp = device.type == "cuda" or cpu_bf16_supported()
    rows = []
    for name in args.variants:
        if name.endswith("+amp") and not can_amp:
            print(f"{name}: skipped (no fast bf16 convolutions on this CPU)")
            continue
        r = time_variant(name, args, device)
        rows.append(r)
        print(f"{name:>15}: inference {r['infer_img_s']:8.1f} img/s   training {r['train_img_s']:8.1f} img/s")
    result = {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "image_size": args.image_size, "map_size": args.map_size,
              "batch_size": args.batch_size, "cpu_bf16": cpu_bf16_supported(), "variants": rows}
    if not args.skip_data:
        result.update(time_data(args))
        print(f"data pipeline: disk {result['data_disk_samples_s']:.0f} samples/s, "
              f"preloaded {result['data_preloaded_samples_s']:.0f} samples/s (one process)")
    atomic_write_json(args.out / "bench_dum.json", result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__.split("\n\n")[0])
    main(parser.parse_args())
