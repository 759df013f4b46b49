"""Tests for data/make_train_list.py: seeded numeric-order sampling, line format, protocols, bad input."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data import make_train_list as mtl
from data import protocol_lists
from data.box_files import FaceBox, format_box

REPO = Path(__file__).resolve().parents[1]
# phones 1-2, session 1, users 01-02, all five files: 20 train videos
VIDEOS = [protocol_lists.VideoId(p, 1, u, f) for p in (1, 2) for u in (1, 2) for f in range(1, 6)]


def make_root(tmp_path: Path, frames: int = 50, short: str = "2_1_02_5", boxless=(3,)) -> Path:
    """Frames named as the extractor names them (contents are not read), with boxes except frames ``boxless``;
    video ``short`` has only 7 frames."""
    root = tmp_path / "prep"
    box_text = format_box(FaceBox(10, 10, 20, 20, 0.99, tuple(range(10))))  # plain writes: 1000 fsyncs are slow
    for v in VIDEOS:
        name = str(v)
        img, box = root / "train_images" / name, root / "train_bbox" / name
        img.mkdir(parents=True)
        box.mkdir(parents=True)
        for i in range(1, (7 if name == short else frames) + 1):
            (img / f"{name}_{i}_scene.jpg").write_bytes(b"jpeg")
            if i not in boxless:
                (box / f"{name}_{i}_scene.dat").write_text(box_text)
    return root


def make_protocols(tmp_path: Path) -> Path:
    """Protocols/Protocol_1/Train.txt and Protocol_3/Train_k.txt for the test videos, as the release labels them."""
    oulu_root = tmp_path / "oulu"
    for proto, sub in ((1, None), (3, 1), (3, 2)):
        path = protocol_lists.protocol_path(oulu_root / "Protocols", proto, "Train", sub)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(protocol_lists.format_protocol(protocol_lists.official_rows(VIDEOS, proto, "Train", sub)))
    return oulu_root


def run(*argv):
    return mtl.main(mtl.get_args_parser().parse_args([str(a) for a in argv]))


class TestSampling:
    def test_reproducible_and_numeric_order(self):
        """Same seed, same frames, whatever the listing order; frames come out sorted by number."""
        frames = [f"v_{i}_scene.jpg" for i in range(1, 101)]
        a = mtl.sample_frames(frames, 40, 0, "v")
        assert a == mtl.sample_frames(list(reversed(frames)), 40, 0, "v")
        assert len(a) == 40 and len(set(a)) == 40
        idx = [int(f.split("_")[1]) for f in a]
        assert idx == sorted(idx)
        assert a != mtl.sample_frames(frames, 40, 1, "v") and a != mtl.sample_frames(frames, 40, 0, "w")

    def test_short_video_and_all(self):
        """Fewer frames than asked (the original crashed) or n=0: every frame, in numeric order."""
        frames = ["v_10_scene.jpg", "v_9_scene.jpg", "v_1_scene.jpg"]
        assert mtl.sample_frames(frames, 40, 0, "v") == ["v_1_scene.jpg", "v_9_scene.jpg", "v_10_scene.jpg"]
        assert mtl.sample_frames(frames, 0, 0, "v") == mtl.sample_frames(frames, 3, 5, "v")


class TestStage:
    def test_protocol_1_list(self, tmp_path):
        """40 boxed frames per video (7 for the short one), columns video/frame subject live digit."""
        root, oulu_root = make_root(tmp_path), make_protocols(tmp_path)
        s = run("--prep-root", root, "--oulu-root", oulu_root)
        assert s.ok and s.videos["done"] == 20
        out = root / "train_list" / "train_list_oulu_p1.txt"
        lines = out.read_text().splitlines()
        assert len(lines) == 19 * 40 + 6 and s.counts["frames listed"] == len(lines)
        assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary left
        for line in lines:
            path, subject, live, digit = line.split(" ")
            video, frame = path.split("/")
            vid = protocol_lists.VideoId.parse(video)
            assert frame.startswith(video + "_") and frame.endswith("_scene.jpg")
            assert not frame.endswith("_3_scene.jpg")  # frame 3 has no box
            assert (subject, live, digit) == (f"{vid.user:02d}", str(int(vid.is_live)), str(vid.file))
        assert lines[0].startswith("1_1_01_1/") and lines[0].endswith(" 01 1 1")
        assert {ln.split("/")[0] for ln in lines} == {str(v) for v in VIDEOS}

    def test_sub_protocol_and_resume(self, tmp_path):
        """Protocol 3_2 lists only its Train videos (phone 2 left out); a rerun does nothing; --overwrite repeats it."""
        root, oulu_root = make_root(tmp_path), make_protocols(tmp_path)
        assert run("--prep-root", root, "--oulu-root", oulu_root, "--protocol", "3_2").ok
        out = root / "train_list" / "train_list_oulu_p3_2.txt"
        text = out.read_text()
        assert {ln.split("/")[0] for ln in text.splitlines()} == {str(v) for v in VIDEOS if v.phone == 1}
        stamp = out.stat().st_mtime_ns
        s = run("--prep-root", root, "--oulu-root", oulu_root, "--protocol", "3_2")
        assert s.videos["skipped"] == 1 and out.stat().st_mtime_ns == stamp
        assert run("--prep-root", root, "--oulu-root", oulu_root, "--protocol", "3_2", "--overwrite").ok
        assert out.read_text() == text

    def test_dev_split_list(self, tmp_path):
        """--splits dev lists the protocol's Dev videos from dev_images/ into dev_list_oulu_p1.txt."""
        root, oulu_root = make_root(tmp_path, frames=5), make_protocols(tmp_path)
        dev = [protocol_lists.VideoId(1, 2, 21, 1), protocol_lists.VideoId(1, 1, 22, 4)]
        path = protocol_lists.protocol_path(oulu_root / "Protocols", 1, "Dev")
        path.write_text(protocol_lists.format_protocol(protocol_lists.official_rows(dev, 1, "Dev")))
        for v in dev:
            (root / "dev_images" / str(v)).mkdir(parents=True)
            (root / "dev_bbox" / str(v)).mkdir(parents=True)
            for i in (1, 2):
                (root / "dev_images" / str(v) / f"{v}_{i}_scene.jpg").write_bytes(b"jpeg")
                (root / "dev_bbox" / str(v) / f"{v}_{i}_scene.dat").write_text("1 2 3 4\n")
        s = run("--prep-root", root, "--oulu-root", oulu_root, "--splits", "dev")
        assert s.ok and not (root / "train_list" / "train_list_oulu_p1.txt").exists()
        assert (root / "train_list" / "dev_list_oulu_p1.txt").read_text().splitlines() == [
            "1_1_22_4/1_1_22_4_1_scene.jpg 22 0 4", "1_1_22_4/1_1_22_4_2_scene.jpg 22 0 4",
            "1_2_21_1/1_2_21_1_1_scene.jpg 21 1 1", "1_2_21_1/1_2_21_1_2_scene.jpg 21 1 1"]
        with pytest.raises(SystemExit, match="single --splits"):
            run("--prep-root", root, "--oulu-root", oulu_root, "--splits", "train", "dev", "--out", tmp_path / "x.txt")

    def test_missing_video_blocks_the_list(self, tmp_path):
        """A protocol row without frames is named; the list is not written unless --allow-missing."""
        root, oulu_root = make_root(tmp_path), make_protocols(tmp_path)
        (root / "train_images" / "1_1_02_4").rename(tmp_path / "moved")
        s = run("--prep-root", root, "--oulu-root", oulu_root, "--out", tmp_path / "list.txt")
        assert not s.ok and any(f.startswith("train/1_1_02_4:") and "no frame folder" in f for f in s.failures)
        assert not (tmp_path / "list.txt").exists()
        s = run("--prep-root", root, "--oulu-root", oulu_root, "--out", tmp_path / "list.txt", "--allow-missing")
        lines = (tmp_path / "list.txt").read_text().splitlines()
        assert len(lines) == 18 * 40 + 6 and not any(ln.startswith("1_1_02_4/") for ln in lines)

    def test_wrong_box_format_and_no_boxes(self, tmp_path):
        """A box file in another format, or a video whose frames have no box, is named and blocks the list."""
        root, oulu_root = make_root(tmp_path), make_protocols(tmp_path)
        bad = root / "train_bbox" / "2_1_02_5" / "2_1_02_5_4_scene.dat"
        bad.write_text("10\n10\n20\n20\n")
        for p in (root / "train_bbox" / "1_1_01_3").iterdir():
            p.unlink()
        s = run("--prep-root", root, "--oulu-root", oulu_root)
        assert s.videos["failed"] == 2 and not (root / "train_list").exists()
        text = "\n".join(s.failures)
        assert str(bad) in text and "1_1_01_3: no frame has a face box" in text

    def test_bad_protocol_name_and_file(self, tmp_path):
        root, oulu_root = make_root(tmp_path, frames=2), make_protocols(tmp_path)
        with pytest.raises(SystemExit, match="six sub-protocols"):
            run("--prep-root", root, "--oulu-root", oulu_root, "--protocol", "3")
        with pytest.raises(SystemExit, match="protocol file not found"):
            run("--prep-root", root, "--oulu-root", oulu_root, "--protocol", "4_1")
        (oulu_root / "Protocols" / "Protocol_1" / "Train.txt").write_text("+1,1_1_01_1\nbroken row\n")
        with pytest.raises(SystemExit, match=r"Train.txt:2"):
            run("--prep-root", root, "--oulu-root", oulu_root)


