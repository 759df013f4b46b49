"""Tests for data/synthetic.py: layout, protocol lists, determinism, resuming, identities and MTCNN."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from data import synthetic
from data.protocol_lists import (SPLITS, USER_SPLITS, VideoId, membership, official_rows, protocol_path,
                       read_protocol)
from cli_helpers import cli_help

REPO = Path(__file__).resolve().parents[1]
# Four users: each split gets one of the three photos, train also an LFW face.
SMALL = dict(users=4, phones=2, sessions=3, frames=2, size=(192, 144), seed=0)
N_VIDEOS = 4 * 2 * 3 * 5


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A small dataset with every kind of file, built once for the module."""
    root = tmp_path_factory.mktemp("synthetic") / "oulu"
    return synthetic.make_dataset(root, show_progress=False, workers=1, **SMALL)


@pytest.fixture(scope="module")
def detector():
    """MTCNN, started once (TensorFlow takes seconds to load)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    mtcnn = pytest.importorskip("mtcnn")
    return mtcnn.MTCNN(device="CPU:0")


def _face_found(detector, rgb_frames):
    """Whether MTCNN finds a face (confidence > 0.9) in each frame; one batch, twice as fast as many."""
    return [any(float(f["confidence"]) > 0.9 for f in faces) for faces in detector.detect_faces(rgb_frames)]


def _videos(root: Path):
    """{VideoId: path} of every .avi in the split folders."""
    found = {}
    for split in SPLITS:
        for p in (root / f"{split}_files").glob("*.avi"):
            found[VideoId.parse(p.stem)] = p
    return found


def _split_of(v: VideoId) -> str:
    return next(split for split in SPLITS if v.user in USER_SPLITS[split])


def test_split_users_keeps_oulu_ranges_and_proportions():
    """Users are shared 20:15:20 with at least one per split and keep OULU-NPU's id ranges."""
    assert synthetic.split_users(9) == {"Train": [1, 2, 3], "Dev": [21, 22, 23], "Test": [36, 37, 38]}
    assert synthetic.split_users(3) == {"Train": [1], "Dev": [21], "Test": [36]}
    full = synthetic.split_users(55)
    assert [len(full[s]) for s in SPLITS] == [20, 15, 20]
    for n in range(3, 56):
        split = synthetic.split_users(n)
        assert sum(len(u) for u in split.values()) == n
        assert all(split[s] and set(split[s]) <= set(USER_SPLITS[s]) for s in SPLITS)
    for bad in (2, 56):
        with pytest.raises(ValueError, match="--users"):
            synthetic.split_users(bad)


def test_layout_and_names(dataset):
    """Flat P_S_UU_F.avi files in the three split folders, every planned video and nothing else."""
    videos = _videos(dataset)
    users = synthetic.split_users(SMALL["users"])
    expected = {VideoId(p, s, u, f) for split in SPLITS for u in users[split]
                for p in (1, 2) for s in (1, 2, 3) for f in range(1, 6)}
    assert set(videos) == expected
    for vid, path in videos.items():
        assert path.parent.name == f"{_split_of(vid)}_files"
    for split in SPLITS:  # no half-written videos left behind, no other files
        folder = dataset / f"{split}_files"
        assert sorted(p.name for p in folder.iterdir()) == sorted(f"{v}.avi" for v in expected if _split_of(v) == split)
    assert (dataset / synthetic.META_NAME).is_file() and (dataset / synthetic.PREVIEW_NAME).is_file()


def test_videos_decode_with_requested_frames_and_size(dataset):
    """Every video decodes with OpenCV to the requested frame count and size."""
    for path in _videos(dataset).values():
        frames = synthetic.read_video(path)
        assert frames.shape == (SMALL["frames"], SMALL["size"][1], SMALL["size"][0], 3), path
        assert frames.dtype == np.uint8 and frames.std() > 5, path  # a picture, not a blank


def test_protocol_rows_match_existing_videos(dataset):
    """Each list holds exactly the existing videos its protocol selects, with the official labels."""
    videos = _videos(dataset)
    meta = json.loads((dataset / synthetic.META_NAME).read_text())
    assert meta["protocols"] == ["1", "2", "3_1", "3_2", "4_1", "4_2"]  # two phones: subs 1 and 2 only
    for tag in meta["protocols"]:
        protocol, sub = (int(tag), None) if "_" not in tag else map(int, tag.split("_"))
        for split in SPLITS:
            rows = read_protocol(protocol_path(dataset / "Protocols", protocol, split, sub))
            listed = {VideoId.parse(r.video): r.label for r in rows}
            assert len(listed) == len(rows)
            assert set(listed) <= set(videos)  # every row's video exists...
            assert _split_of(next(iter(listed))) == split
            wanted = {v for v in videos if membership(protocol, split, sub)(v)}
            assert set(listed) == wanted  # ...and every video the protocol selects is listed
            for v, label in listed.items():
                if v.is_live:
                    assert label == 1
                elif split == "Test":
                    assert label == (-1 if v.kind == "print" else -2)
                else:
                    assert label == -1


