"""A small synthetic dataset with the layout of OULU-NPU, for demos and tests.

What it is
----------
Videos of real faces (photos that ship with scikit-image and matplotlib: ``skimage.data.astronaut()``,
``skimage.data.camera()``, ``grace_hopper.jpg`` and the 100 faces of ``skimage.data.lfw_subset()``),
composed onto procedurally drawn rooms and re-rendered as OULU-NPU's five kinds of file:

- file 1, bona fide: the person in the room, filmed by a hand-held phone (smooth random camera
  motion, a little head motion with parallax against the background, sensor noise, phone colour);
- files 2 and 3, print attacks: a photo of the person printed on paper (gamut loss, halftone dots,
  ink bleed, paper texture, white margins) held in front of the phone; the sheet is bent, its
  edges and shadow are visible and it moves in the hand. Printer 1 prints a fine warm screen,
  printer 2 a coarse, cooler, blurrier one;
- files 4 and 5, replay attacks: a video of the person played on a screen (pixel grid with RGB
  sub-pixels, moire, gamma and brightness shift, glare and a faint reflection of the room, a
  visible bezel). Display 1 is a matte monitor with large pixels, display 2 a glossy laptop
  panel with fine pixels.

Each of up to six phones has its own colour, sharpness, noise, resolution and compression; each of
up to three sessions has its own room and light (OULU-NPU's three sessions differ in place and
illumination). Every user is a different person, and train, dev and test users are different
people. Users keep OULU-NPU's ids: train users count from 01, dev users from 21, test users from
36, so :mod:`data.protocol_lists`'s protocol definitions apply unchanged.

What it is not
--------------
A benchmark. The attacks are rendered by simple image models, so numbers measured on this data say
that the pipeline runs and learns *something*, not how well it detects real attacks. There are
only as many people as the packaged photos provide (80: three photos and 77 LFW faces), the LFW
faces are 25x25 pixels upsampled, and their hair, neck and shirt are drawn, so they look less
natural than the three photos. Grey sources are toned to a skin colour.

Layout (the OULU-NPU release's)
-------------------------------
``Train_files/``, ``Dev_files/``, ``Test_files/`` hold flat ``P_S_UU_F.avi`` (MJPG, which OpenCV
reads everywhere); ``Protocols/Protocol_N/`` holds the lists (rows ``+1,1_1_01_1``; Train and Dev
mark every attack ``-1``, Test marks print ``-1`` and replay ``-2``), built by
:func:`data.protocol_lists.official_rows` from the videos that exist. Protocols 1 and 2 have
``Train/Dev/Test.txt``, protocols 3 and 4 have ``Train_k/Dev_k/Test_k.txt`` (k = the phone left
out). A list set (the Train, Dev and Test lists of one protocol or sub-protocol) is written only
when all three of its lists have rows: with ``--phones 2`` protocols 3 and 4 get sub-protocols 1
and 2 only (there is no phone 3..6 to test on), with ``--phones 1`` they get none (no other phone
to train on), and with fewer than three sessions protocols 1 and 4 are left out (they test on
session 3). ``synthetic_meta.json`` records the arguments, the person behind every user, the
counts and the list sets written; ``synthetic_preview.jpg`` shows the five kinds of file.

Determinism and resuming
------------------------
Every video draws from its own random stream, seeded by ``(seed, phone, session, user, file)``,
so a seed fixes every decoded frame, and a rerun into a complete or half-written folder skips the
videos that exist and decode with the requested size and frame count. Videos are written
atomically (:mod:`misc.io`: a temporary file beside the final name, then a rename). OpenCV's
float kernels run on one thread while rendering, because some of them round differently when
split across threads: the frames do not depend on the core count or on ``--workers`` (the same
OpenCV build and CPU type give the same bytes).

Run ``python -m data.synthetic --out DIR`` (or ``python data/synthetic.py --out DIR``).
"""
if __package__ in (None, ""):  # run as a file: make the repository root importable
    import pathlib, sys
    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import struct
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from data.protocol_lists import (NUM_SUBPROTOCOLS, PROTOCOLS_WITH_SUBS, SPLITS, USER_SPLITS, VideoId,
                       format_protocol, official_rows, protocol_path)
from misc.io import (atomic_write_bytes, atomic_write_image, atomic_write_json, atomic_write_text,
                     remove_stale_temporaries)
from misc.progress import progress

# Bump when the rendering changes: a folder made by another version is not resumed into.
FORMAT_VERSION = 2
FPS = 30  # OULU-NPU's frame rate; only the container header uses it
META_NAME = "synthetic_meta.json"
PREVIEW_NAME = "synthetic_preview.jpg"
SPLIT_FOLDERS = {split: f"{split}_files" for split in SPLITS}
DEFAULTS = dict(users=9, phones=2, sessions=3, frames=8, size=(320, 240), seed=0, workers=0)

Size = Tuple[int, int]  # (width, height), OpenCV's order


def _rgb(a: np.ndarray) -> np.ndarray:
    """(h, w) -> (h, w, 3) copy. Per-frame code multiplies by this rather than by ``a[..., None]``:
    numpy broadcasting over a last axis of length 1 is about 20x slower than OpenCV's merge."""
    return cv2.merge([a, a, a])


def _gains(img: np.ndarray, gains) -> np.ndarray:
    """Multiply the channels of ``img`` (h, w, 3) by ``gains`` (3,), via OpenCV for speed."""
    return cv2.transform(img, np.diag(np.asarray(gains, np.float32)))


def _clip(img: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """Clip a float32 array to [lo, hi] (OpenCV's min/max are several times faster than np.clip).
    The bounds are 4-tuples: OpenCV reads a bare float as (v, 0, 0, 0), one value per channel."""
    return cv2.min(cv2.max(img, (float(lo),) * 4), (float(hi),) * 4)


def _clip01(img: np.ndarray) -> np.ndarray:
    """Clip a contiguous float32 array to [0, 1] in place."""
    cv2.max(img, (0.0,) * 4, dst=img)
    return cv2.min(img, (1.0,) * 4, dst=img)


@lru_cache(maxsize=2)
def _noise_bank(channels: int) -> np.ndarray:
    """A fixed (1024, 1024, channels) float32 field of unit normal noise, drawn once per process."""
    return np.random.default_rng(20_211_201 + channels).standard_normal((1024, 1024, channels), dtype=np.float32)


def _noise(rng: np.random.Generator, h: int, w: int, channels: int = 1) -> np.ndarray:
    """(h, w) or (h, w, 3) float32 unit normal noise: a random window of a fixed bank, randomly
    flipped, about ten times cheaper than fresh normals for every frame (sizes beyond the bank
    draw fresh ones)."""
    bank = _noise_bank(channels)
    if h > bank.shape[0] or w > bank.shape[1]:
        noise = rng.standard_normal((h, w, channels), dtype=np.float32)
    else:
        y, x = int(rng.integers(0, bank.shape[0] - h + 1)), int(rng.integers(0, bank.shape[1] - w + 1))
        flip_y, flip_x = (-1 if b else 1 for b in rng.integers(0, 2, 2))
        noise = bank[y:y + h, x:x + w][::flip_y, ::flip_x]  # a view: callers copy only if they must
    return noise[..., 0] if channels == 1 else noise


# ==============================================================================================
# Identities: real faces from packaged photos
# ==============================================================================================

@dataclass(eq=False)  # hashed by object: load_identity hands out one object per person
class Identity:
    """One person: a head-and-shoulders cut-out and where the face is in it."""
    name: str                                   # "astronaut", "lfw_017", ...
    source: str                                 # where the pixels come from
    rgb: np.ndarray                             # (h, w, 3) float32 in [0, 1]
    alpha: np.ndarray                           # (h, w) float32 in [0, 1], the person's silhouette
    face_box: Tuple[float, float, float, float]  # (x, y, w, h) of the face in the cut-out

    @property
    def rgba(self) -> np.ndarray:
        """(h, w, 4) float32 premultiplied colour and alpha."""
        return np.dstack([self.rgb * self.alpha[..., None], self.alpha])


# Packaged photos: face box (MTCNN's, x y w h) and a head-and-shoulders outline drawn by hand on
# the original pixels, so the person can be lifted off the photo's own background.
PHOTOS = {
    "astronaut": dict(
        source="skimage.data.astronaut()", box=(182, 64, 83, 107),
        outline=[(157, 53), (175, 30), (210, 18), (250, 17), (280, 28), (297, 55), (301, 90), (297, 112),
                 (283, 124), (272, 129), (263, 140), (259, 160), (262, 178), (282, 198), (298, 222), (305, 238),
                 (320, 249), (334, 260), (343, 271), (351, 288), (358, 310), (362, 340), (363, 511),
                 (20, 511), (25, 330), (45, 250), (75, 215), (120, 175), (135, 160), (165, 128), (153, 100)]),
    "grace_hopper": dict(
        source="matplotlib.cbook.get_sample_data('grace_hopper.jpg')", box=(178, 110, 173, 220),
        outline=[(175, 40), (260, 20), (345, 35), (372, 95), (373, 150), (355, 200), (350, 260), (347, 293),
                 (433, 327), (493, 393), (507, 599), (17, 599), (40, 373), (73, 333), (180, 307), (167, 267),
                 (160, 200), (153, 140), (155, 95)]),
    "camera": dict(
        source="skimage.data.camera() (grey, toned)", box=(197, 116, 58, 81),
        outline=[(200, 67), (230, 66), (255, 80), (265, 105), (262, 128), (290, 135), (327, 138), (330, 165),
                 (332, 200), (322, 215), (300, 240), (293, 262), (287, 282), (255, 312), (220, 330), (160, 511),
                 (0, 511), (0, 200), (40, 173), (100, 140), (150, 117), (158, 95)]),
}

# LFW faces used as identities: indices into the first 100 of skimage.data.lfw_subset(). Left out:
# faces MTCNN missed in more than 1 of 15 renders (one per session and kind of file, 320x240;
# `benchmarks/bench_synthetic.py --pool` repeats the check: 5, 14, 20, 28, 30, 32, 57, 59, 76, 82, 85),
# faces covered by a hand or a microphone, very dark or blocky with compression (4, 16, 18, 34),
# and faces that looked like a second photo of someone already in the list (LFW photographs a few
# politicians hundreds of times: 0, 36, 55, 90, 95, 60, 63, 70). Judged by eye on 25x25 crops:
# best effort.
_LFW_LEFT_OUT = {0, 4, 5, 14, 16, 18, 20, 28, 30, 32, 34, 36, 55, 57, 59, 60, 63, 70, 76, 82, 85, 90, 95}
LFW_POOL: Tuple[int, ...] = tuple(i for i in range(100) if i not in _LFW_LEFT_OUT)
LFW_UPSAMPLE = 4  # 25x25 -> 100x100


def _load_photo(name: str) -> np.ndarray:
    """(h, w, 3) uint8 RGB of a packaged photo (grey photos are replicated to three channels)."""
    if name == "astronaut":
        from skimage import data
        return data.astronaut()
    if name == "camera":
        from skimage import data
        return np.repeat(data.camera()[..., None], 3, axis=2)
    if name == "grace_hopper":
        import matplotlib.cbook as cbook
        from PIL import Image
        with cbook.get_sample_data("grace_hopper.jpg") as f:
            return np.asarray(Image.open(f).convert("RGB"))
    raise KeyError(name)


def _tone_grey(grey: np.ndarray, warmth: float) -> np.ndarray:
    """Grey (h, w) in [0, 1] -> (h, w, 3) skin-toned RGB: per-channel gammas keep highlights near
    white and push mid-tones towards red/yellow, like a skin colour; ``warmth`` in [0, 1]."""
    gammas = np.array([0.90 - 0.06 * warmth, 1.0, 1.12 + 0.12 * warmth], np.float32)
    return np.power(np.clip(grey, 0, 1)[..., None], gammas).astype(np.float32)


def _unsharp(img: np.ndarray, sigma: float, amount: float) -> np.ndarray:
    blurred = cv2.GaussianBlur(img, (0, 0), sigma)
    return np.clip(img + amount * (img - blurred), 0, 1)


def _photo_identity(name: str) -> Identity:
    spec = PHOTOS[name]
    rgb = _load_photo(name).astype(np.float32) / 255.0
    if name == "camera":
        rgb = _tone_grey(rgb[..., 0], warmth=0.5)
    mask = np.zeros(rgb.shape[:2], np.float32)
    cv2.fillPoly(mask, [np.array(spec["outline"], np.int32)], 1.0)
    # Pull the hand-drawn outline inside the person, then soften it like hair against a defocused room.
    mask = cv2.erode(mask, np.ones((7, 7), np.uint8))
    mask = cv2.GaussianBlur(mask, (0, 0), 2.0)
    x, y, w, h = spec["box"]
    return Identity(name, spec["source"], rgb, mask, (float(x), float(y), float(w), float(h)))


@lru_cache(maxsize=1)
def _lfw_faces() -> np.ndarray:
    from skimage import data
    return data.lfw_subset()[:100].astype(np.float32)  # (100, 25, 25); the other 100 are not faces


def _soft_ellipse(shape: Tuple[int, int], centre, axes, feather: float) -> np.ndarray:
    mask = np.zeros(shape, np.float32)
    cv2.ellipse(mask, (int(round(centre[0])), int(round(centre[1]))),
                (int(round(axes[0])), int(round(axes[1]))), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), feather) if feather > 0 else mask


