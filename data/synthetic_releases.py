"""Tiny synthetic replicas of the SiW, SiW-M, CASIA-MFSD and Replay-Attack release layouts, for tests and demos.

The videos are rendered like :mod:`data.synthetic`'s (real packaged faces in drawn rooms, filmed live,
printed on paper or replayed on a screen) and written under the folder and file names of each release,
as the adapters in ``data/adapters/`` expect them. They check the adapters and the pipeline on the
layouts, not the layouts themselves: what a real release looks like is documented (and partly
unverified) in the adapters.

* SiW: ``Train|Test/live|spoof/<SSS>/<SSS>-<sensor>-<type>-<medium>-<session>.mov`` with a ``.face``
  file per video (one ``x1 y1 x2 y2`` line per frame: an approximate box around where the renderer
  puts the face, not a detection). Per subject: one live video, both print media, the four replay
  media.
* SiW-M: ``Live/Train/Live_<n>.mov``, ``Live/Test/Live_<n>.mov`` and ``<type folder>/<prefix>_<n>.mov`` for
  each spoof type asked for (default all thirteen; ``data/adapters/siwm.py`` has the folders). The
  replica can only draw three presentations: replay is a replayed face, print and every mask and
  partial attack a printed one, and makeup a live face (a made-up face is a live face to the renderer).
  The videos show the people of the pool in turn (SiW-M's names say nothing of who is filmed).
* CASIA-MFSD: ``train_release|test_release/<n>/<file>.avi`` with the twelve files 1-8 and HR_1-HR_4
  (or a subset).
* Replay-Attack: ``train|devel|test/real/client<CCC>_session01_webcam_authenticate_<light>_<k>.mov``
  and ``.../attack/<fixed|hand>/attack_<device>_client<CCC>_session01_<source>_<photo|video>_<light>.mov``,
  plus an ``enroll/`` folder (which the adapter must leave out). ``full=True`` gives each client the
  release's 4 real and 20 attack videos, else one real video and three attacks (print and highdef
  on the fixed support, mobile hand-held).

The files are MJPG in AVI containers whatever their extension (OpenCV reads them by content).

    python -m data.synthetic_releases siw --out work/SiW_release
    python -m data.synthetic_releases siwm --out work/SiW-M --subjects 4 2 --types replay print halfmask
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: make the repository root importable
    import pathlib, sys
    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse
import zlib
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from data import synthetic
from data.adapters.siwm import SPOOF_FOLDERS
from data.other_benchmarks import BENCHMARKS
from misc.io import atomic_write_text
from misc.progress import progress

Size = Tuple[int, int]
CASIA_FILES = ("1", "2", "HR_1", "3", "4", "HR_2", "5", "6", "HR_3", "7", "8", "HR_4")
# file -> what it shows in the replica (the adapter's reading of the release)
_CASIA_KIND = {"1": "live", "2": "live", "HR_1": "live", "3": "print", "4": "print", "HR_2": "print",
               "5": "print", "6": "print", "HR_3": "print", "7": "replay", "8": "replay", "HR_4": "replay"}
REPLAY_SPLITS = ("train", "devel", "test")


def render(kind: str, identity: str, variant: int, frames: int, size: Size, key: str) -> List[np.ndarray]:
    """``frames`` BGR frames of ``identity`` shown ``live``, as a ``print`` or a ``replay``; ``variant``
    picks room, phone, printer and display; ``key`` seeds everything random."""
    seed = zlib.crc32(key.encode())
    rng = np.random.default_rng(seed)
    room = synthetic.make_room(np.random.default_rng([seed, 1]), 1 + variant % 3)
    phone = synthetic.PHONES[1 + variant % 6]
    person = synthetic.load_identity(identity)
    if kind == "live":
        return synthetic.render_live(person, room, size, frames, rng, phone)
    if kind == "print":
        return synthetic.render_print(person, room, size, frames, rng, phone, synthetic.PRINTERS[1 + variant % 2])
    return synthetic.render_replay(person, room, size, frames, rng, phone, synthetic.DISPLAYS[1 + variant % 2])


def write(path: Path, frames: Sequence[np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    synthetic.write_video(path, frames, 90)


def face_lines(frames: int, size: Size, key: str) -> str:
    """One approximate ``x1 y1 x2 y2`` face box per frame (centre where the renderer puts faces)."""
    w, h = size
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    lines = []
    for _ in range(frames):
        cx, cy = w * (0.5 + rng.uniform(-0.03, 0.03)), h * (0.46 + rng.uniform(-0.03, 0.03))
        bw, bh = 0.36 * h, 0.44 * h
        lines.append(f"{int(cx - bw / 2)} {int(cy - bh / 2)} {int(cx + bw / 2)} {int(cy + bh / 2)}")
    return "\n".join(lines) + "\n"


def _person(k: int) -> str:
    """The k-th identity of data/synthetic's pool: every subject of a replica is a different person."""
    pool = synthetic.identity_pool()
    if k >= len(pool):
        raise ValueError(f"a replica has at most {len(pool)} distinct people in all; ask for fewer subjects")
    return pool[k]