def test_protocol_files_format_and_sub_protocols(dataset):
    """Official file names and row format; sub-protocols only for phones that exist."""
    protocols = dataset / "Protocols"
    for split in SPLITS:
        for p in (1, 2):
            assert (protocols / f"Protocol_{p}" / f"{split}.txt").is_file()
        for p in (3, 4):
            assert not (protocols / f"Protocol_{p}" / f"{split}.txt").exists()
            for k in (1, 2):
                assert (protocols / f"Protocol_{p}" / f"{split}_{k}.txt").is_file()
            for k in (3, 4, 5, 6):  # no phone k to test on
                assert not (protocols / f"Protocol_{p}" / f"{split}_{k}.txt").exists()
    text = (protocols / "Protocol_1" / "Test.txt").read_text()
    assert text.splitlines()[0] == "+1,1_3_36_1" and text.endswith("\n")
    assert "-2,1_3_36_4" in text.splitlines() and "-1,1_3_36_2" in text.splitlines()
    train_1 = read_protocol(protocols / "Protocol_3" / "Train_1.txt")
    test_1 = read_protocol(protocols / "Protocol_3" / "Test_1.txt")
    assert {VideoId.parse(r.video).phone for r in train_1} == {2}
    assert {VideoId.parse(r.video).phone for r in test_1} == {1}
    # The lists are what data.protocol_lists writes for the videos that exist.
    assert text == "".join(r.format() + "\n" for r in official_rows(list(_videos(dataset)), 1, "Test"))


def test_fewer_sessions_and_phones_leave_out_untestable_protocols(tmp_path):
    """One phone and two sessions: protocols 1, 3 and 4 have no test (or train) data and are not written."""
    root = synthetic.make_dataset(tmp_path / "d", users=3, phones=1, sessions=2, frames=1, size=(96, 72),
                                  show_progress=False)
    assert json.loads((root / synthetic.META_NAME).read_text())["protocols"] == ["2"]
    assert sorted(p.name for p in (root / "Protocols").iterdir()) == ["Protocol_2"]
    assert len(read_protocol(root / "Protocols" / "Protocol_2" / "Test.txt")) == 1 * 2 * 1 * 3


def test_deterministic_for_a_seed(tmp_path):
    """Two runs with one seed (one and two worker processes) give identical decoded frames and
    files; another seed differs."""
    args = dict(users=3, phones=1, sessions=1, frames=2, size=(128, 96), show_progress=False)
    a = synthetic.make_dataset(tmp_path / "a", seed=5, workers=1, **args)
    b = synthetic.make_dataset(tmp_path / "b", seed=5, workers=2, **args)
    c = synthetic.make_dataset(tmp_path / "c", seed=6, **args)
    va, vb, vc = _videos(a), _videos(b), _videos(c)
    assert set(va) == set(vb) == set(vc) and len(va) == 15
    for vid in va:
        assert np.array_equal(synthetic.read_video(va[vid]), synthetic.read_video(vb[vid])), vid
        assert va[vid].read_bytes() == vb[vid].read_bytes(), vid
        assert not np.array_equal(synthetic.read_video(va[vid]), synthetic.read_video(vc[vid])), vid
    for name in ("Protocols/Protocol_2/Test.txt", synthetic.META_NAME):
        if name.endswith(".json"):
            meta_a, meta_b = (json.loads((r / name).read_text()) for r in (a, b))
            meta_a.pop("last_run"), meta_b.pop("last_run")
            assert meta_a == meta_b
        else:
            assert (a / name).read_text() == (b / name).read_text()


def test_resume_repairs_and_keeps(tmp_path):
    """A rerun keeps finished videos, rewrites missing or corrupt ones identically, refuses other args."""
    args = dict(users=3, phones=1, sessions=1, frames=2, size=(128, 96), seed=0, show_progress=False)
    root = synthetic.make_dataset(tmp_path / "d", **args)
    videos = _videos(root)
    missing, corrupt, kept = (videos[VideoId(1, 1, 1, f)] for f in (1, 4, 5))
    reference = {p: synthetic.read_video(p) for p in (missing, corrupt)}
    missing.unlink()
    corrupt.write_bytes(b"not a video")
    before = kept.stat().st_mtime_ns
    synthetic.make_dataset(tmp_path / "d", **args)
    for p, frames in reference.items():
        assert np.array_equal(synthetic.read_video(p), frames), p
    assert kept.stat().st_mtime_ns == before
    assert json.loads((root / synthetic.META_NAME).read_text())["last_run"]["videos_written"] == 2
    with pytest.raises(FileExistsError, match="made with"):
        synthetic.make_dataset(tmp_path / "d", **{**args, "frames": 3})


