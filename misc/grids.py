"""Image grids that explain themselves: every row and column labelled in the picture, small tiles enlarged.

The trainers' grids (DUM/engine.py ``depth_grid``, networks/engine.py ``visualise``), the evaluation
report's worst-error strips (DUM/report.py) and their TensorBoard copies all go through
:func:`labelled_grid`, so they look alike wherever they are opened.

Tiles are enlarged by the smallest whole factor that makes them at least :data:`MIN_TILE` pixels
(nearest neighbour: a 4 x 4 depth map stays 16 sharp squares instead of a blur, and nothing is
invented between the pixels). Text is drawn with OpenCV's built-in Hershey font, which needs no font
file on any machine.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from misc.io import atomic_write_bytes

MIN_TILE = 96   # smallest side a tile is shown at, in pixels (about what a person can read a face at)
PAD = 2         # white gap between tiles, as torchvision's make_grid
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_INK = (0, 0, 0)


def upscale_factor(side: int, min_tile: int = MIN_TILE) -> int:
    """The smallest whole factor that brings ``side`` pixels to at least ``min_tile`` (1 when already there)."""
    return max(1, math.ceil(min_tile / max(1, side)))


def as_rgb(tiles: torch.Tensor) -> torch.Tensor:
    """(N, 1 or 3, h, w) or (N, h, w) in [0, 1] -> (N, 3, h, w) float32 on the CPU."""
    tiles = tiles.detach().float().cpu()
    if tiles.dim() == 3:
        tiles = tiles.unsqueeze(1)
    if tiles.shape[1] == 1:
        tiles = tiles.expand(-1, 3, -1, -1)
    if tiles.shape[1] != 3:
        raise ValueError(f"tiles must have 1 or 3 channels, not {tiles.shape[1]}")
    return tiles.clamp(0, 1)


def colour_map(maps: torch.Tensor, vmax: float, colormap: int = cv2.COLORMAP_VIRIDIS) -> torch.Tensor:
    """(N, h, w) non-negative maps -> (N, 3, h, w) RGB in [0, 1] through an OpenCV colour map, 0 .. ``vmax``
    spread over the whole map (values above ``vmax`` saturate). Used for sigma, so that it cannot be
    mistaken for a grey depth map."""
    x = maps.detach().float().cpu().clamp(min=0) / max(float(vmax), 1e-12)
    grey = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    out = [cv2.applyColorMap(g, colormap)[:, :, ::-1] for g in grey]  # BGR -> RGB
    return torch.from_numpy(np.stack(out).copy()).permute(0, 3, 1, 2).float() / 255.0


def text_style(tile: int) -> Tuple[float, int]:
    """Text size that suits a tile of ``tile`` pixels: about 13 px high at 96 px tiles, larger on big tiles."""
    scale = min(1.2, max(0.45, tile / 200))
    return scale, 2 if scale >= 0.9 else 1


def text_size(text: str, scale: float, thick: int) -> Tuple[int, int]:
    """(width, height) of possibly multi-line ``text``."""
    lines = text.split("\n")
    sizes = [cv2.getTextSize(line, _FONT, scale, thick) for line in lines]
    width = max(w for (w, _), _ in sizes)
    line_h = max(h + b for (_, h), b in sizes)
    return width, line_h * len(lines) + (len(lines) - 1) * 3


def put_text(canvas: np.ndarray, text: str, x: int, y_centre: int, scale: float, thick: int,
             centre_x: bool = False, colour: Tuple[int, int, int] = _INK) -> None:
    """Draw (multi-line) ``text`` vertically centred on ``y_centre``, left-aligned at ``x`` or centred on it."""
    lines = text.split("\n")
    (_, h), base = cv2.getTextSize("Ag", _FONT, scale, thick)
    line_h = h + base + 3
    y = int(y_centre - line_h * len(lines) / 2 + h + 1)
    for line in lines:
        w = cv2.getTextSize(line, _FONT, scale, thick)[0][0]
        cv2.putText(canvas, line, (int(x - w / 2) if centre_x else x, y), _FONT, scale, colour, thick, cv2.LINE_AA)
        y += line_h


def labelled_grid(rows: Sequence[torch.Tensor], row_labels: Sequence[str],
                  col_labels: Optional[Sequence[str]] = None, *, title: Optional[str] = None,
                  min_tile: int = MIN_TILE, pad: int = PAD, group: int = 1) -> torch.Tensor:
    """A (3, H, W) image in [0, 1]: one row of tiles per entry of ``rows``, its label on the left, the
    column labels on top and an optional title above them.

    ``rows``: tensors (N_r, 1 or 3, h, w) or (N_r, h, w) in [0, 1] (maps are shown grey; colour them
    with :func:`colour_map` first). Rows may hold different numbers of tiles (short rows end early)
    and tiles of different sizes (each row is enlarged to the grid's tile size: the largest side of
    any row, times the factor that brings it to ``min_tile``). Labels may hold ``\\n`` for a second
    line (e.g. the scale of a map). ``group`` > 1 widens the gap after every ``group`` columns (pairs).
    """
    if len(rows) != len(row_labels):
        raise ValueError(f"{len(rows)} rows but {len(row_labels)} row labels")
    if not rows:
        raise ValueError("labelled_grid needs at least one row")
    rows = [as_rgb(r) for r in rows]
    side = max(max(r.shape[-2:]) for r in rows)
    tile = side * upscale_factor(side, min_tile)
    rows = [F.interpolate(r, size=(tile, tile), mode="nearest") if r.shape[-1] != tile or r.shape[-2] != tile
            else r for r in rows]
    ncols = max(r.shape[0] for r in rows)
    if col_labels is not None and len(col_labels) > ncols:
        raise ValueError(f"{len(col_labels)} column labels for {ncols} columns")
    scale, thick = text_style(tile)
    margin = max(4, tile // 16)
    label_w = max(text_size(t, scale, thick)[0] for t in row_labels) + 2 * margin
    header_h = max(text_size(t, scale, thick)[1] for t in col_labels) + 2 * margin if col_labels else 0
    title_h = text_size(title, scale, thick)[1] + 2 * margin if title else 0
    title_w = text_size(title, scale, thick)[0] + 2 * margin if title else 0
    gap = 4 * pad if group > 1 else 0  # the extra gap between column groups

    def left(c: int) -> int:
        return label_w + pad + c * (tile + pad) + (c // group) * gap

    width = max(left(ncols - 1) + tile + pad, title_w)
    height = title_h + header_h + len(rows) * (tile + pad) + pad
    canvas = np.full((height, width, 3), 255, np.uint8)
    if title:
        put_text(canvas, title, margin, title_h // 2, scale, thick)
    top = title_h + header_h
    for c, text in enumerate(col_labels or []):
        x = left(c) + tile // 2
        put_text(canvas, text, x, title_h + header_h // 2, scale, thick, centre_x=True)
    for r, (tiles, text) in enumerate(zip(rows, row_labels)):
        y = top + pad + r * (tile + pad)
        put_text(canvas, text, margin, y + tile // 2, scale, thick)
        pixels = (tiles.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        for c, img in enumerate(pixels):
            x = left(c)
            canvas[y:y + tile, x:x + tile] = img
    return torch.from_numpy(canvas).permute(2, 0, 1).float() / 255.0


def to_bgr(grid: torch.Tensor) -> np.ndarray:
    """(3, H, W) RGB in [0, 1] -> (H, W, 3) BGR uint8, for OpenCV."""
    rgb = (grid.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    return np.ascontiguousarray(rgb.permute(1, 2, 0).numpy()[:, :, ::-1])


def save_png(grid: torch.Tensor, path: str | Path) -> None:
    """Write a (3, H, W) grid in [0, 1] as PNG, atomically."""
    ok, buf = cv2.imencode(".png", to_bgr(grid))
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode a {tuple(grid.shape)} grid as PNG")
    atomic_write_bytes(path, buf.tobytes())


def pair_labels(pairs: int, first: str = "spoof", second: str = "live") -> List[str]:
    """Column labels of a grid of side-by-side pairs: first, second, first, second, ..."""
    return [first, second] * pairs
