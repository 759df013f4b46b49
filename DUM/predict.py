"""Live/spoof decisions of the DUM depth network on photos, folders, video files or a webcam.

    python DUM/predict.py --checkpoint runs/dum/checkpoint.pth --input photos/ --output results.jsonl --annotate out/
    python -m DUM.predict --onnx cdcn_u.onnx --input clip.mp4 --every 5 --output results.csv
    python -m DUM.predict --checkpoint CDCN_U_P1.pkl --threshold 0.5 --webcam 0 --show true

Every frame goes the way the Dev/Test crops went (DUM/make_dataset/crop_dataset.py): MTCNN
(data/detect_faces.py) finds the faces; each box is enlarged by --face-scale about its centre, clipped to the
frame, cut out and resized to the network's input size, then normalised like the training images
(DUM.transforms.normalise_image: RGB, (x - 127.5) / 128). The score is the mean of the predicted depth
map (DUM/test.py's ``mean`` score of one frame); a face is ``live`` iff score >= threshold. The
threshold is the one DUM/train.py stored from Dev (or the ONNX file's), unless --threshold is given.
The network (any of ``DUM/zoo.py``) is the one the checkpoint or the ONNX file says it is; ``--model``
only checks that it is the expected one.

One output line per face: source, frame, face, box (x y w h), detector confidence, score, decision,
threshold. By default every face MTCNN finds (at --min-confidence or above) is scored, the one the
data pipeline would keep (the most confident) first as face 0; ``--all-faces false`` scores that one
only. A frame without a face gives one line with decision ``no_face``; a file that cannot be read
gives one line with decision ``error`` and the reason, and the other files are still processed.

``--maps true`` (with ``--annotate`` or ``--show``) adds a panel beside each annotated frame with every
face's crop, predicted depth (mu) and uncertainty (sigma) maps. The same in Python, in five lines
(docs/DEPLOY.md, tested as written): ``Predictor.load(model_file)`` then ``predictor(image_bgr)``, a
list of :class:`ScoredFace` (box, score, live, decision; mu and sigma with ``maps=True``).
"""
if __package__ in (None, ""):  # run as a file: make the repository root importable
    import pathlib
    import sys
    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse
import contextlib
import csv
import json
import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np
import torch

from data.box_files import FaceBox, crop
from DUM import zoo
from DUM.export_onnx import INPUT, ExportError, ScoredCDCN, read_metadata
from DUM.scoring import mean_depth_score, predict_maps
from DUM.transforms import CHANNEL_ORDER, EVAL_FACE_SCALE, INPUT_MEAN, INPUT_SCALE, normalise_image, resize
from DUM.weights import input_size, load_model
from misc.checkpoint import CheckpointError
from misc.cli import bool_flag
from misc.device import add_device_argument, resolve_device, to_input
from misc.grids import colour_map, put_text, text_style, text_size
from misc.io import TMP_MARK, atomic_open, atomic_write_image
from misc.logger import log_run_header, setup_logging
from misc.precision import (Precision, add_precision_argument, fp32_on, requested_spec, resolve_precision,
                            score_deviation)
from misc.progress import progress
from misc.run_dir import checkpoint_file

