"""Tests for DUM/datasets.py (crop-root datasets, real/generated batch sampler) and DUM/transforms.py."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from data.protocol_lists import read_protocol
from DUM.datasets import DUMTrainDataset, RealGeneratedBatchSampler, VideoFramesDataset, pick_evenly, train_list_path
from DUM.transforms import ERASE_FILL_BGR, TrainAugment, normalise_image
from dum_helpers import make_crop_root


@pytest.fixture(scope="module")
def crop_root(tmp_path_factory):
    return make_crop_root(tmp_path_factory.mktemp("crop"), image_size=32, map_size=8, frames=3, generated=2)


class TestSampler:
    def test_batch_composition(self):
        """48 real + 16 generated per batch of 64; 1200 real rows -> 25 batches, each real row once."""
        gen = np.array([False] * 1200 + [True] * 700)
        s = RealGeneratedBatchSampler(gen, 64, 0.75, seed=0)
        batches = list(s)
        assert len(batches) == len(s) == 25
        real = [i for b in batches for i, _ in b if not gen[i]]
        assert all(sum(gen[i] for i, _ in b) == 16 for b in batches)
        assert sorted(real) == list(range(1200))

    def test_odd_real_count_keeps_every_row(self):
        """An odd number of real rows is fully used (the original dropped the last one)."""
        gen = np.array([False] * 7 + [True] * 3)
        s = RealGeneratedBatchSampler(gen, 4, 0.75, seed=1)
        real = [i for b in s for i, _ in b if i < 7]
        assert set(real) == set(range(7)) and len(s) == 3

    def test_generated_rows_anywhere_in_the_list(self):
        """Rows are classified by flag, not by position: interleaved generated rows work."""
        gen = np.array([False, True, False, True, False, False])
        for batch in RealGeneratedBatchSampler(gen, 4, 0.5, seed=2):
            assert [gen[i] for i, _ in batch] == [False, False, True, True]

    def test_no_generated_rows_means_all_real(self):
        """Without generated rows every sample of a batch is real."""
        s = RealGeneratedBatchSampler(np.zeros(10, bool), 4, 0.75, seed=0)
        assert s.n_real == 4 and s.n_gen == 0 and len(s) == 3

    def test_reproducible_and_epoch_dependent(self):
        """Same seed and epoch -> same batches and sample seeds; another epoch -> another order."""
        gen = np.array([False] * 20 + [True] * 10)
        a, b = RealGeneratedBatchSampler(gen, 8, 0.75, seed=5), RealGeneratedBatchSampler(gen, 8, 0.75, seed=5)
        a.set_epoch(3)
        b.set_epoch(3)
        assert list(a) == list(b)
        b.set_epoch(4)
        assert list(a) != list(b)

    def test_shards_do_not_overlap(self):
        """Two ranks see disjoint real rows in an epoch and together cover all of them."""
        gen = np.array([False] * 24 + [True] * 8)
        seen = []
        for rank in range(2):
            s = RealGeneratedBatchSampler(gen, 8, 0.75, seed=3, rank=rank, world_size=2)
            s.set_epoch(1)
            seen.append([i for batch in s for i, _ in batch if not gen[i]])
        assert not set(seen[0]) & set(seen[1])
        assert sorted(seen[0] + seen[1]) == list(range(24))


class TestTrainDataset:
    def test_labels_and_flags(self, crop_root):
        """Bona fide maps are depth / 255, attacks all zero; generated rows flagged."""
        rows = read_protocol(train_list_path(crop_root, "1"))
        ds = DUMTrainDataset(crop_root, rows, image_size=32, map_size=8)
        seen = Counter()
        for i, v in enumerate(ds.videos):
            item = ds[(i, 123)]
            assert item["image"].shape == (3, 32, 32) and item["map"].shape == (8, 8)
            if v.live:
                assert 0.5 < item["map"].max() <= 1.0
            else:
                assert item["map"].abs().max() == 0
            seen[(item["live"], item["generated"])] += 1
        assert seen == {(True, False): 4, (False, False): 8, (True, True): 2, (False, True): 2}

    def test_seed_determines_sample(self, crop_root):
        """The same key gives the same augmented sample; another seed another one."""
        rows = read_protocol(train_list_path(crop_root, "1"))
        ds = DUMTrainDataset(crop_root, rows, 32, 8, augment=TrainAugment())
        a, b, c = ds[(0, 7)], ds[(0, 7)], ds[(0, 8)]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["map"], b["map"])
        assert not torch.equal(a["image"], c["image"])

    def test_preload_gives_identical_samples(self, crop_root):
        """Preloaded frames produce exactly the samples read from disk."""
        rows = read_protocol(train_list_path(crop_root, "1"))
        disk = DUMTrainDataset(crop_root, rows, 32, 8, augment=TrainAugment())
        mem = DUMTrainDataset(crop_root, rows, 32, 8, augment=TrainAugment(), preload_mb=16)
        assert mem.preloaded and not disk.preloaded
        for key in [(0, 1), (5, 2), (len(rows) - 1, 3)]:
            assert torch.equal(disk[key]["image"], mem[key]["image"])
            assert torch.equal(disk[key]["map"], mem[key]["map"])

    def test_live_frame_without_map_is_never_used(self, crop_root, tmp_path, caplog):
        """A bona fide frame that lost its map is reported and not drawn (never a zero label)."""
        import shutil

        root = tmp_path / "crop"
        shutil.copytree(crop_root, root)
        video = "1_1_01_1"
        for i in (1, 2):
            (root / "train_depth" / video / f"{video}_{i}_depth1D.jpg").unlink()
        rows = read_protocol(root / "protocols" / "Protocol_1" / "Train.txt")
        with caplog.at_level("WARNING"):
            ds = DUMTrainDataset(root, rows, 32, 8)
        assert "2 bona fide frame(s) without a depth map" in caplog.text
        v = next(i for i, x in enumerate(ds.videos) if x.row.video == video)
        assert [f.index for f in ds.videos[v].frames] == [3]
        assert all(ds[(v, s)]["map"].max() > 0.5 for s in range(5))

    def test_video_without_frames_is_reported(self, crop_root, tmp_path, caplog):
        """A listed video with no folder is left out with a warning naming it."""
        rows = read_protocol(crop_root / "protocols" / "Protocol_1" / "Train.txt")
        from data.protocol_lists import ProtocolRow

        with caplog.at_level("WARNING"):
            ds = DUMTrainDataset(crop_root, rows + [ProtocolRow(1, "6_2_20_1")], 32, 8)
        assert "6_2_20_1: no frames" in caplog.text and len(ds) == len(rows)


class TestEvalDataset:
    def test_frames_per_video(self, crop_root):
        """All frames or N evenly spaced ones per video."""
        rows = read_protocol(crop_root / "protocols" / "Protocol_1" / "Dev.txt")
        assert len(VideoFramesDataset(crop_root, "dev", rows, 32, 8, 0)) == 3 * len(rows)
        assert len(VideoFramesDataset(crop_root, "dev", rows, 32, 8, 2)) == 2 * len(rows)
        item = VideoFramesDataset(crop_root, "dev", rows, 32, 8)[0]
        assert item["has_depth"] and item["depth"].max() > 100  # 0-255 scale for the cdcn score

    def test_pick_evenly(self):
        """Evenly spaced indices include both ends."""
        assert pick_evenly(10, 3) == [0, 4, 9]
        assert pick_evenly(4, 0) == [0, 1, 2, 3] and pick_evenly(2, 5) == [0, 1]


class TestAugment:
    def test_flip_moves_image_and_map_together(self):
        """When the flip fires, the map is mirrored exactly as the image."""
        aug = TrainAugment(brightness=0, gamma_range=(1.0, 1.0), erase_p=0.0, cutout_p=0.0, flip_p=1.0)
        image = np.zeros((16, 16, 3), np.uint8)
        image[:, :4] = 200
        depth = np.zeros((4, 4), np.float32)
        depth[:, 0] = 1.0
        out_img, out_map = aug(image, depth, np.random.default_rng(0))
        assert out_img[:, -4:].min() == 200 and out_img[:, :-4].max() == 0
        assert out_map[:, -1].min() == 1.0 and out_map[:, :-1].max() == 0

    def test_erasing_fills_with_mean_colour_on_the_0_255_scale(self):
        """Erased pixels get the mean colour x 255 (not the original's near-black [0, 1] values)."""
        aug = TrainAugment(brightness=0, gamma_range=(1.0, 1.0), erase_p=1.0, flip_p=0.0, cutout_p=0.0)
        image = np.zeros((64, 64, 3), np.uint8)
        out, _ = aug(image, np.zeros((8, 8), np.float32), np.random.default_rng(3))
        erased = out[out.sum(axis=2) > 0]
        assert len(erased) > 0
        assert np.allclose(erased, np.array(ERASE_FILL_BGR).astype(np.uint8), atol=1)

    def test_normalisation(self):
        """BGR uint8 -> RGB (x - 127.5) / 128."""
        image = np.zeros((2, 2, 3), np.uint8)
        image[..., 2] = 255  # red in BGR
        t = normalise_image(image)
        assert t.shape == (3, 2, 2)
        assert torch.allclose(t[0], torch.full((2, 2), 127.5 / 128)) and torch.allclose(t[2], torch.full((2, 2), -127.5 / 128))


def test_released_generated_folder_names_load(tmp_path):
    """A crop root laid out as the released data (generated folders p1_0_0_k / p1_0_1_k, rows of the
    released Train_g.txt) trains: the rows are generated, live by their label, the frames found."""
    root = make_crop_root(tmp_path / "crop", image_size=32, map_size=8, frames=2, generated=2)
    for kind in ("images", "depth"):
        for folder in sorted((root / f"train_{kind}").glob("p1_[01]_*")):
            live, k = folder.name.split("_")[1:]
            folder.rename(folder.with_name(f"p1_0_{live}_{k}"))
    real = (root / "protocols" / "Protocol_1" / "Train.txt").read_text()
    listed = root / "protocols" / "Protocol_1" / "Train_g.txt"
    listed.write_text(real + "1,p1_0_1_0\n0,p1_0_0_0\n1,p1_0_1_1\n0,p1_0_0_1\n")
    rows = read_protocol(listed)
    ds = DUMTrainDataset(root, rows, 32, 8)
    assert len(ds) == len(rows) and ds.problems == []
    assert ds.generated.sum() == 4 and [v.live for v in ds.videos if v.generated] == [True, False, True, False]
    item = ds[(len(rows) - 4, 0)]  # p1_0_1_0: a live generated face with its depth label
    assert item["generated"] and item["live"] and float(item["map"].max()) > 0.5
