"""DSDG generator losses, named for what they compute.

Every term has the exact form of the original training script (see the project docs for the
table). Two of the original's names are misleading and are renamed here:

* the original "MMD" loss is not a kernel MMD but the L1 distance between the batch means of the
  two identity latents: :func:`identity_alignment_loss`;
* the original "angular orthogonal" loss is the absolute batch mean of the raw dot product between
  the pattern and identity latents (not a cosine, not squared): :func:`orthogonality_loss`.

All terms are computed in float32 even under mixed precision: the reconstruction sums ~400k squared
errors per sample and the KL exponentiates log-variances, both of which overflow float16.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from networks.light_cnn import INPUT_SIZE as LIGHTCNN_SIZE


@dataclass
class LossWeights:
    """Weights of the loss terms; defaults are the paper's (train_generator.sh) values."""
    alignment: float = 50.0     # identity-latent alignment (the original's lambda_mmd)
    identity: float = 1000.0    # identity preservation through LightCNN (lambda_ip)
    pair: float = 5.0           # pair identity (lambda_pair)
    spoof_type: float = 10.0    # spoof-type classification (lambda_type)
    orthogonal: float = 1.0     # pattern/identity orthogonality (lambda_ort)

    def as_dict(self) -> Dict[str, float]:
        return asdict(self)


def reconstruction_loss(rec: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1/2 * batch mean of the per-sample sum of squared errors. rec, target: (B, C, H, W)."""
    diff = rec.float() - target.float()
    return 0.5 * diff.pow(2).flatten(1).sum(1).mean()


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over latent dims, batch mean. mu, logvar: (B, D)."""
    mu, logvar = mu.float(), logvar.float()
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()


def identity_alignment_loss(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """mean_d | mean_batch(z_a) - mean_batch(z_b) |: aligns the two identity-latent distributions
    by their batch means (the original calls it "MMD"). z_a, z_b: (B, D)."""
    return (z_a.float().mean(0) - z_b.float().mean(0)).abs().mean()


def orthogonality_loss(z_pattern: torch.Tensor, z_identity: torch.Tensor) -> torch.Tensor:
    """| mean_batch <z_pattern, z_identity> |: pushes the spoof pattern and identity latents towards
    orthogonality (unnormalised dot product, as in the original). Inputs: (B, D)."""
    return (z_pattern.float() * z_identity.float()).sum(1).mean().abs()


def spoof_type_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the spoof-type classifier on the pattern latent. logits (B, T), target (B,) in [0, T)."""
    return F.cross_entropy(logits.float(), target)


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) luma 0.299 R + 0.587 G + 0.114 B (no normalisation, as LightCNN expects)."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def identity_features(lightcnn: nn.Module, rgb: torch.Tensor) -> torch.Tensor:
    """L2-normalised LightCNN feature (B, 256) of RGB faces (B, 3, S, S) in [0, 1].

    Faces are resized bilinearly to 128x128 (the original downsampled 256 -> 128) and turned grey.
    """
    if rgb.shape[-1] != LIGHTCNN_SIZE or rgb.shape[-2] != LIGHTCNN_SIZE:
        rgb = F.interpolate(rgb, size=(LIGHTCNN_SIZE, LIGHTCNN_SIZE), mode="bilinear", align_corners=False)
    return F.normalize(lightcnn(rgb_to_gray(rgb)).float(), dim=1)


def identity_preserving_loss(f_rec_spoof: torch.Tensor, f_spoof: torch.Tensor,
                             f_rec_live: torch.Tensor, f_live: torch.Tensor) -> torch.Tensor:
    """1/2 [MSE(f(rec_spoof), f(spoof)) + MSE(f(rec_live), f(live))], targets detached. Features (B, 256)."""
    return 0.5 * (F.mse_loss(f_rec_spoof, f_spoof.detach()) + F.mse_loss(f_rec_live, f_live.detach()))


def pair_identity_loss(f_rec_spoof: torch.Tensor, f_rec_live: torch.Tensor) -> torch.Tensor:
    """MSE(f(rec_spoof), f(rec_live)): the two decoded images should show one identity. Features (B, 256)."""
    return F.mse_loss(f_rec_spoof, f_rec_live)


# Order in which terms are reported (progress bar, TensorBoard, logs).
TERMS = ("rec", "kl", "align", "type", "ort", "ip", "pair")


def generator_loss(out: Mapping[str, torch.Tensor], spoof: torch.Tensor, live: torch.Tensor,
                   spoof_type: torch.Tensor, weights: LossWeights, lightcnn: Optional[nn.Module] = None,
                   regulariser_scale: float = 1.0) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Total DSDG generator loss and its terms (each already multiplied by its weight).

    ``out`` is :meth:`networks.generator.DualVAE.forward`'s dict; ``spoof``/``live`` (B, 3, S, S) are
    the inputs, ``spoof_type`` (B,) the class index. ``regulariser_scale`` multiplies every term but
    the reconstruction (0.01 in the original's first epoch). Without ``lightcnn`` the identity and
    pair terms are left out (a run that does not reproduce the paper).
    Total = rec + scale * (kl + align + type + ort + ip + pair).
    """
    rec = out["rec"]
    terms: Dict[str, torch.Tensor] = {
        "rec": reconstruction_loss(rec, torch.cat([spoof, live], dim=1)),
        "kl": (kl_divergence(out["mu_spoof_id"], out["logvar_spoof_id"])
               + kl_divergence(out["mu_live_id"], out["logvar_live_id"])
               + kl_divergence(out["mu_pattern"], out["logvar_pattern"])) / 3.0,
        "align": weights.alignment * identity_alignment_loss(out["z_spoof_id"], out["z_live_id"]),
        "type": weights.spoof_type * spoof_type_loss(out["logits"], spoof_type),
        "ort": weights.orthogonal * orthogonality_loss(out["z_pattern"], out["z_spoof_id"]),
    }
    if lightcnn is not None:
        rec_spoof, rec_live = rec[:, :3], rec[:, 3:]
        with torch.no_grad():
            f_spoof = identity_features(lightcnn, spoof)
            f_live = identity_features(lightcnn, live)
        f_rec_spoof = identity_features(lightcnn, rec_spoof)
        f_rec_live = identity_features(lightcnn, rec_live)
        terms["ip"] = weights.identity * identity_preserving_loss(f_rec_spoof, f_spoof, f_rec_live, f_live)
        terms["pair"] = weights.pair * pair_identity_loss(f_rec_spoof, f_rec_live)
    regularisers = sum(v for k, v in terms.items() if k != "rec")
    total = terms["rec"] + regulariser_scale * regularisers
    return total, terms
