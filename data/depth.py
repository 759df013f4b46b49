"""Stage 3: dense face depth maps, the supervision signal for live faces.

    <prep-root>/<split>_depth/<video>/<video>_<i>_depth1D.jpg     grey, full frame size, one per frame with a box

Values: background 0, face 1..255, nearer = brighter (PRNet's convention). Backends:

* ``mesh`` (default): MediaPipe's 468-point face mesh, run on the square face region around the
  MTCNN box, rendered with a z-buffer over the 854 triangles of ``FACEMESH_TESSELATION`` (its
  3-cliques). The eye and mouth openings of the mesh are closed with triangle fans around their
  centres, so the map is one smooth height field. The face's farthest point maps to
  ``--min-level``, its nearest (the nose tip) to 255.
* ``mask``: a flat ellipse inscribed in the box (the pseudo-depth many users fall back to).
* ``ellipsoid`` (:func:`make_depth_backend` only; ``generated.py``'s fallback): a smooth face-shaped
  height field whose size, position and mean grey level match the mesh maps (see :class:`EllipsoidDepth`).
* ``import``: maps from an external PRNet run (``<name>_depth.jpg``, PRNet's demo naming), checked
  (readable, frame-sized, not empty) and stored under this layout.

PRNet fits a 3D morphable model and renders a dense 43k-vertex face; the mesh backend renders a
468-point mesh, so fine detail (nostrils, lips) is coarser, the face outline follows MediaPipe's
face oval (forehead to chin, no ears), and the grey levels are min-max normalised per face rather
than PRNet's ``z / max(z)``. At 32x32, the size CDCN trains on, the two look alike.

Other stages use :func:`make_depth_backend` (``generated.py`` on 256x256 generated faces with
``box=None``). The stage reads boxes with ``data/box_files.py`` in the ``--bbox-format`` you name.
A video is finished when ``<prep-root>/state/depth/<split>/<video>.json`` is written (last).

    python data/depth.py --prep-root PREP_ROOT
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: make the repository root importable
    import pathlib, sys
    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import abc
import argparse
import functools
import logging
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from data.box_files import BOX_FORMATS, BoxFormatError, FaceBox, read_box, square_region
from data.prep_common import (Summary, VideoResult, add_common_arguments, box_name, depth_name, exit_status,
                              finish_run, frames_with_boxes, is_complete, list_frames, list_videos, pool_workers,
                              present_splits, read_marker, run_stage, stage_dir, start_video, take_shard,
                              write_marker, write_no_face_report)
from misc.io import atomic_write_bytes, atomic_write_image
from misc.cli import add_renamed_argument
from misc.logger import log_run_header, setup_logging

logger = logging.getLogger("dsdg.depth")
BACKENDS = ("mesh", "mask", "import")
MESH_POINTS = 468


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("Dense face depth maps for every frame with a face box", add_help=False)
    add_renamed_argument(p, "--prep-root", "--root", type=Path, required=True,
                         help="PREP_ROOT holding <split>_images/ and <split>_bbox/; maps go to <split>_depth/")
    p.add_argument("--backend", choices=BACKENDS, default="mesh",
                   help="mesh: MediaPipe face mesh rendered as depth (default; PRNet, which the original used, "
                        "has no reachable weights); mask: flat face ellipse; import: maps from an external PRNet run")
    p.add_argument("--bbox-format", choices=BOX_FORMATS, default="mtcnn",
                   help="format of the .dat boxes (default mtcnn, what data/detect_faces.py writes); never guessed")
    p.add_argument("--box-scale", type=float, default=1.6,
                   help="mesh: side of the square face region = this x the longer box edge (default 1.6)")
    p.add_argument("--min-level", type=int, default=1,
                   help="mesh: grey level of the farthest face point; the nearest is 255 (default 1)")
    p.add_argument("--mesh-size", type=int, default=256,
                   help="mesh: the face region is resized to this square for the mesh and the z-buffer (default 256)")
    p.add_argument("--mask-value", type=int, default=255, help="mask: grey level inside the ellipse (default 255)")
    p.add_argument("--import-dir", type=Path, default=None, help="import: folder of the external depth maps")
    p.add_argument("--import-pattern", default="{split}_images/{video}/{stem}_depth.jpg",
                   help="import: path of a map under --import-dir; {split}, {video} and {stem} (the frame "
                        "name without .jpg) are filled in (default: PRNet's <stem>_depth.jpg run per frame folder)")
    p.add_argument("--jpeg-quality", type=int, default=95, help="JPEG quality of the written maps (default 95)")
    add_common_arguments(p, workers_help="depth processes, one face mesh each (default 1)")
    return p


# ----------------------------------------------------------------------------------------------
# Mesh topology: triangles and hole fans
# ----------------------------------------------------------------------------------------------

def triangles_from_edges(edges: Iterable[Tuple[int, int]]) -> np.ndarray:
    """All 3-cliques of an undirected edge set, as a sorted (T, 3) int array."""
    nbrs: Dict[int, set] = {}
    for a, b in edges:
        nbrs.setdefault(a, set()).add(b)
        nbrs.setdefault(b, set()).add(a)
    tris = {tuple(sorted((a, b, c))) for a, b in edges for c in nbrs[a] & nbrs[b]}
    return np.array(sorted(tris), dtype=np.int64)


def boundary_loops(triangles: np.ndarray) -> List[List[int]]:
    """Closed loops of edges that belong to one triangle only, longest (the outline) first."""
    count: Dict[Tuple[int, int], int] = {}
    for t in triangles:
        for a, b in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])):
            e = (min(a, b), max(a, b))
            count[e] = count.get(e, 0) + 1
    nbrs: Dict[int, List[int]] = {}
    for (a, b), c in count.items():
        if c == 1:
            nbrs.setdefault(a, []).append(b)
            nbrs.setdefault(b, []).append(a)
    if any(len(v) != 2 for v in nbrs.values()):
        raise ValueError("mesh boundary is not a set of simple loops")
    loops, seen = [], set()
    for start in sorted(nbrs):
        if start in seen:
            continue
        loop, prev, cur = [start], None, start
        seen.add(start)
        while True:
            nxt = [n for n in nbrs[cur] if n != prev and n not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            loop.append(cur)
            seen.add(cur)
        loops.append(loop)
    return sorted(loops, key=len, reverse=True)


@functools.lru_cache(maxsize=1)
def mesh_topology() -> Tuple[np.ndarray, Tuple[Tuple[int, ...], ...]]:
    """(triangles (T, 3), hole loops) of MediaPipe's face mesh; the holes are the eyes and the mouth.

    Triangles with an index >= 468 use the centre vertex of hole ``index - 468`` (see
    :func:`with_hole_centres`), which closes each opening with a fan.
    """
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    tris = triangles_from_edges(FACEMESH_TESSELATION)
    holes = boundary_loops(tris)[1:]  # [0] is the face outline
    fans = [(loop[i], loop[(i + 1) % len(loop)], MESH_POINTS + h)
            for h, loop in enumerate(holes) for i in range(len(loop))]
    return np.concatenate([tris, np.array(fans, dtype=np.int64)]), tuple(tuple(h) for h in holes)


def with_hole_centres(points: np.ndarray, holes) -> np.ndarray:
    """``points`` (468, 3) followed by the mean of each hole's rim: the fan centres."""
    return np.concatenate([points, np.stack([points[list(h)].mean(axis=0) for h in holes])])


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------

