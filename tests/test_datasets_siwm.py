"""Tests for the SiW-M adapter (data/adapters/siwm.py): its layout checks, the leave-one-spoof-type-out
protocols, the replica of its layout, and the generator on its thirteen spoof classes."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from data import extract_frame, import_released_boxes, make_train_list
from data.adapters import siwm
from data.adapters.common import LayoutError
from data.other_benchmarks import BENCHMARKS, AdaptedId
from data.synthetic_releases import face_lines, make_siwm_release
from adapter_helpers import adapt, linked, lists, run_module, touch
from cli_helpers import cli_help

TYPES = BENCHMARKS["SIWM"].instrument_names
LIVE_TRAIN, LIVE_TEST = ["Live/Train/Live_1.mov", "Live/Train/Live_2.mov", "Live/Train/Live_3.mov"], \
    ["Live/Test/Live_4.mov", "Live/Test/Live_5.mov"]


def _names(types=TYPES, per_type=2):
    """Release paths of ``per_type`` videos of each type (a type with two prefixes alternates them)."""
    folders = {f.instrument: f for f in siwm.SPOOF_FOLDERS}
    return [f"{folders[t].path}/{folders[t].prefixes[(n - 1) % len(folders[t].prefixes)]}_{n}.mov"
            for t in types for n in range(1, per_type + 1)]


def _layout(root: Path, types=TYPES, extra=(), drop=()) -> Path:
    return touch(root, [p for p in LIVE_TRAIN + LIVE_TEST + _names(types) if p not in drop] + list(extra))


def _adapt(root, out, *more):
    return adapt(siwm, "--siwm-root", root, "--out", out, "--counts", "any", "--dev-fraction", "0.5", *more)


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    """All thirteen types with two (empty) videos each, three Train and two Test live videos."""
    base = tmp_path_factory.mktemp("siwm")
    root = _layout(base / "SiW-M")
    return root, base / "adapted", _adapt(root, base / "adapted")


def test_each_fold_leaves_one_type_out(adapted):
    """siwm_k tests on type k and the Test live videos only; Train and Dev hold the twelve other types and the
    Train live videos, never the same video twice; the labels name the attack kind."""
    _, out, summary = adapted
    assert summary["held_out_types"] == {f"siwm_{k}": t for k, t in enumerate(TYPES, 1)}
    for k, held in enumerate(TYPES, 1):
        fold = lists(out, f"siwm_{k}")
        ids = {s: [AdaptedId.parse(r.video) for r in rows] for s, rows in fold.items()}
        assert {v.instrument for v in ids["Test"] if not v.is_live} == {held}
        assert sum(not v.is_live for v in ids["Test"]) == 2
        trained = {v.instrument for s in ("Train", "Dev") for v in ids[s] if not v.is_live}
        assert trained == set(TYPES) - {held}
        assert sorted(v.clip for v in ids["Test"] if v.is_live) == ["Live-4", "Live-5"]
        assert sorted(v.clip for s in ("Train", "Dev") for v in ids[s] if v.is_live) == ["Live-1", "Live-2", "Live-3"]
        assert not {r.video for r in fold["Train"]} & {r.video for r in fold["Dev"]}
        kind = BENCHMARKS["SIWM"].kind(held)
        assert {r.label for r in fold["Test"] if not r.is_live} == {{"print": -1, "replay": -2, "mask": -3,
                                                                    "makeup": -4, "partial": -5}[kind]}
    assert len(summary["dev_videos"]) == 13 + 2  # one of each type's two videos, two of the three Train live ones


def test_spoof_videos_are_linked_into_test_and_one_training_split(adapted):
    """A spoof video is Test in its own fold and Train or Dev in the others: it is linked into Test_files/ and into
    exactly one of Train_files/ and Dev_files/; a live video into one folder. The table says where."""
    _, out, _ = adapted
    where = {s: set(linked(out, s)) for s in ("Train", "Dev", "Test")}
    spoof = {n for s in where.values() for n in s if not AdaptedId.parse(n).is_live}
    assert len(spoof) == 26 and spoof <= where["Test"]
    assert all((n in where["Train"]) != (n in where["Dev"]) for n in spoof)
    assert len(where["Test"] - spoof) == 2 and not (where["Train"] | where["Dev"]) & (where["Test"] - spoof)
    link = out / "Test_files" / "SIWM_unknown_partialpaper_Partial-Mouth-2.mov"
    assert link.is_symlink() and link.resolve().name == "Partial_Mouth_2.mov"
    table = [r.split(",") for r in (out / "metadata" / "SIWM_videos.csv").read_text().splitlines()]
    split = {r[0]: r[table[0].index("split")] for r in table[1:]}
    assert split["SIWM_unknown_live_Live-4"] == "Test"
    assert {split[n] for n in spoof} == {"Train+Test", "Dev+Test"}


def test_rerun_is_stable_and_removes_links_of_a_vanished_video(adapted, tmp_path):
    """A rerun links nothing new; a video that left the release loses its links in every split folder."""
    root, out, first = adapted
    again = _adapt(root, out)
    assert again["links"] == {"linked": 0, "unchanged": first["links"]["linked"]}
    copy_root = _layout(tmp_path / "SiW-M")
    copy = tmp_path / "out"
    _adapt(copy_root, copy)
    (copy_root / "Replay/Replay_1.mov").unlink()
    (copy_root / "Replay/Replay_3.mov").touch()
    _adapt(copy_root, copy)
    names = [n for s in ("Train", "Dev", "Test") for n in linked(copy, s)]
    assert "SIWM_unknown_replay_Replay-1" not in names and names.count("SIWM_unknown_replay_Replay-3") == 2


def test_official_counts_need_every_folder_and_report_the_papers_counts(tmp_path):
    """--counts official wants all fifteen folders; the paper's (unverified) counts are reported, not enforced.
    A partial copy adapts with --counts any, keeping the paper's fold numbers for the types it has."""
    root = _layout(tmp_path / "SiW-M")
    summary = adapt(siwm, "--siwm-root", root, "--out", tmp_path / "o1", "--dev-fraction", "0.5")
    assert summary["video_totals"]["found"]["halfmask"] == 2 and summary["video_totals"]["paper"]["live"] == 660
    partial = _layout(tmp_path / "partial", types=("print", "silicone", "partialpaper"))
    with pytest.raises(LayoutError, match=r"missing folder .*Replay \(expected Live/Train/, Live/Test/ and the "
                                          r"thirteen spoof-type folders"):
        adapt(siwm, "--siwm-root", partial, "--out", tmp_path / "o2", "--dev-fraction", "0.5")
    out = tmp_path / "o3"
    summary = _adapt(partial, out)
    assert summary["held_out_types"] == {"siwm_2": "print", "siwm_4": "silicone", "siwm_13": "partialpaper"}
    assert sorted(p.name for p in (out / "Protocols" / "Protocol_siwm").iterdir())[:3] == ["Dev_13.txt", "Dev_2.txt",
                                                                                         "Dev_4.txt"]


