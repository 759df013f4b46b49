"""experiments/ablation.py: the --quick smoke run through scripts/ablation.sh (every row runs end to end, the
outputs are complete, a rerun resumes without retraining), and the table arithmetic on hand-made results.

The quick run's metrics come from a toy training of seconds: the test checks that they exist, are finite and
in range, never that they are good.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import cli_help
from experiments import ablation

pytestmark = pytest.mark.e2e


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
    for module in ("data.synthetic", "data.extract_frame", "data.bbox", "data.depth", "data.make_train_list",
                   "DUM.make_dataset.crop_dataset", "train_generator.py", "generated.py"):
        assert any(module in c for c in commands), module
    trains = [c for c in commands if "-m DUM.train" in c]
    assert len(trains) == 4 and sum("Train_g.txt" in c for c in trains) == 2  # rows c and d
    assert not (tmp_path / "fresh" / "runs").exists()


def _result(acer: float, auc: float) -> dict:
    """A DUM.metrics.evaluate-shaped result with the fields aggregate() reads."""
    return {"mode": "iso", "apcer": acer, "bpcer": acer, "acer": acer, "apcer_pooled": acer, "acer_pooled": acer,
            "hter": acer, "acc": 1 - acer, "eer_dev": acer, "eer_test": acer, "auc": auc,
            "apcer_per_pai": {"-1": acer}, "bpcer_at_apcer": {"0.05": acer}}


def test_table_is_mean_and_sample_std_over_seeds(tmp_path, monkeypatch):
    runs = {}
    for seed, (acer, auc) in enumerate(((0.1, 0.9), (0.2, 0.8), (0.3, 0.7))):
        folder = tmp_path / f"b_seed{seed}"
        (folder / "test").mkdir(parents=True)
        coverage = {"dev": {"listed": 20, "scored": 20}, "test": {"listed": 20, "scored": 19 + (seed > 0)}}
        report = {"score": "mean", "metrics": {"iso": _result(acer, auc)}, "coverage": coverage}
        (folder / "test" / "report.json").write_text(json.dumps(report))
        scores = [0.0, 0.0, 0.0] if seed == 2 else [0.1, 0.7, 0.4]  # seed 2: one score for every video
        (folder / "test" / "test_scores_mean.txt").write_text(
            "".join(f"1_1_0{i}_1 {v} {'+1' if i else '-1'}\n" for i, v in enumerate(scores)))
        runs.setdefault("b", []).append(folder)
    rows = ablation.summarise(runs)
    assert rows["b"]["acer"]["mean"] == pytest.approx(0.2)
    assert rows["b"]["acer"]["std"] == pytest.approx(0.1)  # sample std of 0.1, 0.2, 0.3
    assert rows["b"]["auc"]["values"] == pytest.approx([0.9, 0.8, 0.7])
    table = ablation.markdown_table(rows)
    assert "| b | CDCN + DUM | real | 3 | 20.0 ± 10.0 |" in table and "0.800 ± 0.100" in table
    assert rows["b"]["collapsed"] == 1 and table.rstrip().endswith("| 1 of 3 |")
    # the fewest videos any run rests on is said, and where the missing ones are listed
    line = ablation.coverage_line(rows)
    assert "20 of 20 listed Dev videos scored" in line and "19 of 20 listed Test videos scored" in line
    assert "missing_videos.txt" in line


def test_preset_overrides_and_quick():
    parser = argparse.ArgumentParser(parents=[ablation.get_args_parser()])
    args = parser.parse_args(["--out", "x", "--gen-steps", "77", "--seeds", "4", "5"])
    p = ablation.resolve_preset(args)
    assert p.gen_steps == 77 and p.seeds == (4, 5) and p.users == ablation.PRESETS["default"].users
    q = ablation.resolve_preset(parser.parse_args(["--out", "x", "--quick"]))
    assert q == ablation.PRESETS["quick"]


@pytest.mark.parametrize("how", [["experiments/ablation.py"], ["-m", "experiments.ablation"]])
def test_help_both_ways(how):
    r = cli_help(how)
    assert r.returncode == 0 and "--prep-root" in r.stdout and "--gen-steps" in r.stdout, r.stderr
