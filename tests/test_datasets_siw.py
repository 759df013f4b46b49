"""Tests for the SiW adapter (data/adapters/siw.py), the .face box import (data/import_released_boxes.py) and the
stages on a synthetic replica of the SiW release layout."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from data import extract_frame, import_released_boxes, make_train_list
from data.adapters import siw
from data.adapters.common import LayoutError
from data.box_files import read_box
from data.other_benchmarks import AdaptedId
from data.synthetic_releases import make_siw_release
from adapter_helpers import adapt, linked, lists, run_module, touch
from cli_helpers import cli_help

SIZE = (128, 96)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """Train subjects 001-003, Test 101-102, seven videos of two frames each, with .face files."""
    return make_siw_release(tmp_path_factory.mktemp("siw") / "SiW_release", train=3, test=2, frames=2, size=SIZE,
                            show_progress=False)


@pytest.fixture(scope="module")
def adapted(release, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapted")
    summary = adapt(siw, "--siw-root", release, "--out", out, "--counts", "any", "--dev-fraction", "0.34")
    return out, summary


def test_layout_ids_and_dev_carve(adapted):
    """Every video is linked once under its adapted id; one Train subject became Dev; Test is untouched."""
    out, summary = adapted
    dev = summary["dev_subjects"]
    assert len(dev) == 1 and dev[0] in ("001", "002", "003")
    names = {s: linked(out, s) for s in ("Train", "Dev", "Test")}
    assert sum(map(len, names.values())) == 35
    assert {AdaptedId.parse(n).subject for n in names["Dev"]} == set(dev)
    assert {AdaptedId.parse(n).subject for n in names["Test"]} == {"101", "102"}
    assert "SIW_101_replay4_101-1-3-4-1" in names["Test"] and "SIW_101_live_101-1-1-1-1" in names["Test"]
    link = out / "Test_files" / "SIW_101_print2_101-1-2-2-1.mov"
    assert link.is_symlink() and link.resolve().name == "101-1-2-2-1.mov"
    table = (out / "metadata" / "SIW_videos.csv").read_text().splitlines()
    assert table[0].startswith("video,split,release_split,subject,instrument") and len(table) == 36


def test_protocol_lists(adapted):
    """P1 uses everything; P2 fold k tests on replay medium k only; P3 swaps print and replay."""
    out, _ = adapted
    p1 = lists(out, "siw_1")
    assert len(p1["Test"]) == 14 and {r.label for r in p1["Test"]} == {1, -1, -2}
    for k in range(1, 5):
        p2 = lists(out, f"siw_2_{k}")
        test_attacks = {AdaptedId.parse(r.video).instrument for r in p2["Test"] if not r.is_live}
        train_attacks = {AdaptedId.parse(r.video).instrument for r in p2["Train"] if not r.is_live}
        assert test_attacks == {f"replay{k}"} and f"replay{k}" not in train_attacks
        assert not any(i.startswith("print") for i in train_attacks)
        assert sum(r.is_live for r in p2["Test"]) == 2
    p3 = [lists(out, f"siw_3_{k}") for k in (1, 2)]
    attack_labels = [{s: {r.label for r in fold[s] if not r.is_live} for s in ("Train", "Test")} for fold in p3]
    assert attack_labels == [{"Train": {-1}, "Test": {-2}}, {"Train": {-2}, "Test": {-1}}]
    dev_rows = {r.video for r in p1["Dev"]}
    assert dev_rows == set(linked(out, "Dev")) and not dev_rows & {r.video for r in p1["Train"]}


def test_rerun_is_stable_and_moves_links(release, adapted, tmp_path):
    """A rerun changes nothing; another seed moves a subject between Train and Dev without stale links."""
    out, first = adapted
    again = adapt(siw, "--siw-root", release, "--out", out, "--counts", "any", "--dev-fraction", "0.34")
    assert again["links"] == {"linked": 0, "unchanged": 35} and again["dev_subjects"] == first["dev_subjects"]
    copy = tmp_path / "copy"
    adapt(siw, "--siw-root", release, "--out", copy, "--counts", "any", "--dev-fraction", "0.34")
    for seed in range(1, 10):
        moved = adapt(siw, "--siw-root", release, "--out", copy, "--counts", "any", "--dev-fraction", "0.34",
                      "--seed", seed)
        if moved["dev_subjects"] != first["dev_subjects"]:
            break
    assert moved["dev_subjects"] != first["dev_subjects"]
    dev_subjects = {AdaptedId.parse(n).subject for n in linked(copy, "Dev")}
    assert dev_subjects == set(moved["dev_subjects"])
    assert len(linked(copy, "Train")) + len(linked(copy, "Dev")) == 21


def test_official_counts_are_checked(release, tmp_path):
    """With --counts official a three-subject replica fails, saying what the release should hold."""
    with pytest.raises(LayoutError) as e:
        adapt(siw, "--siw-root", release, "--out", tmp_path / "o")
    assert "Train subjects: expected 90, found 3" in str(e.value)
    assert "Test subjects: expected 75, found 2" in str(e.value)
    assert not (tmp_path / "o").exists()  # nothing written when the release is refused


def _layout(root, extra=(), drop=()):
    names = ["Train/live/001/001-1-1-1-1", "Train/spoof/001/001-1-2-1-1", "Train/spoof/001/001-1-3-1-1",
             "Train/live/002/002-1-1-1-1", "Train/spoof/002/002-1-3-1-1",
             "Test/live/101/101-1-1-1-1", "Test/spoof/101/101-1-2-2-1", "Test/spoof/101/101-1-3-1-1"]
    files = [n + ext for n in names for ext in (".mov", ".face")]
    return touch(root, [f for f in files if f not in drop] + list(extra))


@pytest.mark.parametrize("extra,drop,message", [
    ((), ("Test/live/101/101-1-1-1-1.mov", "Test/live/101/101-1-1-1-1.face", "Test/spoof/101/101-1-2-2-1.mov",
          "Test/spoof/101/101-1-2-2-1.face", "Test/spoof/101/101-1-3-1-1.mov", "Test/spoof/101/101-1-3-1-1.face"),
     r"missing folder .*Test \(expected Train/, Test/"),
    (("Train/spoof/001/001-1-4-1-1.mov",), (), "does not follow SSS-E-T-M-N"),
    (("Train/spoof/001/001-1-3-5-1.mov",), (), "replay medium 5 outside 1..4"),
    (("Train/spoof/001/001-1-2-1-1.mp4",), (), "same video as 001-1-2-1-1.mov"),
    (("Train/spoof/001/001-1-2-1-1-m.mov",), (), "does not follow SSS-E-T-M-N"),
    (("Test/live/001/001-1-1-1-2.mov", "Test/live/001/001-1-1-1-2.face"), (),
     "subject 001 appears in both Train and Test"),
    ((), ("Train/spoof/002/002-1-3-1-1.face",), "missing .face box file of 002-1-3-1-1.mov"),
    (("Train/spoof/002/002-1-1-2-1.mov", "Train/spoof/002/002-1-1-2-1.face"), (), "does not belong in spoof/"),
    (("Train/live/003/004-1-1-1-1.mov", "Train/live/003/004-1-1-1-1.face"), (), "differs from its folder 003"),
])
def test_malformed_layouts_name_the_problem(tmp_path, extra, drop, message):
    """Each malformed layout stops the adapter with a message naming the file or folder and the rule."""
    root = _layout(tmp_path / "SiW_release", extra, drop)
    with pytest.raises(LayoutError, match=message):
        adapt(siw, "--siw-root", root, "--out", tmp_path / "out", "--counts", "any", "--dev-fraction", "0.5")


def _complete(root, extra=()):
    """Empty files of a layout every SiW protocol can be written from: Train 001-002, Test 101, each with a live
    video, both print media and the four replay media, and their .face files."""
    names = [f"{split}/{'live' if t == 1 else 'spoof'}/{s}/{s}-1-{t}-{m}-1" for split, s in
             (("Train", "001"), ("Train", "002"), ("Test", "101")) for t, m in [(1, 1), (2, 1), (2, 2)] +
             [(3, k) for k in range(1, 5)]]
    return touch(root, [n + ext for n in names for ext in (".mov", ".face")] + list(extra))


# The Test live videos of subject 153 as the public bob.db.siw lists name them (eval_files.lst): sensor 2's four
# carry the '.m' variant.
REAL_153 = [f"153-{e}-1-{m}-{n}" + (".m" if e == 2 else "") for e in (1, 2) for m in (1, 2) for n in (1, 2)]


def test_real_release_names_with_the_m_variant(tmp_path):
    """NNN-2-1-M-S.m.mov is accepted: its clip keeps the variant (…-m), distinct from a plain name, its .face file
    is found beside it, and it enters the Test lists like any other live video."""
    extra = [f"Test/live/153/{n}{ext}" for n in REAL_153 for ext in (".mov", ".face")]
    root = _complete(tmp_path / "SiW_release", extra)
    out = tmp_path / "out"
    summary = adapt(siw, "--siw-root", root, "--out", out, "--counts", "any", "--dev-fraction", "0.5")
    test = linked(out, "Test")
    assert "SIW_153_live_153-2-1-1-1-m" in test and "SIW_153_live_153-1-1-1-1" in test
    assert sum(n.startswith("SIW_153_live_") for n in test) == 8
    assert (out / "Test_files" / "SIW_153_live_153-2-1-2-2-m.mov").resolve().name == "153-2-1-2-2.m.mov"
    assert {r.video for r in lists(out, "siw_1")["Test"] if r.is_live} >= {f"SIW_153_live_{n.replace('.', '-')}"
                                                                          for n in REAL_153}
    boxes = import_released_boxes.face_files(out, "SIW", ".face")
    assert boxes["SIW_153_live_153-2-1-1-2-m"] == os.path.abspath(root / "Test/live/153/153-2-1-1-2.m.face")
    table = {row.split(",")[0]: row for row in (out / "metadata" / "SIW_videos.csv").read_text().splitlines()}
    assert table["SIW_153_live_153-2-1-1-1-m"].endswith(",m") and table["SIW_153_live_153-1-1-1-1"].endswith(",")
    assert summary["counts"]["Test"]["subjects"] == 2  # 101 and 153
    both = _complete(tmp_path / "both", ["Test/live/101/101-2-1-1-1.mov", "Test/live/101/101-2-1-1-1.m.mov",
                                         "Test/live/101/101-2-1-1-1.face", "Test/live/101/101-2-1-1-1.m.face"])
    adapt(siw, "--siw-root", both, "--out", tmp_path / "out2", "--counts", "any", "--dev-fraction", "0.5")
    assert {"SIW_101_live_101-2-1-1-1", "SIW_101_live_101-2-1-1-1-m"} <= set(linked(tmp_path / "out2", "Test"))


def test_stray_files_are_left_alone_and_listed(tmp_path):
    """A file that is neither a video nor a .face file does not stop the adapter; the summary lists it."""
    root = _complete(tmp_path / "SiW_release", ["Train/spoof/001/notes.txt", "Test/live/101/Thumbs.db"])
    summary = adapt(siw, "--siw-root", root, "--out", tmp_path / "out", "--counts", "any", "--dev-fraction", "0.5")
    assert sorted(Path(p).name for p in summary["ignored_files"]) == ["Thumbs.db", "notes.txt"]
    assert not any("notes" in n for s in ("Train", "Dev", "Test") for n in linked(tmp_path / "out", s))


def _annexed(src: Path, release: Path) -> Path:
    """``src`` rewritten as a git-annex/DataLad-style tree: every file moved into a content store under a name of
    its own (as annex keys are), the release tree holding relative symlinks to it."""
    store = release.parent / ".store"
    for k, f in enumerate(sorted(p for p in src.rglob("*") if p.is_file())):
        key = store / f"{k:02d}" / f"SHA256E-s{f.stat().st_size}--{k:04d}{f.suffix}"
        key.parent.mkdir(parents=True, exist_ok=True)
        f.rename(key)
        link = release / f.relative_to(src)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(key, link.parent))
    return release


def test_symlinked_release_finds_its_face_files(release, tmp_path):
    """With a release of links into a content store, each box file is looked up beside the link (where the
    release shows it), not beside the link's target: every video of the replica gets its boxes."""
    copy = tmp_path / "plain"
    shutil.copytree(release, copy)
    annexed = _annexed(copy, tmp_path / "SiW_release")
    video = annexed / "Test/spoof/101/101-1-3-3-1.mov"
    assert video.is_symlink() and not video.resolve().with_suffix(".face").exists()
    out, prep = tmp_path / "adapted", tmp_path / "prep"
    adapt(siw, "--siw-root", annexed, "--out", out, "--counts", "any", "--dev-fraction", "0.34")
    table = {r.split(",")[0]: r.split(",") for r in (out / "metadata" / "SIW_videos.csv").read_text().splitlines()}
    header = table["video"]
    row = dict(zip(header, table["SIW_101_replay3_101-1-3-3-1"]))
    assert row["release_path"] == str(video) and row["source"] == str(video.resolve())
    s = extract_frame.main(extract_frame.get_args_parser().parse_args(["--input", str(out), "--prep-root", str(prep)]))
    assert s.ok and s.videos["done"] == 35
    s = import_face_boxes(out, prep)
    assert s.ok and s.videos["done"] == 35 and s.counts["boxes written"] == 70
    x1, y1, x2, y2 = map(int, (annexed / "Test/spoof/101/101-1-3-3-1.face").read_text().splitlines()[0].split())
    box = read_box(prep / "test_bbox" / "SIW_101_replay3_101-1-3-3-1" / "SIW_101_replay3_101-1-3-3-1_1_scene.dat")
    assert (box.x, box.y, box.w, box.h) == (x1, y1, x2 - x1, y2 - y1)


