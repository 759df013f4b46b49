"""What the dataset adapters share: the adapted root they write, layout errors, the Dev carve, links.

An adapter reads one release (SiW, SiW-M, CASIA-MFSD or Replay-Attack), checks its layout and counts, and
writes an *adapted root* in the OULU-NPU release layout, so that every stage of the pipeline runs on it::

    <out>/Train_files/<id>.<ext>, Dev_files/, Test_files/    links to (or copies of) the original videos
    <out>/Protocols/Protocol_<name>/<Split>[_k].txt           lists: '+1,<id>' bona fide, '-1,<id>' print,
                                                              '-2,<id>' replay (SiW-M: -3 mask, -4 makeup,
                                                              -5 partial)
    <out>/metadata/<TAG>_videos.csv                           one row per video: id, split, subject,
                                                              instrument, kind, label, original path
                                                              (resolved), path in the release, extras
    <out>/metadata/<TAG>.json                                 counts, Dev subjects, arguments, assumptions

Ids follow :mod:`data.other_benchmarks` (``SIW_032_replay2_032-1-3-2-1``). Several adapters may write into one
root, since their ids and protocol folders never collide; the cross-dataset runs need CASIA-MFSD and
Replay-Attack in the same root. A rerun replaces what the same adapter wrote before (links of videos
it no longer lists are removed) and leaves everything else alone.

A video usually sits in one split folder. A protocol family whose folds move videos between splits
(SiW-M's leave-one-type-out: a spoof video is Test in its own fold and Train or Dev in the others) links
it into each folder it needs: its ``split_of`` entry is then a tuple of splits, and the metadata table
writes them joined by ``+`` (``Train+Test``).

A release that does not look as expected stops the adapter with a :class:`LayoutError` that lists
every problem found, each saying what was expected and what was found.
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from data.protocol_lists import SPLITS, ProtocolRow, format_protocol, protocol_path
from data.prep_common import RELEASE_DIRS
from data.other_benchmarks import BENCHMARKS, KIND_LABELS, AdaptedId
from misc.io import TMP_MARK, atomic_write_json, atomic_write_text
from misc.progress import progress

log = logging.getLogger("dsdg.adapters")
LINK_MODES = ("symlink", "hardlink", "copy")
SPLIT_DIRS = {s: RELEASE_DIRS[s.lower()] for s in SPLITS}  # Train -> Train_files, ...
_MAX_LISTED = 40
# Where a video is linked: one split, or several (see the module docstring).
SplitSpec = Union[str, Tuple[str, ...]]


def splits_of(spec: Optional[SplitSpec]) -> Tuple[str, ...]:
    """The splits of a ``split_of`` entry as a tuple (empty for None)."""
    if spec is None:
        return ()
    return (spec,) if isinstance(spec, str) else tuple(spec)


class LayoutError(ValueError):
    """The release does not look as the adapter expects; the message lists every problem."""


class Problems:
    """Collects what is wrong with a release, so that one run reports all of it at once."""

    def __init__(self, root: Path, dataset: str):
        self.root, self.dataset, self.items = Path(root), dataset, []

    def add(self, message: str) -> None:
        self.items.append(message)

    def __bool__(self) -> bool:
        return bool(self.items)

    def check(self, hint: str = "") -> None:
        """Raise :class:`LayoutError` listing the problems (the first few dozen) if there are any."""
        if not self.items:
            return
        lines = [f"{self.root}: not a {self.dataset} release as this adapter expects it "
                 f"({len(self.items)} problem(s)):"]
        lines += [f"  - {p}" for p in self.items[:_MAX_LISTED]]
        if len(self.items) > _MAX_LISTED:
            lines.append(f"  ... and {len(self.items) - _MAX_LISTED} more")
        if hint:
            lines.append(hint)
        raise LayoutError("\n".join(lines))


@dataclass(frozen=True)
class SourceVideo:
    """One video of a release: its adapted id, the release split it came from, the file, and extra
    fields for the metadata table (sensor, session, quality, support, light, ...)."""
    vid: AdaptedId
    release_split: str
    path: Path
    extra: Tuple[Tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        return str(self.vid)


# ----------------------------------------------------------------------------------------------
# Reading a release
# ----------------------------------------------------------------------------------------------

def require_dirs(root: Path, names: Iterable[str], problems: Problems) -> List[Path]:
    """The folders ``root/<name>`` that exist; a problem for each one that does not."""
    found, names = [], list(names)
    for name in names:
        d = root / name
        if d.is_dir():
            found.append(d)
        else:
            problems.add(f"missing folder {d} (expected {', '.join(f'{n}/' for n in names)} in {root})")
    return found


def suggest_root(root: Path, marker: str) -> str:
    """A hint when the release sits one folder below the given root (a common unpacking mistake)."""
    if not root.is_dir():
        return f"hint: {root} does not exist"
    below = sorted(p for p in root.iterdir() if p.is_dir() and (p / marker).is_dir())
    if below and not (root / marker).is_dir():
        return f"hint: {below[0]} holds {marker}/; pass that folder instead"
    return ""


def visible_entries(folder: Path) -> List[Path]:
    """The entries of ``folder`` that are not hidden (``.DS_Store`` and friends are skipped), sorted."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def dangling(path: Path, problems: Problems) -> bool:
    """True (and a problem) when ``path`` is a link to nothing: a git-annex or DataLad tree whose content was not
    fetched, or a store that moved. Such a file would pass every name check and fail much later."""
    if path.is_symlink() and not path.exists():
        problems.add(f"{path}: link to {os.readlink(path)}, which does not exist (content not fetched, e.g. "
                     "'git annex get' / 'datalad get', or the store moved)")
        return True
    return False


