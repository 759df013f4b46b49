"""DSDG dual-encoder VAE: live encoder, spoof encoder, spoof-type classifier and paired decoder.

Wu et al., "Dual Spoof Disentanglement Generation for Face Anti-spoofing with Depth Uncertainty
Learning", IEEE TCSVT, arXiv:2112.00568. The generator is a VAE with two encoders: the spoof
encoder splits a spoof image into an identity latent and a spoof-pattern latent, the live encoder
maps the paired live image of the same subject to an identity latent, and one decoder turns
``[z_pattern, z_spoof_id, z_live_id]`` back into the spoof/live pair (6 channels: 0-2 spoof, 3-5 live).

Parameter names (``main.<i>...``, ``fc...``) follow the original code, so a state_dict saved by it
loads here after stripping DataParallel's ``module.`` prefix. Images are RGB in [0, 1].

Input size. The original is written for 256x256: a stride-2 first convolution and five 2x average
pools bring the encoder to 512x4x4, and six 2x upsamplings bring the decoder back to 256x256. For a
smaller ``image_size`` (a power of two from 8 to 256) the surplus resampling layers next to the 4x4
bottleneck are replaced by ``nn.Identity``: the encoder drops its last pools and the decoder its
first upsamplings, so the 512-channel blocks there run at 4x4, the cheapest placement. Every
convolution stays, so parameter names and shapes, and the 4x4 bottleneck, are the same at every
size; per image a 64x64 training step costs about a seventh of a 256x256 one.

Width. ``max_channels`` (default 512, the original's) caps every layer's channel count. At 32 or 64
pixels the 512-channel blocks at the 4x4 bottleneck are most of a step's work (and 45 M parameters
for a few thousand training faces); ``max_channels=128`` keeps every layer and connection,
divides the wide blocks' work by 16 and the parameters by about 7, so that small CPU runs can
afford thousands of steps. Parameter shapes then differ from the original's, a residual block whose
channel count no longer changes has the identity skip instead of its 1x1 convolution (the rule of the
original), and the checkpoint records the value so that ``generated.py`` rebuilds the same decoder.
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

import torch
from torch import nn

from networks import upsample

# The original's defaults (train_generator.sh): latent size 128, four spoof types (print1, print2,
# replay1, replay2), 256x256 images.
HDIM = 128
NUM_SPOOF_TYPES = 4
IMAGE_SIZE = 256

_BOTTLENECK = 4          # spatial size of the encoder output / decoder input (4x4)
_WIDTH = 512             # channels at the bottleneck (the original's; ``max_channels`` may cap it)
_DECODER_UPSAMPLES = 6   # Upsample(x2) layers in the 256x256 decoder


def _num_stages(image_size: int) -> int:
    """log2(image_size / 4): the number of 2x steps between the image and the 4x4 bottleneck."""
    if image_size < 8 or image_size > IMAGE_SIZE or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two between 8 and {IMAGE_SIZE}, got {image_size}")
    return int(math.log2(image_size // _BOTTLENECK))


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Sample z = mu + eps * exp(logvar / 2), eps ~ N(0, I), on the device and dtype of ``mu``."""
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


