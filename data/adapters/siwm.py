"""SiW-M (Spoof in the Wild with Multiple attacks, MSU) -> an adapted root with its leave-one-out protocols.

    python -m data.adapters.siwm --siwm-root /data/SiW-M --out datasets/adapted

SiW-M (Liu, Stehouwer, Jourabloo and Liu, "Deep Tree Learning for Zero-shot Face Anti-Spoofing",
CVPR 2019) has live videos and thirteen spoof types: print and replay, five masks, three kinds of
makeup and three partial attacks. Its protocol leaves one spoof type out at a time: train on the
other twelve and the training live videos, test on the held-out type and the test live videos, and
report APCER, BPCER, ACER and EER per type with their mean and standard deviation over the types.

Release layout this adapter expects (checked; a mismatch stops it, saying what was expected and what
was found)::

    SiW-M/Live/Train/Live_<n>.mov          live videos for training (Dev is carved from them)
    SiW-M/Live/Test/Live_<n>.mov           live videos for testing
    SiW-M/<type folder>/<prefix>_<n>.mov   one folder per spoof type (table below)

    ==  ==============  ========================  ==================================  =====  =======
    k   instrument      folder                    file names                          kind   paper
    ==  ==============  ========================  ==================================  =====  =======
    1   replay          Replay/                   Replay_<n>                          -2     99
    2   print           Paper/                    Paper_<n>                           -1     118
    3   halfmask        Mask/HalfMask/            Mask_Half_<n>                       -3     72
    4   silicone        Mask/SiliconeMask/        Mask_Silicone_<n>                   -3     27
    5   transparent     Mask/TransparentMask/     Mask_Trans_<n>                      -3     88
    6   papercraft      Mask/PaperMask/           Mask_Paper_<n>                      -3     17
    7   mannequin       Mask/MannequinHead/       Mask_Mann_<n>                       -3     40
    8   obfuscation     Makeup/Obfuscation/       Makeup_Ob_<n>                       -4     23
    9   impersonation   Makeup/Impersonation/     Makeup_Im_<n>                       -4     61
    10  cosmetic        Makeup/Cosmetic/          Makeup_Co_<n>                       -4     50
    11  funnyeye        Partial/FunnyeyeGlasses/  Partial_Funnyeye_<n>                -5     160
    12  paperglasses    Partial/PaperGlasses/     Partial_Paperglass_<n>              -5     127
    13  partialpaper    Partial/PaperCut/         Partial_Eye_<n>, Partial_Mouth_<n>  -5     86
    ==  ==============  ========================  ==================================  =====  =======

``k`` is the type's spoof class (``k - 1``) and its protocol ``siwm_k``; ``kind`` the list label (-1
print, -2 replay, -3 mask, -4 makeup, -5 partial); ``paper`` the video count of the paper's table
(660 live videos in all). With ``--counts official`` every folder must be there and hold videos; the
counts are compared with the paper's and reported, not enforced (see below). ``--counts any`` accepts
a copy without some spoof-type folders (their protocols are not written). Files that are no video are
left alone and listed in the log; a video under a name outside its folder's pattern stops the adapter.

Adapted ids: ``SIWM_unknown_<instrument>_<clip>``, the clip being the file name with ``_`` written
``-`` (``Mask_Half_12.mov`` -> ``SIWM_unknown_halfmask_Mask-Half-12``). The release's names carry no
person, so every video has the subject ``unknown``: the generator pairs each spoof frame with a live
frame of any training person (the paper's identity pairing cannot be reproduced from the names).

Splits. SiW-M has no Dev set and the spoof videos have no split of their own:

* live: ``Live/Train`` trains, ``Live/Test`` tests; ``--dev-fraction`` (seeded, default 0.2) of the
  ``Live/Train`` videos become Dev;
* spoof: the same fraction of each type's videos is its Dev share, the rest its Train share. Every
  spoof video is linked into ``Test_files/`` too, because it is tested in its own fold, and into
  ``Train_files/`` or ``Dev_files/`` for the other twelve. Stages 1-3 therefore process each spoof
  video twice (once per split folder), the price of one split folder per video in the stages' layout.

Protocol ``siwm_k`` (lists under ``Protocols/Protocol_siwm/{Train,Dev,Test}_k.txt``): Train = Train
live + the Train share of every type but k; Dev = Dev live + the Dev share of every type but k; Test =
Test live + every video of type k. Dev never holds the held-out type, so the decision threshold is
set without seeing it, and is used only for that. The carve is by video, not by person (no person is
known), so a person's videos may sit in Train and Dev; Test live videos are the release's own.

Metrics (``scripts/datasets/03_intra.sh``, through ``scripts/run_protocol.sh`` and ``DUM/evaluate.py``):
per type, APCER / BPCER / ACER at the Dev EER threshold, the Test EER (``eer_test``), and APCER / BPCER
/ ACER at each Test set's own EER threshold (``target_eer.fpr`` / ``fnr`` / ``hter``); then the mean and
standard deviation of each over the types, in a table with one column per type. The Test-EER numbers
follow the CDCN code's ``performances_SiWM_EER`` (ZitongYu/CDCN ``utils.py``: sklearn-ROC EER threshold
of the evaluated file itself, APCER / BPCER / ACER counted there), which sees no Dev set and is
optimistic; with ``EVAL_MODE=cdcn`` the rates are read off the ROC at that point (``DUM/metrics.py``,
``target_eer_hter``), which can differ from that function's strict count only where scores tie.

Checked against public sources: the folder and file names above, ``Live/Train`` and ``Live/Test``, the
``.mov`` suffix, and that a type's numbers need not be contiguous (``Makeup_Im_62`` exists): the SiW-M
video paths in the gradgpad score files (github.com/acostapazo/gradgpad,
``gradgpad/data/scores/auxiliary/auxiliary_cross_dataset_siw_m_test.json``; a third-party SiW-M loader
lists the same fifteen file prefixes); thirteen spoof types including print, replay, 3D masks, makeup
and partial attacks: the DTN paper's abstract and first figure; the Test-EER rule: the CDCN code
above. The paper's GitHub repository (yaojieliu/CVPR2019-DeepTreeLearningForZeroShotFaceAntispoofing)
holds the model, not the lists.

Still assumptions (spec [M], from memory of the paper, whose body is not readable in any stored
source): the leave-one-out protocol as described above (12 types and the training live videos to
train, the held-out type and the test live videos to test) with APCER, BPCER, ACER and EER per type;
which folder is which type of the paper's table (``Paper/`` print, ``Mask/PaperMask/`` papercraft mask,
``Partial/PaperCut/`` partial paper, ``Partial/FunnyeyeGlasses/`` funny eye); the per-type counts and the
660 live / 968 spoof videos (493 subjects); that ``Live/Train`` / ``Live/Test`` are the paper's 80 % /
20 % live split; whether the paper set its thresholds on Dev or on Test.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: make the repository root importable
    import pathlib, sys
    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[2])

import argparse
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from data.adapters.common import (LayoutError, Problems, SourceVideo, SplitSpec, add_common_arguments, carve_dev,
                                  dangling, log_ignored, log_summary, run_cli, suggest_root, visible_entries,
                                  write_adapted_root)
from data.other_benchmarks import BENCHMARKS, LIVE, AdaptedId
from misc.logger import log_run_header, setup_logging

log = logging.getLogger("dsdg.adapters.siwm")
TAG = "SIWM"
PROTOCOL = "siwm"
SUBJECT = "unknown"  # SiW-M's names carry no person
VIDEO_SUFFIXES = (".mov", ".mp4", ".avi", ".mkv")  # the release's are .mov; another video format is a problem


@dataclass(frozen=True)
class Folder:
    """One release folder: what it holds (``live`` or a spoof instrument), where, its file-name prefixes and
    the count of the paper's table."""
    instrument: str
    path: str
    prefixes: Tuple[str, ...]
    paper_count: Optional[int] = None

    def pattern(self) -> re.Pattern:
        return re.compile(r"^(" + "|".join(map(re.escape, self.prefixes)) + r")_(\d+)$")

    def help(self) -> str:
        return " or ".join(f"{p}_<n>.mov" for p in self.prefixes)


