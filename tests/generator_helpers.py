"""Tiny on-disk fixtures for the generator tests: a prepared root with frames, boxes and a generator list."""
from __future__ import annotations

from pathlib import Path
from typing import List

import cv2
import numpy as np

from data.box_files import FaceBox, write_box


def face_frame(rng: np.random.Generator, subject: int, digit: int, h: int = 40, w: int = 48) -> np.ndarray:
    """A BGR frame with a subject-coloured ellipse 'face' at a known place; attacks get a stripe pattern."""
    img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    colour = [(40 + 90 * subject) % 256, 120, (200 - 50 * subject) % 256]
    cv2.ellipse(img, (24, 20), (10, 13), 0, 0, 360, colour, -1)
    if digit > 1:
        img[::2 + digit % 3, :, :] //= 2
    return img


def make_prep_root(root: Path, subjects=(1, 2), frames_per_video: int = 2, seed: int = 0) -> List[str]:
    """Write train_images/, train_bbox/ and train_list/train_list_oulu_p1.txt; return the list lines."""
    rng = np.random.default_rng(seed)
    lines = []
    for user in subjects:
        for digit in (1, 2, 3, 4, 5):
            video = f"1_1_{user:02d}_{digit}"
            for i in range(1, frames_per_video + 1):
                name = f"{video}_{i}_scene.jpg"
                (root / "train_images" / video).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / "train_images" / video / name), face_frame(rng, user, digit))
                write_box(root / "train_bbox" / video / name.replace(".jpg", ".dat"),
                          FaceBox(14, 7, 20, 26, 0.99, (19, 15, 29, 15, 24, 20, 20, 26, 28, 26)))
                lines.append(f"{video}/{name} {user:02d} {int(digit == 1)} {digit}")
    (root / "train_list").mkdir(parents=True, exist_ok=True)
    (root / "train_list" / "train_list_oulu_p1.txt").write_text("".join(line + "\n" for line in lines))
    return lines
