"""CASIA-MFSD -> an adapted root in the OULU-NPU layout, with protocol ``casia`` (train / dev / test).

    python -m data.adapters.casia --casia-root /data/CASIA-MFSD --out datasets/adapted

Release layout this adapter expects (checked; a mismatch stops it, saying what was expected and
what was found)::

    CASIA-MFSD/train_release/<n>/<file>.avi      n = 1, 2, ... one folder per subject
    CASIA-MFSD/test_release/<n>/<file>.avi

with twelve files per subject, three qualities (low, normal, high) of four presentations:

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

Adapted ids: ``CASIA_<tr|te><nn>_<live|warped|cut|video>_<quality>``; the subject carries its release
split because the folders are numbered within each split. List labels: -1 for warped and cut photos
(print), -2 for video (replay); the generator's spoof classes are warped, cut, video.

CASIA-MFSD has no Dev set. ``--dev-fraction`` of the training subjects (seeded, subject-disjoint,
default 0.2, i.e. 4 of 20) become Dev, which sets the decision threshold: for the intra-dataset test
and for the cross-dataset test CASIA-MFSD -> Replay-Attack (HTER on Replay-Attack's test set at the
CASIA Dev threshold). The remaining training subjects train. Intra-dataset results on CASIA-MFSD are
usually given as the test-set EER (``eer_test`` in the reports).

Unverified assumptions (spec [M]): the folder names, the meaning of each file name (which numbers are
warped vs cut and low vs normal quality) and the 20/30 split. The file-to-kind grouping (1, 2, HR_1
bona fide; 3-6, HR_2, HR_3 print; 7, 8, HR_4 video) agrees with third-party loaders.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: make the repository root importable
    import pathlib, sys
    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[2])

import argparse
import logging
from pathlib import Path
from typing import Dict, List

from data.adapters.common import (Problems, SourceVideo, add_common_arguments, carve_dev, check_count, log_summary,
                                  require_dirs, run_cli, suggest_root, visible_entries, write_adapted_root)
from data.protocols import AdaptedId
from misc.logger import log_run_header, setup_logging

log = logging.getLogger("dsdg.adapters.casia")
TAG = "CASIA"
RELEASE_SPLITS = {"train_release": ("Train", "tr"), "test_release": ("Test", "te")}
FILES = {"1": ("live", "low"), "2": ("live", "normal"), "HR_1": ("live", "high"),
         "3": ("warped", "low"), "4": ("warped", "normal"), "HR_2": ("warped", "high"),
         "5": ("cut", "low"), "6": ("cut", "normal"), "HR_3": ("cut", "high"),
         "7": ("video", "low"), "8": ("video", "normal"), "HR_4": ("video", "high")}
OFFICIAL_SUBJECTS = {"Train": 20, "Test": 30}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("CASIA-MFSD release -> adapted root (OULU-NPU layout)", add_help=False)
    p.add_argument("--casia-root", type=Path, required=True,
                   help="the CASIA-MFSD folder holding train_release/ and test_release/")
    add_common_arguments(p, carve=True)
    return p


def scan(root: Path, official: bool, problems: Problems) -> Dict[str, List[SourceVideo]]:
    """Every video of the release by adapted split (Train, Test), checking folder and file names."""
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
                if p.suffix.lower() != ".avi" or p.stem not in FILES:
                    problems.add(f"{p}: unexpected file (expected one of {expected})")
                    continue
                names.add(p.stem)
                instrument, quality = FILES[p.stem]
                vid = AdaptedId(TAG, subject, instrument, quality)
                found.append(SourceVideo(vid, split_dir.name, p, (("file", p.name), ("quality", quality))))
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
    videos = scan(root, official, problems)
    if official:
        for split, expected in OFFICIAL_SUBJECTS.items():
            check_count(problems, f"{split} subjects", expected, len({v.vid.subject for v in videos.get(split, [])}))
    problems.check(suggest_root(root, "train_release"))

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
               "assumptions": ["train_release/ and test_release/ with numbered subject folders",
                               "files 1, 2, HR_1 bona fide; 3, 4, HR_2 warped; 5, 6, HR_3 cut; 7, 8, HR_4 video "
                               "(low, normal, high quality)", "20 train / 30 test subjects"]}
    summary = write_adapted_root(args.out, TAG, split_of, sources, lists, args.link, summary)
    log_summary(summary)
    return summary


if __name__ == "__main__":
    run_cli(main, argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__,
                                          formatter_class=argparse.RawDescriptionHelpFormatter))
