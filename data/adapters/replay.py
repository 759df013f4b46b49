"""Replay-Attack (Idiap) -> an adapted root in the OULU-NPU layout, with protocol ``replay`` (grandtest).

    python -m data.adapters.replay --replay-root /data/replayattack --out datasets/adapted

Release layout this adapter expects (checked; a mismatch stops it, saying what was expected and
what was found)::

    replayattack/{train,devel,test}/real/client<CCC>_session<SS>_webcam_authenticate_<light>_<k>.mov
    replayattack/{train,devel,test}/attack/{fixed,hand}/
                 attack_<device>_client<CCC>_session<SS>_<source>_<photo|video>_<light>.mov
    replayattack/enroll/...            enrollment videos: left out (they are for verification, not PAD)

``<light>`` is ``controlled`` or ``adverse``; ``<device>`` is ``print`` (a printed photo), ``mobile``
(a phone screen) or ``highdef`` (a tablet screen); ``fixed`` and ``hand`` are the attack supports.
train, devel and test keep their roles (Train, Dev, Test); no client is in two of them. With
``--counts official`` there must be 15 / 15 / 20 clients, each with 4 real videos and 20 attacks
(10 per support), i.e. 360 / 360 / 480 videos (bob's grandtest counts: Dev 60 bona fide + 300
attacks, Test 80 + 400).

Adapted ids: ``REPLAY_<CCC>_live_s<SS>-<light>-<k>`` and
``REPLAY_<CCC>_<device>_<support>-s<SS>-<source>-<medium>-<light>``. List labels: -1 print, -2 mobile
and highdef (replay); the generator's spoof classes are print, mobile, highdef.

Metric convention: HTER on test at the EER threshold of devel (``hter`` in the reports of
``DUM/test.py`` and ``DUM/evaluate.py``), and for the cross-dataset test Replay-Attack -> CASIA-MFSD
the HTER on CASIA-MFSD's test set at this devel threshold.

Checked against public sources: the fields of both name patterns, the attack support taken from the
folder (``fixed``/``hand``) and the real/attack split of each group: the parser of the bob.db.replay
package (``bob/db/replay/create.py``, github.com/bioidiap/bob.db.replay), which reads the same names
(real: client, session, purpose, light, take; attack: device, client, session, sample device, sample
type, light). Its grandtest counts (Dev 60 bona fide + 300 attacks, Test 80 + 400; bob.pad.face's
baselines) are what ``--counts official`` checks per client.

Still assumptions (spec [M]): the 15 / 15 / 20 client split as such (it follows from those counts at
4 real + 20 attack videos per client) and the 320x240 videos.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: make the repository root importable
    import pathlib, sys
    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[2])

import argparse
import logging
import re
from pathlib import Path
from typing import Dict, List

from data.adapters.common import (Problems, SourceVideo, add_common_arguments, check_count, check_disjoint_subjects,
                                  dangling, log_summary, require_dirs, run_cli, suggest_root, visible_entries,
                                  write_adapted_root)
from data.other_benchmarks import AdaptedId
from misc.logger import log_run_header, setup_logging

log = logging.getLogger("dsdg.adapters.replay")
TAG = "REPLAY"
RELEASE_SPLITS = {"train": "Train", "devel": "Dev", "test": "Test"}
SUPPORTS = ("fixed", "hand")
REAL_RE = re.compile(r"^client(\d{3})_session(\d{2})_webcam_authenticate_(controlled|adverse)_(\d+)$")
ATTACK_RE = re.compile(r"^attack_(print|mobile|highdef)_client(\d{3})_session(\d{2})_([a-z]+)_(photo|video)_"
                       r"(controlled|adverse)$")
REAL_HELP = "client<CCC>_session<SS>_webcam_authenticate_<controlled|adverse>_<k>.mov"
ATTACK_HELP = "attack_<print|mobile|highdef>_client<CCC>_session<SS>_<source>_<photo|video>_<controlled|adverse>.mov"
OFFICIAL_CLIENTS = {"Train": 15, "Dev": 15, "Test": 20}
PER_CLIENT = {"real": 4, "fixed": 10, "hand": 10}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("Replay-Attack release -> adapted root (OULU-NPU layout)", add_help=False)
    p.add_argument("--replay-root", type=Path, required=True,
                   help="the Replay-Attack folder holding train/, devel/ and test/ (enroll/ is ignored)")
    add_common_arguments(p, carve=False)
    return p


def _videos_in(folder: Path, pattern: re.Pattern, help_text: str, problems: Problems):
    """(path, match) of every .mov in ``folder`` whose name matches; a problem for every other file."""
    out = []
    for p in visible_entries(folder):
        if p.is_symlink() and dangling(p, problems):
            continue
        m = pattern.match(p.stem) if p.suffix.lower() == ".mov" and p.is_file() else None
        if m is None:
            problems.add(f"{p}: unexpected name (expected {help_text})")
        else:
            out.append((p, m))
    return out


def scan(root: Path, problems: Problems) -> Dict[str, List[SourceVideo]]:
    """Every real and attack video by adapted split, checking folders and names."""
    videos: Dict[str, List[SourceVideo]] = {}
    for split_dir in require_dirs(root, RELEASE_SPLITS, problems):
        found = videos.setdefault(RELEASE_SPLITS[split_dir.name], [])
        if (split_dir / "real").is_dir():
            for p, m in _videos_in(split_dir / "real", REAL_RE, REAL_HELP, problems):
                client, session, light, k = m.groups()
                vid = AdaptedId(TAG, client, "live", f"s{session}-{light}-{k}")
                found.append(SourceVideo(vid, split_dir.name, p, (("support", "real"), ("light", light))))
        else:
            problems.add(f"missing folder {split_dir / 'real'} (expected real/ and attack/fixed|hand/ in each split)")
        for support_dir in require_dirs(split_dir / "attack", SUPPORTS, problems):
            for p, m in _videos_in(support_dir, ATTACK_RE, ATTACK_HELP, problems):
                device, client, session, source, medium, light = m.groups()
                vid = AdaptedId(TAG, client, device, f"{support_dir.name}-s{session}-{source}-{medium}-{light}")
                found.append(SourceVideo(vid, split_dir.name, p, (("support", support_dir.name), ("light", light))))
    return videos


def check_counts(videos: Dict[str, List[SourceVideo]], problems: Problems) -> None:
    """Clients per split and videos per client against the published protocol."""
    for split, expected in OFFICIAL_CLIENTS.items():
        vids = videos.get(split, [])
        clients = sorted({v.vid.subject for v in vids})
        check_count(problems, f"{split} clients", expected, len(clients))
        for c in clients:
            for part, n in PER_CLIENT.items():
                found = sum(v.vid.subject == c and dict(v.extra)["support"] == part for v in vids)
                what = "real videos" if part == "real" else f"attacks with the {part} support"
                check_count(problems, f"{split} client {c}: {what}", n, found)


def main(args: argparse.Namespace) -> Dict:
    setup_logging()
    log_run_header(log, args)
    root = args.replay_root
    problems = Problems(root, "Replay-Attack")
    videos = scan(root, problems)
    check_disjoint_subjects(videos, problems)
    if args.counts == "official":
        check_counts(videos, problems)
    problems.check(suggest_root(root, "devel"))
    if (root / "enroll").is_dir():
        log.info("%s: enrollment videos left out (not presentation-attack data)", root / "enroll")

    sources = {v.name: v for vids in videos.values() for v in vids}
    split_of = {v.name: split for split, vids in videos.items() for v in vids}
    lists = {("replay", None): {s: [v.vid for v in videos[s]] for s in ("Train", "Dev", "Test")}}
    summary = {"dataset": "Replay-Attack", "tag": TAG, "release_root": str(root.resolve()), "out": str(args.out),
               "args": {k: str(v) for k, v in vars(args).items()}, "dev_subjects": None,
               "assumptions": ["train/ devel/ test/ with real/ and attack/{fixed,hand}/; enroll/ left out",
                               f"names {REAL_HELP} and {ATTACK_HELP}",
                               "15 / 15 / 20 clients, 4 real + 20 attacks each"]}
    summary = write_adapted_root(args.out, TAG, split_of, sources, lists, args.link, summary)
    log_summary(summary)
    return summary


if __name__ == "__main__":
    run_cli(main, argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__,
                                          formatter_class=argparse.RawDescriptionHelpFormatter))
