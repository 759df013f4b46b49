"""End-to-end: the dataset scripts on synthetic replicas of the release layouts, through the real shell
scripts (adapter, frames, boxes, depth, generator, generated pairs, crops, CDCN + DUM, test, metrics).

Sizes are tiny (two frames per video, 32 px crops, one epoch), so the numbers mean nothing; the tests
check that every stage runs on the adapted layouts and that the outputs follow the metric conventions.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from DUM.metrics import read_scores
from data.synthetic_releases import make_casia_release, make_replay_release, make_siw_release, make_siwm_release

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
FRAME = {"frames": 2, "size": (128, 96), "show_progress": False}
TINY = {"DEVICE": "cpu", "WORKERS": "1", "NO_IDENTITY_LOSS": "1", "GEN_IMAGE_SIZE": "16", "GEN_BATCH_SIZE": "4",
        "GEN_EPOCHS": "1", "GEN_ITERS_PER_EPOCH": "1", "GEN_SAVE_EVERY": "1", "NUM_PAIRS": "4",
        "PAIRS_PER_FOLDER": "2", "DEPTH_BACKEND": "mask", "IMAGE_SIZE": "32", "MAP_SIZE": "4", "BATCH_SIZE": "4",
        "EPOCHS": "1", "EVAL_START": "1", "EVAL_EVERY": "1", "AMP": "false"}


def script(path: str, tmp: Path, **env) -> subprocess.CompletedProcess:
    """Run one of scripts/ with this interpreter, the tiny settings and the roots under ``tmp``."""
    roots = {"ADAPTED_ROOT": tmp / "adapted", "PREP_ROOT": tmp / "prep", "CROP_ROOT": tmp / "crop",
             "RUNS_DIR": tmp / "runs"}
    full = dict(os.environ, DSDG_PYTHON=sys.executable, DSDG_NO_PROGRESS="1", **TINY,
                **{k: str(v) for k, v in {**roots, **env}.items()})
    r = subprocess.run(["bash", path], cwd=REPO, env=full, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{path} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r


def test_cross_casia_to_replay(tmp_path):
    """Both datasets adapted into one root and prepared (MTCNN boxes); the CASIA-MFSD model's Dev threshold is
    applied to Replay-Attack's Test videos, with the target-EER rule beside it. Plain CDCN + DUM keeps it short
    (the generator runs on adapted data in the SiW test)."""
    make_casia_release(tmp_path / "CASIA-MFSD", train=2, test=1, files=("1", "3", "5", "7"), **FRAME)
    make_replay_release(tmp_path / "replayattack", clients={"train": 1, "devel": 1, "test": 1}, **FRAME)
    script("scripts/datasets/01_adapt.sh", tmp_path, DATASET="casia", RELEASE_ROOT=tmp_path / "CASIA-MFSD",
           COUNTS="any", DEV_FRACTION="0.5")
    script("scripts/datasets/01_adapt.sh", tmp_path, DATASET="replay", RELEASE_ROOT=tmp_path / "replayattack",
           COUNTS="any")
    script("scripts/datasets/02_prepare.sh", tmp_path)
    r = script("scripts/cross/01_casia_to_replay.sh", tmp_path, GENERATED="0")
    assert "HTER at Test EER" in r.stdout

    runs = tmp_path / "runs"
    assert not (runs / "generator_pcasia").exists()
    cross = runs / "cross_casia_to_replay"
    dev, test = read_scores(cross / "dev_scores.txt"), read_scores(cross / "test_scores.txt")
    assert all(v.startswith("CASIA_") for v in dev.ids) and all(v.startswith("REPLAY_") for v in test.ids)
    assert sorted(test.labels.tolist()) == [-2, -2, -1, 1]
    m = json.loads((cross / "metrics.json").read_text())
    assert m["files"] == {"dev": str(cross / "dev_scores.txt"), "test": str(cross / "test_scores.txt")}
    assert 0 <= m["hter"] <= 1 and m["threshold_source"] == "dev_eer"
    assert set(m["target_eer"]) == {"rule", "threshold", "fpr", "fnr", "hter"}
    intra = json.loads((runs / "protocol_casia.json").read_text())
    assert intra["files"]["test"].endswith("test_pcasia/test_scores.txt")


def test_siw_protocol_1_on_the_first_frames(tmp_path):
    """SiW with its .face boxes (no MTCNN): protocol 1 trains a six-class generator and CDCN + DUM on frame 1 of
    each training video only, and is tested on every frame."""
    make_siw_release(tmp_path / "SiW_release", train=2, test=1, **FRAME)
    script("scripts/datasets/01_adapt.sh", tmp_path, DATASET="siw", RELEASE_ROOT=tmp_path / "SiW_release",
           COUNTS="any", DEV_FRACTION="0.5")
    script("scripts/datasets/02_prepare.sh", tmp_path, BOXES="face")
    script("scripts/datasets/03_intra.sh", tmp_path, DATASET="siw", PROTOCOLS="siw_1", SIW_FIRST_FRAMES="1")

    first = tmp_path / "crop_first1"
    train_frames = [p.name for p in (first / "train_images").glob("SIW_*/*.jpg")]
    assert train_frames and all(name.endswith("_1_scene.jpg") for name in train_frames)
    assert (first / "test_images").is_symlink()
    gen = tmp_path / "runs" / "generator_psiw_1"
    assert json.loads((gen / "args.json").read_text())["num_spoof_types"] == 6
    lines = (tmp_path / "prep" / "train_list" / "train_list_oulu_psiw_1.txt").read_text().splitlines()
    assert {ln.split()[0].rsplit("_", 2)[-2] for ln in lines} == {"1"}  # frame 1 only
    test = read_scores(tmp_path / "runs" / "test_psiw_1" / "test_scores.txt")
    assert len(test) == 7 and set(test.labels.tolist()) == {1, -1, -2}
    summary = json.loads((tmp_path / "runs" / "protocol_siw_1.json").read_text())
    assert {"apcer", "bpcer", "acer"} <= set(summary)


def test_siwm_leave_one_type_out_two_folds(tmp_path):
    """SiW-M from the scripts: two spoof types, MTCNN boxes, the folds that leave out replay (siwm_1) and print
    (siwm_2), each tested on its held-out type only, and the per-type table with mean and std over the types.
    Plain CDCN + DUM keeps it short; the generator's thirteen classes are tested in test_datasets_siwm.py."""
    make_siwm_release(tmp_path / "SiW-M", train_live=2, test_live=1, per_type=2, types=("replay", "print"), **FRAME)
    one_process = {"EXTRACT_WORKERS": "1", "DEPTH_WORKERS": "1", "CROP_WORKERS": "1", "DUM_WORKERS": "0"}
    script("scripts/datasets/01_adapt.sh", tmp_path, DATASET="siwm", RELEASE_ROOT=tmp_path / "SiW-M", COUNTS="any",
           DEV_FRACTION="0.5")
    script("scripts/datasets/02_prepare.sh", tmp_path, **one_process)
    r = script("scripts/datasets/03_intra.sh", tmp_path, DATASET="siwm", SUBPROTOCOLS="1 2", GENERATED="0",
               **one_process)
    table = r.stdout[r.stdout.index("Per sub-protocol"):].splitlines()
    assert table[1].split()[:3] == ["metric", "replay", "print"]
    assert [line.split()[0] for line in table[2:9]] == ["APCER", "BPCER", "ACER", "EER", "APCER", "BPCER", "HTER"]

    runs = tmp_path / "runs"
    for k, label in ((1, -2), (2, -1)):  # each fold is tested on its own type and the Test live video
        test = read_scores(runs / f"test_psiwm_{k}" / "test_scores.txt")
        assert sorted(test.labels.tolist()) == [label, label, 1]
        dev = read_scores(runs / f"test_psiwm_{k}" / "dev_scores.txt")
        other = {-2: -1, -1: -2}[label]  # Dev holds the other type's Dev share, never the held-out type
        assert set(dev.labels.tolist()) == {1, other}
    summary = json.loads((runs / "protocol_siwm.json").read_text())
    assert summary["aggregate"]["names"] == ["replay", "print"] and summary["aggregate"]["n"] == 2
    for key in ("apcer", "bpcer", "acer", "eer_test", "target_eer.fpr", "target_eer.fnr", "target_eer.hter"):
        m = summary["aggregate"]["metrics"][key]
        assert len(m["values"]) == 2 and all(0 <= v <= 1 for v in m["values"])
    assert summary["aggregate"]["coverage"]["test"] == {"listed": 6, "scored": 6, "missing": []}


def test_run_protocol_names_a_bad_subprotocol_choice(tmp_path):
    """SUBPROTOCOLS that match no sub-protocol of PROTOCOL stop the driver with the list of valid ones."""
    (tmp_path / "oulu" / "Protocols").mkdir(parents=True)
    (tmp_path / "prep" / "train_bbox").mkdir(parents=True)
    env = dict(os.environ, DSDG_PYTHON=sys.executable, OULU_ROOT=str(tmp_path / "oulu"),
               PREP_ROOT=str(tmp_path / "prep"), PROTOCOL="3", SUBPROTOCOLS="9")
    r = subprocess.run(["bash", "scripts/run_protocol.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and "SUBPROTOCOLS='9' matches none of 3_1 3_2 3_3 3_4 3_5 3_6" in r.stderr
