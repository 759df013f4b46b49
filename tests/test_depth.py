"""Tests for data/depth.py: mesh topology, the z-buffer, the mesh/mask backends on real faces, and the stage."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from data import depth
from data.box_files import FaceBox, write_box

REPO = Path(__file__).resolve().parents[1]
FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
# Hand-marked nose tips (x, y) and rough face heights (eyebrows to chin) of ../shared/data/faces.
NOSES = {"person_a_1.jpg": (975, 545, 450), "person_a_2.jpg": (420, 200, 200), "person_a_3.jpg": (750, 472, 330),
         "person_b_1.jpg": (401, 222, 250), "person_b_2.jpg": (483, 267, 250), "person_c_1.jpg": (650, 640, 650),
         "person_c_2.jpg": (213, 193, 200)}
ASTRONAUT_BOX = FaceBox(182, 64, 83, 107)  # MTCNN's box on skimage's astronaut (environment.md)
ASTRONAUT_NOSE = (224, 126)


@pytest.fixture(scope="module")
def mesh():
    b = depth.make_depth_backend("mesh")
    yield b
    b.close()


def astronaut(scale: float = 1.0) -> np.ndarray:
    from skimage import data
    img = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    return img if scale == 1.0 else cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def box_around_nose(nx, ny, face_h) -> FaceBox:
    """A rough face box from a hand-marked nose: not MTCNN's, so the depth test does not lean on it."""
    return FaceBox(int(nx - 0.42 * face_h), int(ny - 0.55 * face_h), int(0.84 * face_h), int(1.0 * face_h))


def brightest(m: np.ndarray):
    """(x, y) of the brightest point after a light blur (a single JPEG pixel cannot win)."""
    y, x = np.unravel_index(np.argmax(cv2.GaussianBlur(m, (0, 0), 3)), m.shape)
    return x, y


class TestTopology:
    def test_face_mesh_triangles_and_holes(self):
        """854 triangles (3-cliques of the tessellation) and three openings: the mouth (20) and two eyes (16)."""
        from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION
        assert len(depth.triangles_from_edges(FACEMESH_TESSELATION)) == 854
        tris, holes = depth.mesh_topology()
        assert sorted(len(h) for h in holes) == [16, 16, 20]
        assert len(tris) == 854 + 52 and tris.max() == depth.MESH_POINTS + 2

    def test_boundary_loops_of_an_annulus(self):
        """A square ring of 8 triangles has two boundary loops of 4; the outer one is listed first by length tie."""
        outer, inner = [0, 1, 2, 3], [4, 5, 6, 7]
        tris = []
        for i in range(4):
            j = (i + 1) % 4
            tris += [(outer[i], outer[j], inner[i]), (outer[j], inner[j], inner[i])]
        edges = {(min(a, b), max(a, b)) for t in tris for a, b in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2]))}
        got = depth.triangles_from_edges(edges)
        assert len(got) == 8
        loops = depth.boundary_loops(got)
        assert sorted(sorted(lp) for lp in loops) == [outer, inner]


