"""Frame and video scores of the DUM depth networks, and the metrics, score files and plots of a Dev/Test
evaluation.

The score of one frame (higher = more bona fide) is :func:`mean_depth_score`, the mean of the
predicted depth mu over the map: DUM/test.py's ``mean`` score, the ``score`` output of a file of
DUM/export_onnx.py and what DUM/predict.py compares with the threshold. Per-video scores, from the
frames of a video:

* ``mean``: the frames' mean-depth scores, averaged. Needs only the image.
* ``cdcn``: the original's per-frame ratio sum(mu) / sum(GT map) with the frame's ground-truth
  depth map on the 0-255 scale, averaged over frames. Needs a depth map for every test frame
  (an external model's output on test data), so it is kept for comparison with the paper only.
  Frames whose map sums to (almost) zero are left out of it and counted, instead of dividing by ~0.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from DUM.metrics import ScoreSet
from misc.device import to_input
from misc.io import atomic_write_text
from misc.precision import FP32, Precision
from misc.progress import progress

if TYPE_CHECKING:
    from DUM.datasets import VideoFramesDataset

log = logging.getLogger(__name__)

SCORES = ("mean", "cdcn")
# A GT map whose mean grey level is below this (0-255 scale) counts as empty for the cdcn score.
MIN_GT_MEAN = 1.0


def mean_depth_score(mu: torch.Tensor) -> torch.Tensor:
    """The score of each frame: its predicted depth map (B, M, M) summed and divided by the M * M pixels,
    in mu's dtype -> (B,). The one formula of the tester, the exported graph and the predictor."""
    return mu.flatten(1).sum(1) / mu[0].numel()


# ----------------------------------------------------------------------------------------------
# Frames and videos
# ----------------------------------------------------------------------------------------------

