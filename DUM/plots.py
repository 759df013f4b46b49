"""Figures for score files: ROC + DET curves and score histograms, with the operating threshold marked.

Matplotlib's object API with the Agg canvas (no pyplot state, no display needed); each figure is
rendered to memory and written with ``misc.io.atomic_write_figure``, so a crash never leaves half a PNG.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from DUM.metrics import ScoreSet, accepted
from data.protocol_lists import label_kind
from misc.io import atomic_write_figure

_SPLIT_STYLE = {"Dev": "--", "Test": "-"}
# The DET axes use a logit scale (close to the usual normal-deviate scale, and built into
# matplotlib), which cannot show exact 0 or 1: rates are clipped to [0.1 %, 99.9 %].
_DET_CLIP = 1e-3
_DET_TICKS = (0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99, 0.999)


def _save(fig: Figure, out_png: str | Path) -> None:
    FigureCanvasAgg(fig)
    atomic_write_figure(out_png, fig, dpi=120)


def _rate_curve(s: ScoreSet):
    """(APCER pooled, BPCER) as the threshold sweeps every score, plus both ends. ISO '>=' rule."""
    s.require_both_classes()
    thr = np.concatenate(([-np.inf], np.unique(s.scores), [np.inf]))
    att = np.sort(s.scores[~s.bona_fide])
    bf = np.sort(s.scores[s.bona_fide])
    apcer = (att.size - np.searchsorted(att, thr, side="left")) / att.size
    bpcer = np.searchsorted(bf, thr, side="left") / bf.size
    return apcer, bpcer


def _operating_point(s: ScoreSet, threshold: float, mode: str):
    acc = accepted(s.scores, threshold, mode)
    return float(acc[~s.bona_fide].mean()), float((~acc[s.bona_fide]).mean())


def plot_roc_det(dev: ScoreSet, test: ScoreSet, out_png: str | Path, threshold: Optional[float],
                 mode: str = "iso") -> None:
    """ROC (APCER pooled vs 1 - BPCER) and DET (APCER vs BPCER, logit axes) of Dev and Test, with the
    operating point at ``threshold`` (decision rule of ``mode``) marked on each curve."""
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    roc, det = fig.subplots(1, 2)
    for name, s in (("Dev", dev), ("Test", test)):
        apcer, bpcer = _rate_curve(s)
        line, = roc.plot(apcer, 1 - bpcer, _SPLIT_STYLE[name], label=name)
        det.plot(np.clip(apcer, _DET_CLIP, 1 - _DET_CLIP), np.clip(bpcer, _DET_CLIP, 1 - _DET_CLIP),
                 _SPLIT_STYLE[name], color=line.get_color(), label=name)
        if threshold is not None and math.isfinite(threshold):
            a, b = _operating_point(s, threshold, mode)
            roc.plot([a], [1 - b], "o", color=line.get_color())
            det.plot([min(max(a, _DET_CLIP), 1 - _DET_CLIP)], [min(max(b, _DET_CLIP), 1 - _DET_CLIP)], "o",
                     color=line.get_color(), label=f"{name} at threshold: APCER {100 * a:.1f}%, BPCER {100 * b:.1f}%")
    roc.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
    roc.set(xlabel="APCER (pooled attacks accepted)", ylabel="1 - BPCER (bona fide accepted)", title="ROC",
            xlim=(0, 1), ylim=(0, 1.01))
    det.set_xscale("logit")
    det.set_yscale("logit")
    percent = FuncFormatter(lambda v, _: f"{100 * v:g}%")
    for axis in (det.xaxis, det.yaxis):
        axis.set_major_locator(FixedLocator(_DET_TICKS))
        axis.set_major_formatter(percent)
        axis.set_minor_locator(NullLocator())
    lim = (_DET_CLIP / 1.5, 1 - _DET_CLIP / 1.5)
    det.set(xlabel="APCER (pooled)", ylabel="BPCER", title="DET", xlim=lim, ylim=lim)
    det.grid(True, lw=0.3)
    roc.legend(loc="lower right")
    det.legend(loc="upper right", fontsize="small")
    thr_text = "none" if threshold is None else f"{threshold:.4g}"
    fig.suptitle(f"threshold {thr_text} ({mode} rule)")
    _save(fig, out_png)


def plot_score_histogram(dev: ScoreSet, test: ScoreSet, out_png: str | Path, threshold: Optional[float],
                         bins: int = 40) -> None:
    """Histograms of Dev and Test scores per class (bona fide and each attack label), shared bins,
    with the threshold drawn as a vertical line."""
    both = np.concatenate([dev.scores, test.scores])
    lo, hi = float(both.min()), float(both.max())
    if lo == hi:  # every score equal: give the single bin some width
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True)
    for ax, (name, s) in zip(axes, (("Dev", dev), ("Test", test))):
        for label in [1, *s.pais]:
            x = s.scores[s.labels == label]
            kind = "unknown-instrument attack" if label == 0 else label_kind(label)
            tag = "+1" if label == 1 else str(label)
            ax.hist(x, bins=edges, histtype="stepfilled", alpha=0.45, label=f"{kind} ({tag}, n={x.size})")
        if threshold is not None and math.isfinite(threshold):
            ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.4g}")
        ax.set(title=f"{name} scores", xlabel="score (higher = more bona fide)", ylabel="videos")
        ax.legend(fontsize="small")
    _save(fig, out_png)
