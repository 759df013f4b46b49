"""LightCNN-29 v2, the frozen face-identity network behind DSDG's identity losses.

Wu, He, Sun, Tan, "A Light CNN for Deep Face Representation with Noisy Labels", IEEE TIFS 2018,
arXiv:1511.02683. Weights: the authors' ``LightCNN_29Layers_V2_checkpoint.pth.tar`` (MS-Celeb-1M),
released with AlfredXiangWu/LightCNN; it cannot be redistributed here, see ``ip_checkpoint/README.md``.

Only the feature part is built: a (B, 1, 128, 128) grey face in [0, 1] gives the 256-d output of
``fc``. The classifier ``fc2`` (256 -> 80013 identities) that the official file also holds is not
needed and is dropped when loading. Parameter names match the official file after stripping
``module.``.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from misc.checkpoint import CheckpointError, load_state_dict_strict, strip_prefix

INPUT_SIZE = 128      # LightCNN-29 v2 expects 128x128 grey faces
FEATURE_DIM = 256
# Keys of the official file that the feature network does not use (the 80013-way classifier).
CLASSIFIER_KEYS = ("fc2.weight",)
DEFAULT_PATH = "ip_checkpoint/LightCNN_29Layers_V2_checkpoint.pth.tar"
WHERE_TO_GET = (
    "Download LightCNN_29Layers_V2_checkpoint.pth.tar (LightCNN-29 v2 trained on MS-Celeb-1M) from the links in "
    "the README of https://github.com/AlfredXiangWu/LightCNN and put it at "
    f"{DEFAULT_PATH} (or pass its path with --ip-model). See ip_checkpoint/README.md.")


class MaxFeatureMap(nn.Module):
    """Max-Feature-Map: a conv (or linear) to 2*out channels, then the element-wise max of the two halves."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, linear: bool = False):
        super().__init__()
        self.out_channels = out_channels
        if linear:
            self.filter = nn.Linear(in_channels, 2 * out_channels)
        else:
            self.filter = nn.Conv2d(in_channels, 2 * out_channels, kernel_size, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(self.filter(x), self.out_channels, dim=1)
        return torch.max(a, b)


class Group(nn.Module):
    """1x1 MFM (in -> in) followed by a 3x3 MFM (in -> out)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv_a = MaxFeatureMap(in_channels, in_channels, 1, 1, 0)
        self.conv = MaxFeatureMap(in_channels, out_channels, kernel_size, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.conv_a(x))


class ResBlock(nn.Module):
    """Two 3x3 MFMs with an identity skip (channels unchanged)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = MaxFeatureMap(channels, channels)
        self.conv2 = MaxFeatureMap(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x)) + x


def _pool(x: torch.Tensor) -> torch.Tensor:
    # LightCNN v2 halves resolution with the sum of a max pool and an average pool.
    return F.max_pool2d(x, 2) + F.avg_pool2d(x, 2)


class LightCNN29v2(nn.Module):
    """Grey face (B, 1, 128, 128) in [0, 1] -> identity feature (B, 256), the output of ``fc`` (no dropout)."""

    def __init__(self):
        super().__init__()
        self.conv1 = MaxFeatureMap(1, 48, 5, 1, 2)
        self.block1 = nn.Sequential(*[ResBlock(48) for _ in range(1)])
        self.group1 = Group(48, 96)
        self.block2 = nn.Sequential(*[ResBlock(96) for _ in range(2)])
        self.group2 = Group(96, 192)
        self.block3 = nn.Sequential(*[ResBlock(192) for _ in range(3)])
        self.group3 = Group(192, 128)
        self.block4 = nn.Sequential(*[ResBlock(128) for _ in range(4)])
        self.group4 = Group(128, 128)
        self.fc = nn.Linear(8 * 8 * 128, FEATURE_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _pool(self.conv1(x))                      # 48 x 64 x 64
        x = _pool(self.group1(self.block1(x)))        # 96 x 32 x 32
        x = _pool(self.group2(self.block2(x)))        # 192 x 16 x 16
        x = self.group3(self.block3(x))               # 128 x 16 x 16
        x = _pool(self.group4(self.block4(x)))        # 128 x 8 x 8
        return self.fc(x.flatten(1))                  # 256


# The original's name for the same network.
network_29layers_v2 = LightCNN29v2


def _read_official_file(path: Path, allow_pickle: bool) -> object:
    """``torch.load`` the file, weights-only unless the user explicitly trusts it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as e:
        if allow_pickle:
            raise CheckpointError(f"{path}: not a readable PyTorch file ({e})") from e
        # torch's message is a page long; its "WeightsUnpickler error:" line names the offending object.
        reason = next((ln.strip() for ln in str(e).splitlines() if "WeightsUnpickler error" in ln), str(e))
        raise CheckpointError(
            f"{path}: torch.load(weights_only=True) refused this file: it contains Python objects other than "
            f"tensors, numbers and strings ({reason}). The official LightCNN file is a plain dict of tensors and loads "
            "this way; if yours is a re-saved variant from a source you trust, pass --ip-model-trusted true "
            "(load_lightcnn(path, allow_pickle=True)), which unpickles arbitrary objects, or re-save just its "
            "state_dict with torch.save({'state_dict': sd}, path).") from e
    except Exception as e:  # truncated download, not a torch file, ...
        raise CheckpointError(f"{path}: not a readable PyTorch file ({type(e).__name__}: {e}). {WHERE_TO_GET}") from e


def lightcnn_state_dict(obj: object, source: str) -> Mapping[str, torch.Tensor]:
    """The feature-network state_dict inside an official LightCNN file (``{'state_dict': {'module.…': …}, …}``)."""
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{source}: expected a dict with a 'state_dict' of tensors (the official "
                              "LightCNN_29Layers_V2_checkpoint.pth.tar layout)")
    return strip_prefix(obj, "module.")


def load_lightcnn(path: str | Path = DEFAULT_PATH, allow_pickle: bool = False) -> LightCNN29v2:
    """Build LightCNN-29 v2 from the official checkpoint, frozen (``requires_grad=False``) and in eval mode.

    Every feature-layer key must be present with the right shape (the original filtered keys silently,
    so a wrong file trained against random features); the classifier ``fc2.weight`` is ignored.
    Raises :class:`misc.checkpoint.CheckpointError` naming the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: LightCNN weights not found. {WHERE_TO_GET}")
    state = lightcnn_state_dict(_read_official_file(path, allow_pickle), str(path))
    net = LightCNN29v2()
    load_state_dict_strict(net, state, str(path), ignore=CLASSIFIER_KEYS)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