log = logging.getLogger("dsdg.predict")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")
FIELDS = ("source", "frame", "face", "x", "y", "w", "h", "confidence", "score", "decision", "threshold", "error")
LIVE_BGR, SPOOF_BGR, NOTE_BGR = (0, 200, 0), (0, 0, 230), (0, 215, 255)
DEFAULT_FPS = 25.0  # for annotated videos whose source does not say its frame rate


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("DSDG live/spoof prediction (CDCN + DUM)", add_help=False)
    g = p.add_argument_group("model")
    m = g.add_mutually_exclusive_group(required=True)
    m.add_argument("--checkpoint", type=checkpoint_file,
                   help="the released CDCN_U_P1.pkl, a checkpoint of DUM/train.py or its run directory (then its "
                        "newest checkpoint), run by PyTorch")
    m.add_argument("--onnx", type=Path, help="a model written by DUM/export_onnx.py (run by onnxruntime)")
    g.add_argument("--model", choices=zoo.NAMES, default=None,
                   help="the network the model file must be (an error otherwise); default: whatever the checkpoint "
                        "stores or its keys show, or the ONNX file's dsdg.model")
    g.add_argument("--threshold", type=float, default=None,
                   help="live iff score >= threshold. Default: the Dev EER threshold stored in the checkpoint by "
                        "DUM/train.py (or in the ONNX file); required for the released CDCN_U_P1.pkl")
    g.add_argument("--image-size", type=int, default=None,
                   help="network input size; default: the checkpoint's training size, 256 for the released file "
                        "(an ONNX file's size is fixed)")
    add_device_argument(g)
    add_precision_argument(g, "auto (checkpoints; an ONNX file runs in the precision of its graph, fp32)")
    g.add_argument("--fp32-check", type=bool_flag, default=False,
                   help="when the precision is not fp32, score every face in fp32 too and report at the end the "
                        "largest score difference and the decisions that differ at the threshold (costs an fp32 "
                        "pass). Default: %(default)s")
    g = p.add_argument_group("input")
    s = g.add_mutually_exclusive_group(required=True)
    s.add_argument("--input", type=Path,
                   help=f"an image, a video file, or a folder of them (not recursive; images: "
                        f"{' '.join(IMAGE_SUFFIXES)}; videos: {' '.join(VIDEO_SUFFIXES)})")
    s.add_argument("--webcam", type=int, metavar="N", help="read camera N (OpenCV's index; 0 = the first)")
    g.add_argument("--every", type=int, default=1,
                   help="score every N-th frame of videos and the webcam (frames 0, N, 2N, ...). Default: %(default)s")
    g.add_argument("--max-frames", type=int, default=0,
                   help="stop each video / the webcam after scoring this many frames; 0 = no limit (the webcam "
                        "then runs until Ctrl-C, or q in the --show window). Default: %(default)s")
    g = p.add_argument_group("faces")
    g.add_argument("--face-scale", type=float, default=None,
                   help="box enlargement before cropping; default: the ONNX file's, else 1.3 (the Dev/Test scale "
                        "the network was evaluated at)")
    g.add_argument("--all-faces", type=bool_flag, default=True,
                   help="true: score every face found, the most confident first; false: only the most confident "
                        "(what the data pipeline keeps). Default: %(default)s")
    g.add_argument("--min-confidence", type=float, default=0.9,
                   help="ignore MTCNN faces below this confidence (clear faces usually score > 0.99; MTCNN itself reports "
                        "down to about 0.7). Default: %(default)s")
    g.add_argument("--detect-max-side", type=int, default=0,
                   help="detect on a copy whose longer side is at most this many pixels (boxes scaled back); "
                        "640 makes 1080p frames over 10x faster. Default: 0 (full resolution, as the training data)")
    g.add_argument("--mtcnn-device", default="CPU:0", help="TensorFlow device of MTCNN, e.g. CPU:0 or GPU:0")
    g = p.add_argument_group("output")
    g.add_argument("--output", type=Path, default=None,
                   help="results file, one line per face: .jsonl (JSON lines) or .csv. Default: JSON lines on stdout")
    g.add_argument("--annotate", type=Path, default=None, metavar="DIR",
                   help="write annotated copies here: images under their names, videos as <name>.avi (MJPG), "
                        "the webcam as webcam_N.avi; boxes green = live, red = spoof, with the score")
    g.add_argument("--maps", type=bool_flag, default=False,
                   help="with --annotate / --show: number the faces and draw, in a panel beside the frame, each "
                        "face's predicted depth (mu) and uncertainty (sigma) maps. sigma needs a checkpoint of a "
                        "network with an uncertainty (the _u networks); ONNX files hold mu only. Default: %(default)s")
    g.add_argument("--show", type=bool_flag, default=False,
                   help="show annotated video / webcam frames in a window (needs a display; q or Esc stops). "
                        "Default: %(default)s")
    return p


# ----------------------------------------------------------------------------------------------
# Scoring faces
# ----------------------------------------------------------------------------------------------

def face_input(image_bgr: np.ndarray, box: FaceBox, scale: float, size: int) -> torch.Tensor:
    """(3, size, size) network input of one face, cut and normalised the way the test crops were."""
    return normalise_image(resize(crop(image_bgr, box, scale), size))


