"""The depth networks of DSDG: CDCN with a Depth Uncertainty Module (DUM), and the other networks
of the original release.

Papers: Yu et al., "Searching Central Difference Convolutional Networks for Face Anti-Spoofing",
CVPR 2020 (arXiv 2003.04092), and Wu et al., "Dual Spoof Disentanglement Generation for Face
Anti-spoofing with Depth Uncertainty Learning", IEEE TCSVT (arXiv 2112.00568).

* :class:`CDCN_U`: CDCN + DUM, the paper's network (the original's ``CDCN_u``);
* :class:`CDCN`: the plain CDCN of Yu et al., one ReLU'd depth head, no uncertainty;
* :class:`DepthNet_U`: CDCN_U with plain 3x3 convolutions (the original's ``depthnet_u``);
* :class:`ResNet18_U`: a ResNet-18-style depth regressor with the DUM heads (``ResNet18_u``).

All return a :class:`DepthOutput`. Parameter names follow the original classes exactly
(``conv1.0.conv.weight``, ``Block2.4.running_var``, ``mu_head.0.weight``, ``layer2.0.shortcut.1.weight``, ...),
so their state_dicts, like the released ``CDCN_U_P1.pkl``, load once the DataParallel ``module.``
prefix is stripped. Which network a name or a file means, and its training objective, is decided
in ``DUM/zoo.py``; loading a file, in ``DUM/weights.py``.

The CPU speed paths the layers take (folded central-difference kernels, GEMM weight gradients, conv +
BN + ReLU fused in inference) are in ``DUM/kernels.py``: :class:`~DUM.kernels.PlainConv2d` and
:class:`~DUM.kernels.FusedSequential` are ``nn.Conv2d`` and ``nn.Sequential`` with the same keys.
``DSDG_SPEED_PATHS=0`` (``misc/speed_paths.py``) turns every one off.
"""
from __future__ import annotations

from typing import Callable, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from DUM import kernels
from DUM.kernels import FusedSequential, PlainConv2d
from misc.speed_paths import speed_paths_enabled


def central_difference_conv_reference(x: torch.Tensor, weight: torch.Tensor, theta: float,
                                      stride: int = 1, padding: int = 1, bias: torch.Tensor | None = None,
                                      groups: int = 1) -> torch.Tensor:
    """Central difference convolution written out as two convolutions, as the paper states it.

    y = conv(x, W) - theta * conv1x1(x, sum_{u,v} W[:, :, u, v])

    The second term is the kernel's total weight applied to the centre pixel only, so each
    output aggregates differences (x_neighbour - x_centre) rather than raw intensities. Kept as the
    readable reference that tests and benchmarks compare the folded form against
    (``DUM.kernels.fold_central_difference``).
    """
    out = F.conv2d(x, weight, bias, stride=stride, padding=padding, groups=groups)
    if abs(theta) < 1e-8:
        return out
    kernel_sum = weight.sum(dim=(2, 3), keepdim=True)  # (out, in/groups, 1, 1)
    return out - theta * F.conv2d(x, kernel_sum, None, stride=stride, padding=0, groups=groups)


class CentralDifferenceConv2d(nn.Module):
    """Central difference convolution (CDC) with ``theta`` blending vanilla and difference terms.

    theta = 0 is a plain convolution; the paper uses 0.7. ``folded=True`` (default) computes the
    operator as one convolution with the centre tap adjusted (``DUM/kernels.py``, about twice as fast
    as two convolutions; off under ``DSDG_SPEED_PATHS=0``); ``folded=False`` runs the explicit
    reference formula. The weight lives in ``self.conv`` so the state_dict key is
    ``<name>.conv.weight`` like the original.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, bias: bool = False, theta: float = 0.7, folded: bool = True):
        super().__init__()
        if kernel_size % 2 != 1 or padding != kernel_size // 2:
            raise ValueError(f"central difference conv needs an odd kernel padded by k // 2 "
                             f"(got kernel_size={kernel_size}, padding={padding})")
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        self.theta = float(theta)
        self.folded = folded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W) -> (B, C_out, H', W')."""
        conv = self.conv
        if abs(self.theta) < 1e-8:
            return conv(x)
        if not (self.folded and speed_paths_enabled()):
            return central_difference_conv_reference(x, conv.weight, self.theta, conv.stride, conv.padding,
                                                     conv.bias, conv.groups)
        return kernels.conv2d(x, kernels.fold_central_difference(conv.weight, self.theta), conv)

    def fusion_source(self) -> Optional[Tuple[nn.Conv2d, float]]:
        """(convolution, theta) from which ``DUM.kernels`` fuses this layer with its BatchNorm in
        inference; None for the unfolded reference form."""
        return (self.conv, self.theta) if self.folded else None

    def extra_repr(self) -> str:
        return f"theta={self.theta}, folded={self.folded}"