def test_dangling_links_are_refused_by_name(tmp_path):
    """A link whose content is missing (an annex tree that was not fetched) stops the adapter, naming it."""
    root = _layout(tmp_path / "SiW_release")
    (root / "Train/spoof/002/002-1-3-1-1.mov").unlink()
    (root / "Train/spoof/002/002-1-3-1-1.mov").symlink_to(tmp_path / "store" / "missing.mov")
    with pytest.raises(LayoutError, match=r"002-1-3-1-1.mov: link to .*missing.mov, which does not exist"):
        adapt(siw, "--siw-root", root, "--out", tmp_path / "out", "--counts", "any", "--dev-fraction", "0.5")


def test_face_files_optional_and_empty_protocols_refused(tmp_path):
    """--face-files false accepts videos without .face; a fold whose Test has no attack is refused."""
    root = _layout(tmp_path / "SiW_release", drop=("Train/spoof/002/002-1-3-1-1.face",))
    with pytest.raises(LayoutError) as e:
        adapt(siw, "--siw-root", root, "--out", tmp_path / "out", "--counts", "any", "--dev-fraction", "0.5",
              "--face-files", "false")
    assert "missing .face" not in str(e.value)
    assert "Protocol_siw_2/Test_2.txt would have no attacks (1 rows)" in str(e.value)  # no replay medium 2
    assert "Protocol_siw_1/" not in str(e.value)


