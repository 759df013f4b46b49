"""A tiny crop root for the DUM tests: real faces (skimage's astronaut) as bona fide frames, the same
face printed (desaturated, blurred, halftone lines) or replayed (moire, colour cast, glare) as
attacks, with simple elliptic depth maps for the bona fide frames."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np

from data.protocol_lists import ProtocolRow, format_protocol
from misc.io import atomic_write_image, atomic_write_text


def _face(size: int, rng: np.random.Generator) -> np.ndarray:
    """The astronaut's face (BGR) with a small random shift/zoom: frames of a 'video'."""
    from skimage import data

    rgb = data.astronaut()
    x, y, w, h = 182, 64, 83, 107  # MTCNN's box for this photo
    s = int(1.3 * max(w, h) * rng.uniform(0.95, 1.05))
    cx, cy = x + w // 2 + int(rng.integers(-4, 5)), y + h // 2 + int(rng.integers(-4, 5))
    crop = rgb[max(0, cy - s // 2): cy + s // 2, max(0, cx - s // 2): cx + s // 2]
    return cv2.resize(crop[:, :, ::-1], (size, size), interpolation=cv2.INTER_AREA)


def _attack(face: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    size = face.shape[0]
    img = face.astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    if kind == "print":
        grey = img.mean(axis=2, keepdims=True)
        img = 0.4 * img + 0.6 * grey
        img = cv2.GaussianBlur(img, (5, 5), 1.2)
        img = img * (0.85 + 0.15 * (np.sin(yy * 1.6) > 0))[..., None] + 25
    else:
        img = img * np.array([1.15, 0.95, 0.8]) + 30 * np.sin(0.9 * xx + 0.7 * yy)[..., None]
        img += 60 * np.exp(-((xx - size * 0.7) ** 2 + (yy - size * 0.3) ** 2) / (0.02 * size ** 2))[..., None]
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def _depth(size: int) -> np.ndarray:
    """A bright ellipse (nearer = brighter) on a black background, like a face depth map."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    r2 = ((xx - 0.5) / 0.33) ** 2 + ((yy - 0.5) / 0.42) ** 2
    return np.clip(255 * np.sqrt(np.clip(1 - r2, 0, 1)), 0, 255).astype(np.uint8)


def make_crop_root(root: Path, image_size: int = 32, map_size: int = 8, frames: int = 3,
                   users: Optional[Dict[str, List[int]]] = None, generated: int = 0, seed: int = 0,
                   attack_maps: bool = True) -> Path:
    """Write a crop root with Protocol_1 lists (phones 1-2, session 1 for Train/Dev, 3 for Test).

    ``generated`` > 0 adds that many generated live and spoof folders and ``Train_g.txt``.
    """
    rng = np.random.default_rng(seed)
    users = users or {"Train": [1, 2], "Dev": [21, 22], "Test": [36, 37]}
    depth = _depth(map_size)
    lists: Dict[str, List[ProtocolRow]] = {}
    for split, split_users in users.items():
        rows = []
        session = 3 if split == "Test" else 1
        for phone in (1, 2):
            for user in split_users:
                for file in (1, 2, 4):
                    video = f"{phone}_{session}_{user:02d}_{file}"
                    label = 1 if file == 1 else (-2 if split == "Test" and file == 4 else -1)
                    rows.append(ProtocolRow(label, video))
                    for i in range(1, frames + 1):
                        face = _face(image_size, rng)
                        img = face if file == 1 else _attack(face, "print" if file == 2 else "replay", rng)
                        base = root / split.lower()
                        atomic_write_image(Path(f"{base}_images") / video / f"{video}_{i}_scene.jpg", img)
                        if file == 1 or attack_maps:
                            atomic_write_image(Path(f"{base}_depth") / video / f"{video}_{i}_depth1D.jpg", depth)
        lists[split] = rows
        atomic_write_text(root / "protocols" / "Protocol_1" / f"{split}.txt", format_protocol(rows))
    if generated:
        gen_rows = []
        for k in range(generated):
            for live in (1, 0):
                name = f"p1_{live}_{k}"
                gen_rows.append(ProtocolRow(live, name))
                for i in range(frames):
                    face = _face(image_size, rng)
                    img = face if live else _attack(face, "print", rng)
                    atomic_write_image(root / "train_images" / name / f"{i}_scene.jpg", img)
                    if live:
                        atomic_write_image(root / "train_depth" / name / f"{i}_depth1D.jpg", depth)
        atomic_write_text(root / "protocols" / "Protocol_1" / "Train_g.txt",
                          format_protocol(lists["Train"] + gen_rows))
    return root