LIVE_FOLDERS = (Folder(LIVE, "Live/Train", ("Live",)), Folder(LIVE, "Live/Test", ("Live",)))
PAPER_LIVE = 660
SPOOF_FOLDERS = (
    Folder("replay", "Replay", ("Replay",), 99),
    Folder("print", "Paper", ("Paper",), 118),
    Folder("halfmask", "Mask/HalfMask", ("Mask_Half",), 72),
    Folder("silicone", "Mask/SiliconeMask", ("Mask_Silicone",), 27),
    Folder("transparent", "Mask/TransparentMask", ("Mask_Trans",), 88),
    Folder("papercraft", "Mask/PaperMask", ("Mask_Paper",), 17),
    Folder("mannequin", "Mask/MannequinHead", ("Mask_Mann",), 40),
    Folder("obfuscation", "Makeup/Obfuscation", ("Makeup_Ob",), 23),
    Folder("impersonation", "Makeup/Impersonation", ("Makeup_Im",), 61),
    Folder("cosmetic", "Makeup/Cosmetic", ("Makeup_Co",), 50),
    Folder("funnyeye", "Partial/FunnyeyeGlasses", ("Partial_Funnyeye",), 160),
    Folder("paperglasses", "Partial/PaperGlasses", ("Partial_Paperglass",), 127),
    Folder("partialpaper", "Partial/PaperCut", ("Partial_Eye", "Partial_Mouth"), 86),
)
# The protocol numbering (siwm_k) and the spoof classes come from data.other_benchmarks; the two tables must agree.
assert tuple(f.instrument for f in SPOOF_FOLDERS) == BENCHMARKS[TAG].instrument_names


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("SiW-M release -> adapted root (OULU-NPU layout) with its leave-one-out protocols",
                                add_help=False)
    p.add_argument("--siwm-root", type=Path, required=True,
                   help="the SiW-M release folder holding Live/ and the spoof-type folders (Replay/, Paper/, Mask/, "
                        "Makeup/, Partial/)")
    add_common_arguments(p, carve=True)
    return p


