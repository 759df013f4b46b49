"""The depth networks the DUM tools train, test, export and benchmark, and everything that depends on
which one it is: how to build it, its training objective, whether it predicts an uncertainty, where
it comes from, and how to recognise a file of it by its keys.

    spec = zoo.get("cdcn")                       # or zoo.spec_of(model)
    model = spec.build(theta=0.7, map_size=32)
    losses = spec.losses(model(x), target, generated, generated_weight=0.1, kl_weight=1e-3)

The trainer, the tester and the exporters go through this table only; the networks themselves are
in ``DUM/models.py``. Every network maps a (B, 3, H, W) face to (B, M, M) depth maps (M = the map
size, H / 8 in the paper's 256 -> 32) and returns a :class:`DUM.models.DepthOutput`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, Mapping, Optional, Tuple

import torch
from torch import nn

from DUM.models import CDCN, CDCN_U, DepthNet_U, DepthOutput, ResNet18_U
from misc.distributed import unwrap

DEFAULT = "cdcn_u"


def dum_objective(out: DepthOutput, target: torch.Tensor, generated: torch.Tensor, *, generated_weight: float = 0.1,
                  kl_weight: float = 1e-3) -> Dict[str, torch.Tensor]:
    """DSDG's objective (``DUM.losses.dum_losses``): depth MSE + contrast depth on the sampled map, plus
    kl_weight * KL(N(mu, sigma^2) || N(y, 1)). Computed in fp32: exp(logvar) and the pixel-summed KL are
    the terms that overflow in fp16."""
    from DUM.losses import dum_losses  # imported when a network trains: deployment loads no training code

    return dum_losses(out.mu.float(), out.logvar.float(), out.sample.float(), target, generated,
                      generated_weight=generated_weight, kl_weight=kl_weight)


def cdcn_objective(out: DepthOutput, target: torch.Tensor, generated: torch.Tensor, *, generated_weight: float = 0.1,
                   kl_weight: float = 1e-3) -> Dict[str, torch.Tensor]:
    """Plain CDCN's objective (``DUM.losses.cdcn_losses``): depth MSE + contrast depth on the predicted
    map. ``kl_weight`` is accepted for a uniform call and unused: there is no uncertainty to regularise."""
    from DUM.losses import cdcn_losses  # imported when a network trains, as above

    return cdcn_losses(out.mu.float(), target, generated, generated_weight=generated_weight)


@dataclass(frozen=True)
class ModelSpec:
    """One depth network: its class, builder, objective and provenance."""
    name: str
    cls: type
    make: Callable[[float, int], nn.Module]  # (theta, map_size) -> network in train mode
    losses: Callable[..., Dict[str, torch.Tensor]]  # (out, target, generated, *, generated_weight, kl_weight)
    uncertainty: bool        # predicts a log-variance (DUM): sigma is logged and drawn
    central_difference: bool  # its convolutions use theta
    objective: str           # the objective in words, for logs and docs
    source: str              # where the network comes from

    def build(self, theta: float = 0.7, map_size: int = 32) -> nn.Module:
        """The network with central-difference weight ``theta`` (ignored by plain-convolution
        networks) and ``map_size`` x ``map_size`` depth maps."""
        return self.make(theta, map_size)

    def describe(self, theta: Optional[float] = None) -> str:
        """'cdcn_u (CDCN_U, theta 0.7)' and the like, for logs."""
        extra = f", theta {theta:g}" if self.central_difference and theta is not None else ""
        return f"{self.name} ({self.cls.__name__}{extra})"


MODELS: Dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("cdcn_u", CDCN_U, lambda theta, m: CDCN_U(theta=theta, map_size=m), dum_objective,
              uncertainty=True, central_difference=True,
              objective="depth MSE + contrast depth on the sampled map + KL (DUM)",
              source="DSDG (Wu et al., IEEE TCSVT), DUM/models/CDCNs_u.py: CDCN_u; the released CDCN_U_P1.pkl"),
    ModelSpec("cdcn", CDCN, lambda theta, m: CDCN(theta=theta, map_size=m), cdcn_objective,
              uncertainty=False, central_difference=True,
              objective="depth MSE + contrast depth on the predicted map (no KL)",
              source="CDCN (Yu et al., CVPR 2020), ZitongYu/CDCN CVPR2020_paper_codes/models/CDCNs.py: CDCN"),
    ModelSpec("depthnet_u", DepthNet_U, lambda theta, m: DepthNet_U(map_size=m), dum_objective,
              uncertainty=True, central_difference=False,
              objective="depth MSE + contrast depth on the sampled map + KL (DUM)",
              source="DSDG release, DUM/models/CDCNs_u.py: depthnet_u (CDCN_u with plain 3x3 convolutions)"),
    ModelSpec("resnet18_u", ResNet18_U, lambda theta, m: ResNet18_U(map_size=m), dum_objective,
              uncertainty=True, central_difference=False,
              objective="depth MSE + contrast depth on the sampled map + KL (DUM)",
              source="DSDG release, DUM/models/ResNet_u.py: ResNet18_u (ResNet-18-style, DUM heads)"),
)}
NAMES: Tuple[str, ...] = tuple(MODELS)


def get(name: str) -> ModelSpec:
    """The entry called ``name``; ValueError listing the choices for any other name."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown depth network {name!r}; choose one of {', '.join(NAMES)}") from None


def spec_of(model: nn.Module) -> ModelSpec:
    """The entry of a network instance (also inside DDP / torch.compile wrappers)."""
    net = unwrap(model)
    for spec in MODELS.values():
        if type(net) is spec.cls:
            return spec
    raise ValueError(f"{type(net).__name__} is none of the registered depth networks ({', '.join(NAMES)})")


@functools.lru_cache(maxsize=None)
def state_dict_keys(name: str) -> FrozenSet[str]:
    """The state_dict keys of network ``name`` (built on the meta device: no memory, no init cost)."""
    with torch.device("meta"):
        return frozenset(get(name).build().state_dict())


def detect(state_dict: Mapping[str, object]) -> Optional[str]:
    """The network whose state_dict has exactly these keys (``module.`` prefixes already stripped), or None.

    The key sets are disjoint by construction: ``.conv.weight`` (central difference) against plain
    ``.weight`` layers, ``mu_head`` against CDCN's ``lastconv3``, ``layerK`` stages for ResNet18_U.
    """
    keys = frozenset(state_dict)
    return next((name for name in NAMES if state_dict_keys(name) == keys), None)


def closest(state_dict: Mapping[str, object]) -> str:
    """The network whose keys differ least from these (for error messages)."""
    keys = frozenset(state_dict)
    return min(NAMES, key=lambda name: len(state_dict_keys(name) ^ keys))