def _check(frames: int, size: Size) -> None:
    if frames < 1 or min(size) < 64:
        raise ValueError(f"need at least 1 frame and 64x64 pixels, got {frames} frames of {size[0]}x{size[1]}")


# ----------------------------------------------------------------------------------------------
# The three layouts
# ----------------------------------------------------------------------------------------------

def make_siw_release(root: str | Path, train: int = 3, test: int = 2, frames: int = 3, size: Size = (160, 120),
                     seed: int = 0, face_files: bool = True, show_progress: bool = True) -> Path:
    """A SiW-shaped release: Train subjects 001.., Test subjects 101..; seven videos each (see module)."""
    _check(frames, size)
    root = Path(root)
    videos = []  # (path, kind, identity, variant)
    for i, (split, number) in enumerate([("Train", k) for k in range(1, train + 1)] +
                                        [("Test", 100 + k) for k in range(1, test + 1)]):
        subject = f"{number:03d}"
        names = [(f"{subject}-1-1-1-1", "live")] + [(f"{subject}-1-2-{m}-1", "print") for m in (1, 2)]
        names += [(f"{subject}-1-3-{m}-1", "replay") for m in (1, 2, 3, 4)]
        for variant, (name, kind) in enumerate(names):
            folder = root / split / ("live" if kind == "live" else "spoof") / subject
            videos.append((folder / f"{name}.mov", kind, _person(i), variant))
    for path, kind, person, variant in progress(videos, desc="SiW replica", unit="video",
                                                disable=None if show_progress else True):
        write(path, render(kind, person, variant, frames, size, f"{seed}/{path.name}"))
        if face_files:
            atomic_write_text(path.with_suffix(".face"), face_lines(frames, size, f"{seed}/{path.name}"))
    return root


def make_casia_release(root: str | Path, train: int = 3, test: int = 2, frames: int = 3, size: Size = (160, 120),
                       seed: int = 0, files: Sequence[str] = CASIA_FILES, show_progress: bool = True) -> Path:
    """A CASIA-MFSD-shaped release: ``train_release/1..train``, ``test_release/1..test``, ``files`` each."""
    _check(frames, size)
    root = Path(root)
    videos = []
    subjects = [("train_release", k) for k in range(1, train + 1)] + [("test_release", k) for k in range(1, test + 1)]
    for i, (split, number) in enumerate(subjects):
        for variant, name in enumerate(files):
            videos.append((root / split / str(number) / f"{name}.avi", _CASIA_KIND[name], _person(i), variant))
    for path, kind, person, variant in progress(videos, desc="CASIA-MFSD replica", unit="video",
                                                disable=None if show_progress else True):
        write(path, render(kind, person, variant, frames, size, f"{seed}/{path.parent.parent.name}/{path.parent.name}/"
                                                                  f"{path.name}"))
    return root


def replay_attack_names(client: str, full: bool) -> List[Tuple[str, str, str]]:
    """(folder relative to the split, file name, kind) of one client's videos."""
    real = [("real", f"client{client}_session01_webcam_authenticate_{light}_{k}.mov", "live")
            for light in ("adverse", "controlled") for k in (1, 2)]
    attacks = []
    for support in ("fixed", "hand"):
        for light in ("adverse", "controlled"):
            for device, source, media in (("print", "highdef", ("photo",)), ("mobile", "mobile", ("photo", "video")),
                                          ("highdef", "highdef", ("photo", "video"))):
                for medium in media:
                    kind = "print" if device == "print" else "replay"
                    attacks.append((f"attack/{support}", f"attack_{device}_client{client}_session01_{source}_{medium}_"
                                                         f"{light}.mov", kind))
    if full:
        return real + attacks
    small = [("attack/fixed", f"attack_print_client{client}_session01_highdef_photo_adverse.mov", "print"),
             ("attack/hand", f"attack_mobile_client{client}_session01_mobile_video_adverse.mov", "replay"),
             ("attack/fixed", f"attack_highdef_client{client}_session01_highdef_photo_adverse.mov", "replay")]
    assert all(a in attacks for a in small)
    return real[:1] + small


