"""Cut the face crops and depth labels that the DUM trainer and tester read (the crop root).

    python -m DUM.make_dataset.crop_dataset --prep-root PREP_ROOT --crop-root CROP_ROOT --oulu-root OULU_ROOT

For every frame of every video in ``<PREP_ROOT>/<split>_images/`` (splits train, dev, test) the
face box ``<split>_bbox/<video>/<video>_<i>_scene.dat`` is enlarged about its centre, clipped to
the frame, and the same rectangle is cut from the frame and from its depth map
``<split>_depth/<video>/<video>_<i>_depth1D.jpg``; they are resized to 256 x 256 and 32 x 32 and
written to ``<CROP_ROOT>/<split>_images/<video>/`` and ``<CROP_ROOT>/<split>_depth/<video>/``.

* Face scale: train frames draw theirs per frame from {1.2, 1.3, 1.4} (the original's jitter),
  seeded by the frame's name so that reruns, shards and resumed runs agree; Dev/Test use 1.3.
* Frames without a box are skipped (counted).
* Train: a bona fide frame without a depth map is skipped: its map is the training label, never
  replaced by zeros. An attack frame without a map keeps its image (its label is all zero).
* Dev/Test: every frame with a box is cropped, whatever its label and whether it has a map, so
  that the frames evaluated are never chosen by the ground truth (skipping the unmapped frames of
  live videos only would drop exactly the frames where the face mesh failed, and a live video
  without any map would leave the evaluation). The ``mean`` score needs no map; the ``cdcn``
  score leaves out the frames without a map, for both classes alike, and DUM/test.py says how many.
  Frames without a map are counted as ``eval frame without map``.
* Resizing: ``--interpolation linear`` (default) is OpenCV's bilinear ``cv2.resize``, what the
  original crop script used and what the released CDCN_U_P1.pkl was trained on; ``area`` averages
  the pixels a target pixel covers (no aliasing when shrinking).
* ``--train-first-frames N`` crops only frames 1..N of the train videos (SiW protocol 1 trains on
  the first 60 frames; give it its own crop root).
* Video ids are OULU-NPU's or the adapted datasets' (``data/adapters/``); either tells bona fide from
  attack. Folders of another naming are treated as bona fide (maps required) with a warning.
* Resumable: outputs are written atomically, existing crops are kept, and a finished video gets a
  marker (``<CROP_ROOT>/state/crop/<split>/<video>.json``) so that a rerun skips it. Changing a
  size, scale, the interpolation or the box format redoes the videos (and Dev/Test videos cropped
  under the earlier rule that skipped unmapped live frames).
* A video that fails (no frame can be cropped, e.g. no face in any frame, or an unreadable file)
  is reported and counted and the others go on; the stage exits 0 unless nothing at all could be
  done (see data/prep_common.py). ``--strict`` stops at the first failed video and exits 1.
* The protocol lists of ``<OULU_ROOT>/Protocols/`` (OULU-NPU's ``Protocol_1..4`` and the adapted
  datasets' ``Protocol_<name>``) are copied to ``<CROP_ROOT>/protocols/``
  so that the crop root is self-contained. A summary goes to ``<CROP_ROOT>/reports/crop.json``.
"""
if __package__ in (None, ""):  # run as a file: make the repository root importable
    import pathlib
    import sys
    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[2])

import argparse
import logging
import sys
import zlib
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from data.box_files import BOX_FORMATS, BoxFormatError, enlarge_box, read_box
from data.protocol_lists import ProtocolError, describe_video, read_protocol
from data.prep_common import (DEPTH_SUFFIX, FRAME_SUFFIX, Summary, VideoResult, add_common_arguments, box_name,
                              depth_name, exit_status, finish_run, frame_index, list_frames, list_videos,
                              pool_workers, present_splits, read_marker, run_stage, stage_dir, take_shard,
                              write_marker)
from DUM.transforms import EVAL_FACE_SCALE, IMAGE_SIZE, INTERPOLATIONS, MAP_SIZE, TRAIN_FACE_SCALES, resize
from misc.io import atomic_write_image, atomic_write_text, remove_stale_temporaries
from misc.logger import log_run_header, setup_logging