def render_depth(vertices: np.ndarray, triangles: np.ndarray, size: int, min_level: int = 1) -> np.ndarray:
    """Z-buffer a triangle mesh into a ``(size, size)`` uint8 map.

    vertices: (V, 3) = column, row (pixels of the map) and depth (larger = nearer). Pixels covered
    by the mesh get ``min_level`` (farthest covered point) .. 255 (nearest), others 0. Triangles are
    drawn far to near with their index as colour, then every covered pixel takes the depth of the
    plane through its triangle, which is exact for an orthographic mesh and costs one numpy pass.
    """
    import cv2

    xy, d = vertices[:, :2], vertices[:, 2]
    corner_d = d[triangles]  # (T, 3)
    order = np.argsort(corner_d.mean(axis=1), kind="stable")  # far first, so nearer triangles overwrite
    ids = np.zeros((size, size), np.int32)
    # Pixel (c, r) samples the point (c + 0.5, r + 0.5); 4 fractional bits keep sub-pixel precision.
    fixed = np.round((xy[triangles[order]] - 0.5) * 16).astype(np.int32)
    for poly, colour in zip(fixed, (order + 1).tolist()):
        cv2.fillConvexPoly(ids, poly, colour, cv2.LINE_8, 4)
    face = ids > 0
    if not face.any():
        return np.zeros((size, size), np.uint8)
    # Row t + 1 of the table: triangle t's plane (a, b, c) and depth range; row 0 (background) is unused.
    table = np.zeros((len(triangles) + 1, 5), np.float32)
    table[1:] = np.stack([*plane_coefficients(xy[triangles], corner_d), corner_d.min(1), corner_d.max(1)], axis=1)
    p = table[ids]  # (size, size, 5)
    grid = np.arange(size, dtype=np.float32) + 0.5
    z = p[..., 0] * grid[None, :] + p[..., 1] * grid[:, None] + p[..., 2]
    # Pixels on a triangle's rim may lie just outside it; on a sliver (closed lips, eyelids) the
    # plane is steep and would extrapolate to spikes, so keep each pixel within its triangle's range.
    z = np.minimum(np.maximum(z, p[..., 3]), p[..., 4])
    lo, hi = z[face].min(), z[face].max()
    out = np.clip(np.round(min_level + (255 - min_level) * (z - lo) / max(hi - lo, 1e-6)), 1, 255).astype(np.uint8)
    out[~face] = 0
    return out


