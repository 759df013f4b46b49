"""CDCN with a Depth Uncertainty Module (DUM), the depth network of DSDG.

Papers: Yu et al., "Searching Central Difference Convolutional Networks for Face Anti-Spoofing",
CVPR 2020 (arXiv 2003.04092), and Wu et al., "Dual Spoof Disentanglement Generation for Face
Anti-spoofing with Depth Uncertainty Learning", IEEE TCSVT (arXiv 2112.00568).

Parameter names follow the official ``CDCN_u`` exactly (``conv1.0.conv.weight``,
``Block2.4.running_var``, ``mu_head.0.weight``, ...), so the released ``CDCN_U_P1.pkl`` loads once
its DataParallel ``module.`` prefix is stripped.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable


def central_difference_conv_reference(x: torch.Tensor, weight: torch.Tensor, theta: float,
                                      stride: int = 1, padding: int = 1, bias: torch.Tensor | None = None,
                                      groups: int = 1) -> torch.Tensor:
    """Central difference convolution written out as two convolutions, as the paper states it.

    y = conv(x, W) - theta * conv1x1(x, sum_{u,v} W[:, :, u, v])

    The second term is the kernel's total weight applied to the centre pixel only, so each
    output aggregates differences (x_neighbour - x_centre) rather than raw intensities. Kept as the
    readable reference that tests and benchmarks compare the folded form against.
    """
    out = F.conv2d(x, weight, bias, stride=stride, padding=padding, groups=groups)
    if abs(theta) < 1e-8:
        return out
    kernel_sum = weight.sum(dim=(2, 3), keepdim=True)  # (out, in/groups, 1, 1)
    return out - theta * F.conv2d(x, kernel_sum, None, stride=stride, padding=0, groups=groups)


def fold_central_difference(weight: torch.Tensor, theta: float) -> torch.Tensor:
    """The single kernel that equals the two-convolution central difference formula.

    W' = W with W'[:, :, c, c] -= theta * sum_{u,v} W[:, :, u, v]  (c = centre tap)

    Valid for odd square kernels padded by k // 2: the centre tap then reads exactly the pixel
    that the unpadded 1x1 convolution reads. Differentiable, so training goes through it.
    """
    k = weight.shape[-1]
    kernel_sum = weight.sum(dim=(2, 3), keepdim=True)
    # F.pad places the (out, in, 1, 1) sum at the centre of a k x k kernel of zeros.
    return weight - theta * F.pad(kernel_sum, (k // 2,) * 4)


# ----------------------------------------------------------------------------------------------
# CPU speed paths. Each computes exactly the operator above (same parameters, outputs equal to
# float32 rounding); which one runs depends only on device, memory format, mode and grad state.
# ----------------------------------------------------------------------------------------------

def conv3x3_weight_grad(x: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """Weight gradient (K, C, 3, 3) of a stride-1, padding-1 3x3 convolution, as nine GEMMs.

    x: (N, C, H, W), grad_out: (N, K, H, W), both channels_last. With the input zero-padded to
    (N, H+2, W+2, C) rows and grad_out padded at the end of each row and image to the same row
    pitch, tap (u, v) is grad_out^T @ input shifted by u * (W+2) + v rows: a plain GEMM on
    contiguous slices, no im2col copy. oneDNN's channels_last weight gradient runs at about half
    the speed of these GEMMs on AVX2 CPUs (benchmarks/bench.py); the padded rows contribute zeros.
    """
    n, c, h, w = x.shape
    k = grad_out.shape[1]
    rows = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1)).reshape(-1, c)         # (L, C)
    grads = F.pad(grad_out.permute(0, 2, 3, 1), (0, 0, 0, 2, 0, 2)).reshape(-1, k)  # (L, K)
    length = rows.shape[0]
    out = x.new_empty(3, 3, k, c)
    for u in range(3):
        for v in range(3):
            shift = u * (w + 2) + v
            torch.mm(grads[:length - shift].t(), rows[shift:], out=out[u, v])
    return out.permute(2, 3, 0, 1)


class _Conv3x3ChannelsLast(torch.autograd.Function):
    """3x3 stride-1 padding-1 convolution without bias: oneDNN forward and input gradient, GEMM
    weight gradient (:func:`conv3x3_weight_grad`). For float32 channels_last CPU tensors only."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, None, 1, 1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous(memory_format=torch.channels_last)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(grad_out, x, weight, None, [1, 1], [1, 1], [1, 1], False,
                                                         [0, 0], 1, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = conv3x3_weight_grad(x, grad_out)
        return grad_x, grad_w


