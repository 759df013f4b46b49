"""Loss curves of the depth network and the generator trained in fp32 and in bf16 autocast, same seed.

    python benchmarks/precision_curves.py --which dum --steps 30 --batch-size 2 --window 5   # docs/DUM.md

The training data are faces of the synthetic dataset (data/synthetic.py) rendered straight into
memory, no preparation stages: the centre of each frame (where the person stands) resized to
``--image-size``; bona fide frames get an elliptic depth map, attacks a flat zero one (as the
preparation's labels); the generator gets (spoof, live) pairs of one person. Each run starts from the
same weights and sees the same batches in the same order; only ``misc.precision``'s autocast differs.
Prints the two curves side by side (means over windows of steps) and the relative gap at the end.

On a CPU without native bf16 (``misc.precision.native_cpu_bf16``) bf16 is emulated and slow: the
times printed say nothing about bf16 hardware; the curves are the point.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # run as a file: the repository root is importable

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from data import synthetic  # noqa: E402
from data.protocol_lists import VideoId  # noqa: E402
from DUM import zoo  # noqa: E402
from DUM.transforms import normalise_image  # noqa: E402
from misc.device import to_input  # noqa: E402
from misc.precision import Precision, native_cpu_bf16, resolve_precision  # noqa: E402
from networks.generator import DualVAE  # noqa: E402
from networks.losses import LossWeights, generator_loss  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("fp32 vs bf16 autocast loss curves", add_help=False)
    p.add_argument("--steps", type=int, default=300, help="optimiser steps per run. Default: %(default)s")
    p.add_argument("--image-size", type=int, default=32, help="face size in pixels. Default: %(default)s")
    p.add_argument("--batch-size", type=int, default=16, help="samples per step. Default: %(default)s")
    p.add_argument("--users", type=int, default=6, help="synthetic people rendered. Default: %(default)s")
    p.add_argument("--frames", type=int, default=6, help="frames per video. Default: %(default)s")
    p.add_argument("--window", type=int, default=25, help="steps per printed mean. Default: %(default)s")
    p.add_argument("--seed", type=int, default=0, help="weights, data order and noise. Default: %(default)s")
    p.add_argument("--generator-width", type=int, default=64,
                   help="the generator's max_channels (512 in the paper; 45M parameters even at 32 px). "
                        "Default: %(default)s")
    p.add_argument("--hdim", type=int, default=32, help="the generator's latent size (paper 128). Default: %(default)s")
    p.add_argument("--which", nargs="+", choices=("dum", "generator"), default=["dum", "generator"],
                   help="networks to train. Default: both")
    p.add_argument("--plot", type=Path, default=None, help="also save the curves as a PNG here")
    return p


def render_faces(users: int, frames: int, size: int, seed: int):
    """{'image': (N, 3, S, S) normalised, 'live': (N,) bool, 'user', 'file'} from synthetic videos of
    ``users`` people (session 1, phone 1, files 1-5), the frame centre as the face."""
    people = synthetic.identity_pool()[:users]
    images, live, user_of, file_of = [], [], [], []
    for u, name in enumerate(people):
        identity = synthetic.load_identity(name)
        for f in (1, 2, 3, 4, 5):
            for frame in synthetic.render_video(VideoId(1, 1, u + 1, f), identity, frames, (160, 120), seed):
                h, w = frame.shape[:2]
                side = int(0.8 * h)
                top, left = (h - side) // 2, (w - side) // 2
                face = cv2.resize(frame[top:top + side, left:left + side], (size, size), interpolation=cv2.INTER_AREA)
                images.append(normalise_image(face))
                live.append(f == 1)
                user_of.append(u)
                file_of.append(f)
    return {"image": torch.stack(images), "live": torch.tensor(live), "user": torch.tensor(user_of),
            "file": torch.tensor(file_of)}


def depth_labels(live: torch.Tensor, map_size: int) -> torch.Tensor:
    """An ellipse (nearer = brighter, 0..1) for bona fide samples, zeros for attacks: (N, M, M)."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, map_size), torch.linspace(0, 1, map_size), indexing="ij")
    ellipse = (1 - ((xx - 0.5) / 0.33) ** 2 - ((yy - 0.5) / 0.42) ** 2).clamp(min=0).sqrt()
    return live.float()[:, None, None] * ellipse


def train_dum(data, precision: Precision, args) -> list:
    torch.manual_seed(args.seed)
    spec = zoo.get("cdcn_u")
    map_size = args.image_size // 8
    model = spec.build(map_size=map_size).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    maps = depth_labels(data["live"], map_size)
    order = torch.Generator().manual_seed(args.seed)
    losses = []
    model.train()
    for _ in range(args.steps):
        idx = torch.randint(0, len(maps), (args.batch_size,), generator=order)
        with precision.autocast():
            out = model(to_input(data["image"][idx], torch.device("cpu")))
        terms = spec.losses(out, maps[idx], torch.zeros(len(idx), dtype=torch.bool), generated_weight=0.1,
                            kl_weight=1e-3)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt.step()
        losses.append(terms["total"].item())
        if len(losses) % args.window == 0:
            print(f"    dum {precision.name} step {len(losses)}: {np.mean(losses[-args.window:]):.4f}", flush=True)
    return losses