def plane_coefficients(tri_xy: np.ndarray, tri_d: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per triangle ``(a, b, c)`` with depth = a*x + b*y + c through its three corners.

    tri_xy: (T, 3, 2), tri_d: (T, 3). Triangles seen edge-on (zero area) get their mean depth.
    """
    p0, p1, p2 = tri_xy[:, 0], tri_xy[:, 1], tri_xy[:, 2]
    e1, e2 = p1 - p0, p2 - p0
    dd1, dd2 = tri_d[:, 1] - tri_d[:, 0], tri_d[:, 2] - tri_d[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    ok = np.abs(det) > 1e-9
    safe = np.where(ok, det, 1.0)
    a = np.where(ok, (dd1 * e2[:, 1] - dd2 * e1[:, 1]) / safe, 0.0)
    b = np.where(ok, (dd2 * e1[:, 0] - dd1 * e2[:, 0]) / safe, 0.0)
    c = np.where(ok, tri_d[:, 0] - a * p0[:, 0] - b * p0[:, 1], tri_d.mean(axis=1))
    return a, b, c


def square_crop(image: np.ndarray, x0: int, y0: int, side: int, size: int) -> np.ndarray:
    """The square ``[y0:y0+side, x0:x0+side]`` of ``image`` (zero outside it), resized to ``size``."""
    import cv2

    h, w = image.shape[:2]
    ix0, iy0, ix1, iy1 = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
    if (ix0, iy0, ix1, iy1) == (x0, y0, x0 + side, y0 + side):
        sq = image[y0:y0 + side, x0:x0 + side]  # inside the image: no padded copy needed
    else:
        sq = np.zeros((side, side) + image.shape[2:], image.dtype)
        sq[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = image[iy0:iy1, ix0:ix1]
    return cv2.resize(sq, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)


def paste_region(region_map: np.ndarray, x0: int, y0: int, side: int, width: int, height: int) -> np.ndarray:
    """A zero ``(height, width)`` map with ``region_map`` resized to ``side`` and placed at (x0, y0)."""
    import cv2

    full = np.zeros((height, width), np.uint8)
    ix0, iy0, ix1, iy1 = max(0, x0), max(0, y0), min(width, x0 + side), min(height, y0 + side)
    if ix1 <= ix0 or iy1 <= iy0:
        return full
    interp = cv2.INTER_AREA if side < region_map.shape[0] else cv2.INTER_LINEAR
    up = cv2.resize(region_map, (side, side), interpolation=interp)
    full[iy0:iy1, ix0:ix1] = up[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
    return full


# ----------------------------------------------------------------------------------------------
# Backends
# ----------------------------------------------------------------------------------------------

class DepthBackend(abc.ABC):
    """``backend(bgr_uint8_image, box_or_None) -> (H, W) uint8 map or None`` (no face); ``close()``.

    Subclasses render a square region around the face (:meth:`region_map`); ``box=None`` means the
    whole image is the face region.
    """
    region_scale = 1.0     # side of the square region / longer box edge
    min_decode_side = 192  # the region is decoded at no fewer pixels than this (see depth_for_frame)

    @abc.abstractmethod
    def region_map(self, image: np.ndarray,
                   box: Optional[FaceBox]) -> Optional[Tuple[np.ndarray, Tuple[int, int, int]]]:
        """``(map (S, S) uint8, (x0, y0, side))``: the map of the square ``side`` at (x0, y0) of
        ``image`` (the square may extend past the image), or None when there is no face."""

    def __call__(self, image: np.ndarray, box: Optional[FaceBox] = None) -> Optional[np.ndarray]:
        h, w = image.shape[:2]
        r = self.region_map(image, box)
        if r is None:
            return None
        m, (x0, y0, side) = r
        return paste_region(m, x0, y0, side, w, h)

    def close(self) -> None:
        """Release native resources (the mesh graph); the backend may not be used afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _region(box: Optional[FaceBox], scale: float, w: int, h: int) -> Tuple[int, int, int]:
    # box=None: the whole image is the face, taken as it is (no enlargement).
    return square_region(FaceBox(0, 0, w, h), 1.0, w, h) if box is None else square_region(box, scale, w, h)


class MeshDepth(DepthBackend):
    """MediaPipe face mesh -> z-buffered depth. One FaceMesh per object, created on first use."""

    def __init__(self, box_scale: float = 1.6, min_level: int = 1, mesh_size: int = 256,
                 min_detection_confidence: float = 0.5):
        if not 1 <= min_level <= 255:
            raise ValueError(f"min_level must lie in 1..255, got {min_level}")
        self.region_scale, self.min_level, self.mesh_size = box_scale, min_level, mesh_size
        self.min_detection_confidence = min_detection_confidence
        self._mesh = None

    def _face_mesh(self):
        if self._mesh is None:
            import mediapipe as mp
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=1, refine_landmarks=False,
                min_detection_confidence=self.min_detection_confidence)
        return self._mesh

    def landmarks(self, rgb: np.ndarray) -> Optional[np.ndarray]:
        """(468, 3) mesh points of the face in a square RGB image: column, row, depth (larger = nearer),
        all in pixels; None when the mesh finds no face."""
        res = self._face_mesh().process(rgb)
        if not res.multi_face_landmarks:
            return None
        s = rgb.shape[1]
        # MediaPipe's z has x's scale and grows away from the camera.
        return np.array([(p.x * s, p.y * s, -p.z * s) for p in res.multi_face_landmarks[0].landmark])

    def region_map(self, image, box):
        import cv2

        h, w = image.shape[:2]
        x0, y0, side = _region(box, self.region_scale, w, h)
        crop = square_crop(image, x0, y0, side, self.mesh_size)
        pts = self.landmarks(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB))
        if pts is None:
            return None
        triangles, holes = mesh_topology()
        return render_depth(with_hole_centres(pts, holes), triangles, self.mesh_size, self.min_level), (x0, y0, side)

    def close(self):
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None


