"""Stage 4: the generator's training list.

    <root>/train_list/train_list_oulu_p<tag>.txt

One line per sampled frame, ``<video>/<frame file> <subject> <live_flag> <file_digit>``, e.g.
``1_1_01_1/1_1_01_1_53_scene.jpg 01 1 1`` (paths relative to ``<root>/train_images/``). For every
video of the protocol's Train list, ``--frames-per-video`` frames (40, as in the released list)
are drawn without replacement from the frames that have a face box, sorted by frame number; a
video with fewer such frames contributes all of them. The draw is seeded per video
(``--seed`` and the video name), so it does not depend on the file system's listing order or on
which other videos exist. Lines are in protocol order, then frame order.

A protocol row whose video has no frames, no boxed frame, or a box that does not parse is
reported by name; the list is then not written (a later stage would take it as complete) unless
``--allow-missing`` is given. Fixes against the original: sorted numeric frame order instead of
``os.listdir`` order, a seed, no crash for videos with <= 50 frames, any protocol.

    python data/make_train_list.py --oulu-root OULU_ROOT --root PREP_ROOT --protocol 1
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: make the repository root importable
    import pathlib, sys
    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse
import logging
import random
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from data import oulu
from data.boxes import BOX_FORMATS, BoxFormatError, read_box
from data.prep_common import (Summary, VideoResult, box_name, frame_index, frames_with_boxes, list_frames,
                              read_marker, stage_dir, write_report)
from misc.io import atomic_write_text
from misc.logger import log_run_header, setup_logging
from misc.progress import progress

logger = logging.getLogger("dsdg.make_train_list")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("Build the generator's training list from a protocol's Train videos", add_help=False)
    p.add_argument("--root", type=Path, required=True,
                   help="PREP_ROOT holding train_images/ and train_bbox/ (data/extract_frame.py, data/bbox.py)")
    p.add_argument("--oulu-root", type=Path, default=None,
                   help="OULU_ROOT; the protocol lists are read from <OULU_ROOT>/Protocols/")
    p.add_argument("--protocols-dir", type=Path, default=None,
                   help="folder holding Protocol_1..4/ (default <OULU_ROOT>/Protocols)")
    p.add_argument("--protocol", default="1",
                   help="OULU-NPU protocol: 1, 2, 3_k or 4_k with k = 1..6 (default 1, the paper's main setting)")
    p.add_argument("--frames-per-video", type=int, default=40,
                   help="frames drawn per video (default 40, as in the released list; 0 = every boxed frame)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-video frame draw (default 0)")
    p.add_argument("--bbox-format", choices=BOX_FORMATS, default="mtcnn",
                   help="format of the .dat boxes, checked for every listed frame (default mtcnn)")
    p.add_argument("--out", type=Path, default=None,
                   help="list file (default <root>/train_list/train_list_oulu_p<tag>.txt)")
    p.add_argument("--allow-missing", action="store_true",
                   help="write the list even when some protocol videos have no usable frames (they are left out)")
    p.add_argument("--overwrite", action="store_true",
                   help="rebuild the list when it already exists (default: keep it, so a rerun does nothing)")
    return p


def sample_frames(frames: List[str], n: int, seed: int, video: str) -> List[str]:
    """``n`` of ``frames`` (all when n is 0 or there are fewer), drawn reproducibly, in frame order."""
    ordered = sorted(frames, key=frame_index)
    if n <= 0 or len(ordered) <= n:
        return ordered
    rng = random.Random(f"{seed}:{video}")  # str seeds hash stably across runs and Python versions
    return sorted(rng.sample(ordered, n), key=frame_index)


def list_lines(root: Path, video: str, n: int, seed: int, bbox_format: str) -> Tuple[List[str], Optional[str],
                                                                                     List[str]]:
    """(lines for one video, the reason it cannot be used or None, warnings)."""
    vid = oulu.VideoId.parse(video)
    img_dir = stage_dir(root, "train", "images") / video
    if not img_dir.is_dir():
        return [], f"{img_dir}: no frame folder for this video (not extracted, or not in the release)", []
    if not list_frames(img_dir):
        return [], f"{img_dir}: frame folder is empty", []
    candidates = frames_with_boxes(root, "train", video)
    if not candidates:
        return [], f"{stage_dir(root, 'train', 'bbox') / video}: no frame has a face box", []
    warnings = []
    if read_marker(root, "bbox", "train", video) is None:
        warnings.append(f"{stage_dir(root, 'train', 'bbox') / video}: boxes not marked complete by data/bbox.py")
    chosen = sample_frames(candidates, n, seed, video)
    for f in chosen:  # the generator crops with these boxes: a wrong format must stop here
        try:
            read_box(stage_dir(root, "train", "bbox") / video / box_name(f), bbox_format)
        except BoxFormatError as e:
            return [], str(e), warnings
    live = 1 if vid.is_live else 0
    return [f"{video}/{f} {vid.subject} {live} {vid.file}" for f in chosen], None, warnings


def main(args: argparse.Namespace) -> Summary:
    setup_logging()
    log_run_header(logger, args)
    try:
        proto, sub = oulu.parse_protocol_name(args.protocol)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    tag = oulu.protocol_tag(proto, sub)
    protocols_dir = args.protocols_dir or (args.oulu_root / "Protocols" if args.oulu_root else None)
    if protocols_dir is None:
        raise SystemExit("give --oulu-root (or --protocols-dir) to read the protocol lists")
    out = args.out or Path(args.root) / "train_list" / f"train_list_oulu_p{tag}.txt"
    summary = Summary(f"make_train_list_p{tag}")
    if out.is_file() and not args.overwrite:
        logger.info("%s exists; nothing to do (--overwrite rebuilds it)", out)
        summary.videos["skipped"] += 1
        return summary

    list_path = oulu.protocol_path(protocols_dir, proto, "Train", sub)
    try:
        rows = oulu.read_protocol(list_path)
    except oulu.ProtocolError as e:
        raise SystemExit(str(e)) from None
    lines: List[str] = []
    for row in progress(rows, desc=f"train list p{tag}", unit="video"):
        if row.generated:
            summary.warnings.append(f"{list_path}: generated row {row.video} ignored (real videos only)")
            continue
        got, reason, warnings = list_lines(args.root, row.video, args.frames_per_video, args.seed, args.bbox_format)
        status = "failed" if reason else "done"
        summary.add(VideoResult("train", row.video, status, reason or "",
                                {"frames listed": len(got)}, warnings=warnings))
        lines += got

    if summary.failures and not args.allow_missing:
        summary.problems.append(f"{out}: not written because {len(summary.failures)} videos of {list_path} "
                                "cannot be used (fix them, or pass --allow-missing to leave them out)")
    elif not lines:
        summary.problems.append(f"{out}: not written because no video of {list_path} has usable frames")
    else:
        atomic_write_text(out, "".join(ln + "\n" for ln in lines))
        logger.info("wrote %d lines for %d videos to %s", len(lines), summary.videos["done"], out)
    for line in summary.lines():
        logger.info("%s", line)
    logger.info("report: %s", write_report(args.root, summary, args))
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args()
    result = main(args)
    # --allow-missing accepts left-out videos; a list that could not be written is always an error.
    sys.exit(0 if result.ok or (args.allow_missing and not result.problems) else 1)
