"""Data of the DUM trainer and tester: the crop root, training/evaluation datasets, and the
real/generated batch sampler.

Crop root (``CROP_ROOT``, written by ``DUM/make_dataset/crop_dataset.py`` and ``generated.py``)::

    <split>_images/<video>/<video>_<i>_scene.jpg    face crops (256 x 256 by default)
    <split>_depth/<video>/<video>_<i>_depth1D.jpg   depth labels cut with the same box (32 x 32)
    train_images/p<tag>_{0,1}_<k>/<i>_scene.jpg     generated spoof (0) / live (1) images
    train_depth/p<tag>_1_<k>/<i>_depth1D.jpg        depth maps of the generated live images
    protocols/Protocol_N/{Train,Dev,Test}[_k].txt   copies of the release lists, plus Train[_k]_g.txt

Training draws, per sample, one random frame of the video among the frames that can be used: a
bona fide video needs the frame's image *and* its depth map (the map is the label); an attack only
its image (the label is all zeros). Videos with no usable frame are reported and left out.
"""
from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from data.protocol_lists import ProtocolRow, is_generated, parse_protocol_name, protocol_path
from data.prep_common import DEPTH_SUFFIX, FRAME_SUFFIX, stage_dir
from DUM.transforms import TrainAugment, normalise_image, resize
from misc.progress import progress

log = logging.getLogger(__name__)

# Real frames are <video>_<i>_scene.jpg, generated ones <i>_scene.jpg.
_FRAME_RE = re.compile(r"^(?:.+_)?(\d+)" + re.escape(FRAME_SUFFIX) + "$")


# ----------------------------------------------------------------------------------------------
# Crop root: lists, folders, frames
# ----------------------------------------------------------------------------------------------

def protocols_dir(root: str | Path) -> Path:
    return Path(root) / "protocols"


def train_list_path(root: str | Path, protocol: str) -> Path:
    """``Train[_k]_g.txt`` (real + generated rows) if it exists, else ``Train[_k].txt``."""
    proto, sub = parse_protocol_name(protocol)
    plain = protocol_path(protocols_dir(root), proto, "Train", sub)
    with_generated = plain.with_name(plain.stem + "_g.txt")
    return with_generated if with_generated.is_file() else plain


def eval_list_path(root: str | Path, protocol: str, split: str) -> Path:
    """``<root>/protocols/Protocol_N/{Dev,Test}[_k].txt``."""
    proto, sub = parse_protocol_name(protocol)
    return protocol_path(protocols_dir(root), proto, split, sub)


@dataclass(frozen=True)
class Frame:
    index: int
    image: Path
    depth: Optional[Path]  # None when the frame has no depth map


def list_video_frames(image_dir: Path, depth_dir: Path) -> List[Frame]:
    """The frames of one video folder in frame order, each with its depth map when present."""
    try:
        names = [e.name for e in _scandir(image_dir) if _FRAME_RE.match(e.name)]
    except FileNotFoundError:
        return []
    try:
        depth_names = {e.name for e in _scandir(depth_dir)}
    except FileNotFoundError:
        depth_names = set()
    frames = []
    for name in names:
        dname = name[: -len(FRAME_SUFFIX)] + DEPTH_SUFFIX
        frames.append(Frame(int(_FRAME_RE.match(name).group(1)), image_dir / name,
                            depth_dir / dname if dname in depth_names else None))
    return sorted(frames, key=lambda f: f.index)


def _scandir(folder: Path) -> list:
    with os.scandir(folder) as it:
        return list(it)