class MaskDepth(DepthBackend):
    """A flat ellipse inscribed in the face box (the whole image with ``box=None``)."""
    work_side = 128  # the ellipse is drawn on a square of this size
    min_decode_side = 64

    def __init__(self, value: int = 255):
        if not 1 <= value <= 255:
            raise ValueError(f"mask value must lie in 1..255, got {value}")
        self.value = value

    def region_map(self, image, box):
        import cv2

        h, w = image.shape[:2]
        face = FaceBox(0, 0, w, h) if box is None else box
        x0, y0, side = square_region(face, 1.0, w, h)
        s = self.work_side / side
        m = np.zeros((self.work_side, self.work_side), np.uint8)
        cx, cy = (face.center[0] - x0) * s, (face.center[1] - y0) * s
        axes = (max(16, int(round(face.w * s * 8))), max(16, int(round(face.h * s * 8))))  # half-axes, 4 bits
        cv2.ellipse(m, (int(round(cx * 16)), int(round(cy * 16))), axes, 0, 0, 360, self.value, -1, cv2.LINE_8, 4)
        return m, (x0, y0, side)


class EllipsoidDepth(DepthBackend):
    """A half-ellipsoid height field ``peak * sqrt(1 - r^2)`` placed and sized like the face that the
    mesh backend renders in a face box, with the mesh maps' mean grey level: a label that stands in
    for a mesh map when the mesh finds no face (``generated.py``'s fallback).

    Measured (not fitted by hand): on the eight real faces at hand (the seven photos of
    ``shared/data/faces`` and skimage's astronaut), each MTCNN box was cut as the generator's
    training crops are (the tight box, resized to 256 x 256), the mesh backend rendered it with
    ``box=None``, and the map was resized to 32 x 32 as ``generated.py`` writes it. Those mesh maps
    have a mean grey level of 123 +- 6 (162 +- 5 over the face pixels), the face covers 76 +- 5 % of
    the map, spans 0.97 of its width and 0.90 of its height and is centred at (0.50, 0.53). So the
    ellipsoid is centred at (0.50, 0.53) of the box with half-axes 0.50 and 0.48 of its width and
    height (area 0.756 of the box, the mesh's coverage), and its ``peak`` of 243 gives the mean over
    the face 2/3 * 243 = 162, the mesh maps'. Result, through the same path (256 px, then 32 px):
    mean 122 (mesh 123), face mean 159 (162), coverage 77 % (76 %); the mean absolute difference to
    the eight mesh maps is 30 grey levels (a mesh map differs from the average of the eight by 17),
    against 84 and a mean of 202 for the flat ``mask`` ellipse at 255, which made generated live
    labels far brighter than real ones.
    The mesh maps are flatter across the forehead and cheeks and brighter at the nose; a half
    ellipsoid keeps the label smooth and free of features the image may not show.
    """
    CENTRE = (0.50, 0.53)      # of the box, from its top-left corner
    HALF_AXES = (0.50, 0.48)   # of the box width and height
    PEAK = 243                 # grey level at the centre; the face mean is 2/3 of it
    work_side = 128            # the field is drawn on a square of this size
    min_decode_side = 64

    def __init__(self, peak: int = PEAK):
        if not 1 <= peak <= 255:
            raise ValueError(f"ellipsoid peak must lie in 1..255, got {peak}")
        self.peak = peak

    def region_map(self, image, box):
        h, w = image.shape[:2]
        face = FaceBox(0, 0, w, h) if box is None else box
        x0, y0, side = square_region(face, 1.0, w, h)
        centres = (np.arange(self.work_side) + 0.5) * side / self.work_side  # pixel centres, image pixels
        dx = (centres + x0 - face.x - self.CENTRE[0] * face.w) / (self.HALF_AXES[0] * face.w)
        dy = (centres + y0 - face.y - self.CENTRE[1] * face.h) / (self.HALF_AXES[1] * face.h)
        r2 = dx[None, :] ** 2 + dy[:, None] ** 2
        height = self.peak * np.sqrt(np.clip(1.0 - r2, 0.0, None))
        m = np.where(r2 < 1.0, np.clip(np.round(height), 1, 255), 0).astype(np.uint8)
        return m, (x0, y0, side)


