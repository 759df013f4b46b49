"""Tests for networks/generator.py: sizes, parameter counts and names against the original, forward shapes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from misc.checkpoint import load_state_dict_strict, strip_prefix
from networks.generator import (Cls, Decoder, Decoder_s, DualVAE, Encoder, Encoder_s, LiveEncoder, ResidualBlock,
                                SpoofEncoder, SpoofTypeClassifier, prior_latent, reparameterize)
from original_keys import original_keys

# The original's class (tests/data/original_state_dict_keys.json) -> ours.
ORIGINAL_SECTIONS = {
    "Encoder": LiveEncoder,
    "Encoder_s": SpoofEncoder,
    "Decoder_s": Decoder,
    "Cls": SpoofTypeClassifier,
}


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


class TestReferenceArchitecture:
    def test_parameter_counts_at_256(self):
        """Parameter counts equal the reference's for 256x256 input and hdim 128."""
        assert n_params(LiveEncoder()) == 11_692_640
        assert n_params(SpoofEncoder()) == 13_790_048
        assert n_params(Decoder()) == 19_887_494
        assert n_params(SpoofTypeClassifier()) == 516

    def test_parameters_do_not_depend_on_size(self):
        """Smaller inputs only drop resampling layers: names and shapes stay those of the 256 model."""
        full = {k: v.shape for k, v in DualVAE(image_size=256).state_dict().items()}
        for size in (8, 64):
            assert {k: v.shape for k, v in DualVAE(image_size=size).state_dict().items()} == full

    def test_names_and_shapes_match_original(self):
        """state_dict keys, their order and shapes equal the original networks'."""
        for section, cls in ORIGINAL_SECTIONS.items():
            ours = [(k, tuple(v.shape)) for k, v in cls().state_dict().items()]
            assert ours == original_keys(section), section

    def test_original_dataparallel_state_dict_loads(self):
        """A module-prefixed state_dict with the original names (random weights) loads strictly."""
        torch.manual_seed(0)
        for section, cls in ORIGINAL_SECTIONS.items():
            sd = {f"module.{k}": torch.randn(s) for k, s in original_keys(section)}
            model = cls()
            load_state_dict_strict(model, strip_prefix(sd), section)
            for k, v in model.state_dict().items():
                assert torch.equal(v, sd[f"module.{k}"])

    def test_original_names_are_aliases(self):
        """The original class names stay importable."""
        assert (Encoder, Encoder_s, Cls, Decoder_s) == (LiveEncoder, SpoofEncoder, SpoofTypeClassifier, Decoder)

    @pytest.mark.parametrize("size,pools,upsamples", [(256, 5, 6), (128, 4, 5), (64, 3, 4), (8, 0, 1)])
    def test_resampling_stages_follow_image_size(self, size, pools, upsamples):
        """The number of 2x down/up-sampling layers follows from the input size."""
        vae = DualVAE(image_size=size)
        assert sum(isinstance(m, nn.AvgPool2d) for m in vae.netE_live.modules()) == pools
        assert sum(isinstance(m, nn.Upsample) for m in vae.netG.modules()) == upsamples
        assert vae.netE_live.main[0].stride == (2, 2)

    def test_resampling_dropped_next_to_bottleneck(self):
        """At 64x64 the encoder's last two pools and the decoder's first two upsamplings are identities."""
        vae = DualVAE(image_size=64)
        enc, dec = vae.netE_spoof.main, vae.netG.main
        assert [type(enc[i]).__name__ for i in (3, 5, 7, 9, 11)] == ["AvgPool2d"] * 3 + ["Identity"] * 2
        assert [type(dec[i]).__name__ for i in (1, 3, 5, 7, 9, 11)] == ["Identity"] * 2 + ["Upsample"] * 4
        x = torch.rand(1, 3, 64, 64)
        with torch.no_grad():
            assert enc(x).shape == (1, 512, 4, 4)

    @pytest.mark.parametrize("size", [0, 4, 48, 512])
    def test_unsupported_size_is_rejected(self, size):
        """Sizes that are not a power of two in [8, 256] raise a clear ValueError."""
        with pytest.raises(ValueError, match="power of two"):
            LiveEncoder(image_size=size)


