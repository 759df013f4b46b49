"""Stage 2: MTCNN face boxes for every frame.

    <prep-root>/<split>_bbox/<video>/<video>_<i>_scene.dat       one per frame with a face

File format (``data/box_files.py``): line 1 ``x y w h`` (ints: column, row, width, height), line 2
the confidence, line 3 the ten landmark ints ``lex ley rex rey nx ny mlx mly mrx mry``. When MTCNN
finds several faces the most confident one is kept, and among faces whose confidence lies within
``--tie-tolerance`` of the best, the largest (the original kept whichever came first). Frames
without a face get no ``.dat``; they are counted in the summary and listed in
``<prep-root>/reports/bbox_no_face_<split>.txt``. A video is finished when its marker
``<prep-root>/state/bbox/<split>/<video>.json`` is written (last), so a rerun skips it.

Speed (``--min-face``, default ``auto``). The detector is MTCNN, the ``mtcnn`` package's networks
and weights, as in the original; what changes is the work that cannot find the face the stage
keeps. The image pyramid leaves out the levels that only see faces smaller than a tenth of the
frame's shorter side, or than half the faces of the previous batch of the same video (a frame
where that finds nothing is searched again down to the tenth); the frames of a video go through
each network together (``--batch-size``); JPEGs are decoded at 1/2-1/8 size (libjpeg's DCT
scaling) while the smallest face searched keeps 48 pixels. On 1080p frames that is tens of
frames/s against about 1 for the original call, with boxes at a mean IoU of about 0.98 to the
original's on real photos (``benchmarks/bench_data.py``). ``--min-face original`` is the
package's own call on the whole frame, as the original code made it.

    python data/detect_faces.py --prep-root PREP_ROOT
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: make the repository root importable
    import pathlib, sys
    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from data.box_files import FaceBox, write_box
from data.prep_common import (Summary, VideoResult, add_common_arguments, box_name, exit_status, finish_run,
                              is_complete, list_frames, list_videos, pool_workers, present_splits, read_reduced,
                              run_stage, stage_dir, start_video, take_shard, write_marker, write_no_face_report)
from misc.cli import add_renamed_argument
from misc.logger import log_run_header, setup_logging

logger = logging.getLogger("dsdg.detect_faces")
LANDMARK_ORDER = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
MTCNN_MIN_FACE = 20  # the mtcnn package's default minimum face, what the original searched down to
PNET_CELL = 12  # the P-net's window: a pyramid level of S pixels holds faces of S / scale frame pixels
PYRAMID_FACTOR = 0.709  # the package's step between pyramid levels
AUTO_MIN_FACE_FRACTION = 0.1  # --min-face auto: a tenth of the shorter side (108 px on 1080p)
HISTORY_RATIO = 0.5  # a face does not halve its size from one batch of frames to the next
DETECT_FACE_PX = 48  # the O-net's input: a face this size loses nothing to the reduced decode


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("MTCNN face boxes for every extracted frame", add_help=False)
    add_renamed_argument(p, "--prep-root", "--root", type=Path, required=True,
                         help="PREP_ROOT holding <split>_images/ (from data/extract_frame.py); boxes go to "
                              "<split>_bbox/")
    p.add_argument("--batch-size", type=int, default=16,
                   help="frames of one video per MTCNN call: each network runs once per batch, not once per "
                        "frame (default 16)")
    p.add_argument("--min-face", type=min_face_type, default="auto",
                   help="smallest face, in frame pixels, the image pyramid looks for. 'auto': "
                        "--min-face-fraction of the frame's shorter side; N: N pixels; either way raised to "
                        "--min-face-history times the faces of the frames before. 'original': the mtcnn "
                        "package's own call with its 20-pixel minimum on the whole frame, as the original code "
                        "(slow: about 1 frame/s on 1080p) (default auto)")
    p.add_argument("--min-face-fraction", type=float, default=AUTO_MIN_FACE_FRACTION,
                   help="with --min-face auto: the smallest face searched, as a fraction of the frame's shorter "
                        f"side, never below MTCNN's {MTCNN_MIN_FACE} pixels (default {AUTO_MIN_FACE_FRACTION}: "
                        "108 px on 1080p, where OULU-NPU faces are hundreds of pixels)")
    p.add_argument("--min-face-history", type=float, default=HISTORY_RATIO,
                   help="within a video, search only faces at least this fraction of the smallest face (box's "
                        "longer side) of the previous batch; a frame where that finds nothing is searched again "
                        f"without it. The first batch of a video is one frame (default {HISTORY_RATIO}; 0: off)")
    p.add_argument("--detect-face-px", type=int, default=DETECT_FACE_PX,
                   help="decode each frame at 1/2, 1/4 or 1/8 size (libjpeg's DCT scaling, much cheaper than a "
                        "full decode) as long as the smallest face searched keeps at least this many pixels "
                        f"(default {DETECT_FACE_PX}: the O-net's input size; 0: always full size). Not with "
                        "--min-face original")
    p.add_argument("--detect-max-side", type=int, default=0,
                   help="detect on a copy resized so its longer side is at most this many pixels and scale "
                        "the box back (default 0: no such limit; the original detected at full resolution)")
    p.add_argument("--tie-tolerance", type=float, default=1e-3,
                   help="faces whose confidence is within this of the best count as tied; the largest of "
                        "them is kept (default 1e-3)")
    p.add_argument("--mtcnn-device", default="CPU:0",
                   help="TensorFlow device for MTCNN, e.g. CPU:0 or GPU:0 (default CPU:0)")
    add_common_arguments(p, workers_help="detector processes, each on its share of the cores (default 1; with "
                                         "--min-face auto one process keeps about one core busy, so 2 on 2 "
                                         "cores are faster when there are several videos)")
    return p


# ----------------------------------------------------------------------------------------------
# The smallest face worth searching
# ----------------------------------------------------------------------------------------------
# MTCNN's P-net looks at 12x12 windows of an image pyramid whose first level is the frame scaled
# by 12 / (smallest face): with the package's default of 20 pixels a 1080p frame becomes twelve
# levels, the largest 1152x648, and that pyramid is nearly all of the time. The face the stage
# keeps (the most confident) is one of hundreds of pixels in every dataset this project reads, so
# the pyramid can start at a face size derived from the frame, or from the faces of the frames
# just before, and the frame can be decoded and searched at a fraction of its size.

def min_face_type(text: str):
    """``--min-face``: 'auto', 'original' or a number of pixels (at least the P-net's 12)."""
    if text in ("auto", "original"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected auto, original or a number of pixels") from None
    if value < PNET_CELL:
        raise argparse.ArgumentTypeError(f"{text}: the smallest face is at least {PNET_CELL} pixels (the P-net window)")
    return value


def frame_min_face(height: int, width: int, fraction: float = AUTO_MIN_FACE_FRACTION) -> int:
    """The smallest face searched in a frame of this size: a fraction of its shorter side, never
    below MTCNN's own 20-pixel default."""
    return max(MTCNN_MIN_FACE, int(round(fraction * min(height, width))))


def history_min_face(boxes: Sequence[Optional[FaceBox]], ratio: float = HISTORY_RATIO) -> Optional[int]:
    """``ratio`` times the smallest face among the boxes found (None when off or when there is
    none). A face's size is its box's longer side: the side of the square MTCNN searched it in."""
    sides = [max(b.w, b.h) for b in boxes if b is not None]
    if ratio <= 0 or not sides:
        return None
    return int(ratio * min(sides))


class MinFaceRule:
    """The smallest face (frame pixels) to search in the next batch of one video's frames.

    ``floor`` comes from ``--min-face`` (a fixed number, or a fraction of the frame); after each
    batch the faces found raise it to ``--min-face-history`` times the smallest of them. Frames in
    which the raised value finds nothing are searched again at the floor (``detect_batch``), so a
    face that shrank between batches is still found.
    """

    def __init__(self, setting, fraction: float = AUTO_MIN_FACE_FRACTION, history_ratio: float = HISTORY_RATIO):
        if setting == "original":
            raise ValueError("--min-face original uses the mtcnn package's own pyramid: no rule to apply")
        self.setting, self.fraction, self.history_ratio = setting, fraction, history_ratio
        self.history: Optional[int] = None

    def floor(self, height: int, width: int) -> int:
        if self.setting == "auto":
            return frame_min_face(height, width, self.fraction)
        return int(self.setting)

    def next(self, height: int, width: int) -> int:
        return max(self.floor(height, width), self.history or 0)

    def update(self, boxes: Sequence[Optional[FaceBox]]) -> None:
        """Remember this batch's faces; a batch without any face forgets the history."""
        self.history = history_min_face(boxes, self.history_ratio)


def pyramid_scales(min_side: int, min_face: float, scale: float = 1.0, factor: float = PYRAMID_FACTOR) -> List[float]:
    """The levels of MTCNN's image pyramid that look for faces of at least ``min_face`` frame
    pixels, as scales of the searched image: the frame resized by ``scale``, shorter side ``min_side``.

    The levels are the original's own (12/20 of the frame, then times 0.709 while the shorter side
    keeps the P-net's 12 pixels) with the first ones, which only find smaller faces, left out: a
    face is then searched at exactly the scales the full detector searches it at. (A new pyramid
    starting at 12/min_face would fall between the original's levels and move the boxes by a few
    per cent.) Below 20 pixels the pyramid starts at 12/min_face. The mtcnn package's own
    ``min_face_size`` cannot be used for this: it counts its levels from the image size alone, so
    above about 30 pixels its last levels shrink below the P-net's window, the network call fails
    and the package reports no face at all.
    """
    top = PNET_CELL / float(min_face)
    s, levels = max(PNET_CELL / MTCNN_MIN_FACE, top), []
    while min_side * s / scale >= PNET_CELL:
        if s <= top * (1 + 1e-9):
            levels.append(s / scale)
        s *= factor
    return levels


def decode_reduction(min_face: float, face_px: int = DETECT_FACE_PX) -> int:
    """The largest of 1, 2, 4, 8 that keeps the smallest face searched at ``face_px`` pixels or more
    (1 when ``face_px`` is 0): the JPEG is decoded, and the faces searched, at that fraction of its size."""
    r = 1
    while face_px > 0 and r < 8 and min_face / (2 * r) >= face_px:
        r *= 2
    return r


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


def row_to_detection(row: np.ndarray) -> dict:
    """One row of the package's box array ``[image, x1, y1, x2, y2, confidence, 5 x, 5 y]`` as its
    result dict, in floats: the package rounds to whole pixels of the image it searched, which
    after a 1/4 decode would be 4 frame pixels."""
    x1, y1, x2, y2, conf = (float(v) for v in row[1:6])
    points = {k: [float(row[6 + i]), float(row[11 + i])]
              for i, k in enumerate(("left_eye", "right_eye", "nose", "mouth_left", "mouth_right"))}
    return {"box": [x1, y1, x2 - x1, y2 - y1], "confidence": conf, "keypoints": points}


def resize_by(image: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    if scale == 1.0:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


_MTCNN: Dict[str, object] = {}  # TensorFlow device -> MTCNN network
_GRAPHS: Dict[str, tuple] = {}  # TensorFlow device -> (P-net, R-net, O-net) as graphs


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


# The three stages below are the mtcnn package's (its thresholds, NMS rules and box utilities),
# run differently: the frames go to TensorFlow once per batch, as uint8, and each graph normalises
# what it reads, (pixel - 127.5) / 128 as in the package: its pyramid levels are area-resampled
# straight from the uint8 frames and its R-net and O-net crops are cut from them. (The package
# hands TensorFlow the float64 batch once per pyramid level and crop, which costs more than the
# networks on a 1080p frame.) Area resampling and bilinear crops are weighted means, so they
# commute with that normalisation: the inputs agree with the package's to float rounding (1e-5).
PNET_THRESHOLD, RNET_THRESHOLD, ONET_THRESHOLD = 0.6, 0.7, 0.8  # the package's defaults


def pnet_proposals(pnet, raw, scales: Sequence[float]) -> np.ndarray:
    """The P-net stage on the uint8 batch ``raw`` (a tensor): each pyramid level (sizes truncated,
    as the package's resize), candidates above the threshold, NMS within and across levels,
    squared boxes. Rows ``[image, x1, y1, x2, y2, confidence]``."""
    from mtcnn.utils.bboxes import generate_bounding_box, resize_to_square, smart_nms_from_bboxes, upscale_bboxes

    n, h, w = raw.shape[:3]
    per_level = []
    for s in scales:
        # Every level from the frame itself, at full precision: resampling a coarser level
        # instead, or rounding the level to uint8, moves the boxes by 2-3 % IoU (MTCNN's final
        # boxes follow which candidates survive).
        reg, cls = pnet(raw, np.asarray([int(h * s), int(w * s)], np.int32))
        found = upscale_bboxes(generate_bounding_box(reg, cls, PNET_THRESHOLD), np.full(n, s))
        if len(found):
            per_level.append(smart_nms_from_bboxes(found, threshold=0.5, method="union", initial_sort=False))
    if not per_level:
        return np.empty((0, 6))
    merged = smart_nms_from_bboxes(np.concatenate(per_level), threshold=0.7, method="union", initial_sort=True)
    return resize_to_square(merged)


def crop_patches(raw, rows: np.ndarray, size: int):
    """Bilinear ``size`` x ``size`` crops of the boxes from the uint8 batch ``raw``, as the package
    cuts them (coordinates divided by the image size), outside the image filled with 127.5: the
    value that the package's normalised images hold there (0)."""
    import tensorflow as tf

    h, w = raw.shape[1:3]
    boxes = rows[:, [2, 1, 4, 3]] / np.asarray([h, w, h, w], np.float64)
    return tf.image.crop_and_resize(raw, boxes.astype(np.float32), rows[:, 0].astype(np.int32), (size, size),
                                    extrapolation_value=127.5)


def rnet_refine(rnet, raw, rows: np.ndarray) -> np.ndarray:
    """The R-net stage: new confidences, regressed boxes, threshold, NMS, squared boxes."""
    from mtcnn.utils.bboxes import adjust_bboxes, pick_matches, replace_confidence, resize_to_square, \
        smart_nms_from_bboxes

    offsets, scores = (t.numpy() for t in rnet(crop_patches(raw, rows, 24)))
    rows = adjust_bboxes(replace_confidence(rows, scores), offsets)
    rows = smart_nms_from_bboxes(pick_matches(rows, score_threshold=RNET_THRESHOLD), threshold=0.7,
                                 method="union", initial_sort=True)
    return resize_to_square(rows)


def onet_refine(onet, raw, rows: np.ndarray) -> np.ndarray:
    """The O-net stage: landmarks, new confidences, regressed boxes, threshold, NMS (by the smaller area)."""
    from mtcnn.utils.bboxes import adjust_bboxes, pick_matches, replace_confidence, smart_nms_from_bboxes
    from mtcnn.utils.landmarks import adjust_landmarks

    offsets, points, scores = onet(crop_patches(raw, rows, 48))
    points = adjust_landmarks(points, rows)
    rows = adjust_bboxes(replace_confidence(rows, scores.numpy()), offsets.numpy())
    rows = pick_matches(np.concatenate([rows, points], axis=-1), scores_column=5, score_threshold=ONET_THRESHOLD)
    return smart_nms_from_bboxes(rows, threshold=0.7, method="min", initial_sort=True)


class FaceDetector:
    """MTCNN (``mtcnn`` package) behind a small interface: RGB uint8 images in, one FaceBox or None out.

    ``min_face="original"`` (the default here, and what ``DUM/predict.py`` uses) is the package's
    own ``detect_faces`` with its 20-pixel minimum, as the original code called it. Otherwise
    (``"auto"`` or a number of pixels, see ``--min-face``) the same three networks and weights run
    as TensorFlow graphs over a pyramid that starts at that face size, on images reduced so that
    the smallest face searched keeps ``face_px`` pixels. TensorFlow is imported on first use, so
    creating the object is free.
    """

    def __init__(self, device: str = "CPU:0", max_side: int = 0, tie_tolerance: float = 1e-3,
                 min_face="original", min_face_fraction: float = AUTO_MIN_FACE_FRACTION,
                 face_px: int = DETECT_FACE_PX):
        self.device, self.max_side, self.tie_tolerance = device, max_side, tie_tolerance
        self.min_face, self.min_face_fraction, self.face_px = min_face, min_face_fraction, face_px
        self._mtcnn = None

    @property
    def original(self) -> bool:
        return self.min_face == "original"

    def _model(self):
        if self._mtcnn is None:
            if self.device not in _MTCNN:  # the network is shared by every detector of the process
                _MTCNN[self.device] = mtcnn_class()(device=self.device)
            self._mtcnn = _MTCNN[self.device]
        return self._mtcnn

    def _graphs(self):
        """The package's three networks traced once as TensorFlow graphs (for any input size): an
        eager Keras call costs milliseconds of Python per network and pyramid level, more than the
        arithmetic of a small level. The P-net graph takes the uint8 batch and a level size; the
        R-net and O-net graphs take raw crops."""
        if self.device not in _GRAPHS:
            pnet, rnet, onet = (stage.model for stage in self._model().stages)
            import tensorflow as tf

            def level(raw, size):
                return pnet((tf.image.resize(raw, size, method="area") - 127.5) / 128.0)

            crops = [tf.TensorSpec([None, None, None, 3], tf.float32)]
            _GRAPHS[self.device] = (
                tf.function(level, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8),
                                                    tf.TensorSpec([2], tf.int32)]),
                *(tf.function(lambda p, net=net: net((p - 127.5) / 128.0), input_signature=crops)
                  for net in (rnet, onet)))
        return _GRAPHS[self.device]

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

    def detect_frames(self, images_rgb: List[np.ndarray], min_face: float, scale: float = 1.0
                      ) -> List[Optional[FaceBox]]:
        """One box per image, for frames already resized by ``scale`` (e.g. decoded at 1/4: 0.25),
        searching faces of at least ``min_face`` frame pixels; boxes are in frame pixels."""
        results, scales = self._search(images_rgb, min_face, [scale] * len(images_rgb))
        picks = [pick_face(dets, self.tie_tolerance) for dets in results]
        return [None if d is None else detection_to_box(d, s) for d, s in zip(picks, scales)]

    def _detect(self, images_rgb: List[np.ndarray]):
        """(MTCNN's detections per image, the scale each image was detected at)."""
        if not images_rgb:
            return [], []
        if self.original:
            inputs, scales = [], []
            for im in images_rgb:
                s = self.max_side / max(im.shape[:2]) if self.max_side and max(im.shape[:2]) > self.max_side else 1.0
                inputs.append(resize_by(im, s))
                scales.append(s)
            return self._model().detect_faces(inputs), scales
        results, scales = [None] * len(images_rgb), [None] * len(images_rgb)
        for i, im in enumerate(images_rgb):  # each its own size: the minimum face follows the image
            h, w = im.shape[:2]
            min_face = frame_min_face(h, w, self.min_face_fraction) if self.min_face == "auto" else self.min_face
            s = 1.0 / decode_reduction(min_face, self.face_px)
            (results[i],), (scales[i],) = self._search([resize_by(im, s)], min_face, [s])
        return results, scales

    def _search(self, images: List[np.ndarray], min_face: float, scales: List[float]):
        """The graph pipeline on images resized by ``scales`` (then to ``max_side``); images of one
        size go through each network together."""
        inputs = []
        for k, im in enumerate(images):
            if self.max_side and max(im.shape[:2]) > self.max_side:
                f = self.max_side / max(im.shape[:2])
                im, scales[k] = resize_by(im, f), scales[k] * f
            inputs.append(im)
        results: List[Optional[List[dict]]] = [None] * len(inputs)
        groups: Dict[tuple, List[int]] = {}
        for k, im in enumerate(inputs):
            groups.setdefault((im.shape, scales[k]), []).append(k)
        for (shape, s), members in groups.items():
            for k, dets in zip(members, self._mtcnn_graphs([inputs[k] for k in members], min_face, s)):
                results[k] = dets
        return results, scales

    def _mtcnn_graphs(self, images: List[np.ndarray], min_face: float, scale: float) -> List[List[dict]]:
        """MTCNN on same-sized images that are frames resized by ``scale``, faces of at least
        ``min_face`` frame pixels."""
        pnet, rnet, onet = self._graphs()  # first: it imports TensorFlow in the order torch needs
        import tensorflow as tf
        from mtcnn.utils.bboxes import limit_bboxes

        h, w = images[0].shape[:2]
        with tf.device(self.device):
            raw = tf.convert_to_tensor(np.stack(images))
            rows = pnet_proposals(pnet, raw, pyramid_scales(min(h, w), min_face, scale))
            if len(rows):
                rows = rnet_refine(rnet, raw, rows)
            if len(rows):
                rows = onet_refine(onet, raw, rows)
        if len(rows) == 0:
            return [[] for _ in images]
        rows = limit_bboxes(rows, images_shapes=np.asarray([[h, w, 3]] * len(images)),
                            limit_landmarks=False)  # as the package: boxes clipped to the image
        return [[row_to_detection(r) for r in rows if int(r[0]) == k] for k in range(len(images))]


def make_detector(settings: Dict) -> FaceDetector:
    """The stage's detector; cheap to build, because the network behind it is made once per process."""
    return FaceDetector(settings["mtcnn_device"], settings["detect_max_side"], settings["tie_tolerance"],
                        settings["min_face"], settings["min_face_fraction"], settings["detect_face_px"])


# ----------------------------------------------------------------------------------------------
# One video
# ----------------------------------------------------------------------------------------------

def read_frames(folder: Path, names: Sequence[str], reduction: int, problems: List[str]
                ) -> Tuple[List[str], List[np.ndarray]]:
    """(names read, RGB images) of the frames, decoded at 1/``reduction`` size; unreadable ones
    are added to ``problems`` by path."""
    import cv2

    read, images = [], []
    for f in names:
        im = read_reduced(folder / f, reduction)
        if im is None:
            problems.append(f"{folder / f}: unreadable image")
            continue
        read.append(f)
        images.append(cv2.cvtColor(im, cv2.COLOR_BGR2RGB))
    return read, images


def detect_batch(detector: FaceDetector, images: List[np.ndarray], rule: MinFaceRule, frame_size: Tuple[int, int],
                 reduction: int) -> List[Optional[FaceBox]]:
    """Boxes of a batch of one video's frames (``frame_size``: height and width), decoded at
    1/``reduction``: searched for faces of the size ``rule`` gives, and the frames in which the
    history was too strict searched again at the floor."""
    if not images:
        return []
    min_face, floor = rule.next(*frame_size), rule.floor(*frame_size)
    boxes = detector.detect_frames(images, min_face, 1.0 / reduction)
    missing = [k for k, b in enumerate(boxes) if b is None]
    if missing and min_face > floor:
        again = detector.detect_frames([images[k] for k in missing], floor, 1.0 / reduction)
        for k, b in zip(missing, again):
            boxes[k] = b
    return boxes


def video_batches(names: Sequence[str], size: int, first: int) -> List[List[str]]:
    """``names`` cut into a first batch of ``first`` and then batches of ``size``."""
    head, rest = list(names[:first]), list(names[first:])
    return ([head] if head else []) + [rest[i:i + size] for i in range(0, len(rest), size)]


def first_frame_size(folder: Path, names: Sequence[str]) -> Optional[Tuple[int, int]]:
    """(height, width) from the header of the first frame that has a readable one (frames of one
    video share their size), or None."""
    from PIL import Image

    for f in names:
        try:
            with Image.open(folder / f) as im:
                return im.size[1], im.size[0]
        except OSError:
            continue
    return None


def write_boxes(out: Path, names: Sequence[str], boxes: Sequence[Optional[FaceBox]]) -> None:
    for f, box in zip(names, boxes):
        if box is None:
            (out / box_name(f)).unlink(missing_ok=True)  # --overwrite: an old box must not survive
        else:
            write_box(out / box_name(f), box)


def detect_video(split: str, video: str, root: Path, settings: Dict, overwrite: bool = False) -> VideoResult:
    """Write the ``.dat`` files of one video; see the module docstring.

    One helper thread decodes the next batch and writes the boxes of the last one while the
    detector works (both wait mostly on libjpeg and the disk, outside Python's lock).
    """
    from concurrent.futures import ThreadPoolExecutor

    folder = stage_dir(root, split, "images") / video
    frames = list_frames(folder)
    if not frames:
        return VideoResult(split, video, "failed", f"{folder}: no frames")
    if not overwrite and is_complete(root, "bbox", split, video, frames):
        return VideoResult(split, video, "skipped")
    out, todo, warnings = start_video(root, "bbox", split, video, frames, overwrite)

    detector = make_detector(settings)
    rule, size, reduction = None, None, 1
    if not detector.original:
        rule = MinFaceRule(settings["min_face"], settings["min_face_fraction"], settings["min_face_history"])
        size = first_frame_size(folder, todo)
        # One decode size for the whole video, from the floor: the history only trims the pyramid.
        reduction = decode_reduction(rule.floor(*size), detector.face_px) if size else 1
    problems: List[str] = []
    found, bs = 0, settings["batch_size"]
    # With a minimum-face rule the first batch is one frame: it is searched down to the floor, and
    # its face sets the history that makes every later batch cheaper.
    batches = video_batches(todo, bs, first=1 if rule is not None else bs)
    with ThreadPoolExecutor(1) as helper:
        writes = []
        pending = helper.submit(read_frames, folder, batches[0], reduction, problems) if batches else None
        for k in range(len(batches)):
            names, images = pending.result()
            if k + 1 < len(batches):
                pending = helper.submit(read_frames, folder, batches[k + 1], reduction, problems)
            boxes = detector(images) if rule is None else detect_batch(detector, images, rule, size, reduction)
            writes.append(helper.submit(write_boxes, out, names, boxes))
            found += sum(b is not None for b in boxes)
            if rule is not None:
                rule.update(boxes)
        for w in writes:
            w.result()  # a failed write raises here

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

def share_cores_with_tensorflow(workers: int) -> None:
    """Give each detector process its share of the cores (read when TensorFlow starts in it): the
    pipeline is mostly small network calls and Python between them, so one process uses about one
    core, and several processes with a thread each go faster than several fighting over all cores."""
    from misc.workers import usable_cores

    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(max(1, usable_cores() // workers)))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


def stage_settings(args: argparse.Namespace) -> Dict:
    """What the detector of every video needs (also written into each video's marker)."""
    return {"batch_size": args.batch_size, "detect_max_side": args.detect_max_side,
            "tie_tolerance": args.tie_tolerance, "mtcnn_device": args.mtcnn_device, "min_face": args.min_face,
            "min_face_fraction": args.min_face_fraction, "min_face_history": args.min_face_history,
            "detect_face_px": args.detect_face_px}


def describe_min_face(settings: Dict) -> str:
    m = settings["min_face"]
    if m == "original":
        return f"{MTCNN_MIN_FACE} px over the whole frame (the mtcnn package's own call, as the original)"
    base = f"{settings['min_face_fraction']:g} of the frame's shorter side" if m == "auto" else f"{m} px"
    hist = settings["min_face_history"]
    return base + (f", raised to {hist:g} x the previous batch's faces" if hist > 0 else "") + \
        f"; frames decoded down to 1/8 while that face keeps {settings['detect_face_px']} px"


def main(args: argparse.Namespace) -> Summary:
    setup_logging()
    log_run_header(logger, args)
    args.workers = pool_workers(args.workers, logger)
    if args.batch_size < 1 or args.workers < 1 or args.detect_max_side < 0 or args.detect_face_px < 0:
        raise SystemExit("--batch-size and --workers must be >= 1, --detect-max-side and --detect-face-px >= 0")
    if not 0 < args.min_face_fraction <= 1 or not 0 <= args.min_face_history <= 1:
        raise SystemExit("--min-face-fraction must be in (0, 1] and --min-face-history in [0, 1]")
    settings = stage_settings(args)
    logger.info("smallest face searched: %s", describe_min_face(settings))
    if args.workers > 1:
        share_cores_with_tensorflow(args.workers)
    summary = Summary("bbox")
    splits, missing = present_splits(args.prep_root, args.splits, "images")
    for s in missing:
        summary.fail(str(stage_dir(args.prep_root, s, "images")), "frame folder not found (run data/extract_frame.py)")
    videos = [(s, v) for s in splits for v in list_videos(stage_dir(args.prep_root, s, "images"))]
    videos = take_shard(videos, args.shard)
    logger.info("%d videos to consider (shard %d/%d)", len(videos), *args.shard)
    tasks = [(s, v, args.prep_root, settings, args.overwrite) for s, v in videos]
    run_stage(summary, detect_video, tasks, args.workers, "MTCNN boxes", logger, strict=args.strict)
    for s in splits:
        path = write_no_face_report(args.prep_root, "bbox", s, "in which MTCNN found no face (no .dat written)")
        logger.info("frames without a face: %s", path)
    return finish_run(args.prep_root, summary, args, logger)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args()
    sys.exit(exit_status(main(args), args))
