"""Tests for data/box_files.py: the three .dat conventions, format errors, and box geometry."""
from __future__ import annotations

import numpy as np
import pytest

from data.box_files import BoxFormatError, FaceBox, crop, enlarge_box, format_box, read_box, square_region, write_box

FULL = FaceBox(182, 64, 83, 107, 0.999121, (204, 100, 245, 102, 224, 126, 202, 139, 244, 140))


class TestFormats:
    def test_mtcnn_round_trip(self, tmp_path):
        """Our three-line format writes and reads back exactly (confidence to 6 decimals)."""
        p = tmp_path / "a_1_scene.dat"
        write_box(p, FULL)
        assert p.read_text().splitlines() == ["182 64 83 107", "0.999121", "204 100 245 102 224 126 202 139 244 140"]
        assert read_box(p) == FULL

    def test_original_one_line_file(self, tmp_path):
        """The original bbox.py wrote only 'x y w h'; that still reads, without confidence or landmarks."""
        p = tmp_path / "b.dat"
        p.write_text("10 20 30 40\n")
        assert read_box(p) == FaceBox(10, 20, 30, 40)

    def test_prnet(self, tmp_path):
        """PRNet's 'left right top bottom' becomes x, y, w, h."""
        p = tmp_path / "c.dat"
        p.write_text("100.4 250.6 50 210\n")
        assert read_box(p, "prnet") == FaceBox(100, 50, 151, 160)

    def test_cdcn(self, tmp_path):
        """CDCN's four lines x, y, w, h (floats allowed) read as one box."""
        p = tmp_path / "d.dat"
        p.write_text("100.0\n50.0\n80.6\n120.2\n")
        assert read_box(p, "cdcn") == FaceBox(100, 50, 81, 120)

    def test_write_needs_confidence_before_landmarks(self, tmp_path):
        with pytest.raises(ValueError, match="confidence"):
            format_box(FaceBox(1, 2, 3, 4, None, tuple(range(10))))

    @pytest.mark.parametrize("text,fmt,match", [
        ("", "mtcnn", "empty"),
        ("100\n50\n80\n120\n", "mtcnn", "line 1 must be 'x y w h'"),     # a cdcn file read as ours
        ("10.5 20 30 40\n", "mtcnn", "must be integers"),
        ("10 20 0 40\n", "mtcnn", "positive"),
        ("10 20 30 40\n1.7\n", "mtcnn", r"\[0, 1\]"),
        ("10 20 30 40\n0.9\n1 2 3\n", "mtcnn", "10 landmark"),
        ("10 20 30 40\n0.9\n" + "1 " * 10 + "\nextra\n", "mtcnn", "at most 3 lines"),
        ("100 20 30 40\n", "prnet", "right > left"),                     # an mtcnn box whose w < x
        ("1 2 3\n", "prnet", "left right top bottom"),
        ("10 20 30 40\n", "cdcn", "four lines"),
        ("a\nb\nc\nd\n", "cdcn", "must be numbers"),
    ])
    def test_wrong_format_names_file(self, tmp_path, text, fmt, match):
        """Every malformed file raises BoxFormatError with the path and the problem."""
        p = tmp_path / "bad_scene.dat"
        p.write_text(text)
        with pytest.raises(BoxFormatError, match=match) as e:
            read_box(p, fmt)
        assert str(p) in str(e.value)

    def test_missing_file_and_unknown_format(self, tmp_path):
        with pytest.raises(BoxFormatError, match="not found"):
            read_box(tmp_path / "nope.dat")
        with pytest.raises(ValueError, match="unknown bbox format"):
            read_box(tmp_path / "nope.dat", "yolo")


class TestGeometry:
    def test_enlarge_keeps_centre_and_clips(self):
        """Scale about the centre; clip to the image at the borders."""
        box = FaceBox(40, 40, 20, 40)
        assert enlarge_box(box, 1.0, 100, 100) == (40, 40, 60, 80)
        assert enlarge_box(box, 2.0, 100, 100) == (30, 20, 70, 100)
        assert enlarge_box(FaceBox(0, 0, 10, 10), 3.0, 100, 100) == (0, 0, 20, 20)

    def test_box_outside_image(self):
        """A box that misses the image (wrong frame size or format) is an error, not an empty crop."""
        with pytest.raises(ValueError, match="outside"):
            enlarge_box(FaceBox(500, 500, 10, 10), 1.0, 100, 100)

    def test_crop(self):
        img = np.arange(100 * 120, dtype=np.int32).reshape(100, 120)
        c = crop(img, FaceBox(10, 20, 30, 40), 1.0)
        assert c.shape == (40, 30) and c[0, 0] == img[20, 10]

    def test_square_region(self):
        """Side = scale x longer edge, centred on the box, not clipped."""
        assert square_region(FaceBox(40, 40, 20, 40), 1.5, 100, 100) == (20, 30, 60)
        assert square_region(FaceBox(0, 0, 20, 10), 2.0, 100, 100) == (-10, -15, 40)

    def test_scaled(self):
        """A box found on a half-size image maps back to full size, landmarks included."""
        b = FaceBox(10, 20, 30, 40, 0.9, tuple(range(10))).scaled(2.0)
        assert (b.x, b.y, b.w, b.h, b.landmarks[:3]) == (20, 40, 60, 80, (0, 2, 4))
