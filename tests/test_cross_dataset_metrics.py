"""Tests for the cross-dataset conventions in DUM/metrics.py and DUM/evaluate.py: HTER at the source Dev
threshold, and the original's target-set EER rule (performances_CASIA_Replay), on hand-worked sets."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from DUM import evaluate, metrics

REPO = Path(__file__).resolve().parents[1]


def score_set(bona_fide, attacks, name):
    scores = list(bona_fide) + list(attacks)
    labels = [1] * len(bona_fide) + [-1] * len(attacks)
    return metrics.ScoreSet([f"{name}{i}" for i in range(len(scores))], np.array(scores), np.array(labels), name)


@pytest.fixture
def source_dev():
    """Source Dev: bona fide 2, 3; attacks 0, 1 -> its EER threshold is 2 under either rule."""
    return score_set([2.0, 3.0], [0.0, 1.0], "dev")


@pytest.fixture
def target_test():
    """Target Test on another scale: bona fide 0.9, 0.6, 0.5; attacks 0.7, 0.3, 0.2, 0.1."""
    return score_set([0.9, 0.6, 0.5], [0.7, 0.3, 0.2, 0.1], "test")


def test_hter_at_source_dev_threshold(source_dev, target_test):
    """At the source threshold 2 every target video is rejected: FAR 0, FRR 1, HTER 0.5."""
    r = metrics.evaluate(source_dev, target_test, mode="iso")
    assert r["threshold"] == 2.0
    assert (r["apcer_pooled"], r["bpcer"], r["hter"]) == (0.0, 1.0, 0.5)
    assert "target_eer" not in r  # only on request


def test_target_eer_iso_by_hand(target_test):
    """ISO rule on the target itself: at 0.6 (score >= t accepted) FAR = 1/4 (0.7), FRR = 1/3 (0.5),
    the closest crossing of the candidates; HTER = (1/4 + 1/3) / 2."""
    te = metrics.target_eer_hter(target_test, "iso")
    assert te["threshold"] == 0.6
    assert te["fpr"] == pytest.approx(1 / 4) and te["fnr"] == pytest.approx(1 / 3)
    assert te["hter"] == pytest.approx((1 / 4 + 1 / 3) / 2)


def test_target_eer_cdcn_by_hand(target_test):
    """The original's rule reads the sklearn ROC. Its points (fpr, tpr) by threshold: inf (0, 0), 0.9 (0, 1/3),
    0.7 (1/4, 1/3), 0.6 (1/4, 2/3), 0.5 (1/4, 1), 0.3 (1/2, 1), 0.2 (3/4, 1), 0.1 (1, 1). drop_intermediate
    removes the collinear 0.6, 0.3 and 0.2, so argmin |tpr + fpr - 1| picks 0.5 (|1 + 1/4 - 1| = 1/4)
    and HTER = (1/4 + 0) / 2 = 1/8, although counting at 0.6 would come closer to the crossing."""
    te = metrics.target_eer_hter(target_test, "cdcn")
    assert te["threshold"] == 0.5
    assert (te["fpr"], te["fnr"], te["hter"]) == (0.25, 0.0, 0.125)
    assert te["rule"] == "target_eer_cdcn"


def test_target_eer_is_reported_beside_the_dev_threshold_hter(source_dev, target_test):
    """evaluate(target_eer=True) keeps every other number and adds the rule under 'target_eer'."""
    plain = metrics.evaluate(source_dev, target_test, mode="cdcn")
    both = metrics.evaluate(source_dev, target_test, mode="cdcn", target_eer=True)
    assert {k: v for k, v in both.items() if k != "target_eer"} == plain
    assert both["target_eer"]["hter"] == 0.125 and both["hter"] == 0.5
    assert "HTER at Test EER" in metrics.format_table(both)
    agg = metrics.aggregate([both, both])
    assert agg["metrics"]["target_eer.hter"]["mean"] == 0.125


def test_perfectly_separated_target(source_dev):
    """A target that one threshold separates has target-EER HTER 0 under both rules."""
    t = score_set([0.8, 0.9], [0.1, 0.2, 0.3], "t")
    for mode in metrics.MODES:
        assert metrics.target_eer_hter(t, mode)["hter"] == 0.0


def test_cli_target_eer(tmp_path, source_dev, target_test):
    """`python -m DUM.evaluate --target-eer` prints the extra row and writes it to the JSON."""
    paths = []
    for s in (source_dev, target_test):
        paths.append(tmp_path / f"{s.source}.txt")
        metrics.write_scores(paths[-1], s.ids, s.scores, s.labels)
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "DUM.evaluate", "--dev", str(paths[0]), "--test", str(paths[1]),
                           "--target-eer", "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HTER at Test EER" in proc.stdout and "performances_CASIA_Replay" in proc.stdout
    r = json.loads(out.read_text())
    assert r["hter"] == 0.5 and r["target_eer"]["hter"] == pytest.approx((1 / 4 + 1 / 3) / 2)
    args = evaluate.get_args_parser().parse_args(["--dev", "a", "--test", "b"])
    assert args.target_eer is False