def _over(rgb: np.ndarray, alpha: np.ndarray, layer: np.ndarray, layer_alpha: np.ndarray) -> None:
    """Composite ``layer`` over (rgb, alpha) in place (straight, not premultiplied, colours)."""
    a = layer_alpha[..., None]
    rgb[:] = rgb * (1 - a) + layer * a
    alpha[:] = alpha + layer_alpha * (1 - alpha)


def _draw_shoulders(rgb: np.ndarray, alpha: np.ndarray, cx: float, cy: float, s: float,
                    skin: np.ndarray, rng: np.random.Generator) -> None:
    """Draw a shirt and a neck under a head centred at (cx, cy) with a face ``s`` pixels tall."""
    h, w = alpha.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    palette = np.array([[0.15, 0.16, 0.2], [0.35, 0.35, 0.36], [0.75, 0.74, 0.72], [0.18, 0.22, 0.35],
                        [0.45, 0.2, 0.18], [0.3, 0.36, 0.28], [0.55, 0.5, 0.42]], np.float32)  # muted cloth
    shirt = palette[rng.integers(len(palette))] * rng.uniform(0.85, 1.15)
    light = (1.1 - 0.9 * ((xs - cx) / w) ** 2 - 0.25 * (ys - 1.6 * s) / h)[..., None]  # lit from above
    fabric = 1 + 0.04 * cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 1.0)[..., None]
    # Trapezius slopes from the neck to the shoulder points, then the arms fall away.
    body = np.zeros((h, w), np.float32)
    half = [(0.3, 1.72), (0.7, 1.84), (1.0, 1.97), (1.16, 2.1), (1.26, 2.3), (1.3, 2.5)]
    outline = [(cx - dx * s, y * s) for dx, y in reversed(half)] + [(cx + dx * s, y * s) for dx, y in half]
    cv2.fillPoly(body, [np.array(outline, np.int32)], 1.0)
    _over(rgb, alpha, np.clip(shirt * light * fabric, 0, 1), cv2.GaussianBlur(body, (0, 0), 0.03 * s))
    # Neck: widening downwards into the collar's V, darker under the chin.
    neck = np.zeros((h, w), np.float32)
    pts = np.array([(cx - 0.24 * s, cy + 0.25 * s), (cx + 0.24 * s, cy + 0.25 * s),
                    (cx + 0.28 * s, 1.75 * s), (cx, 2.0 * s), (cx - 0.28 * s, 1.75 * s)], np.int32)
    cv2.fillPoly(neck, [pts], 1.0)
    neck_shade = np.clip(0.6 + 0.3 * (ys - (cy + 0.45 * s)) / (0.6 * s), 0.55, 0.9)[..., None]
    _over(rgb, alpha, skin * neck_shade, cv2.GaussianBlur(neck, (0, 0), 2.5))


def _draw_head(rgb: np.ndarray, alpha: np.ndarray, cx: float, cy: float, s: float,
               skin: np.ndarray, rng: np.random.Generator) -> None:
    """Draw ears, a skin-coloured head a little larger than the inner face (temples, jaw) and a
    cap of hair that thins out above the ears."""
    h, w = alpha.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    for side in (-1, 1):
        _over(rgb, alpha, skin * 0.85 * np.ones((h, w, 3), np.float32),
              _soft_ellipse((h, w), (cx + side * 0.47 * s, cy + 0.02 * s), (0.08 * s, 0.15 * s), 2))
    head_shade = (1.0 - 0.2 * ((xs - cx) / (0.55 * s)) ** 2)[..., None]
    _over(rgb, alpha, skin * 0.95 * head_shade, _soft_ellipse((h, w), (cx, cy - 0.03 * s), (0.5 * s, 0.56 * s), 3))
    tones = np.array([[0.05, 0.04, 0.035], [0.16, 0.11, 0.07], [0.32, 0.22, 0.13],
                      [0.55, 0.53, 0.50], [0.60, 0.47, 0.28]], np.float32)  # black .. grey, blond
    hair_tone = tones[rng.choice(len(tones), p=[0.35, 0.3, 0.15, 0.1, 0.1])]
    # Strands: noise blurred more along their length; a sheen where the light falls from above.
    strands = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), sigmaX=1.0, sigmaY=2.5)
    sheen = (1.15 - 0.3 * (ys - (cy - 0.6 * s)) / s)[..., None]
    hair = np.clip(hair_tone * sheen * (1 + 0.5 * strands[..., None]), 0, 1)
    cap = _soft_ellipse((h, w), (cx, cy - 0.22 * s), (0.56 * s, 0.46 * s), 0.03 * s)
    cap *= np.clip((cy - 0.02 * s - ys) / (0.2 * s), 0, 1)  # fades out towards the ears
    _over(rgb, alpha, hair, cap)


def _lfw_identity(index: int) -> Identity:
    """A head-and-shoulders figure around an upsampled LFW face.

    The LFW crops hold the inner face only (brows to chin), so the figure gets a head, hair, a
    neck and a shirt drawn around it; their colours are fixed per face (seeded by the index).
    """
    rng = np.random.default_rng(10_000 + index)
    s = 25 * LFW_UPSAMPLE
    # Cubic upsampling, a blur that melts the 25x25 pixel staircase, then a little sharpening.
    face = cv2.GaussianBlur(cv2.resize(_lfw_faces()[index], (s, s), interpolation=cv2.INTER_CUBIC), (0, 0), 1.0)
    face = _unsharp(np.clip(face, 0, 1), sigma=2.0, amount=0.6)
    face_rgb = _tone_grey(face, warmth=float(rng.uniform(0.2, 0.8)))
    # Skin colour from the cheeks (a band inside the face crop, away from eyes and mouth).
    skin = np.median(face_rgb[int(0.45 * s):int(0.7 * s), int(0.15 * s):int(0.85 * s)].reshape(-1, 3), axis=0)

    h, w = int(2.4 * s), int(2.6 * s)
    x0, y0 = int(0.8 * s), int(0.5 * s)
    cx, cy = x0 + s / 2, y0 + s / 2
    rgb = np.zeros((h, w, 3), np.float32)
    alpha = np.zeros((h, w), np.float32)
    _draw_shoulders(rgb, alpha, cx, cy, s, skin, rng)
    _draw_head(rgb, alpha, cx, cy, s, skin, rng)
    # The face itself, feathered into head and hair, the crop's own edge too.
    layer = np.zeros((h, w, 3), np.float32)
    layer[y0:y0 + s, x0:x0 + s] = face_rgb
    face_mask = _soft_ellipse((h, w), (cx, cy + 0.03 * s), (0.45 * s, 0.5 * s), 0.06 * s)
    window = np.zeros((h, w), np.float32)
    m = int(0.04 * s)
    window[y0 + m:y0 + s - m, x0 + m:x0 + s - m] = 1
    _over(rgb, alpha, layer, face_mask * cv2.GaussianBlur(window, (0, 0), 0.02 * s))
    name = f"lfw_{index:03d}"
    return Identity(name, identity_source(name), rgb, alpha, (float(x0), float(y0), float(s), float(s)))


