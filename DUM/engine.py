"""Training and evaluation loops of the DUM depth network, per-video scoring, and model loading.

Per-video scores (higher = more bona fide), from the predicted mean depth mu of N frames:

* ``mean``: the average of mu over the map, averaged over the frames. Needs only the image.
* ``cdcn``: the original's per-frame ratio sum(mu) / sum(GT map) with the frame's ground-truth
  depth map on the 0-255 scale, averaged over frames. Needs a depth map for every test frame
  (an external model's output on test data), so it is kept for comparison with the paper only.
  Frames whose map sums to (almost) zero are left out of it and counted, instead of dividing by ~0.
"""
from __future__ import annotations

import contextlib
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from DUM.datasets import DUMTrainDataset, VideoFramesDataset
from DUM.losses import dum_losses
from DUM.metrics import ScoreSet
from DUM.models import CDCN_U
from DUM.transforms import denormalise_image
from misc.checkpoint import FORMAT, CheckpointError, load_state_dict_strict, strip_prefix
from misc.distributed import all_reduce_sum
from misc.progress import progress

log = logging.getLogger("dsdg.dum")

SCORES = ("mean", "cdcn")
# A GT map whose mean grey level is below this (0-255 scale) counts as empty for the cdcn score.
MIN_GT_MEAN = 1.0


# ----------------------------------------------------------------------------------------------
# Device helpers
# ----------------------------------------------------------------------------------------------

def cpu_bf16_supported() -> bool:
    """Whether oneDNN has fast bf16 kernels on this CPU (AVX512-BF16/AMX); without them bf16
    convolutions fall back to a reference path that is many times slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(device: torch.device, enabled: bool):
    """Mixed precision: fp16 on CUDA, bf16 on CPUs that support it, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if device.type == "cpu" and cpu_bf16_supported():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolve_amp(device: torch.device, requested: bool) -> bool:
    """The --amp setting that will really apply; says why when a request is dropped."""
    if requested and device.type == "cpu" and not cpu_bf16_supported():
        log.warning("--amp: this CPU has no fast bf16 convolutions (oneDNN reports no AVX512-BF16/AMX); "
                    "running in fp32, which is faster here")
        return False
    return requested and device.type in ("cuda", "cpu")


