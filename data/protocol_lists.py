"""OULU-NPU naming and protocols, in one place.

Video ids look like ``P_S_UU_F``: phone 1-6, session 1-3, user 01-55 and file 1-5, where file 1 is
the bona fide video, 2-3 are print attacks (two printers) and 4-5 are replay attacks (two displays).

A protocol list has one ``<label>,<video>`` row per video, no header: ``+1`` bona fide, ``-1``
print, ``-2`` replay in Test lists (Train and Dev lists of the release mark every attack ``-1``).
Protocols 1 and 2 have one ``Train/Dev/Test.txt`` triple; protocols 3 and 4 have six sub-protocols
``Train_k/Dev_k/Test_k.txt`` (k = 1..6, the phone left out). Rows this project appends for
generated images name folders starting with ``p`` and use ``1`` (live) / ``0`` (spoof): ``p1_1_k`` /
``p1_0_k`` as ``generated.py`` writes them, or ``p1_0_1_k`` / ``p1_0_0_k`` as in the released
``Train_g.txt``. Either way the row's label, not the name, tells live from spoof.

Users 01-20 are train, 21-35 dev and 36-55 test in every protocol.

The other benchmarks of the paper go through the same pipeline once an adapter (``data/adapters/``)
has rewritten them into this layout: their videos get adapted ids (``SIW_032_replay2_032-1-3-2-1``,
see :mod:`data.other_benchmarks`) and their protocols names such as ``siw_2_3`` or ``casia``, whose lists sit
in ``Protocols/Protocol_siw_2/Train_3.txt`` and ``Protocols/Protocol_casia/Train.txt``. The functions
below accept both: :func:`parse_protocol_name` returns ``(3, 2)`` for OULU-NPU and ``('siw_2', 3)``
for a named protocol, and :func:`protocol_path` / :func:`protocol_tag` take either.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

from data.other_benchmarks import (KIND_LABELS, NAMED_PROTOCOLS, AdaptedId, named_protocol_help, named_protocol_names,
                            parse_named_protocol)

SPLITS = ("Train", "Dev", "Test")
PROTOCOLS_WITH_SUBS = (3, 4)
NUM_SUBPROTOCOLS = 6

# File digit -> (presentation kind, instrument). The DSDG generator's spoof-type classes are the
# four instruments in this order (file 2..5 -> class 0..3).
FILE_KINDS = {1: ("bona fide", "live"), 2: ("print", "print1"), 3: ("print", "print2"),
              4: ("replay", "replay1"), 5: ("replay", "replay2")}
INSTRUMENTS = ("print1", "print2", "replay1", "replay2")

# Protocol labels (official lists and this project's score files).
LABEL_BONA_FIDE = 1
LABEL_PRINT = -1
LABEL_REPLAY = -2
LABEL_GENERATED_SPOOF = 0  # generated rows, and attacks of unknown instrument in score files

_VIDEO_RE = re.compile(r"^([1-6])_([1-3])_(\d{2})_([1-5])$")
# p<tag>_<0 spoof | 1 live>_<k>, tag an OULU-NPU protocol (1, 3_2) or a named one (siw_2_3, casia), as
# generated.py writes them; or the released Train_g.txt's p1_0_<0 spoof | 1 live>_<k> (k = 0..349), which
# has an extra 0 after an OULU-NPU tag (no OULU-NPU sub-protocol is 0, so the two forms cannot be confused).
_GENERATED_RE = re.compile(r"^p(?:(?:[1-4](?:_[1-6])?|[a-z][a-z0-9]*(?:_[a-z0-9]+)*)_[01]_\d+"
                           r"|[1-4](?:_[1-6])?_0_[01]_\d+)$")
# Paper split of the 55 users, the same in all four protocols.
USER_SPLITS = {"Train": range(1, 21), "Dev": range(21, 36), "Test": range(36, 56)}


class ProtocolError(ValueError):
    """A malformed protocol file or row; the message names the file and the line."""


@dataclass(frozen=True, order=True)
class VideoId:
    phone: int
    session: int
    user: int
    file: int

    @classmethod
    def parse(cls, name: str) -> "VideoId":
        """Parse ``P_S_UU_F`` (a path or a name with an extension is accepted)."""
        stem = Path(str(name)).name.split(".")[0]
        m = _VIDEO_RE.match(stem)
        if not m:
            raise ValueError(f"{name!r} is not an OULU-NPU video id of the form P_S_UU_F "
                             "(phone 1-6, session 1-3, two-digit user, file 1-5)")
        return cls(*(int(g) for g in m.groups()))

    def __str__(self) -> str:
        return f"{self.phone}_{self.session}_{self.user:02d}_{self.file}"

    @property
    def subject(self) -> str:
        """The user as the two-digit string the generator list uses."""
        return f"{self.user:02d}"

    @property
    def is_live(self) -> bool:
        return self.file == 1

    @property
    def kind(self) -> str:
        """'bona fide', 'print' or 'replay'."""
        return FILE_KINDS[self.file][0]

    @property
    def instrument(self) -> str:
        """'live', 'print1', 'print2', 'replay1' or 'replay2'."""
        return FILE_KINDS[self.file][1]

    @property
    def official_label(self) -> int:
        """Label as written in the official Test lists: +1 bona fide, -1 print, -2 replay."""
        return {"bona fide": LABEL_BONA_FIDE, "print": LABEL_PRINT, "replay": LABEL_REPLAY}[self.kind]


def is_generated(video: str) -> bool:
    """Rows appended for generated images name folders ``p<tag>_<0|1>_<k>`` (``p1_0_17``, ``psiw_2_3_1_4``),
    or ``p<tag>_0_<0|1>_<k>`` as the released ``Train_g.txt`` does (``p1_0_1_17``).

    Strict on purpose: no OULU-NPU id (digits) or adapted id (upper-case tag) can match."""
    return bool(_GENERATED_RE.match(video))


@dataclass(frozen=True)
class VideoInfo:
    """What the stages need to know about a real video: its person, whether it is bona fide, and the
    generator list's last column (1 bona fide; OULU-NPU's file digit 2..5 or 2 + spoof class otherwise)."""
    subject: str
    is_live: bool
    spoof_code: int


def describe_video(video: str) -> VideoInfo:
    """Subject, bona fide flag and spoof code of an OULU-NPU id or an adapted id (ValueError otherwise)."""
    try:
        v = VideoId.parse(video)
        return VideoInfo(v.subject, v.is_live, v.file)
    except ValueError:
        pass
    try:
        a = AdaptedId.parse(video)
    except ValueError:
        raise ValueError(f"{video!r} is neither an OULU-NPU video id (P_S_UU_F) nor an adapted video id "
                         "(<DATASET>_<subject>_<instrument>_<clip>, written by data/adapters/)") from None
    return VideoInfo(a.subject, a.is_live, a.spoof_code)


@dataclass(frozen=True)
class ProtocolRow:
    label: int
    video: str

    @property
    def is_live(self) -> bool:
        return self.label == LABEL_BONA_FIDE

    @property
    def generated(self) -> bool:
        return is_generated(self.video)

    def format(self) -> str:
        return f"{'+1' if self.label == 1 else self.label},{self.video}"


def parse_row(line: str, source: str = "<row>", lineno: int = 0, oulu_ids: bool = True) -> ProtocolRow:
    """Parse one ``<label>,<video>`` row. ``oulu_ids`` checks real (non-generated) names are ``P_S_UU_F``."""
    where = f"{source}:{lineno}" if lineno else source
    parts = [p.strip() for p in line.strip().split(",")]
    if len(parts) != 2 or not parts[1]:
        raise ProtocolError(f"{where}: expected '<label>,<video>' (e.g. '+1,1_1_01_1'), got {line.strip()!r}")
    try:
        label = int(parts[0])
    except ValueError:
        raise ProtocolError(f"{where}: label {parts[0]!r} is not an integer (+1 bona fide, -1 print, "
                            f"-2 replay, 0/1 generated) in {line.strip()!r}") from None
    video = parts[1]
    if oulu_ids and not is_generated(video):
        live, what = _real_video_liveness(video, where)
        if (label == LABEL_BONA_FIDE) != live:
            raise ProtocolError(f"{where}: label {parts[0]} contradicts video {video} "
                                f"({what} is {'bona fide' if live else 'an attack'})")
    return ProtocolRow(label, video)


def _real_video_liveness(video: str, where: str) -> Tuple[bool, str]:
    """(bona fide?, what decided it) for an OULU-NPU or adapted id; ProtocolError for other names."""
    try:
        vid = VideoId.parse(video)
        return vid.is_live, f"file {vid.file}"
    except ValueError as e:
        oulu_error = e
    if video[:1].isdigit():  # meant as an OULU-NPU id: its own message is the helpful one
        raise ProtocolError(f"{where}: {oulu_error}")
    try:
        a = AdaptedId.parse(video)
    except ValueError as e:
        raise ProtocolError(f"{where}: {video!r} is neither an OULU-NPU video id (P_S_UU_F) nor an adapted "
                            f"video id ({e})") from None
    return a.is_live, f"instrument {a.instrument}"


def read_protocol(path: str | Path, oulu_ids: bool = True) -> List[ProtocolRow]:
    """Read a protocol list; any malformed row raises :class:`ProtocolError` naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise ProtocolError(f"{path}: protocol file not found")
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                rows.append(parse_row(line, str(path), lineno, oulu_ids))
    if not rows:
        raise ProtocolError(f"{path}: protocol file has no rows")
    return rows


