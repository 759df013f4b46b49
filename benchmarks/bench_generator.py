"""Speed of the DSDG generator's training step and prior sampling against the original formulation.

    python benchmarks/bench_generator.py                               # 256x256, batch 4, LightCNN losses
    python benchmarks/bench_generator.py --image-size 64 --batch-size 4 --identity-loss false

Compared in one process, interleaved (A B A B ...), from the same weights and images:

* baseline: :class:`benchmarks.original.OriginalGenerator` (NCHW float32, nearest upsampling
  materialised before each decoder convolution) with Adam one tensor at a time;
* ours: :class:`networks.generator.DualVAE` as ``train_generator.py`` runs it: the decoder
  convolves the low-resolution map into the four pixel phases instead of upsampling first
  (``networks.upsample.upsample_conv2d``), fused Adam.

Both use the same losses (``networks.losses.generator_loss``) and, with ``--identity-loss``, the same
frozen LightCNN-29 v2 (random weights of the official shape: speed does not depend on them).
Not a test: numbers depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402

from benchmarks.bench_dum import row  # noqa: E402
from benchmarks.common import count_flops, interleaved  # noqa: E402
from benchmarks.original import OriginalGenerator, original_adam  # noqa: E402
from misc.cli import bool_flag  # noqa: E402
from misc.device import add_device_argument, resolve_device  # noqa: E402
from misc.io import atomic_write_json  # noqa: E402
from misc.precision import add_precision_argument, requested_spec, resolve_precision  # noqa: E402
from networks.engine import sample_pairs  # noqa: E402
from networks.generator import DualVAE  # noqa: E402
from networks.light_cnn import LightCNN29v2  # noqa: E402
from networks.losses import LossWeights, generator_loss  # noqa: E402

TRAIN_TARGET = 2.0
MAX_DIFF = 1e-5


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("generator benchmark", add_help=False)
    p.add_argument("--image-size", type=int, default=256, help="generator image size (paper: 256). Default: %(default)s.")
    p.add_argument("--hdim", type=int, default=128, help="latent size (paper: 128). Default: %(default)s.")
    p.add_argument("--batch-size", type=int, default=4, help="pairs per step. Default: %(default)s.")
    p.add_argument("--identity-loss", type=bool_flag, default=True,
                   help="include the LightCNN identity and pair losses, as the paper's step does. Default: %(default)s.")
    add_precision_argument(p, "fp32 (bf16 autocast: what train_generator.py --precision bf16 runs; fp16 on CUDA "
                              "with loss scaling)")
    p.add_argument("--rounds", "--steps", type=int, default=3,
                   help="timed steps per variant, interleaved (median reported). Default: %(default)s.")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per variant first. Default: %(default)s.")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default).")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                   help="folder for bench_generator.json (default benchmarks/results)")
    add_device_argument(p)
    return p


def flops_per_pair(args, identity_loss: bool) -> int:
    """FLOPs of one pair through the *original* formulation's training step (forward, losses with
    LightCNN, backward), counted on the meta device. Used for both columns, so GFLOP/s compares
    useful work: our decoder performs fewer operations for the same result."""
    with torch.device("meta"):
        model = OriginalGenerator(args.hdim, image_size=args.image_size)
        lightcnn = LightCNN29v2().eval().requires_grad_(False) if identity_loss else None
        spoof = torch.rand(1, 3, args.image_size, args.image_size)
        live = torch.rand(1, 3, args.image_size, args.image_size)
        kind = torch.zeros(1, dtype=torch.long)

    def run():
        total, _ = generator_loss(model(spoof, live), spoof, live, kind, LossWeights(), lightcnn)
        total.backward()

    return count_flops(run)


def main(args: argparse.Namespace, log=print) -> Dict[str, object]:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    b, s = args.batch_size, args.image_size
    log(f"generator at {s}x{s}, batch {b}, identity loss {args.identity_loss}, {torch.get_num_threads()} threads")
    torch.manual_seed(0)
    original = OriginalGenerator(args.hdim, image_size=s).to(device)
    ours = DualVAE(args.hdim, s)
    ours.load_state_dict(original.state_dict())
    ours = ours.to(device)
    lightcnn = LightCNN29v2().to(device).eval().requires_grad_(False) if args.identity_loss else None
    g = torch.Generator().manual_seed(1)
    spoof, live = torch.rand(b, 3, s, s, generator=g).to(device), torch.rand(b, 3, s, s, generator=g).to(device)
    kind = torch.randint(0, 4, (b,), generator=g).to(device)
    weights = LossWeights()

    # Same function: decode the same latents with both decoders.
    with torch.no_grad():
        z = torch.randn(b, 3 * args.hdim, generator=g).to(device)
        diff = (ours.netG(z) - original.netG(z)).abs().max().item()
    log(f"  decoder outputs: max |ours - original| = {diff:.2e}")

    opts = {"original": original_adam(original.parameters(), lr=2e-4),
            "ours": torch.optim.Adam(ours.parameters(), lr=2e-4, fused=True)}  # as train_generator.py
    # --amp true (older name) meant fp16 on CUDA, bf16 on a CPU
    precision = resolve_precision(requested_spec(args, "fp32", "fp16" if device.type == "cuda" else "bf16"), device)
    scaler = torch.amp.GradScaler("cuda", enabled=precision.loss_scaling)

    def step_original():
        total, _ = generator_loss(original(spoof, live), spoof, live, kind, weights, lightcnn)
        opts["original"].zero_grad(set_to_none=True)
        total.backward()
        opts["original"].step()

    def step_ours():
        with precision.autocast():
            total, _ = generator_loss(ours(spoof, live), spoof, live, kind, weights, lightcnn)
        opts["ours"].zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.step(opts["ours"])
        scaler.update()

    gflop = flops_per_pair(args, args.identity_loss) / 1e9
    t = interleaved({"original": step_original, "ours": step_ours}, args.rounds, args.warmup, device)
    rows: List[dict] = [row(
        "Generator training step" + (" (with LightCNN identity losses)" if args.identity_loss else ""), "pairs/s",
        b / t["original"].median, b / t["ours"].median, TRAIN_TARGET, gflop, extra_ok=diff <= MAX_DIFF,
        note=f"decoder max |diff| {diff:.1e}; GFLOP/s counts the original's operations for both",
        max_abs_diff=diff, timings={k: v.as_dict() for k, v in t.items()}, precision=precision.name,
        cpu_ratio=t["original"].cpu_median / t["ours"].cpu_median)]
    log(f"  training step: original {rows[0]['baseline']:.2f} pairs/s, ours {rows[0]['ours']:.2f} pairs/s")

    # Prior sampling (generated.py): the decoder alone, no gradients.
    gen = torch.Generator().manual_seed(0)

    def sample_original():
        with torch.no_grad():
            original.netG.eval()
            original.netG(torch.randn(b, 3 * args.hdim, generator=gen).to(device))

    t = interleaved({"original": sample_original, "ours": lambda: sample_pairs(ours.netG, b, gen, device)},
                    args.rounds, args.warmup, device)
    rows.append(row("Generator prior sampling (decoder, generated.py)", "pairs/s", b / t["original"].median,
                    b / t["ours"].median, None, timings={k: v.as_dict() for k, v in t.items()}))
    log(f"  sampling: original {rows[1]['baseline']:.1f} pairs/s, ours {rows[1]['ours']:.1f} pairs/s")
    result = {"image_size": s, "batch_size": b, "identity_loss": args.identity_loss,
              "precision": precision.name,
              "device": str(device), "threads": torch.get_num_threads(), "rows": rows}
    if args.out is not None:
        atomic_write_json(Path(args.out) / "bench_generator.json", result)
    return result


if __name__ == "__main__":
    main(argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__.split("\n\n")[0]).parse_args())
