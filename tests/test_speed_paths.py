"""Tests for the CPU speed paths: GEMM weight gradients and fused inference in DUM/models.py, the
phase-kernel decoder in networks/generator.py, and benchmarks/original.py (the speed baseline)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchmarks.bench_dum import trained_like
from benchmarks.original import OriginalCDCN_U, OriginalGenerator
from DUM.models import (CDCN_U, CentralDifferenceConv2d, _Conv3x3ChannelsLast, _use_gemm_weight_grad,
                        central_difference_conv_reference, conv3x3_weight_grad)
from networks.generator import DualVAE, ResidualBlock, upsample_conv2d


def _close(a: torch.Tensor, b: torch.Tensor, rel: float) -> bool:
    """Max abs difference within ``rel`` of b's largest magnitude."""
    return (a - b).abs().max().item() <= rel * max(b.abs().max().item(), 1e-12)


# ----------------------------------------------------------------------------------------------
# GEMM weight gradient
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 16, 7, 9), (1, 24, 5, 5), (3, 17, 6, 4)])
def test_gemm_weight_grad_equals_autograd(shape):
    """conv3x3_weight_grad equals autograd's weight gradient of F.conv2d(padding=1) to 1e-4 relative."""
    torch.manual_seed(0)
    n, c, h, w = shape
    x = torch.randn(n, c, h, w).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(5, c, 3, 3, requires_grad=True)
    g = torch.randn(n, 5, h, w).contiguous(memory_format=torch.channels_last)
    F.conv2d(x, weight, padding=1).backward(g)
    assert _close(conv3x3_weight_grad(x, g), weight.grad, 1e-4)


