"""Small checkpoints of the depth networks (CDCN_U by default, any of DUM.zoo) for the deployment tests
(export_onnx, predict): random weights whose depth maps are of the trained network's order (about 1), in
our checkpoint format and in the released one."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from torch import nn

from DUM import zoo
from misc.checkpoint import save_checkpoint


def _depth_head(model: nn.Module) -> nn.Conv2d:
    """The convolution that makes the depth map: the DUM's mu head, or plain CDCN's lastconv3."""
    if zoo.spec_of(model).uncertainty:
        return model.mu_head[0]
    return model.lastconv3[0].conv


def tiny_model(map_size: int = 8, image_size: int = 32, seed: int = 0, model: str = "cdcn_u") -> nn.Module:
    """A ``model`` network with random batch-norm statistics and a depth head scaled so |mu| is about 1.

    Freshly initialised, the network outputs ~1e-3 everywhere, which would make a 1e-4 comparison
    tolerance meaningless.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = zoo.get(model).build(map_size=map_size)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
        net.eval()
        x = torch.rand(2, 3, image_size, image_size, generator=gen) * 2 - 1
        # a positive factor: it also scales plain CDCN's ReLU'd map exactly
        _depth_head(net).weight.mul_(1.0 / net(x).mu.abs().mean().clamp(min=1e-12))
    return net


def write_checkpoint(path: Path, threshold: Optional[float] = 0.25, image_size: int = 32, map_size: int = 8,
                     seed: int = 0, model: str = "cdcn_u") -> Path:
    """A DUM/train.py-style checkpoint (kind 'dum', args with the network and sizes, extra with the Dev threshold)."""
    extra = {"threshold": threshold, "score": "mean", "protocol": "1"}
    if threshold is not None:
        extra["threshold_epoch"] = 2
    return save_checkpoint(path, kind="dum", models={"model": tiny_model(map_size, image_size, seed, model)}, epoch=2,
                           args={"model": model, "image_size": image_size, "map_size": map_size, "theta": 0.7},
                           extra=extra)


def write_released(path: Path, seed: int = 0, model: str = "cdcn_u") -> Path:
    """A file shaped like the released CDCN_U_P1.pkl (or the original code's state_dict of another
    network): a bare DataParallel state_dict (``module.`` keys)."""
    sd = tiny_model(32, 32, seed, model).state_dict()
    torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    return path
