"""SiW (Spoof in the Wild, MSU) -> an adapted root in the OULU-NPU layout, with SiW protocols 1-3.

    python -m data.adapters.siw --siw-root /data/SiW_release --out datasets/adapted

Release layout this adapter expects (every point is checked, and a mismatch stops it with a message
saying what was expected and what was found)::

    SiW_release/Train/live/<subject>/<name>.mov     + <name>.face, one face box per frame
    SiW_release/Train/spoof/<subject>/<name>.mov    + <name>.face
    SiW_release/Test/live/..., SiW_release/Test/spoof/...

``<name>`` is ``SSS-E-T-M-N``: subject (three digits, the folder's name), sensor, type (1 live,
2 print, 3 replay), medium (print 1-2, replay 1-4) and session, optionally followed by ``.m``: sixteen
Test live videos of subjects 153, 154, 158 and 161 (sensor 2) are ``NNN-2-1-M-S.m.mov`` in the
release. Live videos sit under ``live/`` and attacks under ``spoof/``; no subject is in both Train
and Test. With ``--counts official`` there must be 90 Train and 75 Test subjects; the video totals
are reported against the public file lists' 1,313 live and 3,156 spoof videos (a copy missing single
videos still adapts). Files that are neither videos (``.mov``, ``.mp4``) nor ``.face`` files are
left alone and listed in the log; a video whose name breaks the pattern stops the adapter.

Adapted ids: ``SIW_<subject>_<instrument>_<clip>``, instrument ``live``, ``print1..2`` or
``replay1..4`` (the generator's six spoof classes; list labels -1 print, -2 replay), clip the name
with ``.`` written ``-`` (``153-2-1-1-1.m`` -> ``153-2-1-1-1-m``, distinct from ``153-2-1-1-1``).

SiW has no Dev set: ``--dev-fraction`` of the Train subjects (seeded, default 0.2) become Dev, used
for the decision threshold only. Protocols (lists under ``Protocols/Protocol_siw_*``):

* ``siw_1``: every video; training uses only the **first 60 frames** of each Train video, which the
  stages implement (``make_train_list.py --first-frames 60``, ``crop_dataset.py --train-first-frames
  60`` into a crop root of its own); Dev and Test use all frames.
* ``siw_2_k`` (k = 1..4): leave one replay medium out. Train/Dev: live + replay media other than k;
  Test: live + replay medium k. Print attacks are not used.
* ``siw_3_k``: cross attack type. k = 1: Train/Dev live + print, Test live + replay; k = 2: the
  reverse. Protocols 2 and 3 report the mean and standard deviation over their folds.

Checked against public sources:

* the folder layout, every name (``.m`` variant included) and the 90 / 75 subject split: the file lists
  of the bob.db.siw package (``bob/db/siw/lists/{train,dev,eval}_files.lst`` and its ``Protocol_*``
  lists, github.com/bioidiap/bob.db.siw); with the ``.m`` names accepted, the subjects, the 1,313 live
  and 3,156 spoof videos and every protocol split (1, 2_1-2_4, 3_1, 3_2; Train+Dev and Test; live and
  attack, instruments included) equal those lists as sets (issue 18);
* the name fields (subject 001-165, sensor, type, medium, session), ``.mov`` or ``.mp4``, and the
  ``.face`` file beside each video with one ``x1 y1 x2 y2`` box per frame, ``0 0 0 0`` for no face: the
  dataset's page, cvlab.cse.msu.edu/siw-spoof-in-the-wild-database.html.

Still assumptions: what type 2/3 and media 1-2 / 1-4 show (print / replay devices; the page's figure
explaining them was not readable), the protocol definitions beyond the bob.db.siw lists' membership
(training on the first 60 frames in protocol 1, spec [M]), the paper's 1,320 / 3,300 totals (the page
says 4,478 videos, the lists hold 4,469), and what the ``.m`` suffix means (it is kept in the clip).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: make the repository root importable
    import pathlib, sys
    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[2])

import argparse
import logging
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from data.adapters.common import (Problems, SourceVideo, add_common_arguments, carve_dev, check_count,
                                  check_disjoint_subjects, dangling, log_ignored, log_summary, require_dirs, run_cli,
                                  suggest_root, visible_entries, write_adapted_root)
from data.other_benchmarks import AdaptedId
from misc.cli import bool_flag
from misc.logger import log_run_header, setup_logging

log = logging.getLogger("dsdg.adapters.siw")
TAG = "SIW"
RELEASE_SPLITS = {"Train": "Train", "Test": "Test"}  # release folder -> adapted split (Dev is carved)
# SSS-E-T-M-N, and the '.m' variant the release uses for 16 Test live videos (bob.db.siw eval_files.lst).
NAME_RE = re.compile(r"^(\d{3})-(\d)-([123])-(\d)-(\d)(\.m)?$")
NAME_HELP = ("SSS-E-T-M-N[.m] (subject, sensor, type 1 live/2 print/3 replay, medium, session), e.g. 032-1-3-2-1 "
             "or 153-2-1-1-1.m")
VIDEO_SUFFIXES = (".mov", ".mp4")  # the dataset's page: "*.mov (or *.mp4)"; the public lists hold .mov only
MEDIA = {"2": range(1, 3), "3": range(1, 5)}  # print media 1-2, replay media 1-4
OFFICIAL_SUBJECTS = {"Train": 90, "Test": 75}
LISTED_VIDEOS = {"live": 1313, "spoof": 3156}  # the bob.db.siw file lists (the paper's table: 1,320 / 3,300)
FIRST_FRAMES_P1 = 60


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("SiW release -> adapted root (OULU-NPU layout) with protocols 1-3", add_help=False)
    p.add_argument("--siw-root", type=Path, required=True, help="the SiW release folder holding Train/ and Test/")
    p.add_argument("--face-files", type=bool_flag, default=True,
                   help="require the release's <name>.face box file beside every video (default true; "
                        "data/import_released_boxes.py turns them into .dat boxes instead of running MTCNN)")
    add_common_arguments(p, carve=True)
    return p


def parse_name(stem: str) -> Dict[str, str]:
    """The fields of a SiW video name; ValueError saying what is wrong."""
    m = NAME_RE.match(stem)
    if not m:
        raise ValueError(f"name {stem!r} does not follow {NAME_HELP}")
    subject, sensor, kind, medium, session, variant = m.groups()
    if kind in MEDIA and int(medium) not in MEDIA[kind]:
        what = "print" if kind == "2" else "replay"
        raise ValueError(f"name {stem!r}: {what} medium {medium} outside {MEDIA[kind].start}..{MEDIA[kind].stop - 1}")
    return {"subject": subject, "sensor": sensor, "type": kind, "medium": medium, "session": session,
            "variant": (variant or "").lstrip(".")}


def clip_of(stem: str) -> str:
    """The adapted id's clip: the name with its dots written as dashes (ids allow letters, digits and '-')."""
    return stem.replace(".", "-")