def format_protocol(rows: Iterable[ProtocolRow]) -> str:
    return "".join(r.format() + "\n" for r in rows)


# ----------------------------------------------------------------------------------------------
# Protocol names and membership
# ----------------------------------------------------------------------------------------------

def parse_protocol_name(name: str | int) -> Tuple[Union[int, str], Optional[int]]:
    """``'1'`` -> (1, None); ``'3_2'``, ``'3.2'``, ``'P3_2'`` or ``'Protocol_3_2'`` -> (3, 2).

    Protocols of the adapted datasets come back by name: ``'siw_2_3'`` -> ('siw_2', 3), ``'casia'`` ->
    ('casia', None) (see :mod:`data.other_benchmarks`).
    """
    s = str(name).strip()
    m = re.fullmatch(r"(?:protocol_?|p)?([1-4])(?:[_.\-]([1-6]))?", s, flags=re.IGNORECASE)
    if not m:
        named = parse_named_protocol(s)
        if named is None:
            raise ValueError(f"unknown protocol {name!r}: OULU-NPU 1, 2, 3_k or 4_k with k in 1..6, "
                             f"or one of the adapted datasets': {named_protocol_help()}")
        return named
    proto, sub = int(m.group(1)), (int(m.group(2)) if m.group(2) else None)
    if proto in PROTOCOLS_WITH_SUBS and sub is None:
        raise ValueError(f"protocol {proto} has six sub-protocols: name one, e.g. {proto}_1")
    if proto not in PROTOCOLS_WITH_SUBS and sub is not None:
        raise ValueError(f"protocol {proto} has no sub-protocols (got {name!r})")
    return proto, sub