def clip_of(stem: str) -> str:
    """The adapted id's clip: the file name with ``_`` written ``-`` (``_`` separates an id's fields)."""
    return stem.replace("_", "-")


def scan_folder(root: Path, folder: Folder, problems: Problems, ignored: List[Path]) -> List[SourceVideo]:
    """The videos of one release folder, checking their names; files that are no video go to ``ignored``."""
    d = root / folder.path
    pattern, out, before = folder.pattern(), [], len(problems.items)
    for p in visible_entries(d):
        if p.suffix.lower() not in VIDEO_SUFFIXES:
            ignored.append(p)
            continue
        if p.suffix.lower() != ".mov" or not pattern.match(p.stem):
            problems.add(f"{p}: unexpected name (expected {folder.help()} in {folder.path}/)")
            continue
        if dangling(p, problems):
            continue
        vid = AdaptedId(TAG, SUBJECT, folder.instrument, clip_of(p.stem))
        out.append(SourceVideo(vid, folder.path, p, (("folder", folder.path), ("file", p.name))))
    if not out and len(problems.items) == before:  # an empty folder (a folder of bad names was reported already)
        problems.add(f"{d}: no video (expected {folder.help()})")
    return out


def scan(root: Path, official: bool, problems: Problems,
         ignored: List[Path]) -> Tuple[Dict[str, List[SourceVideo]], Dict[str, List[SourceVideo]]]:
    """(live videos by release folder, spoof videos by instrument). Every folder must exist with
    ``official``; otherwise spoof-type folders may be missing (a partial copy) and are logged."""
    live: Dict[str, List[SourceVideo]] = {}
    spoof: Dict[str, List[SourceVideo]] = {}
    for folder in LIVE_FOLDERS + SPOOF_FOLDERS:
        if not (root / folder.path).is_dir():
            if official or folder in LIVE_FOLDERS:
                problems.add(f"missing folder {root / folder.path} (expected Live/Train/, Live/Test/ and the "
                             f"thirteen spoof-type folders in {root})")
            else:
                log.warning("%s: missing; protocol %s_%d is not written", root / folder.path, PROTOCOL,
                            SPOOF_FOLDERS.index(folder) + 1)
            continue
        vids = scan_folder(root, folder, problems, ignored)
        if folder in LIVE_FOLDERS:
            live[folder.path] = vids
        else:
            spoof[folder.instrument] = vids
    seen: Dict[str, Path] = {}
    for v in (v for vids in live.values() for v in vids):  # one live id per file, across Train and Test
        if v.name in seen:
            problems.add(f"{v.path}: same name as {seen[v.name]} (a live video in both Live/Train and Live/Test)")
        seen.setdefault(v.name, v.path)
    return live, spoof


def report_counts(live: Dict[str, List[SourceVideo]], spoof: Dict[str, List[SourceVideo]]) -> Dict:
    """Video counts next to the paper's; a difference is logged, not an error (the paper's are unverified)."""
    found = {"live": sum(map(len, live.values())), **{k: len(v) for k, v in spoof.items()}}
    paper = {"live": PAPER_LIVE, **{f.instrument: f.paper_count for f in SPOOF_FOLDERS}}
    differ = [f"{k} {n} (paper {paper[k]})" for k, n in found.items() if n != paper[k]]
    if differ:
        log.warning("video counts that differ from the paper's table (its counts are unverified, see the module "
                    "docstring): %s", ", ".join(differ))
    return {"found": found, "paper": paper}


