"""The DSDG generator's training data: spoof frames paired with live frames of the same subject.

The generator list (``<PREP_ROOT>/train_list/train_list_oulu_p<tag>.txt``) has one row per frame::

    <video>/<frame file> <subject> <live_flag> <file_digit>      e.g. 1_1_01_2/1_1_01_2_53_scene.jpg 01 0 2

with frames under ``<PREP_ROOT>/train_images/`` and their face boxes under ``<PREP_ROOT>/train_bbox/``
(same relative path, ``.dat`` instead of ``.jpg``). One sample per spoof row: the spoof frame, a live
frame of the same subject drawn at random (any phone or session), and the spoof type (file digit
2..5 -> class 0..3: print1, print2, replay1, replay2). Lists of the adapted datasets use the same
column for 2 + the dataset's spoof class (:mod:`data.other_benchmarks`; SiW has six classes, so train it with
``--num-spoof-types`` equal to :attr:`GenerationDataset.num_spoof_types` or more). Both faces are
cropped with their box at
``face_scale`` 1.0 (the tight MTCNN box), resized to ``image_size`` with bilinear interpolation and
returned as RGB in [0, 1], with no augmentation, as in the original.

Robustness. Every row is checked when the dataset is built: a malformed row, a missing frame, a
missing or unreadable box, or a spoof row whose subject has no live row is skipped, and each is
listed (file:line and reason) in :attr:`GenerationDataset.problems`. A frame that exists but cannot
be decoded is only found while reading; it is then replaced by the next readable sample (and logged)
rather than stopping the epoch.

Reproducibility. The live partner of sample ``i`` is drawn from a generator seeded with
``(seed, epoch, i)``; call :meth:`set_epoch` each epoch. Pairing therefore does not depend on worker
processes or on where a run was resumed.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from data.box_files import FaceBox, crop, read_box
from data.prep_common import FRAME_SUFFIX, box_name
from data.other_benchmarks import AdaptedId, is_adapted_id
from misc.progress import progress

log = logging.getLogger("dsdg.data")

# File digit -> spoof-type class (digit - 2). Digit 1 is the bona fide video. OULU-NPU's digits are
# 2..5; the adapted datasets continue the same rule (data.other_benchmarks.AdaptedId.spoof_code).
SPOOF_DIGITS = (2, 3, 4, 5)
FIRST_SPOOF_DIGIT = 2
_MAX_LOGGED_PROBLEMS = 20


class GenerationListError(ValueError):
    """The generator list is unusable as a whole (missing file, no usable spoof/live pair)."""


@dataclass(frozen=True)
class ListRow:
    """One row of the generator list; ``frame`` is relative to the image root."""
    frame: str
    subject: str
    live: bool
    digit: int
    where: str  # "file:line", for messages

    @property
    def spoof_type(self) -> int:
        return self.digit - FIRST_SPOOF_DIGIT


def parse_list_row(line: str, where: str) -> ListRow:
    """Parse ``<video>/<frame> <subject> <live_flag> <digit>``; raise ValueError saying what is wrong."""
    parts = line.split()
    if len(parts) != 4:
        raise ValueError(f"expected 4 space-separated fields '<video>/<frame> <subject> <live_flag> <digit>', "
                         f"got {len(parts)}: {line.strip()!r}")
    frame, subject, flag, digit = parts
    if flag not in ("0", "1"):
        raise ValueError(f"live flag must be 0 or 1, got {flag!r}")
    try:
        d = int(digit)
    except ValueError:
        raise ValueError(f"file digit must be an integer 1..5, got {digit!r}") from None
    live = flag == "1"
    if live and d != 1:
        raise ValueError(f"live row (flag 1) must have file digit 1, got {d}")
    if not live:
        _check_spoof_digit(frame.split("/")[0], d)
    return ListRow(frame, subject, live, d, where)


def _check_spoof_digit(video: str, digit: int) -> None:
    """Adapted ids carry their instrument's spoof code (2, 3, ...); every other spoof row a digit 2..5."""
    if is_adapted_id(video):
        code = AdaptedId.parse(video).spoof_code
        if digit != code:
            raise ValueError(f"spoof row of {video} must have spoof code {code} (its instrument's), got {digit}")
    elif digit not in SPOOF_DIGITS:
        raise ValueError(f"spoof row (flag 0) must have file digit 2..5, got {digit}")


def read_generation_list(path: str | Path) -> Tuple[List[ListRow], List[str]]:
    """All well-formed rows of a generator list, and one ``file:line: reason`` message per bad row."""
    path = Path(path)
    if not path.is_file():
        raise GenerationListError(f"{path}: generator training list not found (make it with data/make_train_list.py)")
    rows, problems = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rows.append(parse_list_row(line, where))
            except ValueError as e:
                problems.append(f"{where}: {e}")
    return rows, problems


def box_path_for(frame: str, bbox_root: Path) -> Path:
    """``<video>/<video>_<i>_scene.jpg`` -> ``<bbox_root>/<video>/<video>_<i>_scene.dat``."""
    rel = Path(frame)
    name = box_name(rel.name) if rel.name.endswith(FRAME_SUFFIX) else rel.with_suffix(".dat").name
    return bbox_root / rel.parent / name