class ResidualBlock(nn.Module):
    """conv3x3-IN-LReLU-conv3x3, add the skip, then IN-LReLU (the original normalises *after* the sum).

    The skip is a 1x1 convolution when the channel count changes, otherwise the identity. The
    instance norms have no affine parameters and no running statistics, so train and eval agree.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        # Registration order matches the original, so state_dict keys come out in the same order.
        if in_channels != out_channels:
            self.conv_expand = nn.Conv2d(in_channels, out_channels, 1, 1, 0, bias=False)
        else:
            self.conv_expand = None
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False)
        self.bn1 = nn.InstanceNorm2d(out_channels, eps=0.001)
        self.relu1 = nn.LeakyReLU(0.2, inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.InstanceNorm2d(out_channels, eps=0.001)
        self.relu2 = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.conv_expand is None else self.conv_expand(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        return self.relu2(self.bn2(out + identity))


def make_layer(num_blocks: int, in_channels: int, out_channels: int) -> nn.Sequential:
    """One block in->out followed by ``num_blocks - 1`` blocks out->out (indexed 0, 1, ... as in the original)."""
    blocks = [ResidualBlock(in_channels, out_channels)]
    blocks += [ResidualBlock(out_channels, out_channels) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


def _check_width(max_channels: int) -> int:
    if not 8 <= max_channels <= _WIDTH:
        raise ValueError(f"max_channels must lie in 8..{_WIDTH}, got {max_channels}")
    return int(max_channels)


def _encoder_trunk(image_size: int, max_channels: int = _WIDTH) -> nn.Sequential:
    """3xSxS image -> Cx4x4 features (C = min(512, max_channels)). Indices 0..12 as in the original
    (pools at 3, 5, 7, 9, 11)."""
    num_pools = _num_stages(image_size) - 1  # the stride-2 conv is one of the 2x steps
    c = lambda n: min(n, max_channels)  # noqa: E731

    def pool(i: int) -> nn.Module:
        # Below 256 the pools nearest the bottleneck go: the late, wide blocks then run at 4x4.
        return nn.AvgPool2d(2) if i < num_pools else nn.Identity()

    return nn.Sequential(
        nn.Conv2d(3, c(32), 5, 2, 2, bias=False),   # 0: S -> S/2
        nn.InstanceNorm2d(c(32), eps=0.001),        # 1
        nn.LeakyReLU(0.2),                          # 2
        pool(0),                                    # 3
        make_layer(1, c(32), c(64)),                # 4
        pool(1),                                    # 5
        make_layer(1, c(64), c(128)),               # 6
        pool(2),                                    # 7
        make_layer(1, c(128), c(256)),              # 8
        pool(3),                                    # 9
        make_layer(1, c(256), c(512)),              # 10
        pool(4),                                    # 11
        make_layer(1, c(512), c(512)),              # 12: 512x4x4
    )


class LiveEncoder(nn.Module):
    """Live image (B, 3, S, S) -> identity posterior (mu, logvar), each (B, hdim). The original's ``Encoder``."""

    def __init__(self, hdim: int = HDIM, image_size: int = IMAGE_SIZE, max_channels: int = _WIDTH):
        super().__init__()
        self.hdim, self.image_size, self.max_channels = hdim, image_size, _check_width(max_channels)
        self.main = _encoder_trunk(image_size, self.max_channels)
        self.fc = nn.Linear(self.max_channels * _BOTTLENECK * _BOTTLENECK, 2 * hdim)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        h = self.fc(self.main(x).flatten(1))  # (B, 2*hdim)
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar

    def extra_repr(self) -> str:
        return f"hdim={self.hdim}, image_size={self.image_size}, max_channels={self.max_channels}"


class SpoofEncoder(nn.Module):
    """Spoof image (B, 3, S, S) -> (mu_id, logvar_id, mu_pattern, logvar_pattern), each (B, hdim).

    The original's ``Encoder_s``; its fc output is split in exactly this order.
    """

    def __init__(self, hdim: int = HDIM, image_size: int = IMAGE_SIZE, max_channels: int = _WIDTH):
        super().__init__()
        self.hdim, self.image_size, self.max_channels = hdim, image_size, _check_width(max_channels)
        self.main = _encoder_trunk(image_size, self.max_channels)
        self.fc = nn.Linear(self.max_channels * _BOTTLENECK * _BOTTLENECK, 4 * hdim)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.fc(self.main(x).flatten(1))  # (B, 4*hdim)
        mu_id, logvar_id, mu_pattern, logvar_pattern = h.chunk(4, dim=1)
        return mu_id, logvar_id, mu_pattern, logvar_pattern

    def extra_repr(self) -> str:
        return f"hdim={self.hdim}, image_size={self.image_size}, max_channels={self.max_channels}"


class SpoofTypeClassifier(nn.Module):
    """Spoof-pattern latent (B, hdim) -> spoof-type logits (B, num_types). One linear layer (the original's ``Cls``)."""

    def __init__(self, hdim: int = HDIM, num_types: int = NUM_SPOOF_TYPES):
        super().__init__()
        self.fc = nn.Linear(hdim, num_types)

    def forward(self, z_pattern: torch.Tensor) -> torch.Tensor:
        return self.fc(z_pattern)


