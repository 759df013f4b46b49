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
in ``DUM/zoo.py``.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, List, NamedTuple, Optional, Tuple

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
# CPUs they were verified on (tests/test_speed_paths.py: against the plain path with both in float64,
# CDCN_U's whole-network training gradients included, also under ATEN_CPU_CAPABILITY=default and
# avx2): an AMD EPYC with AVX2 and FMA, no AVX-512 (worst 8.5e-14). On an AMD EPYC with AVX-512F,
# AVX512_BF16 and AVX512_VNNI (issue 12) only the float32 tests have run; they passed, and CDCN_U's
# gradients with the GEMM weight gradient on and off agreed to 8e-7.
# ----------------------------------------------------------------------------------------------

_FLOAT64_SPEED_PATHS = False  # set only by float64_speed_paths()


@contextlib.contextmanager
def float64_speed_paths() -> Iterator[None]:
    """Within the block, the float32-only speed paths (GEMM weight gradient, fused conv + BN + ReLU
    inference) also take float64 CPU tensors. For tests: float32 rounding flips a few ReLU/MaxPool
    kinks of a whole network and moves its gradients by percents, so a fast path is proven equal to
    its reference in float64 (~1e-12). Production never enables it (float64 gains nothing from these
    paths). A process-wide switch, not thread-local."""
    global _FLOAT64_SPEED_PATHS
    previous, _FLOAT64_SPEED_PATHS = _FLOAT64_SPEED_PATHS, True
    try:
        yield
    finally:
        _FLOAT64_SPEED_PATHS = previous


def _speed_path_dtype(x: torch.Tensor) -> bool:
    """float32, or float64 inside :func:`float64_speed_paths`."""
    return x.dtype == torch.float32 or (_FLOAT64_SPEED_PATHS and x.dtype == torch.float64)