def test_cli_error_and_hint(tmp_path):
    """The command line exits 1 with the message (no traceback) and points one folder down when needed."""
    _layout(tmp_path / "download" / "SiW_release")
    r = run_module("data.adapters.siw", "--siw-root", tmp_path / "download", "--out", tmp_path / "out")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "missing folder" in r.stderr and f"hint: {tmp_path / 'download' / 'SiW_release'} holds Train/" in r.stderr


@pytest.mark.parametrize("how", [["data/adapters/siw.py"], ["-m", "data.adapters.siw"],
                                 ["data/import_released_boxes.py"],
                                 ["-m", "data.synthetic_releases"]])
def test_help_both_ways(how):
    r = cli_help(how)
    assert r.returncode == 0 and "--" in r.stdout and "usage" in r.stdout


@pytest.fixture(scope="module")
def prep(adapted, tmp_path_factory):
    """Frames of every video of the adapted replica."""
    out, _ = adapted
    prep = tmp_path_factory.mktemp("prep")
    s = extract_frame.main(extract_frame.get_args_parser().parse_args(["--input", str(out), "--prep-root", str(prep)]))
    assert s.ok and s.videos["done"] == 35
    return prep


def import_face_boxes(out, prep, *extra):
    return import_released_boxes.main(import_released_boxes.get_args_parser().parse_args(
        ["--prep-root", str(prep), "--adapted-root", str(out), *extra]))


