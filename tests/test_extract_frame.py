"""Tests for data/extract_frame.py: numbering, sampling, bad videos, resumption, shards, both layouts."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from data import extract_frame as ef
from data.prep_common import list_frames, list_videos

REPO = Path(__file__).resolve().parents[1]


def level(i: int) -> int:
    """Grey level of frame i (0-based) in the test videos: the content tells the decode order."""
    return 20 + 15 * i


def write_video(path: Path, n: int = 12, size=(64, 48), fourcc: str = "MJPG", noise: int = 0) -> Path:
    """Frame i is flat grey level(i), plus uniform noise of +-noise (which makes the frames bigger)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25, size)
    assert w.isOpened(), f"OpenCV cannot write {fourcc} here"
    rng = np.random.default_rng(0)
    for i in range(n):
        frame = level(i) + rng.integers(-noise, noise + 1, (size[1], size[0], 3))
        w.write(np.clip(frame, 0, 255).astype(np.uint8))
    w.release()
    return path


def run(*argv: str):
    return ef.main(ef.get_args_parser().parse_args([str(a) for a in argv]))


@pytest.fixture
def release(tmp_path):
    """An OULU-release-shaped folder: two train videos, one dev, one test."""
    root = tmp_path / "oulu"
    write_video(root / "Train_files" / "1_1_01_1.avi")
    write_video(root / "Train_files" / "1_1_01_2.avi", n=5)
    write_video(root / "Dev_files" / "1_1_21_1.avi", n=3)
    write_video(root / "Test_files" / "1_3_36_1.avi", n=4)
    return root


