"""Labelled image grids (misc/grids.py) and the trainers' grids built on them: DUM's input / label / mu / sigma
grid and the generator's spoof | live pair grids. A person must be able to read them: every row and column is
labelled in the picture and small tiles are enlarged to at least 96 px, pixel for pixel."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data.protocol_lists import read_protocol
from DUM import engine, zoo
from DUM.scoring import predict_maps
from DUM.datasets import DUMTrainDataset, train_list_path
from DUM.transforms import denormalise_image
from misc.grids import MIN_TILE, colour_map, labelled_grid, save_png, to_bgr, upscale_factor
from networks.engine import pair_grid, reconstruction_grid
from dum_helpers import make_crop_root

CPU = torch.device("cpu")


def _ink(region: torch.Tensor) -> int:
    """Dark pixels (text) in a (3, h, w) region of a white-background grid."""
    return int((region.min(0).values < 0.5).sum())


def _longest_runs(mask: np.ndarray) -> np.ndarray:
    """Per row of a boolean (n, m) array, the length of its longest run of True."""
    best, run = np.zeros(mask.shape[0], int), np.zeros(mask.shape[0], int)
    for j in range(mask.shape[1]):
        run = np.where(mask[:, j], run + 1, 0)
        best = np.maximum(best, run)
    return best


def _tile_origins(grid: torch.Tensor, tile: int) -> tuple:
    """(rows, cols): the first pixel row / column of every row / column of tiles. A tile is a solid block of
    non-white pixels at least ``tile`` long both ways, which no text line is."""
    ink = (grid.min(0).values < 0.999).numpy()

    def starts(is_tile: np.ndarray) -> list:
        return [i for i in range(len(is_tile)) if is_tile[i] and (i == 0 or not is_tile[i - 1])]
    return starts(_longest_runs(ink) >= tile), starts(_longest_runs(ink.T) >= tile)


def test_small_tiles_are_enlarged_pixel_for_pixel_and_labelled():
    """4 x 4 maps become 96 x 96 tiles of 24 x 24 uniform blocks holding the map's values; the row labels and
    column labels put ink left of and above the tiles, and nothing else does."""
    maps = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(0))
    grid = labelled_grid([maps], ["mu\n0 .. 1"], ["a", "b", "c"])
    assert upscale_factor(4) == 24 and upscale_factor(256) == 1 and upscale_factor(100) == 1
    rows, cols = _tile_origins(grid, MIN_TILE)
    assert len(rows) == 1 and len(cols) == 3
    y, x0 = rows[0], cols[0]
    tile = grid[0, y:y + MIN_TILE, x0:x0 + MIN_TILE]
    blocks = tile.reshape(4, 24, 4, 24)
    assert torch.allclose(blocks.amax((1, 3)), blocks.amin((1, 3)))  # uniform 24 x 24 blocks: nearest neighbour
    assert torch.allclose(blocks[:, 0, :, 0], maps[0], atol=1 / 255)  # ... holding the map's own values
    assert _ink(grid[:, y:y + MIN_TILE, :x0]) > 50  # the row label
    assert _ink(grid[:, :y, x0:x0 + MIN_TILE]) > 10  # the column label above the first tile
    bare = labelled_grid([maps], [""])
    assert _ink(bare[:, :, :_tile_origins(bare, MIN_TILE)[1][0]]) == 0  # no label, no ink


def test_rows_of_different_sizes_share_the_tile_size_and_colour_map_scales():
    """A 32 px image row and 4 px map rows are shown at one size (96); sigma's colour map spans 0..vmax."""
    grid = labelled_grid([torch.rand(2, 3, 32, 32), torch.rand(2, 1, 4, 4), colour_map(torch.rand(2, 4, 4), 1.0)],
                         ["input", "label", "sigma"])
    rows, cols = _tile_origins(grid, MIN_TILE)
    assert len(rows) == 3 and len(cols) == 2
    ramp = colour_map(torch.tensor([[[0.0, 0.5, 2.0]]]), 2.0)[0, :, 0]  # (3, 3): the three colours
    assert not torch.allclose(ramp[:, 0], ramp[:, 2]) and ramp.shape == (3, 3)
    with pytest.raises(ValueError, match="row labels"):
        labelled_grid([torch.rand(1, 4, 4)], ["a", "b"])