class TestRender:
    def test_plane_coefficients(self):
        """The plane through three corners is recovered; an edge-on triangle gets its mean depth."""
        xy = np.array([[[0, 0], [4, 0], [0, 3]], [[0, 0], [1, 1], [2, 2]]], float)
        d = np.array([[5, 13, 2], [1, 2, 6]], float)  # first: 5 + 2x - 1y
        a, b, c = depth.plane_coefficients(xy, d)
        assert np.allclose([a[0], b[0], c[0]], [2, -1, 5]) and (a[1], b[1], c[1]) == (0, 0, 3)

    def test_pyramid(self):
        """A square pyramid seen from above: apex 255, linear fall-off to the rim, background exactly 0."""
        v = np.array([[16, 16, 0], [48, 16, 0], [48, 48, 0], [16, 48, 0], [32, 32, 10]], float)
        tris = np.array([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]])
        m = depth.render_depth(v, tris, 64, min_level=1)
        assert m[31:33, 31:33].min() >= 245 and m[:15].max() == 0 and m[:, 50:].max() == 0
        row = m[32, 17:32].astype(int)
        assert (np.diff(row) > 0).all() and row[0] < 40
        steps = np.diff(row)
        assert steps.max() - steps.min() <= 2  # linear in x

    def test_near_triangle_hides_far_one(self):
        """Whatever the drawing order, the overlap shows the nearer triangle (z-buffer)."""
        v = np.array([[0, 0, 1], [40, 0, 1], [0, 40, 1], [10, 10, 5], [60, 10, 5], [10, 60, 5]], float)
        for tris in (np.array([[0, 1, 2], [3, 4, 5]]), np.array([[3, 4, 5], [0, 1, 2]])):
            m = depth.render_depth(v, tris, 64, min_level=1)
            assert m[15, 15] == 255 and m[5, 5] == 1

    def test_square_crop_pads_outside(self):
        """The square may leave the image: the part outside is black, the part inside is the image."""
        img = np.full((20, 30, 3), 7, np.uint8)
        c = depth.square_crop(img, -10, 0, 20, 20)
        assert c.shape == (20, 20, 3) and c[:, :10].max() == 0 and c[:, 10:].min() == 7
        assert (depth.square_crop(img, 5, 0, 20, 20) == 7).all()

    def test_paste_region_clips(self):
        m = np.full((8, 8), 200, np.uint8)
        full = depth.paste_region(m, -4, 10, 16, 20, 20)
        assert full.shape == (20, 20) and full[10:, :12].min() == 200
        assert full[:10].max() == 0 and full[:, 12:].max() == 0