def make_depth_backend(name: str = "mesh", **kw) -> DepthBackend:
    """``mesh`` (:class:`MeshDepth`), ``mask`` (:class:`MaskDepth`) or ``ellipsoid``
    (:class:`EllipsoidDepth`); keyword arguments go to the class."""
    if name == "mesh":
        return MeshDepth(**kw)
    if name == "mask":
        return MaskDepth(**kw)
    if name == "ellipsoid":
        return EllipsoidDepth(**kw)
    if name == "import":
        raise ValueError("the import backend copies maps from files, not images: run "
                         "`python -m data.depth --backend import --import-dir DIR` instead")
    raise ValueError(f"unknown depth backend {name!r}; choose mesh, mask or ellipsoid")


# ----------------------------------------------------------------------------------------------
# One frame, one video
# ----------------------------------------------------------------------------------------------

_REDUCED = {1: "IMREAD_COLOR", 2: "IMREAD_REDUCED_COLOR_2", 4: "IMREAD_REDUCED_COLOR_4", 8: "IMREAD_REDUCED_COLOR_8"}


def depth_for_frame(path: Path, box: FaceBox, backend: DepthBackend) -> Optional[np.ndarray]:
    """Full-size map of one frame file. Decodes the JPEG at 1/2, 1/4 or 1/8 size when the face
    region stays at least ``backend.min_decode_side`` pixels wide: libjpeg's DCT scaling makes that
    decode several times cheaper, and the mesh looks at 192x192 pixels of the face anyway.

    Raises ValueError for an unreadable frame or a box outside it.
    """
    import cv2
    from PIL import Image

    try:
        with Image.open(path) as im:  # the header only: the full size without decoding
            width, height = im.size
    except OSError as e:
        raise ValueError(f"{path}: unreadable image ({e})") from None
    _, _, side = square_region(box, backend.region_scale, width, height)
    r = 1
    while r < 8 and side / (2 * r) >= backend.min_decode_side:
        r *= 2
    image = cv2.imread(str(path), getattr(cv2, _REDUCED[r]))
    if image is None:
        raise ValueError(f"{path}: unreadable image")
    result = backend.region_map(image, box.scaled(1.0 / r) if r > 1 else box)
    if result is None:
        return None
    m, (x0, y0, side_r) = result
    return paste_region(m, x0 * r, y0 * r, side_r * r, width, height)