def to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a (B, 3, H, W) batch to ``device`` in channels_last (the model's memory format)."""
    return images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------------------------
# Model files
# ----------------------------------------------------------------------------------------------

def load_model(path: str | Path, device: str | torch.device = "cpu", theta: Optional[float] = None,
               map_size: Optional[int] = None, return_meta: bool = False):
    """A :class:`CDCN_U` in eval mode from the released ``CDCN_U_P1.pkl`` or one of our checkpoints.

    The released file is a bare state_dict saved from DataParallel (``module.`` prefixes) with
    theta 0.7 and 32 x 32 maps. Our checkpoints (``misc.checkpoint``, kind ``dum``) carry theta and
    the map size in their args; ``theta``/``map_size`` override either. With ``return_meta`` the
    result is ``(model, meta)``, meta = {'source': 'released'|'checkpoint', 'args', 'extra', 'epoch'}.
    Raises CheckpointError naming the file and the missing/unexpected keys when it does not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling fails in many ways (pickled modules, corrupt files)
        raise CheckpointError(f"{path}: not loadable with torch.load(weights_only=True) "
                              f"({type(e).__name__}: {e}). Expected a state_dict or a DSDG checkpoint.") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state_dict or a DSDG checkpoint")
    if state.get("format") == FORMAT:
        if state.get("kind") != "dum":
            raise CheckpointError(f"{path}: is a '{state.get('kind')}' checkpoint, expected 'dum'")
        if "model" not in state.get("models", {}):
            raise CheckpointError(f"{path}: DUM checkpoint without a 'model' entry")
        args = state.get("args", {})
        sd = state["models"]["model"]
        meta = {"source": "checkpoint", "args": args, "extra": state.get("extra", {}), "epoch": state.get("epoch")}
    else:
        args = {}
        sd = strip_prefix(state, "module.")
        meta = {"source": "released", "args": {}, "extra": {}, "epoch": None}
    theta = theta if theta is not None else float(args.get("theta", 0.7))
    map_size = map_size if map_size is not None else int(args.get("map_size", 32))
    model = CDCN_U(theta=theta, map_size=map_size)
    load_state_dict_strict(model, sd, source=str(path))
    model = model.to(device).to(memory_format=torch.channels_last).eval()
    return (model, meta) if return_meta else model


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------

class WeightedMeter:
    """Running weighted averages: update(name, value, weight) for each term.

    A name is registered even by a zero-weight update, so ranks that make the same calls hold the
    same names in the same order and :meth:`all_reduce` can sum them in one collective.
    """

    def __init__(self):
        self.sums: Dict[str, float] = defaultdict(float)
        self.weights: Dict[str, float] = defaultdict(float)

    def update(self, name: str, value: float, weight: float) -> None:
        self.sums[name] += float(value) * weight if weight > 0 else 0.0
        self.weights[name] += max(float(weight), 0.0)

    def all_reduce(self, device: Optional[torch.device] = None) -> None:
        """Sum the sums and weights over distributed ranks (nothing in a single process), so that
        :meth:`averages` are the averages over every rank's samples."""
        names = list(self.sums)
        totals = all_reduce_sum([self.sums[k] for k in names] + [self.weights[k] for k in names], device)
        for i, k in enumerate(names):
            self.sums[k], self.weights[k] = totals[i], totals[len(names) + i]

    def averages(self) -> Dict[str, float]:
        return {k: self.sums[k] / self.weights[k] for k in self.sums if self.weights[k] > 0}


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    device: torch.device, epoch: int, *, scaler: Optional[torch.amp.GradScaler] = None,
                    amp: bool = False, generated_weight: float = 0.1, kl_weight: float = 1e-3) -> Dict[str, float]:
    """One pass over ``loader``; returns the epoch averages of every loss term over all ranks.

    ``model`` may be DDP-wrapped; each rank's ``loader`` yields its share of the global batches.
    Each group's terms are averaged over that group's samples (the original weighted every term
    by the full batch size). ``total`` is averaged per batch. Raises FloatingPointError on a
    non-finite loss rather than training on garbage.
    """
    model.train()
    meter = WeightedMeter()
    for batch in progress(loader, desc=f"epoch {epoch + 1}", unit="batch", leave=False):
        images = to_input(batch["image"], device)
        target = batch["map"].to(device, non_blocking=True)
        generated = batch["generated"].to(device, non_blocking=True)
        with autocast(device, amp):
            out = model(images)
        # Losses in fp32: exp(logvar) and the pixel-summed KL are the terms that overflow in fp16.
        losses = dum_losses(out.mu.float(), out.logvar.float(), out.sample.float(), target, generated,
                            generated_weight=generated_weight, kl_weight=kl_weight)
        loss = losses["total"]
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"epoch {epoch + 1}: loss is {loss.item()}; stopping "
                                     f"(terms: { {k: float(v) for k, v in losses.items()} })")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        n_real, n_gen = int(losses["n_real"]), int(losses["n_gen"])
        meter.update("loss", loss.item(), 1)
        for group, n in (("real", n_real), ("gen", n_gen)):
            for term in ("abs", "contrast", "kl"):
                meter.update(f"{group}_{term}", losses[f"{group}_{term}"].item(), n)
        meter.update("sigma", out.logvar.detach().float().mul(0.5).exp().mean().item(), 1)
    meter.all_reduce(device)
    return meter.averages()


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------

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

    def score_set(self, kind: str = "mean", source: str = "<scores>") -> Tuple[ScoreSet, List[str]]:
        """(ScoreSet of the videos that have a ``kind`` score, ids of those that have none)."""
        values = getattr(self, kind)
        ok = np.isfinite(values)
        ids = [v for v, k in zip(self.ids, ok) if k]
        dropped = [v for v, k in zip(self.ids, ok) if not k]
        return ScoreSet(ids, values[ok], self.labels[ok], source=source), dropped

    def summary(self) -> Dict[str, Any]:
        no_cdcn = [v for v, c in zip(self.ids, self.cdcn_frames) if c == 0]
        return {"videos": len(self.ids), "frames": int(self.frames.sum()),
                "cdcn_frames": int(self.cdcn_frames.sum()),
                "cdcn_excluded_frames": int(self.frames.sum() - self.cdcn_frames.sum()),
                "videos_without_cdcn_score": no_cdcn, "videos_without_frames": self.missing}


