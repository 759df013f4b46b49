"""The original DSDG formulation, restated for speed comparisons only (never used for training).

These classes re-state, in our own words, how the official code computes the two networks, so
``bench.py`` can time the project's implementation against the original *in the same run*:

* :class:`OriginalCDCN_U`: every central-difference layer as two convolutions (3x3, then a 1x1
  with the summed kernel, subtracted with weight theta), NCHW float32, and the three block outputs
  resized to 32x32 with ``nn.Upsample(mode="bilinear")``, the one already at 32x32 included;
* :class:`OriginalGenerator`: the dual-encoder VAE at 256x256, NCHW float32, with the decoder's
  ``nn.Upsample(nearest)`` materialised before each following convolution;
* :func:`original_adam`: Adam as PyTorch ran it when the original was written (one tensor at a
  time: no ``foreach`` and no fused kernel).

Parameter names and shapes equal the project's models, so one state_dict loads into both and the
outputs can be compared. Facts from ``shared/spec/original_code_reference.md`` sections 3 and 6.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from networks.generator import HDIM


class OriginalConv2dCD(nn.Module):
    """Central difference convolution as the original evaluates it: two convolutions per call."""

    def __init__(self, cin: int, cout: int, theta: float = 0.7):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.theta = theta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if abs(self.theta) < 1e-8:
            return out
        # The kernel's spatial sum applied as a 1x1 convolution to the centre pixel.
        summed = self.conv.weight.sum(2).sum(2)[:, :, None, None]
        centre = F.conv2d(x, summed, self.conv.bias, stride=1, padding=0)
        return out - self.theta * centre


def _cd_bn_relu(cin: int, cout: int, theta: float) -> list:
    return [OriginalConv2dCD(cin, cout, theta), nn.BatchNorm2d(cout), nn.ReLU()]


class OriginalCDCN_U(nn.Module):
    """CDCN with the DUM heads, NCHW, two convolutions per CDC layer, ``nn.Upsample`` on all three blocks.

    Returns (mu, logvar, sample, x_concat, x_block1, x_block2, x_block3, x_input) like the original.
    """

    def __init__(self, theta: float = 0.7, map_size: int = 32):
        super().__init__()
        self.conv1 = nn.Sequential(*_cd_bn_relu(3, 64, theta))
        blocks = []
        for cin in (64, 128, 128):
            blocks.append(nn.Sequential(*_cd_bn_relu(cin, 128, theta), *_cd_bn_relu(128, 196, theta),
                                        *_cd_bn_relu(196, 128, theta), nn.MaxPool2d(3, 2, 1)))
        self.Block1, self.Block2, self.Block3 = blocks
        self.lastconv1 = nn.Sequential(*_cd_bn_relu(384, 128, theta))
        self.lastconv2 = nn.Sequential(*_cd_bn_relu(128, 64, theta))
        self.mu_head = nn.Sequential(nn.Conv2d(64, 1, 3, 1, 1, bias=False))
        self.logvar_head = nn.Sequential(nn.Conv2d(64, 1, 3, 1, 1, bias=False))
        self.downsample32x32 = nn.Upsample(size=(map_size, map_size), mode="bilinear")

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        x_input = x
        x = self.conv1(x)
        x_block1 = self.Block1(x)
        x_block2 = self.Block2(x_block1)
        x_block3 = self.Block3(x_block2)
        x_concat = torch.cat((self.downsample32x32(x_block1), self.downsample32x32(x_block2),
                              self.downsample32x32(x_block3)), dim=1)
        x = self.lastconv2(self.lastconv1(x_concat))
        mu = self.mu_head(x).squeeze(1)
        logvar = self.logvar_head(x).squeeze(1)
        sample = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return mu, logvar, sample, x_concat, x_block1, x_block2, x_block3, x_input


class OriginalResidualBlock(nn.Module):
    """conv3x3-IN-LReLU-conv3x3, + skip (1x1 conv when the width changes), then IN-LReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv_expand = nn.Conv2d(cin, cout, 1, 1, 0, bias=False) if cin != cout else None
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn1 = nn.InstanceNorm2d(cout, eps=0.001)
        self.relu1 = nn.LeakyReLU(0.2, inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.InstanceNorm2d(cout, eps=0.001)
        self.relu2 = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.conv_expand is None else self.conv_expand(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        return self.relu2(self.bn2(torch.add(out, identity)))


def _layer(n: int, cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(OriginalResidualBlock(cin, cout), *[OriginalResidualBlock(cout, cout) for _ in range(n - 1)])


def _stages(image_size: int) -> int:
    """2x steps between the image and the 4x4 bottleneck (6 at 256x256)."""
    return int(math.log2(image_size // 4))


class OriginalEncoder(nn.Module):
    """The original ``Encoder`` (live, ``outputs=2``) / ``Encoder_s`` (spoof, ``outputs=4``).

    The original exists for 256x256 only; for the quick benchmark at smaller sizes the average
    pools nearest the bottleneck become identities, exactly as ``networks.generator`` does it.
    """

    def __init__(self, outputs: int, hdim: int = HDIM, image_size: int = 256):
        super().__init__()
        pools = _stages(image_size) - 1
        pool = lambda i: nn.AvgPool2d(2) if i < pools else nn.Identity()  # noqa: E731
        self.main = nn.Sequential(
            nn.Conv2d(3, 32, 5, 2, 2, bias=False), nn.InstanceNorm2d(32, eps=0.001), nn.LeakyReLU(0.2),
            pool(0), _layer(1, 32, 64), pool(1), _layer(1, 64, 128), pool(2),
            _layer(1, 128, 256), pool(3), _layer(1, 256, 512), pool(4), _layer(1, 512, 512))
        self.fc = nn.Linear(512 * 4 * 4, outputs * hdim)
        self.outputs = outputs

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return self.fc(self.main(x).view(x.shape[0], -1)).chunk(self.outputs, dim=1)


class OriginalDecoder(nn.Module):
    """The original ``Decoder_s``: fc + ReLU to 512x4x4, then residual blocks each followed by an
    explicit nearest ``nn.Upsample(scale_factor=2)``, and a 5x5 output convolution with a sigmoid.
    Below 256x256 the upsamplings nearest the bottleneck become identities (as in ``networks.generator``)."""

    def __init__(self, hdim: int = HDIM, image_size: int = 256):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(3 * hdim, 512 * 4 * 4), nn.ReLU(True))
        skip = 6 - _stages(image_size)
        up = lambda i: nn.Identity() if i < skip else nn.Upsample(scale_factor=2, mode="nearest")  # noqa: E731
        self.main = nn.Sequential(
            _layer(1, 512, 512), up(0), _layer(1, 512, 512), up(1), _layer(1, 512, 512), up(2),
            _layer(1, 512, 256), up(3), _layer(1, 256, 128), up(4), _layer(2, 128, 64), up(5),
            nn.Conv2d(64, 6, 5, 1, 2), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(self.fc(z).view(z.shape[0], 512, 4, 4))


class OriginalCls(nn.Module):
    """The spoof-type classifier: one linear layer on the pattern latent."""

    def __init__(self, hdim: int, num_types: int):
        super().__init__()
        self.fc = nn.Linear(hdim, num_types)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(z)


class OriginalGenerator(nn.Module):
    """The original's four generator networks (``netE_spoof``, ``netE_live``, ``netG``, ``netCls``)
    with the forward of one training step; returns the dict that ``networks.losses.generator_loss`` reads."""

    def __init__(self, hdim: int = HDIM, num_types: int = 4, image_size: int = 256):
        super().__init__()
        self.netE_spoof = OriginalEncoder(4, hdim, image_size)
        self.netE_live = OriginalEncoder(2, hdim, image_size)
        self.netG = OriginalDecoder(hdim, image_size)
        self.netCls = OriginalCls(hdim, num_types)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        std = logvar.mul(0.5).exp_()
        eps = torch.randn(std.size(), device=std.device)
        return eps.mul(std).add_(mu)

    def forward(self, spoof: torch.Tensor, live: torch.Tensor) -> dict:
        mu_s, logvar_s, mu_a, logvar_a = self.netE_spoof(spoof)
        mu_l, logvar_l = self.netE_live(live)
        z_pattern = self.reparameterize(mu_a, logvar_a)
        z_spoof_id = self.reparameterize(mu_s, logvar_s)
        z_live_id = self.reparameterize(mu_l, logvar_l)
        rec = self.netG(torch.cat((z_pattern, z_spoof_id, z_live_id), dim=1))
        return {"mu_spoof_id": mu_s, "logvar_spoof_id": logvar_s, "z_spoof_id": z_spoof_id,
                "mu_live_id": mu_l, "logvar_live_id": logvar_l, "z_live_id": z_live_id,
                "mu_pattern": mu_a, "logvar_pattern": logvar_a, "z_pattern": z_pattern,
                "logits": self.netCls(z_pattern), "rec": rec}


def original_adam(params, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam updating one parameter tensor at a time, as PyTorch did before the foreach/fused kernels."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=False, fused=False)