class DepthOutput(NamedTuple):
    """What every depth network of this module returns: the original's 8-tuple, with names.

    The DUM networks (``CDCN_U``, ``DepthNet_U``, ``ResNet18_U``) fill all fields. :class:`CDCN`
    has no uncertainty: its ``logvar`` is None and its ``sample`` is the predicted map itself (the
    same tensor as ``mu``), so code that reads ``.mu`` (scoring, export) or ``.sample`` serves all.
    The three feature maps are CDCN's Block1-3 outputs (128 channels each) or ResNet18_U's stages
    2-4 (128, 196 and 256 channels), at H/2, H/4 and H/8.
    """
    mu: torch.Tensor                # (B, M, M) predicted (mean) depth
    logvar: Optional[torch.Tensor]  # (B, M, M) predicted log variance; None without uncertainty
    sample: torch.Tensor            # (B, M, M) mu + eps * sigma, the map the depth losses see in training
    x_concat: torch.Tensor          # (B, 384 or 580, M, M) the three feature maps resized and concatenated
    x_block1: torch.Tensor          # (B, 128, H/2, W/2)
    x_block2: torch.Tensor          # (B, 128 or 196, H/4, W/4)
    x_block3: torch.Tensor          # (B, 128 or 256, H/8, W/8)
    x_input: torch.Tensor           # (B, 3, H, W) the network input


CDCNOutput = DepthOutput  # its name before the other networks came