_BACKEND: Optional[Tuple[tuple, DepthBackend]] = None


def _backend(settings: Dict) -> DepthBackend:
    """One backend per process (one FaceMesh), built on first use."""
    global _BACKEND
    key = tuple(sorted(settings.items()))
    if _BACKEND is None or _BACKEND[0] != key:
        if _BACKEND is not None:
            _BACKEND[1].close()
        if settings["backend"] == "mesh":
            b = MeshDepth(settings["box_scale"], settings["min_level"], settings["mesh_size"])
        else:
            b = MaskDepth(settings["mask_value"])
        _BACKEND = (key, b)
    return _BACKEND[1]


def depth_video(split: str, video: str, root: Path, settings: Dict, overwrite: bool = False) -> VideoResult:
    """Write the depth maps of one video (any backend); see the module docstring."""
    img_dir = stage_dir(root, split, "images") / video
    if not list_frames(img_dir):
        return VideoResult(split, video, "failed", f"{img_dir}: no frames")
    frames = frames_with_boxes(root, split, video)
    if not overwrite and is_complete(root, "depth", split, video, frames):
        return VideoResult(split, video, "skipped")
    warnings = []
    box_dir = stage_dir(root, split, "bbox") / video
    if read_marker(root, "bbox", split, video) is None:
        if not frames:
            return VideoResult(split, video, "failed", f"{box_dir}: no boxes (run data/detect_faces.py first)")
        warnings.append(f"{box_dir}: boxes not marked complete by data/detect_faces.py; "
                        f"using the {len(frames)} .dat files")
    elif not frames:
        warnings.append(f"{img_dir}: no frame has a face box; no maps written")
    out, todo, stale = start_video(root, "depth", split, video, frames, overwrite)
    warnings += stale

    problems: List[str] = []
    no_face: List[str] = []
    for f in todo:
        target = out / depth_name(f)
        target.unlink(missing_ok=True)  # --overwrite: an old map must not outlive a failed new one
        try:
            if settings["backend"] == "import":
                import_map(settings, split, video, f, img_dir / f, target)
                continue
            box = read_box(box_dir / box_name(f), settings["bbox_format"])
            m = depth_for_frame(img_dir / f, box, _backend(settings))
        except (BoxFormatError, ValueError) as e:
            problems.append(str(e))
            continue
        if m is None:
            no_face.append(f)
        else:
            atomic_write_image(target, m, settings["jpeg_quality"])
    counts = {"maps written": len(todo) - len(problems) - len(no_face), "frames without a mesh face": len(no_face)}
    if problems:
        return VideoResult(split, video, "failed", f"{len(problems)} frames failed", counts, problems, warnings)
    write_marker(root, "depth", split, video, {"frames": frames, "no_face": no_face, "settings": settings})
    return VideoResult(split, video, "done", counts=counts, warnings=warnings)


