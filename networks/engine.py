"""Training epoch, prior sampling and image-grid helpers for the DSDG generator.

``train_generator.py`` wires arguments, data, models and checkpoints together and calls
:func:`train_one_epoch`; ``generated.py`` uses :func:`sample_pairs` and :func:`to_uint8`.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from misc.distributed import unwrap
from misc.distributed import all_reduce_mean, all_reduce_tensor_mean, gather_batch
from misc.grids import labelled_grid, pair_labels
from misc.precision import FP32, Precision
from misc.progress import progress
from networks.generator import Decoder, DualVAE, prior_latent
from networks.losses import TERMS, LossWeights, generator_loss


# Latents that enter batch-level terms (identity alignment compares batch means, orthogonality takes
# the absolute batch mean), which a mean of per-rank values would not reproduce.
BATCH_LEVEL_LATENTS = ("z_spoof_id", "z_live_id", "z_pattern")


def with_global_latents(out: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Under DDP, the forward outputs with the latents of the whole global batch in place of this
    rank's (``misc.distributed.gather_batch``, differentiable); ``out`` itself in a single process.

    The batch-level terms then see the same batch as a single process with the global batch (and as
    the original's DataParallel), and their gradient after DDP's averaging is that single-process
    gradient. The per-sample terms stay local: DDP's averaging already makes them global means.
    """
    gathered = {k: gather_batch(out[k]) for k in BATCH_LEVEL_LATENTS}
    return out if all(gathered[k] is out[k] for k in gathered) else {**out, **gathered}


def regulariser_scale(epoch: int, warmup_epochs: int, warmup_factor: float) -> float:
    """Weight of every non-reconstruction term: ``warmup_factor`` (0.01) for the first epochs, then 1."""
    return warmup_factor if epoch < warmup_epochs else 1.0


def train_one_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
                    device: torch.device, epoch: int, weights: LossWeights, *,
                    lightcnn: Optional[nn.Module] = None, scaler: Optional[torch.amp.GradScaler] = None,
                    precision: Precision = FP32, scale: float = 1.0, iteration: int = 0,
                    max_iters: Optional[int] = None, writer=None, log_every: int = 20,
                    total_iters: Optional[int] = None) -> Tuple[Dict[str, float], int]:
    """One pass over ``loader``; returns the epoch mean of every loss term (averaged over ranks)
    and the updated optimizer-step counter.

    ``model`` is a :class:`~networks.generator.DualVAE` (possibly DDP-wrapped, each rank's ``loader``
    yielding its equal share of the global batches); ``scale`` multiplies all terms but the
    reconstruction (warm-up). ``max_iters`` caps the epoch (smoke runs). Every rank must run the same
    number of steps: the logged values are averaged over ranks, and ``writer`` is given on rank 0 only.
    The progress bar shows rank 0's running means.
    """
    model.train()
    sums: Dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=device, dtype=torch.float64))
    count = 0
    if total_iters is None:
        total_iters = len(loader) if max_iters is None else min(len(loader), max_iters)
    bar = progress(loader, desc=f"epoch {epoch + 1}", total=total_iters, unit="batch")
    for step, batch in enumerate(bar):
        if max_iters is not None and step >= max_iters:
            break
        spoof = batch["spoof"].to(device, non_blocking=True)
        live = batch["live"].to(device, non_blocking=True)
        spoof_type = batch["type"].to(device, non_blocking=True)

        with precision.autocast():
            out = with_global_latents(model(spoof, live))
            total, terms = generator_loss(out, spoof, live, spoof_type, weights, lightcnn, scale)
        if not math.isfinite(total.item()):
            values = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
            raise FloatingPointError(f"non-finite generator loss at epoch {epoch + 1}, step {step}: {values}")

        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            total.backward()
            optimizer.step()
        iteration += 1

        # Terms are summed on the device: the finiteness check above is the only sync per step.
        for k, v in terms.items():
            sums[k] += v.detach().double()
        sums["total"] += total.detach().double()
        count += 1
        if step % log_every == 0 or step + 1 == total_iters:
            running = {k: (v / count).item() for k, v in sums.items()}
            bar.set_postfix({k: f"{running[k]:.3g}" for k in ("total",) + TERMS if k in running}, refresh=False)
            names = list(terms) + ["total"]
            values = all_reduce_tensor_mean(torch.stack([v.detach().float() for v in terms.values()]
                                                        + [total.detach().float()])).tolist()
            if writer is not None:
                for k, v in zip(names, values):
                    writer.add_scalar(f"train/{k}", v, iteration)
                writer.add_scalar("train/regulariser_scale", scale, iteration)
    bar.close()
    if count == 0:
        raise RuntimeError("the training loader yielded no batch: the dataset is smaller than one batch "
                           "(lower --batch-size or add data)")
    means = {k: all_reduce_mean((v / count).item(), device) for k, v in sums.items()}
    return means, iteration