log = logging.getLogger("dsdg.crop")
STAGE = "crop"
# Marker setting of the Dev/Test rule "every boxed frame, mapped or not"; markers without it were
# written when unmapped live frames were skipped, and those videos are redone.
EVAL_SETTINGS = {"eval_frames": "every frame with a box"}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("Face crops and depth labels for DUM", add_help=False)
    p.add_argument("--prep-root", type=Path, required=True,
                   help="prepared root: <split>_images, <split>_bbox and <split>_depth from the data/ stages")
    p.add_argument("--crop-root", type=Path, required=True, help="where the crops, maps and protocol copies go")
    p.add_argument("--oulu-root", type=Path, default=None,
                   help="OULU-NPU (or synthetic, or adapted) release root whose Protocols/ lists are copied to "
                        "<crop-root>/protocols")
    p.add_argument("--protocols-dir", type=Path, default=None,
                   help="copy the lists from this folder (Protocol_N/*.txt) instead of <oulu-root>/Protocols")
    p.add_argument("--bbox-format", choices=BOX_FORMATS, default="mtcnn",
                   help="convention of the .dat files: mtcnn (ours: x y w h), prnet (left right top bottom) or "
                        "cdcn (x, y, w, h on four lines). Default: %(default)s")
    p.add_argument("--image-size", type=int, default=IMAGE_SIZE, help="face crop size in pixels (paper: 256)")
    p.add_argument("--map-size", type=int, default=MAP_SIZE, help="depth label size in pixels (paper: 32)")
    p.add_argument("--train-scales", type=float, nargs="+", default=list(TRAIN_FACE_SCALES),
                   help="train face scales, one drawn per frame (paper: 1.2 1.3 1.4)")
    p.add_argument("--eval-scale", type=float, default=EVAL_FACE_SCALE,
                   help="Dev/Test face scale (CDCN's fixed test value: 1.3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-frame train scale draw")
    p.add_argument("--train-first-frames", type=int, default=0,
                   help="crop only frames 1..N of each train video (default 0: all; SiW protocol 1: 60)")
    p.add_argument("--jpeg-quality", type=int, default=95, help="JPEG quality of the crops and maps (default 95)")
    p.add_argument("--interpolation", choices=INTERPOLATIONS, default="linear",
                   help="resizing of crops and maps: linear (bilinear cv2.resize, the original's, on which the "
                        "released CDCN_U_P1.pkl was trained) or area (pixel averaging when shrinking). "
                        "Default: %(default)s")
    add_common_arguments(p, workers_help="cropping processes (default 1)")
    return p


# ----------------------------------------------------------------------------------------------
# One video
# ----------------------------------------------------------------------------------------------

def frame_scale(split: str, video: str, frame: str, settings: Dict) -> float:
    """The face scale of one frame: a seeded draw for train (stable under reruns/shards), fixed otherwise."""
    if split != "train":
        return float(settings["eval_scale"])
    key = zlib.crc32(f"{settings['seed']}/{video}/{frame}".encode())
    return float(np.random.default_rng(key).choice(settings["train_scales"]))


def is_bona_fide(video: str) -> Optional[bool]:
    """True/False for OULU-NPU and adapted ids, None for folders of another naming."""
    try:
        return describe_video(video).is_live
    except ValueError:
        return None


