"""Tests for the Replay-Attack adapter (data/adapters/replay.py) on a synthetic replica of the release layout."""
from __future__ import annotations


import pytest

from data.adapters import replay
from data.adapters.common import LayoutError
from data.other_benchmarks import AdaptedId
from data.synthetic_releases import make_replay_release, replay_attack_names
from adapter_helpers import adapt, linked, lists, run_module, touch
from cli_helpers import cli_help


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """Two clients per split, one real video and three attacks each, plus an enroll/ folder."""
    return make_replay_release(tmp_path_factory.mktemp("replay") / "replayattack", frames=2, size=(128, 96),
                               show_progress=False)


@pytest.fixture(scope="module")
def adapted(release, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapted")
    return out, adapt(replay, "--replay-root", release, "--out", out, "--counts", "any")


def test_splits_ids_and_labels(adapted, release):
    """train/devel/test become Train/Dev/Test; enrollment is left out; print -1, mobile and highdef -2."""
    out, summary = adapted
    names = {s: linked(out, s) for s in ("Train", "Dev", "Test")}
    assert [len(v) for v in names.values()] == [8, 8, 8]
    assert {AdaptedId.parse(n).subject for n in names["Dev"]} == {"003", "004"}
    assert not any("enroll" in n for v in names.values() for n in v)
    assert "REPLAY_005_live_s01-adverse-1" in names["Test"]
    assert "REPLAY_005_mobile_hand-s01-mobile-video-adverse" in names["Test"]
    link = out / "Test_files" / "REPLAY_005_print_fixed-s01-highdef-photo-adverse.mov"
    assert link.resolve() == (release / "test/attack/fixed/attack_print_client005_session01_highdef_photo_adverse.mov")
    rows = lists(out, "replay")
    assert {r.label for r in rows["Test"]} == {1, -1, -2}
    assert {AdaptedId.parse(r.video).instrument: r.label for r in rows["Dev"]} == {
        "live": 1, "print": -1, "mobile": -2, "highdef": -2}
    assert summary["dev_subjects"] is None  # devel is the release's own


def test_full_client_passes_per_client_counts(tmp_path):
    """A client with the release's 4 real videos and 10 + 10 attacks raises only the client-count problems."""
    root = tmp_path / "replayattack"
    for split, client in (("train", "001"), ("devel", "002"), ("test", "003")):
        touch(root / split, [f"{folder}/{name}" for folder, name, _ in replay_attack_names(client, full=True)])
    with pytest.raises(LayoutError) as e:
        adapt(replay, "--replay-root", root, "--out", tmp_path / "out")
    problems = [ln for ln in str(e.value).splitlines() if ln.startswith("  - ")]
    assert problems == ["  - Train clients: expected 15, found 1", "  - Dev clients: expected 15, found 1",
                        "  - Test clients: expected 20, found 1"]


def test_official_counts_per_client(release, tmp_path):
    """The small replica misses real videos and attacks per client: each shortfall is named."""
    with pytest.raises(LayoutError) as e:
        adapt(replay, "--replay-root", release, "--out", tmp_path / "o")
    msg = str(e.value)
    assert "Test client 005: real videos: expected 4, found 1" in msg
    assert "Train client 001: attacks with the hand support: expected 10, found 1" in msg


def _small(root):
    for split, client in (("train", "001"), ("devel", "002"), ("test", "003")):
        touch(root / split, [f"{folder}/{name}" for folder, name, _ in replay_attack_names(client, full=False)])
    return root


@pytest.mark.parametrize("change,message", [
    (lambda r: touch(r, ["test/real/client001_session01_webcam_authenticate_adverse_2.mov"]),
     "subject 001 appears in both Train and Test"),
    (lambda r: touch(r, ["train/real/client001_session01_webcam_enroll_adverse_1.mov"]),
     r"unexpected name \(expected client<CCC>_session<SS>_webcam_authenticate"),
    (lambda r: touch(r, ["train/attack/fixed/attack_laptop_client001_session01_highdef_photo_adverse.mov"]),
     r"unexpected name \(expected attack_<print\|mobile\|highdef>"),
    (lambda r: [p.unlink() for p in (r / "devel" / "attack" / "hand").iterdir()] and (r / "devel/attack/hand").rmdir(),
     r"missing folder .*devel/attack/hand"),
])
def test_malformed_layouts(tmp_path, change, message):
    root = _small(tmp_path / "replayattack")
    change(root)
    with pytest.raises(LayoutError, match=message):
        adapt(replay, "--replay-root", root, "--out", tmp_path / "out", "--counts", "any")


def test_cli_error_and_help(tmp_path):
    root = _small(tmp_path / "download" / "replayattack")
    r = run_module("data.adapters.replay", "--replay-root", root.parent, "--out", tmp_path / "out", "--counts", "any")
    assert r.returncode == 1 and f"hint: {root} holds devel/" in r.stderr and "Traceback" not in r.stderr
    for how in (["data/adapters/replay.py"], ["-m", "data.adapters.replay"]):
        r = cli_help(how)
        assert r.returncode == 0 and "--replay-root" in r.stdout
