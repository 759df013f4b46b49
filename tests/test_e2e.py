"""End-to-end: ``scripts/demo.sh`` at a tiny size, every stage's outputs, the final metrics, and a rerun; then
the ablation's smoke test (``scripts/ablation.sh --quick``) on the demo's prepared data: every row runs, the outputs
are complete, a rerun resumes without retraining. The quick run's metrics come from a toy training of seconds: the
tests check that they exist, are finite and in range, never that they are good.

Selected with ``-m e2e``; part of the default suite too. It runs the real shell scripts with this
interpreter (``DSDG_PYTHON``), so it checks exactly what a user runs, only smaller.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data.protocol_lists import read_protocol
from experiments import ablation
from e2e_demo import METRIC_KEYS, run_demo

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo(tiny_demo):
    """The tiny demo run of the session (tests/conftest.py), shared with the ablation smoke test."""
    return tiny_demo


def test_every_stage_wrote_its_outputs(demo):
    """Frames, boxes, depth maps, list, generator checkpoint and grids, pairs, crops, DUM checkpoint, scores."""
    root, _ = demo
    prep, crop = root / "prep", root / "crop"
    frames = sorted((prep / "train_images" / "1_1_01_1").glob("*_scene.jpg"))
    assert [f.name for f in frames] == [f"1_1_01_1_{i}_scene.jpg" for i in range(1, 4)]
    assert (prep / "train_bbox" / "1_1_01_1" / "1_1_01_1_1_scene.dat").read_text().count("\n") == 3
    assert any((prep / "train_depth" / "1_1_01_1").glob("*_depth1D.jpg"))
    lines = (prep / "train_list" / "train_list_oulu_p1.txt").read_text().splitlines()
    assert lines and all(len(line.split()) == 4 for line in lines)
    assert (root / "generator" / "checkpoint.pth").is_file()
    assert list((root / "generator" / "checkpoints").glob("[0-9][0-9][0-9][0-9].pth"))
    assert list((root / "generator" / "grids").glob("*.png"))
    rows = read_protocol(crop / "protocols" / "Protocol_1" / "Train_g.txt")
    generated = [r for r in rows if r.generated]
    assert generated and all(r.generated for r in rows[len(rows) - len(generated):])  # generated rows last
    live_folder = next(r.video for r in generated if r.label == 1)
    assert any((crop / "train_images" / live_folder).glob("*_scene.jpg"))
    assert any((crop / "train_depth" / live_folder).glob("*_depth1D.jpg"))
    for split in ("train", "dev", "test"):
        assert any((crop / f"{split}_images").iterdir())
    assert (root / "dum" / "checkpoint.pth").is_file()
    for name in ("dev_scores.txt", "test_scores.txt", "roc_det.png", "score_histogram.png"):
        assert (root / "test" / name).stat().st_size > 0


def test_metrics_report(demo):
    """All metric keys, values in range, and CDCN + DUM clearly better than chance on Test."""
    root, _ = demo
    report = json.loads((root / "test" / "report.json").read_text())
    for mode in ("iso", "cdcn"):
        m = report["metrics"][mode]
        assert METRIC_KEYS <= set(m)
        for key in ("apcer", "apcer_pooled", "bpcer", "acer", "acer_pooled", "hter", "eer_dev", "eer_test", "auc"):
            assert 0.0 <= m[key] <= 1.0 and math.isfinite(m[key]), (mode, key, m[key])
        assert set(m["apcer_per_pai"]) == {"-1", "-2"}  # print and replay kept apart
        assert set(m["bpcer_at_apcer"]) == {"0.05", "0.01"}
    iso = report["metrics"]["iso"]
    assert iso["auc"] > 0.7, iso  # chance is 0.5
    assert iso["acer"] < 0.4, iso  # chance is 0.5


def test_demo_prints_results_and_paths(demo):
    """The metrics table, the paths of what it wrote, and the notes about what the demo leaves out."""
    root, proc = demo
    out = proc.stdout
    assert "ACER" in out and "APCER" in out
    for path in ("report.json", "roc_det.png", "grids", "report/index.html"):
        assert path in out
    assert (root / "test" / "report" / "index.html").is_file()  # the HTML evaluation report, by 09_test_dum.sh
    assert "LightCNN" in out  # the note that the identity losses are off
    assert "real faces only" in out  # the note that the barely trained generator's pairs are left out


def test_rerun_skips_finished_stages(demo, repo_root):
    """A second run finds every stage finished and redoes no work."""
    root, _ = demo
    before = (root / "dum" / "checkpoint.pth").stat().st_mtime_ns
    proc = run_demo(repo_root, root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    assert "videos done 0" in log
    assert (root / "dum" / "checkpoint.pth").stat().st_mtime_ns == before


# ----------------------------------------------------------------------------------------------
# The ablation's smoke test (scripts/ablation.sh --quick) on this demo's prepared data. In this file, so that
# a parallel run (pytest-xdist, --dist loadfile) gives the demo and its users one worker and one run.
# ----------------------------------------------------------------------------------------------

def run_script(repo_root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DSDG_PYTHON=sys.executable)
    return subprocess.run(["bash", "scripts/ablation.sh", "--out", str(out), "--quick", *map(str, extra)],
                          cwd=repo_root, env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def quick(repo_root, tmp_path_factory, tiny_demo):
    """The smoke run on the session's tiny demo data (its frames, boxes and depth maps are reused: the
    stages before them are tested by tests/test_e2e.py)."""
    demo_dir, _ = tiny_demo
    out = tmp_path_factory.mktemp("ablation")
    data = ("--oulu-root", demo_dir / "oulu_synthetic", "--prep-root", demo_dir / "prep")
    proc = run_script(repo_root, out, *data)
    assert proc.returncode == 0, f"ablation.sh failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return out, proc, data


def test_every_row_runs_and_is_tabled(quick):
    out, proc, _ = quick
    result = json.loads((out / "ablation.json").read_text())
    assert result["quick"] is True and set(result["rows"]) == {"a", "b", "c", "d"}
    models = {k: r["model"] for k, r in result["rows"].items()}
    assert models == {"a": "cdcn", "b": "cdcn_u", "c": "cdcn", "d": "cdcn_u"}
    for key, row in result["rows"].items():
        assert row["seeds"] == 1
        for metric, _ in ablation.COLUMNS:
            value = row[metric]["mean"]
            assert math.isfinite(value) and 0.0 <= value <= 1.0, (key, metric, value)
        run = Path(row["runs"][0])
        assert (run / "test" / "report.json").is_file() and (run / "train" / "checkpoint.pth").is_file()
        saved = json.loads((run / "run.json").read_text())["settings"]
        assert saved["model"] == row["model"] and saved["generated"] == (key in "cd")
        assert 0 <= row["collapsed"] <= 1
    # Rows c and d trained on the generated pairs, rows a and b on the real list only.
    c_log = (out / "logs" / "c_seed0_train.log").read_text()
    a_log = (out / "logs" / "a_seed0_train.log").read_text()
    assert "Train_g.txt" in c_log and "Train_g.txt" not in a_log
    assert result["generated"]["pairs"] == ablation.PRESETS["quick"].pairs
    md = (out / "ablation.md").read_text()
    assert "numbers mean nothing" in md and md.count("\n| ") >= 5  # header + 4 rows
    assert "constant output" in md
    stats = result["generated"]["image_statistics"]
    assert set(stats) == {"real live", "real attack", "generated live", "generated spoof"}
    assert all(s["images"] > 0 and s["sharpness"] > 0 for s in stats.values()) and "| generated live |" in md
    assert "Test ACER (ISO)" in proc.stdout
    for picture in ("ablation.png", "pairs_vs_real.png"):
        assert (out / picture).stat().st_size > 10_000


def test_commands_are_recorded_with_their_time(quick):
    out, _, _ = quick
    steps = [json.loads(line) for line in (out / "commands.jsonl").read_text().splitlines()]
    names = [s["step"] for s in steps]
    for step in ("train_list", "crop", "generator", "sample", "a_seed0_train", "a_seed0_test", "d_seed0_train",
                 "d_seed0_test"):
        assert step in names, step
    assert not {"frames", "boxes", "depth"} & set(names)  # done in the --prep-root given
    assert all(s["exit"] == 0 and s["seconds"] >= 0 and s["command"] for s in steps)


def test_rerun_resumes_without_retraining(quick, repo_root):
    out, _, data = quick
    before = len((out / "commands.jsonl").read_text().splitlines())
    proc = run_script(repo_root, out, *data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    new = [json.loads(line)["step"] for line in (out / "commands.jsonl").read_text().splitlines()[before:]]
    assert not [s for s in new if s.endswith(("_train", "_test"))], new  # finished runs are skipped
    assert "finished earlier" in (out / "ablation.log").read_text()


def test_changed_setting_over_finished_run_stops_at_once(quick, repo_root):
    """A run folder made with other settings is never silently reused, and nothing runs before that is said."""
    out, _, data = quick
    before = (out / "commands.jsonl").read_text()
    proc = run_script(repo_root, out, *data, "--rows", "a", "--lr", "0.5")
    assert proc.returncode != 0 and "other settings" in proc.stderr and "'lr'" in proc.stderr
    assert (out / "commands.jsonl").read_text() == before


def test_dry_run_lists_every_stage_of_a_fresh_experiment(repo_root, tmp_path):
    """Without --prep-root the experiment builds its own synthetic dataset and runs every stage."""
    proc = run_script(repo_root, tmp_path / "fresh", "--dry-run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    commands = proc.stdout.splitlines()
    for module in ("data.synthetic", "data.extract_frame", "data.detect_faces", "data.depth", "data.make_train_list",
                   "DUM.make_dataset.crop_dataset", "train_generator.py", "generated.py"):
        assert any(module in c for c in commands), module
    trains = [c for c in commands if "-m DUM.train" in c]
    assert len(trains) == 4 and sum("Train_g.txt" in c for c in trains) == 2  # rows c and d
    assert not (tmp_path / "fresh" / "runs").exists()