def crop_video(split: str, video: str, prep_root: Path, crop_root: Path, settings: Dict,
               overwrite: bool = False) -> VideoResult:
    """Crop every usable frame of one video; see the module docstring for the rules."""
    img_dir = stage_dir(prep_root, split, "images") / video
    box_dir = stage_dir(prep_root, split, "bbox") / video
    map_dir = stage_dir(prep_root, split, "depth") / video
    frames = list_frames(img_dir)
    if split == "train" and settings.get("train_first_frames"):
        frames = [f for f in frames if frame_index(f) <= settings["train_first_frames"]]
    if not frames:
        return VideoResult(split, video, "failed", f"{img_dir}: no frames")
    train = split == "train"
    if not train:
        settings = {**settings, **EVAL_SETTINGS}
    marker = read_marker(crop_root, STAGE, split, video)
    if marker and marker.get("settings") != settings:
        overwrite = True  # made with other sizes/scales/rules: the old crops must not survive
    elif not overwrite and marker and marker.get("frames") == frames:
        return VideoResult(split, video, "skipped")
    live = is_bona_fide(video) if train else None
    warnings = [] if live is not None or not train else [
        f"{img_dir}: neither an OULU-NPU nor an adapted video id; treated as bona fide (maps required)"]
    live = live is not False
    out_img = stage_dir(crop_root, split, "images") / video
    out_map = stage_dir(crop_root, split, "depth") / video
    for folder in (out_img, out_map):
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(folder)
    stale = _remove_stale_crops(out_img, out_map, frames)
    if stale:  # e.g. a crop root reused with --train-first-frames: those frames must not be trained on
        warnings.append(f"{out_img}: removed {stale} crop(s) of frames outside this run's frames")

    # Train needs a map for bona fide frames only (the label); Dev/Test never look at the label.
    unmapped = ("bona fide without map", "attack without map") if train else ("eval frame without map",)
    counts = dict.fromkeys(("cropped", "kept", "no box") + unmapped, 0)
    missing: Dict[str, List[str]] = {k: [] for k in ("no box",) + unmapped}
    problems: List[str] = []
    for f in frames:
        box_path, map_path = box_dir / box_name(f), map_dir / depth_name(f)
        if not box_path.is_file():
            counts["no box"] += 1
            missing["no box"].append(f)
            continue
        has_map = map_path.is_file()
        if not has_map:
            key = unmapped[0] if not train or live else unmapped[1]
            counts[key] += 1
            missing[key].append(f)
            if train and live:
                continue
        target_img, target_map = out_img / f, out_map / depth_name(f)
        if not overwrite and target_img.is_file() and (target_map.is_file() or not has_map):
            counts["kept"] += 1
            continue
        try:
            image, depth, (x0, y0, x1, y1) = _read_frame(img_dir / f, box_path, map_path if has_map else None,
                                                         frame_scale(split, video, f, settings), settings)
        except (BoxFormatError, ValueError) as e:  # the messages name the file
            problems.append(str(e))
            continue
        target_map.unlink(missing_ok=True)  # a stale map must not pair with a new crop
        how = settings["interpolation"]
        atomic_write_image(target_img, resize(image[y0:y1, x0:x1], settings["image_size"], how),
                           settings["jpeg_quality"])
        if depth is not None:
            atomic_write_image(target_map, resize(depth[y0:y1, x0:x1], settings["map_size"], how),
                               settings["jpeg_quality"])
        counts["cropped"] += 1
    for what, names in missing.items():
        if names:
            kept = what in ("attack without map", "eval frame without map")
            warnings.append(f"{img_dir}: {what}: {len(names)} frame(s) ({_frames_brief(names)})"
                            + ("; image kept, no map" if kept else "; skipped"))
    if problems:
        return VideoResult(split, video, "failed", f"{len(problems)} frame(s) failed", counts, problems, warnings)
    if counts["cropped"] + counts["kept"] == 0:
        why = "no frame has a face box" if counts["no box"] == len(frames) else "no frame could be cropped"
        return VideoResult(split, video, "failed", f"{img_dir}: {why}", counts, [], warnings)
    write_marker(crop_root, STAGE, split, video, {"frames": frames, "settings": settings})
    return VideoResult(split, video, "done", counts=counts, warnings=warnings)


def _remove_stale_crops(out_img: Path, out_map: Path, frames: List[str]) -> int:
    """Delete crops and maps of frames not in ``frames``; returns how many files went."""
    wanted = set(frames) | {depth_name(f) for f in frames}
    stale = [p for folder in (out_img, out_map) for p in folder.iterdir()
             if p.is_file() and p.name.endswith((FRAME_SUFFIX, DEPTH_SUFFIX)) and p.name not in wanted]
    for p in stale:
        p.unlink()
    return len(stale)