def instrument_of(fields: Dict[str, str]) -> str:
    return {"1": "live", "2": f"print{fields['medium']}", "3": f"replay{fields['medium']}"}[fields["type"]]


def scan(root: Path, face_files: bool, problems: Problems, ignored: List[Path]) -> Dict[str, List[SourceVideo]]:
    """Every video of the release by release split, checking folders, names and .face files; files that are
    neither videos nor .face files go to ``ignored``."""
    videos: Dict[str, List[SourceVideo]] = {}
    for split_dir in require_dirs(root, RELEASE_SPLITS, problems):
        found = videos.setdefault(split_dir.name, [])
        for kind_dir in require_dirs(split_dir, ("live", "spoof"), problems):
            for subject_dir in visible_entries(kind_dir):
                if not subject_dir.is_dir() or not re.fullmatch(r"\d{3}", subject_dir.name):
                    problems.add(f"{subject_dir}: expected a three-digit subject folder (e.g. 032)")
                    continue
                found += _scan_subject(subject_dir, kind_dir.name, face_files, problems, ignored)
    return videos


def _scan_subject(folder: Path, kind: str, face_files: bool, problems: Problems,
                  ignored: List[Path]) -> List[SourceVideo]:
    out = []
    entries = visible_entries(folder)
    movs = [p for p in entries if p.suffix.lower() in VIDEO_SUFFIXES]
    faces = {p.stem for p in entries if p.suffix.lower() == ".face"}
    ignored += [p for p in entries if p not in movs and p.suffix.lower() != ".face"]
    if not movs:
        problems.add(f"{folder}: no .mov video")
    clips: Dict[str, Path] = {}
    for p in movs:
        if dangling(p, problems):
            continue
        try:
            fields = parse_name(p.stem)
        except ValueError as e:
            problems.add(f"{p}: {e}")
            continue
        if fields["subject"] != folder.name:
            problems.add(f"{p}: subject {fields['subject']} of the name differs from its folder {folder.name}")
        if (fields["type"] == "1") != (kind == "live"):
            problems.add(f"{p}: type {fields['type']} ({instrument_of(fields)}) does not belong in {kind}/")
        if face_files and p.stem not in faces:
            problems.add(f"{p.with_suffix('.face')}: missing .face box file of {p.name} "
                         "(pass --face-files false to run MTCNN instead)")
        if clip_of(p.stem) in clips:  # 032-1-1-1-1.mov beside 032-1-1-1-1.mp4: one id for two files
            problems.add(f"{p}: same video as {clips[clip_of(p.stem)].name} (one name, two files)")
            continue
        clips[clip_of(p.stem)] = p
        vid = AdaptedId(TAG, fields["subject"], instrument_of(fields), clip_of(p.stem))
        extra = tuple((k, fields[k]) for k in ("sensor", "medium", "session", "variant"))
        out.append(SourceVideo(vid, folder.parent.parent.name, p, extra))
    return out