def test_save_png_round_trip(tmp_path):
    grid = labelled_grid([torch.rand(2, 3, 8, 8)], ["x"])
    save_png(grid, tmp_path / "g.png")
    import cv2

    back = cv2.imread(str(tmp_path / "g.png"))
    assert back.shape == to_bgr(grid).shape and np.array_equal(back, to_bgr(grid))


@pytest.fixture(scope="module")
def train_set(tmp_path_factory):
    root = make_crop_root(tmp_path_factory.mktemp("crop"), image_size=32, map_size=4, frames=2, generated=1)
    return DUMTrainDataset(root, read_protocol(train_list_path(root, "1")), image_size=32, map_size=4)


@pytest.mark.parametrize("name", ["cdcn_u", "cdcn"])
def test_depth_grid_rows_columns_and_values(train_set, name):
    """DUM's training grid at 32 px inputs and 4 x 4 maps: 96 px tiles; rows input, label, mu and (for the
    uncertainty networks only) sigma; the input tile is the sample upscaled and the mu tile the predicted map."""
    torch.manual_seed(0)
    model = zoo.get(name).build(map_size=4).eval()
    keys = engine.grid_keys(train_set, n=4)
    grid = engine.depth_grid(model, train_set, keys, CPU, title="epoch 3")
    rows, cols = _tile_origins(grid, MIN_TILE)
    assert len(cols) == 4 and len(rows) == (4 if zoo.get(name).uncertainty else 3)
    sample = train_set[keys[0]]
    shown = grid[:, rows[0]:rows[0] + MIN_TILE:3, cols[0]:cols[0] + MIN_TILE:3]  # every 3rd pixel: the 32 px input
    assert torch.allclose(shown, denormalise_image(sample["image"]), atol=1 / 255 + 1e-6)
    mu, _ = predict_maps(model, sample["image"][None], CPU)
    mu_tile = grid[0, rows[2]:rows[2] + MIN_TILE:24, cols[0]:cols[0] + MIN_TILE:24]
    assert torch.allclose(mu_tile, mu[0].clamp(0, 1), atol=1 / 255 + 1e-6)
    assert _ink(grid[:, :rows[0], :]) > 100  # title and column headers ("bona fide", "print", ...)


def test_generator_pair_grids_are_labelled_and_enlarged():
    """8 px spoof/live pairs: tiles of 96 px (factor 12); 6 pairs at 4 per row give 2 rows of 8 and 4 tiles;
    the reconstruction grid puts each reconstruction row under its input row."""
    g = torch.Generator().manual_seed(1)
    spoof, live = torch.rand(6, 3, 8, 8, generator=g), torch.rand(6, 3, 8, 8, generator=g)
    grid = pair_grid(spoof, live)
    rows, cols = _tile_origins(grid, MIN_TILE)
    assert len(rows) == 2 and len(cols) == 8
    first_live = grid[:, rows[0]:rows[0] + MIN_TILE:12, cols[1]:cols[1] + MIN_TILE:12]
    assert torch.allclose(first_live, live[0], atol=1 / 255 + 1e-6)  # spoof, live, spoof, live, ...
    assert cols[2] - cols[1] > cols[1] - cols[0]  # a wider gap between pairs than inside one
    rec = reconstruction_grid(spoof, live, 1 - spoof, 1 - live)
    rows, cols = _tile_origins(rec, MIN_TILE)
    assert len(rows) == 4
    under = rec[:, rows[1]:rows[1] + MIN_TILE:12, cols[0]:cols[0] + MIN_TILE:12]
    assert torch.allclose(under, 1 - spoof[0], atol=1 / 255 + 1e-6)  # row 2: the reconstructions of row 1
    assert _ink(rec[:, rows[1]:rows[1] + MIN_TILE, :cols[0]]) > _ink(rec[:, rows[0]:rows[0] + MIN_TILE, :cols[0]])
