"""End-to-end: the ablation's smoke test (``scripts/ablation.sh --quick``) on a fresh experiment: it makes and
prepares its own tiny synthetic dataset, every row runs, the outputs are complete, a rerun resumes without
retraining, a changed setting over a finished run stops at once. The quick run's metrics come from a toy training
of seconds: the tests check that they exist, are finite and in range, never that they are good.

Selected with ``-m e2e``; part of the default suite too. It runs the real shell script with this interpreter
(``DSDG_PYTHON``), so it checks exactly what a user runs, only smaller.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import ablation

pytestmark = pytest.mark.e2e


def run_script(repo_root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DSDG_PYTHON=sys.executable)
    return subprocess.run(["bash", "scripts/ablation.sh", "--out", str(out), "--quick", *map(str, extra)],
                          cwd=repo_root, env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def quick(repo_root, tmp_path_factory):
    """The smoke run of a fresh experiment: it makes its own synthetic dataset and prepares it (its own data,
    not the tiny demo's, so that it runs beside the demo on the other test worker)."""
    out = tmp_path_factory.mktemp("ablation")
    proc = run_script(repo_root, out)
    assert proc.returncode == 0, f"ablation.sh failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return out, proc, ()


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
    assert {"synthetic", "frames", "boxes", "depth"} <= set(names)  # a fresh experiment prepares its own data
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


def test_dry_run_with_a_prepared_root_skips_the_data_stages(repo_root, tmp_path):
    """Given --oulu-root and --prep-root (stages 1-3 done), the experiment starts at the generator's list."""
    (tmp_path / "prep" / "train_images").mkdir(parents=True)
    (tmp_path / "oulu").mkdir()
    proc = run_script(repo_root, tmp_path / "out", "--oulu-root", tmp_path / "oulu", "--prep-root", tmp_path / "prep",
                      "--dry-run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    commands = proc.stdout.splitlines()
    for module in ("data.synthetic", "data.extract_frame", "data.detect_faces", "data.depth"):
        assert not any(module in c for c in commands), module
    assert any("data.make_train_list" in c for c in commands)