class TestExtract:
    def test_layout_and_numbering(self, release, tmp_path):
        """Every split gets <split>_images/<video>/<video>_<i>_scene.jpg, i = 1.. in decode order, first frame kept."""
        out = tmp_path / "prep"
        s = run("--input", release, "--prep-root", out)
        assert s.ok and s.videos["done"] == 4 and s.counts["frames written"] == 12 + 5 + 3 + 4
        frames = list_frames(out / "train_images" / "1_1_01_1")
        assert frames == [f"1_1_01_1_{i}_scene.jpg" for i in range(1, 13)]
        for i, f in enumerate(frames):
            im = cv2.imread(str(out / "train_images" / "1_1_01_1" / f))
            assert abs(float(im.mean()) - level(i)) < 4, f
        assert list_videos(out / "dev_images") == ["1_1_21_1"]
        assert list_videos(out / "test_images") == ["1_3_36_1"]

    def test_every_and_max_frames(self, release, tmp_path):
        """--every k keeps decode positions 1, 1+k, ...; --max-frames caps the count."""
        out = tmp_path / "prep"
        assert run("--input", release, "--prep-root", out, "--splits", "train", "--every", "3", "--max-frames", "3").ok
        assert list_frames(out / "train_images" / "1_1_01_1") == [f"1_1_01_1_{i}_scene.jpg" for i in (1, 4, 7)]
        assert list_frames(out / "train_images" / "1_1_01_2") == [f"1_1_01_2_{i}_scene.jpg" for i in (1, 4)]
        im = cv2.imread(str(out / "train_images" / "1_1_01_1" / "1_1_01_1_4_scene.jpg"))
        assert abs(float(im.mean()) - level(3)) < 4

    def test_bad_videos_reported_and_run_continues(self, release, tmp_path):
        """Corrupt and empty videos are named in the summary, leave no folder and no temporary, others finish."""
        (release / "Train_files" / "1_1_02_1.avi").write_bytes(b"not a video at all" * 50)
        (release / "Train_files" / "1_1_02_2.avi").write_bytes(b"")
        data = write_video(tmp_path / "noisy.avi", n=12, noise=20).read_bytes()
        (release / "Train_files" / "1_1_02_3.avi").write_bytes(data[:len(data) // 2])  # truncated: some frames
        out = tmp_path / "prep"
        s = run("--input", release, "--prep-root", out, "--splits", "train")
        assert not s.ok and s.videos["failed"] == 2
        joined = "\n".join(s.failures)
        assert "1_1_02_1.avi: OpenCV cannot open it" in joined and "1_1_02_2.avi: empty file" in joined
        assert any("1_1_02_3.avi: decoded" in w and "announces" in w for w in s.warnings)
        names = sorted(p.name for p in (out / "train_images").iterdir())
        assert names == ["1_1_01_1", "1_1_01_2", "1_1_02_3"]  # no folder for bad videos, no .tmp- leftovers
        assert (out / "reports" / "extract_frame.json").is_file()

    def test_resume_skips_and_cleans_killed_run(self, release, tmp_path):
        """A second run does no work; a half-extracted .tmp- folder is never trusted and is cleared."""
        out = tmp_path / "prep"
        assert run("--input", release, "--prep-root", out).videos["done"] == 4
        first = out / "train_images" / "1_1_01_1" / "1_1_01_1_1_scene.jpg"
        stamp = first.stat().st_mtime_ns
        # a run killed while extracting 1_1_01_2: its temporary folder is left behind, the final one is gone
        half = out / "train_images" / "1_1_01_2.tmp-abc123"
        (out / "train_images" / "1_1_01_2").rename(half)
        (half / "1_1_01_2_5_scene.jpg").unlink()
        assert list_videos(out / "train_images") == ["1_1_01_1"]
        s = run("--input", release, "--prep-root", out)
        assert (s.videos["done"], s.videos["skipped"]) == (1, 3)
        assert first.stat().st_mtime_ns == stamp
        assert not half.exists() and len(list_frames(out / "train_images" / "1_1_01_2")) == 5
        s = run("--input", release, "--prep-root", out)
        assert (s.videos["done"], s.videos["skipped"]) == (0, 4)

    def test_overwrite_replaces(self, release, tmp_path):
        out = tmp_path / "prep"
        run("--input", release, "--prep-root", out, "--splits", "dev")
        s = run("--input", release, "--prep-root", out, "--splits", "dev", "--overwrite", "--max-frames", "1")
        assert s.videos["done"] == 1 and list_frames(out / "dev_images" / "1_1_21_1") == ["1_1_21_1_1_scene.jpg"]

    def test_shards_partition_the_work(self, release, tmp_path):
        """--shard 1/2 and 2/2 together cover every video once."""
        out = tmp_path / "prep"
        a, b = (run("--input", release, "--prep-root", out, "--shard", k) for k in ("1/2", "2/2"))
        assert a.videos["done"] + b.videos["done"] == 4 and a.videos["done"] == 2
        assert sum(len(list_videos(out / f"{s}_images")) for s in ("train", "dev", "test")) == 4

    def test_plain_folder_and_workers(self, tmp_path):
        """Any folder of videos (recursive, .avi/.mp4) goes to --folder-split; two worker processes."""
        src = tmp_path / "videos"
        write_video(src / "clipA.mp4", n=4, fourcc="mp4v")
        write_video(src / "sub" / "clipB.avi", n=6)
        out = tmp_path / "prep"
        s = run("--input", src, "--prep-root", out, "--folder-split", "dev", "--workers", "2")
        assert s.ok and s.videos["done"] == 2
        assert list_videos(out / "dev_images") == ["clipA", "clipB"]
        assert len(list_frames(out / "dev_images" / "clipA")) == 4

    def test_missing_split_folder_is_named(self, tmp_path):
        root = tmp_path / "oulu"
        write_video(root / "Train_files" / "1_1_01_1.avi", n=2)
        s = run("--input", root, "--prep-root", tmp_path / "prep")
        assert s.videos["done"] == 1 and any("Dev_files: split folder not found" in f for f in s.failures)


class TestFailurePolicy:
    """One bad video is reported and counted but does not fail the stage; --strict stops at it."""

    def test_bad_video_does_not_fail_the_stage(self, release, tmp_path):
        (release / "Train_files" / "1_1_01_3.avi").write_bytes(b"junk")
        s = run("--input", release, "--prep-root", tmp_path / "prep")
        assert s.video_failures == [f"train/1_1_01_3: {release / 'Train_files' / '1_1_01_3.avi'}: "
                                    "OpenCV cannot open it (corrupt or unknown format)"]
        assert s.exit_code() == 0 and s.exit_code(strict=True) == 1 and s.videos["done"] == 4
        report = json.loads((tmp_path / "prep" / "reports" / "extract_frame.json").read_text())
        assert report["video_failures"] == s.video_failures and report["fatal"] == []

    def test_strict_stops_at_the_first_failure(self, release, tmp_path):
        (release / "Train_files" / "1_1_01_10.avi").write_bytes(b"")  # sorts between 1_1_01_1 and 1_1_01_2
        s = run("--input", release, "--prep-root", tmp_path / "prep", "--strict")
        assert s.exit_code(strict=True) == 1 and s.videos["failed"] == 1 and s.not_run == 3
        assert list_videos(tmp_path / "prep" / "train_images") == ["1_1_01_1"]

    def test_every_video_failed_or_none_is_an_error(self, tmp_path):
        root = tmp_path / "oulu"
        (root / "Train_files").mkdir(parents=True)
        (root / "Train_files" / "1_1_01_1.avi").write_bytes(b"junk")
        assert run("--input", root, "--prep-root", tmp_path / "p", "--splits", "train").exit_code() == 1
        (root / "Train_files" / "1_1_01_1.avi").unlink()
        empty = run("--input", root, "--prep-root", tmp_path / "p", "--splits", "train")
        assert empty.exit_code() == 1 and any("no videos" in f for f in empty.fatal)

    def test_name_clash_is_a_video_failure(self, tmp_path):
        src = tmp_path / "videos"
        write_video(src / "a" / "clip.avi", n=2)
        write_video(src / "b" / "clip.avi", n=2)
        write_video(src / "other.avi", n=2)
        s = run("--input", src, "--prep-root", tmp_path / "p")
        assert len(s.video_failures) == 1 and "same video name" in s.video_failures[0] and s.exit_code() == 0


@pytest.mark.parametrize("how", [["data/extract_frame.py"], ["-m", "data.extract_frame"]])
def test_cli_both_ways(how, tmp_path):
    """The script runs as a file and as a module; a failed video is named, exit 0; 1 with --strict."""
    root = tmp_path / "oulu"
    write_video(root / "Train_files" / "1_1_01_1.avi", n=2)
    (root / "Train_files" / "1_1_01_2.avi").write_bytes(b"junk")
    assert "--strict" in subprocess.run([sys.executable, *how, "--help"], cwd=REPO, capture_output=True,
                                        text=True, check=True).stdout
    cmd = [sys.executable, *how, "--input", str(root), "--prep-root", str(tmp_path / "p"), "--splits", "train"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0 and "1_1_01_2.avi" in r.stdout and "1 of 2 videos failed" in r.stdout
    assert len(list_frames(tmp_path / "p" / "train_images" / "1_1_01_1")) == 2
    assert subprocess.run(cmd + ["--strict"], cwd=REPO, capture_output=True, text=True).returncode == 1