def test_conv3x3_channels_last_function_gradients():
    """_Conv3x3ChannelsLast gives F.conv2d's output and input and weight gradients (1e-4 relative)."""
    torch.manual_seed(1)
    x = torch.randn(2, 16, 8, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(12, 16, 3, 3, requires_grad=True)
    g = torch.randn(2, 12, 8, 6)
    out = _Conv3x3ChannelsLast.apply(x, weight)
    out.backward(g)
    gx, gw = x.grad.clone(), weight.grad.clone()
    x.grad = weight.grad = None
    ref = F.conv2d(x, weight, padding=1)
    ref.backward(g)
    assert _close(out, ref, 1e-5)
    assert _close(gx, x.grad, 1e-4) and _close(gw, weight.grad, 1e-4)


def test_cdc_training_channels_last_equals_two_convolution_reference():
    """A folded CDC layer on channels_last input in training (GEMM path) equals the two-convolution formula."""
    torch.manual_seed(2)
    layer = CentralDifferenceConv2d(16, 20, theta=0.7).train()
    x = torch.randn(2, 16, 9, 7).contiguous(memory_format=torch.channels_last)
    assert _use_gemm_weight_grad(x, layer.conv)  # the path under test is the one taken
    g = torch.randn(2, 20, 9, 7)
    xa = x.clone().requires_grad_()
    layer(xa).backward(g)
    gx, gw = xa.grad.clone(), layer.conv.weight.grad.clone()
    layer.conv.weight.grad = None
    xb = x.contiguous().requires_grad_()
    ref = central_difference_conv_reference(xb, layer.conv.weight, 0.7)
    ref.backward(g)
    assert _close(layer(x), ref, 1e-5)
    assert _close(gx, xb.grad, 1e-4) and _close(gw, layer.conv.weight.grad, 1e-4)


# ----------------------------------------------------------------------------------------------
# Fused inference (CDCSequential)
# ----------------------------------------------------------------------------------------------

def _small_cdcn(seed: int) -> CDCN_U:
    torch.manual_seed(seed)
    return trained_like(CDCN_U(map_size=8), seed).eval()


def _unfused_mu(model: CDCN_U, x: torch.Tensor) -> torch.Tensor:
    """The eval forward layer by layer: with autograd on, CDCSequential does not fuse."""
    with torch.enable_grad():
        return model(x).mu.detach()


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_inference_equals_unfused(channels_last):
    """CDCSequential's fused conv + BN + ReLU inference gives the layer-by-layer eval output to 1e-5."""
    model = _small_cdcn(3)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fused = model(x)
    assert model.conv1[0]._fused is not None  # the fused path ran
    unfused = _unfused_mu(model, x)
    assert (fused.mu - unfused).abs().max().item() <= 1e-5
    with torch.inference_mode():  # DUM/predict.py runs under inference_mode
        assert (model(x).mu - unfused).abs().max().item() <= 1e-5


def test_fused_cache_follows_optimizer_step_and_load_state_dict():
    """The fused kernels are recomputed after an optimizer step and after load_state_dict."""
    model = _small_cdcn(4)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        before = model(x).mu.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    model(x).mu.square().mean().backward()
    opt.step()  # also updates the BN running statistics (train-mode forward)
    model.eval()
    with torch.no_grad():
        after_step = model(x).mu.clone()
    assert (after_step - before).abs().max().item() > 1e-3
    assert (after_step - _unfused_mu(model, x)).abs().max().item() <= 1e-5

    other = _small_cdcn(5)
    model.load_state_dict(other.state_dict())
    with torch.no_grad():
        loaded = model(x).mu
    assert (loaded - _unfused_mu(other, x)).abs().max().item() <= 1e-5


def test_fused_path_not_used_in_training_or_with_autograd():
    """Training mode and autograd run layer by layer: gradients reach every CDC kernel."""
    model = _small_cdcn(6)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    model.eval()(x).mu.sum().backward()
    assert all(m.conv.weight.grad is not None for m in model.modules() if isinstance(m, CentralDifferenceConv2d))
    assert model.conv1[0]._fused is None


# ----------------------------------------------------------------------------------------------
# Phase-kernel decoder (networks/generator.py)
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("bias", [False, True])
def test_upsample_conv2d_equals_conv_of_upsampled(k, bias):
    """upsample_conv2d equals conv2d(interpolate(x, 2, nearest), padding k//2): values and gradients."""
    torch.manual_seed(7)
    x = torch.randn(2, 4, 5, 6, requires_grad=True)
    weight = torch.randn(3, 4, k, k, requires_grad=True)
    b = torch.randn(3, requires_grad=True) if bias else None
    g = torch.randn(2, 3, 10, 12)
    params = [x, weight] + ([b] if bias else [])
    out = upsample_conv2d(x, weight, b)
    grads = torch.autograd.grad(out, params, g)
    ref = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, b, padding=k // 2)
    ref_grads = torch.autograd.grad(ref, params, g)
    assert out.shape == ref.shape and _close(out, ref, 1e-5)
    for a, r in zip(grads, ref_grads):
        assert _close(a, r, 1e-5)


@pytest.mark.parametrize("cin,cout", [(6, 6), (6, 4)])
def test_residual_block_forward_upsampled(cin, cout):
    """ResidualBlock.forward_upsampled(x) equals the block on the nearest-2x upsampled x (also channels_last)."""
    torch.manual_seed(8)
    block = ResidualBlock(cin, cout)
    x = torch.randn(2, cin, 4, 5)
    ref = block(F.interpolate(x, scale_factor=2, mode="nearest"))
    assert _close(block.forward_upsampled(x), ref, 1e-5)
    assert _close(block.forward_upsampled(x.contiguous(memory_format=torch.channels_last)), ref, 1e-5)


def test_decoder_equals_main_layer_by_layer():
    """Decoder.forward (phase kernels) gives the output and gradients of fc then self.main layer by layer."""
    torch.manual_seed(9)
    decoder = DualVAE(hdim=8, image_size=32).netG
    z = torch.randn(2, 24)
    out = decoder(z)
    grads = torch.autograd.grad(out.square().sum(), list(decoder.parameters()))
    h = decoder.fc(z).view(2, 512, 4, 4)
    for layer in decoder.main:
        h = layer(h)
    ref_grads = torch.autograd.grad(h.square().sum(), list(decoder.parameters()))
    assert out.shape == (2, 6, 32, 32) and (out - h).abs().max().item() <= 1e-5
    for a, r in zip(grads, ref_grads):
        assert _close(a, r, 1e-4)


# ----------------------------------------------------------------------------------------------
# The benchmark's baseline models
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("train", [False, True])
def test_original_cdcn_loads_project_weights_and_agrees(train):
    """OriginalCDCN_U loads CDCN_U's state_dict and gives the same mu, logvar and features to 1e-5."""
    ours = _small_cdcn(10).train(train)
    original = OriginalCDCN_U(map_size=8).train(train)
    original.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        a = ours(x)
        b = original(x)
    # In training, BatchNorm divides by the statistics of small batches, which magnifies the float
    # rounding of the two formulations: 1e-4 relative there, 1e-5 absolute in eval.
    for name, i in (("mu", 0), ("logvar", 1), ("x_concat", 3), ("x_block3", 6)):
        ok = _close(getattr(a, name), b[i], 1e-4) if train else (getattr(a, name) - b[i]).abs().max() <= 1e-5
        assert ok, name


def test_original_generator_loads_project_weights_and_agrees():
    """OriginalGenerator loads DualVAE's state_dict; encoders and decoder give the same outputs to 1e-5."""
    torch.manual_seed(11)
    ours = DualVAE(hdim=8, image_size=32)
    original = OriginalGenerator(hdim=8, image_size=32)
    original.load_state_dict(ours.state_dict())
    spoof, live, z = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), torch.randn(2, 24)
    with torch.no_grad():
        for a, b in zip(ours.netE_spoof(spoof) + ours.netE_live(live),
                        original.netE_spoof(spoof) + original.netE_live(live)):
            assert (a - b).abs().max().item() <= 1e-5
        assert (ours.netG(z) - original.netG(z)).abs().max().item() <= 1e-5
        assert (ours.netCls(z[:, :8]) - original.netCls(z[:, :8])).abs().max().item() <= 1e-6