def carve_share(videos: Sequence[SourceVideo], fraction: float, seed: int, what: str) -> List[str]:
    """The names of the Dev share of ``videos``: ``round(fraction * n)`` (at least 1), seeded per ``what``;
    none when there is only one video (it must train)."""
    names = [v.name for v in videos]
    return carve_dev(names, fraction, seed, f"SiW-M {what}", unit="videos") if len(names) > 1 else []


def assign_splits(live: Dict[str, List[SourceVideo]], spoof: Dict[str, List[SourceVideo]], fraction: float,
                  seed: int) -> Tuple[Dict[str, SplitSpec], Dict[str, str]]:
    """(split_of for the links: a split or a (share, 'Test') pair; the Train/Dev share of every video)."""
    split_of: Dict[str, SplitSpec] = {}
    share: Dict[str, str] = {}
    train_live = live.get("Live/Train", [])
    dev_live = set(carve_share(train_live, fraction, seed, "live"))
    for v in train_live:
        share[v.name] = split_of[v.name] = "Dev" if v.name in dev_live else "Train"
    for v in live.get("Live/Test", []):
        share[v.name] = split_of[v.name] = "Test"
    for instrument, vids in spoof.items():
        dev = set(carve_share(vids, fraction, seed, instrument))
        for v in vids:
            share[v.name] = "Dev" if v.name in dev else "Train"
            split_of[v.name] = (share[v.name], "Test")
    return split_of, share


def build_lists(sources: Dict[str, SourceVideo], share: Dict[str, str],
                present: Sequence[str]) -> Dict[Tuple[str, Optional[int]], Dict[str, List[AdaptedId]]]:
    """One leave-one-out fold per spoof type present (numbered by its place in the paper's table)."""
    names = BENCHMARKS[TAG].instrument_names
    lists = {}
    for held_out in present:
        splits: Dict[str, List[AdaptedId]] = {"Train": [], "Dev": [], "Test": []}
        for name in sorted(sources):
            vid = sources[name].vid
            if vid.is_live:
                splits[share[name]].append(vid)
            elif vid.instrument == held_out:
                splits["Test"].append(vid)
            else:
                splits[share[name]].append(vid)
        lists[(PROTOCOL, names.index(held_out) + 1)] = splits
    return lists


def main(args: argparse.Namespace) -> Dict:
    setup_logging()
    log_run_header(log, args)
    root = args.siwm_root
    problems = Problems(root, "SiW-M")
    ignored: List[Path] = []
    live, spoof = scan(root, args.counts == "official", problems, ignored)
    problems.check(suggest_root(root, "Live"))
    log_ignored(log, ignored, "not a video")
    if not spoof:
        raise LayoutError(f"{root}: no spoof-type folder found; nothing to leave out")
    totals = report_counts(live, spoof)

    split_of, share = assign_splits(live, spoof, args.dev_fraction, args.seed)
    sources = {v.name: v for vids in list(live.values()) + list(spoof.values()) for v in vids}
    present = [i for i in BENCHMARKS[TAG].instrument_names if i in spoof]
    summary = {"dataset": "SiW-M", "tag": TAG, "release_root": str(root.resolve()), "out": str(args.out),
               "args": {k: str(v) for k, v in vars(args).items()}, "dev_subjects": None,
               "dev_videos": sorted(n for n, s in share.items() if s == "Dev"),
               "held_out_types": {f"{PROTOCOL}_{BENCHMARKS[TAG].instrument_names.index(i) + 1}": i for i in present},
               "video_totals": totals, "ignored_files": [str(p) for p in ignored],
               "checked": ["folder and file names, Live/Train and Live/Test (SiW-M paths in gradgpad's score files)",
                           "13 spoof types incl. print, replay, 3D masks, makeup and partial attacks (the DTN paper)"],
               "assumptions": ["the leave-one-type-out protocol and its per-type APCER/BPCER/ACER/EER (from memory "
                               "of the paper)", "which folder is which type of the paper's table",
                               "the paper's video counts", "Live/Train and Live/Test are the paper's live split",
                               "no person in the names: subject 'unknown' for all, Dev carved by video"]}
    summary = write_adapted_root(args.out, TAG, split_of, sources, build_lists(sources, share, present), args.link,
                                 summary)
    log_summary(summary)
    return summary


if __name__ == "__main__":
    run_cli(main, argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__,
                                          formatter_class=argparse.RawDescriptionHelpFormatter))
