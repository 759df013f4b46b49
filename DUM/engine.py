"""The training loop of the DUM depth networks and the picture of their predictions during training.

Loading a model file is ``DUM/weights.py``; frame and video scores and the Dev/Test evaluation are
``DUM/scoring.py``.
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader

from DUM import zoo
from DUM.datasets import DUMTrainDataset
from DUM.scoring import predict_maps
from DUM.transforms import denormalise_image
from data.protocol_lists import label_kind
from misc.device import to_input
from misc.distributed import all_reduce_sum
from misc.grids import colour_map, labelled_grid
from misc.precision import FP32, Precision
from misc.progress import progress

log = logging.getLogger(__name__)

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
                    precision: Precision = FP32, generated_weight: float = 0.1, kl_weight: float = 1e-3,
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
        with precision.autocast():
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