class TorchScorer:
    """A checkpoint run by PyTorch: normalised faces (N, 3, S, S) -> mean scores (N,).

    ``checkpoint``: a checkpoint of DUM/train.py or the released CDCN_U_P1.pkl (any network of
    ``DUM.zoo``); ``device``: a torch.device or a ``--device`` string ('auto', 'cpu', 'cuda:0').
    Attributes a caller may read: ``image_size`` (input side), ``threshold`` (the stored Dev EER
    threshold or None), ``face_scale`` (None: checkpoints do not record it), ``model`` (the zoo
    name), ``name`` (a description for logs), ``precision`` (``misc.precision.Precision``).
    ``precision``: a --precision value ('fp32' by default here, 'auto' on the command line) or a
    resolved Precision; ``fp32_check``: also score in fp32 for :meth:`fp32_deviation`.
    """

    def __init__(self, checkpoint: str | Path, device: str | torch.device = "auto", image_size: Optional[int] = None,
                 model: Optional[str] = None, precision: str | Precision = "fp32", fp32_check: bool = False):
        device = resolve_device(device) if isinstance(device, str) else device
        self.precision = resolve_precision(precision, device) if isinstance(precision, str) else precision
        # (score, fp32 score) of every face scored, when asked to compare (a mixed precision only)
        self.pairs: Optional[List[Tuple[np.ndarray, np.ndarray]]] = [] if fp32_check and self.precision.mixed else None
        net, meta = load_model(checkpoint, device, model=model, return_meta=True)
        self.net, self.device, self.model = ScoredCDCN(net).eval(), device, meta["model"]
        self.image_size = image_size or input_size(meta)
        self.threshold = meta["extra"].get("threshold")
        self.face_scale = None  # checkpoints do not record it
        self.name = f"{meta['model']}, {meta['source']} file {checkpoint} (PyTorch, {device}, {self.precision.name})"

    @torch.inference_mode()
    def __call__(self, faces: torch.Tensor) -> np.ndarray:
        x = to_input(faces, self.device)
        with self.precision.autocast():
            scores = self.net(x)[1].float().cpu().numpy()
        if self.pairs is not None:
            self.pairs.append((scores, self.net(x)[1].float().cpu().numpy()))
        return scores

    @torch.inference_mode()
    def maps(self, faces: torch.Tensor) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """(scores (N,), mu (N, M, M), sigma (N, M, M) or None for a network without uncertainty) in one
        pass; the scores are those of :meth:`__call__` (``DUM.scoring.mean_depth_score``)."""
        mu, sigma = predict_maps(self.net.model, faces, self.device, self.precision)
        scores = mean_depth_score(mu)
        if self.pairs is not None:
            self.pairs.append((scores.numpy(), mean_depth_score(predict_maps(self.net.model, faces, self.device,
                                                                             fp32_on(self.device))[0]).numpy()))
        return scores.numpy(), mu.numpy(), None if sigma is None else sigma.numpy()

    def fp32_deviation(self, threshold: float) -> Optional[dict]:
        """``misc.precision.score_deviation`` of every face scored so far against fp32 at ``threshold``
        (live iff score >= threshold); None when not comparing."""
        if self.pairs is None:
            return None
        got, ref = (np.concatenate([p[i] for p in self.pairs]) if self.pairs else np.zeros(0) for i in (0, 1))
        return score_deviation(got, ref, threshold)


class OnnxScorer:
    """A file of DUM/export_onnx.py run by onnxruntime; same interface as :class:`TorchScorer` (its
    ``threshold`` and ``face_scale`` come from the file's metadata). The graph holds mu and the score
    only, so :meth:`maps` has no sigma."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", image_size: Optional[int] = None,
                 model: Optional[str] = None):
        import onnxruntime as ort

        path = Path(path)
        device = resolve_device(device) if isinstance(device, str) else device
        if not path.is_file():
            raise CheckpointError(f"{path}: ONNX file not found")
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise CheckpointError(f"{path}: --device {device} asked for, but this onnxruntime has no CUDA "
                                      "provider (install onnxruntime-gpu) ")
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise CheckpointError(f"{path}: onnxruntime cannot load it ({type(e).__name__}: {e})") from None
        info = read_metadata(self.session.get_modelmeta().custom_metadata_map, str(path))
        if (info["input_mean"], info["input_scale"], info["channel_order"]) != (INPUT_MEAN, INPUT_SCALE, CHANNEL_ORDER):
            raise ExportError(f"{path}: expects {info['channel_order']} input normalised as (x - {info['input_mean']}) "
                              f"/ {info['input_scale']}; this script feeds {CHANNEL_ORDER}, (x - {INPUT_MEAN}) / "
                              f"{INPUT_SCALE}")
        if model not in (None, info["model"]):
            raise ExportError(f"{path}: holds '{info['model']}' (dsdg.model), not '{model}' (--model {model})")
        if image_size not in (None, info["image_size"]):
            raise ExportError(f"{path}: the graph takes {info['image_size']} px inputs, not --image-size {image_size}")
        self.image_size, self.threshold, self.face_scale = info["image_size"], info["threshold"], info["face_scale"]
        self.model = info["model"]
        self.name = f"{info['model']}, ONNX file {path} (onnxruntime, {self.session.get_providers()[0]})"

    def __call__(self, faces: torch.Tensor) -> np.ndarray:
        return self.session.run(["score"], {INPUT: faces.numpy()})[0]

    def fp32_deviation(self, threshold: float) -> None:
        return None  # the graph is fp32

    def maps(self, faces: torch.Tensor) -> Tuple[np.ndarray, np.ndarray, None]:
        """(scores (N,), mu (N, M, M), None): the exported graph has no log-variance head."""
        mu, scores = self.session.run(["mu", "score"], {INPUT: faces.numpy()})
        return scores, mu, None


def open_scorer(model_file: str | Path, device: str | torch.device = "auto", image_size: Optional[int] = None,
                model: Optional[str] = None):
    """:class:`OnnxScorer` for a ``.onnx`` file, else :class:`TorchScorer` (a checkpoint or the released file)."""
    cls = OnnxScorer if Path(model_file).suffix.lower() == ".onnx" else TorchScorer
    return cls(model_file, device, image_size, model)


def decision_threshold(model_file: str | Path, given: Optional[float], stored: Optional[float]) -> float:
    """``given`` if not None, else the model file's stored threshold; ValueError naming the file when neither."""
    if given is not None:
        return float(given)
    if stored is None:
        raise ValueError(f"{model_file}: stores no decision threshold (the released CDCN_U_P1.pkl has none, and a "
                         "DUM/train.py run stores one at its first Dev evaluation). Pass a threshold (--threshold), "
                         "or use a checkpoint trained by DUM/train.py with a Dev list")
    return float(stored)


