"""What the four data-preparation stages share: the prepared-root layout, completion markers,
sharding, the worker pool and the end-of-run summary.

Prepared root (``PREP_ROOT``), split names lower-case::

    <split>_images/<video>/<video>_<i>_scene.jpg      frames (data/extract_frame.py), i = 1, 2, ...
    <split>_bbox/<video>/<video>_<i>_scene.dat        face boxes (data/detect_faces.py), frames with a face only
    <split>_depth/<video>/<video>_<i>_depth1D.jpg     depth maps (data/depth.py)
    train_list/train_list_oulu_p<tag>.txt             generator list (data/make_train_list.py)
    state/<stage>/<split>/<video>.json                completion markers (bbox, depth)
    reports/                                          run summaries and lists of frames without a face

A frame folder is complete when it exists: the extractor writes ``<video>.tmp-*`` and renames it.
Boxes and depth maps are written one atomic file at a time; a video counts as finished only once
its marker is written, last, listing the frames it covered. The markers live outside the
``<split>_*`` folders so that readers of those folders see only frames, boxes and maps.

Failures. A real dataset has bad videos (a truncated ``.avi``, a video in which no frame shows a
face), and one of them must not stop the run: a failed video is logged, counted and listed in
``reports/<stage>.json`` (``video_failures``), the other videos go on, and the stage exits 0.
A stage exits 1 only for what is not about one video (``fatal`` in the report): a missing input
folder, a malformed protocol list, no video at all, or every video failed. ``--strict`` restores
stop-at-first-failure: the first failed video stops the stage, which exits 1 (scripts: ``STRICT=1``).
``python -m data.failures ROOT...`` prints what every stage's report lists as failed.
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from misc.cli import shard_spec
from misc.io import TMP_MARK, atomic_write_json, atomic_write_text, remove_stale_temporaries
from misc.progress import progress
from misc.workers import resolve_workers, workers_type

PREP_SPLITS = ("train", "dev", "test")
# The OULU-NPU release folders and the prefixes their outputs get.
RELEASE_DIRS = {"train": "Train_files", "dev": "Dev_files", "test": "Test_files"}
FRAME_SUFFIX = "_scene.jpg"
BOX_SUFFIX = "_scene.dat"
DEPTH_SUFFIX = "_depth1D.jpg"
_FRAME_RE = re.compile(r"^(?P<video>.+)_(?P<index>\d+)_scene\.jpg$")


# ----------------------------------------------------------------------------------------------
# Names and folders
# ----------------------------------------------------------------------------------------------

def stage_dir(root: Path, split: str, kind: str) -> Path:
    """``<root>/<split>_<kind>`` with kind ``images``, ``bbox`` or ``depth``."""
    return Path(root) / f"{split}_{kind}"


def frame_name(video: str, index: int) -> str:
    return f"{video}_{index}{FRAME_SUFFIX}"


def frame_index(name: str) -> int:
    """The ``i`` of ``<video>_<i>_scene.jpg`` (raises ValueError for other names)."""
    m = _FRAME_RE.match(name)
    if not m:
        raise ValueError(f"{name!r} is not a frame name of the form <video>_<i>_scene.jpg")
    return int(m.group("index"))


def box_name(frame: str) -> str:
    return frame[: -len(FRAME_SUFFIX)] + BOX_SUFFIX


def depth_name(frame: str) -> str:
    return frame[: -len(FRAME_SUFFIX)] + DEPTH_SUFFIX


def list_frames(folder: Path) -> List[str]:
    """Frame file names in ``folder``, sorted by frame number (not as strings: 10 after 9)."""
    try:
        names = [n.name for n in Path(folder).iterdir() if _FRAME_RE.match(n.name)]
    except FileNotFoundError:
        return []
    return sorted(names, key=frame_index)


def frames_with_boxes(root: Path, split: str, video: str) -> List[str]:
    """Frames of the video that have a ``.dat`` box, in frame order."""
    box_dir = stage_dir(root, split, "bbox") / video
    return [f for f in list_frames(stage_dir(root, split, "images") / video) if (box_dir / box_name(f)).is_file()]


_REDUCED_FLAGS = {1: "IMREAD_COLOR", 2: "IMREAD_REDUCED_COLOR_2", 4: "IMREAD_REDUCED_COLOR_4",
                  8: "IMREAD_REDUCED_COLOR_8"}


def read_reduced(path: Path, reduction: int = 1):
    """A BGR frame decoded at 1/``reduction`` size (1, 2, 4 or 8), or None when unreadable.

    For a JPEG, libjpeg scales the DCT blocks while decoding, several times cheaper than a full
    decode; pixel ``i`` of the result covers frame pixels ``r*i .. r*i+r-1``, so coordinates scale
    back by exactly ``reduction``.
    """
    import cv2

    return cv2.imread(str(path), getattr(cv2, _REDUCED_FLAGS[reduction]))


def list_videos(folder: Path) -> List[str]:
    """Complete video sub-folders of ``folder`` (unfinished ``*.tmp-*`` folders are left out), sorted."""
    if not Path(folder).is_dir():
        return []
    return sorted(p.name for p in Path(folder).iterdir() if p.is_dir() and TMP_MARK not in p.name)


def present_splits(root: Path, splits: Sequence[str], kind: str) -> Tuple[List[str], List[str]]:
    """(splits whose ``<split>_<kind>`` folder exists, the ones that are missing)."""
    have = [s for s in splits if stage_dir(root, s, kind).is_dir()]
    return have, [s for s in splits if s not in have]


# ----------------------------------------------------------------------------------------------
# Completion markers
# ----------------------------------------------------------------------------------------------

def marker_dir(root: Path, stage: str, split: str) -> Path:
    return Path(root) / "state" / stage / split


def marker_path(root: Path, stage: str, split: str, video: str) -> Path:
    return marker_dir(root, stage, split) / f"{video}.json"


def marked_videos(root: Path, stage: str, split: str) -> List[str]:
    """Videos with a completion marker for ``stage`` in ``split``, sorted."""
    return sorted(p.stem for p in marker_dir(root, stage, split).glob("*.json"))


def read_marker(root: Path, stage: str, split: str, video: str) -> Optional[dict]:
    """The marker's content, or None when absent or unreadable (an unreadable one means: redo)."""
    try:
        return json.loads(marker_path(root, stage, split, video).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_marker(root: Path, stage: str, split: str, video: str, content: dict) -> None:
    atomic_write_json(marker_path(root, stage, split, video), content)


def remove_marker(root: Path, stage: str, split: str, video: str) -> None:
    marker_path(root, stage, split, video).unlink(missing_ok=True)


# The per-frame output of each stage that keeps markers: (folder kind, output name of a frame, its suffix).
_OUTPUTS = {"bbox": ("bbox", box_name, BOX_SUFFIX), "depth": ("depth", depth_name, DEPTH_SUFFIX)}


def is_complete(root: Path, stage: str, split: str, video: str, frames: List[str]) -> bool:
    """The marker of ``stage`` covers exactly ``frames`` and every output it promises is on disk."""
    m = read_marker(root, stage, split, video)
    if not m or m.get("frames") != frames:
        return False
    kind, name, _ = _OUTPUTS[stage]
    out = stage_dir(root, split, kind) / video
    no_face = set(m.get("no_face", []))
    return all((out / name(f)).is_file() for f in frames if f not in no_face)


def start_video(root: Path, stage: str, split: str, video: str, frames: List[str],
                overwrite: bool) -> Tuple[Path, List[str], List[str]]:
    """Open one video for (re)work: drop its marker, delete half-written files and the outputs of
    frames that no longer exist (they would pair with nothing).

    Returns (output folder, frames still to do, warnings). Without ``overwrite`` the frames whose
    output exists are done: every output is written atomically, so an existing one is complete.
    """
    remove_marker(root, stage, split, video)  # from here on the video is unfinished until the end
    kind, name, suffix = _OUTPUTS[stage]
    out = stage_dir(root, split, kind) / video
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    wanted = {name(f) for f in frames}
    stale = [p for p in out.glob("*" + suffix) if p.name not in wanted]
    for p in stale:
        p.unlink()
    todo = frames if overwrite else [f for f in frames if not (out / name(f)).is_file()]
    warnings = [f"{out}: removed {len(stale)} outputs of frames that no longer exist"] if stale else []
    return out, todo, warnings


# ----------------------------------------------------------------------------------------------
# Arguments shared by every stage
# ----------------------------------------------------------------------------------------------

def add_common_arguments(parser: argparse.ArgumentParser, workers_help: str) -> None:
    g = parser.add_argument_group("run control")
    g.add_argument("--splits", nargs="+", choices=PREP_SPLITS, default=list(PREP_SPLITS),
                   help="splits to process (default: all three; the original prepared only train)")
    g.add_argument("--workers", type=workers_type, default=1,
                   help=workers_help + "; 'auto': one per usable CPU core. More than the usable cores is "
                                       "reduced to them (the extra processes would only compete)")
    g.add_argument("--shard", type=shard_spec, default=(1, 1), metavar="K/N",
                   help="process only the K-th of N interleaved shares of the videos, e.g. "
                        "--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT (default 1/1: all)")
    g.add_argument("--overwrite", action="store_true",
                   help="redo videos whose outputs already exist (default: skip them, so a rerun resumes)")
    g.add_argument("--strict", action="store_true",
                   help="stop at the first failed video and exit 1 (default: report and count failed videos, "
                        "go on with the others and exit 0 unless every video failed)")


def pool_workers(requested: Optional[int], log: logging.Logger) -> int:
    """The process count of a stage's ``--workers``: 'auto' (None) = the usable cores, and never more."""
    return resolve_workers(requested, preferred=None, what="worker processes", log=log, cap_explicit=True)


def take_shard(items: Sequence, shard: Tuple[int, int]) -> list:
    """Every N-th item starting at K-1: interleaved shares balance long and short videos."""
    k, n = shard
    return list(items[k - 1::n])


# ----------------------------------------------------------------------------------------------
# Per-video results and the run summary
# ----------------------------------------------------------------------------------------------

@dataclass
class VideoResult:
    """What one stage did to one video. ``status`` is ``done``, ``skipped`` or ``failed``."""
    split: str
    video: str
    status: str
    reason: str = ""
    counts: Dict[str, int] = field(default_factory=dict)
    problems: List[str] = field(default_factory=list)  # "<file>: <why>" lines, also on success
    warnings: List[str] = field(default_factory=list)


@dataclass
class Summary:
    """done / skipped / failed videos with the reasons, plus per-frame counters.

    ``failures`` lists every failure; ``video_failures`` the ones of single videos (the run goes on)
    and ``fatal`` the others (:meth:`fail`), which make the stage exit 1 (:meth:`exit_code`).
    """
    stage: str
    videos: Counter = field(default_factory=Counter)
    counts: Counter = field(default_factory=Counter)
    failures: List[str] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    video_failures: List[str] = field(default_factory=list)
    fatal: List[str] = field(default_factory=list)
    not_run: int = 0  # videos left undone because --strict stopped at a failure

    def add(self, r: VideoResult) -> None:
        self.videos[r.status] += 1
        self.counts.update(r.counts)
        if r.status == "failed":
            self.failures.append(f"{r.split}/{r.video}: {r.reason}")
            self.video_failures.append(self.failures[-1])
        self.problems.extend(r.problems)
        self.warnings.extend(r.warnings)

    def fail(self, what: str, reason: str) -> None:
        """A failure outside any video (a missing input folder, a bad protocol row): the stage exits 1."""
        self.videos["failed"] += 1
        self.failures.append(f"{what}: {reason}")
        self.fatal.append(self.failures[-1])

    @property
    def ok(self) -> bool:
        """Nothing failed at all (per-video failures included)."""
        return not self.failures and not self.problems

    @property
    def videos_seen(self) -> int:
        """Videos the stage looked at (done, skipped or failed), not counting failures outside videos."""
        return self.videos["done"] + self.videos["skipped"] + len(self.video_failures)

    def exit_code(self, strict: bool = False) -> int:
        """0 or 1 (see the module docstring): per-video failures alone give 0 unless ``strict`` or all failed."""
        if self.fatal or (strict and not self.ok):
            return 1
        if self.videos_seen == 0:
            return 1  # nothing to do at all is never a success: the input is not where it was expected
        return 1 if self.video_failures and len(self.video_failures) == self.videos_seen else 0

    def outcome(self, strict: bool = False) -> str:
        """One line saying why the stage exits as it does."""
        n_bad, seen = len(self.video_failures), self.videos_seen
        if self.fatal:
            return f"{self.stage}: FAILED ({len(self.fatal)} failure(s) not of a single video, listed above); exit 1"
        if seen == 0:
            return f"{self.stage}: FAILED: no videos found; exit 1"
        if n_bad and n_bad == seen:
            return f"{self.stage}: FAILED: every one of the {seen} videos failed; exit 1"
        if strict and not self.ok:
            left = f"; {self.not_run} video(s) not processed" if self.not_run else ""
            return f"{self.stage}: stopped at the first failure (--strict){left}; exit 1"
        if n_bad:
            return (f"{self.stage}: {n_bad} of {seen} videos failed (listed above and in the report); "
                    "the others are complete and the run goes on (--strict / STRICT=1 stops at the first)")
        return f"{self.stage}: all {seen} videos complete"

    def lines(self, limit: int = 20) -> List[str]:
        v = self.videos
        out = [f"{self.stage}: videos done {v['done']}, skipped {v['skipped']} (already complete), "
               f"failed {v['failed']}"]
        if self.counts:
            out.append("  " + ", ".join(f"{k} {n}" for k, n in sorted(self.counts.items())))
        for title, items in (("failed", self.failures), ("problems", self.problems),
                             ("warnings", self.warnings)):
            if items:
                out.append(f"  {title} ({len(items)}):")
                out += [f"    {s}" for s in items[:limit]]
                if len(items) > limit:
                    out.append(f"    ... {len(items) - limit} more in the report file")
        return out

    def as_dict(self) -> dict:
        return {"stage": self.stage, "videos": dict(self.videos), "counts": dict(self.counts),
                "failures": self.failures, "problems": self.problems, "warnings": self.warnings,
                "video_failures": self.video_failures, "fatal": self.fatal, "videos_seen": self.videos_seen,
                "not_run": self.not_run}


def run_stage(summary: Summary, fn: Callable[..., VideoResult], tasks: Sequence[tuple], workers: int, desc: str,
              log: logging.Logger, strict: bool = False) -> None:
    """Run every task (see :func:`run_videos`) into ``summary``, logging each failure as it happens.

    ``strict``: stop at the first failed video (the pool is terminated); the rest count as not run.
    """
    done = 0
    for result in run_videos(fn, tasks, workers, desc):
        summary.add(result)
        done += 1
        if result.status == "failed":
            log.warning("%s/%s: %s", result.split, result.video, result.reason)
            if strict:
                summary.not_run = len(tasks) - done
                log.error("--strict: stopping at this first failed video (%d video(s) not processed)",
                          summary.not_run)
                break


def finish_run(root: Path, summary: Summary, args: argparse.Namespace, log: logging.Logger) -> Summary:
    """Log the summary and its outcome, write ``reports/<stage>.json`` and return the summary."""
    for line in summary.lines():
        log.info("%s", line)
    log.info("report: %s", write_report(root, summary, args))
    strict = bool(getattr(args, "strict", False))
    (log.info if summary.exit_code(strict) == 0 else log.error)("%s", summary.outcome(strict))
    return summary


def exit_status(summary: Summary, args: argparse.Namespace) -> int:
    """The process exit status of a stage (see :meth:`Summary.exit_code`)."""
    return summary.exit_code(bool(getattr(args, "strict", False)))


def write_report(root: Path, summary: Summary, args: argparse.Namespace) -> Path:
    """``<root>/reports/<stage>[_shardK-of-N].json``: the summary and the arguments of this run."""
    k, n = getattr(args, "shard", (1, 1))
    name = summary.stage + (f"_shard{k}-of-{n}" if n > 1 else "") + ".json"
    path = Path(root) / "reports" / name
    atomic_write_json(path, {**summary.as_dict(), "args": {a: _plain(v) for a, v in vars(args).items()}})
    return path


def write_no_face_report(root: Path, stage: str, split: str, what: str) -> Path:
    """``reports/<stage>_no_face_<split>.txt``: ``<video>/<frame>`` of every frame the markers of
    ``stage`` list as faceless, after a ``#`` header line; rebuilt from all markers, so every shard's
    run leaves a complete list of the videos finished so far."""
    entries = []
    for video in marked_videos(root, stage, split):
        m = read_marker(root, stage, split, video) or {}
        entries += [f"{video}/{f}" for f in m.get("no_face", [])]
    path = Path(root) / "reports" / f"{stage}_no_face_{split}.txt"
    atomic_write_text(path, f"# {len(entries)} frames of {split} {what}\n" + "".join(e + "\n" for e in entries))
    return path


def _plain(v):
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, tuple):
        return list(v)
    return v