def identity_source(name: str) -> str:
    """Where an identity's pixels come from, without building it."""
    if name in PHOTOS:
        return PHOTOS[name]["source"]
    return f"skimage.data.lfw_subset()[{int(name[4:])}] (grey, toned, {LFW_UPSAMPLE}x)"


def identity_pool() -> List[str]:
    """Names of every identity available, photos first."""
    return list(PHOTOS) + [f"lfw_{i:03d}" for i in LFW_POOL]


@lru_cache(maxsize=8)
def _premultiplied(identity: Identity) -> np.ndarray:
    return identity.rgba


@lru_cache(maxsize=None)
def load_identity(name: str) -> Identity:
    if name in PHOTOS:
        return _photo_identity(name)
    if name.startswith("lfw_"):
        return _lfw_identity(int(name[4:]))
    raise KeyError(f"unknown identity {name!r}; known: {identity_pool()}")


def split_users(users: int) -> Dict[str, List[int]]:
    """Share ``users`` between Train/Dev/Test in OULU-NPU's 20/15/20 proportion (largest
    remainder, at least one each), keeping the real user-id ranges (01.., 21.., 36..)."""
    capacity = {split: len(USER_SPLITS[split]) for split in SPLITS}
    total = sum(capacity.values())
    if not 3 <= users <= total:
        raise ValueError(f"--users must be between 3 (one per split) and {total} (OULU-NPU's users), got {users}")
    exact = {split: users * capacity[split] / total for split in SPLITS}
    counts = {split: max(1, int(exact[split])) for split in SPLITS}
    by_remainder = sorted(SPLITS, key=lambda sp: (-(exact[sp] - int(exact[sp])), SPLITS.index(sp)))
    while sum(counts.values()) < users:
        for split in by_remainder:
            if sum(counts.values()) < users and counts[split] < capacity[split]:
                counts[split] += 1
    while sum(counts.values()) > users:  # the at-least-one rule overshot: take from the largest
        counts[max(SPLITS, key=lambda sp: counts[sp])] -= 1
    return {split: list(USER_SPLITS[split])[:counts[split]] for split in SPLITS}


def assign_identities(user_splits: Dict[str, List[int]], seed: int) -> Dict[int, str]:
    """A different person for every user. Each split gets one of the colour/large photos first
    (so even a 3-user dataset has one per split), then LFW faces in a seed-shuffled order."""
    pool_lfw = [f"lfw_{i:03d}" for i in LFW_POOL]
    n_users = sum(len(u) for u in user_splits.values())
    if n_users > len(PHOTOS) + len(pool_lfw):
        raise ValueError(f"{n_users} users asked for, but only {len(PHOTOS) + len(pool_lfw)} distinct "
                         "people ship with the packages")
    order = np.random.default_rng([seed, 7]).permutation(len(pool_lfw))
    lfw = [pool_lfw[i] for i in order]
    photos = list(PHOTOS)
    assigned = {}
    for split in SPLITS:
        for k, user in enumerate(user_splits[split]):
            assigned[user] = photos.pop(0) if k == 0 and photos else lfw.pop(0)
    return assigned


# ==============================================================================================
# Rooms and sessions
# ==============================================================================================

@dataclass(frozen=True)
class SessionLook:
    """Place and light of one session (OULU-NPU's three sessions differ in both)."""
    name: str
    wall: Tuple[float, float, float]    # RGB of the wall paint under this light
    light: Tuple[float, float, float]   # gain per channel on the person: colour and strength of the light
    side: float                         # left-to-right light gradient across the person (- lit from the left)
    furniture: Tuple[str, ...]          # what the room may hold behind the person


SESSIONS = {
    1: SessionLook("open office, daylight", (0.80, 0.81, 0.79), (1.00, 1.00, 1.03), -0.25,
                   ("window", "shelf", "picture", "door")),
    2: SessionLook("meeting room, warm lamps", (0.70, 0.60, 0.47), (1.05, 0.90, 0.72), 0.35,
                   ("door", "picture", "cabinet", "shelf")),
    3: SessionLook("small office, cool fluorescent light", (0.56, 0.62, 0.66), (0.94, 0.98, 1.00), 0.10,
                   ("whiteboard", "window", "cabinet", "picture")),
}


@dataclass(frozen=True)
class Room:
    """A wall with furniture, in coordinates relative to the view (0..1), so it renders at any size."""
    look: SessionLook
    items: Tuple[Tuple[str, float, float, float, float, Tuple[float, float, float]], ...]
    ceiling: float        # height of the wall/ceiling edge (fraction of the view), < 0 when out of view
    texture_seed: int

    def render(self, w: int, h: int) -> np.ndarray:
        """(h, w, 3) float32 RGB of the room, defocused as behind a person in a selfie. Cached:
        the five files of a user, session and phone share it; treat it as read-only."""
        return _render_room(self, w, h)


