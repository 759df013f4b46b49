"""Presentation-attack-detection metrics: ISO/IEC 30107-3 and the original CDCN/DSDG rule.

Scores are per video, **higher = more bona fide**. Labels follow the OULU-NPU protocol lists:
``1`` (written ``+1`` or ``1``) bona fide, ``-1`` print, ``-2`` replay, any other negative integer
another instrument (PAI), and ``0`` an attack whose instrument is unknown (the original two-column
score files, generated spoofs). Every attack label is its own PAI group, so a file whose attacks are
all ``0`` (or a Dev list whose attacks are all ``-1``) has one group and its worst-PAI APCER equals
the pooled one.

Two evaluation modes (``evaluate(dev, test, mode=...)``); every rate is a fraction in [0, 1].

``mode="iso"`` (ISO/IEC 30107-3, OULU-NPU protocol papers, bob.pad convention)
    * Decision: bona fide iff ``score >= threshold`` (a tie goes to bona fide).
    * Threshold: the Dev EER threshold. Candidates are the distinct Dev scores (so the threshold is
      always a real Dev score and every classification a threshold can produce on Dev, except
      "reject everything", is reachable). We keep the candidate that minimises |FPR - FNR|, with FPR
      the pooled Dev APCER and FNR the Dev BPCER; ties are broken by the smaller FPR + FNR, then by
      the **larger** threshold (the more secure one). The comparisons are done on integer counts,
      so they are exact. No interpolation between ROC points.
    * ``eer_dev`` / ``eer_test``: each set's own EER point chosen by that rule, reported as
      (FPR + FNR) / 2 there (equal to both rates when the point is exact). No interpolation.
    * ``apcer_per_pai[label]`` = attacks of that label accepted / attacks of that label;
      ``apcer`` = max over the PAIs present in Test; ``apcer_pooled`` = all attacks together;
      ``bpcer`` = bona fide rejected / bona fide; ``acer = (apcer + bpcer) / 2``;
      ``acer_pooled = (apcer_pooled + bpcer) / 2``; ``hter = (FAR + FRR) / 2`` with pooled attacks
      (numerically the same as ``acer_pooled``: there is no failure-to-acquire here; the key exists
      for the Replay-Attack / CASIA-MFSD convention).
    * ``bpcer_at_apcer["0.05"]`` (BPCER20) and ``["0.01"]`` (BPCER100): the threshold is the lowest
      one whose worst-PAI **Dev** APCER is <= x (candidates: the distinct Dev scores and, if none
      qualifies, the smallest float above the highest Dev score); BPCER is then measured on Test.
      The thresholds are reported in ``bpcer_at_apcer_threshold``.
    * ``auc``: area under the Test ROC, bona fide positive, tied scores count one half
      (``sklearn.metrics.roc_auc_score``).

``mode="cdcn"`` (reproduces ``performances`` of ZitongYu/CDCN ``utils.py``, copied into DSDG)
    * Threshold: ``fpr, tpr, thr = sklearn.metrics.roc_curve(labels == 1, scores, pos_label=1)`` on
      Dev with sklearn's defaults (``drop_intermediate=True``: collinear ROC points are dropped
      *before* the search, which can move the chosen point), index = ``argmin |tpr + fpr - 1|``
      (numpy's first occurrence; the original first computes Youden's index and then overwrites
      it), threshold = ``thr[index]``. With scikit-learn >= 1.3 ``thr[0]`` is ``inf`` (older
      versions used max + 1); we call the installed sklearn, so the current behaviour is what is
      reproduced. Index 0 only wins when every Dev score is equal, and then both conventions
      classify everything as attack.
    * Decision: bona fide iff ``score > threshold`` (a tie goes to **attack**).
    * ``apcer_pooled``, ``bpcer`` and ``acer_pooled = (apcer_pooled + bpcer) / 2`` are exactly the
      original's Test ``APCER``, ``BPCER`` and ``ACER``; ``acc`` its ``ACC``; ``dev`` holds its
      ``val_ACC``/``val_ACER``; ``oracle_threshold`` / ``oracle_acer`` its ``best_test_threshold`` /
      ``test_threshold_ACER`` (a threshold tuned on Test: optimistic, never report it).
    * ``apcer`` is still the ISO worst-PAI APCER, computed at the cdcn threshold with the cdcn tie
      rule, and ``acer`` uses it; the original never reports these. ``eer_dev`` / ``eer_test`` are
      the original's "err" (``fpr[index]`` of each set's own ROC). ``bpcer_at_apcer`` uses the
      strict rule too (lowest Dev score t such that the worst-PAI Dev APCER of ``score > t`` <= x).
    * Every label other than 1 is an attack, as in the original (its own files only hold 1 and 0).

Cross-dataset convention (Replay-Attack, CASIA-MFSD): ``hter`` above is measured on the *target*
Test set at the threshold of the *source* Dev set, which is what ``evaluate(source_dev, target_test)``
does. The original code has a second rule, ``performances_CASIA_Replay``, that takes the threshold at
the EER point of the evaluated file itself; ``evaluate(..., target_eer=True)`` adds it under
``target_eer`` for comparison (:func:`target_eer_hter`). It never sees a Dev set, so it is optimistic.

Coverage: a result may carry ``coverage`` = {'dev'/'test': {'listed', 'scored', 'missing'[, 'missing_file']}}
(DUM/test.py adds it from the protocol lists, ``DUM.evaluate --dev-list/--test-list`` from given lists);
:func:`format_table` then prints "N of M listed videos scored" for Dev and Test and names the
videos without a score, and says so when the lists are unknown, so that a missing Test video never
disappears silently.

Sets without bona fide or without attacks raise ``ValueError`` naming the file: the rates would
be 0/0. Malformed score files raise :class:`ScoreFileError` naming file and line.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from data.protocol_lists import label_kind
from misc.io import atomic_write_text

BONA_FIDE = 1
UNKNOWN_ATTACK = 0
MODES = ("iso", "cdcn")
# BPCER is reported at these Dev APCER levels (BPCER20 and BPCER100 in ISO/IEC 30107-3 terms).
APCER_LEVELS = (0.05, 0.01)
# Headline metrics that aggregate() averages over sub-protocols (per-PAI and BPCER@APCER are added).
SCALAR_METRICS = ("apcer", "apcer_pooled", "bpcer", "acer", "acer_pooled", "hter", "acc",
                  "eer_dev", "eer_test", "auc")


class ScoreFileError(ValueError):
    """A malformed score file; the message names the file and the line."""


@dataclass
class ScoreSet:
    """Per-video scores of one split.

    ids: N video ids (for two-column files ``line:<n>``); scores: (N,) float64, higher = more bona
    fide; labels: (N,) int64 protocol labels (1 bona fide, 0 unknown attack, < 0 an instrument);
    source: where the scores came from, used in error messages.
    """
    ids: List[str]
    scores: np.ndarray
    labels: np.ndarray
    source: str = field(default="<scores>", compare=False)

    def __post_init__(self) -> None:
        self.ids = [str(i) for i in self.ids]
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.labels = np.asarray(self.labels).reshape(-1)
        if self.labels.size and not np.all(self.labels == np.round(self.labels)):
            raise ValueError(f"{self.source}: labels must be integers")
        self.labels = self.labels.astype(np.int64)
        if not (len(self.ids) == self.scores.size == self.labels.size):
            raise ValueError(f"{self.source}: {len(self.ids)} ids, {self.scores.size} scores and "
                             f"{self.labels.size} labels; they must be the same length")
        if np.any(self.labels > BONA_FIDE):
            bad = int(self.labels[self.labels > BONA_FIDE][0])
            raise ValueError(f"{self.source}: label {bad} is not a protocol label (1 bona fide, "
                             "0 unknown attack, negative integers instruments)")
        if not np.all(np.isfinite(self.scores)):
            raise ValueError(f"{self.source}: scores must be finite (found nan or inf)")

    def __len__(self) -> int:
        return self.scores.size

    @property
    def bona_fide(self) -> np.ndarray:
        """(N,) bool mask of bona fide presentations."""
        return self.labels == BONA_FIDE

    @property
    def pais(self) -> List[int]:
        """Attack labels present, in the order 0, -1, -2, ..."""
        return sorted({int(x) for x in self.labels[~self.bona_fide]}, reverse=True)

    def require_both_classes(self) -> None:
        """Raise ValueError naming the source if bona fide or attacks are missing (rates would be 0/0)."""
        n_bf = int(self.bona_fide.sum())
        if n_bf == 0 or n_bf == len(self):
            missing = "bona fide presentations (label 1)" if n_bf == 0 else "attacks (labels <= 0)"
            raise ValueError(f"{self.source}: no {missing} among {len(self)} scores; APCER/BPCER "
                             "need both classes")

    def counts(self) -> Dict[str, object]:
        """{'bona_fide': n, 'attack': {label: n}} with labels as strings."""
        return {"bona_fide": int(self.bona_fide.sum()),
                "attack": {str(p): int((self.labels == p).sum()) for p in self.pais}}


# ----------------------------------------------------------------------------------------------
# Score files
# ----------------------------------------------------------------------------------------------

# Python's float() accepts '1_000' and ' inf '; a score must look like a plain decimal number.
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_LABEL = re.compile(r"^[+-]?\d+(\.0*)?$")  # integers, also as numpy prints them ('1.0')


def _parse_score(tok: str, where: str) -> float:
    if tok.lower().lstrip("+-") in ("nan", "inf", "infinity"):
        raise ScoreFileError(f"{where}: score {tok!r} is not finite (a broken model output?)")
    if not _NUMBER.match(tok):
        raise ScoreFileError(f"{where}: score {tok!r} is not a number")
    return float(tok)


def _parse_label(tok: str, where: str, two_columns: bool) -> int:
    if not _LABEL.match(tok):
        raise ScoreFileError(f"{where}: label {tok!r} is not an integer")
    label = int(float(tok))
    if two_columns and label not in (0, 1):
        raise ScoreFileError(f"{where}: label {tok!r} in a two-column '<score> <label>' file; that "
                             "(original) format uses 1 = live, 0 = attack. Write "
                             "'<video_id> <score> <label>' for per-instrument labels")
    if label > BONA_FIDE:
        raise ScoreFileError(f"{where}: label {tok!r} is unknown (+1/1 bona fide, -1 print, "
                             "-2 replay, other negatives other instruments, 0 unknown attack)")
    return label


def read_scores(path: str | Path) -> ScoreSet:
    """Read ``<video_id> <score> <label>`` lines (or the original ``<score> <label>`` lines).

    Blank lines and lines starting with ``#`` are skipped. Raises :class:`ScoreFileError` naming the
    file and line for: a missing or empty file, a wrong column count, columns that change within
    the file, a non-numeric or non-finite score, an unknown label and a repeated video id.
    """
    path = Path(path)
    if not path.is_file():
        raise ScoreFileError(f"{path}: score file not found")
    ids, scores, labels = [], [], []
    first_line: Dict[str, int] = {}
    ncols = None
    with open(path, encoding="utf-8-sig") as f:  # -sig: tolerate a byte-order mark
        for lineno, line in enumerate(f, 1):
            toks = line.split()
            if not toks or toks[0].startswith("#"):
                continue
            where = f"{path}:{lineno}"
            if len(toks) not in (2, 3):
                raise ScoreFileError(f"{where}: expected '<video_id> <score> <label>' or the original "
                                     f"'<score> <label>', got {len(toks)} columns: {line.strip()!r}")
            if ncols is None:
                ncols = len(toks)
            elif len(toks) != ncols:
                raise ScoreFileError(f"{where}: {len(toks)} columns, but the file's first row has "
                                     f"{ncols}; one file must use one format")
            if ncols == 3:
                vid = toks[0]
                if vid in first_line:
                    raise ScoreFileError(f"{where}: video id {vid!r} repeats line {first_line[vid]}")
                first_line[vid] = lineno
            else:
                vid = f"line:{lineno}"
            scores.append(_parse_score(toks[-2], where))
            labels.append(_parse_label(toks[-1], where, two_columns=ncols == 2))
            ids.append(vid)
    if not ids:
        raise ScoreFileError(f"{path}: score file has no scores")
    return ScoreSet(ids, np.array(scores), np.array(labels), source=str(path))


def write_scores(path: str | Path, ids: Sequence[str], scores: Sequence[float], labels: Sequence[int]) -> None:
    """Write ``<video_id> <score> <label>`` lines atomically; bona fide is written ``+1``.

    Scores are written with ``repr`` so that reading the file back gives the same floats.
    """
    s = ScoreSet(list(ids), np.asarray(scores), np.asarray(labels), source=str(path))
    if not len(s):
        raise ValueError(f"{path}: refusing to write an empty score file")
    seen = set()
    for vid in s.ids:
        if not vid or any(c.isspace() for c in vid) or vid.startswith("#"):
            raise ValueError(f"{path}: video id {vid!r} is empty, contains whitespace or starts with '#'")
        if vid in seen:
            raise ValueError(f"{path}: video id {vid!r} appears twice")
        seen.add(vid)
    lines = [f"{vid} {float(sc)!r} {'+1' if lb == BONA_FIDE else int(lb)}\n"
             for vid, sc, lb in zip(s.ids, s.scores, s.labels)]
    atomic_write_text(path, "".join(lines))


# Score files for bob.pad (Idiap's Bob toolkit), so its users can compare with their baselines:
# ``bob pad metrics -e scores-dev.csv scores-eval.csv``. Two formats, chosen by the file extension:
#   .csv  the CSV files of bob.pad.base 5.x and 6.x (6.0.1 the latest on PyPI): a header line, then
#         claimed_id,test_label,is_bonafide,attack_type,sample_n,score per presentation (the columns
#         ``bob pad gen`` writes; ``bob pad metrics`` reads is_bonafide (True/False), attack_type (the PAI
#         it groups attacks by, empty for bona fide) and score);
#   other the four-column text files of bob.pad.base before 5.0 (Bob 4-col, read by
#         bob.bio.base.score.load.four_column): ``claimed_id real_id test_label score``; a bona fide line has
#         real_id == claimed_id, an attack's real_id names its PAI (here attack/<type>), which is how those
#         versions' ``bob pad metrics`` split APCER per PAI by default.
# Both are higher = more bona fide, as ours. One line per video: claimed_id and test_label are the video id
# (the protocol lists name no client apart from the id), sample_n 0; attack types are data.protocol_lists.label_kind's
# names (print, replay, ...; 'unknown' for label 0).
BOB_VERSIONS = {".csv": "bob.pad.base 5.x/6.x CSV", "other": "bob.pad.base < 5.0 four-column"}


def bob_attack_type(label: int) -> str:
    """The PAI name of a protocol label in bob score files: 'print', 'replay', 'mask', ..., 'unknown' for 0,
    'instrument_-7' for unnamed ones (no spaces: the four-column format is space-separated)."""
    return "unknown" if label == UNKNOWN_ATTACK else label_kind(int(label)).replace(" ", "_")


def bob_score_paths(path: str | Path, tag: str = "") -> Tuple[Path, Path]:
    """(dev, eval) file names of ``--bob-scores PATH``: '-dev' / '-eval' (bob's scores-dev / scores-eval)
    inserted before the extension, after ``tag`` ('_cdcn', '_3', ...): scores.csv -> scores-dev.csv."""
    path = Path(path)
    return (path.with_name(f"{path.stem}{tag}-dev{path.suffix}"), path.with_name(f"{path.stem}{tag}-eval{path.suffix}"))


def write_bob_scores(path: str | Path, s: ScoreSet) -> str:
    """Write ``s`` as a bob.pad score file (CSV for a .csv name, else four-column; see the comment above),
    atomically. Returns the format written (a :data:`BOB_VERSIONS` value)."""
    path = Path(path)
    for vid in s.ids:
        if not vid or any(c.isspace() or c in ',"' for c in vid):
            raise ValueError(f"{path}: video id {vid!r} is empty or holds whitespace, a comma or a quote, which "
                             "bob's score files cannot carry")
    if path.suffix.lower() == ".csv":
        lines = ["claimed_id,test_label,is_bonafide,attack_type,sample_n,score\n"]
        lines += [f"{vid},{vid},{'True' if lb == BONA_FIDE else 'False'},"
                  f"{'' if lb == BONA_FIDE else bob_attack_type(lb)},0,{float(sc)!r}\n"
                  for vid, sc, lb in zip(s.ids, s.scores, s.labels)]
        kind = BOB_VERSIONS[".csv"]
    else:
        lines = [f"{vid} {vid if lb == BONA_FIDE else 'attack/' + bob_attack_type(lb)} {vid} {float(sc)!r}\n"
                 for vid, sc, lb in zip(s.ids, s.scores, s.labels)]
        kind = BOB_VERSIONS["other"]
    atomic_write_text(path, "".join(lines))
    return kind


def write_bob_pair(path: str | Path, dev: ScoreSet, test: ScoreSet, tag: str = "") -> Dict[str, str]:
    """The Dev and Test sets as bob's scores-dev / scores-eval files (:func:`bob_score_paths`); returns
    {'dev', 'eval', 'format'} for the reports."""
    dev_path, eval_path = bob_score_paths(path, tag)
    kind = write_bob_scores(dev_path, dev)
    write_bob_scores(eval_path, test)
    return {"dev": str(dev_path), "eval": str(eval_path), "format": kind}


# ----------------------------------------------------------------------------------------------
# Error rates at a threshold
# ----------------------------------------------------------------------------------------------

def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def accepted(scores: np.ndarray, threshold: float, mode: str = "iso") -> np.ndarray:
    """(N,) bool: classified bona fide. iso: score >= threshold; cdcn: score > threshold."""
    _check_mode(mode)
    return scores >= threshold if mode == "iso" else scores > threshold


def _accept_counts(scores: np.ndarray, thresholds: np.ndarray, mode: str) -> np.ndarray:
    """For each threshold, how many of ``scores`` are classified bona fide (vectorised)."""
    s = np.sort(scores)
    side = "left" if mode == "iso" else "right"  # '>=' keeps ties, '>' drops them
    return s.size - np.searchsorted(s, thresholds, side=side)


def error_rates(s: ScoreSet, threshold: float, mode: str = "iso") -> Dict[str, object]:
    """APCER per PAI, worst-PAI and pooled APCER, BPCER, both ACERs, HTER and accuracy at ``threshold``."""
    s.require_both_classes()
    acc = accepted(s.scores, threshold, mode)
    bf = s.bona_fide
    per_pai = {str(p): float(acc[s.labels == p].mean()) for p in s.pais}
    apcer_pooled = float(acc[~bf].mean())
    bpcer = float((~acc[bf]).mean())
    apcer = max(per_pai.values())
    n_errors = int((~acc[bf]).sum() + acc[~bf].sum())
    return {"apcer": apcer, "apcer_per_pai": per_pai, "apcer_pooled": apcer_pooled, "bpcer": bpcer,
            "acer": (apcer + bpcer) / 2, "acer_pooled": (apcer_pooled + bpcer) / 2,
            "hter": (apcer_pooled + bpcer) / 2, "acc": 1.0 - n_errors / len(s)}


# ----------------------------------------------------------------------------------------------
# Thresholds
# ----------------------------------------------------------------------------------------------

def eer_threshold_iso(s: ScoreSet) -> Tuple[float, float]:
    """ISO-mode EER point: (threshold, (FPR + FNR) / 2) over the distinct scores of ``s``.

    Minimises |FPR - FNR|, then FPR + FNR, then prefers the larger threshold (see module docstring).
    """
    s.require_both_classes()
    bf = s.bona_fide
    cand = np.unique(s.scores)  # ascending
    n_bf, n_att = int(bf.sum()), int((~bf).sum())
    fa = _accept_counts(s.scores[~bf], cand, "iso").astype(np.int64)       # attacks accepted
    fr = n_bf - _accept_counts(s.scores[bf], cand, "iso").astype(np.int64)  # bona fide rejected
    # FPR - FNR = (fa * n_bf - fr * n_att) / (n_att * n_bf): compare the integer numerators.
    gap = np.abs(fa * n_bf - fr * n_att)
    total = fa * n_bf + fr * n_att
    # lexsort: last key is primary; -cand puts the larger threshold first among exact ties.
    best = np.lexsort((-cand, total, gap))[0]
    eer = (fa[best] / n_att + fr[best] / n_bf) / 2
    return float(cand[best]), float(eer)


def eer_threshold_cdcn(s: ScoreSet) -> Tuple[float, float]:
    """The original ``get_err_threhold`` on sklearn's ROC: (threshold, fpr at that point)."""
    from sklearn.metrics import roc_curve

    s.require_both_classes()
    fpr, tpr, thr = roc_curve(s.bona_fide.astype(np.int64), s.scores, pos_label=1)
    idx = int(np.argmin(np.abs(tpr + fpr - 1.0)))
    return float(thr[idx]), float(fpr[idx])


def eer_threshold(s: ScoreSet, mode: str = "iso") -> Tuple[float, float]:
    """(threshold, EER) of ``s`` by the rule of ``mode``."""
    _check_mode(mode)
    return eer_threshold_iso(s) if mode == "iso" else eer_threshold_cdcn(s)


def threshold_at_apcer(dev: ScoreSet, level: float, mode: str = "iso") -> float:
    """Lowest threshold whose worst-PAI APCER on ``dev`` is <= ``level`` (see module docstring)."""
    dev.require_both_classes()
    cand = np.unique(dev.scores)
    if mode == "iso":  # '>=' can only reject every score from just above the highest one
        cand = np.append(cand, np.nextafter(cand[-1], np.inf))
    worst = np.zeros(cand.size)
    for p in dev.pais:
        att = dev.scores[dev.labels == p]
        worst = np.maximum(worst, _accept_counts(att, cand, mode) / att.size)
    ok = np.flatnonzero(worst <= level)  # non-empty: the top candidate accepts no attack
    return float(cand[ok[0]])


def target_eer_hter(s: ScoreSet, mode: str = "cdcn") -> Dict[str, float]:
    """HTER of ``s`` at the EER threshold of ``s`` itself: the original ``performances_CASIA_Replay`` rule.

    cdcn: ``fpr, tpr, thr = roc_curve(...)`` on ``s`` (sklearn defaults, as :func:`eer_threshold_cdcn`),
    index = argmin |tpr + fpr - 1|, HTER = (fpr + 1 - tpr) / 2 read off the ROC at that index (the ROC
    counts score >= threshold as bona fide, so this can differ from counting with the strict cdcn rule).
    iso: the ISO-mode EER threshold of ``s`` (:func:`eer_threshold_iso`), HTER counted at it.
    Returns {'rule', 'threshold', 'fpr', 'fnr', 'hter'}; rates are fractions.
    """
    _check_mode(mode)
    s.require_both_classes()
    if mode == "cdcn":
        from sklearn.metrics import roc_curve

        fpr, tpr, thr = roc_curve(s.bona_fide.astype(np.int64), s.scores, pos_label=1)
        idx = int(np.argmin(np.abs(tpr + fpr - 1.0)))
        far, frr, threshold = float(fpr[idx]), float(1.0 - tpr[idx]), float(thr[idx])
    else:
        threshold, _ = eer_threshold_iso(s)
        rates = error_rates(s, threshold, "iso")
        far, frr = rates["apcer_pooled"], rates["bpcer"]
    return {"rule": f"target_eer_{mode}", "threshold": threshold, "fpr": far, "fnr": frr, "hter": (far + frr) / 2}


def auc(s: ScoreSet) -> float:
    """Area under the ROC of ``s`` (bona fide positive; tied scores count one half)."""
    from sklearn.metrics import roc_auc_score

    s.require_both_classes()
    return float(roc_auc_score(s.bona_fide.astype(np.int64), s.scores))


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------

def evaluate(dev: ScoreSet, test: ScoreSet, mode: str = "iso", threshold: Optional[float] = None,
             target_eer: bool = False) -> Dict:
    """Every metric on ``test`` at a threshold set on ``dev`` (its EER point unless ``threshold``).

    ``target_eer`` adds ``target_eer``: the HTER at ``test``'s own EER threshold (:func:`target_eer_hter`,
    the original's cross-dataset rule), for comparison with ``hter``.
    Returns a JSON-ready dict (see the module docstring for each key); rates are fractions.
    """
    _check_mode(mode)
    dev.require_both_classes()
    test.require_both_classes()
    dev_thr, eer_dev = eer_threshold(dev, mode)
    thr = dev_thr if threshold is None else float(threshold)
    rates = error_rates(test, thr, mode)
    on_dev = error_rates(dev, thr, mode)
    bpcer_at, thr_at = {}, {}
    for level in APCER_LEVELS:
        t = threshold_at_apcer(dev, level, mode)
        thr_at[str(level)] = t
        bpcer_at[str(level)] = float((~accepted(test.scores[test.bona_fide], t, mode)).mean())
    out = {
        "mode": mode,
        "decision": "bona fide iff score >= threshold" if mode == "iso" else "bona fide iff score > threshold",
        "threshold": thr,
        "threshold_source": "dev_eer" if threshold is None else "given",
        **rates,
        "eer_dev": eer_dev,
        "eer_test": eer_threshold(test, mode)[1],
        "auc": auc(test),
        "bpcer_at_apcer": bpcer_at,
        "bpcer_at_apcer_threshold": thr_at,
        "dev": {k: on_dev[k] for k in ("apcer", "apcer_pooled", "bpcer", "acer", "acer_pooled", "acc")},
        "counts": {"dev": dev.counts(), "test": test.counts()},
        "files": {"dev": dev.source, "test": test.source},
    }
    if mode == "cdcn":
        oracle_thr, _ = eer_threshold_cdcn(test)
        out["oracle_threshold"] = oracle_thr
        out["oracle_acer"] = error_rates(test, oracle_thr, "cdcn")["acer_pooled"]
    if target_eer:
        out["target_eer"] = target_eer_hter(test, mode)
    return out


def evaluate_files(dev_path: str | Path, test_path: str | Path, mode: str = "iso",
                   threshold: Optional[float] = None, target_eer: bool = False) -> Dict:
    """:func:`evaluate` on two score files."""
    return evaluate(read_scores(dev_path), read_scores(test_path), mode, threshold, target_eer)


def _flatten(result: Mapping) -> Dict[str, float]:
    """The numbers aggregate() averages, with dotted names for the nested ones."""
    flat = {k: float(result[k]) for k in SCALAR_METRICS}
    if "target_eer" in result:  # the rates at the Test set's own EER threshold (SiW-M tables report them)
        for k in ("fpr", "fnr", "hter"):
            flat[f"target_eer.{k}"] = float(result["target_eer"][k])
    for k, v in result["apcer_per_pai"].items():
        flat[f"apcer_per_pai.{k}"] = float(v)
    for k, v in result["bpcer_at_apcer"].items():
        flat[f"bpcer_at_apcer.{k}"] = float(v)
    return flat


def aggregate(results: Sequence[Mapping], ddof: int = 1) -> Dict:
    """Mean and standard deviation of each metric over sub-protocols (OULU-NPU protocols 3 and 4).

    Each sub-protocol keeps its own Dev threshold. ``ddof=1`` is the sample standard deviation over
    the folds (n - 1 in the denominator); the OULU-NPU papers do not say which one they use, so
    ``ddof=0`` (numpy's default) is available. A single result gets std 0. Per-PAI APCERs are
    aggregated only for labels present in every result.
    Returns {'mode', 'n', 'ddof', 'metrics': {name: {'mean', 'std', 'values'}}}, plus 'coverage' (listed
    and scored videos summed over the results) when every result carries one.
    """
    if not results:
        raise ValueError("aggregate() needs at least one result")
    modes = {r["mode"] for r in results}
    if len(modes) != 1:
        raise ValueError(f"cannot aggregate results of different modes: {sorted(modes)}")
    flats = [_flatten(r) for r in results]
    names = [k for k in flats[0] if all(k in f for f in flats)]
    metrics = {}
    for k in names:
        v = np.array([f[k] for f in flats])
        std = float(v.std(ddof=ddof)) if v.size > ddof else 0.0
        metrics[k] = {"mean": float(v.mean()), "std": std, "values": v.tolist()}
    out = {"mode": modes.pop(), "n": len(results), "ddof": ddof, "metrics": metrics}
    covs = [r.get("coverage") for r in results]
    if all(covs):  # listed/scored summed over the sub-protocols, so the summary too says what it rests on
        out["coverage"] = {split: {"listed": sum(c[split]["listed"] for c in covs),
                                   "scored": sum(c[split]["scored"] for c in covs),
                                   "missing": [v for c in covs for v in c[split]["missing"]]}
                           for split in ("dev", "test") if all(split in c for c in covs)}
    return out


def json_ready(obj):
    """Copy of ``obj`` that strict JSON accepts: non-finite floats become "inf" / "-inf" / "nan".

    Only the cdcn threshold can be infinite (sklearn's sentinel when every Dev score is equal).
    """
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else str(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------

def _pct(x: float) -> str:
    return f"{100 * x:7.2f} %"


def _pai_name(label: str) -> str:
    kind = "unknown instrument" if int(label) == UNKNOWN_ATTACK else label_kind(int(label))
    return f"{label} {kind}"


def _rule_lines(mode: str) -> List[str]:
    if mode == "iso":
        return ["Mode iso: ISO/IEC 30107-3. Bona fide iff score >= threshold (tie -> bona fide).",
                "  Dev EER threshold: the distinct Dev score minimising |FPR - FNR| (then FPR + FNR,",
                "  then the larger score); no interpolation."]
    return ["Mode cdcn: the original CDCN/DSDG performances(). Bona fide iff score > threshold (tie -> attack).",
            "  Dev EER threshold: sklearn roc_curve (drop_intermediate) thresholds[argmin |tpr + fpr - 1|]."]


def coverage(scored_ids: Sequence[str], listed_ids: Sequence[str]) -> Dict[str, object]:
    """{'listed', 'scored', 'missing'}: how many videos of a list have a score, and which have none
    (in list order). Scores of videos outside the list are not counted."""
    have = set(scored_ids)
    missing = [v for v in listed_ids if v not in have]
    return {"listed": len(listed_ids), "scored": len(listed_ids) - len(missing), "missing": missing}


def coverage_lines(cov: Optional[Mapping], limit: int = 10) -> List[str]:
    """"N of M listed videos scored" for Dev and Test, naming the missing ones (the first ``limit``,
    then the file that lists them all); a warning line when the lists are unknown."""
    if not cov:
        return ["Listed videos: unknown (score files only), so a video missing from them goes unnoticed; "
                "pass the protocol lists to check."]
    out = []
    for split in ("dev", "test"):
        c = cov.get(split)
        if c is None:
            continue
        line = f"{split.capitalize() + ':':<5} {c['scored']} of {c['listed']} listed videos scored"
        missing = list(c.get("missing", []))
        if missing:
            line += "; NOT SCORED: " + ", ".join(missing[:limit])
            if len(missing) > limit:
                line += f" ... and {len(missing) - limit} more"
            if c.get("missing_file"):
                line += f" (all, with the reasons: {c['missing_file']})"
        out.append(line)
    return out


def metric_rows(result: Mapping) -> List[Tuple[str, float, str]]:
    """(name, fraction, definition) of every metric of one :func:`evaluate` result, in table order (per-PAI
    APCER rows are indented under APCER): the rows :func:`format_table` prints and DUM/report.py shows."""
    mode = result["mode"]
    is_orig = "; the original's" if mode == "cdcn" else ""
    rows = [("APCER", result["apcer"], "ISO/IEC 30107-3 & OULU-NPU: worst PAI (max over instruments)")]
    rows += [(f"  APCER[{_pai_name(k)}]", v, "attacks of this instrument accepted")
             for k, v in result["apcer_per_pai"].items()]
    rows += [("APCER pooled", result["apcer_pooled"], f"all attacks pooled (CDCN/DSDG code){is_orig} APCER"),
             ("BPCER", result["bpcer"], f"bona fide rejected{is_orig} BPCER"),
             ("ACER", result["acer"], "(APCER worst PAI + BPCER) / 2  (OULU-NPU)"),
             ("ACER pooled", result["acer_pooled"], f"(APCER pooled + BPCER) / 2{is_orig} ACER"),
             ("HTER", result["hter"], "(FAR + FRR) / 2, pooled attacks, at the threshold"),
             ("ACC", result["acc"], f"correct decisions / all{is_orig} ACC")]
    eer_how = ("(FPR + FNR)/2 at the set's own EER point" if mode == "iso"
               else "fpr at the set's own EER index (original 'err')")
    rows += [("EER Dev", result["eer_dev"], eer_how),
             ("EER Test", result["eer_test"], eer_how + "; oracle, for reference"),
             ("AUC", result["auc"], "Test ROC area, bona fide positive")]
    for k, v in result["bpcer_at_apcer"].items():
        t = result["bpcer_at_apcer_threshold"][k]
        rows.append((f"BPCER@APCER={100 * float(k):g}%", v,
                     f"Test BPCER at the Dev threshold {t:.6g} (worst-PAI Dev APCER <= {k})"))
    if "target_eer" in result:
        te = result["target_eer"]
        rows.append(("HTER at Test EER", te["hter"], f"at the Test set's own EER threshold {te['threshold']:.6g} (the "
                     "original performances_CASIA_Replay; no Dev, optimistic)"))
    return rows


def rule_lines(mode: str) -> List[str]:
    """The decision and threshold rule of ``mode`` in words (the lines every table starts with)."""
    return _rule_lines(mode)


def format_table(result: Mapping) -> str:
    """A readable table of one :func:`evaluate` result or of an :func:`aggregate` result."""
    if "metrics" in result:
        return _format_aggregate(result)
    mode = result["mode"]
    tc = result["counts"]["test"]
    dc = result["counts"]["dev"]
    src = "Dev EER" if result["threshold_source"] == "dev_eer" else "given on the command line"
    lines = [f"Score: {result['score']}"] if "score" in result else []
    lines += [f"Dev:  {result['files']['dev']} ({dc['bona_fide']} bona fide, {sum(dc['attack'].values())} attacks)",
              f"Test: {result['files']['test']} ({tc['bona_fide']} bona fide, "
              + ", ".join(f"{n} {_pai_name(k)}" for k, n in tc["attack"].items()) + ")",
              *coverage_lines(result.get("coverage")),
              *_rule_lines(mode),
              f"Threshold: {result['threshold']:.6g} ({src})",
              "Rates in % (JSON holds fractions).",
              "",
              f"{'metric':<22}{'value':>10}   definition"]
    for name, value, what in metric_rows(result):
        lines.append(f"{name:<22}{_pct(value):>10}   {what}")
    d = result["dev"]
    lines.append(f"Dev at the threshold: APCER {_pct(d['apcer']).strip()}, "
                 f"pooled {_pct(d['apcer_pooled']).strip()}, BPCER {_pct(d['bpcer']).strip()}, "
                 f"ACER {_pct(d['acer']).strip()}, ACC {_pct(d['acc']).strip()}")
    if mode == "cdcn":
        lines.append(f"As the original prints it: Val: val_threshold={result['threshold']:.4f}, "
                     f"val_ACC={d['acc']:.4f}, val_ACER={d['acer_pooled']:.4f}; "
                     f"Test: ACC={result['acc']:.4f}, APCER={result['apcer_pooled']:.4f}, "
                     f"BPCER={result['bpcer']:.4f}, ACER={result['acer_pooled']:.4f}")
    return "\n".join(lines)


# Rows of the per-pair table: (aggregate key, row label).
PER_PAIR_ROWS = (("apcer", "APCER"), ("bpcer", "BPCER"), ("acer", "ACER"), ("eer_test", "EER Test"),
                 ("target_eer.fpr", "APCER @ Test EER"), ("target_eer.fnr", "BPCER @ Test EER"),
                 ("target_eer.hter", "HTER @ Test EER"))


def format_per_pair(agg: Mapping) -> str:
    """The main numbers of an :func:`aggregate` result with one column per pair (``agg['names']``, else 1..n)
    and a last column ``mean ± std``: the layout of the SiW-M leave-one-out tables."""
    names = list(agg.get("names") or [str(k) for k in range(1, agg["n"] + 1)])
    rows = [(key, label) for key, label in PER_PAIR_ROWS if key in agg["metrics"]]
    width = max(8, *(len(n) + 1 for n in names))
    lines = [f"Per sub-protocol, in % (each at its own threshold; std: {'n-1' if agg['ddof'] == 1 else 'ddof=0'}):",
             f"{'metric':<18}" + "".join(f"{n:>{width}}" for n in names) + f"{'mean ± std':>16}"]
    for key, label in rows:
        m = agg["metrics"][key]
        lines.append(f"{label:<18}" + "".join(f"{100 * v:>{width}.2f}" for v in m["values"])
                     + f"{100 * m['mean']:>9.2f} ± {100 * m['std']:.2f}")
    lines.append("APCER, BPCER, ACER: at the Dev EER threshold. EER Test: each Test set's own EER.")
    if any(key.startswith("target_eer.") for key, _ in rows):
        lines.append("@ Test EER: at each Test set's own EER threshold (the CDCN code's performances_SiWM_EER rule; "
                     "optimistic, no Dev involved); APCER there is pooled, which equals the worst-PAI one when a Test "
                     "set holds one attack type, and HTER then equals ACER.")
    return "\n".join(lines)


def _format_aggregate(agg: Mapping) -> str:
    kind = "sample std, n-1" if agg["ddof"] == 1 else f"std with ddof={agg['ddof']}"
    cov = [line.replace(" listed videos", " listed videos over the sub-protocols", 1)
           for line in coverage_lines(agg.get("coverage"))]
    lines = [f"Mean and standard deviation over {agg['n']} sub-protocols ({kind}), each at its own threshold.",
             *cov,
             *_rule_lines(agg["mode"]),
             "APCER = worst PAI (ISO/IEC 30107-3, OULU-NPU); APCER pooled = the CDCN/DSDG code's APCER.",
             "",
             f"{'metric':<26}{'mean':>10}{'std':>10}   (%)"]
    for k, m in agg["metrics"].items():
        lines.append(f"{k:<26}{100 * m['mean']:10.2f}{100 * m['std']:10.2f}")
    return "\n".join(lines)