def load_face(image_path: Path, box: FaceBox, image_size: int, face_scale: float = 1.0) -> Optional[np.ndarray]:
    """Read a frame, crop its face box and resize: (S, S, 3) RGB uint8, or None if the frame is unreadable
    or the box lies outside it."""
    bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    try:
        face = crop(bgr, box, face_scale)
    except ValueError:  # box outside this image (a box of another frame size or format)
        return None
    face = cv2.resize(face, (image_size, image_size), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(face, cv2.COLOR_BGR2RGB)


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().div_(255.0)


class GenerationDataset(Dataset):
    """Spoof frames of the generator list, each with a random live frame of the same subject.

    Item: ``{"spoof": (3, S, S), "live": (3, S, S)`` float in [0, 1], ``"type": int64`` class 0..3,
    ``"index": int64}``.
    """

    def __init__(self, list_path: str | Path, image_root: str | Path, bbox_root: str | Path,
                 image_size: int = 256, bbox_format: str = "mtcnn", face_scale: float = 1.0,
                 seed: int = 0, show_progress: bool = True):
        self.list_path = Path(list_path)
        self.image_root, self.bbox_root = Path(image_root), Path(bbox_root)
        self.image_size, self.bbox_format, self.face_scale = image_size, bbox_format, face_scale
        self.seed, self.epoch = seed, 0
        rows, self.problems = read_generation_list(self.list_path)
        self.spoof: List[ListRow] = []
        self.live_of_subject: Dict[str, List[ListRow]] = defaultdict(list)
        self.boxes: Dict[str, FaceBox] = {}
        for row in progress(rows, desc="checking frames and boxes", unit="row",
                            disable=None if show_progress else True):
            if self._check(row):
                (self.live_of_subject[row.subject] if row.live else self.spoof).append(row)
        unpaired = [r for r in self.spoof if r.subject not in self.live_of_subject]
        for r in unpaired:
            self.problems.append(f"{r.where}: subject {r.subject} has no usable live frame to pair "
                                 f"{r.frame} with")
        self.spoof = [r for r in self.spoof if r.subject in self.live_of_subject]
        self.live_of_subject = dict(self.live_of_subject)
        self._report(len(rows))
        if not self.spoof:
            raise GenerationListError(f"{self.list_path}: no usable spoof/live pair (see the problems logged above; "
                                      f"images under {self.image_root}, boxes under {self.bbox_root})")

    def _check(self, row: ListRow) -> bool:
        image = self.image_root / row.frame
        if not image.is_file():
            self.problems.append(f"{row.where}: frame {image} not found")
            return False
        box_file = box_path_for(row.frame, self.bbox_root)
        if not box_file.is_file():
            self.problems.append(f"{row.where}: face box {box_file} not found (no face detected in this frame?)")
            return False
        try:
            self.boxes[row.frame] = read_box(box_file, self.bbox_format)
        except Exception as e:  # BoxFormatError, or an OSError reading the file
            self.problems.append(f"{row.where}: face box {box_file} unreadable ({e})")
            return False
        return True

    def _report(self, num_rows: int) -> None:
        for p in self.problems[:_MAX_LOGGED_PROBLEMS]:
            log.warning("skipped %s", p)
        if len(self.problems) > _MAX_LOGGED_PROBLEMS:
            log.warning("... and %d more skipped rows", len(self.problems) - _MAX_LOGGED_PROBLEMS)
        num_live = sum(len(v) for v in self.live_of_subject.values())
        log.info("%s: %d rows, %d spoof samples, %d live frames of %d subjects, %d rows skipped",
                 self.list_path, num_rows, len(self.spoof), num_live, len(self.live_of_subject), len(self.problems))

    @property
    def num_spoof_types(self) -> int:
        """Spoof-type classes the list needs (largest class + 1): 4 for OULU-NPU, up to 6 for SiW."""
        return 1 + max(r.spoof_type for r in self.spoof)

    def set_epoch(self, epoch: int) -> None:
        """Select the live-partner draw of this epoch (reproducible, independent of workers)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.spoof)

    def live_partner(self, index: int) -> int:
        """Position, in its subject's live list, of the live frame paired with spoof sample ``index`` this epoch."""
        lives = self.live_of_subject[self.spoof[index].subject]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        return int(rng.integers(len(lives)))

    def _face(self, row: ListRow) -> Optional[np.ndarray]:
        face = load_face(self.image_root / row.frame, self.boxes[row.frame], self.image_size, self.face_scale)
        if face is None:
            log.warning("%s: could not read or crop frame %s; using another sample", row.where,
                        self.image_root / row.frame)
        return face

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        # A frame that exists but does not decode is replaced by the next sample, so one bad JPEG
        # cannot stop an epoch; after a full cycle without a readable pair the data is hopeless.
        n = len(self.spoof)
        for step in range(n):
            i = (index + step) % n
            spoof_row = self.spoof[i]
            spoof = self._face(spoof_row)
            if spoof is None:
                continue
            live = self._readable_live(i)
            if live is None:
                continue
            return {"spoof": to_tensor(spoof), "live": to_tensor(live),
                    "type": torch.tensor(spoof_row.spoof_type, dtype=torch.int64),
                    "index": torch.tensor(index, dtype=torch.int64)}
        raise RuntimeError(f"{self.list_path}: no frame pair could be read (images under {self.image_root})")

    def _readable_live(self, index: int) -> Optional[np.ndarray]:
        """The drawn live partner, or the subject's next live frames in list order if it does not decode."""
        lives = self.live_of_subject[self.spoof[index].subject]
        first = self.live_partner(index)
        for k in range(len(lives)):
            face = self._face(lives[(first + k) % len(lives)])
            if face is not None:
                return face
        return None
