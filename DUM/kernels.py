"""CPU speed paths of the depth networks of ``DUM/models.py``.

Each computes exactly the operator of the layer it serves (same parameters, outputs equal to float32
rounding); which one runs depends only on the device, memory format, mode and grad state, and all of
them are off under ``DSDG_SPEED_PATHS=0`` (``misc/speed_paths.py``), which leaves the networks'
reference formulas:

* :func:`fold_central_difference`: a central-difference layer as one convolution (its theta folded into
  the kernel's centre tap) instead of the two of its formula;
* :func:`conv2d` (training): a stride-1 3x3 convolution of a channels_last CPU input whose weight
  gradient is nine GEMMs (:func:`conv3x3_weight_grad`) instead of oneDNN's, about twice as fast on AVX2;
* :class:`PlainConv2d`: ``nn.Conv2d`` with that weight gradient, the plain convolutions of
  ``DepthNet_U`` and ``ResNet18_U``;
* :class:`FusedSequential` and :func:`fused_residual` (inference): each conv -> BatchNorm (-> ReLU) as
  one convolution whose kernel, theta and BN folded in, is cached, with the ReLU inside oneDNN's
  convolution where it has one.

The networks hand their layers to these through one method: a layer that can be fused has
``fusion_source()``, which returns (its convolution, its theta) or None.

CPUs they were verified on (tests/test_speed_paths.py: against the plain path with both in float64,
CDCN_U's whole-network training gradients included, also under ATEN_CPU_CAPABILITY=default and
avx2): an AMD EPYC with AVX2 and FMA, no AVX-512 (worst 8.5e-14). On an AMD EPYC with AVX-512F,
AVX512_BF16 and AVX512_VNNI (issue 12) only the float32 tests have run; they passed, and CDCN_U's
gradients with the GEMM weight gradient on and off agreed to 8e-7.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from misc.speed_paths import speed_paths_enabled

_FLOAT64_SPEED_PATHS = False  # set only by float64_speed_paths()


@contextlib.contextmanager
def float64_speed_paths() -> Iterator[None]:
    """Within the block, the float32-only speed paths (GEMM weight gradient, fused conv + BN + ReLU
    inference) also take float64 CPU tensors. For tests: float32 rounding flips a few ReLU/MaxPool
    kinks of a whole network and moves its gradients by percents, so a fast path is proven equal to
    its reference in float64 (~1e-12). Production never enables it (float64 gains nothing from these
    paths). A process-wide switch, not thread-local; ``DSDG_SPEED_PATHS=0`` still turns them off."""
    global _FLOAT64_SPEED_PATHS
    previous, _FLOAT64_SPEED_PATHS = _FLOAT64_SPEED_PATHS, True
    try:
        yield
    finally:
        _FLOAT64_SPEED_PATHS = previous


def _speed_path_dtype(x: torch.Tensor) -> bool:
    """float32, or float64 inside :func:`float64_speed_paths`."""
    return x.dtype == torch.float32 or (_FLOAT64_SPEED_PATHS and x.dtype == torch.float64)


def fold_central_difference(weight: torch.Tensor, theta: float) -> torch.Tensor:
    """The single kernel that equals the two-convolution central difference formula
    (``DUM.models.central_difference_conv_reference``).

    W' = W with W'[:, :, c, c] -= theta * sum_{u,v} W[:, :, u, v]  (c = centre tap)

    Valid for odd square kernels padded by k // 2: the centre tap then reads exactly the pixel
    that the unpadded 1x1 convolution reads. Differentiable, so training goes through it; one
    convolution instead of two is about twice as fast.
    """
    k = weight.shape[-1]
    kernel_sum = weight.sum(dim=(2, 3), keepdim=True)
    # F.pad places the (out, in, 1, 1) sum at the centre of a k x k kernel of zeros.
    return weight - theta * F.pad(kernel_sum, (k // 2,) * 4)


# ----------------------------------------------------------------------------------------------
# Training: the GEMM weight gradient
# ----------------------------------------------------------------------------------------------

def conv3x3_weight_grad(x: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """Weight gradient (K, C, 3, 3) of a stride-1, padding-1 3x3 convolution, as nine GEMMs.

    x: (N, C, H, W), grad_out: (N, K, H, W), both channels_last. With the input zero-padded to
    (N, H+2, W+2, C) rows and grad_out padded at the end of each row and image to the same row
    pitch, tap (u, v) is grad_out^T @ input shifted by u * (W+2) + v rows: a plain GEMM on
    contiguous slices, no im2col copy. oneDNN's channels_last weight gradient runs at about half
    the speed of these GEMMs on AVX2 CPUs (benchmarks/bench.py); the padded rows contribute zeros.
    Verified on an AVX2-only AMD EPYC (float64: 2e-16 for the op, 8.5e-14 for CDCN_U training at
    64 px); on AVX-512 in float32 only (see the module docstring).
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
    weight gradient (:func:`conv3x3_weight_grad`). For float32 channels_last CPU tensors (float64
    too: the ops are dtype-generic, and tests run it so through :func:`float64_speed_paths`)."""

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
    """Whether the GEMM weight gradient applies: speed paths on, a float32 channels_last CPU input to a
    3x3, stride-1, padding-1, ungrouped convolution with enough input channels for a GEMM, under
    autograd, no autocast (float64 too inside :func:`float64_speed_paths`)."""
    return (x.device.type == "cpu" and _speed_path_dtype(x) and x.dim() == 4 and x.shape[1] >= 16
            and torch.is_grad_enabled() and conv.weight.requires_grad and not torch.is_autocast_enabled("cpu")
            and not torch.jit.is_tracing() and not torch.compiler.is_compiling()
            and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            and conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.bias is None and speed_paths_enabled())


def conv2d(x: torch.Tensor, weight: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``F.conv2d(x, weight)`` with the bias, stride, padding, dilation and groups of ``conv``; in
    training its weight gradient through GEMMs where :func:`_use_gemm_weight_grad` allows. ``weight``
    may differ from ``conv.weight`` (a folded central-difference kernel computed from it)."""
    if _use_gemm_weight_grad(x, conv):
        return _Conv3x3ChannelsLast.apply(x, weight)
    return F.conv2d(x, weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class PlainConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state_dict keys, ``<name>.weight``) with the speed paths of
    the central-difference layers: the GEMM weight gradient of stride-1 3x3 convolutions in training,
    and conv + BN (+ ReLU) as one cached convolution in inference (:class:`FusedSequential`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _use_gemm_weight_grad(x, self):
            return _Conv3x3ChannelsLast.apply(x, self.weight)
        return super().forward(x)

    def fusion_source(self) -> Tuple[nn.Conv2d, float]:
        """(the convolution, theta 0): what a fused kernel is computed from."""
        return self, 0.0


# ----------------------------------------------------------------------------------------------
# Inference: conv + BN (+ ReLU) as one cached convolution
# ----------------------------------------------------------------------------------------------

def _onednn_conv_pointwise():
    """torch.ops.mkldnn._convolution_pointwise (the fused conv + ReLU that torch.compile uses on CPU), or None."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._convolution_pointwise.default
    except (AttributeError, RuntimeError):
        return None


_ONEDNN_CONV_POINTWISE = _onednn_conv_pointwise()


def _conv_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding: int, stride: int = 1,
               relu: bool = True) -> torch.Tensor:
    """relu(conv2d(x, weight, bias)) (or without the ReLU), with the ReLU inside oneDNN's convolution
    where it is available (one pass over the output less); otherwise the two ops (float64: oneDNN's op
    takes no doubles). Inference only (no autograd). The fused op is verified in float32 on CDCN_U's
    eval outputs (2.3e-7 of |mu| <= 0.2 on an AVX2-only AMD EPYC; passed on the AVX-512 + AVX512_BF16
    EPYC of issue 12), the cached folded kernels in float64 (2.7e-15, AVX2 EPYC, default and avx2)."""
    if x.device.type == "cpu" and x.dtype == torch.float32 and _ONEDNN_CONV_POINTWISE is not None:
        p, s = [padding, padding], [stride, stride]
        return _ONEDNN_CONV_POINTWISE(x, weight, bias, p, s, [1, 1], 1, "relu" if relu else "none", [], "")
    out = F.conv2d(x, weight, bias, stride, padding)
    return out.relu_() if relu else out


def _bn_folded_kernel(layer: nn.Module, conv: nn.Conv2d, bn: nn.BatchNorm2d,
                      theta: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """(kernel, bias) of conv -> eval BN as one convolution, cached in ``layer._fused`` (an attribute,
    not part of the state_dict).

    The theta fold (:func:`fold_central_difference`) and the BN affine map
    (scale s = gamma / sqrt(var + eps) into the kernel, beta - mean * s as the bias) are recomputed
    only when a tensor they come from changes (an optimizer step, ``load_state_dict``, ``.to()``).
    """
    sources = (conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var)
    sources += () if conv.bias is None else (conv.bias,)
    key = (tuple((t.data_ptr(), t._version, t.dtype) for t in sources), theta, bn.eps)
    cached = getattr(layer, "_fused", None)
    if cached is None or cached[0] != key:
        with torch.no_grad():  # a constant of inference: the cache must hold no autograd graph
            weight = conv.weight if abs(theta) < 1e-8 else fold_central_difference(conv.weight, theta)
            scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
            bias = bn.bias - bn.running_mean * scale
            if conv.bias is not None:
                bias = bias + conv.bias * scale
            cached = layer._fused = (key, (weight * scale.view(-1, 1, 1, 1)).contiguous(), bias.contiguous())
    return cached[1], cached[2]


def _conv_bn_relu(layer: nn.Module, x: torch.Tensor, bn: nn.BatchNorm2d, relu: bool = True) -> torch.Tensor:
    """relu(bn(layer(x))), or bn(layer(x)) with ``relu=False``, for inference as one convolution."""
    conv, theta = layer.fusion_source()
    weight, bias = _bn_folded_kernel(layer, conv, bn, theta)
    return _conv_relu(x, weight, bias, conv.padding[0], conv.stride[0], relu)


def fused_inference(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``module`` may run its conv + BN (+ ReLU) layers as fused convolutions on ``x``: speed
    paths on, eval mode without autograd, on the CPU, in float32 (float64 too inside
    :func:`float64_speed_paths`)."""
    # Not under torch.compile (inductor folds BN itself; the cache would force recompiles) nor
    # under tracing (torch.onnx.export, torch.jit.trace), which cannot record the oneDNN op.
    return (not module.training and not torch.is_grad_enabled() and x.device.type == "cpu"
            and _speed_path_dtype(x) and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling() and not torch.jit.is_tracing()
            and not torch.jit.is_scripting() and speed_paths_enabled())


def _fusible_conv(layer: nn.Module) -> bool:
    """Whether ``layer`` has a fusion source whose convolution ``_conv_relu`` can run: one stride and one
    zero padding for both axes, no dilation or groups."""
    source = layer.fusion_source() if hasattr(layer, "fusion_source") else None
    if source is None:
        return False
    conv = source[0]
    return (conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
            and isinstance(conv.padding, tuple) and conv.padding[0] == conv.padding[1]
            and conv.stride[0] == conv.stride[1])


def _fusible_bn(bn: nn.Module) -> bool:
    return isinstance(bn, nn.BatchNorm2d) and bn.affine and bn.running_mean is not None and not bn.training


class FusedSequential(nn.Sequential):
    """nn.Sequential (same indices and state_dict keys) that runs each conv -> BatchNorm -> ReLU
    triple (a folded central-difference layer or a :class:`PlainConv2d`) as one fused convolution in
    inference (:func:`fused_inference`); otherwise layer by layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = list(self)
        fuse = fused_inference(self, x)
        i = 0
        while i < len(layers):
            if fuse and i + 2 < len(layers) and _fusible_conv(layers[i]) and _fusible_bn(layers[i + 1]) \
                    and isinstance(layers[i + 2], nn.ReLU):
                x = _conv_bn_relu(layers[i], x, layers[i + 1])
                i += 3
            else:
                x = layers[i](x)
                i += 1
        return x


def fused_residual(left: nn.Sequential, shortcut: nn.Sequential, x: torch.Tensor) -> Optional[torch.Tensor]:
    """relu(left(x) + shortcut(x)) of a ResNet basic block (``left`` = conv, BN, ReLU, conv, BN;
    ``shortcut`` empty or conv, BN) with every convolution's BN folded in (the first with its ReLU),
    for inference (:func:`fused_inference`); None when its layers cannot be fused."""
    convs = (left[0], left[3]) + ((shortcut[0],) if len(shortcut) else ())
    bns = (left[1], left[4]) + ((shortcut[1],) if len(shortcut) else ())
    if not (all(_fusible_conv(c) for c in convs) and all(_fusible_bn(bn) for bn in bns)):
        return None
    out = _conv_bn_relu(left[0], x, left[1])
    out = _conv_bn_relu(left[3], out, left[4], relu=False)
    short = _conv_bn_relu(shortcut[0], x, shortcut[1], relu=False) if len(shortcut) else x
    return out.add_(short).relu_()