# ----------------------------------------------------------------------------------------------
# Running the per-video work
# ----------------------------------------------------------------------------------------------

def run_videos(fn: Callable[..., VideoResult], tasks: Sequence[tuple], workers: int,
               desc: str) -> Iterator[VideoResult]:
    """Apply ``fn(*task)`` to every task, in ``workers`` processes when > 1, with a progress bar.

    ``fn`` must catch its own errors and report them in the :class:`VideoResult`; an exception
    that escapes anyway is turned into a failed result here so that one bad video never stops the
    run. Results arrive in completion order.
    """
    bar = progress(total=len(tasks), desc=desc, unit="video")
    try:
        if workers <= 1 or len(tasks) <= 1:
            for t in tasks:
                yield _safe_call(fn, t)
                bar.update()
        else:
            # spawn, not fork: TensorFlow and MediaPipe hold threads that do not survive a fork.
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(workers) as pool:
                for r in pool.imap_unordered(_SafeCall(fn), tasks):
                    yield r
                    bar.update()
    finally:
        bar.close()


class _SafeCall:
    """Picklable wrapper so that pool workers report an escaped exception as a failed video."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, task):
        return _safe_call(self.fn, task)


def _safe_call(fn, task) -> VideoResult:
    try:
        return fn(*task)
    except Exception as e:  # noqa: BLE001 - reported, never swallowed silently
        split, video = task[0], task[1]
        return VideoResult(split, str(video), "failed", f"unexpected {type(e).__name__}: {e}")