@pytest.mark.parametrize("extra,drop,message", [
    (["Mask/HalfMask/Mask_Silicone_3.mov"], [], r"Mask_Silicone_3.mov: unexpected name \(expected Mask_Half_<n>.mov "
                                                r"in Mask/HalfMask/\)"),
    (["Replay/Replay_3.mp4"], [], r"Replay_3.mp4: unexpected name"),
    (["Partial/PaperCut/Partial_Nose_3.mov"], [], r"expected Partial_Eye_<n>.mov or Partial_Mouth_<n>.mov"),
    (["Live/Test/Live_1.mov"], [], r"Live/Test/Live_1.mov: same name as .*Live/Train/Live_1.mov"),
    ([], ["Paper/Paper_1.mov", "Paper/Paper_2.mov"], r"Paper: no video \(expected Paper_<n>.mov\)"),
    ([], LIVE_TEST, r"Live/Test: no video"),
])
def test_malformed_layouts_name_the_problem(tmp_path, extra, drop, message):
    root = _layout(tmp_path / "SiW-M", extra=extra, drop=drop)
    if drop:  # the folder itself stays, empty
        for p in drop:
            (root / p).parent.mkdir(parents=True, exist_ok=True)
    with pytest.raises(LayoutError, match=message):
        _adapt(root, tmp_path / "out")