class TestStagesOnTheReplica:

    def test_face_boxes_become_dat_files(self, adapted, prep, release):
        """Each .face line x1 y1 x2 y2 becomes the .dat box x y w h of that frame, with a bbox marker."""
        out, _ = adapted
        s = import_face_boxes(out, prep)
        assert s.ok and s.videos["done"] == 35 and s.counts["boxes written"] == 70
        video = "SIW_101_replay3_101-1-3-3-1"
        x1, y1, x2, y2 = map(int, (release / "Test/spoof/101/101-1-3-3-1.face").read_text().splitlines()[1].split())
        box = read_box(prep / "test_bbox" / video / f"{video}_2_scene.dat")
        assert (box.x, box.y, box.w, box.h) == (x1, y1, x2 - x1, y2 - y1)
        assert (prep / "state" / "bbox" / "test" / f"{video}.json").is_file()
        assert import_face_boxes(out, prep).videos["skipped"] == 35  # rerun: nothing to do

    def test_bad_and_missing_face_files(self, adapted, prep, release):
        """A zero line means no face; a malformed line or a missing file fails that video by name."""
        out, _ = adapted
        face = release / "Test/live/102/102-1-1-1-1.face"
        good = face.read_text()
        try:
            face.write_text("0 0 0 0\n" + good.splitlines()[1] + "\n")
            s = import_face_boxes(out, prep, "--overwrite", "--splits", "test")
            assert s.ok and s.counts["frames without a face"] == 1
            face.write_text("10 10 50\n")
            s = import_face_boxes(out, prep, "--overwrite", "--splits", "test")
            assert not s.ok and any(f"{face}:1: expected four" in p for p in s.problems)
            face.unlink()
            s = import_face_boxes(out, prep, "--overwrite", "--splits", "test")
            assert any(f"{face}: box file not found" in f for f in s.failures)
        finally:
            face.write_text(good)
        assert import_face_boxes(out, prep, "--overwrite", "--splits", "test").ok

    def test_generator_list_with_first_frames(self, adapted, prep):
        """siw_1 with --first-frames 1 lists frame 1 of every Train video with subject and spoof code."""
        out, _ = adapted
        import_face_boxes(out, prep)
        s = make_train_list.main(make_train_list.get_args_parser().parse_args(
            ["--prep-root", str(prep), "--oulu-root", str(out), "--protocol", "siw_1", "--first-frames", "1",
             "--overwrite"]))
        assert s.ok
        lines = (prep / "train_list" / "train_list_oulu_psiw_1.txt").read_text().splitlines()
        assert len(lines) == len(linked(out, "Train"))
        for line in lines:
            path, subject, live, code = line.split()
            vid = AdaptedId.parse(path.split("/")[0])
            assert path.endswith("_1_scene.jpg") and subject == vid.subject
            assert (live, int(code)) == (str(int(vid.is_live)), vid.spoof_code)


def test_generator_refuses_too_few_spoof_classes(adapted, prep, tmp_path):
    """SiW lists carry six spoof classes: train_generator.py asks for --num-spoof-types 6 instead of crashing."""
    import argparse

    import train_generator

    out, _ = adapted
    import_face_boxes(out, prep)
    make_train_list.main(make_train_list.get_args_parser().parse_args(
        ["--prep-root", str(prep), "--oulu-root", str(out), "--protocol", "siw_1", "--overwrite"]))
    argv = ["--prep-root", str(prep), "--protocol", "siw_1", "--output-dir", str(tmp_path / "gen"), "--image-size",
            "8", "--hdim", "8", "--batch-size", "2", "--workers", "0", "--device", "cpu", "--no-identity-loss"]
    args = argparse.ArgumentParser(parents=[train_generator.get_args_parser()]).parse_args(argv)
    with pytest.raises(SystemExit, match="pass --num-spoof-types 6"):
        train_generator.main(args)