def conv3x3_weight_grad(x: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """Weight gradient (K, C, 3, 3) of a stride-1, padding-1 3x3 convolution, as nine GEMMs.

    x: (N, C, H, W), grad_out: (N, K, H, W), both channels_last. With the input zero-padded to
    (N, H+2, W+2, C) rows and grad_out padded at the end of each row and image to the same row
    pitch, tap (u, v) is grad_out^T @ input shifted by u * (W+2) + v rows: a plain GEMM on
    contiguous slices, no im2col copy. oneDNN's channels_last weight gradient runs at about half
    the speed of these GEMMs on AVX2 CPUs (benchmarks/bench.py); the padded rows contribute zeros.
    Verified on an AVX2-only AMD EPYC (float64: 2e-16 for the op, 8.5e-14 for CDCN_U training at
    64 px); on AVX-512 in float32 only (see the note above).
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
    """Whether the GEMM weight gradient applies: a float32 channels_last CPU input to a 3x3, stride-1,
    padding-1, ungrouped convolution with enough input channels for a GEMM, under autograd, no autocast
    (float64 too inside :func:`float64_speed_paths`)."""
    return (x.device.type == "cpu" and _speed_path_dtype(x) and x.dim() == 4 and x.shape[1] >= 16
            and torch.is_grad_enabled() and conv.weight.requires_grad and not torch.is_autocast_enabled("cpu")
            and not torch.jit.is_tracing() and not torch.compiler.is_compiling()
            and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            and conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.bias is None)


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
        """relu(bn(self(x))) for inference (eval BN, no autograd) as one convolution, whose kernel
        (theta and BN folded in) is cached by :func:`_bn_folded_kernel`."""
        weight, bias = _bn_folded_kernel(self, self.conv, bn, self.theta)
        return _conv_relu(x, weight, bias, self.conv.padding[0], self.conv.stride[0])

    def extra_repr(self) -> str:
        return f"theta={self.theta}, folded={self.folded}"


def _bn_folded_kernel(layer: nn.Module, conv: nn.Conv2d, bn: nn.BatchNorm2d,
                      theta: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """(kernel, bias) of conv -> eval BN as one convolution, cached in ``layer._fused``.

    The theta fold and the BN affine map (scale s = gamma / sqrt(var + eps) into the kernel,
    beta - mean * s as the bias) are recomputed only when a tensor they come from changes (an
    optimizer step, ``load_state_dict``, ``.to()``).
    """
    sources = (conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var)
    sources += () if conv.bias is None else (conv.bias,)
    key = (tuple((t.data_ptr(), t._version, t.dtype) for t in sources), theta, bn.eps)
    if layer._fused is None or layer._fused[0] != key:
        with torch.no_grad():  # a constant of inference: the cache must hold no autograd graph
            weight = conv.weight if abs(theta) < 1e-8 else fold_central_difference(conv.weight, theta)
            scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
            bias = bn.bias - bn.running_mean * scale
            if conv.bias is not None:
                bias = bias + conv.bias * scale
            layer._fused = (key, (weight * scale.view(-1, 1, 1, 1)).contiguous(), bias.contiguous())
    return layer._fused[1], layer._fused[2]


class PlainConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state_dict keys, ``<name>.weight``) with the CPU speed paths
    of the central-difference layers: the GEMM weight gradient of stride-1 3x3 convolutions in
    training, and conv + BN (+ ReLU) as one cached convolution in inference (:meth:`fused_bn_relu`).
    The plain convolutions of :class:`DepthNet_U` and :class:`ResNet18_U`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._fused: Optional[tuple] = None  # inference cache of fused_bn_relu (not part of the state_dict)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _use_gemm_weight_grad(x, self):
            return _Conv3x3ChannelsLast.apply(x, self.weight)
        return super().forward(x)

    def fused_bn_relu(self, x: torch.Tensor, bn: nn.BatchNorm2d, relu: bool = True) -> torch.Tensor:
        """relu(bn(self(x))), or bn(self(x)) with ``relu=False``, for inference as one convolution."""
        weight, bias = _bn_folded_kernel(self, self, bn, 0.0)
        return _conv_relu(x, weight, bias, self.padding[0], self.stride[0], relu)


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


def _fused_inference(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``module`` may run its conv + BN (+ ReLU) layers as fused convolutions on ``x``: eval
    mode without autograd, on the CPU, in float32 (float64 too inside :func:`float64_speed_paths`)."""
    # Not under torch.compile (inductor folds BN itself; the cache would force recompiles) nor
    # under tracing (torch.onnx.export, torch.jit.trace), which cannot record the oneDNN op.
    return (not module.training and not torch.is_grad_enabled() and x.device.type == "cpu"
            and _speed_path_dtype(x) and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling() and not torch.jit.is_tracing()
            and not torch.jit.is_scripting())


class CDCSequential(nn.Sequential):
    """nn.Sequential (same indices and state_dict keys) that runs each conv -> BatchNorm -> ReLU
    triple (central-difference or :class:`PlainConv2d`) as one fused convolution in inference (eval
    mode, no autograd); otherwise layer by layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = list(self)
        fuse = _fused_inference(self, x)
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
    """Whether (conv, bn, relu) is a folded CDC layer or a :class:`PlainConv2d`, an eval BatchNorm
    with affine parameters and running statistics, and a ReLU: what their ``fused_bn_relu`` computes."""
    if isinstance(conv, CentralDifferenceConv2d):
        if not conv.folded:
            return False
        conv = conv.conv
    elif not isinstance(conv, PlainConv2d):
        return False
    # _conv_relu takes one stride and one padding for both axes, zero padding, no dilation or groups.
    return (conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
            and isinstance(conv.padding, tuple) and conv.padding[0] == conv.padding[1]
            and conv.stride[0] == conv.stride[1] and _fusible_bn(bn) and isinstance(relu, nn.ReLU))


def _fusible_bn(bn: nn.Module) -> bool:
    return isinstance(bn, nn.BatchNorm2d) and bn.affine and bn.running_mean is not None and not bn.training


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
    return CDCSequential(*layer(cin, 128), *layer(128, 196), *layer(196, 128),
                         nn.MaxPool2d(kernel_size=3, stride=2, padding=1))


class _CDCNTrunk(_DepthNetwork):
    """CDCN's layers up to its heads: conv1, Block1-3 (outputs at H/2, H/4, H/8) resized to the map
    size and concatenated (384 channels), lastconv1 (-> 128) and lastconv2 (-> 64), each layer built
    by ``layer`` (central-difference or plain convolutions)."""

    def __init__(self, layer: Layer, map_size: int, theta: float):
        super().__init__(map_size, theta)
        self.conv1 = CDCSequential(*layer(3, 64))
        self.Block1 = _block(layer, 64)
        self.Block2 = _block(layer, 128)
        self.Block3 = _block(layer, 128)
        self.lastconv1 = CDCSequential(*layer(128 * 3, 128))
        self.lastconv2 = CDCSequential(*layer(128, 64))

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
    autograd) every convolution runs with its BatchNorm folded in (the first one with its ReLU)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.left = nn.Sequential(*_plain_bn_relu(cin, cout, stride), PlainConv2d(cout, cout, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(cout))
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(PlainConv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bns = (self.left[1], self.left[4]) + ((self.shortcut[1],) if len(self.shortcut) else ())
        if _fused_inference(self, x) and all(_fusible_bn(bn) for bn in bns):
            out = self.left[0].fused_bn_relu(x, self.left[1])
            out = self.left[3].fused_bn_relu(out, self.left[4], relu=False)
            short = self.shortcut[0].fused_bn_relu(x, self.shortcut[1], relu=False) if len(self.shortcut) else x
            return out.add_(short).relu_()
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
        self.conv1 = CDCSequential(*_plain_bn_relu(3, 64))
        self.layer1 = _stage(64, 64, 1)
        self.layer2 = _stage(64, 128, 2)
        self.layer3 = _stage(128, 196, 2)
        self.layer4 = _stage(196, 256, 2)
        self.lastconv1 = CDCSequential(*_plain_bn_relu(128 + 196 + 256, 128))
        self.lastconv2 = CDCSequential(*_plain_bn_relu(128, 64))
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


def cdcn_u(theta: float = 0.7, map_size: int = 32, folded: bool = True) -> CDCN_U:
    """The paper's configuration: theta 0.7, 32 x 32 maps for 256 x 256 inputs."""
    return CDCN_U(theta=theta, map_size=map_size, folded=folded)


def load_model(path, device="cpu", **kwargs) -> nn.Module:
    """The network of a file (``CDCN_U`` for the released ``CDCN_U_P1.pkl``, the one it was trained as
    for this project's checkpoints) in eval mode.

    The file reading lives in :func:`DUM.engine.load_model` (this module only defines networks);
    this is the same function under the name users of the original code look for.
    """
    from DUM.engine import load_model as _load_model  # deferred: DUM.engine imports this module

    return _load_model(path, device, **kwargs)