class TestBackends:
    @pytest.mark.parametrize("name", sorted(NOSES))
    def test_mesh_on_real_photo(self, mesh, name):
        """Full-size map: bright on the face, brightest at the marked nose, smooth, exactly 0 away from the face."""
        if not FACES.is_dir():
            pytest.skip("../shared/data/faces is not present")
        img = cv2.imread(str(FACES / name))
        nx, ny, face_h = NOSES[name]
        m = mesh(img, box_around_nose(nx, ny, face_h))
        assert m is not None and m.shape == img.shape[:2] and m.dtype == np.uint8
        bx, by = brightest(m)
        assert np.hypot(bx - nx, by - ny) < 0.12 * face_h
        assert m[ny, nx] > 200
        for dx in (-0.25, 0.25):  # cheeks: on the face, dimmer than the nose
            assert 0 < m[ny, int(nx + dx * face_h)] < m[ny, nx]
        ys, xs = np.nonzero(m)
        assert (np.abs(xs - nx) < 0.9 * face_h).all() and (np.abs(ys - ny) < 1.1 * face_h).all()
        inner = m[ny - face_h // 4: ny + face_h // 4, nx - face_h // 4: nx + face_h // 4].astype(int)
        assert np.abs(np.diff(inner, axis=1)).mean() < 3  # a smooth height field, not noise

    def test_mesh_without_box_on_face_crop(self, mesh):
        """box=None (the generator's 256x256 faces): the whole image is the face region."""
        face = cv2.resize(astronaut()[40:240, 124:324], (256, 256))
        m = mesh(face, None)
        nose = ((ASTRONAUT_NOSE[0] - 124) * 256 / 200, (ASTRONAUT_NOSE[1] - 40) * 256 / 200)
        assert m.shape == (256, 256) and 0.2 < (m > 0).mean() < 0.9
        assert np.hypot(*(np.subtract(brightest(m), nose))) < 20

    def test_no_face(self, mesh):
        """A frame without a face gives None, not an empty map."""
        assert mesh(np.full((200, 200, 3), 128, np.uint8), FaceBox(50, 50, 100, 100)) is None

    def test_mask(self):
        """Flat ellipse inscribed in the box; with box=None inscribed in the whole image."""
        b = depth.make_depth_backend("mask", value=200)
        m = b(np.zeros((100, 160, 3), np.uint8), FaceBox(40, 20, 40, 60))
        assert m.shape == (100, 160) and m[50, 60] == 200 and m[:18].max() == 0 and m[:, 82:].max() == 0
        assert m[21, 41] == 0  # box corner: outside the ellipse
        m = b(np.zeros((64, 128, 3), np.uint8), None)
        assert m[32, 64] == 200 and m[32, 2] == 200 and m[1, 2] == 0 and set(np.unique(m)) <= {0, 200}

    def test_factory_errors(self):
        with pytest.raises(ValueError, match="--backend import"):
            depth.make_depth_backend("import")
        with pytest.raises(ValueError, match="unknown depth backend"):
            depth.make_depth_backend("prnet")

    def test_reduced_decode_matches_full(self, mesh, tmp_path):
        """A big face decoded at 1/2 or 1/4 size gives the same full-size map as the full decode."""
        img = cv2.resize(astronaut(), None, fx=2.5, fy=2.5, interpolation=cv2.INTER_CUBIC)
        path = tmp_path / "big.jpg"
        cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        box = ASTRONAUT_BOX.scaled(2.5)
        fast = depth.depth_for_frame(path, box, mesh)
        full = mesh(cv2.imread(str(path)), box)
        both, either = ((fast > 0) & (full > 0)).sum(), ((fast > 0) | (full > 0)).sum()
        assert fast.shape == img.shape[:2] and both / either > 0.93
        assert np.abs(fast.astype(int) - full.astype(int))[full > 0].mean() < 12


# ----------------------------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------------------------

def prepared_root(tmp_path: Path) -> Path:
    """train_images/ + train_bbox/: video A has 3 face frames with boxes and 1 without; video B 2 face frames."""
    root = tmp_path / "prep"
    img = astronaut(0.5)  # 256x256, face box about (91, 32, 42, 54)
    box = ASTRONAUT_BOX.scaled(0.5)
    for video, n in (("1_1_01_1", 4), ("1_1_01_2", 2)):
        (root / "train_images" / video).mkdir(parents=True)
        for i in range(1, n + 1):
            cv2.imwrite(str(root / "train_images" / video / f"{video}_{i}_scene.jpg"), img)
            if i <= 3:
                write_box(root / "train_bbox" / video / f"{video}_{i}_scene.dat", box)
    (root / "state" / "bbox" / "train").mkdir(parents=True)
    for video in ("1_1_01_1", "1_1_01_2"):
        (root / "state" / "bbox" / "train" / f"{video}.json").write_text("{}")
    return root


def run(*argv):
    return depth.main(depth.get_args_parser().parse_args([str(a) for a in argv]))


def read_map(root: Path, video: str, i: int):
    return cv2.imread(str(root / "train_depth" / video / f"{video}_{i}_depth1D.jpg"), cv2.IMREAD_UNCHANGED)


class TestStage:
    def test_mesh_maps_layout_and_resume(self, tmp_path):
        """One full-size grey map per boxed frame, face bright, outside 0; a rerun does no work."""
        root = prepared_root(tmp_path)
        s = run("--prep-root", root, "--splits", "train")
        assert s.ok and s.videos["done"] == 2 and s.counts["maps written"] == 5
        names = sorted(p.name for p in (root / "train_depth" / "1_1_01_1").iterdir())
        assert names == [f"1_1_01_1_{i}_depth1D.jpg" for i in (1, 2, 3)]  # frame 4 has no box
        m = read_map(root, "1_1_01_1", 2)
        assert m.shape == (256, 256) and m.ndim == 2
        assert m[63, 112] > 180 and m[:10].max() == 0 and m[:, 200:].max() == 0 and m[230:].max() == 0
        assert json.loads((root / "state" / "depth" / "train" / "1_1_01_2.json").read_text())["no_face"] == []
        stamp = (root / "train_depth" / "1_1_01_1" / "1_1_01_1_1_depth1D.jpg").stat().st_mtime_ns
        s = run("--prep-root", root, "--splits", "train")
        assert (s.videos["done"], s.videos["skipped"]) == (0, 2)
        assert (root / "train_depth" / "1_1_01_1" / "1_1_01_1_1_depth1D.jpg").stat().st_mtime_ns == stamp

    def test_wrong_box_format_and_no_face(self, tmp_path):
        """A box file in another format fails its video by name (no marker); a faceless frame is counted."""
        root = prepared_root(tmp_path)
        bad = root / "train_bbox" / "1_1_01_2" / "1_1_01_2_2_scene.dat"
        bad.write_text("91\n32\n42\n54\n")  # CDCN's one-value-per-line layout
        blank = np.full((256, 256, 3), 99, np.uint8)
        cv2.imwrite(str(root / "train_images" / "1_1_01_1" / "1_1_01_1_3_scene.jpg"), blank)
        s = run("--prep-root", root, "--splits", "train")
        assert s.videos["failed"] == 1 and s.videos["done"] == 1 and s.counts["frames without a mesh face"] == 1
        assert any(str(bad) in p and "--bbox-format" in p for p in s.problems)
        assert not (root / "state" / "depth" / "train" / "1_1_01_2.json").exists()
        assert not (root / "train_depth" / "1_1_01_2" / "1_1_01_2_2_depth1D.jpg").exists()
        marker = json.loads((root / "state" / "depth" / "train" / "1_1_01_1.json").read_text())
        assert marker["no_face"] == ["1_1_01_1_3_scene.jpg"]
        report = (root / "reports" / "depth_no_face_train.txt").read_text().splitlines()
        assert report[1:] == ["1_1_01_1/1_1_01_1_3_scene.jpg"]
        (root / "train_bbox" / "1_1_01_2" / "1_1_01_2_1_scene.dat").write_text("91\n32\n42\n54\n")
        s = run("--prep-root", root, "--splits", "train", "--bbox-format", "cdcn")  # named: now it reads
        assert (s.videos["done"], s.videos["skipped"]) == (1, 1) and read_map(root, "1_1_01_2", 2).max() > 200

    def test_video_without_boxes(self, tmp_path):
        """A video that data/detect_faces.py never saw fails by name; one it saw without any face is done,
        with no maps."""
        root = prepared_root(tmp_path)
        for p in (root / "train_bbox" / "1_1_01_2").iterdir():
            p.unlink()
        (root / "state" / "bbox" / "train" / "1_1_01_2.json").unlink()
        s = run("--prep-root", root, "--splits", "train", "--backend", "mask")
        assert s.videos["failed"] == 1
        assert any("1_1_01_2: no boxes (run data/detect_faces.py first)" in f for f in s.failures)
        (root / "state" / "bbox" / "train" / "1_1_01_2.json").write_text("{}")
        s = run("--prep-root", root, "--splits", "train", "--backend", "mask")
        assert s.ok and s.videos["done"] == 1 and any("no frame has a face box" in w for w in s.warnings)

    def test_mask_backend_stage(self, tmp_path):
        root = prepared_root(tmp_path)
        s = run("--prep-root", root, "--splits", "train", "--backend", "mask")
        assert s.ok and s.counts["maps written"] == 5
        m = read_map(root, "1_1_01_1", 1)
        assert m[59, 112] > 250 and m[:20].max() == 0

    def test_import_backend(self, tmp_path):
        """External PRNet maps are checked and stored; a missing or mis-sized one fails by name until supplied."""
        root = prepared_root(tmp_path)
        ext = tmp_path / "prnet_out"
        prnet = np.zeros((256, 256), np.uint8)
        cv2.circle(prnet, (112, 60), 30, 180, -1)
        for video, n in (("1_1_01_1", 3), ("1_1_01_2", 2)):
            for i in range(1, n + 1):
                p = ext / "train_images" / video / f"{video}_{i}_scene_depth.jpg"
                p.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(p), prnet)
        missing = ext / "train_images" / "1_1_01_2" / "1_1_01_2_2_scene_depth.jpg"
        missing.unlink()
        cv2.imwrite(str(ext / "train_images" / "1_1_01_1" / "1_1_01_1_3_scene_depth.jpg"), prnet[:100])
        s = run("--prep-root", root, "--splits", "train", "--backend", "import", "--import-dir", ext)
        assert s.videos["failed"] == 2
        text = "\n".join(s.problems)
        assert f"{missing}: depth map for frame" in text and "depth map is 256x100 but frame" in text
        src = ext / "train_images" / "1_1_01_1" / "1_1_01_1_1_scene_depth.jpg"
        assert (root / "train_depth" / "1_1_01_1" / "1_1_01_1_1_depth1D.jpg").read_bytes() == src.read_bytes()
        cv2.imwrite(str(missing), prnet)
        cv2.imwrite(str(ext / "train_images" / "1_1_01_1" / "1_1_01_1_3_scene_depth.jpg"), prnet)
        s = run("--prep-root", root, "--splits", "train", "--backend", "import", "--import-dir", ext)
        assert s.ok and s.videos["done"] == 2 and s.counts["maps written"] == 2