def _use_gemm_weight_grad(x: torch.Tensor, conv: nn.Conv2d) -> bool:
    """Whether the GEMM weight gradient applies: a float32 channels_last CPU input to a 3x3, stride-1,
    padding-1, ungrouped convolution with enough input channels for a GEMM, under autograd, no autocast."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and x.shape[1] >= 16
            and torch.is_grad_enabled() and conv.weight.requires_grad and not torch.is_autocast_enabled("cpu")
            and not torch.jit.is_tracing() and not torch.compiler.is_compiling()
            and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            and conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.bias is None)


def _conv_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding: int) -> torch.Tensor:
    """relu(conv2d(x, weight, bias)), with the ReLU inside oneDNN's convolution where it is available
    (one pass over the output less); otherwise the two ops. Inference only (no autograd)."""
    if x.device.type == "cpu" and x.dtype == torch.float32 and _ONEDNN_CONV_POINTWISE is not None:
        p = [padding, padding]
        return _ONEDNN_CONV_POINTWISE(x, weight, bias, p, [1, 1], [1, 1], 1, "relu", [], "")
    return F.conv2d(x, weight, bias, 1, padding).relu_()


def _onednn_conv_pointwise():
    """torch.ops.mkldnn._convolution_pointwise (the fused conv + ReLU that torch.compile uses on CPU), or None."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._convolution_pointwise.default
    except (AttributeError, RuntimeError):
        return None


_ONEDNN_CONV_POINTWISE = _onednn_conv_pointwise()


