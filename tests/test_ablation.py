"""experiments/ablation.py: the table arithmetic on hand-made results, the presets and the command line.
The --quick smoke run of every row is in tests/test_ablation_smoke.py."""
from __future__ import annotations

import argparse
import json

import pytest

from cli_helpers import cli_help
from experiments import ablation

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
