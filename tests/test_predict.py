"""Tests for DUM/predict.py: real phone photos, no face, several faces, videos, corrupt files, thresholds, ONNX."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from data.detect_faces import FaceDetector
from deploy_helpers import write_checkpoint, write_released
from DUM import export_onnx, predict
from DUM.scoring import predict_maps
from misc.checkpoint import CheckpointError
from cli_helpers import cli_help

REPO = Path(__file__).resolve().parents[1]
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "fas_samples"
THRESHOLD = 0.25  # stored in the test checkpoint as DUM/train.py stores the Dev threshold


def run(*argv):
    return predict.main(predict.get_args_parser().parse_args([str(a) for a in argv]))


def read_jsonl(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()]


def astronaut_bgr() -> np.ndarray:
    from skimage import data
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def write_avi(path: Path, frames) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, frames[0].shape[1::-1])
    for f in frames:
        w.write(f)
    w.release()
    return path


@pytest.fixture(scope="module")
def detector():
    """One MTCNN for the module (predict.main's detectors share it: the network is cached per process)."""
    d = FaceDetector()
    d._model()
    return d


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random checkpoint (32 px inputs, 8 x 8 maps) with a stored Dev threshold."""
    return write_checkpoint(tmp_path_factory.mktemp("predict") / "checkpoint.pth", threshold=THRESHOLD)


def check_face_row(row: dict, threshold: float = THRESHOLD) -> None:
    x, y, w, h = row["box"]
    assert w > 0 and h > 0 and 0.9 <= row["confidence"] <= 1.0
    assert math.isfinite(row["score"]) and row["threshold"] == threshold and row["error"] is None
    assert row["decision"] == ("live" if row["score"] >= threshold else "spoof")


def test_fas_samples_upright_and_found(detector):
    """The phone photos carry EXIF rotation: OpenCV's reading is upright (portrait, eyes above mouth) and
    MTCNN finds the face; read without the rotation it finds none."""
    if not SAMPLES.is_dir():
        pytest.skip("../shared/data/fas_samples is not present")
    for name in ("image_T1.jpg", "image_F1.jpg", "image_F2.jpg"):
        image = cv2.imread(str(SAMPLES / name), cv2.IMREAD_COLOR)
        assert image.shape == (640, 480, 3)
        box = detector([cv2.cvtColor(image, cv2.COLOR_BGR2RGB)])[0]
        assert box is not None and box.confidence > 0.99
        eye_y, mouth_y = (box.landmarks[1] + box.landmarks[3]) / 2, (box.landmarks[7] + box.landmarks[9]) / 2
        assert eye_y < mouth_y
    raw = cv2.imread(str(SAMPLES / "image_T1.jpg"), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    assert raw.shape == (480, 640, 3) and detector([cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)])[0] is None


def test_fas_samples_clean_run(tmp_path, detector, checkpoint):
    """A folder of the three real photos: one well-formed line each, a face in each, annotated copies."""
    if not SAMPLES.is_dir():
        pytest.skip("../shared/data/fas_samples is not present")
    counts = run("--checkpoint", checkpoint, "--input", SAMPLES, "--output", tmp_path / "r.jsonl",
                 "--annotate", tmp_path / "ann")
    rows = read_jsonl(tmp_path / "r.jsonl")
    assert [Path(r["source"]).name for r in rows] == ["image_F1.jpg", "image_F2.jpg", "image_T1.jpg"]
    assert counts.get("no_face", 0) == 0 and counts.get("error", 0) == 0 and sum(counts.values()) == 3
    for r in rows:
        assert set(r) == {"source", "frame", "face", "box", "confidence", "score", "decision", "threshold", "error"}
        assert (r["frame"], r["face"]) == (0, 0)
        check_face_row(r)
        x, y, w, h = r["box"]
        assert 0 <= x and x + w <= 480 and 0 <= y and y + h <= 640  # upright frame, box on it
        drawn = cv2.imread(str(tmp_path / "ann" / Path(r["source"]).name))
        assert drawn.shape == (640, 480, 3)
        original = cv2.imread(r["source"])
        assert np.abs(drawn.astype(int) - original).max() > 100  # the box and label were drawn


def test_no_face_corrupt_files_and_video(tmp_path, detector, checkpoint):
    """Non-face image -> no_face line; corrupt/empty image and video -> error lines naming them, the run
    goes on; a video gets a line per frame (no_face for its blank frame) and an annotated AVI."""
    src = tmp_path / "in"
    src.mkdir()
    from skimage import data
    cv2.imwrite(str(src / "coffee.png"), cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR))
    (src / "broken.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    (src / "empty.png").write_bytes(b"")
    (src / "broken.avi").write_bytes(b"RIFF" + bytes(range(256)) * 8)
    face = cv2.resize(astronaut_bgr(), (256, 256), interpolation=cv2.INTER_AREA)
    blank = np.full_like(face, 90)
    write_avi(src / "clip.avi", [face, np.roll(face, 6, axis=1), blank, np.roll(face, -6, axis=0)])
    counts = run("--checkpoint", checkpoint, "--input", src, "--output", tmp_path / "r.csv", "--annotate",
                 tmp_path / "ann")
    with open(tmp_path / "r.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by_source = {}
    for r in rows:
        by_source.setdefault(Path(r["source"]).name, []).append(r)
    for name in ("broken.jpg", "empty.png", "broken.avi"):
        (r,) = by_source[name]
        assert r["decision"] == "error" and str(src / name) in r["error"] and r["score"] == ""
    (r,) = by_source["coffee.png"]
    assert (r["decision"], r["frame"], r["face"], r["score"]) == ("no_face", "0", "", "")
    clip = by_source["clip.avi"]
    assert [(r["frame"], r["decision"] == "no_face") for r in clip] == [("0", False), ("1", False), ("2", True),
                                                                        ("3", False)]
    for r in clip[:2] + clip[3:]:
        assert r["face"] == "0" and float(r["threshold"]) == THRESHOLD and math.isfinite(float(r["score"]))
        assert r["decision"] == ("live" if float(r["score"]) >= THRESHOLD else "spoof")
    assert counts["error"] == 3 and counts["no_face"] == 2 and counts.get("live", 0) + counts.get("spoof", 0) == 3
    cap = cv2.VideoCapture(str(tmp_path / "ann" / "clip.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    cap.release()
    assert cv2.imread(str(tmp_path / "ann" / "coffee.png")).shape == data.coffee().shape
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == ["clip.avi", "coffee.png"]  # no temporaries


def test_every_and_max_frames(tmp_path):
    """--every N scores frames 0, N, 2N, ...; --max-frames stops after that many."""
    frames = [np.full((16, 16, 3), 10 * i, np.uint8) for i in range(7)]
    path = write_avi(tmp_path / "v.avi", frames)

    def indices(every, limit):
        cap = cv2.VideoCapture(str(path))
        got = [(i, int(f.mean() + 5) // 10) for i, f in predict.read_frames(cap, every, limit)]
        cap.release()
        return got

    assert indices(1, 0) == [(i, i) for i in range(7)]
    assert indices(3, 0) == [(0, 0), (3, 3), (6, 6)]
    assert indices(2, 2) == [(0, 0), (2, 2)]


def test_several_faces(detector, checkpoint):
    """Two faces: both scored, the most confident first (the pipeline's pick); --all-faces false keeps one."""
    face = astronaut_bgr()
    two = np.hstack([face, cv2.flip(face, 1)])
    scorer = predict.TorchScorer(checkpoint, torch.device("cpu"))
    faces = predict.Predictor(scorer, detector, THRESHOLD)(two)
    assert len(faces) == 2 and faces[0].box.confidence >= faces[1].box.confidence
    assert faces[0].box == detector([cv2.cvtColor(two, cv2.COLOR_BGR2RGB)])[0]
    assert {f.box.x < 512 for f in faces} == {True, False}  # one in each half
    assert all(math.isfinite(f.score) for f in faces)
    one = predict.Predictor(scorer, detector, THRESHOLD, all_faces=False)(two)
    assert [f.box for f in one] == [faces[0].box]
    rows = predict.frame_rows("two.png", 0, faces, THRESHOLD)
    assert [r["face"] for r in rows] == [0, 1]


def test_threshold_rule_and_override(tmp_path, detector, checkpoint):
    """live iff score >= threshold (a tie is live); --threshold replaces the checkpoint's."""
    scorer = predict.TorchScorer(checkpoint, torch.device("cpu"))
    assert scorer.threshold == THRESHOLD
    image = astronaut_bgr()
    (face,) = predict.Predictor(scorer, detector, THRESHOLD)(image)
    (tie,) = predict.Predictor(scorer, detector, face.score)(image)
    (above,) = predict.Predictor(scorer, detector, np.nextafter(face.score, math.inf))(image)
    assert tie.score == face.score and tie.live and not above.live
    cv2.imwrite(str(tmp_path / "a.png"), image)  # lossless: the same pixels, the same score
    run("--checkpoint", checkpoint, "--input", tmp_path / "a.png", "--output", tmp_path / "r.jsonl",
        "--threshold", face.score)
    (row,) = read_jsonl(tmp_path / "r.jsonl")
    assert row["threshold"] == face.score and row["decision"] == "live"


def test_released_file_needs_threshold(tmp_path, detector):
    """A checkpoint without a stored threshold stops with a message naming --threshold; given one, it runs."""
    released = write_released(tmp_path / "CDCN_U_P1.pkl")
    cv2.imwrite(str(tmp_path / "a.jpg"), astronaut_bgr())
    with pytest.raises(SystemExit, match="--threshold"):
        run("--checkpoint", released, "--input", tmp_path / "a.jpg", "--image-size", 32)
    run("--checkpoint", released, "--input", tmp_path / "a.jpg", "--image-size", 32, "--threshold", 0.5,
        "--output", tmp_path / "r.jsonl")
    (row,) = read_jsonl(tmp_path / "r.jsonl")
    check_face_row(row, threshold=0.5)


def test_onnx_model(tmp_path, detector, checkpoint):
    """--onnx: onnxruntime gives PyTorch's score and the file's threshold; Predictor.load takes the .onnx file
    too; its maps are PyTorch's mu, without sigma (the graph has no log-variance head)."""
    export_onnx.main(export_onnx.get_args_parser().parse_args(["--checkpoint", str(checkpoint), "--out",
                                                               str(tmp_path / "m.onnx")]))
    cv2.imwrite(str(tmp_path / "a.jpg"), astronaut_bgr())
    run("--onnx", tmp_path / "m.onnx", "--input", tmp_path / "a.jpg", "--output", tmp_path / "onnx.jsonl")
    run("--checkpoint", checkpoint, "--input", tmp_path / "a.jpg", "--output", tmp_path / "torch.jsonl",
        "--precision", "fp32")  # the graph is fp32: compared with PyTorch's fp32 (auto may take bf16)
    (o,), (t,) = read_jsonl(tmp_path / "onnx.jsonl"), read_jsonl(tmp_path / "torch.jsonl")
    check_face_row(o)
    assert o["box"] == t["box"] and abs(o["score"] - t["score"]) <= 1e-4
    (face,) = predict.Predictor.load(str(tmp_path / "m.onnx"), maps=True)(cv2.imread(str(tmp_path / "a.jpg")))
    assert [face.box.x, face.box.y, face.box.w, face.box.h] == o["box"] and face.score == pytest.approx(o["score"])
    assert face.mu.shape == (8, 8) and face.sigma is None
    faces = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    (s_o, mu_o, sigma_o), (s_t, mu_t, sigma_t) = (predict.OnnxScorer(tmp_path / "m.onnx").maps(faces),
                                                  predict.TorchScorer(checkpoint, "cpu").maps(faces))
    assert sigma_o is None and sigma_t.shape == mu_t.shape == (2, 8, 8) and (sigma_t > 0).all()
    assert np.abs(mu_o - mu_t).max() <= 1e-4 and np.abs(s_o - s_t).max() <= 1e-4
    drawn = predict.annotate(astronaut_bgr(), [face], THRESHOLD, maps=True)  # a panel with mu and "no sigma"
    assert drawn.shape == (512, 512 + 3 * predict.panel_tile(512) + 16, 3)


def test_maps_beside_each_face(tmp_path, detector, checkpoint):
    """--maps true: each face carries the network's mu and sigma for its crop and the score it has without
    maps; the annotated copy gains a panel (same height, a width set by the height alone, so video frames
    keep one size) that shows the mu map pixel for pixel; --maps without a picture to draw on stops."""
    image = astronaut_bgr()
    scorer = predict.TorchScorer(checkpoint, torch.device("cpu"))
    (plain,) = predict.Predictor(scorer, detector, THRESHOLD)(image)
    (face,) = predict.Predictor(scorer, detector, THRESHOLD, maps=True)(image)
    assert face.box == plain.box and face.score == plain.score and face.decision == plain.decision
    crop = predict.face_input(image, face.box, predict.EVAL_FACE_SCALE, scorer.image_size)[None]
    mu, sigma = predict_maps(scorer.net.model, crop, torch.device("cpu"))
    assert np.allclose(face.mu, mu[0].numpy(), atol=1e-6) and np.allclose(face.sigma, sigma[0].numpy(), atol=1e-6)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    run("--checkpoint", checkpoint, "--input", tmp_path / "a.png", "--annotate", tmp_path / "ann", "--maps", "true",
        "--output", tmp_path / "r.jsonl")
    drawn = cv2.imread(str(tmp_path / "ann" / "a.png"))
    tile = predict.panel_tile(512)
    assert drawn.shape == (512, 512 + 3 * tile + 16, 3)
    panel = drawn[:, 512:]
    assert predict.maps_panel(image, [], 512).shape == panel.shape  # no face: the same width
    grey = np.clip(np.round(face.mu * 255), 0, 255).astype(np.uint8)
    want = cv2.cvtColor(cv2.resize(grey, (tile, tile), interpolation=cv2.INTER_NEAREST), cv2.COLOR_GRAY2BGR)
    match = cv2.matchTemplate(panel, want, cv2.TM_SQDIFF)
    y, x = np.unravel_index(match.argmin(), match.shape)
    assert np.array_equal(panel[y:y + tile, x:x + tile], want)  # the mu map is in the panel, unchanged (lossless PNG)
    with pytest.raises(SystemExit, match="--maps true draws on the annotated pictures"):
        run("--checkpoint", checkpoint, "--input", tmp_path / "a.png", "--maps", "true")


def test_predictor_load_threshold(tmp_path):
    """Predictor.load takes the stored threshold, or the one given; a file without one is a ValueError naming it."""
    released = write_released(tmp_path / "CDCN_U_P1.pkl")
    with pytest.raises(ValueError, match="CDCN_U_P1.pkl: stores no decision threshold"):
        predict.Predictor.load(released)
    assert predict.Predictor.load(released, 0.5).threshold == 0.5


@pytest.mark.parametrize("model", ["cdcn", "depthnet_u", "resnet18_u"])
def test_other_networks(tmp_path, detector, model):
    """A checkpoint of another network of DUM/zoo.py predicts (the network read from the file, --model agreeing);
    --model naming another network stops with both names."""
    ckpt = write_checkpoint(tmp_path / "checkpoint.pth", threshold=THRESHOLD, model=model)
    cv2.imwrite(str(tmp_path / "a.jpg"), astronaut_bgr())
    run("--checkpoint", ckpt, "--model", model, "--input", tmp_path / "a.jpg", "--output", tmp_path / "r.jsonl")
    (row,) = read_jsonl(tmp_path / "r.jsonl")
    check_face_row(row)
    with pytest.raises(CheckpointError, match=f"was trained as '{model}', not 'cdcn_u'"):
        run("--checkpoint", ckpt, "--model", "cdcn_u", "--input", tmp_path / "a.jpg")


def test_argument_errors(tmp_path, checkpoint, monkeypatch):
    """Clear stops: unknown output type, annotating into the input folder, missing input, no webcam,
    a window without a display."""
    cv2.imwrite(str(tmp_path / "a.jpg"), astronaut_bgr())
    with pytest.raises(SystemExit, match="use a .jsonl"):
        run("--checkpoint", checkpoint, "--input", tmp_path / "a.jpg", "--output", tmp_path / "r.txt")
    with pytest.raises(SystemExit, match="replace the originals"):
        run("--checkpoint", checkpoint, "--input", tmp_path, "--annotate", tmp_path)
    with pytest.raises(SystemExit, match="no such file"):
        run("--checkpoint", checkpoint, "--input", tmp_path / "missing.jpg")
    with pytest.raises(SystemExit, match="webcam 97: cannot be opened"):
        run("--checkpoint", checkpoint, "--webcam", 97)
    monkeypatch.delenv("DISPLAY", raising=False)
    if sys.platform.startswith("linux"):
        with pytest.raises(SystemExit, match="needs a display"):
            run("--checkpoint", checkpoint, "--input", tmp_path / "a.jpg", "--show", "true")
    assert not (tmp_path / "r.txt").exists()


def test_every_flag_has_help():
    """Every option of the parser says what it does."""
    for action in predict.get_args_parser()._actions:
        assert action.help, action.dest


@pytest.mark.parametrize("how", ["file", "module"])
def test_help_both_ways(how):
    """--help works as a file and as a module."""
    out = cli_help(["DUM/predict.py"] if how == "file" else ["-m", "DUM.predict"])
    assert out.returncode == 0 and "--webcam" in out.stdout and "--all-faces" in out.stdout


def test_cli_unreadable_input_exit_status(tmp_path, checkpoint):
    """From the command line: results as JSON lines on stdout (the log on stderr), exit 1 when an input
    could not be read."""
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    out = subprocess.run([sys.executable, "DUM/predict.py", "--checkpoint", str(checkpoint), "--input", str(bad)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    (row,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert row["decision"] == "error" and str(bad) in row["error"] and str(bad) in out.stderr


def test_precision_bf16_and_fp32_paths(tmp_path, detector, checkpoint, capfd):
    """--precision bf16 scores (emulated where this CPU has no native bf16) close to fp32, --fp32-check reports
    the largest difference and the decisions that differ at the threshold; an ONNX file refuses bf16."""
    faces = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    fp32 = predict.TorchScorer(checkpoint, "cpu", precision="fp32")
    bf16 = predict.TorchScorer(checkpoint, "cpu", precision="bf16", fp32_check=True)
    assert fp32.precision.name == "fp32" and bf16.precision.name == "bf16" and "bf16" in bf16.name
    ref, got = fp32(faces), bf16(faces)
    assert 0 < np.abs(got - ref).max() < 0.05
    assert np.abs(bf16.maps(faces)[0] - ref).max() < 0.05
    d = bf16.fp32_deviation(THRESHOLD)
    assert d["items"] == 6 and d["max_abs_diff"] == pytest.approx(np.abs(np.r_[got, bf16.maps(faces)[0]] -
                                                                         np.r_[ref, ref]).max(), abs=1e-6)
    assert fp32.fp32_deviation(THRESHOLD) is None  # nothing to compare in fp32
    cv2.imwrite(str(tmp_path / "a.jpg"), astronaut_bgr())
    capfd.readouterr()
    run("--checkpoint", checkpoint, "--input", tmp_path / "a.jpg", "--output", tmp_path / "r.jsonl",
        "--precision", "bf16", "--fp32-check", "true")
    logged = "".join(capfd.readouterr())  # the script's log (stderr when results go to a file, or stdout)
    assert "precision: bf16 on cpu (--precision bf16" in logged
    assert "vs fp32 (--fp32-check): max |d score|" in logged and "over 1 faces" in logged
    check_face_row(read_jsonl(tmp_path / "r.jsonl")[0])
    with pytest.raises(SystemExit, match="ONNX file runs in the precision of its graph"):
        run("--onnx", tmp_path / "m.onnx", "--input", tmp_path / "a.jpg", "--precision", "bf16")