@lru_cache(maxsize=4)
def _render_room(room: "Room", w: int, h: int) -> np.ndarray:
    rng = np.random.default_rng(room.texture_seed)
    wall = np.array(room.look.wall, np.float32)
    ys = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    xs = np.linspace(-1, 1, w, dtype=np.float32)[None, :, None]
    # Light falls off away from the lamp (top) and towards one side.
    img = wall * (1.08 - 0.22 * ys) * (1 - 0.12 * room.look.side * xs)
    img = img * _rgb(1 + 0.06 * _smooth_noise(rng, h, w, 4))  # uneven light on the paint
    if room.ceiling > 0:
        img[: int(room.ceiling * h)] *= 1.12
    for kind, x0, y0, x1, y1, colour in room.items:
        _draw_item(img, kind, (int(x0 * w), int(y0 * h), int(x1 * w), int(y1 * h)), np.array(colour, np.float32), rng)
    img = cv2.GaussianBlur(img, (0, 0), 0.006 * w)  # defocus: the room is behind the focus plane
    img += _rgb(0.01 * _noise(rng, h, w))  # paint grain (the product is a fresh contiguous array)
    img = _clip01(img)
    img.flags.writeable = False  # shared by the cache
    return img


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """(h, w) float32 smooth noise of about unit amplitude with ``cells`` bumps across."""
    grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _draw_item(img: np.ndarray, kind: str, box: Tuple[int, int, int, int], colour: np.ndarray,
               rng: np.random.Generator) -> None:
    """Draw one piece of furniture into ``img`` (h, w, 3) in place."""
    x0, y0, x1, y1 = box
    thick = max(1, (x1 - x0) // 30)
    if kind == "window":  # bright sky behind a frame with a cross bar
        sub = img[max(y0, 0):y1, max(x0, 0):x1]
        sub[:] = np.linspace(1.0, 0.85, sub.shape[0], dtype=np.float32)[:, None, None] * colour
        cv2.rectangle(img, (x0, y0), (x1, y1), (0.85, 0.85, 0.83), 2 * thick)
        cv2.line(img, ((x0 + x1) // 2, y0), ((x0 + x1) // 2, y1), (0.8, 0.8, 0.78), 2 * thick)
        cv2.line(img, (x0, (y0 + y1) // 2), (x1, (y0 + y1) // 2), (0.8, 0.8, 0.78), 2 * thick)
    elif kind == "door":
        cv2.rectangle(img, (x0, y0), (x1, y1), tuple(float(c) for c in colour), -1)
        cv2.rectangle(img, (x0, y0), (x1, y1), tuple(float(c) * 0.6 for c in colour), thick)
        cy = (y0 + y1) // 2
        cv2.circle(img, (x1 - 4 * thick, cy), max(1, 2 * thick), (0.75, 0.72, 0.6), -1)
    elif kind == "picture":  # a framed picture: blurred colour blobs
        cv2.rectangle(img, (x0, y0), (x1, y1), (0.12, 0.1, 0.08), -1)
        ix0, iy0, ix1, iy1 = x0 + 3 * thick, y0 + 3 * thick, x1 - 3 * thick, y1 - 3 * thick
        if ix1 > ix0 + 2 and iy1 > iy0 + 2 and ix0 >= 0 and iy0 >= 0:
            art = cv2.resize(rng.uniform(0.1, 0.9, (3, 4, 3)).astype(np.float32), (ix1 - ix0, iy1 - iy0),
                             interpolation=cv2.INTER_CUBIC)
            sub = img[iy0:iy1, ix0:ix1]
            sub[:] = np.clip(art[: sub.shape[0], : sub.shape[1]], 0, 1)
    elif kind == "shelf":  # boards with rows of books
        cv2.rectangle(img, (x0, y0), (x1, y1), tuple(float(c) for c in colour), -1)
        rows = 3
        for r in range(rows):
            by1 = y0 + (r + 1) * (y1 - y0) // rows
            bx = x0 + thick
            while bx < x1 - thick:
                bw = int(rng.integers(max(2, (x1 - x0) // 25), max(3, (x1 - x0) // 10)))
                bh = int((y1 - y0) / rows * rng.uniform(0.55, 0.85))
                cv2.rectangle(img, (bx, by1 - bh), (min(bx + bw, x1 - thick), by1 - thick),
                              tuple(float(c) for c in rng.uniform(0.1, 0.8, 3)), -1)
                bx += bw + 1
            cv2.line(img, (x0, by1), (x1, by1), tuple(float(c) * 0.7 for c in colour), thick)
    elif kind == "cabinet":
        cv2.rectangle(img, (x0, y0), (x1, y1), tuple(float(c) for c in colour), -1)
        cv2.line(img, ((x0 + x1) // 2, y0), ((x0 + x1) // 2, y1), tuple(float(c) * 0.7 for c in colour), thick)
    elif kind == "whiteboard":  # white board, grey frame, a few marker strokes
        cv2.rectangle(img, (x0, y0), (x1, y1), (0.93, 0.94, 0.95), -1)
        cv2.rectangle(img, (x0, y0), (x1, y1), (0.55, 0.56, 0.58), thick)
        for _ in range(3):
            pts = np.stack([np.linspace(x0 + 0.1 * (x1 - x0), x1 - 0.1 * (x1 - x0), 6),
                            y0 + (y1 - y0) * rng.uniform(0.15, 0.85) + rng.normal(0, 0.03 * (y1 - y0), 6)], 1)
            cv2.polylines(img, [pts.astype(np.int32)], False, tuple(float(c) for c in rng.uniform(0, 0.5, 3)), thick)


def make_room(rng: np.random.Generator, session: int) -> Room:
    """A room for one session: two or three pieces of furniture from the session's kinds."""
    look = SESSIONS[session]
    colours = {"window": (0.95, 0.97, 1.0), "door": (0.45, 0.30, 0.18), "picture": (0.1, 0.1, 0.1),
               "shelf": (0.55, 0.42, 0.28), "cabinet": (0.62, 0.62, 0.6), "whiteboard": (0.93, 0.94, 0.95)}
    shapes = {"window": (0.35, 0.45), "door": (0.22, 1.2), "picture": (0.18, 0.16), "shelf": (0.3, 0.55),
              "cabinet": (0.3, 0.4), "whiteboard": (0.5, 0.35)}
    kinds = rng.choice(look.furniture, size=int(rng.integers(2, 4)), replace=False)
    items = []
    for kind in kinds:
        w, h = (v * rng.uniform(0.8, 1.2) for v in shapes[str(kind)])
        x0 = rng.uniform(-0.1, 1.0 - 0.5 * w)
        y0 = {"door": rng.uniform(0.05, 0.2), "cabinet": rng.uniform(0.55, 0.75)}.get(str(kind),
                                                                                     rng.uniform(0.05, 0.45))
        tint = np.array(colours[str(kind)]) * rng.uniform(0.85, 1.1)
        items.append((str(kind), float(x0), float(y0), float(x0 + w), float(y0 + h),
                      tuple(float(c) for c in np.clip(tint, 0, 1))))
    ceiling = float(rng.uniform(0.04, 0.14)) if rng.random() < 0.5 else -1.0
    return Room(look, tuple(items), ceiling, int(rng.integers(2**31)))


def shifted_room(room: Room, dx: float, zoom: float) -> Room:
    """The same room seen from another spot: furniture shifted by ``dx`` and scaled by ``zoom``."""
    items = tuple((k, (x0 - 0.5) * zoom + 0.5 + dx, (y0 - 0.5) * zoom + 0.5, (x1 - 0.5) * zoom + 0.5 + dx,
                   (y1 - 0.5) * zoom + 0.5, c) for k, x0, y0, x1, y1, c in room.items)
    return Room(room.look, items, room.ceiling, room.texture_seed)


# ==============================================================================================
# Motion: smooth random paths for hand-held phones, heads and sheets
# ==============================================================================================

def smooth_path(rng: np.random.Generator, n: int, amplitude: float) -> np.ndarray:
    """(n,) values within about +-amplitude that wander smoothly over the clip, plus a small tremor."""
    t = np.linspace(0, 1, n)
    freq, phase, weight = rng.uniform(0.3, 1.2, 2), rng.uniform(0, 2 * np.pi, 2), rng.uniform(0.5, 1, 2)
    path = (weight[:, None] * np.sin(2 * np.pi * freq[:, None] * t + phase[:, None])).sum(0) / weight.sum()
    return amplitude * (path + 0.08 * rng.standard_normal(n))


def about(centre: Tuple[float, float], angle_deg: float = 0.0, scale: float = 1.0,
          tx: float = 0.0, ty: float = 0.0) -> np.ndarray:
    """3x3 matrix: rotate and scale about ``centre``, then translate."""
    m = np.eye(3)
    m[:2] = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(angle_deg), float(scale))
    m[:2, 2] += (tx, ty)
    return m


def translation(tx: float, ty: float) -> np.ndarray:
    return about((0, 0), tx=tx, ty=ty)


def hand_motion(rng: np.random.Generator, n: int, centre, size: Size, shift: float, rot: float,
                zoom: float, parallax: float = 1.0) -> List[np.ndarray]:
    """n 3x3 matrices of a smooth hand-held motion about ``centre``: translation up to ``shift``
    (fraction of the frame width), rotation up to ``rot`` degrees and zoom up to ``zoom``.
    ``parallax`` scales the translation (far things move less when the phone moves)."""
    w = size[0]
    tx, ty = smooth_path(rng, n, shift * w), smooth_path(rng, n, shift * w)
    angle, scale = smooth_path(rng, n, rot), 1 + smooth_path(rng, n, zoom)
    return [about(centre, angle[i], scale[i], parallax * tx[i], parallax * ty[i]) for i in range(n)]


# ==============================================================================================
# A person in a room, and the phone that films it
# ==============================================================================================

class RoomView:
    """A room rendered a little larger than the view (by ``margin``, a share of the larger side),
    so a moving camera never sees past it."""

    def __init__(self, room: Room, size: Size, margin: float = 0.12):
        w, h = size
        self.size = size
        self.margin = int(round(margin * max(w, h)))
        self.background = room.render(w + 2 * self.margin, h + 2 * self.margin)

    def view(self, camera: np.ndarray) -> np.ndarray:
        """(h, w, 3) float32 view of the room through ``camera`` (3x3, frame coordinates)."""
        m = camera @ translation(-self.margin, -self.margin)
        return cv2.warpAffine(self.background, m[:2], self.size, flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT)


class PersonScene:
    """A person lit by the session's light in front of a room; renders views of it.

    ``face_frac`` is the face box height as a fraction of the view height (a selfie: about 0.4).
    """

    def __init__(self, identity: Identity, room: Room, size: Size, rng: np.random.Generator,
                 face_frac: float, margin: float = 0.12):
        w, h = size
        self.size = size
        self.room = RoomView(room, size, margin)
        fx, fy, fw, fh = identity.face_box
        scale = face_frac * h / fh
        # Face centre: near the middle, a little above it, like a selfie.
        self.face_centre = (w * (0.5 + rng.uniform(-0.07, 0.07)), h * (0.46 + rng.uniform(-0.04, 0.04)))
        tx, ty = self.face_centre[0] - scale * (fx + fw / 2), self.face_centre[1] - scale * (fy + fh / 2)
        # Only the part of the cut-out that motion can bring into view is scaled and kept.
        pad = 0.25 * max(w, h)
        cut = _premultiplied(identity)
        x0, y0 = max(0, int((-pad - tx) / scale)), max(0, int((-pad - ty) / scale))
        x1, y1 = min(cut.shape[1], int((w + pad - tx) / scale) + 1), min(cut.shape[0], int((h + pad - ty) / scale) + 1)
        self.place = translation(tx + x0 * scale, ty + y0 * scale)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        person = cv2.resize(cut[y0:y1, x0:x1], None, fx=scale, fy=scale, interpolation=interp)
        alpha = np.clip(person[..., 3], 0, 1)
        # Light the person: the session's colour, a side gradient, a little random exposure.
        xs = (np.arange(person.shape[1], dtype=np.float32) + x0 * scale - scale * (fx + fw / 2)) / (1.5 * scale * fw)
        side = np.tile(1 + room.look.side * np.clip(xs, -1, 1), (person.shape[0], 1)).astype(np.float32)
        gain = np.array(room.look.light, np.float32) * rng.uniform(0.92, 1.06)
        rgb = _gains(np.ascontiguousarray(person[..., :3]), gain) * _rgb(side)
        self.rgb = np.clip(rgb, 0, _rgb(alpha))  # premultiplied colour never exceeds alpha
        self.alpha = alpha

    def render(self, camera: np.ndarray, head: np.ndarray, room_camera: Optional[np.ndarray] = None) -> np.ndarray:
        """(h, w, 3) float32 view: ``head`` moves the person about the face centre, ``camera``
        moves everything (the room by ``room_camera`` when given: parallax)."""
        room = self.room.view(camera if room_camera is None else room_camera)
        m = (camera @ head @ self.place)[:2]
        rgb, alpha = (cv2.warpAffine(x, m, self.size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                     borderValue=0) for x in (self.rgb, self.alpha))
        return room - room * _rgb(alpha) + rgb


@dataclass(frozen=True)
class PhoneLook:
    """How one phone's front camera renders a scene (the six OULU-NPU phones differ visibly)."""
    wb: Tuple[float, float, float]  # white-balance gains
    saturation: float
    contrast: float
    lift: float                     # black level added by the tone curve
    resolution: float               # share of the frame's resolution the camera really resolves
    blur: float                     # optical blur, sigma in pixels at 240 lines
    sharpen: float                  # unsharp-mask amount of the phone's processing
    noise: float                    # sensor noise sigma at mid grey (0..1 units)
    vignette: float
    quality: int                    # MJPG quality of the recording


# Phones whose sensor resolves less than the frame get no extra lens blur: the resampling blurs.
PHONES = {
    1: PhoneLook((1.02, 1.00, 0.97), 1.08, 1.10, 0.00, 1.00, 0.5, 0.6, 0.012, 0.10, 92),
    2: PhoneLook((0.95, 1.00, 1.08), 0.92, 0.95, 0.02, 0.80, 0.0, 0.2, 0.020, 0.20, 85),
    3: PhoneLook((1.06, 1.01, 0.90), 1.15, 1.18, 0.00, 0.90, 0.6, 0.9, 0.016, 0.15, 88),
    4: PhoneLook((0.98, 1.04, 0.98), 1.00, 1.00, 0.03, 0.70, 0.0, 0.1, 0.010, 0.25, 80),
    5: PhoneLook((1.04, 0.96, 1.03), 1.25, 1.05, 0.00, 0.85, 0.0, 0.5, 0.024, 0.12, 85),
    6: PhoneLook((1.00, 1.00, 1.00), 0.95, 0.85, 0.05, 0.60, 0.0, 0.4, 0.018, 0.35, 78),
}

# The camera that took the photos and videos the attacks show: sharp and clean (OULU-NPU used a
# high-end phone's back camera).
SOURCE_CAMERA = PhoneLook((1.0, 1.0, 1.0), 1.0, 1.0, 0.0, 1.0, 0.0, 0.3, 0.0, 0.05, 95)


@lru_cache(maxsize=32)
def _vignette(h: int, w: int, strength: float) -> np.ndarray:
    """(h, w, 3) float32 radial fall-off of a phone lens, 1 at the centre."""
    yy, xx = np.ogrid[-1:1:complex(0, h), -1:1:complex(0, w)]
    return _rgb((1 - strength * (xx ** 2 + yy ** 2) / 2).astype(np.float32))


def capture(rgb: np.ndarray, phone: PhoneLook, rng: np.random.Generator, as_uint8: bool = True) -> np.ndarray:
    """Film ``rgb`` (h, w, 3) float32 in [0, 1] with ``phone``: optics, vignetting, sensor noise,
    sensor resolution, white balance and tone, sharpening. Returns (h, w, 3) BGR uint8 (or RGB
    float32 in [0, 1] when ``as_uint8`` is false)."""
    h, w = rgb.shape[:2]
    img = rgb
    if phone.blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), phone.blur * h / 240)
    if phone.vignette > 0:
        img = img * _vignette(h, w, phone.vignette)
    if phone.noise > 0:
        # Shot noise grows with the signal; half of it is blotchy, as after the phone's demosaicing.
        sigma = phone.noise * np.sqrt(2 * np.maximum(img, 0.02))
        blotches = cv2.resize(np.ascontiguousarray(_noise(rng, h // 2, w // 2, 3)), (w, h),
                              interpolation=cv2.INTER_LINEAR)
        img = img + sigma * (_noise(rng, h, w, 3) + 0.7 * blotches)
    if phone.resolution < 1:  # a lower-resolution sensor, upscaled by the phone to the frame size
        small = (max(8, int(w * phone.resolution)), max(8, int(h * phone.resolution)))
        img = cv2.resize(cv2.resize(img, small, interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_LINEAR)
    # White balance, saturation, contrast and lift are one affine colour map (3x4).
    grey = np.full((3, 3), 1 / 3)
    colour = (phone.saturation * np.eye(3) + (1 - phone.saturation) * grey) @ np.diag(phone.wb)
    affine = np.hstack([colour * (phone.contrast - phone.lift),
                        np.full((3, 1), 0.5 - 0.5 * phone.contrast + phone.lift)])
    if as_uint8:
        affine = affine[::-1]  # produce BGR, OpenCV's order for the writer
    img = cv2.transform(img, affine.astype(np.float32))
    if phone.sharpen > 0:
        img = cv2.addWeighted(img, 1 + phone.sharpen, cv2.GaussianBlur(img, (0, 0), 1.0 * h / 240), -phone.sharpen, 0)
    if not as_uint8:
        return _clip01(img)
    return cv2.convertScaleAbs(cv2.max(img, (0.0,) * 4), alpha=255.0)  # rounds and saturates at 255


# ==============================================================================================
# Presentation attacks: printed photos and replayed videos
# ==============================================================================================

@dataclass(frozen=True)
class PrinterLook:
    """How a printer reproduces a photo on paper."""
    pitch: float                   # halftone cell in frame pixels at 240 lines (the sheet texture is finer)
    angles: Tuple[float, float, float]  # screen angles of the cyan, magenta, yellow dots (degrees)
    dot_mix: float                 # share of the visible dot pattern (the rest is ink spread between dots)
    saturation: float              # gamut loss
    ink_black: float               # darkest tone the ink reaches (paper reflects some light)
    paper: Tuple[float, float, float]  # paper white
    cast: Tuple[float, float, float]   # colour cast of the ink set
    bleed: float                   # ink bleed, sigma in frame pixels at 240 lines
    fibre: float                   # paper texture strength


PRINTERS = {
    1: PrinterLook(1.6, (15, 75, 0), 0.45, 0.70, 0.14, (0.95, 0.93, 0.87), (1.04, 1.0, 0.90), 0.3, 0.025),
    2: PrinterLook(2.6, (105, 165, 45), 0.60, 0.60, 0.20, (0.92, 0.93, 0.96), (1.0, 0.93, 1.04), 0.6, 0.04),
}


@dataclass(frozen=True)
class DisplayLook:
    """How a screen shows a video."""
    aspect: float                  # screen width / height
    height: float                  # screen height as a share of the frame height (at rest)
    pitch: float                   # one screen pixel in frame pixels at 240 lines
    stripes: float                 # contrast of the R, G, B sub-pixel stripes
    grid: float                    # darkness of the black matrix between pixel rows
    gamma: float                   # applied to the shown video (screen and camera gammas do not cancel)
    gain: float                    # brightness of the screen relative to the lit room
    black: float                   # black level: backlight leaking through dark pixels
    tint: Tuple[float, float, float]  # white point
    bezel: float                   # bezel width / screen height
    bezel_rgb: Tuple[float, float, float]
    glare: float                   # strength of the specular highlight of a lamp on the glass
    reflection: float              # strength of the room's mirror image on the glass
    moire: float                   # strength of the moire fringes the pixel grid beats into


DISPLAYS = {
    1: DisplayLook(1.25, 0.74, 1.35, 0.8, 0.35, 0.80, 1.10, 0.06, (0.92, 0.98, 1.08), 0.07, (0.10, 0.10, 0.11),
                   0.10, 0.03, 0.03),
    2: DisplayLook(1.6, 0.70, 0.85, 0.6, 0.2, 1.20, 1.20, 0.03, (1.0, 0.98, 0.95), 0.035, (0.04, 0.04, 0.05),
                   0.30, 0.08, 0.04),
}
PRINT_OVERSAMPLE = 2  # sheet texture pixels per frame pixel (at least): room for the halftone dots


@lru_cache(maxsize=4)
def _halftone_screens(h: int, w: int, printer: "PrinterLook", oversample: float) -> np.ndarray:
    """(h, w, 3) threshold of a clustered-dot screen per ink, rotated by the ink's angle: a dot
    grows where the ink coverage exceeds the threshold."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    period = printer.pitch * oversample
    screens = []
    for angle in printer.angles:
        a = np.deg2rad(angle)
        u, v = xs * np.cos(a) + ys * np.sin(a), -xs * np.sin(a) + ys * np.cos(a)
        screens.append(0.5 + 0.25 * (np.cos(2 * np.pi * u / period) + np.cos(2 * np.pi * v / period)))
    return cv2.merge(screens)


def halftone(rgb: np.ndarray, printer: PrinterLook, oversample: float) -> np.ndarray:
    """Print ``rgb`` (h, w, 3) in [0, 1] with rotated clustered-dot screens, one per ink."""
    h, w = rgb.shape[:2]
    paper = np.array(printer.paper, np.float32)
    sat = printer.saturation
    gamut = (sat * np.eye(3) + (1 - sat) / 3) * np.array(printer.cast)[:, None]  # gamut loss, then ink cast
    img = np.clip(cv2.transform(rgb, gamut.astype(np.float32)), 0, 1)
    img = img * (0.9 + 0.1 * img)  # dot gain darkens the mid-tones
    coverage = 1 - img  # ink per channel: cyan, magenta, yellow
    dots = np.clip(3 * (coverage - _halftone_screens(h, w, printer, oversample)) + 0.5, 0, 1)  # soft-edged dots
    ink = printer.dot_mix * dots + (1 - printer.dot_mix) * coverage
    # Where no ink lands the paper shows; full ink leaves what the ink reflects.
    return cv2.transform(1 - ink, np.diag(paper - printer.ink_black).astype(np.float32)) + printer.ink_black


def print_sheet(photo: np.ndarray, printer: PrinterLook, rng: np.random.Generator, margin: int,
                scale: float) -> np.ndarray:
    """(H, W, 4) premultiplied RGBA texture of a printed sheet: the halftoned ``photo`` with paper
    margins of ``margin`` texture pixels and paper fibre texture; ``scale`` converts the
    printer's sizes to texture pixels."""
    printed = halftone(photo, printer, scale)
    printed = cv2.GaussianBlur(printed, (0, 0), printer.bleed * scale)
    h, w = photo.shape[:2]
    sheet = np.empty((h + 2 * margin, w + 2 * margin, 3), np.float32)
    sheet[:] = np.array(printer.paper, np.float32)
    sheet[margin:margin + h, margin:margin + w] = printed
    fibres = cv2.GaussianBlur(_noise(rng, *sheet.shape[:2]), (0, 0), sigmaX=2.5, sigmaY=0.8)
    sheet *= (1 + printer.fibre * fibres / (fibres.std() + 1e-6))[..., None]
    return np.dstack([np.clip(sheet, 0, 1), np.ones(sheet.shape[:2], np.float32)])


class ScreenTexture:
    """A screen and its bezel as one RGBA texture at screen resolution (one texel per screen
    pixel); the bezel is drawn once and each frame's picture is written into the glass."""

    def __init__(self, content_size: Size, bezel: int, colour: Tuple[float, float, float]):
        cw, ch = content_size
        self.bezel = bezel
        h, w = ch + 2 * bezel, cw + 2 * bezel
        rgb = np.empty((h, w, 3), np.float32)
        lit_from_above = np.linspace(1.4, 0.8, h, dtype=np.float32)[:, None, None]
        rgb[:] = np.array(colour, np.float32) * lit_from_above
        rim = max(1, bezel // 6)  # the thin bright edge where the bezel turns away
        rgb[:rim] = rgb[-rim:] = rgb[:, :rim] = rgb[:, -rim:] = 0.35
        self.rgba = np.dstack([rgb, np.ones((h, w), np.float32)])

    @property
    def size(self) -> Size:
        return self.rgba.shape[1], self.rgba.shape[0]

    def show(self, picture: np.ndarray) -> np.ndarray:
        """Put ``picture`` (ch, cw, 3) on the glass; returns the (h, w, 4) texture (shared buffer)."""
        b = self.bezel
        self.rgba[b:b + picture.shape[0], b:b + picture.shape[1], :3] = picture
        return self.rgba


def _three_phases(phase: np.ndarray, offset: float = 0.0) -> np.ndarray:
    """(h, w) phase -> (h, w, 3) cos(phase + offset - 2 pi c / 3) for c = 0, 1, 2, from two trig calls."""
    cos, sin = np.cos(phase), np.sin(phase)
    angles = offset - 2 * np.pi * np.arange(3) / 3
    return cv2.merge([(cos * np.cos(a) - sin * np.sin(a)).astype(np.float32) for a in angles])


def _pixel_structure(map_x: np.ndarray, map_y: np.ndarray, bezel: int, footprint: float,
                     display: "DisplayLook") -> np.ndarray:
    """(h, w, 3) gain of the screen's pixel structure as the phone's pixels sample it.

    Each screen pixel is three vertical R, G, B stripes above a dark black-matrix line. A phone
    pixel covering ``footprint`` screen pixels averages the stripes (sinc attenuation of their
    fundamental), and sampling what is left at the phone's pixel grid aliases it into moire: the
    fringes come out of the sampling, not out of a drawn pattern.
    """
    sx, sy = map_x - bezel, map_y - bezel  # screen pixel coordinates
    attenuation = abs(np.sinc(footprint)) * np.exp(-2 * (np.pi * 0.3 * footprint) ** 2)  # + optics blur
    stripes = 1 + display.stripes * attenuation * _three_phases(2 * np.pi * sx, offset=-np.pi / 3)
    rows = 1 - display.grid * (0.5 + 0.5 * attenuation * np.cos(2 * np.pi * sy))
    return stripes * _rgb(rows)


@lru_cache(maxsize=4)
def _pixel_grid(w: int, h: int) -> Tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs, ys


def plane_maps(homography: np.ndarray, size: Size, bend: float = 0.0, bulge: float = 0.0,
               tex_size: Optional[Size] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where each frame pixel looks into a plane texture mapped by ``homography`` (texture ->
    frame). A sheet bent about its vertical axis (``bend``, ``bulge``) magnifies its middle column
    and bows its top and bottom edges. Returns (map_x, map_y, un, vn): texture coordinates for
    cv2.remap and the same normalised to [-1, 1] across the texture."""
    w, h = size
    tw, th = tex_size
    inv = cv2.invert(homography)[1].astype(np.float32)
    xs, ys = _pixel_grid(w, h)
    den = inv[2, 0] * xs + inv[2, 1] * ys + inv[2, 2]
    u = (inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]) / den
    v = (inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]) / den
    un, vn = u * np.float32(2 / tw) - 1, v * np.float32(2 / th) - 1
    if bend or bulge:
        across = 1 - np.square(_clip(un, -1, 1))
        vn = vn / (1 + np.float32(bend) * across)
        un = un - np.float32(bulge) * un * across
    return (un + 1) * np.float32(tw / 2), (vn + 1) * np.float32(th / 2), un, vn


def _plane_at_rest(size: Size, tex_size: Size, width: float, rng: np.random.Generator,
                   tilt: float) -> np.ndarray:
    """Homography placing a texture ``width`` frame pixels wide near the frame centre, with a
    random perspective tilt (corners moved by up to ``tilt`` of the plane size)."""
    w, h = size
    tw, th = tex_size
    pw, ph = width, width * th / tw
    cx, cy = w / 2 + rng.uniform(-0.04, 0.04) * w, h / 2 + rng.uniform(-0.03, 0.03) * h
    dst = np.array([[cx - pw / 2, cy - ph / 2], [cx + pw / 2, cy - ph / 2],
                    [cx + pw / 2, cy + ph / 2], [cx - pw / 2, cy + ph / 2]], np.float32)
    dst += (rng.uniform(-tilt, tilt, (4, 2)) * (pw, ph)).astype(np.float32)
    src = np.array([[0, 0], [tw, 0], [tw, th], [0, th]], np.float32)
    return cv2.getPerspectiveTransform(src, dst)


def _composite_plane(room: np.ndarray, texture: np.ndarray, maps, shadow: float,
                     light: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Put a remapped RGBA plane over ``room`` with a soft drop shadow; ``light`` (h, w) scales
    the plane's brightness (shading of a bent sheet). Returns (image, alpha)."""
    map_x, map_y = maps[:2]
    plane = cv2.remap(texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    r, g, b, alpha = cv2.split(plane)
    rgb = cv2.merge([r, g, b])
    if light is not None:
        rgb = rgb * _rgb(light)
    if shadow > 0:  # soft, so it is computed at a quarter of the resolution
        h, w = alpha.shape
        quarter = (max(1, w // 4), max(1, h // 4))
        offset = translation(0.003 * h, 0.005 * h)[:2]
        small = cv2.resize(alpha, quarter, interpolation=cv2.INTER_AREA)
        cast = cv2.GaussianBlur(cv2.warpAffine(small, offset, quarter), (0, 0), 0.005 * h)
        room = room * _rgb(1 - shadow * cv2.resize(cast, (w, h), interpolation=cv2.INTER_LINEAR))
    return room * _rgb(1 - alpha) + rgb, alpha


# ==============================================================================================
# One video of each kind
# ==============================================================================================

def _camera_paths(rng: np.random.Generator, n: int, size: Size, shift: float, rot: float, zoom: float,
                  parallax: float) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """The hand-held phone's motion for the near subject, and the same motion with the
    translation scaled by ``parallax`` for the room behind it."""
    key = int(rng.integers(2**63))
    centre = (size[0] / 2, size[1] / 2)
    near = hand_motion(np.random.default_rng(key), n, centre, size, shift, rot, zoom)
    far = hand_motion(np.random.default_rng(key), n, centre, size, shift, rot, zoom, parallax=parallax)
    return near, far


def render_live(identity: Identity, room: Room, size: Size, n: int, rng: np.random.Generator,
                phone: PhoneLook) -> List[np.ndarray]:
    """n BGR uint8 frames of the person filmed by a hand-held phone."""
    scene = PersonScene(identity, room, size, rng, face_frac=rng.uniform(0.36, 0.44))
    cams, room_cams = _camera_paths(rng, n, size, shift=0.02, rot=1.5, zoom=0.02, parallax=0.6)
    heads = hand_motion(rng, n, scene.face_centre, size, shift=0.012, rot=3.0, zoom=0.015)
    return [capture(scene.render(cams[i], heads[i], room_cams[i]), phone, rng) for i in range(n)]


def _source_view(identity: Identity, room: Room, size: Size, rng: np.random.Generator) -> PersonScene:
    """The scene the attack's photo or video was taken of: the same person and room, another spot."""
    spot = shifted_room(room, rng.uniform(-0.15, 0.15), rng.uniform(0.9, 1.1))
    return PersonScene(identity, spot, size, rng, face_frac=rng.uniform(0.42, 0.5), margin=0.05)


def render_print(identity: Identity, room: Room, size: Size, n: int, rng: np.random.Generator,
                 phone: PhoneLook, printer: PrinterLook) -> List[np.ndarray]:
    """n BGR uint8 frames of a printed photo of the person, held and bent in front of the phone."""
    w, h = size
    # Landscape A-series paper; the texture size depends on the frame size only (the halftone
    # screens are cached per size), the sheet's size in the frame varies with the placement.
    sheet_w = min(0.9 * w, np.sqrt(2) * 0.95 * h)
    sheet_h = sheet_w / np.sqrt(2)
    margin = 0.04 * sheet_w
    lines = h / 240  # the printer's sizes are in frame pixels at 240 lines
    # Texture pixels per frame pixel: PRINT_OVERSAMPLE, or more to keep 4 per halftone cell.
    tex_scale = max(PRINT_OVERSAMPLE, 4.0 / (printer.pitch * lines))
    photo_size = (int((sheet_w - 2 * margin) * tex_scale), int((sheet_h - 2 * margin) * tex_scale))
    photo = capture(_source_view(identity, room, photo_size, rng).render(np.eye(3), np.eye(3)),
                    SOURCE_CAMERA, rng, as_uint8=False)
    texture = print_sheet(photo, printer, rng, margin=int(margin * tex_scale), scale=tex_scale * lines)
    # Each phone pixel averages the dots it sees; unfiltered, the fine texture would alias into
    # coloured noise at small frame sizes.
    texture = cv2.GaussianBlur(texture, (0, 0), 0.3 * tex_scale)
    tex_size = (texture.shape[1], texture.shape[0])
    rest = _plane_at_rest(size, tex_size, sheet_w * rng.uniform(0.88, 1.0), rng, tilt=0.04)
    sheet_centre = tuple((rest @ np.array([tex_size[0] / 2, tex_size[1] / 2, 1.0]))[:2])

    room_view = RoomView(room, size)
    cams, room_cams = _camera_paths(rng, n, size, shift=0.015, rot=1.0, zoom=0.015, parallax=0.6)
    hands = hand_motion(rng, n, sheet_centre, size, shift=0.015, rot=2.0, zoom=0.02)
    bend = rng.choice([-1, 1]) * rng.uniform(0.02, 0.06) + smooth_path(rng, n, 0.012)
    bulge = rng.uniform(0.0, 0.06)
    shade = rng.uniform(0.05, 0.15) * rng.choice([-1, 1])  # the bend turns the sheet to or from the light
    frames = []
    for i in range(n):
        maps = plane_maps(cams[i] @ hands[i] @ rest, size, bend=bend[i], bulge=bulge, tex_size=tex_size)
        light = 1 + shade * (1 / 3 - np.square(_clip(maps[2], -1, 1)))
        img, _ = _composite_plane(room_view.view(room_cams[i]), texture, maps, shadow=0.35, light=light)
        frames.append(capture(img, phone, rng))
    return frames


def render_replay(identity: Identity, room: Room, size: Size, n: int, rng: np.random.Generator,
                  phone: PhoneLook, display: DisplayLook) -> List[np.ndarray]:
    """n BGR uint8 frames of a video of the person played on a screen in front of the phone."""
    w, h = size
    screen_h = display.height * h * rng.uniform(0.95, 1.05)
    bezel = display.bezel * screen_h
    screen_h = min(screen_h, (0.95 * w - 2 * bezel) / display.aspect)
    screen_w = screen_h * display.aspect
    pitch = display.pitch * h / 240  # a screen pixel in frame pixels: a sharper camera sees it bigger
    content_size = (int(screen_w / pitch), int(screen_h / pitch))
    # The replayed video: the person filmed hand-held. Rendered once and moved as a whole per
    # frame (three times cheaper than re-composing it; the lost parallax is sub-pixel on screen).
    video = _source_view(identity, room, content_size, rng)
    still = _clip01(video.render(np.eye(3), np.eye(3)))
    # What the screen makes of it: its own gamma, brightness, black level and white point.
    shown = _gains(display.black + (display.gain - display.black) * np.power(still, display.gamma), display.tint)
    video_motion = hand_motion(rng, n, video.face_centre, content_size, shift=0.015, rot=2.0, zoom=0.015)

    screen = ScreenTexture(content_size, max(2, int(round(bezel / pitch))), display.bezel_rgb)
    tex_size = screen.size
    rest = _plane_at_rest(size, tex_size, screen_w + 2 * bezel, rng, tilt=0.03)
    inner = (1 - 2 * screen.bezel / tex_size[0], 1 - 2 * screen.bezel / tex_size[1])  # glass half-extent in un, vn

    room_view = RoomView(room, size)
    cams, room_cams = _camera_paths(rng, n, size, shift=0.02, rot=1.5, zoom=0.02, parallax=0.6)
    # Glare: a lamp's highlight on the glass. Moire: besides the fine fringes the pixel grid aliases
    # into, broad bands from the beat of the screen grid with the phone's colour filter grid.
    gx, gy, ga = rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.3), rng.uniform(0, np.pi)
    gs = (rng.uniform(0.35, 0.7), rng.uniform(0.12, 0.25))
    k = rng.uniform(2, 5, 4) * (1, 1, 0.5, 0.3) * rng.choice([-1, 1], 4)
    phases = rng.uniform(0, 2 * np.pi, n)
    # What the glass mirrors is the room behind the phone: blurred, it hardly changes with motion.
    mirror = cv2.GaussianBlur(np.ascontiguousarray(room_view.view(np.eye(3))[:, ::-1]), (0, 0), 0.01 * w)
    frames = []
    for i in range(n):
        texture = screen.show(cv2.warpAffine(shown, video_motion[i][:2], content_size, flags=cv2.INTER_LINEAR,
                                             borderMode=cv2.BORDER_REFLECT))
        room = room_view.view(room_cams[i])
        maps = plane_maps(cams[i] @ rest, size, tex_size=tex_size)
        img, alpha = _composite_plane(room, texture, maps, shadow=0.25)
        un, vn = maps[2], maps[3]
        glass = _rgb(_clip((inner[0] - np.abs(un)) * 200) * _clip((inner[1] - np.abs(vn)) * 200))
        structure = _pixel_structure(maps[0], maps[1], screen.bezel, 1 / pitch, display)
        phase = 2 * np.pi * (k[0] * un + k[1] * vn + k[2] * un * vn + k[3] * un ** 2) + phases[i]
        bands = _three_phases(phase)
        img = img * (1 + glass * (structure - 1 + display.moire * bands))
        du, dv = un - gx, vn - gy
        along, across = du * np.cos(ga) + dv * np.sin(ga), -du * np.sin(ga) + dv * np.cos(ga)
        img = img + _rgb(display.glare * alpha * np.exp(-(along / gs[0]) ** 2 - (across / gs[1]) ** 2))
        img = img + display.reflection * glass * mirror
        frames.append(capture(_clip(img), phone, rng))
    return frames


@contextlib.contextmanager
def _opencv_single_thread():
    """Run OpenCV on one thread, then restore its setting. Some of its float kernels (resize
    with INTER_AREA, for one) round differently when split across threads, which would make the
    frames depend on the machine's core count."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def render_video(video: VideoId, identity: Identity, frames: int, size: Size, seed: int) -> List[np.ndarray]:
    """The ``frames`` BGR uint8 frames of one video, a function of its id, identity, size and seed only."""
    with _opencv_single_thread():
        return _render_video(video, identity, frames, size, seed)


def _render_video(video: VideoId, identity: Identity, frames: int, size: Size, seed: int) -> List[np.ndarray]:
    rng = np.random.default_rng([seed, video.phone, video.session, video.user, video.file])
    # One room per session; each user's phone sees it from its own spot, the same for all five files
    # (OULU-NPU filmed a user's bona fide and attack videos in one place), so the room is no shortcut.
    room = make_room(np.random.default_rng([seed, 100 + video.session]), video.session)
    spot = np.random.default_rng([seed, 200 + video.session, video.user, video.phone])
    room = shifted_room(room, spot.uniform(-0.25, 0.25), spot.uniform(0.9, 1.15))
    phone = PHONES[video.phone]
    if video.file == 1:
        return render_live(identity, room, size, frames, rng, phone)
    if video.file in (2, 3):
        return render_print(identity, room, size, frames, rng, phone, PRINTERS[video.file - 1])
    return render_replay(identity, room, size, frames, rng, phone, DISPLAYS[video.file - 3])


# ==============================================================================================
# Video files
# ==============================================================================================

def read_video(path: str | os.PathLike) -> np.ndarray:
    """(n, h, w, 3) BGR uint8 frames of a video, in decode order. Raises OSError naming the file
    when it cannot be opened or holds no frame."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise OSError(f"{path}: OpenCV cannot open this video")
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    if not frames:
        raise OSError(f"{path}: the video holds no decodable frame")
    return np.stack(frames)


def _video_complete(path: Path, frames: int, size: Size) -> bool:
    """Whether ``path`` exists and decodes to ``frames`` frames of ``size``."""
    if not path.is_file():
        return False
    try:
        video = read_video(path)
    except OSError:
        return False
    return video.shape[0] == frames and (video.shape[2], video.shape[1]) == tuple(size)


def mjpeg_avi(jpegs: Sequence[bytes], width: int, height: int, fps: int) -> bytes:
    """The bytes of an AVI (RIFF) file holding ``jpegs`` as one MJPG video stream with an index.

    Written here rather than by cv2.VideoWriter: encoding with cv2.imencode is five times faster
    than OpenCV's MJPEG writer, and bytes can go through misc.io's atomic writes (the writer
    needs a file name ending in .avi, which a temporary name must not have).
    """
    def chunk(fourcc: bytes, data: bytes) -> bytes:
        return fourcc + struct.pack("<I", len(data)) + data + b"\0" * (len(data) % 2)

    def riff_list(kind: bytes, *parts: bytes) -> bytes:
        data = b"".join(parts)
        return b"LIST" + struct.pack("<I", len(data) + 4) + kind + data

    n, biggest = len(jpegs), max(len(j) for j in jpegs)
    avih = struct.pack("<14I", round(1e6 / fps), biggest * fps, 0, 0x10, n, 0, 1, biggest, width, height, 0, 0, 0, 0)
    strh = struct.pack("<4s4sIHHIIIIIIiI4h", b"vids", b"MJPG", 0, 0, 0, 0, 1, fps, 0, n, biggest, -1, 0,
                       0, 0, width, height)
    strf = struct.pack("<IiiHH4sIiiII", 40, width, height, 1, 24, b"MJPG", width * height * 3, 0, 0, 0, 0)
    header = riff_list(b"hdrl", chunk(b"avih", avih), riff_list(b"strl", chunk(b"strh", strh), chunk(b"strf", strf)))
    frames, index, offset = [], [], 4  # index offsets count from the "movi" tag
    for jpeg in jpegs:
        frames.append(chunk(b"00dc", jpeg))
        index.append(struct.pack("<4sIII", b"00dc", 0x10, offset, len(jpeg)))  # 0x10: key frame
        offset += len(frames[-1])
    body = b"AVI " + header + riff_list(b"movi", *frames) + chunk(b"idx1", b"".join(index))
    return b"RIFF" + struct.pack("<I", len(body)) + body


def write_video(path: Path, frames: Sequence[np.ndarray], quality: int) -> None:
    """Write BGR uint8 ``frames`` as MJPG in AVI at JPEG ``quality``, atomically, and check that
    OpenCV decodes it back (a file that does not is removed and reported)."""
    h, w = frames[0].shape[:2]
    jpegs = []
    for frame in frames:
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise OSError(f"{path}: OpenCV could not encode a {frame.shape} frame as JPEG")
        jpegs.append(buf.tobytes())
    atomic_write_bytes(path, mjpeg_avi(jpegs, w, h, FPS))
    if not _video_complete(path, len(frames), (w, h)):
        path.unlink()
        raise OSError(f"{path}: the written video does not decode to {len(frames)} frames of {w}x{h}")


# ==============================================================================================
# The dataset
# ==============================================================================================

def plan_videos(user_splits: Dict[str, List[int]], phones: int, sessions: int) -> Dict[str, List[VideoId]]:
    """Every video of every split: all phones x sessions x users x five files."""
    return {split: [VideoId(p, s, u, f) for p in range(1, phones + 1) for s in range(1, sessions + 1)
                    for u in users for f in range(1, 6)]
            for split, users in user_splits.items()}


def write_protocols(root: Path, videos: Sequence[VideoId]) -> List[str]:
    """Write the official-format lists of every protocol (sub-protocol) whose Train, Dev and Test
    lists all have rows; returns their tags ("1", "2", "3_1", ...)."""
    written = []
    for protocol in range(1, 5):
        subs = range(1, NUM_SUBPROTOCOLS + 1) if protocol in PROTOCOLS_WITH_SUBS else [None]
        for sub in subs:
            lists = {split: official_rows(videos, protocol, split, sub) for split in SPLITS}
            if not all(lists.values()):
                continue
            for split, rows in lists.items():
                atomic_write_text(protocol_path(root / "Protocols", protocol, split, sub), format_protocol(rows))
            written.append(f"{protocol}" if sub is None else f"{protocol}_{sub}")
    return written


def write_preview(root: Path, plan: Dict[str, List[VideoId]]) -> Path:
    """A contact sheet: the first frame of the five files of the first and the last user of
    each split (first phone and session, last phone and session)."""
    rows = []
    for split in SPLITS:
        first, last = plan[split][0], plan[split][-1]
        for shown in ([first, last] if last.user != first.user else [first]):
            tiles = []
            for f in range(1, 6):
                vid = VideoId(shown.phone, shown.session, shown.user, f)
                tile = read_video(root / SPLIT_FOLDERS[split] / f"{vid}.avi")[0].copy()
                for colour, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):  # outlined label
                    cv2.putText(tile, f"{vid} {vid.instrument}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour,
                                thickness)
                tiles.append(tile)
            rows.append(np.hstack(tiles))
    path = root / PREVIEW_NAME
    atomic_write_image(path, np.vstack(rows), jpeg_quality=90)
    return path


def _check_args(users: int, phones: int, sessions: int, frames: int, size: Size, seed: int) -> None:
    if not 1 <= phones <= 6:
        raise ValueError(f"--phones must be 1..6 (OULU-NPU has six phones), got {phones}")
    if not 1 <= sessions <= 3:
        raise ValueError(f"--sessions must be 1..3 (OULU-NPU has three sessions), got {sessions}")
    if frames < 1:
        raise ValueError(f"--frames must be at least 1, got {frames}")
    if min(size) < 64 or size[0] % 2 or size[1] % 2:
        raise ValueError("--size must be even and at least 64x64 (MTCNN needs faces of 20+ pixels), "
                         f"got {size[0]}x{size[1]}")
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")
    split_users(users)  # raises on a bad user count


def _make_video(task: Tuple[str, str, str, int, Size, int]) -> bool:
    """Render and write one video unless it is already complete; True when it was written.
    ``task`` = (path, video id, identity name, frames, size, seed): plain values, so that worker
    processes can receive it."""
    path, video, identity, frames, size, seed = task
    if _video_complete(Path(path), frames, size):
        return False
    vid = VideoId.parse(video)
    write_video(Path(path), render_video(vid, load_identity(identity), frames, size, seed), PHONES[vid.phone].quality)
    return True


def _resolve_workers(workers: int, tasks: int) -> int:
    """``workers`` > 0 is taken as is; 0 (auto) uses two processes when the cores and the work
    (100+ videos, so the ~2 s start-up of a process pays off) allow it, else one."""
    if workers > 0:
        return workers
    return min(2, os.cpu_count() or 1) if tasks >= 100 else 1


def _refuse_other_dataset(root: Path, args: dict) -> None:
    """Raise FileExistsError if ``root`` holds a dataset made with other arguments or format."""
    meta_path = root / META_NAME
    if not meta_path.is_file():
        return
    old = json.loads(meta_path.read_text(encoding="utf-8"))
    if old.get("args") != args or old.get("format_version") != FORMAT_VERSION:
        raise FileExistsError(f"{root}: already holds a synthetic dataset made with {old.get('args')} "
                              f"(format {old.get('format_version')}); asked for {args} (format {FORMAT_VERSION}). "
                              "Use another --out or delete the folder.")


def _render_all(tasks: List[tuple], workers: int, show_progress: bool) -> Tuple[int, int]:
    """Run :func:`_make_video` on every task; returns (videos written, processes used)."""
    quiet = {} if show_progress else {"disable": True}
    n_workers = _resolve_workers(workers, len(tasks))
    if n_workers == 1:
        return sum(_make_video(t) for t in progress(tasks, desc="synthetic videos", unit="video", **quiet)), 1
    # Spawned, never forked: the caller may hold TensorFlow or torch threads that fork would break.
    # In plan order the five files of one phone, session and user follow each other and share a
    # cached room render, so each worker takes them five at a time.
    with mp.get_context("spawn").Pool(n_workers) as pool:
        done = pool.imap_unordered(_make_video, tasks, chunksize=5)
        return sum(progress(done, desc="synthetic videos", total=len(tasks), unit="video", **quiet)), n_workers


def make_dataset(out_dir: str | os.PathLike, users: int = DEFAULTS["users"], phones: int = DEFAULTS["phones"],
                 sessions: int = DEFAULTS["sessions"], frames: int = DEFAULTS["frames"],
                 size: Size = DEFAULTS["size"], seed: int = DEFAULTS["seed"], workers: int = DEFAULTS["workers"],
                 show_progress: bool = True) -> Path:
    """Write (or finish) a synthetic OULU-NPU-shaped dataset under ``out_dir``; returns the root.

    Videos that already exist and decode with the right size and frame count are kept, so an
    interrupted run resumes. A folder made with other arguments (or by another version of this
    module) is refused (FileExistsError) rather than mixed; bad arguments raise ValueError.
    ``workers`` processes render videos (0: automatic); the output does not depend on it.
    """
    size = (int(size[0]), int(size[1]))
    _check_args(users, phones, sessions, frames, size, seed)
    if workers < 0:
        raise ValueError(f"--workers must be >= 0 (0 = automatic), got {workers}")
    root = Path(out_dir)
    args = dict(users=users, phones=phones, sessions=sessions, frames=frames, size=list(size), seed=seed)
    _refuse_other_dataset(root, args)

    user_splits = split_users(users)
    identities = assign_identities(user_splits, seed)
    plan = plan_videos(user_splits, phones, sessions)
    tasks = [(str(root / SPLIT_FOLDERS[split] / f"{vid}.avi"), str(vid), identities[vid.user], frames, size, seed)
             for split in SPLITS for vid in plan[split]]
    for split in SPLITS:  # temporary files of a killed run
        if (root / SPLIT_FOLDERS[split]).is_dir():
            remove_stale_temporaries(root / SPLIT_FOLDERS[split])
    start = time.perf_counter()
    made, n_workers = _render_all(tasks, workers, show_progress)

    # Lists, preview and, last, the metadata: its presence marks a complete dataset.
    all_videos = [vid for split in SPLITS for vid in plan[split]]
    protocols = write_protocols(root, all_videos)
    write_preview(root, plan)
    atomic_write_json(root / META_NAME, {
        "format_version": FORMAT_VERSION,
        "args": args,
        "fps": FPS,
        "codec": "MJPG in AVI",
        "users": {split: [f"{u:02d}" for u in user_splits[split]] for split in SPLITS},
        "identities": {f"{u:02d}": {"name": name, "source": identity_source(name)}
                       for u, name in sorted(identities.items())},
        "counts": {"videos": {split: len(plan[split]) for split in SPLITS},
                   "frames": {split: len(plan[split]) * frames for split in SPLITS},
                   "total_videos": len(all_videos), "total_frames": len(all_videos) * frames},
        "protocols": protocols,
        "sessions": {str(s): SESSIONS[s].name for s in range(1, sessions + 1)},
        "last_run": {"videos_written": made, "workers": n_workers, "seconds": round(time.perf_counter() - start, 1)},
    })
    return root


# ==============================================================================================
# Command line
# ==============================================================================================

def parse_size(text: str) -> Size:
    """``320x240`` -> (320, 240)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must look like WIDTHxHEIGHT (e.g. 320x240), got {text!r}") from None
    return w, h


def get_args_parser() -> argparse.ArgumentParser:
    d = DEFAULTS
    parser = argparse.ArgumentParser("Synthetic OULU-NPU-shaped dataset", add_help=False)
    parser.add_argument("--out", required=True, type=Path,
                        help="dataset root to write (OULU_ROOT of the later stages); a rerun resumes into it")
    parser.add_argument("--users", type=int, default=d["users"],
                        help="people in total, shared train/dev/test 20:15:20 like OULU-NPU's 55 (at least one "
                             "each; ids from 01, 21, 36). 3..55, limited by the faces that ship with the packages "
                             f"(default {d['users']}: 3/3/3)")
    parser.add_argument("--phones", type=int, default=d["phones"],
                        help="phones 1..N, each with its own colour, sharpness, noise and compression (OULU-NPU: 6). "
                             "Protocols 3 and 4 get a sub-protocol k only if phone k exists and another phone "
                             f"does too (default {d['phones']}: sub-protocols 1 and 2)")
    parser.add_argument("--sessions", type=int, default=d["sessions"],
                        help="sessions 1..N, each its own room and light (OULU-NPU: 3). Protocols 1 and 4 test "
                             f"on session 3 and are left out below 3 (default {d['sessions']})")
    parser.add_argument("--frames", type=int, default=d["frames"],
                        help=f"frames per video (OULU-NPU: about 150; default {d['frames']}, for a demo that runs "
                             "in minutes on two CPU cores)")
    parser.add_argument("--size", type=parse_size, default=d["size"],
                        help="frame size WIDTHxHEIGHT, even numbers (OULU-NPU: 1920x1080; default "
                             f"{d['size'][0]}x{d['size'][1]})")
    parser.add_argument("--seed", type=int, default=d["seed"],
                        help=f"random seed: fixes every decoded frame and who plays which user (default {d['seed']})")
    parser.add_argument("--workers", type=int, default=d["workers"],
                        help="processes rendering videos; 0 = automatic: two when there are two cores and 100+ "
                             "videos, else one. The output is the same for any value (default 0)")
    return parser


def main(args: argparse.Namespace) -> Path:
    from misc.logger import log_run_header, setup_logging
    logger = setup_logging()
    log_run_header(logger, args)
    start = time.perf_counter()
    root = make_dataset(args.out, users=args.users, phones=args.phones, sessions=args.sessions,
                        frames=args.frames, size=args.size, seed=args.seed, workers=args.workers)
    meta = json.loads((root / META_NAME).read_text(encoding="utf-8"))
    counts = meta["counts"]
    logger.info("%s: %d videos (%s), %d frames of %dx%d, protocols %s, %.1f s", root, counts["total_videos"],
                ", ".join(f"{k} {v}" for k, v in counts["videos"].items()), counts["total_frames"],
                *args.size, " ".join(meta["protocols"]), time.perf_counter() - start)
    logger.info("look at %s", root / PREVIEW_NAME)
    return root


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " See the module docstring of data/synthetic.py for what it "
        "renders and what it is not (a stand-in for demos and tests, not a benchmark).",
        epilog="Layout: Train_files/ Dev_files/ Test_files/ with P_S_UU_F.avi (file 1 live, 2-3 print, 4-5 "
               "replay), Protocols/Protocol_1..4/ in the official format (only list sets whose Train, Dev and "
               "Test lists all have rows), synthetic_meta.json and synthetic_preview.jpg.",
        parents=[get_args_parser()])
    args = parser.parse_args()
    try:  # bad values get a usage message, not a traceback
        _check_args(args.users, args.phones, args.sessions, args.frames, args.size, args.seed)
    except ValueError as e:
        parser.error(str(e))
    try:
        main(args)
    except FileExistsError as e:
        parser.exit(2, f"error: {e}\n")