def _read_frame(frame: Path, box_path: Path, map_path: Optional[Path], scale: float, settings: Dict):
    """(BGR frame, grey map or None, crop rectangle); raises ValueError/BoxFormatError naming the file."""
    import cv2

    image = cv2.imread(str(frame), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{frame}: unreadable frame")
    h, w = image.shape[:2]
    box = read_box(box_path, settings["bbox_format"])
    try:
        rect = enlarge_box(box, scale, w, h)
    except ValueError as e:
        raise ValueError(f"{box_path}: {e}") from None
    depth = None
    if map_path is not None:
        depth = cv2.imread(str(map_path), cv2.IMREAD_GRAYSCALE)
        if depth is None:
            raise ValueError(f"{map_path}: unreadable depth map")
        if depth.shape != (h, w):
            raise ValueError(f"{map_path}: depth map is {depth.shape[1]}x{depth.shape[0]}, frame is {w}x{h}; "
                             "one box cannot cut both")
    return image, depth, rect


def _frames_brief(names: List[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f", ... {len(names) - limit} more" if len(names) > limit else "")


# ----------------------------------------------------------------------------------------------
# Protocol lists
# ----------------------------------------------------------------------------------------------

def copy_protocols(source: Path, crop_root: Path, summary: Summary) -> int:
    """Copy every readable ``Protocol_N/*.txt`` list of ``source``; returns how many were (re)written."""
    written = 0
    lists = sorted(source.glob("Protocol_*/*.txt"))
    if not lists:
        summary.fail(str(source), "no Protocol_N/*.txt lists found")
    for path in lists:
        try:
            read_protocol(path)  # a malformed list fails here, naming file and line
        except ProtocolError as e:
            summary.fail(str(path), str(e))
            continue
        target = crop_root / "protocols" / path.parent.name / path.name
        text = path.read_text(encoding="utf-8")
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            atomic_write_text(target, text)
            written += 1
    return written


def main(args: argparse.Namespace) -> Summary:
    setup_logging()
    log_run_header(log, args)
    args.workers = pool_workers(args.workers, log)
    if args.image_size < 8 or args.map_size < 3 or args.workers < 1:
        raise SystemExit("--image-size must be >= 8, --map-size >= 3 and --workers >= 1")
    if min(args.train_scales + [args.eval_scale]) <= 0:
        raise SystemExit("face scales must be positive")
    if args.train_first_frames < 0:
        raise SystemExit(f"--train-first-frames must be >= 0, got {args.train_first_frames}")
    settings = {"image_size": args.image_size, "map_size": args.map_size, "train_scales": list(args.train_scales),
                "eval_scale": args.eval_scale, "bbox_format": args.bbox_format, "seed": args.seed,
                "jpeg_quality": args.jpeg_quality, "interpolation": args.interpolation}
    if args.train_first_frames:  # only then: markers of earlier runs stay valid
        settings["train_first_frames"] = args.train_first_frames
    summary = Summary(STAGE)
    protocols = args.protocols_dir or (args.oulu_root / "Protocols" if args.oulu_root else None)
    if protocols is None:
        log.warning("no --oulu-root/--protocols-dir: the crop root gets no protocol lists")
    elif args.shard[0] == 1:  # one shard copies them; the others would race for the same files
        log.info("protocol lists: %d (re)written from %s", copy_protocols(protocols, args.crop_root, summary), protocols)

    splits, missing = present_splits(args.prep_root, args.splits, "images")
    for s in missing:
        summary.fail(str(stage_dir(args.prep_root, s, "images")), "frame folder not found (run data/extract_frame.py)")
    videos = take_shard([(s, v) for s in splits for v in list_videos(stage_dir(args.prep_root, s, "images"))],
                        args.shard)
    log.info("%d videos to crop (shard %d/%d) from %s to %s", len(videos), *args.shard, args.prep_root, args.crop_root)
    tasks = [(s, v, args.prep_root, args.crop_root, settings, args.overwrite) for s, v in videos]
    run_stage(summary, crop_video, tasks, args.workers, "crop", log, strict=args.strict)
    return finish_run(args.crop_root, summary, args, log)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args()
    sys.exit(exit_status(main(args), args))