def make_replay_release(root: str | Path, clients: Dict[str, int] | None = None, full: bool = False, frames: int = 3,
                        size: Size = (160, 120), seed: int = 0, enroll: bool = True,
                        show_progress: bool = True) -> Path:
    """A Replay-Attack-shaped release; ``clients`` per split (default 2 each), ids 001.. across splits."""
    _check(frames, size)
    root = Path(root)
    clients = clients or {s: 2 for s in REPLAY_SPLITS}
    videos, number = [], 0
    for split in REPLAY_SPLITS:
        for _ in range(clients.get(split, 0)):
            number += 1
            client = f"{number:03d}"
            for variant, (folder, name, kind) in enumerate(replay_attack_names(client, full)):
                videos.append((root / split / folder / name, kind, _person(number - 1), variant))
            if enroll:
                videos.append((root / "enroll" / split / f"client{client}_session01_enroll_adverse_1.mov", "live",
                               _person(number - 1), 0))
    for path, kind, person, variant in progress(videos, desc="Replay-Attack replica", unit="video",
                                                disable=None if show_progress else True):
        write(path, render(kind, person, variant, frames, size, f"{seed}/{path.name}"))
    return root


def _siwm_kind(instrument: str) -> str:
    """What the renderer draws for a SiW-M type (see the module docstring)."""
    kind = BENCHMARKS["SIWM"].kind(instrument)
    return {"replay": "replay", "makeup": "live"}.get(kind, "print")


def make_siwm_release(root: str | Path, train_live: int = 3, test_live: int = 2, per_type: int = 2,
                      types: Sequence[str] | None = None, frames: int = 3, size: Size = (160, 120), seed: int = 0,
                      show_progress: bool = True) -> Path:
    """A SiW-M-shaped release: ``train_live`` + ``test_live`` live videos and ``per_type`` videos of each of
    ``types`` (instrument names of data.other_benchmarks, default all thirteen), numbered from 1 per prefix."""
    _check(frames, size)
    root = Path(root)
    folders = {f.instrument: f for f in SPOOF_FOLDERS}
    types = list(types) if types is not None else list(folders)
    unknown = [t for t in types if t not in folders]
    if unknown:
        raise ValueError(f"unknown SiW-M spoof type(s) {unknown}; known: {', '.join(folders)}")
    videos = []  # (path, kind); the k-th video shows the k-th person of the pool, in turn
    videos += [(root / "Live/Train" / f"Live_{n}.mov", "live") for n in range(1, train_live + 1)]
    videos += [(root / "Live/Test" / f"Live_{n}.mov", "live")
               for n in range(train_live + 1, train_live + test_live + 1)]
    for t in types:
        f = folders[t]
        for n in range(1, per_type + 1):  # several prefixes (PaperCut's eye and mouth) take turns
            videos.append((root / f.path / f"{f.prefixes[(n - 1) % len(f.prefixes)]}_{n}.mov", _siwm_kind(t)))
    for k, (path, kind) in enumerate(progress(videos, desc="SiW-M replica", unit="video",
                                              disable=None if show_progress else True)):
        person = _person(k % len(synthetic.identity_pool()))
        write(path, render(kind, person, k, frames, size, f"{seed}/{path.parent.name}/{path.name}"))
    return root


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("Synthetic replicas of the SiW, SiW-M, CASIA-MFSD and Replay-Attack layouts",
                                add_help=False)
    p.add_argument("layout", choices=("siw", "siwm", "casia", "replay"), help="which release layout to imitate")
    p.add_argument("--out", type=Path, required=True, help="folder to write the replica into")
    p.add_argument("--subjects", type=int, nargs="+", default=None,
                   help="subjects per split: SiW 'train test' (default 3 2), SiW-M live videos 'train test' (3 2), "
                        "CASIA-MFSD 'train test' (3 2), Replay-Attack 'train devel test' (2 2 2)")
    p.add_argument("--types", nargs="+", default=None,
                   help="SiW-M: the spoof types to write (instrument names, e.g. replay print halfmask; default all "
                        "thirteen)")
    p.add_argument("--per-type", type=int, default=2, help="SiW-M: videos per spoof type (default 2)")
    p.add_argument("--frames", type=int, default=3, help="frames per video (default 3)")
    p.add_argument("--size", type=synthetic.parse_size, default=(160, 120), help="frame size WxH (default 160x120)")
    p.add_argument("--full", action="store_true", help="Replay-Attack: all 24 videos per client (default: 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the rendering (default 0)")
    return p


def main(args: argparse.Namespace) -> Path:
    n = args.subjects
    if args.layout == "siw":
        return make_siw_release(args.out, *(n or (3, 2)), frames=args.frames, size=args.size, seed=args.seed)
    if args.layout == "siwm":
        return make_siwm_release(args.out, *(n or (3, 2)), per_type=args.per_type, types=args.types,
                                 frames=args.frames, size=args.size, seed=args.seed)
    if args.layout == "casia":
        return make_casia_release(args.out, *(n or (3, 2)), frames=args.frames, size=args.size, seed=args.seed)
    clients = dict(zip(REPLAY_SPLITS, n)) if n else None
    return make_replay_release(args.out, clients, args.full, args.frames, args.size, args.seed)


if __name__ == "__main__":
    main(argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter).parse_args())
