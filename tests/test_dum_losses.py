"""Tests for DUM/losses.py on hand-computed tiny examples."""
from __future__ import annotations

import math

import torch

from DUM.losses import (cdcn_losses, contrast_depth, contrast_depth_kernels, contrast_depth_loss, depth_mse_per_sample,
                        dum_kl, dum_kl_per_sample, dum_losses)


class TestContrastDepth:
    def test_kernel_order(self):
        """Eight kernels, -1 at the centre, +1 at TL, T, TR, L, R, BL, B, BR in that order."""
        k = contrast_depth_kernels()
        assert k.shape == (8, 1, 3, 3)
        assert (k[:, 0, 1, 1] == -1).all() and (k.sum((1, 2, 3)) == 0).all()
        plus = [tuple((k[i, 0] == 1).nonzero()[0].tolist()) for i in range(8)]
        assert plus == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2)]

    def test_hand_computed_3x3(self):
        """On a 3x3 map the output is the eight neighbours minus the centre (no padding)."""
        d = torch.tensor([[[1., 2., 3.], [4., 5., 6.], [7., 8., 9.]]])
        cd = contrast_depth(d)
        assert cd.shape == (1, 8, 1, 1)
        assert cd.flatten().tolist() == [-4., -3., -2., -1., 1., 2., 3., 4.]

    def test_loss_hand_computed(self):
        """Loss = mean over 8 channels of (CD(p) - CD(t))^2: centre +1 moves every term by -1."""
        target = torch.zeros(1, 3, 3)
        pred = torch.zeros(1, 3, 3)
        pred[0, 1, 1] = 1.0  # every neighbour-minus-centre difference becomes -1
        assert math.isclose(contrast_depth_loss(pred, target).item(), 1.0)
        pred = torch.zeros(1, 3, 3)
        pred[0, 0, 0] = 2.0  # only the top-left difference changes, by +2 -> 4 / 8
        assert math.isclose(contrast_depth_loss(pred, target).item(), 0.5)

    def test_flat_offset_is_free(self):
        """A constant shift of the whole map costs nothing in the contrast loss."""
        torch.manual_seed(0)
        t = torch.rand(2, 8, 8)
        assert contrast_depth_loss(t + 0.3, t).item() < 1e-12


class TestKL:
    def test_hand_computed(self):
        """Sum over pixels of 1/2 (e^lv + (mu - y)^2 - 1 - lv), averaged over the batch."""
        mu = torch.tensor([[[0.5, 0.0]], [[0.0, 0.0]]])       # (2, 1, 2)
        logvar = torch.tensor([[[0.0, math.log(2.0)]], [[0.0, 0.0]]])
        y = torch.tensor([[[0.0, 1.0]], [[0.0, 0.0]]])
        # sample 0: pixel 0 -> 0.5 * 0.25 = 0.125; pixel 1 -> 0.5 * (2 + 1 - 1 - ln 2)
        first = 0.125 + 0.5 * (2.0 - math.log(2.0))
        per = dum_kl_per_sample(mu, logvar, y)
        assert torch.allclose(per, torch.tensor([first, 0.0]), atol=1e-6)
        assert math.isclose(dum_kl(mu, logvar, y).item(), first / 2, rel_tol=1e-6)

    def test_zero_at_target_with_unit_variance(self):
        """KL(N(y, 1) || N(y, 1)) = 0."""
        y = torch.rand(3, 4, 4)
        assert dum_kl(y, torch.zeros_like(y), y).abs().item() < 1e-7


