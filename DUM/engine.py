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
from torch import nn
from torch.utils.data import DataLoader

from DUM import zoo
from DUM.datasets import DUMTrainDataset, VideoFramesDataset
from DUM.metrics import ScoreSet
from DUM.transforms import denormalise_image
from data.oulu import label_kind
from misc.checkpoint import FORMAT, CheckpointError, load_state_dict_strict, strip_prefix
from misc.distributed import all_reduce_sum
from misc.grids import colour_map, labelled_grid
from misc.io import atomic_write_text
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
               map_size: Optional[int] = None, return_meta: bool = False, model: Optional[str] = None):
    """The network of a model file, in eval mode: the released ``CDCN_U_P1.pkl``, a bare state_dict of
    another network in the original's layout, or one of our checkpoints.

    Which network (``DUM.zoo`` name): a checkpoint of ``DUM/train.py`` stores it in its args (files
    written before there was a choice are recognised by their keys); a bare state_dict (DataParallel
    ``module.`` prefixes allowed) is recognised by its keys. ``model`` names the network expected:
    for a checkpoint it must be the stored one, for a bare state_dict it overrides the recognition
    (and the keys must fit it). Bare state_dicts carry no sizes: theta 0.7 and 32 x 32 maps, as the
    original; checkpoints carry theta and the map size in their args; ``theta``/``map_size``
    override either. With ``return_meta`` the result is ``(model, meta)``, meta = {'source':
    'released'|'checkpoint', 'model', 'args', 'extra', 'epoch'}. Raises CheckpointError naming the
    file and the problem: unreadable, another network than asked, or keys that fit no network (the
    missing/unexpected keys of the nearest one listed).
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
    name = _network_of(path, sd, args.get("model"), model)
    spec = zoo.get(name)
    theta = theta if theta is not None else float(args.get("theta", 0.7))
    map_size = map_size if map_size is not None else int(args.get("map_size", 32))
    net = spec.build(theta=theta, map_size=map_size)
    load_state_dict_strict(net, sd, source=f"{path} (as {name})")
    meta["model"] = name
    net = net.to(device).to(memory_format=torch.channels_last).eval()
    return (net, meta) if return_meta else net


def _network_of(path: Path, sd: Dict[str, Any], stored: Optional[str], asked: Optional[str]) -> str:
    """The registry name to build for a file: its stored name (which ``asked`` must equal), else the
    network its keys are exactly those of (``asked`` overrides, but must not contradict them)."""
    if asked is not None:
        zoo.get(asked)  # an unknown name fails here, listing the choices
    if stored is not None:
        if stored not in zoo.MODELS:
            raise CheckpointError(f"{path}: trained as '{stored}', which this code does not know "
                                  f"(it knows {', '.join(zoo.NAMES)})")
        if asked is not None and asked != stored:
            raise CheckpointError(f"{path}: was trained as '{stored}', not '{asked}' (--model {asked}); "
                                  f"leave --model out or pass --model {stored}")
        return stored
    detected = zoo.detect(sd)
    if asked is not None:
        if detected is not None and detected != asked:
            raise CheckpointError(f"{path}: its keys are those of '{detected}', not of '{asked}' (--model {asked}); "
                                  f"leave --model out or pass --model {detected}")
        return asked  # keys that fit no network fail in the strict load, naming the file and '{asked}'
    if detected is None:
        nearest = zoo.closest(sd)
        try:  # lists the nearest network's missing, unexpected and wrongly shaped keys
            load_state_dict_strict(zoo.get(nearest).build(), sd, source=f"{path} (nearest: {nearest})")
        except CheckpointError as e:
            raise CheckpointError(f"{path}: its keys fit none of the networks ({', '.join(zoo.NAMES)}).\n{e}") from None
        raise AssertionError("unreachable: equal key sets are detected")
    return detected


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
                    amp: bool = False, generated_weight: float = 0.1, kl_weight: float = 1e-3,
                    spec: Optional[zoo.ModelSpec] = None) -> Dict[str, float]:
    """One pass over ``loader``; returns the epoch averages of every loss term over all ranks.

    The objective is the network's (``spec``, by default ``DUM.zoo.spec_of(model)``): DSDG's for the
    DUM networks, plain CDCN's for ``cdcn`` (``kl_weight`` then unused). ``model`` may be DDP-wrapped;
    each rank's ``loader`` yields its share of the global batches. Each group's terms
    (``real_*``/``gen_*``, whatever the objective returns) are averaged over that group's samples (the
    original weighted every term by the full batch size). ``loss`` (the total) is averaged per batch,
    and so is ``sigma`` for networks with an uncertainty. Raises FloatingPointError on a non-finite
    loss rather than training on garbage.
    """
    spec = spec or zoo.spec_of(model)
    model.train()
    meter = WeightedMeter()
    for batch in progress(loader, desc=f"epoch {epoch + 1}", unit="batch", leave=False):
        images = to_input(batch["image"], device)
        target = batch["map"].to(device, non_blocking=True)
        generated = batch["generated"].to(device, non_blocking=True)
        with autocast(device, amp):
            out = model(images)
        losses = spec.losses(out, target, generated, generated_weight=generated_weight, kl_weight=kl_weight)
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
        counts = {"real": int(losses["n_real"]), "gen": int(losses["n_gen"])}
        meter.update("loss", loss.item(), 1)
        for key, value in losses.items():
            group = key.split("_", 1)[0]
            if group in counts:  # real_<term>, gen_<term>
                meter.update(key, value.item(), counts[group])
        if spec.uncertainty:
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
                 workers: int = 0, amp: bool = False, desc: str = "score") -> VideoScores:
    """Run the model on every selected frame of ``dataset`` and average the frame scores per video.

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
            with autocast(device, amp):
                mu = model(to_input(batch["image"], device)).mu.float()
            mu_sum = mu.flatten(1).sum(1).cpu().double().numpy()
            pixels = mu[0].numel()
            gt_sum = batch["depth"].flatten(1).sum(1).double().numpy()
            has_depth = batch["has_depth"].numpy()
            usable = has_depth & (gt_sum >= MIN_GT_MEAN * pixels)
            vid = batch["video"].numpy()
            np.add.at(mean_sum, vid, mu_sum / pixels)
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
             modes: Tuple[str, ...] = ("iso",), batch_size: int = 64, workers: int = 0, amp: bool = False,
             plots: bool = True) -> Dict[str, Any]:
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
    splits = {name: score_videos(model, ds, device, batch_size, workers, amp, desc=f"score {name}")
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
def predict_maps(model: nn.Module, images: torch.Tensor, device: torch.device,
                 amp: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(mu, sigma) of normalised faces (B, 3, S, S): (B, M, M) float32 on the CPU, sigma = exp(logvar / 2)
    or None for a network without an uncertainty (``DUM.zoo``). Eval mode for the call; the global RNG
    is left untouched (the DUM networks draw their reparameterised sample even in eval mode)."""
    was_training = model.training
    model.eval()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), autocast(device, amp):
        out = model(to_input(images, device))
    model.train(was_training)
    sigma = None if out.logvar is None else out.logvar.float().mul(0.5).exp().cpu()
    return out.mu.float().cpu(), sigma


def sample_kind(video) -> str:
    """Column label of a training sample: its kind ('bona fide', 'print', ...) and whether it is generated."""
    kind = label_kind(int(video.row.label))
    return f"{kind}\ngenerated" if video.generated else kind


@torch.no_grad()
def depth_grid(model: nn.Module, dataset: DUMTrainDataset, keys: List[Tuple[int, int]],
               device: torch.device, title: Optional[str] = None) -> torch.Tensor:
    """(3, H', W') image in [0, 1], labelled in the picture (``misc.grids``): rows = inputs, label maps,
    predicted mu, predicted sigma (the last row only for networks with an uncertainty, ``DUM.zoo``);
    one column per sample, headed by its kind.

    Tiles are enlarged to at least 96 px whatever the training size (nearest neighbour, so a map's
    pixels stay visible). mu and the labels share the [0, 1] depth scale (grey, nearer = brighter);
    sigma is colour-mapped from 0 to its largest value in the grid, which its row label gives.
    """
    samples = [dataset[k] for k in keys]
    images = torch.stack([s["image"] for s in samples])
    labels = torch.stack([s["map"] for s in samples])
    mu, sigma = predict_maps(model, images, device)
    rows = [denormalise_image(images), labels.float().clamp(0, 1), mu.clamp(0, 1)]
    names = ["input", "label\n0 .. 1", "mu\n0 .. 1"]
    if sigma is not None:
        top = float(sigma.max().clamp(min=1e-8))
        rows.append(colour_map(sigma, top))
        names.append(f"sigma\n0 .. {top:.3g}")
    columns = [sample_kind(dataset.videos[row]) for row, _ in keys]
    return labelled_grid(rows, names, columns, title=title)