def log_ignored(logger: logging.Logger, ignored: Sequence[Path], what: str) -> None:
    """Say which files of the release were left alone (they are never linked), the first few by name."""
    if ignored:
        more = f" ... and {len(ignored) - 5} more" if len(ignored) > 5 else ""
        shown = ", ".join(str(p) for p in ignored[:5]) + more
        logger.warning("%d file(s) left alone (%s): %s", len(ignored), what, shown)


def check_disjoint_subjects(videos: Dict[str, List[SourceVideo]], problems: Problems) -> None:
    """A subject in two release splits would leak identities from training into testing."""
    seen: Dict[str, str] = {}
    for split, vids in videos.items():
        for subject in sorted({v.vid.subject for v in vids}):
            if subject in seen and seen[subject] != split:
                problems.add(f"subject {subject} appears in both {seen[subject]} and {split} "
                             "(expected disjoint subjects per split)")
            seen.setdefault(subject, split)


def check_count(problems: Problems, what: str, expected: int, found: int, detail: str = "") -> None:
    if expected != found:
        problems.add(f"{what}: expected {expected}, found {found}{detail}")


def carve_dev(subjects: Sequence[str], fraction: float, seed: int, dataset: str, unit: str = "subjects") -> List[str]:
    """A seeded, subject-disjoint Dev split carved from the training subjects (for datasets without
    one: the decision threshold must come from data that is neither trained on nor tested on).

    ``round(fraction * n)`` subjects, at least 1, leaving at least 1 for training. Sorted. ``unit`` names
    what is drawn in the error message (SiW-M draws videos: its names carry no person).
    """
    subjects = sorted(set(subjects))
    n = max(1, round(fraction * len(subjects)))
    if not 0 < fraction < 1 or n >= len(subjects):
        raise LayoutError(f"{dataset}: cannot carve a Dev split of fraction {fraction} from {len(subjects)} "
                          f"training {unit} (need 0 < fraction < 1 and at least one left to train on)")
    rng = random.Random(f"{seed}:{dataset}:dev")  # string seeds are stable across Python versions
    return sorted(rng.sample(subjects, n))


# ----------------------------------------------------------------------------------------------
# Writing the adapted root
# ----------------------------------------------------------------------------------------------

def link_video(src: Path, dst: Path, mode: str) -> bool:
    """Make ``dst`` a symlink/hardlink/copy of ``src``, atomically; False when it already was one."""
    src = src.resolve()
    if dst.is_symlink() or dst.exists():
        if mode == "symlink" and dst.is_symlink() and Path(os.readlink(dst)) == src:
            return False
        if mode == "hardlink" and not dst.is_symlink() and dst.stat().st_ino == src.stat().st_ino:
            return False
        if mode == "copy" and not dst.is_symlink() and dst.stat().st_size == src.stat().st_size:
            return False
    tmp = dst.with_name(dst.name + TMP_MARK + "link")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    if mode == "symlink":
        tmp.symlink_to(src)
    elif mode == "hardlink":
        os.link(src, tmp)
    else:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)
    return True