class TestDUMLosses:
    def test_group_weighting(self):
        """total = L_real + w_gen * L_gen, each group averaged over its own samples."""
        torch.manual_seed(0)
        mu, logvar, sample, y = (torch.rand(4, 4, 4) for _ in range(4))
        gen = torch.tensor([False, False, False, True])
        out = dum_losses(mu, logvar, sample, y, gen, generated_weight=0.1, kl_weight=0.001)
        mse = depth_mse_per_sample(sample, y)
        kl = dum_kl_per_sample(mu, logvar, y)
        assert math.isclose(out["real_abs"].item(), mse[:3].mean().item(), rel_tol=1e-6)
        assert math.isclose(out["gen_abs"].item(), mse[3].item(), rel_tol=1e-6)
        assert math.isclose(out["gen_kl"].item(), kl[3].item(), rel_tol=1e-6)
        real = out["real_abs"] + out["real_contrast"] + 0.001 * out["real_kl"]
        fake = out["gen_abs"] + out["gen_contrast"] + 0.001 * out["gen_kl"]
        assert math.isclose(out["total"].item(), (real + 0.1 * fake).item(), rel_tol=1e-6)
        assert int(out["n_real"]) == 3 and int(out["n_gen"]) == 1

    def test_no_generated_samples(self):
        """Without generated samples their terms are 0 and the total is the real loss."""
        torch.manual_seed(1)
        mu, logvar, sample, y = (torch.rand(3, 4, 4) for _ in range(4))
        out = dum_losses(mu, logvar, sample, y, torch.zeros(3, dtype=torch.bool))
        assert out["gen_abs"].item() == 0 and out["gen_kl"].item() == 0
        real = out["real_abs"] + out["real_contrast"] + 0.001 * out["real_kl"]
        assert math.isclose(out["total"].item(), real.item(), rel_tol=1e-6)

    def test_gradients_reach_mu_and_logvar(self):
        """The KL term trains logvar; the sampled-map terms train the sample."""
        mu = torch.zeros(2, 4, 4, requires_grad=True)
        logvar = torch.zeros(2, 4, 4, requires_grad=True)
        sample = mu + 0.1 * torch.exp(0.5 * logvar)
        out = dum_losses(mu, logvar, sample, torch.ones(2, 4, 4), torch.tensor([False, True]))
        out["total"].backward()
        assert mu.grad.abs().sum() > 0 and logvar.grad.abs().sum() > 0


class TestCDCNLosses:
    def test_hand_computed(self):
        """Plain CDCN: MSE + contrast loss of the predicted map itself, per group, generated weighted 0.1."""
        depth = torch.zeros(2, 3, 3)
        depth[0, 1, 1] = 1.0  # real sample: MSE 1/9, every contrast difference -1 -> contrast loss 1
        depth[1] = 0.5        # generated sample: MSE 0.25, flat -> contrast loss 0
        out = cdcn_losses(depth, torch.zeros(2, 3, 3), torch.tensor([False, True]), generated_weight=0.1)
        assert set(out) == {"real_abs", "real_contrast", "gen_abs", "gen_contrast", "total", "n_real", "n_gen"}
        assert math.isclose(out["real_abs"].item(), 1 / 9, rel_tol=1e-6)
        assert math.isclose(out["real_contrast"].item(), 1.0, rel_tol=1e-6)
        assert math.isclose(out["gen_abs"].item(), 0.25, rel_tol=1e-6) and out["gen_contrast"].item() == 0
        assert math.isclose(out["total"].item(), 1 / 9 + 1.0 + 0.1 * 0.25, rel_tol=1e-6)
        assert int(out["n_real"]) == 1 and int(out["n_gen"]) == 1

    def test_same_depth_terms_as_dum_without_kl(self):
        """On the same map, cdcn_losses' terms are dum_losses' depth terms and its total lacks only the KL."""
        torch.manual_seed(2)
        mu, logvar, y = (torch.rand(4, 5, 5) for _ in range(3))
        gen = torch.tensor([False, True, False, True])
        plain = cdcn_losses(mu, y, gen, generated_weight=0.1)
        dum = dum_losses(mu, logvar, mu, y, gen, generated_weight=0.1, kl_weight=0.001)
        for key in ("real_abs", "real_contrast", "gen_abs", "gen_contrast"):
            assert torch.equal(plain[key], dum[key]), key
        kl = 0.001 * (dum["real_kl"] + 0.1 * dum["gen_kl"])
        assert math.isclose(plain["total"].item(), (dum["total"] - kl).item(), rel_tol=1e-6)
