"""Losses of the depth networks: absolute depth MSE, contrast-depth loss and the DUM's KL term, and the
two objectives built from them: DSDG's (:func:`dum_losses`) and plain CDCN's (:func:`cdcn_losses`).

All are pure functions of tensors (no state). Maps are (B, M, M); per-sample variants return (B,)
so that real and generated samples can be weighted separately.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

# Neighbour offsets (row, col) of the eight contrast kernels, in the original's order:
# top-left, top, top-right, left, right, bottom-left, bottom, bottom-right.
_NEIGHBOURS = ((0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2))


def contrast_depth_kernels(dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """(8, 1, 3, 3) kernels, each -1 at the centre and +1 at one of the eight neighbours."""
    k = torch.zeros(8, 1, 3, 3, dtype=dtype, device=device)
    for i, (r, c) in enumerate(_NEIGHBOURS):
        k[i, 0, r, c] = 1.0
        k[i, 0, 1, 1] = -1.0
    return k


def contrast_depth(depth: torch.Tensor) -> torch.Tensor:
    """Neighbour-minus-centre differences of a depth map, without padding.

    depth: (B, M, M) -> (B, 8, M-2, M-2); channel i is depth[r+dr_i, c+dc_i] - depth[r, c].
    (The original replicates the map 8 times and uses a grouped conv; one 1->8 conv is the same.)
    """
    kernels = contrast_depth_kernels(depth.dtype, depth.device)
    return F.conv2d(depth.unsqueeze(1), kernels)


def depth_mse_per_sample(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean_{pixels} (pred - target)^2 for each sample: (B, M, M) x2 -> (B,)."""
    return (pred - target).pow(2).flatten(1).mean(1)


def contrast_depth_loss_per_sample(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean_{8 x (M-2) x (M-2)} (CD(pred) - CD(target))^2 for each sample: (B,)."""
    return (contrast_depth(pred) - contrast_depth(target)).pow(2).flatten(1).mean(1)


def dum_kl_per_sample(mu: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL( N(mu, exp(logvar)) || N(target, 1) ) summed over pixels, for each sample: (B,).

    sum_{pixels} 1/2 * (exp(logvar) + (mu - target)^2 - 1 - logvar)

    Summed (not averaged) over pixels as in the original, while the MSE terms are averaged; the
    small weight (0.001) on this term compensates.
    """
    return 0.5 * (logvar.exp() + (mu - target).pow(2) - 1.0 - logvar).flatten(1).sum(1)


def contrast_depth_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Batch mean of :func:`contrast_depth_loss_per_sample` (= MSE between contrast maps)."""
    return contrast_depth_loss_per_sample(pred, target).mean()


def dum_kl(mu: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Batch mean of :func:`dum_kl_per_sample`."""
    return dum_kl_per_sample(mu, logvar, target).mean()


def _group_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is true; 0 (still in the graph) for an empty group."""
    n = mask.sum()
    return (values * mask).sum() / n.clamp(min=1)


def dum_losses(mu: torch.Tensor, logvar: torch.Tensor, sample: torch.Tensor, target: torch.Tensor,
               generated: torch.Tensor, generated_weight: float = 0.1, kl_weight: float = 1e-3) -> Dict[str, torch.Tensor]:
    """The DSDG training objective and its six parts.

    For each group g in {real, generated} (means over the samples of that group):
      L_g = MSE(sample, y) + MSE(CD(sample), CD(y)) + kl_weight * KL(N(mu, sigma^2) || N(y, 1))
    total = L_real + generated_weight * L_generated

    mu, logvar, sample, target: (B, M, M); generated: (B,) bool. An empty group contributes 0.
    Returns ``total`` plus ``{real,gen}_{abs,contrast,kl}`` (unweighted group means) and the counts
    ``n_real``/``n_gen`` that a meter needs to average them correctly.
    """
    per_sample = {
        "abs": depth_mse_per_sample(sample, target),
        "contrast": contrast_depth_loss_per_sample(sample, target),
        "kl": dum_kl_per_sample(mu, logvar, target),
    }
    return _grouped_objective(per_sample, {"abs": 1.0, "contrast": 1.0, "kl": kl_weight}, generated, generated_weight)


def cdcn_losses(depth: torch.Tensor, target: torch.Tensor, generated: torch.Tensor,
                generated_weight: float = 0.1) -> Dict[str, torch.Tensor]:
    """The plain CDCN objective (Yu et al., CVPR 2020): depth MSE + contrast-depth loss on the
    predicted map itself, no uncertainty and no KL term; generated samples weighted as in DSDG.

    For each group g in {real, generated}: L_g = MSE(depth, y) + MSE(CD(depth), CD(y));
    total = L_real + generated_weight * L_generated. depth, target: (B, M, M); generated: (B,) bool.
    Returns ``total``, ``{real,gen}_{abs,contrast}`` and ``n_real``/``n_gen`` like :func:`dum_losses`.
    """
    per_sample = {"abs": depth_mse_per_sample(depth, target), "contrast": contrast_depth_loss_per_sample(depth, target)}
    return _grouped_objective(per_sample, {"abs": 1.0, "contrast": 1.0}, generated, generated_weight)


def _grouped_objective(per_sample: Dict[str, torch.Tensor], weights: Dict[str, float], generated: torch.Tensor,
                       generated_weight: float) -> Dict[str, torch.Tensor]:
    """total = sum_t w_t * mean_real(term_t) + generated_weight * sum_t w_t * mean_gen(term_t), plus
    every unweighted group mean ``{real,gen}_<term>`` and the group sizes ``n_real``/``n_gen``."""
    generated = generated.to(torch.bool)
    real = ~generated
    out: Dict[str, torch.Tensor] = {}
    group_total = {}
    for name, mask in (("real", real), ("gen", generated)):
        m = mask.to(next(iter(per_sample.values())).dtype)
        for term, values in per_sample.items():
            out[f"{name}_{term}"] = _group_mean(values, m)
        group_total[name] = sum(weights[t] * out[f"{name}_{t}"] for t in per_sample)
    out["total"] = group_total["real"] + generated_weight * group_total["gen"]
    out["n_real"] = real.sum()
    out["n_gen"] = generated.sum()
    return out
