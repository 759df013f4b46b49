"""Face boxes on disk: one ``.dat`` text file per frame, and the geometry every stage shares.

Our format (``mtcnn``, written by ``data/detect_faces.py``)::

    182 64 83 107                         x y w h: column, row, width, height (ints, MTCNN convention)
    0.999121                              detector confidence
    204 100 245 102 224 126 202 139 244 140   landmarks: left eye, right eye, nose, mouth left, mouth right (x y each)

Lines 2 and 3 are optional when reading, so the one-line ``x y w h`` files of the original DSDG
``bbox.py`` read as they are. Two other conventions exist in the wild and are read only when asked
for by name (``fmt=``/``--bbox-format``), never guessed, because a PRNet line and an MTCNN line are
both four numbers:

* ``prnet``: one line ``left right top bottom`` (PRNet's ``api.py`` bbox order), floats allowed;
* ``cdcn``: four lines ``x``, ``y``, ``w``, ``h``, one value per line (CDCN's OULU boxes), floats allowed.

This module imports only numpy, so stages and ``--help`` stay fast.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from misc.io import PathLike, atomic_write_text

BOX_FORMATS = ("mtcnn", "prnet", "cdcn")
NUM_LANDMARK_VALUES = 10  # five (x, y) points


class BoxFormatError(ValueError):
    """A ``.dat`` file that does not hold a box in the requested format; the message names the file."""


@dataclass(frozen=True)
class FaceBox:
    """A face box in pixels: top-left corner ``(x, y)`` = (column, row), width ``w``, height ``h``.

    ``landmarks`` is the flat tuple ``(lex, ley, rex, rey, nx, ny, mlx, mly, mrx, mry)`` or None.
    """
    x: int
    y: int
    w: int
    h: int
    confidence: Optional[float] = None
    landmarks: Optional[Tuple[int, ...]] = None

    def __post_init__(self):
        if self.w <= 0 or self.h <= 0:
            raise ValueError(f"a face box needs a positive width and height, got w={self.w} h={self.h}")
        if self.landmarks is not None and len(self.landmarks) != NUM_LANDMARK_VALUES:
            raise ValueError(f"landmarks must hold {NUM_LANDMARK_VALUES} values (five x, y points), "
                             f"got {len(self.landmarks)}")

    @property
    def center(self) -> Tuple[float, float]:
        return self.x + self.w / 2.0, self.y + self.h / 2.0

    @property
    def area(self) -> int:
        return self.w * self.h

    def scaled(self, factor: float) -> "FaceBox":
        """The same box in an image resized by ``factor`` (e.g. 0.5 for a half-size decode)."""
        lm = None if self.landmarks is None else tuple(int(round(v * factor)) for v in self.landmarks)
        return FaceBox(int(round(self.x * factor)), int(round(self.y * factor)),
                       max(1, int(round(self.w * factor))), max(1, int(round(self.h * factor))),
                       self.confidence, lm)


# ----------------------------------------------------------------------------------------------
# Reading and writing
# ----------------------------------------------------------------------------------------------

def format_box(box: FaceBox) -> str:
    """The text of a ``.dat`` file in our format (line 2 and 3 only when known)."""
    lines = [f"{box.x} {box.y} {box.w} {box.h}"]
    if box.confidence is not None:
        lines.append(f"{box.confidence:.6f}")
    if box.landmarks is not None:
        if box.confidence is None:  # line 3 is identified by position: keep line 2 in place
            raise ValueError("a box with landmarks needs a confidence (line 2) to be written")
        lines.append(" ".join(str(int(v)) for v in box.landmarks))
    return "\n".join(lines) + "\n"


def write_box(path: PathLike, box: FaceBox) -> None:
    """Write ``box`` to ``path`` in our format, atomically."""
    atomic_write_text(path, format_box(box))


def read_box(path: PathLike, fmt: str = "mtcnn") -> FaceBox:
    """Read one face box; ``fmt`` is ``mtcnn`` (ours), ``prnet`` or ``cdcn``.

    Raises :class:`BoxFormatError` naming the file when it does not match ``fmt``.
    """
    if fmt not in BOX_FORMATS:
        raise ValueError(f"unknown bbox format {fmt!r}; choose one of {', '.join(BOX_FORMATS)}")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BoxFormatError(f"{path}: box file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BoxFormatError(f"{path}: cannot read box file ({e})") from None
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise BoxFormatError(f"{path}: box file is empty")
    parse = {"mtcnn": _parse_mtcnn, "prnet": _parse_prnet, "cdcn": _parse_cdcn}[fmt]
    try:
        return parse(lines)
    except ValueError as e:
        raise BoxFormatError(f"{path}: not a {fmt!r} box file ({e}); "
                             f"if it was written by another tool, pass the matching --bbox-format "
                             f"({', '.join(BOX_FORMATS)})") from None


def _ints(tokens, what: str):
    try:
        return [int(t) for t in tokens]
    except ValueError:
        raise ValueError(f"{what} must be integers, got {' '.join(tokens)!r}") from None


def _floats(tokens, what: str):
    try:
        vals = [float(t) for t in tokens]
    except ValueError:
        raise ValueError(f"{what} must be numbers, got {' '.join(tokens)!r}") from None
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"{what} must be finite, got {' '.join(tokens)!r}")
    return vals


def _parse_mtcnn(lines) -> FaceBox:
    if len(lines[0]) != 4:
        raise ValueError(f"line 1 must be 'x y w h' (4 integers), got {len(lines[0])} values")
    if len(lines) > 3:
        raise ValueError(f"expected at most 3 lines (box, confidence, landmarks), got {len(lines)}")
    x, y, w, h = _ints(lines[0], "line 1 (x y w h)")
    if w <= 0 or h <= 0:
        raise ValueError(f"width and height must be positive, got w={w} h={h}")
    conf = landmarks = None
    if len(lines) >= 2:
        if len(lines[1]) != 1:
            raise ValueError(f"line 2 must be one confidence value, got {len(lines[1])} values")
        conf = _floats(lines[1], "line 2 (confidence)")[0]
        if not 0.0 <= conf <= 1.0:
            raise ValueError(f"line 2 (confidence) must lie in [0, 1], got {conf}")
    if len(lines) == 3:
        if len(lines[2]) != NUM_LANDMARK_VALUES:
            raise ValueError(f"line 3 must hold {NUM_LANDMARK_VALUES} landmark integers, got {len(lines[2])}")
        landmarks = tuple(_ints(lines[2], "line 3 (landmarks)"))
    return FaceBox(x, y, w, h, conf, landmarks)


def _box_from_floats(x: float, y: float, w: float, h: float) -> FaceBox:
    if w <= 0 or h <= 0:
        raise ValueError(f"width and height must be positive, got w={w:g} h={h:g}")
    x0, y0 = int(round(x)), int(round(y))
    return FaceBox(x0, y0, max(1, int(round(x + w)) - x0), max(1, int(round(y + h)) - y0))


def _parse_prnet(lines) -> FaceBox:
    if len(lines) != 1 or len(lines[0]) != 4:
        raise ValueError("expected one line 'left right top bottom'")
    left, right, top, bottom = _floats(lines[0], "left right top bottom")
    if right <= left or bottom <= top:
        raise ValueError(f"needs right > left and bottom > top, got {' '.join(lines[0])!r}")
    return _box_from_floats(left, top, right - left, bottom - top)


def _parse_cdcn(lines) -> FaceBox:
    if len(lines) < 4 or any(len(ln) != 1 for ln in lines[:4]):
        raise ValueError("expected four lines x, y, w, h with one value each")
    x, y, w, h = _floats([ln[0] for ln in lines[:4]], "x, y, w, h")
    return _box_from_floats(x, y, w, h)


# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------

def enlarge_box(box: FaceBox, scale: float, image_w: int, image_h: int) -> Tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of ``box`` scaled by ``scale`` about its centre, clipped to the image.

    ``x1``/``y1`` are exclusive, so ``image[y0:y1, x0:x1]`` is the crop. Raises ValueError when
    the box does not overlap the image (a box from another frame size or another ``--bbox-format``).
    """
    cx, cy = box.center
    half_w, half_h = box.w * scale / 2.0, box.h * scale / 2.0
    x0, y0 = max(0, int(round(cx - half_w))), max(0, int(round(cy - half_h)))
    x1, y1 = min(image_w, int(round(cx + half_w))), min(image_h, int(round(cy + half_h)))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box x={box.x} y={box.y} w={box.w} h={box.h} lies outside the "
                         f"{image_w}x{image_h} image")
    return x0, y0, x1, y1


def square_region(box: Optional[FaceBox], scale: float, image_w: int, image_h: int) -> Tuple[int, int, int]:
    """A square ``(x0, y0, side)`` around ``box`` enlarged by ``scale`` (side = scale * longer edge).

    Not clipped: it may extend past the image (callers pad). ``box=None`` gives the smallest square
    centred on the whole image. Raises ValueError when the box does not overlap the image.
    """
    if box is None:
        side = max(image_w, image_h)
        return (image_w - side) // 2, (image_h - side) // 2, side
    enlarge_box(box, 1.0, image_w, image_h)  # overlap check with the standard message
    cx, cy = box.center
    side = max(1, int(round(max(box.w, box.h) * scale)))
    return int(round(cx - side / 2.0)), int(round(cy - side / 2.0)), side


def crop(image: np.ndarray, box: FaceBox, scale: float) -> np.ndarray:
    """``image`` cut to ``box`` enlarged by ``scale`` about its centre (clipped to the image)."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = enlarge_box(box, scale, w, h)
    return image[y0:y1, x0:x1]
