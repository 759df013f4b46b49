"""Tests for networks/losses.py: each term against its one-line formula, on hand-made tensors."""
from __future__ import annotations

import math

import pytest
import torch

from networks.generator import DualVAE
from networks.losses import (LossWeights, generator_loss, identity_alignment_loss, identity_features,
                             identity_preserving_loss, kl_divergence, orthogonality_loss, pair_identity_loss,
                             reconstruction_loss, rgb_to_gray)


class TestTerms:
    def test_reconstruction_is_half_per_sample_sse(self):
        """1/2 * batch mean of per-sample sums of squared errors."""
        rec = torch.zeros(2, 6, 2, 2)
        target = torch.zeros(2, 6, 2, 2)
        target[0, 0, 0, 0] = 2.0      # sample 0: SSE 4
        target[1] = 1.0               # sample 1: SSE 24
        assert reconstruction_loss(rec, target).item() == pytest.approx(0.5 * (4 + 24) / 2)

    def test_kl_against_closed_form(self):
        """KL(N(mu, s^2) || N(0, 1)) = 1/2 (s^2 + mu^2 - 1 - log s^2), summed over dims, batch mean."""
        mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
        logvar = torch.tensor([[0.0, math.log(4.0)], [0.0, 0.0]])
        per_sample = [0.5 * 1 + 0.5 * (4 - 1 - math.log(4)), 0.0]
        assert kl_divergence(mu, logvar).item() == pytest.approx(sum(per_sample) / 2)

    def test_alignment_is_l1_of_batch_means(self):
        """mean over dims of |batch mean(a) - batch mean(b)| (the original's 'MMD')."""
        a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])   # means 2, 3
        b = torch.tensor([[0.0, 0.0], [0.0, 2.0]])   # means 0, 1
        assert identity_alignment_loss(a, b).item() == pytest.approx((2 + 2) / 2)

    def test_orthogonality_is_abs_mean_dot(self):
        """|batch mean of <p, q>|, unnormalised; opposite signs cancel before the absolute value."""
        p = torch.tensor([[1.0, 0.0], [2.0, 1.0]])
        q = torch.tensor([[3.0, 5.0], [-1.0, -4.0]])   # dots: 3, -6
        assert orthogonality_loss(p, q).item() == pytest.approx(1.5)

    def test_identity_terms(self):
        """IP = 1/2 (MSE(a, b) + MSE(c, d)); pair = MSE(a, c); both are means over batch x features."""
        a, b, c, d = (torch.full((2, 4), v) for v in (1.0, 0.0, 3.0, 1.0))
        assert identity_preserving_loss(a, b, c, d).item() == pytest.approx(0.5 * (1 + 4))
        assert pair_identity_loss(a, c).item() == pytest.approx(4.0)

    def test_gray_weights(self):
        """Luma 0.299 R + 0.587 G + 0.114 B."""
        x = torch.tensor([1.0, 0.5, 0.25]).view(1, 3, 1, 1)
        assert rgb_to_gray(x).item() == pytest.approx(0.299 + 0.587 * 0.5 + 0.114 * 0.25)

    def test_identity_features_resize_and_normalise(self):
        """Features of any input size are computed at 128x128 and have unit norm."""
        seen = []

        def fake_lightcnn(x):
            seen.append(tuple(x.shape))
            return x.flatten(1)[:, :256] + 1.0

        f = identity_features(fake_lightcnn, torch.rand(2, 3, 64, 64))
        assert seen == [(2, 1, 128, 128)]
        assert torch.allclose(f.norm(dim=1), torch.ones(2))


@pytest.fixture(scope="module")
def outputs():
    torch.manual_seed(0)
    vae = DualVAE(hdim=8, image_size=8)
    spoof, live = torch.rand(3, 3, 8, 8), torch.rand(3, 3, 8, 8)
    return vae(spoof, live), spoof, live, torch.tensor([0, 3, 1])


class TestTotal:
    def test_weights_and_warmup_scale(self, outputs):
        """Total = rec + scale * (sum of weighted terms); weights multiply their term."""
        out, spoof, live, kind = outputs
        w = LossWeights()
        total, terms = generator_loss(out, spoof, live, kind, w, None, regulariser_scale=0.01)
        assert set(terms) == {"rec", "kl", "align", "type", "ort"}
        expected = terms["rec"] + 0.01 * (terms["kl"] + terms["align"] + terms["type"] + terms["ort"])
        assert total.item() == pytest.approx(expected.item(), rel=1e-6)
        assert terms["align"].item() == pytest.approx(
            50 * identity_alignment_loss(out["z_spoof_id"], out["z_live_id"]).item(), rel=1e-6)
        assert terms["type"].item() == pytest.approx(
            10 * torch.nn.functional.cross_entropy(out["logits"], kind).item(), rel=1e-6)

    def test_identity_terms_need_lightcnn(self, outputs):
        """With a feature network the identity-preserving and pair terms are added and weighted."""
        out, spoof, live, kind = outputs
        torch.manual_seed(0)
        proj = torch.randn(128 * 128, 256)

        def lightcnn(x):
            return x.flatten(1) @ proj

        total, terms = generator_loss(out, spoof, live, kind, LossWeights(identity=2.0, pair=3.0), lightcnn)
        f = {k: identity_features(lightcnn, v) for k, v in
             {"s": spoof, "l": live, "rs": out["rec"][:, :3], "rl": out["rec"][:, 3:]}.items()}
        assert terms["ip"].item() == pytest.approx(
            2.0 * identity_preserving_loss(f["rs"], f["s"], f["rl"], f["l"]).item(), rel=1e-5)
        assert terms["pair"].item() == pytest.approx(3.0 * pair_identity_loss(f["rs"], f["rl"]).item(), rel=1e-5)
        assert total.item() == pytest.approx(sum(t.item() for t in terms.values()), rel=1e-5)
