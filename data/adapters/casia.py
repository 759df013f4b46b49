"""CASIA-MFSD -> an adapted root in the OULU-NPU layout, with protocol ``casia`` (train / dev / test).

    python -m data.adapters.casia --casia-root /data/CASIA-MFSD --out datasets/adapted

Release layout this adapter expects (checked; a mismatch stops it, saying what was expected and
what was found)::

    CASIA-MFSD/train_release/<n>/<file>.avi      n = 1, 2, ... one folder per subject
    CASIA-MFSD/test_release/<n>/<file>.avi

with twelve files per subject, three qualities (low, normal, high; which is which: below) of four
presentations:

    =========  ====  ======  ====
    shows      low   normal  high
    =========  ====  ======  ====
    bona fide  1     2       HR_1
    warped     3     4       HR_2     warped (bent) photo print
    cut        5     6       HR_3     photo print with the eyes cut out
    video      7     8       HR_4     video replayed on a tablet
    =========  ====  ======  ====

With ``--counts official`` there must be 20 training and 30 test subjects with all twelve files each
(600 videos: 150 bona fide, 450 attacks); ``--counts any`` accepts subsets (names are always checked).
Files that are no video (not ``.avi``, ``.mov``, ``.mp4`` or ``.mkv``) are left alone and listed in the
log; a video with a name outside the twelve ``.avi`` files stops the adapter.

Adapted ids: ``CASIA_<tr|te><nn>_<live|warped|cut|video>_<quality>``; the subject carries its release
split because the folders are numbered within each split. List labels: -1 for warped and cut photos
(print), -2 for video (replay); the generator's spoof classes are warped, cut, video.

CASIA-MFSD has no Dev set. ``--dev-fraction`` of the training subjects (seeded, subject-disjoint,
default 0.2, i.e. 4 of 20) become Dev, which sets the decision threshold: for the intra-dataset test
and for the cross-dataset test CASIA-MFSD -> Replay-Attack (HTER on Replay-Attack's test set at the
CASIA Dev threshold). The remaining training subjects train. Intra-dataset results on CASIA-MFSD are
usually given as the test-set EER (``eer_test`` in the reports).

Checked against public sources: the folders ``train_release/<n>/`` and ``test_release/<n>/`` with
subjects numbered from 1 within each (20 training, 30 test), the twelve file names and what each
shows (1, 2, HR_1 bona fide; 3, 4, HR_2 warped; 5, 6, HR_3 cut; 7, 8, HR_4 video): the bob.db.casia_fasd
package (``bob/db/casia_fasd/models.py`` and ``__init__.py``, github.com/bioidiap/bob.db.casia_fasd).

Quality names, the one point where sources disagree. bob.db.casia_fasd calls 1, 3, 5, 7 "normal" and
2, 4, 6, 8 "low". This adapter calls 1, 3, 5, 7 **low** and 2, 4, 6, 8 **normal**, following the
dataset's paper (Zhang et al., "A face antispoofing database with diverse attacks", ICB 2012) as far
as it could be checked: its table gives the low-quality camera 640x480 frames and the normal-quality
one 480x640, and the face boxes bob.db.casia_fasd ships show the odd-numbered files landscape and the
even-numbered ones portrait (issue 18). The paper's text could not be read from any stored source
here, so its resolutions are quoted from memory [M]; the orientation is the reporter's observation.
Nothing but the names depends on it: labels, instruments and splits are the same either way, and the
metadata table keeps bob's name beside ours (``quality_bob``) for comparisons with bob's lists.

Still assumptions: the HR files' Sony NEX-5 origin and the three qualities' devices (spec [M]).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: make the repository root importable
    import pathlib, sys
    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[2])

import argparse
import logging
from pathlib import Path
from typing import Dict, List

from data.adapters.common import (Problems, SourceVideo, add_common_arguments, carve_dev, check_count, dangling,
                                  log_ignored, log_summary, require_dirs, run_cli, suggest_root, visible_entries,
                                  write_adapted_root)
from data.other_benchmarks import AdaptedId
from misc.logger import log_run_header, setup_logging

log = logging.getLogger("dsdg.adapters.casia")
TAG = "CASIA"
RELEASE_SPLITS = {"train_release": ("Train", "tr"), "test_release": ("Test", "te")}
FILES = {"1": ("live", "low"), "2": ("live", "normal"), "HR_1": ("live", "high"),
         "3": ("warped", "low"), "4": ("warped", "normal"), "HR_2": ("warped", "high"),
         "5": ("cut", "low"), "6": ("cut", "normal"), "HR_3": ("cut", "high"),
         "7": ("video", "low"), "8": ("video", "normal"), "HR_4": ("video", "high")}
OFFICIAL_SUBJECTS = {"Train": 20, "Test": 30}
# bob.db.casia_fasd's quality names (odd 'normal', even 'low'), kept in the metadata table beside ours.
BOB_QUALITY = {"low": "normal", "normal": "low", "high": "high"}
VIDEO_SUFFIXES = (".avi", ".mov", ".mp4", ".mkv")  # a video under another name or format is a problem


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("CASIA-MFSD release -> adapted root (OULU-NPU layout)", add_help=False)
    p.add_argument("--casia-root", type=Path, required=True,
                   help="the CASIA-MFSD folder holding train_release/ and test_release/")
    add_common_arguments(p, carve=True)
    return p


def scan(root: Path, official: bool, problems: Problems, ignored: List[Path]) -> Dict[str, List[SourceVideo]]:
    """Every video of the release by adapted split (Train, Test), checking folder and file names; files that
    are no video go to ``ignored``."""
    videos: Dict[str, List[SourceVideo]] = {}
    expected = ", ".join(f"{n}.avi" for n in FILES)
    for split_dir in require_dirs(root, RELEASE_SPLITS, problems):
        split, prefix = RELEASE_SPLITS[split_dir.name]
        found = videos.setdefault(split, [])
        for subject_dir in visible_entries(split_dir):
            if not subject_dir.is_dir() or not subject_dir.name.isdigit() or int(subject_dir.name) < 1:
                problems.add(f"{subject_dir}: expected a subject folder named by a positive number (1, 2, ...)")
                continue
            subject = f"{prefix}{int(subject_dir.name):02d}"
            names = set()
            for p in visible_entries(subject_dir):
                if p.suffix.lower() not in VIDEO_SUFFIXES:
                    ignored.append(p)
                    continue
                if p.suffix.lower() != ".avi" or p.stem not in FILES:
                    problems.add(f"{p}: unexpected file (expected one of {expected})")
                    continue
                if dangling(p, problems):
                    continue
                names.add(p.stem)
                instrument, quality = FILES[p.stem]
                vid = AdaptedId(TAG, subject, instrument, quality)
                found.append(SourceVideo(vid, split_dir.name, p, (("file", p.name), ("quality", quality),
                                                                  ("quality_bob", BOB_QUALITY[quality]))))
            if official and len(names) != len(FILES):
                missing = ", ".join(f"{n}.avi" for n in FILES if n not in names)
                problems.add(f"{subject_dir}: expected the {len(FILES)} files {expected}; found {len(names)}, "
                             f"missing {missing}")
            elif not names:
                problems.add(f"{subject_dir}: no video")
    return videos


def main(args: argparse.Namespace) -> Dict:
    setup_logging()
    log_run_header(log, args)
    root = args.casia_root
    problems = Problems(root, "CASIA-MFSD")
    official = args.counts == "official"
    ignored: List[Path] = []
    videos = scan(root, official, problems, ignored)
    if official:
        for split, expected in OFFICIAL_SUBJECTS.items():
            check_count(problems, f"{split} subjects", expected, len({v.vid.subject for v in videos.get(split, [])}))
    problems.check(suggest_root(root, "train_release"))
    log_ignored(log, ignored, "not a video")

    dev = carve_dev([v.vid.subject for v in videos["Train"]], args.dev_fraction, args.seed, "CASIA-MFSD")
    split_of, sources = {}, {}
    for split, vids in videos.items():
        for v in vids:
            split_of[v.name] = "Dev" if v.vid.subject in dev else split
            sources[v.name] = v
    lists = {("casia", None): {s: [sources[n].vid for n in sources if split_of[n] == s]
                               for s in ("Train", "Dev", "Test")}}
    summary = {"dataset": "CASIA-MFSD", "tag": TAG, "release_root": str(root.resolve()), "out": str(args.out),
               "args": {k: str(v) for k, v in vars(args).items()}, "dev_subjects": dev,
               "ignored_files": [str(p) for p in ignored],
               "checked": ["train_release/ and test_release/ with subjects 1..20 and 1..30, the twelve file "
                           "names and what each shows (bob.db.casia_fasd)"],
               "assumptions": ["quality names: 1, 3, 5, 7 low and 2, 4, 6, 8 normal (the paper's resolutions as "
                               "remembered and the orientation of bob's face boxes; bob.db.casia_fasd names them "
                               "the other way round, kept as quality_bob)"]}
    summary = write_adapted_root(args.out, TAG, split_of, sources, lists, args.link, summary)
    log_summary(summary)
    return summary


if __name__ == "__main__":
    run_cli(main, argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__,
                                          formatter_class=argparse.RawDescriptionHelpFormatter))