@pytest.mark.parametrize("how", [["data/depth.py"], ["-m", "data.depth"]])
def test_help_both_ways(how):
    """--help works as a file and as a module; importing the module does not load MediaPipe."""
    r = subprocess.run([sys.executable, *how, "--help"], cwd=REPO, capture_output=True, text=True, check=True)
    assert "--backend" in r.stdout and "--import-pattern" in r.stdout
    code = "import sys, data.depth; sys.exit('mediapipe' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


class TestEllipsoidFallback:
    def test_matches_the_mesh_map_of_a_real_face(self, mesh):
        """On the generator's kind of input (the tight MTCNN box, 256 px, box=None) the ellipsoid label has
        the mesh map's mean grey level at the 32 px label size, where the flat mask is far brighter."""
        x, y, w, h = ASTRONAUT_BOX.x, ASTRONAUT_BOX.y, ASTRONAUT_BOX.w, ASTRONAUT_BOX.h
        face = cv2.resize(astronaut()[y:y + h, x:x + w], (256, 256), interpolation=cv2.INTER_LINEAR)
        small = {name: cv2.resize(b(face, None), (32, 32), interpolation=cv2.INTER_LINEAR).astype(float)
                 for name, b in (("mesh", mesh), ("ellipsoid", depth.make_depth_backend("ellipsoid")),
                                 ("mask", depth.make_depth_backend("mask")))}
        ref = small["mesh"].mean()  # 134 here; 123 +- 6 over the eight faces of the EllipsoidDepth docstring
        assert abs(small["ellipsoid"].mean() - ref) < 0.15 * ref < abs(small["mask"].mean() - ref) / 3
        # Per pixel (44 against the mask's 84 grey levels on this face, whose mesh is wider than most):
        error = {k: np.abs(small[k] - small["mesh"]).mean() for k in ("ellipsoid", "mask")}
        assert error["ellipsoid"] < 0.6 * error["mask"], error

    def test_shape(self):
        """Brightest at the face centre, falling smoothly to the rim, zero outside; follows the box."""
        e = depth.make_depth_backend("ellipsoid")
        m = e(np.zeros((100, 160, 3), np.uint8), FaceBox(40, 20, 40, 60))
        assert m.shape == (100, 160) and m[:, :38].max() == 0 and m[:, 83:].max() == 0 and m[:19].max() == 0
        cy = int(20 + 0.53 * 60)
        assert m[cy, 60] == m.max() and 230 <= m.max() <= 243 and m[cy, 41] < m[cy, 50] < m[cy, 60]
        full = e(np.zeros((64, 64, 3), np.uint8), None)
        face = full[full > 0].astype(float)
        assert 0.7 < (full > 0).mean() < 0.8 and abs(face.mean() - 2 / 3 * 243) < 8
