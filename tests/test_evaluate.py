"""Tests for the DUM/evaluate.py command line and the DUM/plots.py figures."""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from DUM import evaluate, metrics, plots

REPO = Path(__file__).resolve().parents[1]
KEYS = {"threshold", "apcer", "apcer_per_pai", "apcer_pooled", "bpcer", "acer", "acer_pooled", "hter",
        "eer_dev", "eer_test", "auc", "bpcer_at_apcer", "mode", "counts"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_pair(folder: Path, seed: int, tag: str = ""):
    """An OULU-shaped Dev (attacks all -1) and Test (print -1, replay -2) score file pair."""
    rng = np.random.default_rng(seed)
    paths = []
    for split, n, replay_label in (("dev", 15, -1), ("test", 10, -2)):
        scores = np.r_[rng.normal(1, 0.4, n), rng.normal(0, 0.4, n), rng.normal(0.3, 0.4, n)]
        labels = [1] * n + [-1] * n + [replay_label] * n
        ids = [f"{split}{i}" for i in range(3 * n)]
        path = folder / f"{split}{tag}.txt"
        metrics.write_scores(path, ids, scores, labels)
        paths.append(path)
    return paths


def parse(argv):
    return argparse.ArgumentParser(parents=[evaluate.get_args_parser()]).parse_args(argv)


def test_cli_end_to_end_subprocess(tmp_path):
    """`python -m DUM.evaluate` prints the table and writes JSON with every key; plots are PNGs."""
    dev, test = write_pair(tmp_path, 0)
    out = tmp_path / "out" / "metrics.json"
    proc = subprocess.run([sys.executable, "-m", "DUM.evaluate", "--dev", str(dev), "--test", str(test),
                           "--json", str(out), "--plots", str(tmp_path / "plots")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ISO/IEC 30107-3" in proc.stdout and "APCER pooled" in proc.stdout and "BPCER@APCER=5%" in proc.stdout
    result = json.loads(out.read_text())
    assert KEYS <= set(result)
    assert set(result["apcer_per_pai"]) == {"-1", "-2"} and set(result["bpcer_at_apcer"]) == {"0.05", "0.01"}
    assert result == metrics.json_ready(metrics.evaluate_files(dev, test))  # same numbers as the API
    for name in ("roc_det.png", "score_histogram.png"):
        data = (tmp_path / "plots" / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000


def test_cli_runs_as_a_file_and_has_help(tmp_path):
    """`python DUM/evaluate.py --help` works and documents the flags."""
    proc = subprocess.run([sys.executable, "DUM/evaluate.py", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--dev", "--test", "--mode", "--threshold", "--json", "--plots", "--std-ddof"):
        assert flag in proc.stdout


def test_cli_malformed_file_exits_with_file_and_line(tmp_path):
    """A malformed score file stops the CLI with a message naming the file and line, no traceback."""
    dev, _ = write_pair(tmp_path, 0)
    bad = tmp_path / "bad.txt"
    bad.write_text("1_1_36_1 0.5 +1\n1_1_36_2 oops -1\n")
    proc = subprocess.run([sys.executable, "-m", "DUM.evaluate", "--dev", str(dev), "--test", str(bad)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert f"{bad}:2:" in proc.stderr and "not a number" in proc.stderr and "Traceback" not in proc.stderr


def test_main_cdcn_mode_and_given_threshold(tmp_path, capsys):
    """--mode cdcn prints the original's line; --threshold is used as given."""
    dev, test = write_pair(tmp_path, 1)
    r = evaluate.main(parse(["--dev", str(dev), "--test", str(test), "--mode", "cdcn", "--threshold", "0.5",
                             "--json", str(tmp_path / "r.json")]))
    printed = capsys.readouterr().out
    assert r["mode"] == "cdcn" and r["threshold"] == 0.5 and r["threshold_source"] == "given"
    assert "As the original prints it" in printed and "tie -> attack" in printed
    assert json.loads((tmp_path / "r.json").read_text())["apcer_pooled"] == r["apcer_pooled"]


def test_main_six_subprotocols_mean_std(tmp_path, capsys):
    """Six Dev/Test pairs: each at its own Dev threshold, then mean and std over the six."""
    pairs = [write_pair(tmp_path, seed, tag=f"_{seed}") for seed in range(1, 7)]
    argv = ["--dev", *[str(d) for d, _ in pairs], "--test", *[str(t) for _, t in pairs],
            "--json", str(tmp_path / "p3.json")]
    report = evaluate.main(parse(argv))
    printed = capsys.readouterr().out
    assert "pair 6/6" in printed and "over 6 sub-protocols" in printed
    subs = report["subprotocols"]
    assert len(subs) == 6
    expected = [metrics.evaluate_files(d, t) for d, t in pairs]
    assert [s["threshold"] for s in subs] == [e["threshold"] for e in expected]
    acer = np.array([e["acer"] for e in expected])
    agg = report["aggregate"]["metrics"]["acer"]
    assert agg["mean"] == pytest.approx(acer.mean()) and agg["std"] == pytest.approx(acer.std(ddof=1))
    saved = json.loads((tmp_path / "p3.json").read_text())
    assert set(saved) == {"subprotocols", "aggregate"} and saved["aggregate"]["n"] == 6


def test_main_refuses_unpaired_files(tmp_path):
    """--dev and --test counts must match, and --threshold takes 1 or one value per pair."""
    dev, test = write_pair(tmp_path, 0)
    with pytest.raises(SystemExit, match="pair them"):
        evaluate.main(parse(["--dev", str(dev), str(dev), "--test", str(test)]))
    with pytest.raises(SystemExit, match="--threshold"):
        evaluate.main(parse(["--dev", str(dev), str(dev), "--test", str(test), str(test),
                             "--threshold", "0.1", "0.2", "0.3"]))


def test_plots_written_for_edge_cases(tmp_path):
    """Plots are non-empty PNGs also with equal scores, an infinite threshold and no threshold."""
    dev, test = (metrics.read_scores(p) for p in write_pair(tmp_path, 2))
    flat = metrics.ScoreSet(["a", "b", "c"], np.array([0.5, 0.5, 0.5]), np.array([1, -1, 0]))
    for k, (d, t, thr) in enumerate([(dev, test, 0.4), (flat, flat, float("inf")), (dev, flat, None)]):
        plots.plot_roc_det(d, t, tmp_path / f"roc{k}.png", thr, mode="cdcn")
        plots.plot_score_histogram(d, t, tmp_path / f"hist{k}.png", thr)
        for name in (f"roc{k}.png", f"hist{k}.png"):
            data = (tmp_path / name).read_bytes()
            assert data[:8] == PNG_MAGIC and len(data) > 1000
    assert not list(tmp_path.glob("*.tmp-*"))  # atomic writes leave no temporaries


def test_lists_make_the_table_say_how_many_listed_videos_were_scored(tmp_path, capsys):
    """With the protocol lists, every table (per pair and over pairs) and the JSON count the listed
    videos that have a score and name the others; without them the table says it cannot check."""
    rng = np.random.default_rng(0)
    lists, files = {}, {}
    for split, users in (("dev", range(21, 27)), ("test", range(36, 42))):
        session = 3 if split == "test" else 1
        rows = [(1 if f == 1 else -1, f"1_{session}_{u:02d}_{f}") for u in users for f in (1, 2)]
        lists[split] = tmp_path / f"{split}_list.txt"
        lists[split].write_text("".join(f"{lb:+d},{v}\n" for lb, v in rows))
        scored = rows[:-1] if split == "test" else rows  # the last Test video has no score
        files[split] = tmp_path / f"{split}.txt"
        metrics.write_scores(files[split], [v for _, v in scored],
                             [rng.normal(1.0 if lb == 1 else 0.0, 0.3) for lb, _ in scored], [lb for lb, _ in scored])
    r = evaluate.main(parse(["--dev", str(files["dev"]), "--test", str(files["test"]),
                             "--dev-list", str(lists["dev"]), "--test-list", str(lists["test"])]))
    printed = capsys.readouterr().out
    assert "Dev:  12 of 12 listed videos scored" in printed
    assert "Test: 11 of 12 listed videos scored; NOT SCORED: 1_3_41_2" in printed
    assert r["coverage"]["test"] == {"listed": 12, "scored": 11, "missing": ["1_3_41_2"]}
    evaluate.main(parse(["--dev", str(files["dev"]), "--test", str(files["test"])]))
    assert "Listed videos: unknown" in capsys.readouterr().out
    two = ["--dev", str(files["dev"]), str(files["dev"]), "--test", str(files["test"]), str(files["test"]),
           "--dev-list", str(lists["dev"]), str(lists["dev"]), "--test-list", str(lists["test"]), str(lists["test"])]
    report = evaluate.main(parse(two))
    assert "Test: 22 of 24 listed videos over the sub-protocols scored" in capsys.readouterr().out
    assert report["aggregate"]["coverage"]["test"]["missing"] == ["1_3_41_2", "1_3_41_2"]


def _one_type_pair(folder: Path, seed: int, label: int):
    """A leave-one-type-out fold: Dev with two other attack kinds, Test with attacks of ``label`` only."""
    rng = np.random.default_rng(seed)
    paths = []
    for split, labels in (("dev", [-1, -3]), ("test", [label])):
        scores = np.r_[rng.normal(1, 0.4, 12), *[rng.normal(0.2, 0.4, 6) for _ in labels]]
        lab = [1] * 12 + [x for x in labels for _ in range(6)]
        path = folder / f"{split}_{seed}.txt"
        metrics.write_scores(path, [f"{split}{i}" for i in range(len(lab))], scores, lab)
        paths.append(path)
    return paths


def test_names_give_a_column_per_pair_with_mean_and_std(tmp_path, capsys):
    """SiW-M-style folds named by their held-out type: the JSON keeps the names, the table has one column per
    type and the mean ± std of APCER, BPCER, ACER, EER and the rates at each Test set's own EER threshold."""
    pairs = [_one_type_pair(tmp_path, k, label) for k, label in enumerate((-2, -4, -5))]
    names = ["replay", "cosmetic", "funnyeye"]
    argv = ["--dev", *[str(d) for d, _ in pairs], "--test", *[str(t) for _, t in pairs], "--names", *names,
            "--target-eer", "--json", str(tmp_path / "siwm.json")]
    report = evaluate.main(parse(argv))
    printed = capsys.readouterr().out
    assert "pair 2/3: cosmetic" in printed and "-4 makeup" in printed
    table = printed[printed.index("Per sub-protocol"):].splitlines()
    assert table[1].split() == ["metric", *names, "mean", "±", "std"]
    agg = report["aggregate"]
    expected = [metrics.evaluate_files(d, t, target_eer=True) for d, t in pairs]
    for row_label, key, value in (("APCER", "apcer", lambda e: e["apcer"]), ("EER Test", "eer_test",
                                                                             lambda e: e["eer_test"]),
                                  ("HTER @ Test EER", "target_eer.hter", lambda e: e["target_eer"]["hter"])):
        values = [value(e) for e in expected]
        assert agg["metrics"][key]["values"] == pytest.approx(values)
        row = next(line for line in table if line.startswith(row_label + " "))
        cells = row[len(row_label):].split()
        assert [float(c) for c in cells[:3]] == pytest.approx([round(100 * v, 2) for v in values], abs=0.006)
        assert float(cells[3]) == pytest.approx(100 * np.mean(values), abs=0.006)
        assert float(cells[5]) == pytest.approx(100 * np.std(values, ddof=1), abs=0.006)
    assert agg["metrics"]["target_eer.fpr"]["values"] == pytest.approx([e["target_eer"]["fpr"] for e in expected])
    saved = json.loads((tmp_path / "siwm.json").read_text())
    assert saved["aggregate"]["names"] == names and [s["name"] for s in saved["subprotocols"]] == names
    one_name = ["--dev", *[str(d) for d, _ in pairs], "--test", *[str(t) for _, t in pairs], "--names", "replay"]
    with pytest.raises(SystemExit, match="--names takes one name per pair"):
        evaluate.main(parse(one_name))
