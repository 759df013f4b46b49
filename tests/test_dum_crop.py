"""Tests for DUM/make_dataset/crop_dataset.py on a hand-made prepared root."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from data.boxes import FaceBox, enlarge_box, write_box
from data.oulu import ProtocolRow, format_protocol
from DUM.make_dataset import crop_dataset
from misc.io import atomic_write_image, atomic_write_text

REPO = Path(__file__).resolve().parents[1]
W, H = 160, 120
BOX = FaceBox(60, 30, 40, 52)


def _frame(seed: int) -> np.ndarray:
    from skimage import data

    rgb = cv2.resize(data.astronaut(), (W, H), interpolation=cv2.INTER_AREA)
    return np.roll(rgb[:, :, ::-1], seed, axis=1).copy()


def _depth() -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    cv2.ellipse(m, (80, 56), (22, 30), 0, 0, 360, 200, -1)
    return m


def _prep(root: Path, split: str, video: str, n: int, no_box=(), no_map=()) -> None:
    for i in range(1, n + 1):
        name = f"{video}_{i}_scene"
        atomic_write_image(root / f"{split}_images" / video / f"{name}.jpg", _frame(i))
        if i not in no_box:
            write_box(root / f"{split}_bbox" / video / f"{name}.dat", BOX)
        if i not in no_map:
            atomic_write_image(root / f"{split}_depth" / video / f"{video}_{i}_depth1D.jpg", _depth())


@pytest.fixture()
def roots(tmp_path):
    prep, oulu = tmp_path / "prep", tmp_path / "oulu"
    _prep(prep, "train", "1_1_01_1", 3, no_box=(2,), no_map=(3,))
    _prep(prep, "train", "1_1_01_2", 2, no_map=(2,))
    _prep(prep, "dev", "1_1_21_1", 2)
    _prep(prep, "test", "1_3_36_1", 2)
    _prep(prep, "test", "1_3_36_2", 1)
    (prep / "test_bbox" / "1_3_36_2" / "1_3_36_2_1_scene.dat").write_text("not a box\n")
    atomic_write_text(oulu / "Protocols" / "Protocol_1" / "Dev.txt",
                      format_protocol([ProtocolRow(1, "1_1_21_1")]))
    return prep, oulu, tmp_path / "crop"


def _run(prep, oulu, crop, *extra):
    args = crop_dataset.get_args_parser().parse_args(
        ["--prep-root", str(prep), "--crop-root", str(crop), "--oulu-root", str(oulu),
         "--image-size", "32", "--map-size", "8", *extra])
    return crop_dataset.main(args)


def test_crops_maps_and_reports(roots):
    """Crops and maps are written with one box; missing boxes/maps are counted, never zero-filled."""
    prep, oulu, crop = roots
    summary = _run(prep, oulu, crop)
    live, attack = crop / "train_images" / "1_1_01_1", crop / "train_images" / "1_1_01_2"
    assert sorted(p.name for p in live.iterdir()) == ["1_1_01_1_1_scene.jpg"]
    assert sorted(p.name for p in (crop / "train_depth" / "1_1_01_1").iterdir()) == ["1_1_01_1_1_depth1D.jpg"]
    assert len(list(attack.iterdir())) == 2  # the attack frame without a map keeps its image
    assert [p.name for p in (crop / "train_depth" / "1_1_01_2").iterdir()] == ["1_1_01_2_1_depth1D.jpg"]
    img = cv2.imread(str(live / "1_1_01_1_1_scene.jpg"))
    m = cv2.imread(str(crop / "train_depth" / "1_1_01_1" / "1_1_01_1_1_depth1D.jpg"), cv2.IMREAD_GRAYSCALE)
    assert img.shape == (32, 32, 3) and m.shape == (8, 8) and m.max() > 150
    c = summary.counts
    assert (c["cropped"], c["no box"], c["bona fide without map"], c["attack without map"]) == (7, 1, 1, 1)
    assert summary.videos["done"] == 4 and summary.videos["failed"] == 1
    assert any("1_3_36_2_1_scene.dat" in p for p in summary.problems)
    assert (crop / "protocols" / "Protocol_1" / "Dev.txt").read_text() == "+1,1_1_21_1\n"
    assert (crop / "reports" / "crop.json").is_file()


def test_dev_uses_the_fixed_scale(roots):
    """Dev/Test crops are the box enlarged 1.3 times, resized."""
    prep, oulu, crop = roots
    _run(prep, oulu, crop)
    x0, y0, x1, y1 = enlarge_box(BOX, 1.3, W, H)
    frame = cv2.imread(str(prep / "dev_images" / "1_1_21_1" / "1_1_21_1_1_scene.jpg"))
    expected = cv2.resize(frame[y0:y1, x0:x1], (32, 32), interpolation=cv2.INTER_AREA).astype(float)
    got = cv2.imread(str(crop / "dev_images" / "1_1_21_1" / "1_1_21_1_1_scene.jpg")).astype(float)
    assert np.abs(got - expected).mean() < 4  # JPEG re-encoding only


def test_train_scales_are_seeded_per_frame():
    """The train scale is a stable function of seed and frame name, drawn from the given set."""
    settings = {"train_scales": [1.2, 1.3, 1.4], "eval_scale": 1.3, "seed": 0}
    draws = [crop_dataset.frame_scale("train", "1_1_01_1", f"1_1_01_1_{i}_scene.jpg", settings) for i in range(60)]
    assert set(draws) == {1.2, 1.3, 1.4}
    again = [crop_dataset.frame_scale("train", "1_1_01_1", f"1_1_01_1_{i}_scene.jpg", settings) for i in range(60)]
    assert draws == again
    assert crop_dataset.frame_scale("dev", "1_1_21_1", "1_1_21_1_1_scene.jpg", settings) == 1.3


def test_rerun_skips_and_new_sizes_redo(roots):
    """A second run skips finished videos; another --map-size redoes them."""
    prep, oulu, crop = roots
    _run(prep, oulu, crop)
    second = _run(prep, oulu, crop)
    assert second.videos["skipped"] == 4 and second.counts.get("cropped", 0) == 0
    third = _run(prep, oulu, crop, "--map-size", "4")
    assert third.videos["done"] == 4
    m = cv2.imread(str(crop / "dev_depth" / "1_1_21_1" / "1_1_21_1_1_depth1D.jpg"), cv2.IMREAD_GRAYSCALE)
    assert m.shape == (4, 4)


@pytest.mark.parametrize("how", [["DUM/make_dataset/crop_dataset.py"], ["-m", "DUM.make_dataset.crop_dataset"]])
def test_help_both_ways(how):
    """--help works as a file and as a module."""
    r = subprocess.run([sys.executable, *how, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--bbox-format" in r.stdout
