"""Image/depth-map transforms of the DUM trainer and tester, in numpy and OpenCV.

Training augmentation follows the original pipeline (reference section 6.5), in this order:
per-channel brightness shift (+-40), gamma contrast (0.5-1.5), random erasing (p 0.5, 1-2
rectangles of 1-5 % of the image), horizontal flip applied jointly to image and depth map (p 0.5),
cutout (a square of side 1-49 px at 256 px, always), then normalisation (x - 127.5) / 128.

Every random draw comes from a ``numpy.random.Generator`` handed in by the caller, so a sample's
augmentation depends only on its seed (which the batch sampler derives from the run seed and the
epoch): runs are reproducible and resume exactly, whatever the number of loader workers.
Images are OpenCV's BGR uint8 (H, W, 3); depth maps are float32 (M, M) in [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np
import torch

# The preprocessing every DUM network is trained and deployed with, in one place: the crops of
# DUM/make_dataset/crop_dataset.py, the trainer and tester, DUM/predict.py and the metadata that
# DUM/export_onnx.py writes into a deployed file.
IMAGE_SIZE = 256                     # face crop side (paper: 256)
MAP_SIZE = 32                        # depth label side (paper: 32)
CHANNEL_ORDER = "RGB"                # network input channel order (OpenCV reads BGR)
INPUT_MEAN, INPUT_SCALE = 127.5, 128.0  # network input = (pixel - INPUT_MEAN) / INPUT_SCALE
EVAL_FACE_SCALE = 1.3                # Dev/Test (and deployment) box enlargement: CDCN's fixed test value
TRAIN_FACE_SCALES = (1.2, 1.3, 1.4)  # training crops draw one per frame (the original's jitter)

# The original fills erased rectangles with CIFAR-10's mean colour given in [0, 1] on a 0-255
# image, i.e. nearly black (bug 19). We use the same colour on the image's own scale, in BGR order.
ERASE_FILL_BGR = (0.4465 * 255, 0.4822 * 255, 0.4914 * 255)
# Cutout side in the original: 1..49 px on 256 px images; scaled with the image size here.
CUTOUT_MAX_FRACTION = 49 / 256


def normalise_image(image_bgr: np.ndarray) -> torch.Tensor:
    """BGR uint8 (H, W, 3) -> RGB float32 tensor (3, H, W) with values (x - 127.5) / 128 (about [-1, 1])."""
    rgb = image_bgr[:, :, ::-1].astype(np.float32)
    rgb -= INPUT_MEAN
    rgb /= INPUT_SCALE
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def denormalise_image(image: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalise_image` to [0, 1] RGB, for image grids: (..., 3, H, W)."""
    return (image * INPUT_SCALE + INPUT_MEAN).div(255.0).clamp(0.0, 1.0)


# Resizing of crops, maps and deployment faces. linear: OpenCV's bilinear cv2.resize, the original's
# (its crop script and loaders call cv2.resize with the default), on which the released
# CDCN_U_P1.pkl was trained. area: pixel-area averaging when shrinking (no aliasing), bilinear
# when enlarging.
INTERPOLATIONS = ("linear", "area")


def resize(image: np.ndarray, size: int, interpolation: str = "linear") -> np.ndarray:
    """Square resize with ``interpolation`` (one of :data:`INTERPOLATIONS`); unchanged when already square ``size``."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, not {interpolation!r}")
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    interp = cv2.INTER_AREA if interpolation == "area" and size < min(h, w) else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def adjust_brightness_gamma(image: np.ndarray, shift_bgr: np.ndarray, gamma: float) -> np.ndarray:
    """Add a per-channel integer shift (clipped to 0-255), then apply 255 * (x / 255) ** gamma."""
    shifted = np.clip(image.astype(np.int16) + shift_bgr.astype(np.int16), 0, 255).astype(np.uint8)
    lut = np.clip(np.round(255.0 * (np.arange(256) / 255.0) ** gamma), 0, 255).astype(np.uint8)
    return cv2.LUT(shifted, lut)


@dataclass
class TrainAugment:
    """The DUM training augmentation (see the module docstring for the order and the paper values)."""
    brightness: int = 40
    gamma_range: Tuple[float, float] = (0.5, 1.5)
    erase_p: float = 0.5
    erase_area: Tuple[float, float] = (0.01, 0.05)
    erase_aspect: Tuple[float, float] = (0.5, 2.0)
    erase_max_rects: int = 2
    flip_p: float = 0.5
    cutout_p: float = 1.0
    cutout_max_fraction: float = CUTOUT_MAX_FRACTION

    def __call__(self, image: np.ndarray, depth: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """image: BGR uint8 (H, W, 3); depth: float32 (M, M). Returns augmented copies (uint8, float32)."""
        shift = rng.integers(-self.brightness, self.brightness + 1, size=3)
        gamma = rng.uniform(*self.gamma_range)
        image = adjust_brightness_gamma(image, shift, gamma)
        if rng.random() < self.erase_p:
            self._erase(image, rng)
        if rng.random() < self.flip_p:
            # The map is a spatial label: it must mirror with the face.
            image = image[:, ::-1]
            depth = depth[:, ::-1]
        if rng.random() < self.cutout_p:
            image = self._cutout(image, rng)
        return np.ascontiguousarray(image), np.ascontiguousarray(depth)

    def _erase(self, image: np.ndarray, rng: np.random.Generator) -> None:
        """Fill 1..erase_max_rects random rectangles in place with the mean colour."""
        h, w = image.shape[:2]
        for _ in range(int(rng.integers(1, self.erase_max_rects + 1))):
            area = rng.uniform(*self.erase_area) * h * w
            aspect = rng.uniform(*self.erase_aspect)
            eh = int(round(np.sqrt(area * aspect)))
            ew = int(round(np.sqrt(area / aspect)))
            if 0 < eh < h and 0 < ew < w:  # the original skips rectangles that do not fit
                y = int(rng.integers(0, h - eh + 1))
                x = int(rng.integers(0, w - ew + 1))
                image[y:y + eh, x:x + ew] = ERASE_FILL_BGR

    def _cutout(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Black out a square of random side (1..max) centred on a random pixel, clipped to the image."""
        h, w = image.shape[:2]
        max_side = max(1, int(round(self.cutout_max_fraction * min(h, w))))
        side = int(rng.integers(1, max_side + 1))
        cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        y0, y1 = max(0, cy - side // 2), min(h, cy + side // 2)
        x0, x1 = max(0, cx - side // 2), min(w, cx + side // 2)
        image[y0:y1, x0:x1] = 0
        return image