def test_read_video_names_the_bad_file(tmp_path):
    """A file that is not a video raises OSError naming it."""
    bad = tmp_path / "1_1_01_1.avi"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(OSError, match="1_1_01_1.avi"):
        synthetic.read_video(bad)


def test_identities_are_distinct_people():
    """Users get different people, train/dev/test people are disjoint, and the cut-outs differ."""
    for seed in (0, 1):
        users = synthetic.split_users(55)
        names = synthetic.assign_identities(users, seed)
        assert len(set(names.values())) == 55
        per_split = [{names[u] for u in users[s]} for s in SPLITS]
        assert not (per_split[0] & per_split[1] or per_split[0] & per_split[2] or per_split[1] & per_split[2])
    assert synthetic.assign_identities(synthetic.split_users(9), 0) != synthetic.assign_identities(
        synthetic.split_users(9), 1)
    pool = synthetic.identity_pool()
    assert len(pool) == len(set(pool)) >= 55
    faces = []
    for name in pool:
        ident = synthetic.load_identity(name)
        x, y, w, h = (int(v) for v in ident.face_box)
        face = cv2.resize(ident.rgb[y:y + h, x:x + w].mean(axis=2), (24, 24), interpolation=cv2.INTER_AREA)
        faces.append((face - face.mean()).ravel() / (face.std() + 1e-6))
    faces = np.stack(faces)
    similarity = faces @ faces.T / faces.shape[1]
    np.fill_diagonal(similarity, 0)
    assert similarity.max() < 0.97  # no face is a copy of another


def test_mtcnn_finds_faces_in_live_and_attack_frames(dataset, detector):
    """MTCNN finds a face in >= 95% of all frames, and in >= 90% of each kind of file."""
    kinds, frames = [], []
    for vid, path in sorted(_videos(dataset).items()):
        for frame in synthetic.read_video(path):
            kinds.append(vid.kind)
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    assert len(frames) == N_VIDEOS * SMALL["frames"]
    found = {kind: [] for kind in ("bona fide", "print", "replay")}
    for kind, hit in zip(kinds, _face_found(detector, frames)):
        found[kind].append(hit)
    rates = {kind: float(np.mean(hits)) for kind, hits in found.items()}
    total = float(np.mean(sum(found.values(), [])))
    assert total >= 0.95, rates
    assert min(rates.values()) >= 0.90, rates


def test_mtcnn_finds_every_identity_of_the_pool(detector):
    """Every person a larger dataset can use shows a face MTCNN finds (one live frame each)."""
    pool = synthetic.identity_pool()
    frames = [cv2.cvtColor(synthetic.render_video(VideoId(1 + k % 6, 1 + k % 3, 1, 1), synthetic.load_identity(name),
                                                  1, SMALL["size"], 0)[0], cv2.COLOR_BGR2RGB)
              for k, name in enumerate(pool)]
    missed = [name for name, hit in zip(pool, _face_found(detector, frames)) if not hit]
    assert len(missed) <= 0.02 * len(pool), missed


@pytest.mark.parametrize("how", [["data/synthetic.py"], ["-m", "data.synthetic"]])
def test_entry_point_runs_both_ways(tmp_path, how):
    """`python data/synthetic.py` and `python -m data.synthetic` show help and write a dataset."""
    shown = cli_help(how)
    assert shown.returncode == 0, shown.stderr
    help_text = shown.stdout
    for flag in ("--out", "--users", "--phones", "--sessions", "--frames", "--size", "--seed"):
        assert flag in help_text
    out = tmp_path / "cli"
    subprocess.run([sys.executable, *how, "--out", str(out), "--users", "3", "--phones", "1", "--sessions", "1",
                    "--frames", "1", "--size", "64x64"], cwd=REPO, capture_output=True, text=True, check=True,
                   env={**os.environ, "DSDG_NO_PROGRESS": "1"})
    assert json.loads((out / synthetic.META_NAME).read_text())["counts"]["total_videos"] == 15


def test_avi_writer_round_trip(tmp_path):
    """write_video's MJPG AVI decodes to the frames (up to JPEG loss) with the right count and rate."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (3, 48, 64, 3)).astype(np.float32)
    frames = [np.clip(cv2.GaussianBlur(f, (0, 0), 3) * 3 - 250, 0, 255).astype(np.uint8) for f in noise]
    path = tmp_path / "1_1_01_1.avi"
    synthetic.write_video(path, frames, quality=100)
    back = synthetic.read_video(path)
    assert back.shape == (3, 48, 64, 3)
    assert np.abs(back.astype(int) - np.stack(frames)).mean() < 4  # JPEG halves the chroma resolution
    cap = cv2.VideoCapture(str(path))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 3 and cap.get(cv2.CAP_PROP_FPS) == synthetic.FPS
    cap.release()
    assert [p.name for p in tmp_path.iterdir()] == ["1_1_01_1.avi"]  # no temporary file left
