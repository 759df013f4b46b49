"""Stage 2: MTCNN face boxes for every frame.

    <root>/<split>_bbox/<video>/<video>_<i>_scene.dat       one per frame with a face

File format (``data/boxes.py``): line 1 ``x y w h`` (ints: column, row, width, height), line 2
the confidence, line 3 the ten landmark ints ``lex ley rex rey nx ny mlx mly mrx mry``. When MTCNN
finds several faces the most confident one is kept, and among faces whose confidence lies within
``--tie-tolerance`` of the best, the largest (the original kept whichever came first). Frames
without a face get no ``.dat``; they are counted in the summary and listed in
``<root>/reports/bbox_no_face_<split>.txt``. A video is finished when its marker
``<root>/state/bbox/<split>/<video>.json`` is written (last), so a rerun skips it.

    python data/bbox.py --root PREP_ROOT
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: make the repository root importable
    import pathlib, sys
    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from data.boxes import FaceBox, write_box
from data.prep_common import (Summary, VideoResult, add_common_arguments, box_name, exit_status, finish_run,
                              is_complete, list_frames, list_videos, pool_workers, present_splits, run_stage,
                              stage_dir, start_video, take_shard, write_marker, write_no_face_report)
from misc.logger import log_run_header, setup_logging

logger = logging.getLogger("dsdg.bbox")
LANDMARK_ORDER = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("MTCNN face boxes for every extracted frame", add_help=False)
    p.add_argument("--root", type=Path, required=True,
                   help="PREP_ROOT holding <split>_images/ (from data/extract_frame.py); boxes go to <split>_bbox/")
    p.add_argument("--batch-size", type=int, default=8,
                   help="frames per MTCNN call (the detector takes lists; default 8)")
    p.add_argument("--detect-max-side", type=int, default=0,
                   help="detect on a copy resized so its longer side is at most this many pixels and scale "
                        "the box back; 640 is over 10x faster on 1080p (default 0: full resolution, as the original)")
    p.add_argument("--tie-tolerance", type=float, default=1e-3,
                   help="faces whose confidence is within this of the best count as tied; the largest of "
                        "them is kept (default 1e-3)")
    p.add_argument("--mtcnn-device", default="CPU:0",
                   help="TensorFlow device for MTCNN, e.g. CPU:0 or GPU:0 (default CPU:0)")
    add_common_arguments(p, workers_help="detector processes (default 1; TensorFlow already uses every core, "
                                         "so more only helps on machines with many cores)")
    return p


# ----------------------------------------------------------------------------------------------
# The detector
# ----------------------------------------------------------------------------------------------

def pick_face(detections: Sequence[dict], tie_tolerance: float = 1e-3) -> Optional[dict]:
    """The most confident detection; among those within ``tie_tolerance`` of it, the largest box."""
    if not detections:
        return None
    best = max(float(d["confidence"]) for d in detections)
    tied = [d for d in detections if float(d["confidence"]) >= best - tie_tolerance]
    return max(tied, key=lambda d: (int(d["box"][2]) * int(d["box"][3]), float(d["confidence"])))


def detection_to_box(d: dict, scale: float = 1.0) -> FaceBox:
    """An MTCNN result dict (found on an image resized by ``scale``) as a FaceBox in original pixels."""
    x, y, w, h = (float(v) / scale for v in d["box"])
    landmarks = tuple(int(round(float(c) / scale)) for k in LANDMARK_ORDER for c in d["keypoints"][k])
    x0, y0 = int(round(x)), int(round(y))
    return FaceBox(x0, y0, max(1, int(round(x + w)) - x0), max(1, int(round(y + h)) - y0),
                   float(d["confidence"]), landmarks)


_MTCNN: Dict[str, object] = {}  # TensorFlow device -> MTCNN network


def mtcnn_class():
    """The ``mtcnn`` package's MTCNN class, imported so that torch keeps working in the same process.

    TensorFlow loads its own LLVM symbols; when triton's extension is imported after them (torch does
    that on the first optimizer step, through torch._dynamo), the process dies with a segmentation
    fault. Importing triton first, where it is installed (CUDA builds of torch ship it), avoids that.
    """
    import importlib.util

    if importlib.util.find_spec("triton") is not None:
        import triton.runtime.autotuner  # noqa: F401  (the module whose import crashes after TensorFlow)
    from mtcnn import MTCNN
    return MTCNN


class FaceDetector:
    """MTCNN (``mtcnn`` package) behind a small interface: RGB uint8 images in, one FaceBox or None out.

    TensorFlow is imported on first use, so creating the object is free.
    """

    def __init__(self, device: str = "CPU:0", max_side: int = 0, tie_tolerance: float = 1e-3):
        self.device, self.max_side, self.tie_tolerance = device, max_side, tie_tolerance
        self._mtcnn = None

    def _model(self):
        if self._mtcnn is None:
            if self.device not in _MTCNN:  # the network is shared by every detector of the process
                _MTCNN[self.device] = mtcnn_class()(device=self.device)
            self._mtcnn = _MTCNN[self.device]
        return self._mtcnn

    def __call__(self, images_rgb: List[np.ndarray]) -> List[Optional[FaceBox]]:
        """One box (or None) per image of the list; images may differ in size."""
        results, scales = self._detect(images_rgb)
        picks = [pick_face(dets, self.tie_tolerance) for dets in results]
        return [None if d is None else detection_to_box(d, s) for d, s in zip(picks, scales)]

    def detect_all(self, images_rgb: List[np.ndarray]) -> List[List[FaceBox]]:
        """Every face of each image: first the one ``__call__`` picks, then the others by confidence."""
        faces = []
        for dets, s in zip(*self._detect(images_rgb)):
            first = pick_face(dets, self.tie_tolerance)
            rest = sorted((d for d in dets if d is not first), key=lambda d: -float(d["confidence"]))
            faces.append([detection_to_box(d, s) for d in ([first] if first is not None else []) + rest])
        return faces

    def _detect(self, images_rgb: List[np.ndarray]):
        """(MTCNN's detections per image, the scale each image was detected at)."""
        if not images_rgb:
            return [], []
        import cv2

        inputs, scales = [], []
        for im in images_rgb:
            s = 1.0
            if self.max_side and max(im.shape[:2]) > self.max_side:
                s = self.max_side / max(im.shape[:2])
                im = cv2.resize(im, (max(1, round(im.shape[1] * s)), max(1, round(im.shape[0] * s))),
                                interpolation=cv2.INTER_AREA)
            inputs.append(im)
            scales.append(s)
        return self._model().detect_faces(inputs), scales


def make_detector(settings: Dict) -> FaceDetector:
    """The stage's detector; cheap to build, because the network behind it is made once per process."""
    return FaceDetector(settings["mtcnn_device"], settings["detect_max_side"], settings["tie_tolerance"])


# ----------------------------------------------------------------------------------------------
# One video
# ----------------------------------------------------------------------------------------------

def detect_video(split: str, video: str, root: Path, settings: Dict, overwrite: bool = False) -> VideoResult:
    """Write the ``.dat`` files of one video; see the module docstring."""
    import cv2

    frames = list_frames(stage_dir(root, split, "images") / video)
    if not frames:
        return VideoResult(split, video, "failed", f"{stage_dir(root, split, 'images') / video}: no frames")
    if not overwrite and is_complete(root, "bbox", split, video, frames):
        return VideoResult(split, video, "skipped")
    out, todo, warnings = start_video(root, "bbox", split, video, frames, overwrite)

    detector = make_detector(settings)
    problems: List[str] = []
    found = 0
    bs = settings["batch_size"]
    for start in range(0, len(todo), bs):
        names, images = [], []
        for f in todo[start:start + bs]:
            path = stage_dir(root, split, "images") / video / f
            im = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if im is None:
                problems.append(f"{path}: unreadable image")
                continue
            names.append(f)
            images.append(cv2.cvtColor(im, cv2.COLOR_BGR2RGB))
        for f, box in zip(names, detector(images)):
            if box is None:
                (out / box_name(f)).unlink(missing_ok=True)  # --overwrite: an old box must not survive
            else:
                write_box(out / box_name(f), box)
                found += 1

    no_face = [f for f in frames if not (out / box_name(f)).is_file()]
    detected = len(todo) - len(problems)
    counts = {"frames detected": detected, "boxes written": found, "frames without a face": detected - found}
    if problems:
        return VideoResult(split, video, "failed", f"{len(problems)} unreadable frames", counts, problems, warnings)
    write_marker(root, "bbox", split, video, {"frames": frames, "no_face": no_face, "settings": settings})
    return VideoResult(split, video, "done", counts=counts, warnings=warnings)


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def main(args: argparse.Namespace) -> Summary:
    setup_logging()
    log_run_header(logger, args)
    args.workers = pool_workers(args.workers, logger)
    if args.batch_size < 1 or args.workers < 1 or args.detect_max_side < 0:
        raise SystemExit("--batch-size and --workers must be >= 1 and --detect-max-side >= 0")
    settings = {"batch_size": args.batch_size, "detect_max_side": args.detect_max_side,
                "tie_tolerance": args.tie_tolerance, "mtcnn_device": args.mtcnn_device}
    summary = Summary("bbox")
    splits, missing = present_splits(args.root, args.splits, "images")
    for s in missing:
        summary.fail(str(stage_dir(args.root, s, "images")), "frame folder not found (run data/extract_frame.py)")
    videos = [(s, v) for s in splits for v in list_videos(stage_dir(args.root, s, "images"))]
    videos = take_shard(videos, args.shard)
    logger.info("%d videos to consider (shard %d/%d)", len(videos), *args.shard)
    tasks = [(s, v, args.root, settings, args.overwrite) for s, v in videos]
    run_stage(summary, detect_video, tasks, args.workers, "MTCNN boxes", logger, strict=args.strict)
    for s in splits:
        path = write_no_face_report(args.root, "bbox", s, "in which MTCNN found no face (no .dat written)")
        logger.info("frames without a face: %s", path)
    return finish_run(args.root, summary, args, logger)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args()
    sys.exit(exit_status(main(args), args))
