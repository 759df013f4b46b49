"""Tests for DUM/models.py (central difference convolution, CDCN_U) and DUM/weights.py load_model."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from DUM.weights import load_model
from DUM.models import CDCN_U, CDCNOutput, CentralDifferenceConv2d, central_difference_conv_reference
from misc.checkpoint import CheckpointError, save_checkpoint
from original_keys import original_keys


class TestCentralDifferenceConv:
    @pytest.mark.parametrize("stride", [1, 2])
    @pytest.mark.parametrize("theta", [0.7, 0.3, 1.0])
    def test_folded_equals_explicit_formula(self, stride, theta):
        """One folded convolution equals conv(x, W) - theta * conv1x1(x, sum W) to 1e-5."""
        torch.manual_seed(0)
        layer = CentralDifferenceConv2d(5, 7, stride=stride, theta=theta)
        x = torch.randn(2, 5, 11, 13)
        w = layer.conv.weight
        explicit = (F.conv2d(x, w, stride=stride, padding=1)
                    - theta * F.conv2d(x, w.sum((2, 3), keepdim=True), stride=stride, padding=0))
        assert torch.allclose(layer(x), explicit, atol=1e-5)
        assert torch.allclose(central_difference_conv_reference(x, w, theta, stride=stride), explicit, atol=1e-6)

    def test_folded_gradients_match_reference(self):
        """Training through the folded kernel gives the reference formula's weight gradient."""
        torch.manual_seed(1)
        layer = CentralDifferenceConv2d(3, 4, theta=0.7)
        x = torch.randn(2, 3, 9, 9)
        layer(x).square().sum().backward()
        g_folded = layer.conv.weight.grad.clone()
        layer.conv.weight.grad = None
        central_difference_conv_reference(x, layer.conv.weight, 0.7).square().sum().backward()
        assert torch.allclose(g_folded, layer.conv.weight.grad, atol=1e-4)

    def test_theta_zero_is_plain_conv(self):
        """theta = 0 is an ordinary 3x3 convolution."""
        torch.manual_seed(2)
        layer = CentralDifferenceConv2d(3, 4, theta=0.0)
        x = torch.randn(1, 3, 8, 8)
        assert torch.equal(layer(x), layer.conv(x))

    def test_constant_input_gives_zero_at_theta_one(self):
        """With theta = 1 a constant image has no differences: interior outputs are 0."""
        layer = CentralDifferenceConv2d(2, 3, theta=1.0)
        out = layer(torch.full((1, 2, 6, 6), 3.0))
        assert out[..., 1:-1, 1:-1].abs().max() < 1e-5


class TestCDCNU:
    def test_parameter_count(self):
        """The network has the original's 2,245,592 parameters."""
        assert sum(p.numel() for p in CDCN_U().parameters()) == 2_245_592

    def test_output_fields_and_shapes(self):
        """model(x) is a named tuple: mu, logvar, sample (B x M x M), then the features."""
        torch.manual_seed(0)
        out = CDCN_U(map_size=8).eval()(torch.randn(2, 3, 64, 64))
        assert isinstance(out, CDCNOutput)
        assert out._fields[:3] == ("mu", "logvar", "sample")
        assert out.mu.shape == out.logvar.shape == out.sample.shape == (2, 8, 8)
        assert out.x_concat.shape == (2, 384, 8, 8)
        assert out.x_block1.shape == (2, 128, 32, 32) and out.x_block3.shape == (2, 128, 8, 8)

    def test_folded_and_explicit_networks_agree(self):
        """The whole network gives the same maps with folded and explicit CDC layers."""
        torch.manual_seed(3)
        a = CDCN_U(map_size=4, folded=True).eval()
        b = CDCN_U(map_size=4, folded=False).eval()
        b.load_state_dict(a.state_dict())
        x = torch.randn(2, 3, 32, 32)
        assert torch.allclose(a(x).mu, b(x).mu, atol=1e-5)

    def test_sample_is_reparameterised(self):
        """sample = mu + eps * exp(logvar / 2) with standard normal eps."""
        torch.manual_seed(4)
        model = CDCN_U(map_size=4).eval()
        x = torch.randn(1, 3, 32, 32)
        torch.manual_seed(9)
        out = model(x)
        eps = (out.sample - out.mu) / torch.exp(0.5 * out.logvar)
        torch.manual_seed(9)  # the forward's only random draw is eps
        assert torch.allclose(eps, torch.randn(out.mu.shape), atol=1e-4)


def _released_state_dict() -> dict:
    g = torch.Generator().manual_seed(0)
    sd = {}
    for name, shape in original_keys("CDCN_u"):  # the layout of the released CDCN_U_P1.pkl
        if name.endswith("num_batches_tracked"):
            sd["module." + name] = torch.tensor(100)
        elif name.endswith("running_var"):
            sd["module." + name] = torch.rand(shape, generator=g) + 0.5
        else:
            sd["module." + name] = torch.randn(shape, generator=g) * 0.05
    return sd


class TestLoadModel:
    def test_released_format_loads_and_runs(self, tmp_path):
        """A DataParallel state_dict with the original's names/shapes loads (weights_only) and runs."""
        sd = _released_state_dict()
        torch.save(sd, tmp_path / "CDCN_U_P1.pkl")
        model, meta = load_model(tmp_path / "CDCN_U_P1.pkl", map_size=8, return_meta=True)
        assert meta["source"] == "released" and not model.training
        assert torch.equal(model.Block2[3].conv.weight, sd["module.Block2.3.conv.weight"])
        assert torch.equal(model.lastconv1[1].running_var, sd["module.lastconv1.1.running_var"])
        out = model(torch.randn(1, 3, 64, 64))
        assert out.mu.shape == (1, 8, 8) and torch.isfinite(out.mu).all()

    def test_released_key_names_match_ours(self):
        """Our state_dict has exactly the original's keys and shapes."""
        expected = dict(original_keys("CDCN_u"))
        ours = {k: tuple(v.shape) for k, v in CDCN_U().state_dict().items()}
        assert ours == expected

    def test_own_checkpoint_round_trip(self, tmp_path):
        """A project checkpoint restores weights, map size and theta from its args."""
        torch.manual_seed(5)
        net = CDCN_U(theta=0.5, map_size=4)
        save_checkpoint(tmp_path / "c.pth", kind="dum", models={"model": net},
                        args={"theta": 0.5, "map_size": 4}, extra={"threshold": 0.25, "score": "mean"})
        model, meta = load_model(tmp_path / "c.pth", return_meta=True)
        assert model.map_size == 4 and model.Block1[0].theta == 0.5
        assert meta["extra"]["threshold"] == 0.25
        for k, v in net.state_dict().items():
            assert torch.equal(v, model.state_dict()[k])

    def test_wrong_file_names_the_keys(self, tmp_path):
        """A state_dict of another network fails with the missing and unexpected keys listed."""
        sd = {"module.fc.weight": torch.zeros(2, 2), **{f"module.{k}": v for k, v in CDCN_U().state_dict().items()
                                                      if not k.startswith("mu_head")}}
        torch.save(sd, tmp_path / "other.pkl")
        with pytest.raises(CheckpointError, match=r"(?s)missing keys.*mu_head\.0\.weight.*unexpected keys.*fc\.weight"):
            load_model(tmp_path / "other.pkl")

    def test_pickled_module_is_refused(self, tmp_path):
        """A pickled module (not weights_only-loadable) gives a clear error naming the file."""
        torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pkl")
        with pytest.raises(CheckpointError, match="module.pkl"):
            load_model(tmp_path / "module.pkl")