class TestForward:
    def test_full_size_shapes(self):
        """One 256x256 pair: latents (1, 128), logits (1, 4), reconstruction (1, 6, 256, 256) in [0, 1]."""
        torch.manual_seed(0)
        vae = DualVAE()
        x = torch.rand(1, 3, 256, 256)
        with torch.no_grad():
            out = vae(x, x)
        for k in ("mu_spoof_id", "logvar_spoof_id", "z_spoof_id", "mu_live_id", "z_live_id", "mu_pattern",
                  "z_pattern"):
            assert out[k].shape == (1, 128), k
        assert out["logits"].shape == (1, 4)
        assert out["rec"].shape == (1, 6, 256, 256)
        assert 0 <= out["rec"].min() and out["rec"].max() <= 1

    @pytest.mark.parametrize("size", [8, 64])
    def test_small_sizes(self, size):
        """Small inputs give same-size 6-channel outputs."""
        torch.manual_seed(0)
        vae = DualVAE(hdim=16, image_size=size)
        x = torch.rand(2, 3, size, size)
        out = vae(x, x)
        assert out["rec"].shape == (2, 6, size, size)
        assert vae.reconstruct_mean(x, x).shape == (2, 6, size, size)

    def test_spoof_encoder_split_order(self):
        """The spoof encoder's fc output is split as (mu_id, logvar_id, mu_pattern, logvar_pattern)."""
        torch.manual_seed(0)
        enc = SpoofEncoder(hdim=4, image_size=8)
        x = torch.rand(2, 3, 8, 8)
        h = enc.fc(enc.main(x).flatten(1))
        for i, part in enumerate(enc(x)):
            assert torch.equal(part, h[:, 4 * i:4 * (i + 1)])

    def test_decoder_latent_order(self):
        """DualVAE decodes [z_pattern, z_spoof_id, z_live_id] in that order."""
        torch.manual_seed(0)
        vae = DualVAE(hdim=8, image_size=8)
        x = torch.rand(2, 3, 8, 8)
        torch.manual_seed(1)
        out = vae(x, x)
        z = torch.cat([out["z_pattern"], out["z_spoof_id"], out["z_live_id"]], dim=1)
        assert torch.allclose(vae.netG(z), out["rec"])

    def test_residual_block_skip(self):
        """The 1x1 skip exists only when the channel count changes."""
        assert ResidualBlock(8, 8).conv_expand is None
        assert isinstance(ResidualBlock(8, 16).conv_expand, nn.Conv2d)

    def test_reparameterize_statistics_and_device(self):
        """z = mu + eps * exp(logvar / 2) with unit-normal eps, on the input's device and dtype."""
        torch.manual_seed(0)
        mu = torch.full((20000, 2), 3.0, dtype=torch.float64)
        logvar = torch.full_like(mu, 2 * torch.log(torch.tensor(0.5)).item())
        z = reparameterize(mu, logvar)
        assert z.dtype == torch.float64 and z.device == mu.device
        assert abs(z.mean().item() - 3.0) < 0.02 and abs(z.std().item() - 0.5) < 0.02

    def test_prior_latent_shares_identity(self):
        """Sampling input = [pattern, identity, identity]."""
        p, i = torch.randn(3, 5), torch.randn(3, 5)
        z = prior_latent(p, i)
        assert torch.equal(z, torch.cat([p, i, i], 1))


class TestWidthCap:
    def test_max_channels_caps_every_layer_and_keeps_names(self):
        """max_channels=16 keeps every layer (a block whose width no longer changes loses only its 1x1 skip
        convolution); no weight has more than 16 channels on either side, and 512 (the default) is the
        original network."""
        narrow, full = DualVAE(hdim=8, image_size=32, max_channels=16), DualVAE(hdim=8, image_size=32)
        lost = set(full.state_dict()) - set(narrow.state_dict())
        assert lost and all(".conv_expand." in k for k in lost) and set(narrow.state_dict()) <= set(full.state_dict())
        for name, w in narrow.state_dict().items():
            if w.dim() == 4:
                assert max(w.shape[:2]) <= 16, (name, tuple(w.shape))
        assert DualVAE(hdim=8, image_size=32, max_channels=512).netG.max_channels == 512
        z = torch.randn(2, 24)
        assert narrow.netG(z).shape == (2, 6, 32, 32)
        assert narrow.netE_spoof(torch.rand(2, 3, 32, 32))[0].shape == (2, 8)

    def test_bad_width_is_rejected(self):
        with pytest.raises(ValueError, match="max_channels"):
            DualVAE(hdim=8, image_size=32, max_channels=4)