def _ours(path: Path, tag: str) -> bool:
    return path.name.startswith(tag + "_")


def write_links(out: Path, tag: str, split_of: Dict[str, SplitSpec], videos: Dict[str, SourceVideo],
                mode: str) -> Dict:
    """Link every video into its ``<out>/<Split>_files/`` folder(s) and remove this dataset's links that are not
    wanted. Counts links, not videos (a video in two splits has two)."""
    made = total = 0
    for split, folder in SPLIT_DIRS.items():
        d = out / folder
        d.mkdir(parents=True, exist_ok=True)
        for p in d.iterdir():  # stale: a video of ours that moved split or left the release
            if _ours(p, tag) and (TMP_MARK in p.name or split not in splits_of(split_of.get(Path(p.name).stem))):
                p.unlink()
    for name in progress(sorted(videos), desc=f"{tag} links", unit="video"):
        v = videos[name]
        for split in splits_of(split_of[name]):
            made += link_video(v.path, out / SPLIT_DIRS[split] / (name + v.path.suffix.lower()), mode)
            total += 1
    return {"linked": made, "unchanged": total - made}


def write_protocols(out: Path, tag: str, lists: Dict[Tuple[str, Optional[int]], Dict[str, List[AdaptedId]]]) -> Dict:
    """Write every list; clear files left in this dataset's protocol folders by an earlier run."""
    counts = {}
    for base in BENCHMARKS[tag].protocols:
        folder = out / "Protocols" / f"Protocol_{base}"
        if folder.is_dir():
            for p in folder.glob("*.txt"):
                p.unlink()
    for (base, sub), splits in lists.items():
        name = base if sub is None else f"{base}_{sub}"
        counts[name] = {}
        for split, vids in splits.items():
            rows = [ProtocolRow(v.label, str(v)) for v in sorted(vids)]
            atomic_write_text(protocol_path(out / "Protocols", base, split, sub), format_protocol(rows))
            counts[name][split] = _kind_counts(vids)
    return counts


def _kind_counts(vids: Sequence[AdaptedId]) -> Dict[str, int]:
    """{'bona_fide', 'print', 'replay'} counts of a list, plus any other attack kind it holds (SiW-M's)."""
    out = {"bona_fide": sum(v.is_live for v in vids)}
    for kind in KIND_LABELS:  # in label order: print, replay, then SiW-M's mask, makeup, partial
        n = sum(not v.is_live and v.kind == kind for v in vids)
        if n or kind in ("print", "replay"):
            out[kind] = n
    return out


def write_metadata(out: Path, tag: str, split_of: Dict[str, SplitSpec], videos: Dict[str, SourceVideo],
                   summary: Dict) -> Path:
    """``metadata/<TAG>_videos.csv`` (one row per video) and ``metadata/<TAG>.json`` (the run summary)."""
    extra_keys = sorted({k for v in videos.values() for k, _ in v.extra})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["video", "split", "release_split", "subject", "instrument", "kind", "label", "source",
                "release_path"] + extra_keys)
    for name in sorted(videos):
        v = videos[name]
        extra = dict(v.extra)
        w.writerow([name, "+".join(splits_of(split_of[name])), v.release_split, v.vid.subject, v.vid.instrument,
                    v.vid.kind, v.vid.label,
                    # source: the file itself (links resolved); release_path: where the release shows it, which is
                    # where companion files (.face) sit when the release is a tree of links
                    str(v.path.resolve()), os.path.abspath(v.path)] + [extra.get(k, "") for k in extra_keys])
    table = out / "metadata" / f"{tag}_videos.csv"
    atomic_write_text(table, buf.getvalue())
    atomic_write_json(out / "metadata" / f"{tag}.json", summary)
    return table


def read_metadata(root: Path, tag: str) -> Dict[str, Dict[str, str]]:
    """The metadata table an adapter wrote, by video id (raises FileNotFoundError naming the file)."""
    path = Path(root) / "metadata" / f"{tag}_videos.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: metadata table not found (written by the {tag} adapter in data/adapters/)")
    with open(path, encoding="utf-8", newline="") as f:
        return {row["video"]: row for row in csv.DictReader(f)}


