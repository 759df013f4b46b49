"""Stage 2 without MTCNN: face boxes from the box files a release ships (SiW's ``<name>.face``).

    python -m data.import_released_boxes --prep-root PREP_ROOT --adapted-root ADAPTED_ROOT [--face-format ltrb]

For every extracted video of the dataset (``--dataset``, default SIW) the box file is the original
video's path with the suffix ``.face``, found through the adapter's metadata table
(``<ADAPTED_ROOT>/metadata/<TAG>_videos.csv``). The path is the video's place in the release as the
adapter was given it (column ``release_path``), not where a symlink leads: releases kept as links
(git-annex, DataLad, a shared read-only store) have the ``.face`` file beside the link, while the
link's target sits in a folder of its own (tables written before that column use ``source``).
Line i is the box of frame i (decode order, the extractor's numbering). Its format is ``x1 y1 x2 y2``
(``--face-format ltrb``, the default) or ``x y w h`` (``xywh``); numbers may be floats. A line of
zeros, or a box without area, means "no face". Boxes are clipped to the frame.

Output is what ``data/detect_faces.py`` writes, so the later stages cannot tell the difference:
``<split>_bbox/<video>/<video>_<i>_scene.dat`` (our format; box only, no confidence or landmarks),
the completion marker ``state/bbox/<split>/<video>.json`` and the no-face report. Frames past the
file's last line get no box and are counted. A missing box file or a malformed line fails the
video, naming the file and line; the run goes on with the others. Videos of other datasets are
left to ``data/detect_faces.py``.

The order of the four numbers is SiW's page's (cvlab.cse.msu.edu/siw-spoof-in-the-wild-database.html:
upper-left and bottom-right corners, ``[0 0 0 0]`` no face); ``--face-format xywh`` is there for
box files of other sources.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: make the repository root importable
    import pathlib, sys
    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional

from data.adapters.common import read_metadata
from data.box_files import FaceBox, write_box
from data.prep_common import (Summary, VideoResult, add_common_arguments, box_name, exit_status, finish_run,
                              frame_index, is_complete, list_frames, list_videos, pool_workers, present_splits,
                              read_marker, run_stage, stage_dir, start_video, take_shard, write_marker,
                              write_no_face_report)
from data.other_benchmarks import BENCHMARKS, AdaptedId
from misc.cli import add_renamed_argument
from misc.logger import log_run_header, setup_logging

logger = logging.getLogger("dsdg.import_boxes")
FACE_FORMATS = ("ltrb", "xywh")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("Face boxes from a release's per-video box files instead of MTCNN", add_help=False)
    add_renamed_argument(p, "--prep-root", "--root", type=Path, required=True,
                         help="PREP_ROOT holding <split>_images/ (data/extract_frame.py); boxes go to <split>_bbox/")
    p.add_argument("--adapted-root", type=Path, required=True,
                   help="the adapted root written by data/adapters/ (its metadata table locates the original videos)")
    p.add_argument("--dataset", choices=sorted(BENCHMARKS), default="SIW",
                   help="whose box files to import (default SIW, the release that ships them as <name>.face)")
    p.add_argument("--face-format", choices=FACE_FORMATS, default="ltrb",
                   help="numbers on a line: ltrb = x1 y1 x2 y2 (default), xywh = x y width height")
    p.add_argument("--suffix", default=".face", help="suffix of the box file beside each video (default .face)")
    add_common_arguments(p, workers_help="importing processes (default 1; the work is light)")
    return p


def parse_face_line(line: str, fmt: str, width: int, height: int, where: str) -> Optional[FaceBox]:
    """One line as a FaceBox clipped to the frame, or None for 'no face'; ValueError naming ``where``."""
    parts = line.split()
    try:
        v = [float(x) for x in parts]
    except ValueError:
        raise ValueError(f"{where}: expected four numbers ({'x1 y1 x2 y2' if fmt == 'ltrb' else 'x y w h'}), "
                         f"got {line.strip()!r}") from None
    if len(v) != 4 or not all(math.isfinite(x) for x in v):
        raise ValueError(f"{where}: expected four finite numbers, got {line.strip()!r}")
    x0, y0 = v[0], v[1]
    x1, y1 = (v[2], v[3]) if fmt == "ltrb" else (v[0] + v[2], v[1] + v[3])
    x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)
    if x1 - x0 < 1 or y1 - y0 < 1:  # zeros, or a box outside the frame
        return None
    xi, yi = int(round(x0)), int(round(y0))
    return FaceBox(xi, yi, max(1, int(round(x1)) - xi), max(1, int(round(y1)) - yi))


def import_video(split: str, video: str, root: Path, face_file: Optional[str], settings: Dict,
                 overwrite: bool = False) -> VideoResult:
    """Write the ``.dat`` boxes of one video from its box file; see the module docstring."""
    from PIL import Image

    img_dir = stage_dir(root, split, "images") / video
    frames = list_frames(img_dir)
    if not frames:
        return VideoResult(split, video, "failed", f"{img_dir}: no frames")
    if face_file is None:
        return VideoResult(split, video, "failed", f"{video}: not in the {settings['dataset']} metadata table "
                                                   "(was the adapted root rewritten after extraction?)")
    face_path = Path(face_file)
    if not face_path.is_file():
        return VideoResult(split, video, "failed", f"{face_path}: box file not found (the release ships one "
                                                   f"{settings['suffix']} file beside every video)")
    marker = read_marker(root, "bbox", split, video) or {}
    if not overwrite and marker.get("settings") == settings and is_complete(root, "bbox", split, video, frames):
        return VideoResult(split, video, "skipped")
    lines = face_path.read_text(encoding="utf-8", errors="replace").splitlines()
    out, todo, warnings = start_video(root, "bbox", split, video, frames, overwrite=True)
    written, problems = 0, []
    with Image.open(img_dir / frames[0]) as im:
        width, height = im.size
    for f in todo:
        i = frame_index(f)
        box = None
        if i <= len(lines):
            try:
                box = parse_face_line(lines[i - 1], settings["face_format"], width, height, f"{face_path}:{i}")
            except ValueError as e:
                problems.append(str(e))
                continue
        if box is None:
            (out / box_name(f)).unlink(missing_ok=True)
        else:
            write_box(out / box_name(f), box)
            written += 1
    beyond = sum(frame_index(f) > len(lines) for f in frames)
    if beyond:
        warnings.append(f"{face_path}: {len(lines)} lines for {len(frames)} frames; {beyond} frame(s) get no box")
    counts = {"boxes written": written, "frames without a face": len(todo) - written - len(problems)}
    if problems:
        return VideoResult(split, video, "failed", f"{len(problems)} malformed line(s)", counts, problems, warnings)
    no_face = [f for f in frames if not (out / box_name(f)).is_file()]
    write_marker(root, "bbox", split, video, {"frames": frames, "no_face": no_face, "settings": settings})
    return VideoResult(split, video, "done", counts=counts, warnings=warnings)


def face_files(adapted_root: Path, tag: str, suffix: str) -> Dict[str, str]:
    """Video id -> the box file beside its video in the release (the unresolved path; see the module docstring)."""
    return {vid: str(Path(row.get("release_path") or row["source"]).with_suffix(suffix))
            for vid, row in read_metadata(adapted_root, tag).items()}


def main(args: argparse.Namespace) -> Summary:
    setup_logging()
    log_run_header(logger, args)
    args.workers = pool_workers(args.workers, logger)
    if args.face_format not in FACE_FORMATS:
        raise SystemExit(f"--face-format must be one of {FACE_FORMATS}")
    try:
        boxes_of = face_files(args.adapted_root, args.dataset, args.suffix)
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}") from None
    settings = {"source": f"{args.suffix} files", "dataset": args.dataset, "face_format": args.face_format,
                "suffix": args.suffix}
    summary = Summary("import_boxes")
    splits, missing = present_splits(args.prep_root, args.splits, "images")
    for s in missing:
        summary.fail(str(stage_dir(args.prep_root, s, "images")), "frame folder not found (run data/extract_frame.py)")
    videos: List[tuple] = []
    for s in splits:
        for v in list_videos(stage_dir(args.prep_root, s, "images")):
            try:
                ours = AdaptedId.parse(v).dataset == args.dataset
            except ValueError:
                ours = False
            if ours:
                videos.append((s, v))
            else:
                summary.counts["videos of other datasets (left to data/detect_faces.py)"] += 1
    videos = take_shard(videos, args.shard)
    logger.info("%d %s videos to consider (shard %d/%d)", len(videos), args.dataset, *args.shard)
    tasks = [(s, v, args.prep_root, boxes_of.get(v), settings, args.overwrite) for s, v in videos]
    run_stage(summary, import_video, tasks, args.workers, f"{args.suffix} boxes", logger, strict=args.strict)
    for s in splits:
        logger.info("frames without a face: %s",
                    write_no_face_report(args.prep_root, "bbox", s, f"without a box in the {args.suffix} file"))
    return finish_run(args.prep_root, summary, args, logger)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args()
    sys.exit(exit_status(main(args), args))