@torch.no_grad()
def predict_maps(model: nn.Module, images: torch.Tensor, device: torch.device,
                 precision: Precision = FP32) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(mu, sigma) of normalised faces (B, 3, S, S): (B, M, M) float32 on the CPU, sigma = exp(logvar / 2)
    or None for a network without an uncertainty (``DUM.zoo``). Eval mode for the call; the global RNG
    is left untouched (the DUM networks draw their reparameterised sample even in eval mode)."""
    was_training = model.training
    model.eval()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), precision.autocast():
        out = model(to_input(images, device))
    model.train(was_training)
    sigma = None if out.logvar is None else out.logvar.float().mul(0.5).exp().cpu()
    return out.mu.float().cpu(), sigma


@dataclass
class VideoScores:
    """Per-video scores of one split (arrays in the order of ``ids``)."""
    ids: List[str]
    labels: np.ndarray            # protocol labels (+1, -1, -2, ...)
    mean: np.ndarray              # mean-depth score
    cdcn: np.ndarray              # original ratio score; nan where no frame had a usable GT map
    frames: np.ndarray            # frames scored per video
    cdcn_frames: np.ndarray       # frames that entered the cdcn score
    missing: List[str] = field(default_factory=list)  # videos of the list with no frame at all
    mapped_frames: Optional[np.ndarray] = None  # frames that have a GT map (empty or not)
    listed: List[str] = field(default_factory=list)    # every video of the list, in list order
    missing_reasons: Dict[str, str] = field(default_factory=dict)  # video without frames -> why

    def score_set(self, kind: str = "mean", source: str = "<scores>") -> Tuple[ScoreSet, List[str]]:
        """(ScoreSet of the videos that have a ``kind`` score, ids of those that have none)."""
        values = getattr(self, kind)
        ok = np.isfinite(values)
        ids = [v for v, k in zip(self.ids, ok) if k]
        dropped = [v for v, k in zip(self.ids, ok) if not k]
        return ScoreSet(ids, values[ok], self.labels[ok], source=source), dropped

    def summary(self) -> Dict[str, Any]:
        no_cdcn = [v for v, c in zip(self.ids, self.cdcn_frames) if c == 0]
        mapped = self.frames if self.mapped_frames is None else self.mapped_frames
        return {"videos": len(self.ids), "frames": int(self.frames.sum()),
                "cdcn_frames": int(self.cdcn_frames.sum()),
                "cdcn_excluded_frames": int(self.frames.sum() - self.cdcn_frames.sum()),
                "cdcn_frames_without_map": int(self.frames.sum() - mapped.sum()),
                "cdcn_frames_empty_map": int(mapped.sum() - self.cdcn_frames.sum()),
                "videos_without_cdcn_score": no_cdcn, "videos_without_frames": self.missing}

    def coverage(self, kind: str) -> Tuple[Dict[str, Any], Dict[str, str]]:
        """({'listed', 'scored', 'missing'}, {missing video: reason}) of the ``kind`` score, in list order."""
        listed = self.listed or list(self.ids) + list(self.missing_reasons)
        has = dict(zip(self.ids, np.isfinite(getattr(self, kind))))
        reasons = {}
        for v in listed:
            if v in self.missing_reasons:
                reasons[v] = self.missing_reasons[v]
            elif not has.get(v, False):
                reasons[v] = ("no frame with a usable depth map (the cdcn score divides by the map's sum)"
                              if kind == "cdcn" else f"no finite '{kind}' score")
        return {"listed": len(listed), "scored": len(listed) - len(reasons), "missing": list(reasons)}, reasons


@torch.no_grad()
def score_videos(model: nn.Module, dataset: VideoFramesDataset, device: torch.device, batch_size: int = 64,
                 workers: int = 0, precision: Precision = FP32, desc: str = "score") -> VideoScores:
    """Run the model on every selected frame of ``dataset`` and average the frame scores per video
    (``mean``: :func:`mean_depth_score`; ``cdcn``: see the module docstring).

    Leaves the global RNG untouched (the model draws a reparameterised sample even in eval
    mode), so evaluating never changes what a training run does afterwards.
    """
    was_training = model.training
    model.eval()
    n = len(dataset.videos)
    mean_sum, cdcn_sum = np.zeros(n), np.zeros(n)
    frames, cdcn_frames, mapped = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda")
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        for batch in progress(loader, desc=desc, unit="batch", leave=False):
            with precision.autocast():
                mu = model(to_input(batch["image"], device)).mu.float()
            mu_sum = mu.flatten(1).sum(1).cpu().double().numpy()
            pixels = mu[0].numel()
            gt_sum = batch["depth"].flatten(1).sum(1).double().numpy()
            has_depth = batch["has_depth"].numpy()
            usable = has_depth & (gt_sum >= MIN_GT_MEAN * pixels)
            vid = batch["video"].numpy()
            np.add.at(mean_sum, vid, mean_depth_score(mu).cpu().double().numpy())
            np.add.at(frames, vid, 1)
            np.add.at(mapped, vid[has_depth], 1)
            np.add.at(cdcn_sum, vid[usable], mu_sum[usable] / gt_sum[usable])
            np.add.at(cdcn_frames, vid[usable], 1)
    model.train(was_training)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(frames > 0, mean_sum / np.maximum(frames, 1), np.nan)
        cdcn = np.where(cdcn_frames > 0, cdcn_sum / np.maximum(cdcn_frames, 1), np.nan)
    return VideoScores(ids=[v.row.video for v in dataset.videos],
                       labels=np.array([v.row.label for v in dataset.videos], np.int64),
                       mean=mean, cdcn=cdcn, frames=frames, cdcn_frames=cdcn_frames,
                       missing=list(dataset.missing), mapped_frames=mapped, listed=list(dataset.listed),
                       missing_reasons=dict(dataset.missing_reasons))


MISSING_FILE = "missing_videos.txt"


def evaluate(model: nn.Module, dev: VideoFramesDataset, test: Optional[VideoFramesDataset], device: torch.device,
             out_dir: str | Path, *, score: str = "mean", scores: Optional[Tuple[str, ...]] = None,
             modes: Tuple[str, ...] = ("iso",), batch_size: int = 64, workers: int = 0,
             precision: Precision = FP32, plots: bool = True) -> Dict[str, Any]:
    """Score Dev (and Test) once, then for every score of ``scores`` (default: ``score`` alone)
    write its score files and compute its metrics; ``score`` is the primary one.

    The threshold is chosen on Dev (its EER point) and applied to Test, by ``DUM.metrics.evaluate``
    in each of ``modes``; without ``test`` the Dev set is measured at its own threshold. Files in
    ``out_dir``: ``{dev,test}_scores_<score>.txt`` per score, ``{dev,test}_scores.txt`` (the
    primary score, the names older runs and scripts read), plots, and ``missing_videos.txt``, the
    listed videos each score could not score and why. Returns the report DUM/test.py writes
    (layout in its module docstring): the primary score's 'metrics'/'files'/'coverage' at the top
    level, every score under 'by_score'. A score whose sets lack bona fide or attack videos gets
    'error' instead of metrics (and the top level too for the primary). Each metrics result
    carries 'coverage' ("N of M listed videos scored") for the printed table. Pass the report
    through ``DUM.metrics.json_ready`` before writing strict JSON (a cdcn threshold may be inf).
    """
    kinds = _score_kinds(score, scores)
    out_dir = Path(out_dir)
    splits = {name: score_videos(model, ds, device, batch_size, workers, precision, desc=f"score {name}")
              for name, ds in (("dev", dev), ("test", test)) if ds is not None}
    report: Dict[str, Any] = {"score": score, "scores_reported": list(kinds), "by_score": {}}
    missing_lines: List[str] = []
    for kind in kinds:
        report["by_score"][kind], lines = _evaluate_score(kind, splits, out_dir, modes, plots, primary=kind == score)
        missing_lines += lines
    missing_path = out_dir / MISSING_FILE
    atomic_write_text(missing_path, f"# listed Dev/Test videos without a score: split, score, video, reason "
                                    f"({len(missing_lines)} lines)\n" + "".join(missing_lines))
    primary = report["by_score"][score]
    for name, scored in splits.items():
        report[name] = scored.summary()
        report[name]["videos_without_score"] = primary["videos_without_score"][name]
    report.update(metrics=primary["metrics"], files={**primary["files"], "missing_videos": str(missing_path)},
                  coverage=primary["coverage"])
    if "error" in primary:
        report["error"] = primary["error"]
    return report


def _score_kinds(score: str, scores: Optional[Tuple[str, ...]]) -> Tuple[str, ...]:
    """The scores to report, the primary first, each once; unknown names raise ValueError."""
    kinds = tuple(dict.fromkeys((score,) + tuple(scores or ())))
    bad = [k for k in kinds if k not in SCORES]
    if bad:
        raise ValueError(f"score must be one of {SCORES}, not {bad[0]!r}")
    return kinds


def _evaluate_score(kind: str, splits: Dict[str, VideoScores], out_dir: Path, modes: Tuple[str, ...], plots: bool,
                    primary: bool) -> Tuple[Dict[str, Any], List[str]]:
    """Score files, coverage and metrics of one score (see :func:`evaluate`), and its lines of
    ``missing_videos.txt``."""
    from DUM import metrics  # imported here: the plots module pulls in matplotlib

    entry: Dict[str, Any] = {"metrics": {}, "files": {}, "coverage": {}, "videos_without_score": {}}
    sets, missing_lines = {}, []
    for name, scored in splits.items():
        path = out_dir / f"{name}_scores_{kind}.txt"
        sets[name], dropped = scored.score_set(kind, source=str(path))
        entry["videos_without_score"][name] = dropped
        entry["coverage"][name], reasons = scored.coverage(kind)
        entry["coverage"][name]["missing_file"] = str(out_dir / MISSING_FILE)
        missing_lines += [f"{name}\t{kind}\t{v}\t{why}\n" for v, why in reasons.items()]
        if reasons:
            log.warning("%s, score '%s': %d of %d listed videos scored; not scored: %s", name, kind,
                        entry["coverage"][name]["scored"], entry["coverage"][name]["listed"],
                        ", ".join(list(reasons)[:10]) + (f" ... (all in {out_dir / MISSING_FILE})"
                                                         if len(reasons) > 10 else ""))
        if len(sets[name]):
            metrics.write_scores(path, sets[name].ids, sets[name].scores, sets[name].labels)
            entry["files"][name] = str(path)
            if primary:  # the names of the primary score that older runs and scripts read
                legacy = out_dir / f"{name}_scores.txt"
                metrics.write_scores(legacy, sets[name].ids, sets[name].scores, sets[name].labels)
                entry["files"][name] = str(legacy)
                entry["files"][f"{name}_{kind}"] = str(path)
    if "test" not in entry["coverage"] and "dev" in entry["coverage"]:
        entry["coverage"]["test"] = entry["coverage"]["dev"]  # Dev measured at its own threshold
    dev_set = sets.get("dev")
    test_set = sets.get("test", dev_set)
    try:
        for mode in modes:
            entry["metrics"][mode] = {**metrics.evaluate(dev_set, test_set, mode=mode), "score": kind,
                                      "coverage": entry["coverage"]}
    except (ValueError, TypeError) as e:  # one-class or empty sets: rates would be 0/0
        entry["metrics"] = {}
        entry["error"] = str(e)
        log.warning("score '%s': no metrics: %s", kind, e)
        return entry, missing_lines
    if plots:
        from DUM import plots as figures

        thr = entry["metrics"][modes[0]]["threshold"]
        thr = thr if math.isfinite(thr) else None  # cdcn's "reject all" sentinel cannot be drawn
        tag = "" if primary else f"_{kind}"
        roc, hist = out_dir / f"roc_det{tag}.png", out_dir / f"score_histogram{tag}.png"
        figures.plot_roc_det(dev_set, test_set, roc, thr, mode=modes[0])
        figures.plot_score_histogram(dev_set, test_set, hist, thr)
        entry["files"].update(roc_det=str(roc), histogram=str(hist))
    return entry, missing_lines