@torch.no_grad()
def score_videos(model: nn.Module, dataset: VideoFramesDataset, device: torch.device, batch_size: int = 64,
                 workers: int = 0, amp: bool = False, desc: str = "score") -> VideoScores:
    """Run the model on every selected frame of ``dataset`` and average the frame scores per video.

    Leaves the global RNG untouched (the model draws a reparameterised sample even in eval
    mode), so evaluating never changes what a training run does afterwards.
    """
    was_training = model.training
    model.eval()
    n = len(dataset.videos)
    mean_sum, cdcn_sum = np.zeros(n), np.zeros(n)
    frames, cdcn_frames = np.zeros(n, np.int64), np.zeros(n, np.int64)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda")
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        for batch in progress(loader, desc=desc, unit="batch", leave=False):
            with autocast(device, amp):
                mu = model(to_input(batch["image"], device)).mu.float()
            mu_sum = mu.flatten(1).sum(1).cpu().double().numpy()
            pixels = mu[0].numel()
            gt_sum = batch["depth"].flatten(1).sum(1).double().numpy()
            usable = batch["has_depth"].numpy() & (gt_sum >= MIN_GT_MEAN * pixels)
            vid = batch["video"].numpy()
            np.add.at(mean_sum, vid, mu_sum / pixels)
            np.add.at(frames, vid, 1)
            np.add.at(cdcn_sum, vid[usable], mu_sum[usable] / gt_sum[usable])
            np.add.at(cdcn_frames, vid[usable], 1)
    model.train(was_training)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(frames > 0, mean_sum / np.maximum(frames, 1), np.nan)
        cdcn = np.where(cdcn_frames > 0, cdcn_sum / np.maximum(cdcn_frames, 1), np.nan)
    return VideoScores(ids=[v.row.video for v in dataset.videos],
                       labels=np.array([v.row.label for v in dataset.videos], np.int64),
                       mean=mean, cdcn=cdcn, frames=frames, cdcn_frames=cdcn_frames,
                       missing=list(dataset.missing))


