"""Tests for data/bbox.py: face choice, MTCNN on real photos, the .dat files, no-face frames, resumption."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from data import bbox
from data.boxes import read_box

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
    return bbox.FaceDetector(max_side=800)


def astronaut_bgr(size: int = 200) -> np.ndarray:
    from skimage import data
    return cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (size, size), interpolation=cv2.INTER_AREA)


class TestPickFace:
    def test_most_confident_wins(self):
        dets = [{"box": [0, 0, 90, 90], "confidence": 0.90}, {"box": [5, 5, 10, 10], "confidence": 0.99}]
        assert bbox.pick_face(dets)["confidence"] == 0.99

    def test_largest_among_ties(self):
        """Faces within the tie tolerance of the best: the largest is kept, not the first."""
        dets = [{"box": [0, 0, 10, 10], "confidence": 0.9995}, {"box": [50, 50, 40, 60], "confidence": 0.9990},
                {"box": [9, 9, 99, 99], "confidence": 0.95}]
        assert bbox.pick_face(dets, 1e-3)["box"] == [50, 50, 40, 60]
        assert bbox.pick_face(dets, 1e-4)["box"] == [0, 0, 10, 10]
        assert bbox.pick_face([]) is None

    def test_detection_to_box_scales_back(self):
        d = {"box": [10, 20, 30, 40], "confidence": np.float32(0.5),
             "keypoints": {k: [i, i + 1] for i, k in enumerate(bbox.LANDMARK_ORDER)}}
        b = bbox.detection_to_box(d, scale=0.5)
        assert (b.x, b.y, b.w, b.h, b.confidence) == (20, 40, 60, 80, 0.5)
        assert b.landmarks == (0, 2, 2, 4, 4, 6, 6, 8, 8, 10)


class TestRealFaces:
    def test_astronaut_full_resolution(self, detector):
        """At full resolution MTCNN finds the astronaut where environment.md records it."""
        from skimage import data
        box = bbox.FaceDetector()([data.astronaut()])[0]
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
    return bbox.main(bbox.get_args_parser().parse_args([str(a) for a in argv]))


class TestStage:
    def test_boxes_report_and_resume(self, tmp_path, detector):
        """.dat per face frame (3 lines), none for the blank frame, which is reported; a rerun does no work."""
        root = prepared_root(tmp_path)
        s = run("--root", root, "--splits", "train", "--batch-size", "3")
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
        s = run("--root", root, "--splits", "train")
        assert (s.videos["done"], s.videos["skipped"]) == (0, 2) and not s.counts
        assert (out / "1_1_01_1_1_scene.dat").stat().st_mtime_ns == stamp

    def test_unreadable_frame_and_changed_frames(self, tmp_path, detector):
        """A corrupt frame fails its video by name and leaves it unmarked; a new frame reopens a finished video."""
        root = prepared_root(tmp_path)
        bad = root / "train_images" / "1_1_01_2" / "1_1_01_2_3_scene.jpg"
        bad.write_bytes(b"\xff\xd8 truncated jpeg")
        s = run("--root", root, "--splits", "train")
        assert s.videos["failed"] == 1 and any(str(bad) in p for p in s.problems)
        assert not (root / "state" / "bbox" / "train" / "1_1_01_2.json").exists()
        assert (root / "train_bbox" / "1_1_01_2" / "1_1_01_2_1_scene.dat").is_file()  # good frames kept
        cv2.imwrite(str(bad), astronaut_bgr())  # fixed: only that frame is detected now
        s = run("--root", root, "--splits", "train")
        assert s.videos["done"] == 1 and s.videos["skipped"] == 1 and s.counts["frames detected"] == 1
        assert (root / "state" / "bbox" / "train" / "1_1_01_2.json").is_file()

    def test_overwrite_drops_stale_box(self, tmp_path, detector):
        """--overwrite redoes a video; a frame that lost its face also loses its old .dat."""
        root = prepared_root(tmp_path)
        run("--root", root, "--splits", "train")
        frame = root / "train_images" / "1_1_01_2" / "1_1_01_2_2_scene.jpg"
        cv2.imwrite(str(frame), np.full((200, 200, 3), 30, np.uint8))
        s = run("--root", root, "--splits", "train", "--overwrite")
        assert s.videos["done"] == 2 and s.counts["frames without a face"] == 2
        assert not (root / "train_bbox" / "1_1_01_2" / "1_1_01_2_2_scene.dat").exists()

    def test_missing_split_is_named(self, tmp_path, detector):
        root = prepared_root(tmp_path)
        s = run("--root", root, "--splits", "train", "dev", "--shard", "2/2")
        assert s.videos["done"] == 1 and any("dev_images: frame folder not found" in f for f in s.failures)


@pytest.mark.parametrize("how", [["data/bbox.py"], ["-m", "data.bbox"]])
def test_help_both_ways(how):
    """--help works as a file and as a module (TensorFlow is not imported for it)."""
    r = subprocess.run([sys.executable, *how, "--help"], cwd=REPO, capture_output=True, text=True, check=True)
    assert "--detect-max-side" in r.stdout
    code = "import sys, data.bbox, data.boxes; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_torch_optimizer_steps_after_mtcnn_in_one_process():
    """Loading MTCNN (TensorFlow) and then taking an Adam step (torch imports triton there) must not crash the
    process, as it did when TensorFlow's LLVM symbols were loaded before triton's extension."""
    code = ("from data.bbox import mtcnn_class; mtcnn_class()\n"
            "import torch\n"
            "m = torch.nn.Linear(3, 1); opt = torch.optim.Adam(m.parameters())\n"
            "m(torch.randn(2, 3)).sum().backward(); opt.step(); print('stepped')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "stepped" in r.stdout, r.stderr[-2000:]