class CentralDifferenceConv2d(nn.Module):
    """Central difference convolution (CDC) with ``theta`` blending vanilla and difference terms.

    theta = 0 is a plain convolution; the paper uses 0.7. ``folded=True`` (default) computes the
    operator as one convolution with the centre tap adjusted (about twice as fast as two
    convolutions); ``folded=False`` runs the explicit reference formula.
    The weight lives in ``self.conv`` so the state_dict key is ``<name>.conv.weight`` like the original.
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
        self._fused: Optional[tuple] = None  # inference cache of fused_bn_relu (not part of the state_dict)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W) -> (B, C_out, H', W')."""
        conv = self.conv
        if abs(self.theta) < 1e-8:
            return conv(x)
        if not self.folded:
            return central_difference_conv_reference(x, conv.weight, self.theta, conv.stride, conv.padding,
                                                     conv.bias, conv.groups)
        weight = fold_central_difference(conv.weight, self.theta)
        if _use_gemm_weight_grad(x, conv):
            return _Conv3x3ChannelsLast.apply(x, weight)
        return F.conv2d(x, weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)

    def fused_bn_relu(self, x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
        """relu(bn(self(x))) for inference (eval BN, no autograd) as one convolution.

        The theta fold and the BN affine map (scale s = gamma / sqrt(var + eps) into the kernel,
        beta - mean * s as the bias) are computed once and cached until any of the tensors they
        come from changes (an optimizer step, ``load_state_dict``, ``.to()``).
        """
        conv = self.conv
        sources = (conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var)
        key = (tuple((t.data_ptr(), t._version, t.dtype) for t in sources), self.theta, bn.eps)
        if self._fused is None or self._fused[0] != key:
            with torch.no_grad():  # a constant of inference: the cache must hold no autograd graph
                weight = conv.weight if abs(self.theta) < 1e-8 else fold_central_difference(conv.weight, self.theta)
                scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
                bias = bn.bias - bn.running_mean * scale
                if conv.bias is not None:
                    bias = bias + conv.bias * scale
                self._fused = (key, (weight * scale.view(-1, 1, 1, 1)).contiguous(), bias.contiguous())
        _, weight, bias = self._fused
        return _conv_relu(x, weight, bias, conv.padding[0])

    def extra_repr(self) -> str:
        return f"theta={self.theta}, folded={self.folded}"


class CDCNOutput(NamedTuple):
    """What :class:`CDCN_U` returns (the original's 8-tuple, with names)."""
    mu: torch.Tensor        # (B, M, M) predicted mean depth
    logvar: torch.Tensor    # (B, M, M) predicted log variance
    sample: torch.Tensor    # (B, M, M) mu + eps * sigma, the map the depth losses see in training
    x_concat: torch.Tensor  # (B, 384, M, M) the three block outputs resized and concatenated
    x_block1: torch.Tensor  # (B, 128, H/2, W/2)
    x_block2: torch.Tensor  # (B, 128, H/4, W/4)
    x_block3: torch.Tensor  # (B, 128, H/8, W/8)
    x_input: torch.Tensor   # (B, 3, H, W) the network input


class CDCSequential(nn.Sequential):
    """nn.Sequential (same indices and state_dict keys) that runs each CDC conv -> BatchNorm -> ReLU
    triple as one fused convolution in inference (eval mode, no autograd); otherwise layer by layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = list(self)
        # Not under torch.compile (inductor folds BN itself; the cache would force recompiles) nor
        # under tracing (torch.onnx.export, torch.jit.trace), which cannot record the oneDNN op.
        fuse = (not self.training and not torch.is_grad_enabled() and x.device.type == "cpu"
                and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
                and not torch.compiler.is_compiling() and not torch.jit.is_tracing()
                and not torch.jit.is_scripting())
        i = 0
        while i < len(layers):
            if fuse and i + 2 < len(layers) and _fusible(layers[i], layers[i + 1], layers[i + 2]):
                x = layers[i].fused_bn_relu(x, layers[i + 1])
                i += 3
            else:
                x = layers[i](x)
                i += 1
        return x


def _fusible(conv: nn.Module, bn: nn.Module, relu: nn.Module) -> bool:
    """Whether (conv, bn, relu) is a folded stride-1 CDC layer, an eval BatchNorm with affine
    parameters and running statistics, and a ReLU: what :meth:`CentralDifferenceConv2d.fused_bn_relu` computes."""
    return (isinstance(conv, CentralDifferenceConv2d) and conv.folded and conv.conv.stride == (1, 1)
            and conv.conv.dilation == (1, 1) and conv.conv.groups == 1 and isinstance(bn, nn.BatchNorm2d)
            and bn.affine and bn.running_mean is not None and not bn.training and isinstance(relu, nn.ReLU))


def _cdc_bn_relu(cin: int, cout: int, theta: float, folded: bool) -> list[nn.Module]:
    return [CentralDifferenceConv2d(cin, cout, theta=theta, folded=folded), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _block(cin: int, theta: float, folded: bool) -> nn.Sequential:
    """128 -> 196 -> 128 CDC layers then a stride-2 max-pool (indices 0..9 as in the original)."""
    return CDCSequential(*_cdc_bn_relu(cin, 128, theta, folded), *_cdc_bn_relu(128, 196, theta, folded),
                         *_cdc_bn_relu(196, 128, theta, folded), nn.MaxPool2d(kernel_size=3, stride=2, padding=1))


class CDCN_U(nn.Module):
    """CDCN backbone (theta = 0.7) with the DUM's mean and log-variance depth heads.

    Input: (B, 3, H, W) RGB normalised as (x - 127.5) / 128. The three block outputs (H/2, H/4,
    H/8) are resized to ``map_size`` and concatenated (the paper: 256 x 256 in, 32 x 32 maps).
    The heads are plain 3x3 convolutions without activation (unlike CDCN's ReLU'd last layer),
    since the mean may go slightly negative and the log-variance has any sign.
    """

    def __init__(self, theta: float = 0.7, map_size: int = 32, folded: bool = True):
        super().__init__()
        self.theta = theta
        self.map_size = map_size
        self.conv1 = CDCSequential(*_cdc_bn_relu(3, 64, theta, folded))
        self.Block1 = _block(64, theta, folded)
        self.Block2 = _block(128, theta, folded)
        self.Block3 = _block(128, theta, folded)
        self.lastconv1 = CDCSequential(*_cdc_bn_relu(128 * 3, 128, theta, folded))
        self.lastconv2 = CDCSequential(*_cdc_bn_relu(128, 64, theta, folded))
        self.mu_head = nn.Sequential(nn.Conv2d(64, 1, kernel_size=3, stride=1, padding=1, bias=False))
        self.logvar_head = nn.Sequential(nn.Conv2d(64, 1, kernel_size=3, stride=1, padding=1, bias=False))

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] == (self.map_size, self.map_size):
            return x  # bilinear resampling to the same size is the identity: skip the copy
        # align_corners=False is PyTorch's default, which the original relied on implicitly.
        return F.interpolate(x, size=(self.map_size, self.map_size), mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> CDCNOutput:
        """x: (B, 3, H, W) -> CDCNOutput with (B, map_size, map_size) mu/logvar/sample."""
        x_input = x
        x = self.conv1(x)
        x_block1 = self.Block1(x)
        x_block2 = self.Block2(x_block1)
        x_block3 = self.Block3(x_block2)
        x_concat = torch.cat([self._resize(x_block1), self._resize(x_block2), self._resize(x_block3)], dim=1)
        x = self.lastconv2(self.lastconv1(x_concat))
        mu = self.mu_head(x).squeeze(1)
        logvar = self.logvar_head(x).squeeze(1)
        # Reparameterisation: a differentiable draw from N(mu, exp(logvar)) per pixel. The original
        # draws it in eval mode too; callers that must not consume RNG wrap evaluation accordingly.
        sample = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return CDCNOutput(mu, logvar, sample, x_concat, x_block1, x_block2, x_block3, x_input)


def cdcn_u(theta: float = 0.7, map_size: int = 32, folded: bool = True) -> CDCN_U:
    """The paper's configuration: theta 0.7, 32 x 32 maps for 256 x 256 inputs."""
    return CDCN_U(theta=theta, map_size=map_size, folded=folded)


def load_model(path, device="cpu", **kwargs) -> CDCN_U:
    """``CDCN_U`` in eval mode from the released ``CDCN_U_P1.pkl`` or one of this project's checkpoints.

    The file reading lives in :func:`DUM.engine.load_model` (this module only defines networks);
    this is the same function under the name users of the original code look for.
    """
    from DUM.engine import load_model as _load_model  # deferred: DUM.engine imports this module

    return _load_model(path, device, **kwargs)