def evaluate(model: nn.Module, dev: VideoFramesDataset, test: Optional[VideoFramesDataset], device: torch.device,
             out_dir: str | Path, *, score: str = "mean", modes: Tuple[str, ...] = ("iso",), batch_size: int = 64,
             workers: int = 0, amp: bool = False, plots: bool = True) -> Dict[str, Any]:
    """Score Dev (and Test), write ``<out_dir>/{dev,test}_scores.txt`` and compute the metrics.

    The threshold is chosen on Dev (its EER point) and applied to Test, by ``DUM.metrics.evaluate``
    in each of ``modes``. Without ``test`` the Dev set is measured at its own threshold. Returns
    {'score', 'metrics': {mode: result}, 'dev'/'test': scoring summaries, 'files': {...}}; the
    metrics are missing (with 'error' set) when a set lacks bona fide or attack videos. Pass it
    through ``DUM.metrics.json_ready`` before writing strict JSON (a cdcn threshold may be inf).
    """
    from DUM import metrics  # imported here: the plots module pulls in matplotlib

    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, not {score!r}")
    out_dir = Path(out_dir)
    report: Dict[str, Any] = {"score": score, "metrics": {}, "files": {}}
    sets = {}
    for name, ds in (("dev", dev), ("test", test)):
        if ds is None:
            continue
        scores = score_videos(model, ds, device, batch_size, workers, amp, desc=f"score {name}")
        path = out_dir / f"{name}_scores.txt"
        sets[name], dropped = scores.score_set(score, source=str(path))
        report[name] = scores.summary()
        report[name]["videos_without_score"] = dropped
        if dropped:
            log.warning("%s: %d video(s) have no '%s' score and are left out: %s", name, len(dropped), score,
                        ", ".join(dropped[:10]) + (" ..." if len(dropped) > 10 else ""))
        if len(sets[name]):
            metrics.write_scores(path, sets[name].ids, sets[name].scores, sets[name].labels)
            report["files"][name] = str(path)
    dev_set = sets.get("dev")
    test_set = sets.get("test", dev_set)
    try:
        for mode in modes:
            report["metrics"][mode] = metrics.evaluate(dev_set, test_set, mode=mode)
    except (ValueError, TypeError) as e:  # one-class or empty sets: rates would be 0/0
        report["error"] = str(e)
        log.warning("no metrics: %s", e)
        return report
    if plots:
        from DUM import plots as figures

        thr = report["metrics"][modes[0]]["threshold"]
        thr = thr if math.isfinite(thr) else None  # cdcn's "reject all" sentinel cannot be drawn
        figures.plot_roc_det(dev_set, test_set, out_dir / "roc_det.png", thr, mode=modes[0])
        figures.plot_score_histogram(dev_set, test_set, out_dir / "score_histogram.png", thr)
        report["files"].update(roc_det=str(out_dir / "roc_det.png"), histogram=str(out_dir / "score_histogram.png"))
    return report


# ----------------------------------------------------------------------------------------------
# Pictures
# ----------------------------------------------------------------------------------------------

def grid_keys(dataset: DUMTrainDataset, n: int = 8, seed: int = 0) -> List[Tuple[int, int]]:
    """Fixed (row, seed) keys for the training image grid: live, attack and generated rows alike."""
    live = [i for i, v in enumerate(dataset.videos) if v.live]
    attack = [i for i, v in enumerate(dataset.videos) if not v.live]
    picks: List[int] = []
    for pool in (live, attack):
        picks += pool[: n // 2]
    picks = (picks + [i for i in range(len(dataset)) if i not in picks])[:n]
    return [(i, seed + k) for k, i in enumerate(picks)]


@torch.no_grad()
def depth_grid(model: nn.Module, dataset: DUMTrainDataset, keys: List[Tuple[int, int]],
               device: torch.device) -> torch.Tensor:
    """(3, H', W') image in [0, 1]: rows = inputs, label maps, predicted mu, predicted sigma.

    Maps are shown at the input size (nearest neighbour, to keep their pixels visible); mu and
    labels share the [0, 1] depth scale, sigma is scaled by its own maximum.
    """
    from torchvision.utils import make_grid

    samples = [dataset[k] for k in keys]
    images = torch.stack([s["image"] for s in samples])
    labels = torch.stack([s["map"] for s in samples])
    was_training = model.training
    model.eval()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        out = model(to_input(images, device))
    model.train(was_training)
    size = images.shape[-2:]

    def as_rgb(maps: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(maps.float().cpu().unsqueeze(1), size=size, mode="nearest")
        return up.clamp(0, 1).expand(-1, 3, -1, -1)

    sigma = out.logvar.float().mul(0.5).exp()
    rows = [denormalise_image(images), as_rgb(labels), as_rgb(out.mu), as_rgb(sigma / sigma.max().clamp(min=1e-8))]
    return make_grid(torch.cat(rows), nrow=len(samples), padding=2, pad_value=1.0)
