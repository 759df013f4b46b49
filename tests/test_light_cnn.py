"""Tests for networks/light_cnn.py: architecture, names, and loading a file in the official checkpoint format."""
from __future__ import annotations

import pytest
import torch

from misc.checkpoint import CheckpointError
from networks.light_cnn import LightCNN29v2, MaxFeatureMap, load_lightcnn
from original_keys import original_keys


def official_state(seed: int = 0, num_classes: int = 10) -> dict:
    """A dict laid out like LightCNN_29Layers_V2_checkpoint.pth.tar, with random weights.

    The real classifier has 80013 classes; a small one keeps the file light and is ignored anyway.
    """
    torch.manual_seed(seed)
    net = LightCNN29v2()
    sd = {f"module.{k}": v.clone() for k, v in net.state_dict().items()}
    sd["module.fc2.weight"] = torch.randn(num_classes, 256)
    return {"epoch": 16, "arch": "LightCNN-29v2", "state_dict": sd, "prec1": torch.tensor(98.7)}


@pytest.fixture(scope="module")
def official_file(tmp_path_factory):
    state = official_state()
    path = tmp_path_factory.mktemp("ip") / "LightCNN_29Layers_V2_checkpoint.pth.tar"
    # The official file predates the zip format: write the legacy serialization.
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return path, state


class TestArchitecture:
    def test_feature_shape(self):
        """A (B, 1, 128, 128) grey face gives a (B, 256) feature."""
        torch.manual_seed(0)
        assert LightCNN29v2()(torch.rand(2, 1, 128, 128)).shape == (2, 256)

    def test_names_and_shapes_match_original(self):
        """Feature-network keys and shapes equal the official checkpoint's (minus module. and fc2)."""
        ours = [(k, tuple(v.shape)) for k, v in LightCNN29v2().state_dict().items()]
        assert ours == original_keys("LightCNN_29v2")

    def test_max_feature_map(self):
        """MFM is the element-wise max of the two halves of a 2*out-channel convolution."""
        torch.manual_seed(0)
        mfm = MaxFeatureMap(3, 4, 3, 1, 1)
        x = torch.randn(2, 3, 5, 5)
        y = mfm.filter(x)
        assert torch.equal(mfm(x), torch.maximum(y[:, :4], y[:, 4:]))


class TestLoading:
    def test_loads_official_format_frozen(self, official_file):
        """The legacy-pickled official layout loads with weights_only, frozen, in eval mode, with its weights."""
        path, state = official_file
        net = load_lightcnn(path)
        assert not net.training
        assert not any(p.requires_grad for p in net.parameters())
        for k, v in net.state_dict().items():
            assert torch.equal(v, state["state_dict"][f"module.{k}"]), k
        torch.manual_seed(1)
        reference = LightCNN29v2()
        reference.load_state_dict({k[len("module."):]: v for k, v in state["state_dict"].items()
                                   if k != "module.fc2.weight"})
        x = torch.rand(1, 1, 128, 128)
        assert torch.allclose(net(x), reference(x))

    def test_missing_key_is_an_error_listing_it(self, tmp_path):
        """A file lacking a feature key is rejected and the message names the key."""
        state = official_state()
        del state["state_dict"]["module.block3.1.conv2.filter.bias"]
        path = tmp_path / "broken.pth.tar"
        torch.save(state, path)
        with pytest.raises(CheckpointError, match=r"missing keys \(1\): block3\.1\.conv2\.filter\.bias"):
            load_lightcnn(path)

    def test_unexpected_and_misshaped_keys_are_errors(self, tmp_path):
        """Extra keys (other than fc2.weight) and wrong shapes are listed too."""
        state = official_state()
        state["state_dict"]["module.extra.weight"] = torch.zeros(1)
        state["state_dict"]["module.fc.bias"] = torch.zeros(128)
        path = tmp_path / "odd.pth.tar"
        torch.save(state, path)
        with pytest.raises(CheckpointError) as e:
            load_lightcnn(path)
        assert "unexpected keys (1): extra.weight" in str(e.value)
        assert "shape mismatch fc.bias" in str(e.value)

    def test_missing_file_says_where_to_get_it(self, tmp_path):
        """A missing file names the release to download from and where to put it."""
        with pytest.raises(CheckpointError) as e:
            load_lightcnn(tmp_path / "nope.pth.tar")
        msg = str(e.value)
        assert "AlfredXiangWu/LightCNN" in msg and "ip_checkpoint/LightCNN_29Layers_V2_checkpoint.pth.tar" in msg

    def test_unsafe_pickle_is_explained(self, tmp_path):
        """A file with arbitrary pickled objects is refused with an explanation, and loads only when trusted."""
        state = official_state()
        state["optimizer_class"] = torch.optim.SGD  # a class: not allowed by weights_only
        path = tmp_path / "pickled.pth.tar"
        torch.save(state, path)
        with pytest.raises(CheckpointError, match="weights_only=True"):
            load_lightcnn(path)
        assert load_lightcnn(path, allow_pickle=True)(torch.rand(1, 1, 128, 128)).shape == (1, 256)