def read_image(path: Path, size: int) -> np.ndarray:
    """BGR uint8 (size, size, 3); a file OpenCV cannot decode raises OSError naming it."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"{path}: cannot be read as an image (missing or corrupt file)")
    return resize(image, size)


def read_depth(path: Path, size: int) -> np.ndarray:
    """Grey uint8 (size, size) depth map, 0-255 (nearer = brighter)."""
    depth = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if depth is None:
        raise OSError(f"{path}: cannot be read as a depth map (missing or corrupt file)")
    return resize(depth, size)


@dataclass
class Video:
    """One protocol row and the frames of its folder that the consumer can use."""
    row: ProtocolRow
    frames: List[Frame]

    @property
    def live(self) -> bool:
        return self.row.label == 1

    @property
    def generated(self) -> bool:
        return is_generated(self.row.video)


def _index_videos(root: Path, split: str, rows: Sequence[ProtocolRow], need_live_maps: bool,
                  desc: str) -> Tuple[List[Video], List[str]]:
    """Find the usable frames of every row. Returns (videos kept, problem lines for the others)."""
    image_root, depth_root = stage_dir(root, split, "images"), stage_dir(root, split, "depth")
    videos, problems = [], []
    for row in progress(rows, desc=desc, unit="video"):
        frames = list_video_frames(image_root / row.video, depth_root / row.video)
        if need_live_maps and row.label == 1:
            unmapped = sum(f.depth is None for f in frames)
            frames = [f for f in frames if f.depth is not None]
            if unmapped and frames:
                problems.append(f"{image_root / row.video}: {unmapped} bona fide frame(s) without a depth "
                                "map are not used (a missing label is never replaced by zeros)")
        if not frames:
            what = "no frames" if not (image_root / row.video).is_dir() else "no usable frame"
            extra = " with a depth map" if need_live_maps and row.label == 1 else ""
            problems.append(f"{image_root / row.video}: {what}{extra}; video left out")
            continue
        videos.append(Video(row, frames))
    return videos, problems


def _report(problems: List[str], what: str, limit: int = 10) -> None:
    if not problems:
        return
    log.warning("%s: %d problem(s):", what, len(problems))
    for p in problems[:limit]:
        log.warning("  %s", p)
    if len(problems) > limit:
        log.warning("  ... and %d more", len(problems) - limit)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------

class DUMTrainDataset(Dataset):
    """Training samples: one random usable frame per (row, seed) key.

    ``dataset[(i, seed)]`` returns {'image': (3, S, S) float32 normalised, 'map': (M, M) float32 in
    [0, 1] (depth / 255 for bona fide, zeros for attacks), 'generated': bool, 'live': bool,
    'index': i}. All randomness (frame choice, augmentation) comes from ``seed``.

    ``preload_mb`` > 0 decodes every usable frame into memory first when they fit in that many
    MiB (small crop roots, e.g. the 64 px demo), so that loading costs nothing during training.
    """

    def __init__(self, root: str | Path, rows: Sequence[ProtocolRow], image_size: int = 256, map_size: int = 32,
                 augment: Optional[TrainAugment] = None, preload_mb: float = 0.0):
        self.root = Path(root)
        self.image_size, self.map_size = image_size, map_size
        self.augment = augment
        self.videos, problems = _index_videos(self.root, "train", rows, need_live_maps=True, desc="index train")
        _report(problems, "training list")
        if not self.videos:
            raise RuntimeError(f"{self.root}: no training video has a usable frame (see the problems above)")
        self.problems = problems
        self.generated = np.array([v.generated for v in self.videos], dtype=bool)
        self._images: Optional[np.ndarray] = None
        self._maps: Optional[np.ndarray] = None
        self._offsets: Optional[List[int]] = None
        if preload_mb > 0:
            self._maybe_preload(preload_mb)

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def preloaded(self) -> bool:
        return self._images is not None

    def _maybe_preload(self, budget_mb: float) -> None:
        n = sum(len(v.frames) for v in self.videos)
        need_mb = n * (self.image_size ** 2 * 3 + self.map_size ** 2) / 2 ** 20
        if need_mb > budget_mb:
            log.info("not preloading %d training frames: %.0f MiB > --preload-mb %.0f", n, need_mb, budget_mb)
            return
        images = np.empty((n, self.image_size, self.image_size, 3), np.uint8)
        maps = np.zeros((n, self.map_size, self.map_size), np.uint8)
        offsets, k = [], 0
        bar = progress(total=n, desc="preload train", unit="frame")
        for v in self.videos:
            offsets.append(k)
            for f in v.frames:
                images[k] = read_image(f.image, self.image_size)
                if v.live:
                    maps[k] = read_depth(f.depth, self.map_size)
                k += 1
                bar.update()
        bar.close()
        self._images, self._maps, self._offsets = images, maps, offsets
        log.info("preloaded %d training frames (%.0f MiB)", n, need_mb)

    def _load(self, i: int, j: int) -> Tuple[np.ndarray, np.ndarray]:
        """Frame j of video i as (BGR uint8 image, float32 label map)."""
        video = self.videos[i]
        if self._images is not None:
            k = self._offsets[i] + j
            image, depth = self._images[k].copy(), self._maps[k]
        else:
            frame = video.frames[j]
            image = read_image(frame.image, self.image_size)
            depth = read_depth(frame.depth, self.map_size) if video.live else None
        if video.live:
            label = depth.astype(np.float32) / 255.0
        else:  # attacks (real or generated) have no depth: the label is a flat zero map
            label = np.zeros((self.map_size, self.map_size), np.float32)
        return image, label

    def __getitem__(self, key: Tuple[int, int]) -> Dict[str, object]:
        i, seed = key
        rng = np.random.default_rng(seed)
        video = self.videos[i]
        j = int(rng.integers(len(video.frames)))
        image, label = self._load(i, j)
        if self.augment is not None:
            image, label = self.augment(image, label, rng)
        return {"image": normalise_image(image), "map": torch.from_numpy(np.ascontiguousarray(label)),
                "generated": video.generated, "live": video.live, "index": i}


class RealGeneratedBatchSampler(Sampler):
    """Global batches of ``batch_size`` keys ``(row, seed)``: ``int(batch_size * real_ratio)`` real
    rows and the rest generated ones (all real when there are no generated rows), each process
    yielding its share.

    Real rows go through a fresh random permutation each epoch (cycled when the last batch needs
    more), so each real row is drawn once per epoch however many rows there are; the original
    paired adjacent rows and dropped the last one of an odd count. Generated rows are cycled the
    same way. An epoch has ceil(#real / real per batch) batches unless ``iters_per_epoch`` says
    otherwise. Each key also carries a per-sample seed for the frame choice and the augmentation.

    Everything is a function of (seed, epoch): call :meth:`set_epoch` before each epoch.

    Distributed training: ``batch_size`` is the *global* batch (the paper's 64 = 48 real + 16
    generated), whatever the number of processes. Every rank builds the same global batches and
    takes the ``rank``-th equal slice of the real part and of the generated part (keys, seeds and
    all), so the ranks' batches of a step are disjoint and together are exactly the batch a single
    process draws at that step: the epoch length, the data order and the per-group loss means (the
    loss averages each group over its samples, and DDP averages the ranks' gradients) do not depend
    on the number of processes. Both parts must therefore be multiples of ``world_size``.
    """

    def __init__(self, generated: Sequence[bool], batch_size: int = 64, real_ratio: float = 0.75, seed: int = 0,
                 rank: int = 0, world_size: int = 1, iters_per_epoch: Optional[int] = None):
        generated = np.asarray(generated, dtype=bool)
        self.real = np.flatnonzero(~generated)
        self.gen = np.flatnonzero(generated)
        if self.real.size == 0:
            raise ValueError("the training list has no real rows")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.n_real, self.n_gen = self.split(batch_size, real_ratio, self.gen.size > 0)
        if self.n_real % world_size or self.n_gen % world_size:
            raise ValueError(
                f"a global batch of {batch_size} ({self.n_real} real + {self.n_gen} generated) does not split evenly "
                f"over {world_size} processes: both parts must be multiples of {world_size} "
                f"(the nearest batch size that does is "
                f"{self.divisible_batch(batch_size, real_ratio, world_size, self.gen.size > 0)})")
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.local_real, self.local_gen = self.n_real // world_size, self.n_gen // world_size
        self.iters = iters_per_epoch or math.ceil(self.real.size / self.n_real)
        self.epoch = 0

    @staticmethod
    def split(batch_size: int, real_ratio: float, has_generated: bool = True) -> Tuple[int, int]:
        """(real, generated) samples of a global batch."""
        if not has_generated:
            return batch_size, 0
        n_real = int(batch_size * real_ratio)
        if not 1 <= n_real <= batch_size:
            raise ValueError(f"batch size {batch_size} x real ratio {real_ratio} gives {n_real} "
                             "real samples per batch; need at least 1")
        return n_real, batch_size - n_real

    @classmethod
    def divisible_batch(cls, batch_size: int, real_ratio: float, world_size: int, has_generated: bool = True) -> int:
        """The smallest batch size >= ``batch_size`` whose real and generated parts split over ``world_size``."""
        b = max(batch_size, world_size)
        while any(n % world_size for n in cls.split(b, real_ratio, has_generated)):
            b += 1
        return b

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.iters

    @staticmethod
    def _stream(rows: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` rows: concatenated fresh permutations of ``rows``."""
        if count == 0:
            return rows[:0]
        reps = math.ceil(count / rows.size)
        return np.concatenate([rng.permutation(rows) for _ in range(reps)])[:count]

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        real = self._stream(self.real, self.iters * self.n_real, rng).reshape(self.iters, self.n_real)
        gen = self._stream(self.gen, self.iters * self.n_gen, rng).reshape(self.iters, self.n_gen)
        seeds = rng.integers(0, 2 ** 63 - 1, size=(self.iters, self.batch_size), dtype=np.int64)
        real_seeds, gen_seeds = seeds[:, :self.n_real], seeds[:, self.n_real:]
        # This rank's slices of the real part and of the generated part (seeds follow their rows).
        r = slice(self.rank * self.local_real, (self.rank + 1) * self.local_real)
        g = slice(self.rank * self.local_gen, (self.rank + 1) * self.local_gen)
        for t in range(self.iters):
            rows = np.concatenate([real[t, r], gen[t, g]])
            keys = np.concatenate([real_seeds[t, r], gen_seeds[t, g]])
            yield [(int(i), int(z)) for i, z in zip(rows, keys)]


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------

def pick_evenly(n: int, k: int) -> List[int]:
    """k indices spread evenly over range(n) (all of them when k <= 0 or k >= n)."""
    if k <= 0 or k >= n:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})


