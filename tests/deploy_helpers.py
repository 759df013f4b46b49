"""Small CDCN_U checkpoints for the deployment tests (export_onnx, predict): random weights whose depth
maps are of the trained network's order (about 1), in our checkpoint format and in the released one."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from DUM.models import CDCN_U
from misc.checkpoint import save_checkpoint


def tiny_model(map_size: int = 8, image_size: int = 32, seed: int = 0) -> CDCN_U:
    """A CDCN_U with random batch-norm statistics and a mean-depth head scaled so |mu| is about 1.

    Freshly initialised, the network outputs ~1e-3 everywhere, which would make a 1e-4 comparison
    tolerance meaningless.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = CDCN_U(map_size=map_size)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
        model.eval()
        x = torch.rand(2, 3, image_size, image_size, generator=gen) * 2 - 1
        model.mu_head[0].weight.mul_(1.0 / model(x).mu.abs().mean().clamp(min=1e-12))
    return model


def write_checkpoint(path: Path, threshold: Optional[float] = 0.25, image_size: int = 32, map_size: int = 8,
                     seed: int = 0) -> Path:
    """A DUM/train.py-style checkpoint (kind 'dum', args with the sizes, extra with the Dev threshold)."""
    extra = {"threshold": threshold, "score": "mean", "protocol": "1"}
    if threshold is not None:
        extra["threshold_epoch"] = 2
    return save_checkpoint(path, kind="dum", models={"model": tiny_model(map_size, image_size, seed)}, epoch=2,
                           args={"image_size": image_size, "map_size": map_size, "theta": 0.7}, extra=extra)


def write_released(path: Path, seed: int = 0) -> Path:
    """A file shaped like the released CDCN_U_P1.pkl: a bare DataParallel state_dict (``module.`` keys)."""
    sd = tiny_model(32, 32, seed).state_dict()
    torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    return path
