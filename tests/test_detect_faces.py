"""Tests for data/detect_faces.py: face choice, MTCNN on real photos, the .dat files, no-face frames, resumption."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from data import detect_faces
from data.box_files import read_box

REPO = Path(__file__).resolve().parents[1]
FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
# Nose tips annotated by hand on the photos of ../shared/data/faces (x, y in pixels), and a rough
# face height (eyebrows to chin) that scales the tolerances.
NOSES = {"person_a_1.jpg": (975, 545, 450), "person_a_2.jpg": (420, 200, 200), "person_a_3.jpg": (750, 472, 330),
         "person_b_1.jpg": (401, 222, 250), "person_b_2.jpg": (483, 267, 250), "person_c_1.jpg": (650, 640, 650),
         "person_c_2.jpg": (213, 193, 200)}


@pytest.fixture(scope="module")
def detector():
    """One MTCNN for the module; photos are detected at up to 800 px (boxes scaled back)."""
    return detect_faces.FaceDetector(max_side=800)


def astronaut_bgr(size: int = 200) -> np.ndarray:
    from skimage import data
    return cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (size, size), interpolation=cv2.INTER_AREA)


class TestPickFace:
    def test_most_confident_wins(self):
        dets = [{"box": [0, 0, 90, 90], "confidence": 0.90}, {"box": [5, 5, 10, 10], "confidence": 0.99}]
        assert detect_faces.pick_face(dets)["confidence"] == 0.99

    def test_largest_among_ties(self):
        """Faces within the tie tolerance of the best: the largest is kept, not the first."""
        dets = [{"box": [0, 0, 10, 10], "confidence": 0.9995}, {"box": [50, 50, 40, 60], "confidence": 0.9990},
                {"box": [9, 9, 99, 99], "confidence": 0.95}]
        assert detect_faces.pick_face(dets, 1e-3)["box"] == [50, 50, 40, 60]
        assert detect_faces.pick_face(dets, 1e-4)["box"] == [0, 0, 10, 10]
        assert detect_faces.pick_face([]) is None

    def test_detection_to_box_scales_back(self):
        d = {"box": [10, 20, 30, 40], "confidence": np.float32(0.5),
             "keypoints": {k: [i, i + 1] for i, k in enumerate(detect_faces.LANDMARK_ORDER)}}
        b = detect_faces.detection_to_box(d, scale=0.5)
        assert (b.x, b.y, b.w, b.h, b.confidence) == (20, 40, 60, 80, 0.5)
        assert b.landmarks == (0, 2, 2, 4, 4, 6, 6, 8, 8, 10)


class TestRealFaces:
    def test_astronaut_full_resolution(self, detector):
        """At full resolution MTCNN finds the astronaut where environment.md records it."""
        from skimage import data
        box = detect_faces.FaceDetector()([data.astronaut()])[0]
        assert abs(box.x - 182) <= 3 and abs(box.y - 64) <= 3 and abs(box.w - 83) <= 3 and abs(box.h - 107) <= 3
        assert box.confidence > 0.99

    @pytest.mark.parametrize("name", sorted(NOSES))
    def test_photo_box_on_face(self, detector, name):
        """On every real photo the box holds the hand-marked nose near its centre and the nose landmark is on it."""
        if not FACES.is_dir():
            pytest.skip("../shared/data/faces is not present")
        img = cv2.imread(str(FACES / name))
        box = detector([cv2.cvtColor(img, cv2.COLOR_BGR2RGB)])[0]
        nx, ny, face_h = NOSES[name]
        assert box is not None and box.confidence > 0.9
        assert box.x < nx < box.x + box.w and box.y < ny < box.y + box.h
        cx, cy = box.center
        assert abs(cx - nx) < 0.15 * face_h and abs(cy - ny) < 0.3 * face_h
        assert 0.6 * face_h < box.h < 1.6 * face_h
        lnx, lny = box.landmarks[4:6]
        assert np.hypot(lnx - nx, lny - ny) < 0.1 * face_h


def iou(a, b) -> float:
    ix = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    return ix * iy / float(a.w * a.h + b.w * b.h - ix * iy)


def face_box(w: int, h: int):
    from data.box_files import FaceBox
    return FaceBox(0, 0, w, h, 0.99, (0,) * 10)


class TestMinFace:
    def test_flag_values(self):
        assert detect_faces.min_face_type("auto") == "auto" and detect_faces.min_face_type("original") == "original"
        assert detect_faces.min_face_type("80") == 80
        for bad in ("11", "big", "-3"):
            with pytest.raises(Exception, match="12 pixels|expected auto"):
                detect_faces.min_face_type(bad)

    def test_from_the_frame(self):
        """A tenth of the shorter side by default, never below MTCNN's own 20 pixels."""
        assert detect_faces.frame_min_face(1080, 1920) == 108 and detect_faces.frame_min_face(1920, 1080) == 108
        assert detect_faces.frame_min_face(240, 320) == 24 and detect_faces.frame_min_face(100, 100) == 20
        assert detect_faces.frame_min_face(1080, 1920, fraction=0.2) == 216

    def test_from_the_previous_boxes(self):
        """Half the smallest face found, a face's size being its box's longer side; None when off or empty."""
        assert detect_faces.history_min_face([face_box(300, 400), None, face_box(250, 330)]) == 165
        assert detect_faces.history_min_face([face_box(300, 400)], ratio=0.7) == 280
        assert detect_faces.history_min_face([None, None]) is None
        assert detect_faces.history_min_face([face_box(300, 400)], ratio=0) is None

    def test_rule_over_a_video(self):
        rule = detect_faces.MinFaceRule("auto")
        assert rule.next(1080, 1920) == 108  # no history yet: the floor
        rule.update([face_box(340, 448)] * 3)
        assert rule.next(1080, 1920) == 224 and rule.floor(1080, 1920) == 108
        rule.update([face_box(100, 120)])  # a face far below the floor never lowers it
        assert rule.next(1080, 1920) == 108
        rule.update([None])  # a batch without a face forgets the history
        assert rule.history is None
        fixed = detect_faces.MinFaceRule(150, history_ratio=0)
        fixed.update([face_box(400, 400)])
        assert fixed.next(1080, 1920) == 150
        with pytest.raises(ValueError):
            detect_faces.MinFaceRule("original")

    def test_pyramid_keeps_the_originals_levels(self):
        """The levels are the original pyramid's (12/20 x 0.709^k), minus those of smaller faces."""
        full = detect_faces.pyramid_scales(1080, 20)
        assert full[0] == pytest.approx(0.6) and len(full) == 12 and 1080 * full[-1] >= 12 > 1080 * full[-1] * 0.709
        trimmed = detect_faces.pyramid_scales(1080, 108)
        assert trimmed == full[-len(trimmed):] and trimmed[0] <= 12 / 108 < trimmed[0] / 0.709
        # the same levels, as scales of a frame decoded at half size
        assert detect_faces.pyramid_scales(540, 108, scale=0.5) == pytest.approx([s / 0.5 for s in trimmed])
        assert detect_faces.pyramid_scales(1080, 12)[0] == 1.0  # below 20 px the pyramid starts at 12/min_face
        assert detect_faces.pyramid_scales(11, 20) == []  # too small for the P-net's window

    def test_decode_reduction(self):
        """The largest 1/2^k decode that keeps the smallest face searched at 48 px (0: full size)."""
        assert [detect_faces.decode_reduction(f) for f in (20, 95, 96, 108, 192, 400, 2000)] == [1, 1, 2, 2, 4, 8, 8]
        assert detect_faces.decode_reduction(400, face_px=0) == 1

    def test_batches_start_with_one_frame(self):
        names = [f"f{i}" for i in range(7)]
        assert detect_faces.video_batches(names, 3, first=1) == [["f0"], ["f1", "f2", "f3"], ["f4", "f5", "f6"]]
        assert detect_faces.video_batches(names, 4, first=4) == [["f0", "f1", "f2", "f3"], ["f4", "f5", "f6"]]
        assert detect_faces.video_batches([], 4, first=1) == []


