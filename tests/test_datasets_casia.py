"""Tests for the CASIA-MFSD adapter (data/adapters/casia.py) on a synthetic replica of the release layout."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from data.adapters import casia
from data.adapters.common import LayoutError
from data.other_benchmarks import AdaptedId
from data.synthetic_releases import CASIA_FILES, make_casia_release
from adapter_helpers import adapt, linked, lists, run_module, touch
from cli_helpers import cli_help


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """Three training and two test subjects with all twelve files, two frames each."""
    return make_casia_release(tmp_path_factory.mktemp("casia") / "CASIA-MFSD", train=3, test=2, frames=2,
                              size=(128, 96), show_progress=False)


@pytest.fixture(scope="module")
def adapted(release, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapted")
    return out, adapt(casia, "--casia-root", release, "--out", out, "--counts", "any", "--dev-fraction", "0.34")


def test_ids_kinds_and_qualities(adapted, release):
    """Each file maps to its presentation and quality; cut and warped photos are print (-1), video replay (-2)."""
    out, summary = adapted
    assert sum(len(linked(out, s)) for s in ("Train", "Dev", "Test")) == 60
    test = linked(out, "Test")
    assert {AdaptedId.parse(n).subject for n in test} == {"te01", "te02"}
    assert (out / "Test_files" / "CASIA_te02_cut_high.avi").resolve() == (release / "test_release/2/HR_3.avi").resolve()
    assert (out / "Test_files" / "CASIA_te01_live_normal.avi").resolve().name == "2.avi"
    rows = {r.video: r.label for r in lists(out, "casia")["Test"]}
    assert rows["CASIA_te01_warped_low"] == rows["CASIA_te01_cut_normal"] == -1
    assert rows["CASIA_te01_video_high"] == -2 and rows["CASIA_te01_live_high"] == 1
    assert summary["protocols"]["casia"]["Test"] == {"bona_fide": 6, "print": 12, "replay": 6}


def test_dev_is_carved_from_train_subjects(adapted):
    """CASIA-MFSD has no Dev set: one of the three training subjects (seeded) becomes Dev, disjoint from Train."""
    out, summary = adapted
    p = lists(out, "casia")
    dev = {AdaptedId.parse(r.video).subject for r in p["Dev"]}
    train = {AdaptedId.parse(r.video).subject for r in p["Train"]}
    assert dev == set(summary["dev_subjects"]) and len(dev) == 1 and not dev & train
    assert dev | train == {"tr01", "tr02", "tr03"} and len(p["Dev"]) == 12


def test_official_counts(release, tmp_path):
    """--counts official names the subject counts and every subject folder missing some of the twelve files."""
    with pytest.raises(LayoutError) as e:
        adapt(casia, "--casia-root", release, "--out", tmp_path / "o")
    assert "Train subjects: expected 20, found 3" in str(e.value)
    assert "Test subjects: expected 30, found 2" in str(e.value)
    partial = touch(tmp_path / "partial", [f"train_release/1/{n}.avi" for n in CASIA_FILES if n != "HR_2"]
                    + [f"test_release/1/{n}.avi" for n in CASIA_FILES])
    with pytest.raises(LayoutError, match=r"train_release/1: expected the 12 files .* found 11, missing HR_2.avi"):
        adapt(casia, "--casia-root", partial, "--out", tmp_path / "o")


@pytest.mark.parametrize("files,message", [
    (["train_release/1/1.avi", "train_release/1/3.avi", "train_release/2/1.avi", "train_release/2/3.avi"],
     r"missing folder .*test_release"),
    (["train_release/1/9.avi"], r"9.avi: unexpected file \(expected one of 1.avi, 2.avi, HR_1.avi"),
    (["train_release/one/1.avi"], "expected a subject folder named by a positive number"),
    (["train_release/1/1.mp4"], "unexpected file"),
])
def test_malformed_layouts(tmp_path, files, message):
    """A missing split folder, an unknown file name or a badly named subject folder stops the adapter."""
    base = ["train_release/1/1.avi", "train_release/1/3.avi", "train_release/2/1.avi", "train_release/2/7.avi",
            "test_release/1/1.avi", "test_release/1/5.avi"]
    root = touch(tmp_path / "CASIA-MFSD", files)
    if "test_release" not in message:  # the other cases add one bad file to a good layout
        touch(root, base)
    with pytest.raises(LayoutError, match=message):
        adapt(casia, "--casia-root", root, "--out", tmp_path / "out", "--counts", "any", "--dev-fraction", "0.5")


def test_dev_carve_needs_two_training_subjects(tmp_path):
    """One training subject cannot give both Train and Dev: the message says why."""
    root = touch(tmp_path / "c", ["train_release/1/1.avi", "train_release/1/3.avi", "test_release/1/1.avi",
                                  "test_release/1/3.avi"])
    with pytest.raises(LayoutError, match="cannot carve a Dev split of fraction 0.2 from 1 training subjects"):
        adapt(casia, "--casia-root", root, "--out", tmp_path / "out", "--counts", "any")


def test_hardlink_and_copy_modes(release, tmp_path):
    """--link hardlink and copy give real files with the original's bytes."""
    for mode in ("hardlink", "copy"):
        out = tmp_path / mode
        adapt(casia, "--casia-root", release, "--out", out, "--counts", "any", "--dev-fraction", "0.34", "--link", mode)
        f = out / "Test_files" / "CASIA_te01_video_low.avi"
        assert not f.is_symlink() and f.read_bytes() == (release / "test_release/1/7.avi").read_bytes()