def check_counts(videos: Dict[str, List[SourceVideo]], problems: Problems) -> Dict[str, int]:
    """Official subject counts (a mismatch is a problem); the video totals are returned for the report."""
    for split, expected in OFFICIAL_SUBJECTS.items():
        found = {v.vid.subject for v in videos.get(split, [])}
        check_count(problems, f"{split} subjects", expected, len(found))
    every = [v for vids in videos.values() for v in vids]
    totals = {"live": sum(v.vid.is_live for v in every), "spoof": sum(not v.vid.is_live for v in every)}
    for k, n in totals.items():
        if n != LISTED_VIDEOS[k]:
            log.warning("%d %s videos; the public bob.db.siw lists hold %d (a copy missing single videos still "
                        "adapts)", n, k, LISTED_VIDEOS[k])
    return totals


def build_lists(by_split: Dict[str, List[AdaptedId]]) -> Dict[Tuple[str, Optional[int]], Dict[str, List[AdaptedId]]]:
    """Protocol 1, the four medium folds of protocol 2 and the two attack-type folds of protocol 3."""
    def pick(keep) -> Dict[str, List[AdaptedId]]:
        return {s: [v for v in by_split[s] if v.is_live or keep(v, s == "Test")] for s in by_split}

    lists = {("siw_1", None): pick(lambda v, test: True)}
    for k in range(1, 5):
        held_out = f"replay{k}"
        lists[("siw_2", k)] = pick(lambda v, test, h=held_out: v.kind == "replay" and (v.instrument == h) == test)
    for k, (train_kind, test_kind) in enumerate((("print", "replay"), ("replay", "print")), 1):
        lists[("siw_3", k)] = pick(lambda v, test, a=train_kind, b=test_kind: v.kind == (b if test else a))
    return lists


def main(args: argparse.Namespace) -> Dict:
    setup_logging()
    log_run_header(log, args)
    root = args.siw_root
    problems = Problems(root, "SiW")
    ignored: List[Path] = []
    videos = scan(root, args.face_files, problems, ignored)
    check_disjoint_subjects(videos, problems)
    totals = check_counts(videos, problems) if args.counts == "official" else None
    problems.check(suggest_root(root, "Train"))
    log_ignored(log, ignored, "neither a video nor a .face file")

    dev = carve_dev([v.vid.subject for v in videos["Train"]], args.dev_fraction, args.seed, "SiW")
    split_of, sources = {}, {}
    for release_split, vids in videos.items():
        for v in vids:
            split_of[v.name] = "Dev" if release_split == "Train" and v.vid.subject in dev else release_split
            sources[v.name] = v
    by_split = {s: [sources[n].vid for n in sorted(sources) if split_of[n] == s] for s in ("Train", "Dev", "Test")}
    summary = {"dataset": "SiW", "tag": TAG, "release_root": str(root.resolve()), "out": str(args.out),
               "args": {k: str(v) for k, v in vars(args).items()}, "dev_subjects": dev, "video_totals": totals,
               "train_first_frames": {"siw_1": FIRST_FRAMES_P1}, "ignored_files": [str(p) for p in ignored],
               "checked": ["layout, names (incl. NNN-2-1-M-S.m) and the 90 / 75 subjects: bob.db.siw file lists",
                           ".face files: one x1 y1 x2 y2 box per frame (the dataset's page)"],
               "assumptions": ["type 2 print / 3 replay with media 1-2 and 1-4 as the generator's six classes",
                               "protocol definitions as in the module docstring (siw_1 trains on 60 frames)"]}
    summary = write_adapted_root(args.out, TAG, split_of, sources, build_lists(by_split), args.link, summary)
    log_summary(summary)
    return summary


if __name__ == "__main__":
    run_cli(main, argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__,
                                          formatter_class=argparse.RawDescriptionHelpFormatter))