def test_workers_share_the_cores(monkeypatch):
    """--workers N gives each detector process's TensorFlow its share of the cores (an explicit setting wins)."""
    from misc.workers import usable_cores
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    monkeypatch.setenv("TF_NUM_INTEROP_THREADS", "3")
    detect_faces.share_cores_with_tensorflow(2)
    import os
    assert os.environ["TF_NUM_INTRAOP_THREADS"] == str(max(1, usable_cores() // 2))
    assert os.environ["TF_NUM_INTEROP_THREADS"] == "3"


class RecordingDetector:
    """Stands in for the network in detect_batch: finds a face only when searching down to ``finds_below``."""

    def __init__(self, finds_below: int):
        self.finds_below, self.calls = finds_below, []

    def detect_frames(self, images, min_face, scale):
        self.calls.append((len(images), min_face, scale))
        return [face_box(90, 100) if min_face <= self.finds_below and im.mean() > 0 else None for im in images]


class TestDetectBatch:
    def test_frames_without_a_face_are_searched_again_at_the_floor(self):
        rule = detect_faces.MinFaceRule("auto")
        rule.update([face_box(300, 400)])  # history 200 on a 1080p video whose floor is 108
        images = [np.ones((540, 960, 3), np.uint8), np.zeros((540, 960, 3), np.uint8), np.ones((540, 960, 3), np.uint8)]
        det = RecordingDetector(finds_below=150)
        boxes = detect_faces.detect_batch(det, images, rule, (1080, 1920), reduction=2)
        assert det.calls == [(3, 200, 0.5), (3, 108, 0.5)]  # all three missed at 200, all retried at 108
        assert [b is not None for b in boxes] == [True, False, True]
        det = RecordingDetector(finds_below=1000)
        detect_faces.detect_batch(det, images, rule, (1080, 1920), reduction=2)
        assert det.calls == [(3, 200, 0.5), (1, 108, 0.5)]  # only the blank frame is searched again

    def test_no_retry_at_the_floor(self):
        det = RecordingDetector(finds_below=0)
        image = np.ones((100, 100, 3), np.uint8)
        boxes = detect_faces.detect_batch(det, [image], detect_faces.MinFaceRule(40), (100, 100), 1)
        assert boxes == [None] and det.calls == [(1, 40, 1.0)]


class TestFastPath:
    def test_same_boxes_as_the_package_call(self):
        """With the package's 20 px minimum and no reduction, the graph pipeline gives the package's box."""
        from skimage import data
        img = data.astronaut()
        ref = detect_faces.FaceDetector()([img])[0]
        fast = detect_faces.FaceDetector(min_face=20, face_px=0)([img])[0]
        assert iou(ref, fast) > 0.99 and abs(ref.confidence - fast.confidence) < 1e-3
        assert np.abs(np.subtract(ref.landmarks, fast.landmarks)).max() <= 2

    def test_auto_on_a_1080p_frame(self):
        """The defaults on a face photo padded to 1920x1080 (decoded at 1/2, pyramid from 108 px)
        agree with the full-resolution package call."""
        from skimage import data
        face = cv2.resize(data.astronaut(), (1080, 1080), interpolation=cv2.INTER_CUBIC)
        frame = cv2.copyMakeBorder(face, 0, 0, 420, 420, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        ref = detect_faces.FaceDetector()([frame])[0]
        fast = detect_faces.FaceDetector(min_face="auto")([frame])[0]
        assert ref is not None and fast is not None and iou(ref, fast) > 0.9
        assert detect_faces.FaceDetector(min_face="auto").detect_all([frame])[0][0] == fast


def prepared_root(tmp_path: Path) -> Path:
    """train_images/ with one video of 3 face frames + 1 blank frame, and one of 2 face frames."""
    root = tmp_path / "prep"
    face = astronaut_bgr()
    for video, n in (("1_1_01_1", 3), ("1_1_01_2", 2)):
        d = root / "train_images" / video
        d.mkdir(parents=True)
        for i in range(1, n + 1):
            cv2.imwrite(str(d / f"{video}_{i}_scene.jpg"), np.roll(face, 4 * i, axis=1))
    cv2.imwrite(str(root / "train_images" / "1_1_01_1" / "1_1_01_1_4_scene.jpg"), np.full((200, 200, 3), 90, np.uint8))
    return root


def run(*argv):
    return detect_faces.main(detect_faces.get_args_parser().parse_args([str(a) for a in argv]))


class TestStage:
    def test_boxes_report_and_resume(self, tmp_path, detector):
        """.dat per face frame (3 lines), none for the blank frame, which is reported; a rerun does no work."""
        root = prepared_root(tmp_path)
        s = run("--prep-root", root, "--splits", "train", "--batch-size", "3")
        assert s.ok and s.videos["done"] == 2
        assert s.counts["boxes written"] == 5 and s.counts["frames without a face"] == 1
        out = root / "train_bbox" / "1_1_01_1"
        assert sorted(p.name for p in out.iterdir()) == [f"1_1_01_1_{i}_scene.dat" for i in (1, 2, 3)]
        lines = (out / "1_1_01_1_1_scene.dat").read_text().splitlines()
        assert len(lines) == 3 and len(lines[0].split()) == 4 and len(lines[2].split()) == 10
        assert all(v.lstrip("-").isdigit() for v in lines[0].split() + lines[2].split())
        box = read_box(out / "1_1_01_1_1_scene.dat")
        assert 0.9 < box.confidence <= 1.0 and 55 < box.x + box.w / 2 < 110 and 20 < box.y + box.h / 2 < 65
        report = (root / "reports" / "bbox_no_face_train.txt").read_text().splitlines()
        assert report[1:] == ["1_1_01_1/1_1_01_1_4_scene.jpg"]
        marker = json.loads((root / "state" / "bbox" / "train" / "1_1_01_1.json").read_text())
        assert marker["no_face"] == ["1_1_01_1_4_scene.jpg"] and len(marker["frames"]) == 4
        stamp = (out / "1_1_01_1_1_scene.dat").stat().st_mtime_ns
        s = run("--prep-root", root, "--splits", "train")
        assert (s.videos["done"], s.videos["skipped"]) == (0, 2) and not s.counts
        assert (out / "1_1_01_1_1_scene.dat").stat().st_mtime_ns == stamp

    def test_unreadable_frame_and_changed_frames(self, tmp_path, detector):
        """A corrupt frame fails its video by name and leaves it unmarked; a new frame reopens a finished video."""
        root = prepared_root(tmp_path)
        bad = root / "train_images" / "1_1_01_2" / "1_1_01_2_3_scene.jpg"
        bad.write_bytes(b"\xff\xd8 truncated jpeg")
        s = run("--prep-root", root, "--splits", "train")
        assert s.videos["failed"] == 1 and any(str(bad) in p for p in s.problems)
        assert not (root / "state" / "bbox" / "train" / "1_1_01_2.json").exists()
        assert (root / "train_bbox" / "1_1_01_2" / "1_1_01_2_1_scene.dat").is_file()  # good frames kept
        cv2.imwrite(str(bad), astronaut_bgr())  # fixed: only that frame is detected now
        s = run("--prep-root", root, "--splits", "train")
        assert s.videos["done"] == 1 and s.videos["skipped"] == 1 and s.counts["frames detected"] == 1
        assert (root / "state" / "bbox" / "train" / "1_1_01_2.json").is_file()

    def test_overwrite_drops_stale_box(self, tmp_path, detector):
        """--overwrite redoes a video; a frame that lost its face also loses its old .dat."""
        root = prepared_root(tmp_path)
        run("--prep-root", root, "--splits", "train")
        frame = root / "train_images" / "1_1_01_2" / "1_1_01_2_2_scene.jpg"
        cv2.imwrite(str(frame), np.full((200, 200, 3), 30, np.uint8))
        s = run("--prep-root", root, "--splits", "train", "--overwrite")
        assert s.videos["done"] == 2 and s.counts["frames without a face"] == 2
        assert not (root / "train_bbox" / "1_1_01_2" / "1_1_01_2_2_scene.dat").exists()

    def test_missing_split_is_named(self, tmp_path, detector):
        root = prepared_root(tmp_path)
        s = run("--prep-root", root, "--splits", "train", "dev", "--shard", "2/2")
        assert s.videos["done"] == 1 and any("dev_images: frame folder not found" in f for f in s.failures)


@pytest.mark.parametrize("how", [["data/detect_faces.py"], ["-m", "data.detect_faces"]])
def test_help_both_ways(how):
    """--help works as a file and as a module (TensorFlow is not imported for it)."""
    r = subprocess.run([sys.executable, *how, "--help"], cwd=REPO, capture_output=True, text=True, check=True)
    assert "--detect-max-side" in r.stdout
    code = "import sys, data.detect_faces, data.box_files; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_torch_optimizer_steps_after_mtcnn_in_one_process():
    """Loading MTCNN (TensorFlow) and then taking an Adam step (torch imports triton there) must not crash the
    process, as it did when TensorFlow's LLVM symbols were loaded before triton's extension."""
    code = ("from data.detect_faces import mtcnn_class; mtcnn_class()\n"
            "import torch\n"
            "m = torch.nn.Linear(3, 1); opt = torch.optim.Adam(m.parameters())\n"
            "m(torch.randn(2, 3)).sum().backward(); opt.step(); print('stepped')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "stepped" in r.stdout, r.stderr[-2000:]
