"""How long the synthetic dataset takes to make, and how often MTCNN finds its faces.

    python benchmarks/bench_synthetic.py                      # default dataset: time + MTCNN on every frame
    python benchmarks/bench_synthetic.py --pool               # also MTCNN on renders of every identity

Prints the frame count, the generation time (wall and CPU) and the MTCNN detection rate per kind of
file and per phone; ``--pool`` renders each packaged identity once per session and kind of file.
Writes into a temporary folder unless --out is given.
"""
import argparse
import os
import resource
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # run as a file: the repository root is importable
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from data import synthetic  # noqa: E402
from data.protocol_lists import VideoId  # noqa: E402
from misc.progress import progress  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser("Synthetic dataset benchmark", add_help=False)
    parser.add_argument("--out", type=Path, default=None,
                        help="dataset folder (default: a temporary folder, removed afterwards)")
    parser.add_argument("--users", type=int, default=synthetic.DEFAULTS["users"], help="as data/synthetic.py")
    parser.add_argument("--phones", type=int, default=synthetic.DEFAULTS["phones"], help="as data/synthetic.py")
    parser.add_argument("--sessions", type=int, default=synthetic.DEFAULTS["sessions"], help="as data/synthetic.py")
    parser.add_argument("--frames", type=int, default=synthetic.DEFAULTS["frames"], help="as data/synthetic.py")
    parser.add_argument("--size", type=synthetic.parse_size, default=synthetic.DEFAULTS["size"],
                        help="as data/synthetic.py")
    parser.add_argument("--seed", type=int, default=synthetic.DEFAULTS["seed"], help="as data/synthetic.py")
    parser.add_argument("--workers", type=int, default=synthetic.DEFAULTS["workers"],
                        help="as data/synthetic.py (0 = automatic)")
    parser.add_argument("--no-detect", action="store_true", help="only time the generation")
    parser.add_argument("--pool", action="store_true",
                        help="also run MTCNN on one render per session and kind of file of every identity")
    parser.add_argument("--threshold", type=float, default=0.9, help="MTCNN confidence counted as a face")
    return parser


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished worker processes."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def detect(frames, threshold: float, batch: int = 64):
    """Whether MTCNN finds a face above ``threshold`` in each RGB frame."""
    from data.detect_faces import mtcnn_class
    detector = mtcnn_class()(device="CPU:0")
    hits = []
    for i in progress(range(0, len(frames), batch), desc="MTCNN", unit="batch"):
        for faces in detector.detect_faces(frames[i:i + batch]):
            hits.append(any(float(f["confidence"]) > threshold for f in faces))
    return hits


def report(title: str, keys, hits) -> None:
    groups = defaultdict(list)
    for key, hit in zip(keys, hits):
        groups[key].append(hit)
    print(f"{title}: " + ", ".join(f"{k} {np.mean(v):.1%} ({sum(v)}/{len(v)})" for k, v in sorted(groups.items())))


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp) / "synthetic"
        wall, cpu = time.perf_counter(), _cpu_seconds()
        synthetic.make_dataset(root, users=args.users, phones=args.phones, sessions=args.sessions,
                               frames=args.frames, size=args.size, seed=args.seed, workers=args.workers)
        wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
        videos = sorted(root.glob("*_files/*.avi"))
        n_frames = len(videos) * args.frames
        print(f"generated {len(videos)} videos, {n_frames} frames of {args.size[0]}x{args.size[1]} in "
              f"{wall:.1f} s wall, {cpu:.1f} s CPU (all processes) ({1000 * wall / n_frames:.1f} ms per frame); "
              f"{sum(p.stat().st_size for p in videos) / 2**20:.1f} MiB")
        if not args.no_detect:
            kinds, phones, frames = [], [], []
            for path in videos:
                vid = VideoId.parse(path.stem)
                for frame in synthetic.read_video(path):
                    kinds.append(vid.instrument)
                    phones.append(f"phone {vid.phone}")
                    frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            hits = detect(frames, args.threshold)
            print(f"MTCNN (confidence > {args.threshold}) found a face in {np.mean(hits):.2%} of {len(hits)} frames")
            report("  per file", kinds, hits)
            report("  per phone", phones, hits)
    if args.pool:
        names, frames = [], []
        for k, name in enumerate(synthetic.identity_pool()):
            for s in range(1, 4):
                for f in range(1, 6):
                    vid = VideoId(1 + (k + s + f) % 6, s, 1, f)
                    frame = synthetic.render_video(vid, synthetic.load_identity(name), 1, args.size, args.seed)[0]
                    names.append(name)
                    frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        hits = detect(frames, args.threshold)
        per = defaultdict(list)
        for name, hit in zip(names, hits):
            per[name].append(hit)
        print(f"pool: MTCNN found a face in {np.mean(hits):.2%} of {len(hits)} renders of "
              f"{len(per)} identities; below 14/15: "
              + (", ".join(f"{n} {sum(v)}/{len(v)}" for n, v in per.items() if sum(v) < 14) or "none"))


if __name__ == "__main__":
    main(argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__.splitlines()[0]).parse_args())
