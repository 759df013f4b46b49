"""The generator decoder's speed path: a nearest 2x upsampling folded into the convolution after it.

The decoder of ``networks/generator.py`` upsamples (nearest, 2x) and then convolves. Convolving the
low-resolution map directly into the four pixel phases of the output gives the same values without
the 4x larger upsampled copy and with about 2.3x fewer multiply-adds (:func:`upsample_conv2d`);
:func:`decode` runs a decoder's layers that way. ``DSDG_SPEED_PATHS=0`` (``misc/speed_paths.py``)
turns it off: the layers then run one by one, the upsampled maps materialised, as the paper states them.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from misc.speed_paths import speed_paths_enabled


def _phase_windows(k: int) -> tuple[list[list[tuple[int, int]]], tuple[int, int]]:
    """For a k x k kernel after nearest 2x upsampling: per output phase d (0, 1), the kernel rows
    (first, count) that read each input row of the phase's window, and the window starts.

    Output pixel (2i + d) reads, through kernel row r, input row i + (d + r - k // 2) // 2, so
    neighbouring kernel rows land on the same input row (k = 3: d = 0 reads rows i-1 | i, i through
    kernel rows 0 | 1, 2; d = 1 reads i, i | i+1 through rows 0, 1 | 2).
    """
    windows, starts = [], []
    for d in (0, 1):
        offsets = [(d + r - k // 2) // 2 for r in range(k)]
        starts.append(offsets[0])
        windows.append([(offsets.index(o), offsets.count(o)) for o in range(offsets[0], offsets[-1] + 1)])
    return windows, (starts[0], starts[1])


_PHASE_MATRICES: dict = {}


def _phase_matrix(k: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """0/1 matrix (k*k, 4*T*T): column (d, e, t, u) sums the kernel taps (r, s) whose kernel row r
    reads window row t of phase d and whose column s reads window column u of phase e."""
    key = (k, dtype, device)
    if key not in _PHASE_MATRICES:
        windows, _ = _phase_windows(k)
        taps = len(windows[0])
        if any(len(w) != taps for w in windows):
            raise ValueError(f"kernel size {k}: phases with different windows are not supported")
        a = torch.zeros(2, taps, k, dtype=dtype)  # a[d, t, r] = 1: kernel row r -> window row t of phase d
        for d in (0, 1):
            for t, (first, count) in enumerate(windows[d]):
                a[d, t, first:first + count] = 1.0
        m = torch.einsum("dtr,eus->rsdetu", a, a).reshape(k * k, 4 * taps * taps)
        _PHASE_MATRICES[key] = m.to(device)
    return _PHASE_MATRICES[key]


def _phase_kernels(weight: torch.Tensor) -> tuple[torch.Tensor, int, tuple[int, int]]:
    """Kernels that convolve a low-resolution map directly into the four pixel phases of
    ``conv2d(upsample_nearest_2x(x), weight, padding=k // 2)``: the kernel rows (and columns) that
    read the same input row are summed (:func:`_phase_windows`), so a k x k kernel at high
    resolution becomes four T x T kernels at low resolution (T = 2 for k = 3: 16 instead of 36
    multiply-adds per input pixel; T = 3 for k = 5). One small matrix product, so that it costs
    little when recomputed at every training step. Returns (kernels (4 * K, C, T, T) ordered
    phase (d, e) = (0,0), (0,1), (1,0), (1,1), T, window starts for d = 0, 1).
    """
    k_out, c_in, k, _ = weight.shape
    _, start = _phase_windows(k)
    m = _phase_matrix(k, weight.dtype, weight.device)
    taps = int(round((m.shape[1] // 4) ** 0.5))
    kernels = (weight.reshape(k_out * c_in, k * k) @ m).view(k_out, c_in, 4, taps, taps)
    return kernels.permute(2, 0, 1, 3, 4).reshape(4 * k_out, c_in, taps, taps), taps, start


def upsample_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, bias, padding=k // 2)``
    without building the upsampled map: convolutions at the input's resolution with the phase
    kernels of :func:`_phase_kernels`, whose outputs are interleaved into (N, K, 2H, 2W).
    Same values up to float rounding (kernel taps are summed before the products). x: (N, C, H, W).

    Every phase's convolution produces exactly its (H, W) pixels (the input window is sliced, not
    the output), and the interleave is a stack: the backward pass then copies nothing it need not.

    Verified against the materialised upsampling with both in float64 (tests/test_speed_paths.py:
    the op, the decoder, and DualVAE's training gradients at 64 px, 8.4e-15) on an AVX2-only AMD
    EPYC under ATEN_CPU_CAPABILITY default and avx2; on an AVX-512F + AVX512_BF16 + AVX512_VNNI
    EPYC the decoder's float64 check gave 5.9e-15 (issue 12), while its float32 gradients differed
    there by 1.9e-2 through flipped ReLU/LeakyReLU kinks, not through this operator.
    """
    n, _, h, w = x.shape
    k_out = weight.shape[0]
    kernels, taps, start = _phase_kernels(weight)
    pad = -min(start)
    xp = F.pad(x, (pad, pad, pad, pad))
    if start[0] == start[1]:  # every phase reads the same window (k = 5): one convolution with 4K outputs
        r0 = start[0] + pad
        window = xp[:, :, r0:r0 + h + taps - 1, r0:r0 + w + taps - 1]
        out = F.conv2d(window, kernels, None if bias is None else bias.repeat(4)).view(n, 2, 2, k_out, h, w)
        return out.permute(0, 3, 4, 1, 5, 2).reshape(n, k_out, 2 * h, 2 * w)
    rows = []
    for d in (0, 1):
        cols = []
        for e in (0, 1):
            r0, c0 = start[d] + pad, start[e] + pad
            window = xp[:, :, r0:r0 + h + taps - 1, c0:c0 + w + taps - 1]
            i = 2 * d + e
            cols.append(F.conv2d(window, kernels[i * k_out:(i + 1) * k_out], bias))
        rows.append(torch.stack(cols, dim=-1))              # (N, K, H, W, 2): column phase e
    return torch.stack(rows, dim=3).view(n, k_out, 2 * h, 2 * w)  # (N, K, H, 2, W, 2): row phase d


def _is_upsample2x(module: nn.Module) -> bool:
    return (isinstance(module, nn.Upsample) and module.mode == "nearest" and module.size is None
            and module.scale_factor in (2, 2.0, (2, 2), (2.0, 2.0)))



def upsampled_residual(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``block(F.interpolate(x, scale_factor=2, mode="nearest"))`` for a ``networks.generator.ResidualBlock``
    (conv1 -> IN -> LReLU -> conv2, the skip added before the last IN -> LReLU), without the upsampled
    copy of x: conv1 runs on x through :func:`upsample_conv2d`, and the skip (a 1x1 convolution
    commutes with nearest upsampling) is computed at low resolution and broadcast into the sum.
    x: (N, C, H, W) -> (N, C_out, 2H, 2W).
    """
    n, _, h, w = x.shape
    identity = x if block.conv_expand is None else block.conv_expand(x)
    out = block.relu1(block.bn1(upsample_conv2d(x, block.conv1.weight)))
    out = block.conv2(out)
    c = out.shape[1]
    # reshape, not view: a channels_last input is copied to the (N, C, H, 2, W, 2) layout instead of failing.
    out = (out.reshape(n, c, h, 2, w, 2) + identity.reshape(n, c, h, 1, w, 1)).view(n, c, 2 * h, 2 * w)
    return block.relu2(block.bn2(out))


def _phase_conv(module: Optional[nn.Module]) -> bool:
    """Whether ``module`` is a convolution :func:`upsample_conv2d` computes: 3x3 or 5x5, stride 1,
    padded by k // 2 with zeros, no dilation or groups."""
    return (isinstance(module, nn.Conv2d) and module.kernel_size in ((3, 3), (5, 5)) and module.stride == (1, 1)
            and module.padding == (module.kernel_size[0] // 2,) * 2 and module.groups == 1
            and module.dilation == (1, 1) and module.padding_mode == "zeros")


def decode(layers: nn.Sequential, x: torch.Tensor, residual_block: type) -> torch.Tensor:
    """``layers(x)``, but a nearest 2x upsampling is never materialised: the layer after it, a block
    of type ``residual_block`` (:func:`upsampled_residual`) or a plain convolution, convolves the
    low-resolution map into the four pixel phases. Layer by layer under ``DSDG_SPEED_PATHS=0``."""
    if not speed_paths_enabled():
        return layers(x)
    mods = list(layers)
    i = 0
    while i < len(mods):
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        if _is_upsample2x(mods[i]) and isinstance(nxt, nn.Sequential) and isinstance(nxt[0], residual_block):
            x = upsampled_residual(nxt[0], x)
            for block in list(nxt)[1:]:
                x = block(x)
            i += 2
        elif _is_upsample2x(mods[i]) and _phase_conv(nxt):
            x = upsample_conv2d(x, nxt.weight, nxt.bias)
            i += 2
        else:
            x = mods[i](x)
            i += 1
    return x