def protocol_tag(protocol: Union[int, str], sub: Optional[int] = None) -> str:
    """``1``, ``3_2`` or ``siw_2_3``: the short name used in folder names and generated-row prefixes."""
    return f"{protocol}" if sub is None else f"{protocol}_{sub}"


def all_protocol_names() -> List[str]:
    """The fourteen OULU-NPU protocol names (the adapted datasets': :func:`data.other_benchmarks.named_protocol_names`)."""
    return ["1", "2"] + [f"{p}_{k}" for p in PROTOCOLS_WITH_SUBS for k in range(1, NUM_SUBPROTOCOLS + 1)]


def expand_protocol(name: str | int) -> List[str]:
    """The protocol names a name stands for: ``'3'`` -> 3_1 .. 3_6, ``'siw_2'`` -> siw_2_1 .. siw_2_4;
    a protocol without sub-protocols, or a single sub-protocol (``'3_2'``), stands for itself."""
    s = str(name).strip()
    if s.isdigit() and int(s) in PROTOCOLS_WITH_SUBS:
        return [protocol_tag(int(s), k) for k in range(1, NUM_SUBPROTOCOLS + 1)]
    base = s.lower().removeprefix("protocol_")
    if NAMED_PROTOCOLS.get(base):
        return named_protocol_names(base)
    return [protocol_tag(*parse_protocol_name(s))]