@pytest.mark.parametrize("how", [["data/make_train_list.py"], ["-m", "data.make_train_list"]])
def test_cli_both_ways(how, tmp_path):
    """Runs as a file and as a module; exit status 1 while a protocol video is missing, 0 with --allow-missing."""
    root, oulu_root = make_root(tmp_path, frames=3), make_protocols(tmp_path)
    (root / "train_images" / "1_1_01_2").rename(tmp_path / "gone")
    cmd = [sys.executable, *how, "--prep-root", str(root), "--oulu-root", str(oulu_root)]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 1 and "1_1_01_2" in r.stdout
    assert subprocess.run(cmd + ["--allow-missing"], cwd=REPO, capture_output=True).returncode == 0


@pytest.mark.e2e
def test_four_stages_on_synthetic_dataset(tmp_path):
    """Frames -> boxes -> depth -> train list on data/synthetic's OULU-shaped release; a second pass does no work."""
    import cv2

    from data import detect_faces, depth, extract_frame
    from data.box_files import enlarge_box, read_box
    from data.prep_common import list_frames, list_videos

    synthetic = pytest.importorskip("data.synthetic")
    oulu_root = synthetic.make_dataset(tmp_path / "oulu", users=3, phones=1, sessions=1, frames=4, size=(320, 240),
                                       seed=0, show_progress=False)
    prep = tmp_path / "prep"

    def stages():
        return [extract_frame.main(extract_frame.get_args_parser().parse_args(
                    ["--input", str(oulu_root), "--prep-root", str(prep)])),
                detect_faces.main(detect_faces.get_args_parser().parse_args(["--prep-root", str(prep)])),
                depth.main(depth.get_args_parser().parse_args(["--prep-root", str(prep)])),
                run("--prep-root", prep, "--oulu-root", oulu_root, "--protocol", "2", "--frames-per-video", "3")]

    frames_s, boxes_s, depth_s, list_s = stages()
    videos = {s: sorted(p.stem for p in (oulu_root / d).glob("*.avi"))
              for s, d in (("train", "Train_files"), ("dev", "Dev_files"), ("test", "Test_files"))}
    assert frames_s.ok and frames_s.videos["done"] == sum(len(v) for v in videos.values()) == 15
    for split, names in videos.items():
        assert list_videos(prep / f"{split}_images") == names
        for v in names:
            assert list_frames(prep / f"{split}_images" / v) == [f"{v}_{i}_scene.jpg" for i in range(1, 5)]
    assert boxes_s.ok and boxes_s.counts["boxes written"] >= 0.9 * 60
    # the mesh may miss degraded attack faces (a profile photo in print), but not live ones
    assert depth_s.ok and depth_s.counts["maps written"] >= 0.6 * boxes_s.counts["boxes written"]
    live_boxed = [(s, v, f) for s, names in videos.items() for v in names if v.endswith("_1")
                  for f in list_frames(prep / f"{s}_images" / v)
                  if (prep / f"{s}_bbox" / v / f.replace(".jpg", ".dat")).is_file()]
    live_maps = [1 for s, v, f in live_boxed
                 if (prep / f"{s}_depth" / v / f.replace("_scene.jpg", "_depth1D.jpg")).is_file()]
    assert len(live_boxed) >= 10 and len(live_maps) >= 0.9 * len(live_boxed)

    # live frames: the box is on the face and the depth map is bright inside it, zero well outside it
    live = [v for v in videos["train"] if v.endswith("_1")]
    checked = 0
    for v in live:
        for f in list_frames(prep / "train_images" / v):
            m = cv2.imread(str(prep / "train_depth" / v / f.replace("_scene.jpg", "_depth1D.jpg")),
                           cv2.IMREAD_GRAYSCALE)
            if m is None:
                continue
            box = read_box(prep / "train_bbox" / v / f.replace(".jpg", ".dat"))
            assert m.shape == (240, 320)
            x0, y0, x1, y1 = enlarge_box(box, 0.5, 320, 240)
            assert m[y0:y1, x0:x1].mean() > 100
            outside = np.ones_like(m, bool)
            ex0, ey0, ex1, ey1 = enlarge_box(box, 2.5, 320, 240)
            outside[ey0:ey1, ex0:ex1] = False
            assert m[outside].max(initial=0) == 0
            checked += 1
    assert checked >= 3

    lines = (prep / "train_list" / "train_list_oulu_p2.txt").read_text().splitlines()
    train_rows = protocol_lists.read_protocol(oulu_root / "Protocols" / "Protocol_2" / "Train.txt")
    assert list_s.ok and {ln.split("/")[0] for ln in lines} == {r.video for r in train_rows}
    assert all(len(ln.split(" ")) == 4 for ln in lines)

    again = stages()  # resumption: nothing left to do
    assert [s.videos["done"] for s in again] == [0, 0, 0, 0]
    assert again[0].videos["skipped"] == again[1].videos["skipped"] == again[2].videos["skipped"] == 15
    assert again[3].videos["skipped"] == 1
