"""Stage 4: the generator's training list.

    <prep-root>/train_list/train_list_oulu_p<tag>.txt

One line per sampled frame, ``<video>/<frame file> <subject> <live_flag> <file_digit>``, e.g.
``1_1_01_1/1_1_01_1_53_scene.jpg 01 1 1`` (paths relative to ``<prep-root>/train_images/``). For the
adapted datasets (``data/adapters/``) the subject comes from the video id and the last column is the
spoof code, 1 for bona fide and 2 + the spoof-type class for attacks (:mod:`data.other_benchmarks`). For every
video of the protocol's Train list, ``--frames-per-video`` frames (40, as in the released list)
are drawn without replacement from the frames that have a face box, sorted by frame number; a
video with fewer such frames contributes all of them. The draw is seeded per video
(``--seed`` and the video name), so it does not depend on the file system's listing order or on
which other videos exist. Lines are in protocol order, then frame order.

``--first-frames N`` draws only from the first N frames of each video (SiW protocol 1 trains on the
first 60 frames of the training videos).

``--splits dev test`` writes ``<split>_list_oulu_p<tag>.txt`` from the protocol's Dev/Test lists
and ``<split>_images/`` in the same way (to look at held-out people; the generator uses train only).
A protocol row whose video has no frames, no boxed frame, or a box that does not parse is
reported by name; the list is then not written (a later stage would take it as complete) unless
``--allow-missing`` is given. Fixes against the original: sorted numeric frame order instead of
``os.listdir`` order, a seed, no crash for videos with <= 50 frames, any protocol.

    python data/make_train_list.py --oulu-root OULU_ROOT --prep-root PREP_ROOT --protocol 1
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

from data import protocol_lists
from data.box_files import BOX_FORMATS, BoxFormatError, read_box
from data.prep_common import (PREP_SPLITS, Summary, VideoResult, box_name, finish_run, frame_index, frames_with_boxes,
                              list_frames, read_marker, stage_dir)
from misc.cli import add_renamed_argument
from misc.io import atomic_write_text
from misc.logger import log_run_header, setup_logging
from misc.progress import progress

logger = logging.getLogger("dsdg.make_train_list")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("Build the generator's training list from a protocol's Train videos", add_help=False)
    add_renamed_argument(p, "--prep-root", "--root", type=Path, required=True,
                         help="PREP_ROOT holding <split>_images/ and <split>_bbox/ (data/extract_frame.py, "
                              "data/detect_faces.py)")
    p.add_argument("--oulu-root", type=Path, default=None,
                   help="OULU_ROOT (or a root written by data/adapters/); the protocol lists are read from "
                        "<OULU_ROOT>/Protocols/")
    p.add_argument("--protocols-dir", type=Path, default=None,
                   help="folder holding Protocol_1..4/ (default <OULU_ROOT>/Protocols)")
    p.add_argument("--protocol", default="1",
                   help="OULU-NPU protocol: 1, 2, 3_k or 4_k with k = 1..6 (default 1, the paper's main setting), "
                        "or an adapted dataset's: siw_1, siw_2_k, siw_3_k, siwm_k, casia, replay "
                        "(lists in Protocols/Protocol_<name>)")
    p.add_argument("--frames-per-video", type=int, default=40,
                   help="frames drawn per video (default 40, as in the released list; 0 = every boxed frame)")
    p.add_argument("--first-frames", type=int, default=0,
                   help="draw only from frames 1..N of each video (default 0: all; SiW protocol 1: 60)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-video frame draw (default 0)")
    p.add_argument("--bbox-format", choices=BOX_FORMATS, default="mtcnn",
                   help="format of the .dat boxes, checked for every listed frame (default mtcnn)")
    p.add_argument("--splits", nargs="+", choices=PREP_SPLITS, default=["train"],
                   help="protocol splits to list (default train: the generator trains on the Train videos; dev/test "
                        "lists, <split>_list_oulu_p<tag>.txt, serve to look at held-out people)")
    p.add_argument("--out", type=Path, default=None,
                   help="list file, with one split only (default <prep-root>/train_list/<split>_list_oulu_p<tag>.txt)")
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


def list_lines(root: Path, split: str, video: str, n: int, seed: int,
               bbox_format: str, first_frames: int = 0) -> Tuple[List[str], Optional[str], List[str]]:
    """(lines for one video, the reason it cannot be used or None, warnings)."""
    try:
        info = protocol_lists.describe_video(video)
    except ValueError as e:
        return [], str(e), []
    img_dir = stage_dir(root, split, "images") / video
    if not img_dir.is_dir():
        return [], f"{img_dir}: no frame folder for this video (not extracted, or not in the release)", []
    if not list_frames(img_dir):
        return [], f"{img_dir}: frame folder is empty", []
    box_dir = stage_dir(root, split, "bbox") / video
    candidates = frames_with_boxes(root, split, video)
    if first_frames:
        candidates = [f for f in candidates if frame_index(f) <= first_frames]
    if not candidates:
        within = f" among its first {first_frames} frames" if first_frames else ""
        return [], f"{box_dir}: no frame{within} has a face box", []
    warnings = []
    if read_marker(root, "bbox", split, video) is None:
        warnings.append(f"{box_dir}: boxes not marked complete by data/detect_faces.py")
    chosen = sample_frames(candidates, n, seed, video)
    for f in chosen:  # the generator crops with these boxes: a wrong format must stop here
        try:
            read_box(box_dir / box_name(f), bbox_format)
        except BoxFormatError as e:
            return [], str(e), warnings
    live = 1 if info.is_live else 0
    return [f"{video}/{f} {info.subject} {live} {info.spoof_code}" for f in chosen], None, warnings


def list_path_for(root: Path, split: str, tag: str) -> Path:
    """``<prep-root>/train_list/<split>_list_oulu_p<tag>.txt`` (the generator's is ``train_list_oulu_p1.txt``)."""
    return Path(root) / "train_list" / f"{split}_list_oulu_p{tag}.txt"


def build_list(args: argparse.Namespace, split: str, protocol_file: Path, out: Path, summary: Summary) -> None:
    """Write the list of one split to ``out`` (atomically), or record why it cannot be written."""
    if out.is_file() and not args.overwrite:
        logger.info("%s exists; nothing to do (--overwrite rebuilds it)", out)
        summary.videos["skipped"] += 1
        return
    try:
        rows = protocol_lists.read_protocol(protocol_file)
    except protocol_lists.ProtocolError as e:
        raise SystemExit(str(e)) from None
    lines: List[str] = []
    failed_before = len(summary.failures)
    for row in progress(rows, desc=f"{split} list", unit="video"):
        if row.generated:
            summary.warnings.append(f"{protocol_file}: generated row {row.video} ignored (real videos only)")
            continue
        got, reason, warnings = list_lines(args.prep_root, split, row.video, args.frames_per_video, args.seed,
                                           args.bbox_format, args.first_frames)
        summary.add(VideoResult(split, row.video, "failed" if reason else "done", reason or "",
                                {"frames listed": len(got)}, warnings=warnings))
        lines += got
    failed = len(summary.failures) - failed_before
    if failed and not args.allow_missing:
        not_written = (f"{out}: not written because {failed} videos of {protocol_file} cannot be used (fix them, "
                       "or pass --allow-missing to leave them out)")
    elif not lines:
        not_written = f"{out}: not written because no video of {protocol_file} has usable frames"
    else:
        not_written = None
    if not_written:  # the stage's output is missing: fatal, not a per-video failure
        summary.problems.append(not_written)
        summary.fatal.append(not_written)
    else:
        atomic_write_text(out, "".join(ln + "\n" for ln in lines))
        logger.info("wrote %d lines to %s", len(lines), out)


def main(args: argparse.Namespace) -> Summary:
    setup_logging()
    log_run_header(logger, args)
    try:
        proto, sub = protocol_lists.parse_protocol_name(args.protocol)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    tag = protocol_lists.protocol_tag(proto, sub)
    protocols_dir = args.protocols_dir or (args.oulu_root / "Protocols" if args.oulu_root else None)
    if protocols_dir is None:
        raise SystemExit("give --oulu-root (or --protocols-dir) to read the protocol lists")
    if args.first_frames < 0:
        raise SystemExit(f"--first-frames must be >= 0, got {args.first_frames}")
    if args.out is not None and len(args.splits) != 1:
        raise SystemExit("--out names one list file: give a single --splits value with it")
    summary = Summary(f"make_train_list_p{tag}")
    for split in args.splits:
        protocol_file = protocol_lists.protocol_path(protocols_dir, proto, split.capitalize(), sub)
        build_list(args, split, protocol_file, args.out or list_path_for(args.prep_root, split, tag), summary)
    return finish_run(args.prep_root, summary, args, logger)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args()
    result = main(args)
    # --allow-missing accepts left-out videos; a list that could not be written is always an error.
    sys.exit(0 if result.ok or (args.allow_missing and not result.problems) else 1)