def protocol_list_name(split: str, sub: Optional[int] = None) -> str:
    """File name of a list inside ``Protocol_N/``: ``Train.txt`` or ``Train_3.txt``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    return f"{split}.txt" if sub is None else f"{split}_{sub}.txt"


def protocol_path(protocols_dir: str | Path, protocol: Union[int, str], split: str,
                  sub: Optional[int] = None) -> Path:
    """``<protocols_dir>/Protocol_<N>/<Split>[_k].txt`` (the release calls ``protocols_dir`` ``Protocols``);
    ``Protocol_<name>/`` for a named protocol such as ``siw_2``."""
    return Path(protocols_dir) / f"Protocol_{protocol}" / protocol_list_name(split, sub)


def membership(protocol: int, split: str, sub: Optional[int] = None) -> Callable[[VideoId], bool]:
    """Which videos of the release a protocol split contains (from the protocol definitions)."""
    users = USER_SPLITS[split]
    test = split == "Test"
    if protocol == 1:   # unseen environment: sessions 1-2 for train/dev, session 3 for test
        return lambda v: v.user in users and (v.session == 3 if test else v.session in (1, 2))
    if protocol == 2:   # unseen instrument: print1+replay1 for train/dev, print2+replay2 for test
        files = (1, 3, 5) if test else (1, 2, 4)
        return lambda v: v.user in users and v.file in files
    if protocol == 3:   # unseen phone: leave phone `sub` out of train/dev, test on it alone
        return lambda v: v.user in users and ((v.phone == sub) if test else (v.phone != sub))
    if protocol == 4:   # all three at once
        files = (1, 3, 5) if test else (1, 2, 4)
        return lambda v: (v.user in users and v.file in files
                          and ((v.phone == sub and v.session == 3) if test
                               else (v.phone != sub and v.session in (1, 2))))
    raise ValueError(f"unknown protocol {protocol}")


def official_rows(videos: Sequence[VideoId], protocol: int, split: str,
                  sub: Optional[int] = None) -> List[ProtocolRow]:
    """Rows of a protocol list for the given videos, labelled as the release labels them.

    Train and Dev lists mark every attack -1; Test lists separate print (-1) and replay (-2).
    """
    keep = membership(protocol, split, sub)
    rows = []
    for v in sorted(videos, key=lambda v: (v.phone, v.session, v.user, v.file)):
        if keep(v):
            label = v.official_label if split == "Test" else (1 if v.is_live else -1)
            rows.append(ProtocolRow(label, str(v)))
    return rows


def label_kind(label: int) -> str:
    """Meaning of a protocol/score-file label: 'bona fide', 'print', 'replay', SiW-M's 'mask', 'makeup' and
    'partial' (-3..-5, :data:`data.other_benchmarks.KIND_LABELS`), 'attack' (unknown) or 'instrument <n>' for other
    negative integers."""
    if label == 1:
        return "bona fide"
    if label == 0:
        return "attack"
    kinds = {v: k for k, v in KIND_LABELS.items()}
    return kinds.get(label, f"instrument {label}")
