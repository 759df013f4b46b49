"""SiW (Spoof in the Wild, MSU) -> an adapted root in the OULU-NPU layout, with SiW protocols 1-3.

    python -m data.adapters.siw --siw-root /data/SiW_release --out datasets/adapted

Release layout this adapter expects (every point is checked, and a mismatch stops it with a message
saying what was expected and what was found)::

    SiW_release/Train/live/<subject>/<name>.mov     + <name>.face, one face box per frame
    SiW_release/Train/spoof/<subject>/<name>.mov    + <name>.face
    SiW_release/Test/live/..., SiW_release/Test/spoof/...

``<name>`` is ``SSS-E-T-M-N``: subject (three digits, the folder's name), sensor, type (1 live,
2 print, 3 replay), medium (print 1-2, replay 1-4) and session. Live videos sit under ``live/`` and
attacks under ``spoof/``; no subject is in both Train and Test. With ``--counts official`` there
must be 90 Train and 75 Test subjects; the video totals are reported (the paper's table says
1,320 live and 3,300 spoof videos, but single videos are missing for some subjects, so they do not
stop the run).

Adapted ids: ``SIW_<subject>_<instrument>_<name>``, instrument ``live``, ``print1..2`` or
``replay1..4`` (the generator's six spoof classes; list labels -1 print, -2 replay).

SiW has no Dev set: ``--dev-fraction`` of the Train subjects (seeded, default 0.2) become Dev, used
for the decision threshold only. Protocols (lists under ``Protocols/Protocol_siw_*``):

* ``siw_1``: every video; training uses only the **first 60 frames** of each Train video, which the
  stages implement (``make_train_list.py --first-frames 60``, ``crop_dataset.py --train-first-frames
  60`` into a crop root of its own); Dev and Test use all frames.
* ``siw_2_k`` (k = 1..4): leave one replay medium out. Train/Dev: live + replay media other than k;
  Test: live + replay medium k. Print attacks are not used.
* ``siw_3_k``: cross attack type. k = 1: Train/Dev live + print, Test live + replay; k = 2: the
  reverse. Protocols 2 and 3 report the mean and standard deviation over their folds.

Unverified assumptions (spec [M]): the name pattern and the meaning of its fields, the protocol
definitions and the counts. The public bob.db.siw lists use the same names and folds.
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
                                  check_disjoint_subjects, log_summary, require_dirs, run_cli, suggest_root,
                                  visible_entries, write_adapted_root)
from data.protocols import AdaptedId
from misc.cli import bool_flag
from misc.logger import log_run_header, setup_logging

log = logging.getLogger("dsdg.adapters.siw")
TAG = "SIW"
RELEASE_SPLITS = {"Train": "Train", "Test": "Test"}  # release folder -> adapted split (Dev is carved)
NAME_RE = re.compile(r"^(\d{3})-(\d)-([123])-(\d)-(\d)$")
NAME_HELP = "SSS-E-T-M-N (subject, sensor, type 1 live/2 print/3 replay, medium, session), e.g. 032-1-3-2-1"
MEDIA = {"2": range(1, 3), "3": range(1, 5)}  # print media 1-2, replay media 1-4
OFFICIAL_SUBJECTS = {"Train": 90, "Test": 75}
PAPER_VIDEOS = {"live": 1320, "spoof": 3300}
FIRST_FRAMES_P1 = 60


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("SiW release -> adapted root (OULU-NPU layout) with protocols 1-3", add_help=False)
    p.add_argument("--siw-root", type=Path, required=True, help="the SiW release folder holding Train/ and Test/")
    p.add_argument("--face-files", type=bool_flag, default=True,
                   help="require the release's <name>.face box file beside every video (default true; "
                        "data/import_boxes.py turns them into .dat boxes instead of running MTCNN)")
    add_common_arguments(p, carve=True)
    return p


def parse_name(stem: str) -> Dict[str, str]:
    """The fields of a SiW video name; ValueError saying what is wrong."""
    m = NAME_RE.match(stem)
    if not m:
        raise ValueError(f"name {stem!r} does not follow {NAME_HELP}")
    subject, sensor, kind, medium, session = m.groups()
    if kind in MEDIA and int(medium) not in MEDIA[kind]:
        what = "print" if kind == "2" else "replay"
        raise ValueError(f"name {stem!r}: {what} medium {medium} outside {MEDIA[kind].start}..{MEDIA[kind].stop - 1}")
    return {"subject": subject, "sensor": sensor, "type": kind, "medium": medium, "session": session}


def instrument_of(fields: Dict[str, str]) -> str:
    return {"1": "live", "2": f"print{fields['medium']}", "3": f"replay{fields['medium']}"}[fields["type"]]


def scan(root: Path, face_files: bool, problems: Problems) -> Dict[str, List[SourceVideo]]:
    """Every video of the release by release split, checking folders, names and .face files."""
    videos: Dict[str, List[SourceVideo]] = {}
    for split_dir in require_dirs(root, RELEASE_SPLITS, problems):
        found = videos.setdefault(split_dir.name, [])
        for kind_dir in require_dirs(split_dir, ("live", "spoof"), problems):
            for subject_dir in visible_entries(kind_dir):
                if not subject_dir.is_dir() or not re.fullmatch(r"\d{3}", subject_dir.name):
                    problems.add(f"{subject_dir}: expected a three-digit subject folder (e.g. 032)")
                    continue
                found += _scan_subject(subject_dir, kind_dir.name, face_files, problems)
    return videos


def _scan_subject(folder: Path, kind: str, face_files: bool, problems: Problems) -> List[SourceVideo]:
    out = []
    entries = visible_entries(folder)
    movs = [p for p in entries if p.suffix.lower() == ".mov"]
    faces = {p.stem for p in entries if p.suffix.lower() == ".face"}
    for p in entries:
        if p.suffix.lower() not in (".mov", ".face"):
            problems.add(f"{p}: unexpected file (a subject folder holds <name>.mov and <name>.face, "
                         f"name {NAME_HELP})")
    if not movs:
        problems.add(f"{folder}: no .mov video")
    for p in movs:
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
        vid = AdaptedId(TAG, fields["subject"], instrument_of(fields), p.stem)
        extra = tuple((k, fields[k]) for k in ("sensor", "medium", "session"))
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
        if n != PAPER_VIDEOS[k]:
            log.warning("%d %s videos; the paper's table says %d (single missing videos are known)", n, k,
                        PAPER_VIDEOS[k])
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
    videos = scan(root, args.face_files, problems)
    check_disjoint_subjects(videos, problems)
    totals = check_counts(videos, problems) if args.counts == "official" else None
    problems.check(suggest_root(root, "Train"))

    dev = carve_dev([v.vid.subject for v in videos["Train"]], args.dev_fraction, args.seed, "SiW")
    split_of, sources = {}, {}
    for release_split, vids in videos.items():
        for v in vids:
            split_of[v.name] = "Dev" if release_split == "Train" and v.vid.subject in dev else release_split
            sources[v.name] = v
    by_split = {s: [sources[n].vid for n in sorted(sources) if split_of[n] == s] for s in ("Train", "Dev", "Test")}
    summary = {"dataset": "SiW", "tag": TAG, "release_root": str(root.resolve()), "out": str(args.out),
               "args": {k: str(v) for k, v in vars(args).items()}, "dev_subjects": dev, "video_totals": totals,
               "train_first_frames": {"siw_1": FIRST_FRAMES_P1},
               "assumptions": ["name SSS-E-T-M-N with T 1 live / 2 print / 3 replay, medium 1-2 print, 1-4 replay",
                               "90 Train / 75 Test subjects", "protocol definitions as in the module docstring"]}
    summary = write_adapted_root(args.out, TAG, split_of, sources, build_lists(by_split), args.link, summary)
    log_summary(summary)
    return summary


if __name__ == "__main__":
    run_cli(main, argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__,
                                          formatter_class=argparse.RawDescriptionHelpFormatter))