class Decoder(nn.Module):
    """Latent (B, 3*hdim) ordered [z_pattern, z_spoof_id, z_live_id] -> pair (B, 6, S, S) in [0, 1].

    Channels 0-2 are the spoof image and 3-5 the live image. The original's ``Decoder_s``.
    """

    def __init__(self, hdim: int = HDIM, image_size: int = IMAGE_SIZE, max_channels: int = _WIDTH):
        super().__init__()
        self.hdim, self.image_size, self.max_channels = hdim, image_size, _check_width(max_channels)
        c = lambda n: min(n, self.max_channels)  # noqa: E731
        self.fc = nn.Sequential(nn.Linear(3 * hdim, c(_WIDTH) * _BOTTLENECK * _BOTTLENECK), nn.ReLU(True))
        skip = _DECODER_UPSAMPLES - _num_stages(image_size)

        def up(i: int) -> nn.Module:
            # Below 256 the upsamplings nearest the bottleneck go: the first, wide blocks run at 4x4.
            return nn.Identity() if i < skip else nn.Upsample(scale_factor=2, mode="nearest")

        self.main = nn.Sequential(
            make_layer(1, c(512), c(512)), up(0),   # 0, 1
            make_layer(1, c(512), c(512)), up(1),   # 2, 3
            make_layer(1, c(512), c(512)), up(2),   # 4, 5
            make_layer(1, c(512), c(256)), up(3),   # 6, 7
            make_layer(1, c(256), c(128)), up(4),   # 8, 9
            make_layer(2, c(128), c(64)), up(5),    # 10, 11
            nn.Conv2d(c(64), 6, 5, 1, 2),           # 12
            nn.Sigmoid(),                           # 13
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], -1, _BOTTLENECK, _BOTTLENECK)  # (B, 512, 4, 4)
        # self.main(h), with each nearest 2x upsampling folded into the convolution after it
        # (networks/upsample.py: no 4x larger copy, about 2.3x fewer multiply-adds).
        return upsample.decode(self.main, h, ResidualBlock)

    def extra_repr(self) -> str:
        return f"hdim={self.hdim}, image_size={self.image_size}, max_channels={self.max_channels}"


class DualVAE(nn.Module):
    """The four trainable generator networks in one module, so one optimizer/DDP wrapper covers them.

    Sub-module names are the checkpoint names: ``netE_spoof``, ``netE_live``, ``netG``, ``netCls``.
    """

    def __init__(self, hdim: int = HDIM, image_size: int = IMAGE_SIZE, num_types: int = NUM_SPOOF_TYPES,
                 max_channels: int = _WIDTH):
        super().__init__()
        self.hdim, self.image_size, self.num_types = hdim, image_size, num_types
        self.max_channels = _check_width(max_channels)
        self.netE_spoof = SpoofEncoder(hdim, image_size, max_channels)
        self.netE_live = LiveEncoder(hdim, image_size, max_channels)
        self.netG = Decoder(hdim, image_size, max_channels)
        self.netCls = SpoofTypeClassifier(hdim, num_types)

    def parts(self) -> Dict[str, nn.Module]:
        """The sub-networks by checkpoint name."""
        return {"netE_spoof": self.netE_spoof, "netE_live": self.netE_live,
                "netG": self.netG, "netCls": self.netCls}

    def forward(self, spoof: torch.Tensor, live: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Encode a spoof/live pair (each (B, 3, S, S)), sample the latents and decode.

        Returns a dict of (B, hdim) posteriors ``mu_*``/``logvar_*`` and samples ``z_*`` for
        ``spoof_id``, ``live_id`` and ``pattern``; ``logits`` (B, num_types); ``rec`` (B, 6, S, S).
        """
        mu_s, logvar_s, mu_a, logvar_a = self.netE_spoof(spoof)
        mu_l, logvar_l = self.netE_live(live)
        z_pattern = reparameterize(mu_a, logvar_a)
        z_spoof_id = reparameterize(mu_s, logvar_s)
        z_live_id = reparameterize(mu_l, logvar_l)
        rec = self.netG(torch.cat([z_pattern, z_spoof_id, z_live_id], dim=1))
        return {
            "mu_spoof_id": mu_s, "logvar_spoof_id": logvar_s, "z_spoof_id": z_spoof_id,
            "mu_live_id": mu_l, "logvar_live_id": logvar_l, "z_live_id": z_live_id,
            "mu_pattern": mu_a, "logvar_pattern": logvar_a, "z_pattern": z_pattern,
            "logits": self.netCls(z_pattern), "rec": rec,
        }

    @torch.no_grad()
    def reconstruct_mean(self, spoof: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        """Decode the posterior means (no sampling): a deterministic reconstruction (B, 6, S, S) for grids."""
        mu_s, _, mu_a, _ = self.netE_spoof(spoof)
        mu_l, _ = self.netE_live(live)
        return self.netG(torch.cat([mu_a, mu_s, mu_l], dim=1))


def prior_latent(pattern: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """Decoder input for sampling: [z_pattern, z_id, z_id], one identity shared by the spoof and the live image."""
    return torch.cat([pattern, identity, identity], dim=1)


# The original class names, for readers coming from the DSDG code.
Encoder = LiveEncoder
Encoder_s = SpoofEncoder
Cls = SpoofTypeClassifier
Decoder_s = Decoder
_Residual_Block = ResidualBlock