def train_generator(data, precision: Precision, args) -> list:
    torch.manual_seed(args.seed)
    s = args.image_size
    model = DualVAE(args.hdim, s, max_channels=args.generator_width)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, fused=True)
    images01 = (data["image"] * 128 + 127.5) / 255  # the generator's inputs are in [0, 1]
    live_of = {int(u): torch.nonzero(data["live"] & (data["user"] == u)).flatten() for u in data["user"].unique()}
    spoofs = torch.nonzero(~data["live"]).flatten()
    order = torch.Generator().manual_seed(args.seed)
    weights = LossWeights()
    losses = []
    model.train()
    for _ in range(args.steps):
        pick = spoofs[torch.randint(0, len(spoofs), (args.batch_size,), generator=order)]
        partners = torch.stack([live_of[int(data["user"][i])][torch.randint(0, len(live_of[int(data["user"][i])]), (1,),
                                                                             generator=order)][0] for i in pick])
        kind = (data["file"][pick] >= 4).long()  # print 0, replay 1
        with precision.autocast():
            total, _ = generator_loss(model(images01[pick], images01[partners]), images01[pick], images01[partners],
                                      kind, weights, None, 1.0)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        losses.append(total.item())
        if len(losses) % args.window == 0:
            print(f"    generator {precision.name} step {len(losses)}: {np.mean(losses[-args.window:]):.4f}",
                  flush=True)
    return losses


def windows(curve, w: int):
    return [float(np.mean(curve[i:i + w])) for i in range(0, len(curve), w)]


def main(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    t0 = time.time()
    data = render_faces(args.users, args.frames, args.image_size, args.seed)
    print(f"{len(data['image'])} faces of {args.users} synthetic people at {args.image_size} px "
          f"({int(data['live'].sum())} bona fide), rendered in {time.time() - t0:.0f} s; "
          f"native bf16 on this CPU: {native_cpu_bf16()}; {torch.get_num_threads()} threads")
    precisions = {"fp32": resolve_precision("fp32", "cpu"), "bf16": resolve_precision("bf16", "cpu")}
    result = {}
    for which in args.which:
        train = train_dum if which == "dum" else train_generator
        curves, secs = {}, {}
        for name, p in precisions.items():
            t = time.time()
            curves[name] = train(data, p, args)
            secs[name] = time.time() - t
            print(f"  {which} {name}: {args.steps} steps in {secs[name]:.0f} s", flush=True)
        result[which] = {"curves": curves, "seconds": secs}
        a, b = windows(curves["fp32"], args.window), windows(curves["bf16"], args.window)
        print(f"\n{which}: total loss, mean over each {args.window} steps (fp32 {secs['fp32']:.0f} s, "
              f"bf16 {secs['bf16']:.0f} s{'' if native_cpu_bf16() else ', emulated'})")
        print(f"{'steps':>10} {'fp32':>10} {'bf16':>10} {'bf16/fp32':>10}")
        for i, (x, y) in enumerate(zip(a, b)):
            print(f"{i * args.window:>4}-{min((i + 1) * args.window, args.steps) - 1:<5} {x:>10.4f} {y:>10.4f} "
                  f"{y / x:>10.3f}")
        gap = abs(b[-1] - a[-1]) / abs(a[-1])
        drop = {k: v[-1] / v[0] for k, v in (("fp32", a), ("bf16", b))}
        print(f"last window: bf16 within {100 * gap:.1f} % of fp32; loss fell to {100 * drop['fp32']:.0f} % (fp32) "
              f"and {100 * drop['bf16']:.0f} % (bf16) of the first window")
        result[which].update(gap_last_window=gap, windows={"fp32": a, "bf16": b})
    if args.plot is not None:
        plot(result, args)
    return result


def plot(result: dict, args: argparse.Namespace) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from misc.io import atomic_write_figure

    fig, axes = plt.subplots(1, len(result), figsize=(5 * len(result), 3.4), squeeze=False)
    for ax, (which, r) in zip(axes[0], result.items()):
        for name, style in (("fp32", "-"), ("bf16", "--")):
            w = windows(r["curves"][name], args.window)
            ax.plot([args.window * (i + 0.5) for i in range(len(w))], w, style, label=name)
        ax.set_title({"dum": "depth network (CDCN_U + DUM)", "generator": "generator (DualVAE)"}[which])
        ax.set_xlabel("step")
        ax.set_ylabel(f"total loss (mean of {args.window} steps)")
        ax.legend()
    fig.suptitle(f"fp32 vs bf16 autocast, same seed, {args.image_size} px synthetic faces, batch {args.batch_size}")
    fig.tight_layout()
    atomic_write_figure(args.plot, fig)
    plt.close(fig)
    print(f"wrote {args.plot}")


if __name__ == "__main__":
    main(argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__.split("\n\n")[0]).parse_args())