def test_cli_error_and_help(tmp_path):
    r = run_module("data.adapters.casia", "--casia-root", tmp_path / "nowhere", "--out", tmp_path / "out")
    assert r.returncode == 1 and "missing folder" in r.stderr and "Traceback" not in r.stderr
    for how in (["data/adapters/casia.py"], ["-m", "data.adapters.casia"]):
        r = cli_help(how)
        assert r.returncode == 0 and "--dev-fraction" in r.stdout


def test_quality_names_say_which_source_they_follow(adapted):
    """Odd files are called low quality and even ones normal (the adapter's reading of the paper); the metadata
    table keeps bob.db.casia_fasd's opposite name beside it, and the summary says which rests on what."""
    out, summary = adapted
    rows = {r.split(",")[0]: r.split(",") for r in (out / "metadata" / "CASIA_videos.csv").read_text().splitlines()}
    header = rows.pop("video")
    by_file = {(row["subject"], row["file"]): row for row in (dict(zip(header, r)) for r in rows.values())}
    for name, ours, bobs in (("1.avi", "low", "normal"), ("4.avi", "normal", "low"), ("HR_3.avi", "high", "high")):
        row = by_file[("te01", name)]
        assert (row["quality"], row["quality_bob"]) == (ours, bobs)
    assert any("bob.db.casia_fasd" in a for a in summary["assumptions"])
    assert any("bob.db.casia_fasd" in c for c in summary["checked"])


def test_stray_files_are_left_alone_and_dangling_links_refused(release, tmp_path):
    """A readme beside the videos is listed, not fatal; a video link without content stops the adapter."""
    root = tmp_path / "CASIA-MFSD"
    shutil.copytree(release, root)
    (root / "test_release/2/readme.txt").write_text("notes\n")
    summary = adapt(casia, "--casia-root", root, "--out", tmp_path / "out", "--counts", "any", "--dev-fraction", "0.34")
    assert [Path(p).name for p in summary["ignored_files"]] == ["readme.txt"]
    (root / "train_release/1/7.avi").unlink()
    (root / "train_release/1/7.avi").symlink_to(tmp_path / "annex" / "7.avi")
    with pytest.raises(LayoutError, match=r"train_release/1/7.avi: link to .*annex/7.avi, which does not exist"):
        adapt(casia, "--casia-root", root, "--out", tmp_path / "out", "--counts", "any", "--dev-fraction", "0.34")