def test_stray_files_dangling_links_and_a_single_type(tmp_path):
    """A stray file is left alone and listed; a link to missing content is refused by name; a copy with one spoof
    type has nothing to set a threshold on (Dev without attacks) and says so."""
    root = _layout(tmp_path / "SiW-M", extra=["Mask/HalfMask/notes.txt"])
    assert [Path(p).name for p in _adapt(root, tmp_path / "o1")["ignored_files"]] == ["notes.txt"]
    (root / "Makeup/Cosmetic/Makeup_Co_2.mov").unlink()
    (root / "Makeup/Cosmetic/Makeup_Co_2.mov").symlink_to(tmp_path / "annex" / "key.mov")
    with pytest.raises(LayoutError, match=r"Makeup_Co_2.mov: link to .*key.mov, which does not exist"):
        _adapt(root, tmp_path / "o2")
    one = _layout(tmp_path / "one", types=("replay",))
    with pytest.raises(LayoutError, match=r"Protocol_siwm/Dev_1.txt would have no attacks"):
        _adapt(one, tmp_path / "o3")


def test_replica_layout_cli_and_help(tmp_path):
    """The replica writes the layout the adapter reads; the command line exits 1 with the message on a bad root."""
    root = make_siwm_release(tmp_path / "SiW-M", train_live=1, test_live=1, per_type=2,
                             types=("replay", "partialpaper"), frames=1, size=(64, 64), show_progress=False)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*.mov")) == [
        "Live/Test/Live_2.mov", "Live/Train/Live_1.mov", "Partial/PaperCut/Partial_Eye_1.mov",
        "Partial/PaperCut/Partial_Mouth_2.mov", "Replay/Replay_1.mov", "Replay/Replay_2.mov"]
    with pytest.raises(ValueError, match="unknown SiW-M spoof type"):
        make_siwm_release(tmp_path / "x", types=("wax",), show_progress=False)
    r = run_module("data.adapters.siwm", "--siwm-root", tmp_path, "--out", tmp_path / "out")  # one folder too high
    assert r.returncode == 1 and "missing folder" in r.stderr and "Traceback" not in r.stderr
    assert f"hint: {root} holds Live/; pass that folder instead" in r.stderr
    for how in (["data/adapters/siwm.py"], ["-m", "data.adapters.siwm"]):
        r = cli_help(how)
        assert r.returncode == 0 and "--siwm-root" in r.stdout and "leave" in r.stdout


def test_generator_trains_with_thirteen_spoof_classes(tmp_path):
    """A fold's generator list numbers the spoof classes of all thirteen types (the held-out one stays unused):
    train_generator.py asks for --num-spoof-types 13 when given fewer, and trains with 13."""
    import train_generator

    root = make_siwm_release(tmp_path / "SiW-M", train_live=2, test_live=1, per_type=2,
                             types=("replay", "print", "partialpaper"), frames=2, size=(128, 96), show_progress=False)
    for video in root.rglob("*.mov"):  # boxes around where the renderer draws the face, in SiW's .face format
        video.with_suffix(".face").write_text(face_lines(2, (128, 96), video.name))
    out, prep = tmp_path / "adapted", tmp_path / "prep"
    _adapt(root, out)
    s = extract_frame.main(extract_frame.get_args_parser().parse_args(["--input", str(out), "--prep-root", str(prep)]))
    assert s.ok
    s = import_released_boxes.main(import_released_boxes.get_args_parser().parse_args(
        ["--prep-root", str(prep), "--adapted-root", str(out), "--dataset", "SIWM"]))
    assert s.ok and s.videos["done"] == 3 + 2 * 6  # live once, every spoof video in two split folders
    assert make_train_list.main(make_train_list.get_args_parser().parse_args(
        ["--prep-root", str(prep), "--oulu-root", str(out), "--protocol", "siwm_1", "--overwrite"])).ok
    rows = (prep / "train_list" / "train_list_oulu_psiwm_1.txt").read_text().splitlines()
    assert {r.split()[3] for r in rows if r.split()[2] == "0"} == {"3", "14"}  # print (class 1), partial paper (12)

    def run(n):
        argv = ["--prep-root", str(prep), "--protocol", "siwm_1", "--output-dir", str(tmp_path / "gen"),
                "--image-size", "8", "--hdim", "8", "--batch-size", "2", "--workers", "0", "--device", "cpu",
                "--no-identity-loss", "--epochs", "1", "--max-iters-per-epoch", "1", "--num-spoof-types", str(n)]
        return train_generator.main(argparse.ArgumentParser(parents=[train_generator.get_args_parser()])
                                    .parse_args(argv))

    with pytest.raises(SystemExit, match="pass --num-spoof-types 13"):
        run(12)
    run(13)
    assert json.loads((tmp_path / "gen" / "args.json").read_text())["num_spoof_types"] == 13
    assert (tmp_path / "gen" / "checkpoint.pth").is_file() and (tmp_path / "gen" / "checkpoints" / "0001.pth").is_file()
