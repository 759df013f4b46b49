"""Tests for DUM/make_dataset/crop_dataset.py on a hand-made prepared root."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from data.box_files import FaceBox, enlarge_box, write_box
from data.protocol_lists import ProtocolRow, format_protocol
from DUM.make_dataset import crop_dataset
from misc.io import atomic_write_image, atomic_write_text
from cli_helpers import cli_help

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
    expected = cv2.resize(frame[y0:y1, x0:x1], (32, 32), interpolation=cv2.INTER_LINEAR).astype(float)
    got = cv2.imread(str(crop / "dev_images" / "1_1_21_1" / "1_1_21_1_1_scene.jpg")).astype(float)
    assert np.abs(got - expected).mean() < 4  # JPEG re-encoding only


def test_bilinear_by_default_area_on_request(roots):
    """Crops and maps are resized as the original did (bilinear cv2.resize); --interpolation area
    averages instead, and changing it redoes every video."""
    prep, oulu, crop = roots
    x0, y0, x1, y1 = enlarge_box(BOX, 1.3, W, H)
    frame = cv2.imread(str(prep / "dev_images" / "1_1_21_1" / "1_1_21_1_1_scene.jpg"))
    depth = cv2.imread(str(prep / "dev_depth" / "1_1_21_1" / "1_1_21_1_1_depth1D.jpg"), cv2.IMREAD_GRAYSCALE)
    grey = cv2.cvtColor(frame[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)  # JPEG subsamples colour even at quality 100
    ref = {name: (cv2.resize(grey, (32, 32), interpolation=flag).astype(float),
                  cv2.resize(depth[y0:y1, x0:x1], (8, 8), interpolation=flag).astype(float))
           for name, flag in (("linear", cv2.INTER_LINEAR), ("area", cv2.INTER_AREA))}
    for how, redone in (("linear", 0), ("area", 4)):
        summary = _run(prep, oulu, crop, "--jpeg-quality", "100", *(["--interpolation", how] if redone else []))
        assert summary.videos["done"] == 4  # the first run does all; the switch to area redoes all
        img = cv2.imread(str(crop / "dev_images" / "1_1_21_1" / "1_1_21_1_1_scene.jpg"), cv2.IMREAD_GRAYSCALE)
        img = img.astype(float)
        m = cv2.imread(str(crop / "dev_depth" / "1_1_21_1" / "1_1_21_1_1_depth1D.jpg"), cv2.IMREAD_GRAYSCALE)
        other = "area" if how == "linear" else "linear"
        assert np.abs(img - ref[how][0]).mean() < 1.0 < np.abs(img - ref[other][0]).mean()
        assert np.abs(m - ref[how][1]).mean() < np.abs(m - ref[other][1]).mean()


def test_dev_test_frames_are_not_chosen_by_label(tmp_path):
    """Dev/Test keep every boxed frame, mapped or not, live or attack; train still drops unmapped live
    frames. A Test live video without any map is cropped and scored: mean score yes, cdcn score no."""
    import torch

    from DUM.datasets import VideoFramesDataset
    from DUM.scoring import score_videos
    from DUM.models import CDCN_U

    prep, crop = tmp_path / "prep", tmp_path / "crop"
    _prep(prep, "train", "1_1_01_1", 2, no_map=(2,))
    _prep(prep, "dev", "1_1_21_1", 2, no_map=(2,))
    _prep(prep, "test", "1_3_36_1", 2, no_map=(1, 2))   # live, the face mesh failed on every frame
    _prep(prep, "test", "1_3_36_2", 2, no_map=(1,))     # attack
    oulu = tmp_path / "oulu"
    atomic_write_text(oulu / "Protocols" / "Protocol_1" / "Test.txt",
                      format_protocol([ProtocolRow(1, "1_3_36_1"), ProtocolRow(-1, "1_3_36_2")]))
    summary = _run(prep, oulu, crop)
    assert len(list((crop / "train_images" / "1_1_01_1").iterdir())) == 1
    for split, video, n_maps in (("dev", "1_1_21_1", 1), ("test", "1_3_36_1", 0), ("test", "1_3_36_2", 1)):
        assert len(list((crop / f"{split}_images" / video).iterdir())) == 2, video
        assert len(list((crop / f"{split}_depth" / video).iterdir())) == n_maps, video
    assert summary.videos["failed"] == 0 and summary.counts["bona fide without map"] == 1
    assert summary.counts["eval frame without map"] == 4

    torch.manual_seed(0)
    model = CDCN_U(map_size=4).eval()
    rows = [ProtocolRow(1, "1_3_36_1"), ProtocolRow(-1, "1_3_36_2")]
    scores = score_videos(model, VideoFramesDataset(crop, "test", rows, 32, 4), torch.device("cpu"))
    assert scores.ids == ["1_3_36_1", "1_3_36_2"] and list(scores.frames) == [2, 2]
    assert np.isfinite(scores.mean).all() and np.isnan(scores.cdcn[0]) and np.isfinite(scores.cdcn[1])
    s = scores.summary()
    assert s["cdcn_excluded_frames"] == 3 and s["cdcn_frames_without_map"] == 3
    assert s["videos_without_cdcn_score"] == ["1_3_36_1"]

    # A Dev/Test marker of the earlier rule (unmapped live frames skipped) is redone.
    marker = crop / "state" / "crop" / "dev" / "1_1_21_1.json"
    old = json.loads(marker.read_text())
    old["settings"].pop("eval_frames")
    marker.write_text(json.dumps(old))
    again = _run(prep, oulu, crop)
    assert (again.videos["done"], again.videos["skipped"]) == (1, 3)


def test_a_failed_video_does_not_fail_the_stage(roots):
    """A video without a face box in any frame and one with a broken box fail alone: the stage exits 0
    and lists them in its report; --strict stops at the first and exits 1."""
    prep, oulu, crop = roots
    _prep(prep, "test", "1_3_36_4", 2, no_box=(1, 2))
    summary = _run(prep, oulu, crop)
    reasons = "\n".join(summary.video_failures)
    assert len(summary.video_failures) == 2 and "test/1_3_36_4" in reasons and "no frame has a face box" in reasons
    assert summary.exit_code() == 0 and summary.fatal == []
    report = json.loads((crop / "reports" / "crop.json").read_text())
    assert report["video_failures"] == summary.video_failures
    strict = _run(prep, oulu, crop, "--strict", "--overwrite")
    assert strict.exit_code(strict=True) == 1 and len(strict.video_failures) == 1 and strict.not_run > 0
    r = subprocess.run([sys.executable, "-m", "DUM.make_dataset.crop_dataset", "--prep-root", str(prep),
                        "--crop-root", str(crop), "--image-size", "32", "--map-size", "8"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "2 of 6 videos failed" in r.stdout
    r = subprocess.run([sys.executable, "-m", "DUM.make_dataset.crop_dataset", "--prep-root", str(prep / "nothing"),
                        "--crop-root", str(crop)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1  # no frames at all: not a per-video failure


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
    r = cli_help(how)
    assert r.returncode == 0 and "--bbox-format" in r.stdout
