"""The paper's other benchmarks (SiW, SiW-M, CASIA-MFSD, Replay-Attack) as this project names them.

Every stage of the pipeline reads the OULU-NPU release layout. The dataset adapters
(``data/adapters/``) rewrite the other releases into that layout: split folders
``Train_files/ Dev_files/ Test_files/`` of links to the original videos, ``Protocols/Protocol_<name>/``
lists in the ``<label>,<video>`` format, under *adapted video ids* of one grammar::

    <DATASET>_<subject>_<instrument>_<clip>      SIW_032_replay2_032-1-3-2-1
                                                 CASIA_tr07_cut_high
                                                 REPLAY_001_live_s01-adverse-1

* ``DATASET`` is an upper-case tag (``SIW``, ``SIWM``, ``CASIA``, ``REPLAY``). OULU-NPU ids start with a digit and
  generated rows with a lower-case ``p``, so no adapted id can be read as either.
* ``subject`` (letters and digits) is the person; the generator pairs spoof and live frames of one subject.
* ``instrument`` is ``live`` or one of the dataset's attack instruments (:data:`BENCHMARKS`); their order
  gives the generator's spoof-type classes, and their kind (print or replay) the list label.
* ``clip`` (letters, digits, ``-``) tells apart the videos of one subject and instrument.

List labels: ``+1`` bona fide, ``-1`` print, ``-2`` replay (the labels of the OULU-NPU Test lists), in
every split, so that the metrics report APCER per attack kind and its maximum as for OULU-NPU. SiW-M's
other attack kinds continue the negative numbers: ``-3`` mask, ``-4`` makeup, ``-5`` partial.

Named protocols (besides OULU-NPU's ``1``, ``2``, ``3_k``, ``4_k``): ``siw_1``, ``siw_2_k`` (k = 1..4,
the replay medium left out), ``siw_3_k`` (k = 1: train print, test replay; k = 2: the reverse),
``siwm_k`` (k = 1..13, SiW-M's k-th spoof type left out: :func:`held_out_instrument`), ``casia`` and
``replay``. The lists of protocol ``<name>`` live in ``Protocols/Protocol_<name>/``
(``Train.txt`` or ``Train_k.txt``), exactly where :func:`data.protocol_lists.protocol_path` looks.

This module imports nothing from the project, so :mod:`data.protocol_lists` can build on it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

LIVE = "live"
# List labels of the attack kinds (bona fide is +1). Print and replay are OULU-NPU's; the others are SiW-M's.
KIND_LABELS = {"print": -1, "replay": -2, "mask": -3, "makeup": -4, "partial": -5}


@dataclass(frozen=True)
class Benchmark:
    """One adapted dataset: its id tag, attack instruments (name, kind) in spoof-class order, and protocols
    (name -> number of sub-protocols, None when it has none)."""
    tag: str
    title: str
    instruments: Tuple[Tuple[str, str], ...]
    protocols: Dict[str, Optional[int]]

    @property
    def instrument_names(self) -> Tuple[str, ...]:
        return tuple(name for name, _ in self.instruments)

    def kind(self, instrument: str) -> str:
        """'bona fide' or the attack kind: 'print', 'replay' (every dataset), 'mask', 'makeup', 'partial' (SiW-M)."""
        if instrument == LIVE:
            return "bona fide"
        return dict(self.instruments)[instrument]


# SiW: print media 1-2 and replay media 1-4 (file names SSS-sensor-type-medium-session, type 2 print,
# 3 replay). SiW-M: its thirteen spoof types in the order of the Deep Tree Network paper's table (Liu et
# al., CVPR 2019), which is also the order of its leave-one-out protocols siwm_1..siwm_13; the release
# folder of each is in data/adapters/siwm.py. CASIA-MFSD: warped photo, cut photo, video replay.
# Replay-Attack: printed photo, and photos or videos on a phone (mobile) or a tablet (highdef) screen.
SIWM_INSTRUMENTS = (("replay", "replay"), ("print", "print"),
                    ("halfmask", "mask"), ("silicone", "mask"), ("transparent", "mask"), ("papercraft", "mask"),
                    ("mannequin", "mask"),
                    ("obfuscation", "makeup"), ("impersonation", "makeup"), ("cosmetic", "makeup"),
                    ("funnyeye", "partial"), ("paperglasses", "partial"), ("partialpaper", "partial"))
BENCHMARKS: Dict[str, Benchmark] = {b.tag: b for b in (
    Benchmark("SIW", "SiW", (("print1", "print"), ("print2", "print"), ("replay1", "replay"), ("replay2", "replay"),
                             ("replay3", "replay"), ("replay4", "replay")),
              {"siw_1": None, "siw_2": 4, "siw_3": 2}),
    Benchmark("SIWM", "SiW-M", SIWM_INSTRUMENTS, {"siwm": len(SIWM_INSTRUMENTS)}),
    Benchmark("CASIA", "CASIA-MFSD", (("warped", "print"), ("cut", "print"), ("video", "replay")), {"casia": None}),
    Benchmark("REPLAY", "Replay-Attack", (("print", "print"), ("mobile", "replay"), ("highdef", "replay")),
              {"replay": None}),
)}
NAMED_PROTOCOLS: Dict[str, Optional[int]] = {p: n for b in BENCHMARKS.values() for p, n in b.protocols.items()}

_ID_RE = re.compile(r"^([A-Z]+)_([0-9A-Za-z]+)_([a-z]+[0-9]*)_([0-9A-Za-z][0-9A-Za-z-]*)$")
ID_GRAMMAR = "<DATASET>_<subject>_<instrument>_<clip> (e.g. SIW_032_replay2_032-1-3-2-1)"


@dataclass(frozen=True, order=True)
class AdaptedId:
    dataset: str
    subject: str
    instrument: str
    clip: str

    def __post_init__(self):
        if self.dataset not in BENCHMARKS:
            raise ValueError(f"unknown dataset tag {self.dataset!r}; known: {', '.join(BENCHMARKS)}")
        known = (LIVE,) + BENCHMARKS[self.dataset].instrument_names
        if self.instrument not in known:
            raise ValueError(f"{self.dataset} has no instrument {self.instrument!r}; known: {', '.join(known)}")
        m = _ID_RE.match(str(self))
        if not m or m.groups() != (self.dataset, self.subject, self.instrument, self.clip):
            raise ValueError(f"{str(self)!r} is not an adapted video id of the form {ID_GRAMMAR}")

    @classmethod
    def parse(cls, name: str) -> "AdaptedId":
        """Parse an adapted id (a path or a name with an extension is accepted)."""
        stem = str(name).replace("\\", "/").rsplit("/", 1)[-1].split(".")[0]
        m = _ID_RE.match(stem)
        if not m:
            raise ValueError(f"{name!r} is not an adapted video id of the form {ID_GRAMMAR}")
        return cls(*m.groups())

    def __str__(self) -> str:
        return f"{self.dataset}_{self.subject}_{self.instrument}_{self.clip}"

    @property
    def benchmark(self) -> Benchmark:
        return BENCHMARKS[self.dataset]

    @property
    def is_live(self) -> bool:
        return self.instrument == LIVE

    @property
    def kind(self) -> str:
        return self.benchmark.kind(self.instrument)

    @property
    def label(self) -> int:
        """List label: +1 bona fide, then :data:`KIND_LABELS` (-1 print, -2 replay, -3 mask, -4 makeup, -5 partial)."""
        return 1 if self.is_live else KIND_LABELS[self.kind]

    @property
    def spoof_code(self) -> int:
        """The generator list's last column: 1 bona fide, 2 + spoof class for attacks (OULU's file digit
        plays this role there: 2..5 -> classes 0..3)."""
        return 1 if self.is_live else 2 + self.benchmark.instrument_names.index(self.instrument)


def is_adapted_id(name: str) -> bool:
    try:
        AdaptedId.parse(name)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------------------------
# Named protocols
# ----------------------------------------------------------------------------------------------

def named_protocol_help() -> str:
    """``siw_1, siw_2_k (k = 1..4), ...`` for error messages and --help."""
    return ", ".join(p if n is None else f"{p}_k (k = 1..{n})" for p, n in NAMED_PROTOCOLS.items())


def parse_named_protocol(name: str) -> Optional[Tuple[str, Optional[int]]]:
    """``'siw_2_3'`` -> ('siw_2', 3); ``'casia'`` -> ('casia', None); None when ``name`` names no
    protocol of an adapted dataset. A known protocol with a wrong sub-protocol raises ValueError."""
    s = re.sub(r"^protocol_", "", str(name).strip().lower())
    for base, subs in NAMED_PROTOCOLS.items():
        if s == base:
            if subs is not None:
                raise ValueError(f"protocol {base} has {subs} sub-protocols: name one, e.g. {base}_1")
            return base, None
        m = re.fullmatch(re.escape(base) + r"_(\d+)", s)
        if m:
            if subs is None:
                raise ValueError(f"protocol {base} has no sub-protocols (got {name!r})")
            k = int(m.group(1))
            if not 1 <= k <= subs:
                raise ValueError(f"protocol {base} has sub-protocols 1..{subs}, not {k}")
            return base, k
    return None


def held_out_instrument(protocol: str) -> Optional[str]:
    """The spoof type a leave-one-out sub-protocol tests on (``'siwm_3'`` -> ``'halfmask'``); None for
    every other protocol name."""
    parsed = parse_named_protocol(protocol)
    if parsed is None or parsed[0] != "siwm" or parsed[1] is None:
        return None
    return BENCHMARKS["SIWM"].instrument_names[parsed[1] - 1]


def subprotocol_names(protocols: List[str]) -> List[str]:
    """A short name per sub-protocol for reports: the held-out spoof type for SiW-M, the name itself otherwise."""
    return [held_out_instrument(p) or p for p in protocols]


def named_protocol_names(base: Optional[str] = None) -> List[str]:
    """Every named protocol (or those of ``base``) with its sub-protocols spelled out: siw_1, siw_2_1, ..."""
    out = []
    for p, n in NAMED_PROTOCOLS.items():
        if base is None or p == base:
            out += [p] if n is None else [f"{p}_{k}" for k in range(1, n + 1)]
    return out