def _cdc_bn_relu(cin: int, cout: int, theta: float, folded: bool) -> list[nn.Module]:
    return [CentralDifferenceConv2d(cin, cout, theta=theta, folded=folded), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _plain_bn_relu(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [PlainConv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _head() -> nn.Sequential:
    """A DUM head: one plain 3x3 convolution 64 -> 1, no activation (key ``<head>.0.weight``)."""
    return nn.Sequential(nn.Conv2d(64, 1, kernel_size=3, stride=1, padding=1, bias=False))


Layer = Callable[[int, int], List[nn.Module]]  # (in channels, out channels) -> conv, BN, ReLU


class _DepthNetwork(nn.Module):
    """What the depth networks share: multi-scale features resized to ``map_size`` x ``map_size``,
    and the DUM's mean and log-variance heads with the reparameterised sample."""

    def __init__(self, map_size: int, theta: float):
        super().__init__()
        self.map_size = map_size
        self.theta = theta  # 0 for the plain-convolution networks (a CDC layer with theta 0 is a plain one)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] == (self.map_size, self.map_size):
            return x  # bilinear resampling to the same size is the identity: skip the copy
        # align_corners=False is PyTorch's default, which the original relied on implicitly.
        return F.interpolate(x, size=(self.map_size, self.map_size), mode="bilinear", align_corners=False)

    def _concat(self, blocks: Tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.cat([self._resize(b) for b in blocks], dim=1)

    def _uncertain_depth(self, x: torch.Tensor, x_concat: torch.Tensor, blocks: Tuple[torch.Tensor, ...],
                         x_input: torch.Tensor) -> DepthOutput:
        """The DUM on the (B, 64, M, M) features ``x``: mu, logvar and a sample of N(mu, exp(logvar))."""
        mu = self.mu_head(x).squeeze(1)
        logvar = self.logvar_head(x).squeeze(1)
        # Reparameterisation: a differentiable draw from N(mu, exp(logvar)) per pixel. The original
        # draws it in eval mode too; callers that must not consume RNG wrap evaluation accordingly.
        sample = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return DepthOutput(mu, logvar, sample, x_concat, *blocks, x_input)


def _block(layer: Layer, cin: int) -> nn.Sequential:
    """128 -> 196 -> 128 layers then a stride-2 max-pool (indices 0..9 as in the original)."""
    return FusedSequential(*layer(cin, 128), *layer(128, 196), *layer(196, 128),
                           nn.MaxPool2d(kernel_size=3, stride=2, padding=1))


class _CDCNTrunk(_DepthNetwork):
    """CDCN's layers up to its heads: conv1, Block1-3 (outputs at H/2, H/4, H/8) resized to the map
    size and concatenated (384 channels), lastconv1 (-> 128) and lastconv2 (-> 64), each layer built
    by ``layer`` (central-difference or plain convolutions)."""

    def __init__(self, layer: Layer, map_size: int, theta: float):
        super().__init__(map_size, theta)
        self.conv1 = FusedSequential(*layer(3, 64))
        self.Block1 = _block(layer, 64)
        self.Block2 = _block(layer, 128)
        self.Block3 = _block(layer, 128)
        self.lastconv1 = FusedSequential(*layer(128 * 3, 128))
        self.lastconv2 = FusedSequential(*layer(128, 64))

    def _features(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Tuple[torch.Tensor, ...]]:
        """x: (B, 3, H, W) -> ((B, 64, M, M) lastconv2 output, x_concat, the three block outputs)."""
        x_block1 = self.Block1(self.conv1(x))
        x_block2 = self.Block2(x_block1)
        x_block3 = self.Block3(x_block2)
        blocks = (x_block1, x_block2, x_block3)
        x_concat = self._concat(blocks)
        return self.lastconv2(self.lastconv1(x_concat)), x_concat, blocks


class CDCN_U(_CDCNTrunk):
    """CDCN backbone (theta = 0.7) with the DUM's mean and log-variance depth heads.

    Input: (B, 3, H, W) RGB normalised as (x - 127.5) / 128. The three block outputs (H/2, H/4,
    H/8) are resized to ``map_size`` and concatenated (the paper: 256 x 256 in, 32 x 32 maps).
    The heads are plain 3x3 convolutions without activation (unlike CDCN's ReLU'd last layer),
    since the mean may go slightly negative and the log-variance has any sign.
    """

    def __init__(self, theta: float = 0.7, map_size: int = 32, folded: bool = True):
        super().__init__(lambda cin, cout: _cdc_bn_relu(cin, cout, theta, folded), map_size, theta)
        self.mu_head = _head()
        self.logvar_head = _head()

    def forward(self, x: torch.Tensor) -> DepthOutput:
        """x: (B, 3, H, W) -> DepthOutput with (B, map_size, map_size) mu/logvar/sample."""
        features, x_concat, blocks = self._features(x)
        return self._uncertain_depth(features, x_concat, blocks, x)


class CDCN(_CDCNTrunk):
    """The plain CDCN of Yu et al. (CVPR 2020; ZitongYu/CDCN ``models/CDCNs.py``): CDCN_U's trunk and
    one depth head, ``lastconv3`` = a central-difference 3x3 convolution 64 -> 1 followed by ReLU.

    No uncertainty: the output's ``logvar`` is None and ``sample`` is the predicted map (``mu``).
    Keys as in the CDCN code (``lastconv3.0.conv.weight``), so a CDCN-style state_dict loads.
    """

    def __init__(self, theta: float = 0.7, map_size: int = 32, folded: bool = True):
        super().__init__(lambda cin, cout: _cdc_bn_relu(cin, cout, theta, folded), map_size, theta)
        self.lastconv3 = nn.Sequential(CentralDifferenceConv2d(64, 1, theta=theta, folded=folded), nn.ReLU())

    def forward(self, x: torch.Tensor) -> DepthOutput:
        """x: (B, 3, H, W) -> DepthOutput with the (B, map_size, map_size) map as mu and sample."""
        features, x_concat, blocks = self._features(x)
        depth = self.lastconv3(features).squeeze(1)
        return DepthOutput(depth, None, depth, x_concat, *blocks, x)


class DepthNet_U(_CDCNTrunk):
    """CDCN_U's topology and DUM heads with every central-difference convolution a plain 3x3
    convolution (the original's ``depthnet_u`` in ``DUM/models/CDCNs_u.py``; keys ``Block1.0.weight``)."""

    def __init__(self, map_size: int = 32):
        super().__init__(lambda cin, cout: _plain_bn_relu(cin, cout), map_size, 0.0)
        self.mu_head = _head()
        self.logvar_head = _head()

    def forward(self, x: torch.Tensor) -> DepthOutput:
        """x: (B, 3, H, W) -> DepthOutput with (B, map_size, map_size) mu/logvar/sample."""
        features, x_concat, blocks = self._features(x)
        return self._uncertain_depth(features, x_concat, blocks, x)


class BasicBlock(nn.Module):
    """The ResNet basic block of the original ``ResNet_u``: ``left`` = conv3x3 (stride s) -> BN ->
    ReLU -> conv3x3 -> BN, ``shortcut`` = identity, or conv1x1 (stride s) -> BN when the stride or
    the channel count changes; output relu(left(x) + shortcut(x)). In inference (eval, no
    autograd) every convolution runs with its BatchNorm folded in (``DUM.kernels.fused_residual``)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.left = nn.Sequential(*_plain_bn_relu(cin, cout, stride), PlainConv2d(cout, cout, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(cout))
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(PlainConv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if kernels.fused_inference(self, x):
            fused = kernels.fused_residual(self.left, self.shortcut, x)
            if fused is not None:
                return fused
        return F.relu(self.left(x) + self.shortcut(x))


def _stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Two basic blocks, the first with the stage's stride (``layerK.0``, ``layerK.1``)."""
    return nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1))


class ResNet18_U(_DepthNetwork):
    """The original's ResNet-18-style depth regressor with DUM heads (``DUM/models/ResNet_u.py``).

    conv3x3 3 -> 64 + BN + ReLU at full resolution; basic-block stages of two blocks: 64 (stride 1),
    128, 196 and 256 (stride 2 each: H/2, H/4, H/8); stages 2-4 resized to the map size and
    concatenated (580 channels); lastconv1 580 -> 128, lastconv2 128 -> 64 (conv3x3 + BN + ReLU);
    the mu/logvar heads of CDCN_U. ``lastconv3`` (conv3x3 64 -> 1 + ReLU) is defined but unused,
    as in the original, so that its state_dict loads strictly; it is frozen (requires_grad False),
    so an optimizer leaves it alone and DistributedDataParallel does not wait for its gradient.
    """

    def __init__(self, map_size: int = 32):
        super().__init__(map_size, 0.0)
        self.conv1 = FusedSequential(*_plain_bn_relu(3, 64))
        self.layer1 = _stage(64, 64, 1)
        self.layer2 = _stage(64, 128, 2)
        self.layer3 = _stage(128, 196, 2)
        self.layer4 = _stage(196, 256, 2)
        self.lastconv1 = FusedSequential(*_plain_bn_relu(128 + 196 + 256, 128))
        self.lastconv2 = FusedSequential(*_plain_bn_relu(128, 64))
        self.lastconv3 = nn.Sequential(nn.Conv2d(64, 1, kernel_size=3, stride=1, padding=1, bias=False), nn.ReLU())
        self.lastconv3.requires_grad_(False)
        self.mu_head = _head()
        self.logvar_head = _head()

    def forward(self, x: torch.Tensor) -> DepthOutput:
        """x: (B, 3, H, W) -> DepthOutput with (B, map_size, map_size) mu/logvar/sample."""
        x_input = x
        x = self.layer1(self.conv1(x))
        stage2 = self.layer2(x)
        stage3 = self.layer3(stage2)
        stage4 = self.layer4(stage3)
        blocks = (stage2, stage3, stage4)
        x_concat = self._concat(blocks)
        features = self.lastconv2(self.lastconv1(x_concat))
        return self._uncertain_depth(features, x_concat, blocks, x_input)