class VideoFramesDataset(Dataset):
    """The frames of the videos of a Dev/Test list, flattened (one item per frame).

    Each video contributes all its frames or ``frames_per_video`` evenly spaced ones. Item:
    {'image': (3, S, S) float32 normalised, 'depth': (M, M) float32 on the 0-255 scale (zeros
    when the frame has no map), 'has_depth': bool, 'video': index into ``videos``}. Videos
    without any frame are listed in ``missing`` (with the reason) and have no items; ``listed``
    holds every video id of the list and ``missing_ids`` those without frames, in list order.
    """

    def __init__(self, root: str | Path, split: str, rows: Sequence[ProtocolRow], image_size: int = 256,
                 map_size: int = 32, frames_per_video: int = 0):
        self.root, self.split = Path(root), split
        self.image_size, self.map_size = image_size, map_size
        self.videos, self.missing = _index_videos(self.root, split, rows, need_live_maps=False,
                                                  desc=f"index {split}")
        _report(self.missing, f"{split} list")
        self.listed: List[str] = [r.video for r in rows]
        found = {v.row.video for v in self.videos}
        self.missing_ids: List[str] = [v for v in self.listed if v not in found]
        image_root = stage_dir(self.root, split, "images")
        self.missing_reasons: Dict[str, str] = {
            v: (f"no frame in {image_root / v}" if (image_root / v).is_dir() else f"no folder {image_root / v} "
                "(not extracted, no face in any frame, or not cropped; see the stages' reports)")
            for v in self.missing_ids}
        self.items: List[Tuple[int, Frame]] = []
        for vi, v in enumerate(self.videos):
            self.items += [(vi, v.frames[j]) for j in pick_evenly(len(v.frames), frames_per_video)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Dict[str, object]:
        vi, frame = self.items[i]
        image = read_image(frame.image, self.image_size)
        if frame.depth is not None:
            depth = torch.from_numpy(read_depth(frame.depth, self.map_size).astype(np.float32))
        else:
            depth = torch.zeros(self.map_size, self.map_size)
        return {"image": normalise_image(image), "depth": depth, "has_depth": frame.depth is not None, "video": vi}