@dataclass
class ScoredFace:
    """One face of a frame, as :class:`Predictor` returns it.

    ``box``: the MTCNN box (``data.box_files.FaceBox``: ``x``, ``y``, ``w``, ``h`` in pixels of the frame,
    ``confidence``, ``landmarks``); ``score``: the mean predicted depth (higher = more bona fide);
    ``live``: ``score >= threshold``; ``decision``: 'live' or 'spoof'. With ``Predictor(maps=True)``
    also ``mu``, the predicted depth map (M, M) float32 (nearer = larger, about 0..1), and ``sigma``, its
    uncertainty (None for networks without one and for ONNX files); otherwise both are None.
    """
    box: FaceBox
    score: float
    live: bool
    mu: Optional[np.ndarray] = None
    sigma: Optional[np.ndarray] = None

    @property
    def decision(self) -> str:
        return "live" if self.live else "spoof"


class Predictor:
    """BGR frame (as ``cv2.imread`` returns it) -> the scored faces in it, face 0 the most confident (an
    empty list when there is none). The Python API documented in docs/DEPLOY.md:

        predictor = Predictor.load("runs/dum_p1/checkpoint.pth")   # or a .onnx file of DUM/export_onnx.py
        for face in predictor(cv2.imread("photo.jpg")):
            print(face.box, face.score, face.decision)

    ``scorer``: a :class:`TorchScorer` or :class:`OnnxScorer`; ``detector``: a ``data.detect_faces.FaceDetector``;
    a face is live iff its score >= ``threshold``; ``face_scale``: box enlargement before cropping (1.3,
    the Dev/Test crops'); ``all_faces``: every face at ``min_confidence`` or above, else only the most
    confident; ``maps``: also return each face's mu and sigma maps (:class:`ScoredFace`).
    """

    def __init__(self, scorer, detector, threshold: float, face_scale: float = EVAL_FACE_SCALE, all_faces: bool = True,
                 min_confidence: float = 0.9, maps: bool = False):
        self.scorer, self.detector, self.threshold = scorer, detector, threshold
        self.face_scale, self.all_faces, self.min_confidence = face_scale, all_faces, min_confidence
        self.maps = maps

    @classmethod
    def load(cls, model_file: str | Path, threshold: Optional[float] = None, *, device: str = "auto",
             maps: bool = False, face_scale: Optional[float] = None, all_faces: bool = True,
             min_confidence: float = 0.9, detect_max_side: int = 0, mtcnn_device: str = "CPU:0",
             model: Optional[str] = None) -> "Predictor":
        """A predictor for a model file with the command line's defaults: a checkpoint (DUM/train.py's, or the
        released CDCN_U_P1.pkl with a ``threshold``) run by PyTorch on ``device``, or a ``.onnx`` file run
        by onnxruntime. ``threshold``: default the one stored in the file (the Dev EER threshold), ValueError
        naming the file when it has none. ``face_scale``: default the ONNX file's, else 1.3. ``model``: the
        ``DUM.zoo`` network the file must be. Raises CheckpointError / ExportError for unusable files.
        """
        scorer = open_scorer(model_file, device, None, model)
        thr = decision_threshold(model_file, threshold, scorer.threshold)
        from data.detect_faces import FaceDetector  # TensorFlow is imported when the first frame is detected

        return cls(scorer, FaceDetector(mtcnn_device, detect_max_side), thr,
                   face_scale or scorer.face_scale or EVAL_FACE_SCALE, all_faces, min_confidence, maps)

    def __call__(self, image_bgr: np.ndarray) -> List[ScoredFace]:
        rgb = [cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)]
        boxes = self.detector.detect_all(rgb)[0] if self.all_faces else [b for b in self.detector(rgb) if b is not None]
        boxes = [b for b in boxes if b.confidence >= self.min_confidence]
        if not boxes:
            return []
        faces = torch.stack([face_input(image_bgr, b, self.face_scale, self.scorer.image_size) for b in boxes])
        if not self.maps:
            scores = [float(s) for s in self.scorer(faces)]  # compared in float64, as Dev set the threshold
            return [ScoredFace(b, s, s >= self.threshold) for b, s in zip(boxes, scores)]
        scores, mu, sigma = self.scorer.maps(faces)
        return [ScoredFace(b, float(s), float(s) >= self.threshold, mu[i], None if sigma is None else sigma[i])
                for i, (b, s) in enumerate(zip(boxes, scores))]


