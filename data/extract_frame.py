"""Stage 1: decode videos into JPEG frames.

    <prep-root>/<split>_images/<video>/<video>_<i>_scene.jpg      i = 1, 2, ... = position in decode order

``i`` is the frame's 1-based position in the video, also when ``--every`` skips frames, so a
name always points at the same source frame. Input is the OULU-NPU release layout
(``Train_files/``, ``Dev_files/``, ``Test_files/`` with flat ``.avi`` files -> ``train``, ``dev``,
``test``) or any folder of videos (``.avi``, ``.mp4``, ``.mov``, ``.mkv``; searched recursively),
whose frames go to the split named by ``--folder-split``.

Each video is decoded into ``<video>.tmp-*`` and renamed to ``<video>`` when every frame is
written, so an existing ``<video>`` folder is complete and a rerun skips it; a killed run leaves
only a ``.tmp-`` folder, which the next run deletes. Fixes against the original DSDG script: the
frame counter advances (it wrote every frame over ``_1_``), the first frame is kept, the flat
release layout is read, and all three splits are handled.

    python data/extract_frame.py --input OULU_ROOT --prep-root PREP_ROOT
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: make the repository root importable
    import pathlib, sys
    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

from data.prep_common import (PREP_SPLITS, RELEASE_DIRS, Summary, VideoResult, add_common_arguments, exit_status,
                              finish_run, frame_name, pool_workers, run_stage, stage_dir, take_shard)
from misc.cli import add_renamed_argument
from misc.io import TMP_MARK
from misc.logger import log_run_header, setup_logging

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mov", ".mkv")
logger = logging.getLogger("dsdg.extract_frame")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("Decode videos into per-video folders of JPEG frames", add_help=False)
    p.add_argument("--input", type=Path, required=True,
                   help="OULU_ROOT (holding Train_files/, Dev_files/, Test_files/) or any folder of videos")
    add_renamed_argument(p, "--prep-root", "--out", type=Path, required=True,
                         help="PREP_ROOT: the prepared-data root to write into")
    p.add_argument("--folder-split", choices=PREP_SPLITS, default="train",
                   help="split for the frames of a plain folder of videos (ignored for the OULU layout)")
    p.add_argument("--every", type=int, default=1,
                   help="keep every k-th decoded frame (default 1: all frames, as the original)")
    p.add_argument("--max-frames", type=int, default=0,
                   help="stop after this many kept frames per video (default 0: no limit, as the original)")
    p.add_argument("--jpeg-quality", type=int, default=95,
                   help="JPEG quality 1-100 (default 95, OpenCV's default that the original used)")
    add_common_arguments(p, workers_help="decoding processes (default 1; use up to the number of cores)")
    return p


# ----------------------------------------------------------------------------------------------
# Finding the videos
# ----------------------------------------------------------------------------------------------

def is_release_layout(root: Path) -> bool:
    return any((root / d).is_dir() for d in RELEASE_DIRS.values())


def find_videos(root: Path, splits, folder_split: str) -> Tuple[List[Tuple[str, Path]], List[str],
                                                                 List[VideoResult]]:
    """``[(split, video path)]`` sorted by split then name, problems with the input folders, and a
    failed result for every video left out because another one has its name."""
    problems: List[str] = []
    clashes: List[VideoResult] = []
    if not root.is_dir():
        return [], [f"{root}: input folder not found"], []
    if is_release_layout(root):
        folders = [(s, root / RELEASE_DIRS[s]) for s in splits]
        recursive = False
    else:
        folders = [(folder_split, root)]
        recursive = True
    found = []
    for split, folder in folders:
        if not folder.is_dir():
            problems.append(f"{folder}: split folder not found (asked for split {split!r})")
            continue
        files = folder.rglob("*") if recursive else folder.iterdir()
        videos = sorted(p for p in files if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        seen = {}
        for v in videos:
            if v.stem in seen:  # two files would write the same frame folder
                clashes.append(VideoResult(split, v.stem, "failed",
                                           f"{v}: same video name as {seen[v.stem]}; skipped (rename one of them)"))
                continue
            seen[v.stem] = v
            found.append((split, v))
        if not videos:
            problems.append(f"{folder}: no videos ({'/'.join(VIDEO_EXTENSIONS)}) found")
    return found, problems, clashes


# ----------------------------------------------------------------------------------------------
# One video
# ----------------------------------------------------------------------------------------------

def extract_video(split: str, video_path: Path, prep_root: Path, every: int = 1, max_frames: int = 0,
                  jpeg_quality: int = 95, overwrite: bool = False) -> VideoResult:
    """Decode ``video_path`` into ``<prep_root>/<split>_images/<stem>/``; see the module docstring."""
    import cv2

    video = video_path.stem
    split_dir = stage_dir(prep_root, split, "images")
    final = split_dir / video
    if final.is_dir() and not overwrite:
        return VideoResult(split, video, "skipped")
    split_dir.mkdir(parents=True, exist_ok=True)
    for stale in split_dir.glob(f"{video}{TMP_MARK}*"):  # left by a killed run on this same video
        shutil.rmtree(stale, ignore_errors=True)

    if video_path.stat().st_size == 0:
        return VideoResult(split, video, "failed", f"{video_path}: empty file (0 bytes)")
    tmp = Path(tempfile.mkdtemp(prefix=video + TMP_MARK, dir=split_dir))
    cap = cv2.VideoCapture(str(video_path))
    try:
        if not cap.isOpened():
            return _failed(tmp, split, video, f"{video_path}: OpenCV cannot open it (corrupt or unknown format)")
        announced = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        params = [int(cv2.IMWRITE_JPEG_QUALITY), int(jpeg_quality)]
        decoded = kept = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            decoded += 1
            if (decoded - 1) % every:
                continue
            ok, buf = cv2.imencode(".jpg", frame, params)
            if not ok:
                return _failed(tmp, split, video, f"{video_path}: JPEG encoding failed at frame {decoded}")
            (tmp / frame_name(video, decoded)).write_bytes(buf.tobytes())
            kept += 1
            if max_frames and kept >= max_frames:
                break
        if kept == 0:
            return _failed(tmp, split, video, f"{video_path}: no frame could be decoded (empty or corrupt video)")
        warnings = []
        stopped_early = bool(max_frames) and kept >= max_frames
        if not stopped_early and announced > 0 and decoded < announced:
            warnings.append(f"{video_path}: decoded {decoded} of the {announced} frames its header announces "
                            "(truncated file?); kept what decoded")
        _publish(tmp, final)
        return VideoResult(split, video, "done", counts={"frames written": kept}, warnings=warnings)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        cap.release()


def _failed(tmp: Path, split: str, video: str, reason: str) -> VideoResult:
    shutil.rmtree(tmp, ignore_errors=True)
    return VideoResult(split, video, "failed", reason)


def _publish(tmp: Path, final: Path) -> None:
    """Move the finished temporary folder to its final name (replacing an old one for --overwrite)."""
    old: Optional[Path] = None
    if final.exists():
        old = final.with_name(final.name + TMP_MARK + "old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def main(args: argparse.Namespace) -> Summary:
    setup_logging()
    log_run_header(logger, args)
    args.workers = pool_workers(args.workers, logger)
    for name, value, lo in (("--every", args.every, 1), ("--max-frames", args.max_frames, 0),
                            ("--jpeg-quality", args.jpeg_quality, 1), ("--workers", args.workers, 1)):
        if value < lo:
            raise SystemExit(f"{name} must be >= {lo}, got {value}")
    if args.jpeg_quality > 100:
        raise SystemExit(f"--jpeg-quality must be <= 100, got {args.jpeg_quality}")

    summary = Summary("extract_frame")
    videos, problems, clashes = find_videos(args.input, args.splits, args.folder_split)
    for p in problems:  # a missing folder, no videos: not about one video, so the stage fails
        summary.fail("input", p)
    for c in clashes:
        summary.add(c)
    videos = take_shard(videos, args.shard)
    logger.info("%d videos to consider (shard %d/%d)", len(videos), *args.shard)
    tasks = [(split, path, args.prep_root, args.every, args.max_frames, args.jpeg_quality, args.overwrite)
             for split, path in videos]
    run_stage(summary, extract_video, tasks, args.workers, "extract frames", logger, strict=args.strict)
    return finish_run(args.prep_root, summary, args, logger)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args()
    sys.exit(exit_status(main(args), args))