def write_adapted_root(out: Path, tag: str, split_of: Dict[str, SplitSpec], videos: Dict[str, SourceVideo],
                       lists: Dict[Tuple[str, Optional[int]], Dict[str, List[AdaptedId]]], link_mode: str,
                       summary: Dict) -> Dict:
    """Links, lists and metadata of one dataset (see the module docstring); returns the summary written."""
    empty = []  # a list without both classes can neither train nor set or measure a threshold
    for (base, sub), splits in lists.items():
        for split, vids in splits.items():
            if not any(v.is_live for v in vids) or all(v.is_live for v in vids):
                missing = "bona fide videos" if not any(v.is_live for v in vids) else "attacks"
                empty.append(f"  - {protocol_path(out / 'Protocols', base, split, sub)} would have no {missing} "
                             f"({len(vids)} rows)")
    if empty:
        raise LayoutError("the release lacks videos that these protocol lists need:\n" + "\n".join(empty))
    for (base, sub), splits in lists.items():  # the stages read a listed video from its split's folder
        for split, vids in splits.items():
            unlinked = [str(v) for v in vids if split not in splits_of(split_of.get(str(v)))]
            if unlinked:
                raise ValueError(f"{tag} adapter: {protocol_path(out / 'Protocols', base, split, sub)} lists "
                                 f"{len(unlinked)} video(s) not linked into {SPLIT_DIRS[split]}/, e.g. {unlinked[0]}")
    summary = dict(summary)
    summary["links"] = write_links(out, tag, split_of, videos, link_mode)
    summary["protocols"] = write_protocols(out, tag, lists)
    summary["counts"] = _counts(split_of, videos)
    summary["metadata_table"] = str(write_metadata(out, tag, split_of, videos, summary))
    return summary


def _counts(split_of: Dict[str, SplitSpec], videos: Dict[str, SourceVideo]) -> Dict:
    out: Dict[str, Dict] = {}
    for name, v in videos.items():
        for split in splits_of(split_of[name]):
            c = out.setdefault(split, {"videos": 0, "subjects": set(), "instruments": {}})
            c["videos"] += 1
            c["subjects"].add(v.vid.subject)
            c["instruments"][v.vid.instrument] = c["instruments"].get(v.vid.instrument, 0) + 1
    for c in out.values():
        c["subjects"] = len(c["subjects"])
    return out


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

def add_common_arguments(parser: argparse.ArgumentParser, carve: bool) -> None:
    parser.add_argument("--out", type=Path, required=True,
                        help="adapted root to write (Train_files/, Dev_files/, Test_files/, Protocols/, metadata/); "
                             "other datasets' files in it are left alone")
    parser.add_argument("--link", choices=LINK_MODES, default="symlink",
                        help="how the videos enter the adapted root: symlink (default), hardlink or copy")
    parser.add_argument("--counts", choices=("official", "any"), default="official",
                        help="official (default): check subject and video counts against the published ones and "
                             "stop on a mismatch; any: check names and structure only (partial copies, replicas)")
    if carve:
        parser.add_argument("--dev-fraction", type=float, default=0.2,
                            help="the release has no Dev set: this share of the training subjects (seeded, "
                                 "subject-disjoint) becomes Dev, for the decision threshold (default 0.2)")
        parser.add_argument("--seed", type=int, default=0, help="seed of the Dev subject draw (default 0)")


def log_summary(summary: Dict) -> None:
    log.info("%s adapted into %s", summary["dataset"], summary["out"])
    for split in SPLITS:
        c = summary["counts"].get(split)
        if c:
            log.info("  %-5s %4d subjects %6d videos  %s", split, c["subjects"], c["videos"],
                     ", ".join(f"{k} {n}" for k, n in sorted(c["instruments"].items())))
    for name, splits in summary["protocols"].items():
        log.info("  Protocol %-9s %s", name, "  ".join(
            f"{s}: " + " / ".join(f"{n} {k.replace('_', ' ')}" for k, n in c.items()) for s, c in splits.items()))


def run_cli(main: Callable[[argparse.Namespace], Dict], parser: argparse.ArgumentParser) -> None:
    """Parse, run, and turn a LayoutError into a clean exit status 1 with its message."""
    try:
        main(parser.parse_args())
    except LayoutError as e:
        sys.exit(f"error: {e}")