# ----------------------------------------------------------------------------------------------
# Output lines and pictures
# ----------------------------------------------------------------------------------------------

def frame_rows(source: str, frame: int, faces: List[ScoredFace], threshold: float) -> List[dict]:
    """The output lines of one frame: one per face, or one ``no_face`` line."""
    if not faces:
        return [problem_row(source, frame, "no_face", threshold)]
    return [{"source": source, "frame": frame, "face": i, "x": f.box.x, "y": f.box.y, "w": f.box.w, "h": f.box.h,
             "confidence": round(float(f.box.confidence), 6), "score": f.score,
             "decision": f.decision, "threshold": threshold, "error": None}
            for i, f in enumerate(faces)]


def problem_row(source: str, frame: Optional[int], decision: str, threshold: float,
                error: Optional[str] = None) -> dict:
    row = dict.fromkeys(FIELDS)
    row.update(source=source, frame=frame, decision=decision, threshold=threshold, error=error)
    return row


def output_kind(path: Optional[Path]) -> str:
    """'jsonl' or 'csv' by the extension of --output (JSON lines on stdout when None)."""
    suffix = ".jsonl" if path is None else path.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".csv"):
        raise SystemExit(f"--output {path}: use a .jsonl (JSON lines) or .csv file name")
    return "csv" if suffix == ".csv" else "jsonl"


class ResultWriter:
    """Writes result lines as JSON lines or CSV (by the file's extension), or JSON lines to stdout.

    A file is written under a temporary name and moved into place when the run ends (also after
    Ctrl-C), so a reader never sees half a file. JSON lines carry the box as ``"box": [x, y, w, h]``.
    """

    def __init__(self, path: Optional[Path]):
        self.path, self.kind, self._stack = path, output_kind(path), contextlib.ExitStack()

    def __enter__(self) -> "ResultWriter":
        if self.path is None:
            self.file = sys.stdout
        else:
            self.file = self._stack.enter_context(atomic_open(self.path, "w", encoding="utf-8", newline=""))
        if self.kind == "csv":
            self.csv = csv.DictWriter(self.file, fieldnames=FIELDS)
            self.csv.writeheader()
        return self

    def write(self, row: dict) -> None:
        if self.kind == "csv":
            self.csv.writerow(row)
            return
        out = {k: row[k] for k in ("source", "frame", "face")}
        out["box"] = None if row["x"] is None else [row[k] for k in ("x", "y", "w", "h")]
        out.update((k, row[k]) for k in ("confidence", "score", "decision", "threshold", "error"))
        self.file.write(json.dumps(out) + "\n")
        if self.path is None:
            self.file.flush()

    def __exit__(self, *exc) -> None:
        self._stack.__exit__(*exc)


def annotate(image_bgr: np.ndarray, faces: List[ScoredFace], threshold: float, maps: bool = False) -> np.ndarray:
    """A copy of the frame with each face box (green live, red spoof) labelled with its score.

    ``maps``: the boxes are numbered and a panel on the right shows each face's crop beside its predicted
    depth (mu) and uncertainty (sigma) maps (:func:`maps_panel`; the faces need their maps, ``Predictor(maps=True)``).
    """
    out = image_bgr.copy()
    h, w = out.shape[:2]
    thick = max(1, round(max(h, w) / 400))  # stays visible on phone photos and small frames alike
    font = 0.4 * thick
    for i, f in enumerate(faces):
        colour = LIVE_BGR if f.live else SPOOF_BGR
        b = f.box
        cv2.rectangle(out, (b.x, b.y), (b.x + b.w, b.y + b.h), colour, thick)
        text = f"{f'{i}: ' if maps else ''}{f.decision} {f.score:.3g}"
        _label(out, text, (max(0, b.x), max(0, b.y)), colour, font, thick)
    _label(out, "no face" if not faces else f"threshold {threshold:.4g}", (0, h), NOTE_BGR, font, thick)
    if maps:
        out = np.concatenate([out, maps_panel(image_bgr, faces, h)], axis=1)
    return out