def import_map(settings: Dict, split: str, video: str, frame: str, frame_path: Path, target: Path) -> None:
    """Check one external map (readable, grey or colour, frame-sized, not all zero) and store it."""
    import cv2
    from PIL import Image

    stem = frame[:-len(".jpg")]
    src = Path(settings["import_dir"]) / settings["import_pattern"].format(split=split, video=video, stem=stem)
    if not src.is_file():
        raise ValueError(f"{src}: depth map for frame {frame_path} not found")
    m = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise ValueError(f"{src}: unreadable depth map")
    grey_jpeg = m.ndim == 2 and src.suffix.lower() in (".jpg", ".jpeg")
    if m.ndim == 3:
        m = cv2.cvtColor(m[:, :, :3], cv2.COLOR_BGR2GRAY)
    if m.dtype != np.uint8:
        raise ValueError(f"{src}: depth map must be 8-bit, got {m.dtype}")
    with Image.open(frame_path) as im:
        fw, fh = im.size
    if m.shape != (fh, fw):
        raise ValueError(f"{src}: depth map is {m.shape[1]}x{m.shape[0]} but frame {frame_path.name} is {fw}x{fh}")
    if not m.any():
        raise ValueError(f"{src}: depth map is all zero (no face rendered)")
    if grey_jpeg:
        atomic_write_bytes(target, src.read_bytes())  # already a grey JPEG: keep its bytes, no second loss
    else:
        atomic_write_image(target, m, settings["jpeg_quality"])


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def main(args: argparse.Namespace) -> Summary:
    setup_logging()
    log_run_header(logger, args)
    args.workers = pool_workers(args.workers, logger)
    if args.backend == "import" and (args.import_dir is None or not args.import_dir.is_dir()):
        raise SystemExit(f"--backend import needs --import-dir pointing at a folder (got {args.import_dir})")
    if not 1 <= args.min_level <= 255 or not 1 <= args.mask_value <= 255:
        raise SystemExit("--min-level and --mask-value must lie in 1..255")
    if args.box_scale < 1.0 or args.mesh_size < 64 or args.workers < 1:
        raise SystemExit("--box-scale must be >= 1, --mesh-size >= 64 and --workers >= 1")
    settings = {"backend": args.backend, "bbox_format": args.bbox_format, "box_scale": args.box_scale,
                "min_level": args.min_level, "mesh_size": args.mesh_size, "mask_value": args.mask_value,
                "import_dir": str(args.import_dir) if args.import_dir else None,
                "import_pattern": args.import_pattern, "jpeg_quality": args.jpeg_quality}
    summary = Summary("depth")
    splits, missing = present_splits(args.prep_root, args.splits, "images")
    for s in missing:
        summary.fail(str(stage_dir(args.prep_root, s, "images")), "frame folder not found (run data/extract_frame.py)")
    videos = [(s, v) for s in splits for v in list_videos(stage_dir(args.prep_root, s, "images"))]
    videos = take_shard(videos, args.shard)
    logger.info("%d videos to consider (shard %d/%d), backend %s", len(videos), *args.shard, args.backend)
    tasks = [(s, v, args.prep_root, settings, args.overwrite) for s, v in videos]
    run_stage(summary, depth_video, tasks, args.workers, f"depth ({args.backend})", logger, strict=args.strict)
    if args.backend != "import":
        for s in splits:
            path = write_no_face_report(args.prep_root, "depth", s, "with a box in which the face mesh found no face "
                                        "(no map written)")
            logger.info("frames without a mesh face: %s", path)
    return finish_run(args.prep_root, summary, args, logger)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args()
    sys.exit(exit_status(main(args), args))