# ----------------------------------------------------------------------------------------------
# Sampling and visualisation
# ----------------------------------------------------------------------------------------------

@torch.no_grad()
def sample_pairs(decoder: Decoder, num: int, generator: Optional[torch.Generator] = None,
                 device: Optional[torch.device] = None) -> torch.Tensor:
    """Decode ``num`` prior samples into spoof/live pairs (num, 6, S, S) in [0, 1].

    Pattern and identity are drawn independently from N(0, I) (on the CPU with ``generator``, so the
    draw is the same on every device); the one identity vector fills both identity slots, so the
    spoof image (channels 0-2) and the live image (3-5) show the same new person.
    """
    decoder = unwrap(decoder)
    device = device or next(decoder.parameters()).device
    pattern = torch.randn(num, decoder.hdim, generator=generator)
    identity = torch.randn(num, decoder.hdim, generator=generator)
    was_training = decoder.training
    decoder.eval()
    out = decoder(prior_latent(pattern, identity).to(device)).float()
    decoder.train(was_training)
    return out


def _pair_rows(spoof: torch.Tensor, live: torch.Tensor, pairs_per_row: int) -> List[torch.Tensor]:
    """Rows of ``pairs_per_row`` pairs, each spoof image (3, S, S) followed by its live partner."""
    both = torch.stack([spoof, live], dim=1).flatten(0, 1).float().clamp(0, 1).cpu()  # s0, l0, s1, l1, ...
    step = 2 * pairs_per_row
    return [both[i:i + step] for i in range(0, both.shape[0], step)]


def _pair_names(what: str, n: int, pairs_per_row: int) -> List[str]:
    """The row labels of ``n`` pairs: 'input\\npairs 1-4', 'input\\npairs 5-8', ... ('pair 9' for a lone one)."""
    names = []
    for k in range(0, n, pairs_per_row):
        last = min(k + pairs_per_row, n)
        names.append(f"{what}\npair {last}" if last == k + 1 else f"{what}\npairs {k + 1}-{last}")
    return names


def pair_grid(spoof: torch.Tensor, live: torch.Tensor, pairs_per_row: int = 4, what: str = "input",
              title: Optional[str] = None) -> torch.Tensor:
    """Grid (3, H, W) of spoof/live pairs (B, 3, S, S each), labelled in the picture: columns
    "spoof | live", rows ``what`` and the pair numbers; tiles enlarged to at least 96 px (``misc.grids``)."""
    n = spoof.shape[0]
    rows = _pair_rows(spoof, live, pairs_per_row)
    return labelled_grid(rows, _pair_names(what, n, pairs_per_row), pair_labels(min(pairs_per_row, n)), title=title,
                         group=2)


def reconstruction_grid(spoof: torch.Tensor, live: torch.Tensor, rec_spoof: torch.Tensor, rec_live: torch.Tensor,
                        pairs_per_row: int = 4, title: Optional[str] = None) -> torch.Tensor:
    """Grid (3, H, W) whose rows alternate: a row of input pairs, then the row of their reconstructions, so
    each reconstruction sits right under its input; labelled like :func:`pair_grid`."""
    n = spoof.shape[0]
    inputs, recs = _pair_rows(spoof, live, pairs_per_row), _pair_rows(rec_spoof, rec_live, pairs_per_row)
    rows = [r for pair in zip(inputs, recs) for r in pair]
    names = [t for pair in zip(_pair_names("input", n, pairs_per_row), _pair_names("reconstruction", n, pairs_per_row))
             for t in pair]
    return labelled_grid(rows, names, pair_labels(min(pairs_per_row, n)), title=title, group=2)


@torch.no_grad()
def visualise(model: DualVAE, spoof: torch.Tensor, live: torch.Tensor, generator_seed: int,
              num_samples: int, device: torch.device) -> Dict[str, torch.Tensor]:
    """Labelled grids of fixed inputs, the same inputs each above its reconstruction (posterior means, no
    sampling), and prior samples.

    The prior samples use a fixed seed, so the same latent codes are shown at every epoch, and the
    global RNG is left untouched (a resumed run stays bit-identical).
    """
    model = unwrap(model)
    was_training = model.training
    model.eval()
    rec = model.reconstruct_mean(spoof.to(device), live.to(device)).float()
    samples = sample_pairs(model.netG, num_samples, torch.Generator().manual_seed(generator_seed), device)
    model.train(was_training)
    return {"inputs": pair_grid(spoof, live, title="fixed training pairs: a spoof face and a live face of one person"),
            "reconstructions": reconstruction_grid(spoof, live, rec[:, :3], rec[:, 3:],
                                                   title="each input row above its reconstruction (posterior means)"),
            "samples": pair_grid(samples[:, :3], samples[:, 3:], what="prior sample",
                                 title="prior samples (fixed seed): one new identity per pair, spoof and live")}


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) RGB in [0, 1] -> (N, H, W, 3) RGB uint8, *rounded* (the original truncated)."""
    x = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()