_PANEL_PAD = 4


def _panel_text(tile: int) -> Tuple[float, int, int]:
    """(font scale, thickness, line height) of the panel's text for tiles of ``tile`` pixels."""
    scale, thick = text_style(min(tile, 150))  # moderate text beside large tiles
    return scale, thick, text_size("Ag", scale, thick)[1] + 8


def panel_tile(height: int) -> int:
    """Side of the tiles of :func:`maps_panel` for a frame ``height`` pixels high: two faces (each a text line
    above its tiles) fit under the header line; at least 48 px, at most 256."""
    line = _panel_text(256)[2]  # the tallest text line: an upper bound
    return max(48, min(256, (height - line) // 2 - line - _PANEL_PAD))


def maps_panel(image_bgr: np.ndarray, faces: List[ScoredFace], height: int) -> np.ndarray:
    """The ``--maps true`` panel (height, W, 3) BGR: per face (as many as fit, most confident first) its crop,
    mu and sigma side by side under a line "face i: decision score". mu is grey on the depth labels' 0..1
    scale (nearer = brighter); sigma is colour-mapped from 0 to the largest sigma of the frame, given in
    the header. The width depends on the frame height only, so a video's frames keep one size."""
    tile = panel_tile(height)
    scale, thick, line = _panel_text(tile)
    pad = _PANEL_PAD
    width = 3 * tile + 4 * pad
    panel = np.full((height, width, 3), 255, np.uint8)
    sigmas = [f.sigma for f in faces if f.sigma is not None]
    top = max(float(np.max(s)) for s in sigmas) if sigmas else None
    heads = ("face", "mu 0..1", "no sigma" if top is None else f"sigma 0..{top:.2g}")
    for c, text in enumerate(heads):
        put_text(panel, text, pad + c * (tile + pad) + tile // 2, line // 2, scale, thick, centre_x=True)
    fit = max(0, (height - line) // (tile + line + pad))
    for i, f in enumerate(faces[:fit]):
        y = line + i * (tile + line + pad)
        put_text(panel, f"face {i}: {f.decision} {f.score:.3g}", pad, y + line // 2, scale, thick,
                 colour=LIVE_BGR if f.live else SPOOF_BGR)
        y += line
        tiles = [cv2.resize(crop(image_bgr, f.box, 1.0), (tile, tile), interpolation=cv2.INTER_AREA)]
        if f.mu is not None:
            grey = np.clip(np.round(np.asarray(f.mu, np.float32) * 255), 0, 255).astype(np.uint8)
            tiles.append(cv2.cvtColor(cv2.resize(grey, (tile, tile), interpolation=cv2.INTER_NEAREST),
                                      cv2.COLOR_GRAY2BGR))
        if f.sigma is not None:
            rgb = colour_map(torch.from_numpy(np.asarray(f.sigma, np.float32))[None], top)[0]
            small = (rgb.permute(1, 2, 0).numpy()[:, :, ::-1] * 255).round().astype(np.uint8)
            tiles.append(cv2.resize(small, (tile, tile), interpolation=cv2.INTER_NEAREST))
        for c, t in enumerate(tiles):
            x = pad + c * (tile + pad)
            panel[y:y + tile, x:x + tile] = t
    if len(faces) > fit:
        put_text(panel, f"+{len(faces) - fit} more face(s) not shown", pad, height - line // 2, scale, thick)
    elif not faces:
        put_text(panel, "no face", pad, line + line // 2, scale, thick)
    return panel


def _label(image: np.ndarray, text: str, corner: Tuple[int, int], colour, font: float, thick: int) -> None:
    """``text`` in black on a ``colour`` strip whose lower-left corner is ``corner`` (kept inside the image)."""
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, thick)
    x, y = corner
    y = max(th + base, y)
    cv2.rectangle(image, (x, y - th - base), (x + tw, y), colour, -1)
    cv2.putText(image, text, (x, y - base), cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), thick, cv2.LINE_AA)


class AnnotatedVideo:
    """Annotated frames as an MJPG AVI, written under a temporary name and renamed when closed.

    The temporary name carries misc.io's TMP_MARK (so leftovers are recognisable) and still ends
    in ``.avi``, which OpenCV's writer needs to pick the container.
    """

    def __init__(self, path: Path, fps: float):
        self.path, self.fps, self.writer = path, fps, None
        self.tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}.avi")

    def write(self, frame: np.ndarray) -> None:
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = frame.shape[:2]
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"MJPG"), self.fps, (w, h))
            if not self.writer.isOpened():
                raise OSError(f"{self.path}: OpenCV cannot write an MJPG video here")
        self.writer.write(frame)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            os.replace(self.tmp, self.path)


# ----------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------

def list_inputs(path: Path) -> List[Path]:
    """The files to process: ``path`` itself, or the images and videos directly inside a folder."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)
        if not files:
            raise SystemExit(f"{path}: holds no image or video file ({' '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)})")
        return files
    if not path.is_file():
        raise SystemExit(f"{path}: no such file or folder")
    return [path]


def is_video(path: Path) -> bool:
    """By extension; a file of another extension is a video when OpenCV has no image reader for it."""
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES or suffix in IMAGE_SUFFIXES:
        return suffix in VIDEO_SUFFIXES
    return not cv2.haveImageReader(str(path))


def read_frames(cap: cv2.VideoCapture, every: int, max_frames: int) -> Iterator[Tuple[int, np.ndarray]]:
    """(index, BGR frame) of frames 0, every, 2 * every, ... (at most ``max_frames``; 0 = all)."""
    index = taken = 0
    while not max_frames or taken < max_frames:
        if index % every:
            if not cap.grab():  # skipped frames are not converted to images
                return
        else:
            ok, frame = cap.read()
            if not ok:
                return
            yield index, frame
            taken += 1
        index += 1


class Runner:
    """Runs the predictor over sources, emitting result lines and annotated pictures."""

    def __init__(self, predictor: Predictor, emit: Callable[[dict], None], args: argparse.Namespace):
        self.predictor, self.emit, self.args = predictor, emit, args
        self.counts: Counter = Counter()

    def _emit_frame(self, source: str, frame: int, faces: List[ScoredFace]) -> None:
        for row in frame_rows(source, frame, faces, self.predictor.threshold):
            self.counts[row["decision"]] += 1
            self.emit(row)

    def fail(self, source: str, message: str) -> None:
        log.warning("%s", message)
        self.counts["error"] += 1
        self.emit(problem_row(source, None, "error", self.predictor.threshold, message))

    def image(self, path: Path) -> None:
        # IMREAD_COLOR applies the EXIF orientation, so phone photos come out upright as MTCNN needs.
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            return self.fail(str(path), f"{path}: cannot be read as an image (corrupt, empty or unsupported file)")
        faces = self.predictor(image)
        self._emit_frame(str(path), 0, faces)
        if self.args.annotate:
            atomic_write_image(self.args.annotate / path.name,
                               annotate(image, faces, self.predictor.threshold, self.predictor.maps))

    def video(self, path: Path) -> None:
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            cap.release()
            return self.fail(str(path), f"{path}: cannot be opened as a video (corrupt or unsupported file)")
        out = None
        if self.args.annotate:
            out = self.args.annotate / (path.name if path.suffix.lower() == ".avi" else f"{path.name}.avi")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        total = -(-n // self.args.every) if n > 0 else None
        if total and self.args.max_frames:
            total = min(total, self.args.max_frames)
        if self.stream(str(path), cap, out, total) == 0:
            self.fail(str(path), f"{path}: no frame could be decoded (corrupt or unsupported video)")

    def webcam(self, index: int) -> None:
        cap = cv2.VideoCapture(index)
        if not cap.isOpened():
            raise SystemExit(f"webcam {index}: cannot be opened (no camera with this index, or it is busy)")
        out = self.args.annotate / f"webcam_{index}.avi" if self.args.annotate else None
        if self.stream(f"webcam:{index}", cap, out, None) == 0:
            self.fail(f"webcam:{index}", f"webcam {index}: delivered no frame")

    def stream(self, source: str, cap: cv2.VideoCapture, out: Optional[Path], total: Optional[int]) -> int:
        """Score the frames of an opened capture; returns how many were scored."""
        fps = cap.get(cv2.CAP_PROP_FPS)
        writer = AnnotatedVideo(out, max(1.0, (fps if fps > 0 else DEFAULT_FPS) / self.args.every)) if out else None
        scored = 0
        try:
            frames = read_frames(cap, self.args.every, self.args.max_frames)
            for index, frame in progress(frames, desc=Path(source).name, total=total, unit="frame", leave=False):
                faces = self.predictor(frame)
                self._emit_frame(source, index, faces)
                scored += 1
                if writer or self.args.show:
                    drawn = annotate(frame, faces, self.predictor.threshold, self.predictor.maps)
                    if writer:
                        writer.write(drawn)
                    if self.args.show and not show(drawn):
                        break
        finally:  # also on Ctrl-C: the frames so far are kept
            cap.release()
            if writer:
                writer.close()
            if self.args.show and scored:
                cv2.destroyAllWindows()
        return scored


def show(frame: np.ndarray) -> bool:
    """Display ``frame``; False when the user pressed q or Esc."""
    try:
        cv2.imshow("DSDG predict", frame)
        key = cv2.waitKey(1) & 0xFF
    except cv2.error as e:
        raise SystemExit(f"--show true: OpenCV cannot open a window here ({e}); run without --show") from None
    return key not in (ord("q"), 27)


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def load_scorer(args: argparse.Namespace):
    device = resolve_device(args.device)
    if args.onnx is not None:
        if args.precision not in (None, "fp32", "auto") or args.amp:
            raise SystemExit(f"--precision {args.precision or 'fp16/bf16 (--amp)'}: an ONNX file runs in the "
                             "precision of its graph (fp32); leave --precision out")
        return OnnxScorer(args.onnx, device, args.image_size, args.model)
    spec = requested_spec(args, "auto", "fp16" if device.type == "cuda" else "auto")
    return TorchScorer(args.checkpoint, device, args.image_size, args.model, spec, args.fp32_check)


def log_fp32_check(scorer, threshold: float) -> None:
    """The end-of-run line of ``--fp32-check``: the largest score difference from fp32, decisions that differ."""
    d = scorer.fp32_deviation(threshold)
    if d is None:
        return
    log.info("vs fp32 (--fp32-check): max |d score| %.3g over %d faces, %d decisions differ at the threshold %.6g",
             d["max_abs_diff"], d["items"], d["flips"], threshold)


def check_args(args: argparse.Namespace) -> None:
    if args.every < 1 or args.max_frames < 0:
        raise SystemExit("--every must be >= 1 and --max-frames >= 0")
    if args.face_scale is not None and args.face_scale <= 0:
        raise SystemExit("--face-scale must be positive")
    output_kind(args.output)
    if args.maps and not (args.annotate or args.show):
        raise SystemExit("--maps true draws on the annotated pictures: add --annotate DIR (or --show true)")
    # OpenCV's Qt window (X11 plugin only in the pip wheels) aborts the whole process when there is
    # no X display, losing the results: refuse before starting.
    if args.show and sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        raise SystemExit("--show true needs a display, and DISPLAY is not set; run without --show (use --annotate "
                         "to keep the annotated frames)")
    if args.annotate and args.input is not None:
        folder = args.input if args.input.is_dir() else args.input.parent
        if args.annotate.resolve() == folder.resolve():
            raise SystemExit(f"--annotate {args.annotate} is the input folder: annotated copies would replace the "
                             "originals; choose another folder")


def main(args: argparse.Namespace) -> Dict[str, int]:
    """Run the prediction; returns the number of output lines per decision (live, spoof, no_face, error)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # MTCNN's TensorFlow prints pages of notes otherwise
    setup_logging()
    if args.output is None:  # stdout carries the result lines: the log goes to stderr
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
                handler.setStream(sys.stderr)
    log_run_header(log, args)
    check_args(args)
    sources = None if args.webcam is not None else list_inputs(args.input)
    scorer = load_scorer(args)
    try:
        threshold = decision_threshold(args.onnx or args.checkpoint, args.threshold, scorer.threshold)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    face_scale = args.face_scale or scorer.face_scale or EVAL_FACE_SCALE
    from data.detect_faces import FaceDetector  # TensorFlow is imported when the first frame is detected

    predictor = Predictor(scorer, FaceDetector(args.mtcnn_device, args.detect_max_side), float(threshold),
                          face_scale, args.all_faces, args.min_confidence, args.maps)
    log.info("model: %s, %d px input; threshold %.6g (%s); face scale %.2f; %s", scorer.name, scorer.image_size,
             threshold, "--threshold" if args.threshold is not None else "from the model file", face_scale,
             "every face" if args.all_faces else "the most confident face")
    with ResultWriter(args.output) as out:
        runner = Runner(predictor, out.write, args)
        try:
            if sources is None:
                runner.webcam(args.webcam)
            else:
                for path in progress(sources, desc="files", unit="file", disable=True if len(sources) == 1 else None):
                    runner.video(path) if is_video(path) else runner.image(path)
        except KeyboardInterrupt:
            log.warning("interrupted: the results so far are kept")
    c = runner.counts
    log_fp32_check(scorer, float(threshold))
    log.info("%d faces: %d live, %d spoof; %d frames without a face; %d unreadable inputs%s", c["live"] + c["spoof"],
             c["live"], c["spoof"], c["no_face"], c["error"], f"; results in {args.output}" if args.output else "")
    return dict(c)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__.split("\n\n")[0])
    try:
        counts = main(parser.parse_args())
    except (CheckpointError, ExportError, OSError) as e:  # the messages name the file and the problem
        sys.exit(f"error: {e}")
    sys.exit(1 if counts.get("error") else 0)
