"""Tests for DUM/metrics.py: every number below is worked out by hand in the comments."""
import json

import numpy as np
import pytest

from DUM import metrics
from DUM.metrics import ScoreFileError, ScoreSet, evaluate


def make(scores, labels, source="<test>"):
    return ScoreSet([f"v{i}" for i in range(len(scores))], np.array(scores, float), np.array(labels), source)


# Dev in the original two-column format (1 live, 0 attack), sorted by score:
#   0.9 L, 0.8 L, 0.7 L, 0.6 A, 0.5 A, 0.4 A, 0.3 L, 0.2 A
DEV_2COL = "0.9 1\n0.8 1\n0.7 1\n0.6 0\n0.5 0\n0.4 0\n0.3 1\n0.2 0\n"
# Test with instruments; 0.7 ties the cdcn threshold (one bona fide, one replay), 0.6 the ISO one (a print).
TEST_3COL = """1_3_36_1 0.95 +1
2_3_36_1 0.7 +1
3_3_36_1 0.65 +1
4_3_36_1 0.5 +1
1_3_36_2 0.75 -1
2_3_36_2 0.6 -1
3_3_36_2 0.1 -1
4_3_36_2 0.2 -1
1_3_36_4 0.7 -2
2_3_36_4 0.3 -2
3_3_36_4 0.05 -2
4_3_36_4 0.0 -2
"""


@pytest.fixture
def hand_sets(tmp_path):
    (tmp_path / "dev.txt").write_text(DEV_2COL)
    (tmp_path / "test.txt").write_text(TEST_3COL)
    return metrics.read_scores(tmp_path / "dev.txt"), metrics.read_scores(tmp_path / "test.txt")


class TestHandWorked:
    def test_cdcn_mode_matches_original_formulas(self, hand_sets):
        """cdcn mode on a case worked from roc_curve + argmin|tpr+fpr-1| + '>' + pooled APCER."""
        dev, test = hand_sets
        r = evaluate(dev, test, mode="cdcn")
        # sklearn ROC of Dev (score >= t positive), after drop_intermediate removes 0.8, 0.6, 0.5:
        # thr [inf, .9, .7, .4, .3, .2], fpr [0, 0, 0, .75, .75, 1], tpr [0, .25, .75, .75, 1, 1]
        # |tpr + fpr - 1| = [1, .75, .25, .5, .75, 1] -> index 2 -> threshold 0.7, err = fpr = 0.
        # (Without the dropping, 0.6 would give |.75 + .25 - 1| = 0: the original's rule picks 0.7.)
        assert r["threshold"] == 0.7
        assert r["eer_dev"] == 0.0
        # Dev at 0.7 with 'live iff score > 0.7': live 0.7 and 0.3 rejected, no attack accepted.
        assert r["dev"]["bpcer"] == 0.5 and r["dev"]["apcer_pooled"] == 0.0
        assert r["dev"]["acer_pooled"] == 0.25 and r["dev"]["acc"] == 0.75
        # Test: live > 0.7 only 0.95 -> BPCER 3/4; attacks > 0.7: print 0.75 (replay 0.7 ties -> attack).
        assert r["bpcer"] == 0.75
        assert r["apcer_pooled"] == 1 / 8
        assert r["acer_pooled"] == pytest.approx((1 / 8 + 3 / 4) / 2)  # the original's ACER = 0.4375
        assert r["acc"] == pytest.approx(1 - 4 / 12)
        assert r["apcer_per_pai"] == {"-1": 0.25, "-2": 0.0}
        assert r["apcer"] == 0.25 and r["acer"] == pytest.approx(0.5)
        assert r["hter"] == pytest.approx(0.4375)
        # Test's own ROC: [inf .95 .75 .7 .65 .6 .5 0] (0.3..0.05 dropped); |tpr+fpr-1| is 0 at 0.65.
        assert r["oracle_threshold"] == 0.65 and r["eer_test"] == 0.25
        # At 0.65 with '>': live 0.65, 0.5 rejected (1/2); attacks 0.75, 0.7 accepted (2/8).
        assert r["oracle_acer"] == pytest.approx((0.5 + 0.25) / 2)
        # BPCER@APCER (strict rule): lowest Dev score t with no attack > t is 0.6; Test live 0.5 rejected.
        assert r["bpcer_at_apcer_threshold"] == {"0.05": 0.6, "0.01": 0.6}
        assert r["bpcer_at_apcer"] == {"0.05": 0.25, "0.01": 0.25}

    def test_iso_mode(self, hand_sets):
        """ISO mode on the same sets: Dev EER over Dev scores, '>=' rule, worst-PAI APCER."""
        dev, test = hand_sets
        r = evaluate(dev, test, mode="iso")
        # Dev, 'bona fide iff >= t': t=.6 accepts attack .6 (1/4) and rejects live .3 (1/4): gap 0.
        assert r["threshold"] == 0.6 and r["eer_dev"] == 0.25
        assert r["threshold_source"] == "dev_eer"
        # Test at 0.6: live .5 rejected; print .75 and .6 accepted (tie -> bona fide), replay .7.
        assert r["bpcer"] == 0.25
        assert r["apcer_per_pai"] == {"-1": 0.5, "-2": 0.25}
        assert r["apcer"] == 0.5 and r["apcer_pooled"] == 3 / 8
        assert r["acer"] == pytest.approx(0.375) and r["acer_pooled"] == pytest.approx(0.3125)
        assert r["hter"] == pytest.approx(0.3125) and r["acc"] == pytest.approx(8 / 12)
        # Test's own EER point: t=.65 accepts attacks .75, .7 (2/8) and rejects live .5 (1/4).
        assert r["eer_test"] == 0.25
        # AUC: live .95 beats 8 attacks, .7 beats 6 and ties 1, .65 beats 6, .5 beats 5 -> 25.5 / 32.
        assert r["auc"] == pytest.approx(25.5 / 32)
        # No Dev attack >= 0.7 -> threshold 0.7; Test live 0.65 and 0.5 are rejected.
        assert r["bpcer_at_apcer_threshold"] == {"0.05": 0.7, "0.01": 0.7}
        assert r["bpcer_at_apcer"] == {"0.05": 0.5, "0.01": 0.5}
        assert r["counts"] == {"dev": {"bona_fide": 4, "attack": {"0": 4}},
                               "test": {"bona_fide": 4, "attack": {"-1": 4, "-2": 4}}}
        assert set(r) >= {"threshold", "apcer", "apcer_per_pai", "apcer_pooled", "bpcer", "acer", "acer_pooled",
                          "hter", "eer_dev", "eer_test", "auc", "bpcer_at_apcer", "mode"}
        json.dumps(r, allow_nan=False)

    def test_given_threshold(self, hand_sets):
        """--threshold replaces the Dev EER threshold; the tie rule follows the mode."""
        dev, test = hand_sets
        iso = evaluate(dev, test, mode="iso", threshold=0.7)
        cdcn = evaluate(dev, test, mode="cdcn", threshold=0.7)
        assert iso["threshold_source"] == "given" and iso["threshold"] == 0.7
        assert iso["bpcer"] == 0.5 and cdcn["bpcer"] == 0.75       # live 0.7 is the tie
        assert iso["apcer_per_pai"]["-2"] == 0.25 and cdcn["apcer_per_pai"]["-2"] == 0.0  # replay 0.7
        assert iso["eer_dev"] == 0.25  # still reported at Dev's own EER point


class TestEdgeCases:
    def test_all_correct(self):
        """Perfect separation: every ISO error rate 0, AUC 1."""
        s = make([0.9, 0.8, 0.7, 0.2, 0.1, 0.0], [1, 1, 1, -1, -2, -2])
        r = evaluate(s, s, mode="iso")
        for k in ("apcer", "apcer_pooled", "bpcer", "acer", "acer_pooled", "hter", "eer_dev", "eer_test"):
            assert r[k] == 0.0, k
        assert r["threshold"] == 0.7 and r["auc"] == 1.0 and r["acc"] == 1.0
        assert r["bpcer_at_apcer"] == {"0.05": 0.0, "0.01": 0.0}

    def test_all_correct_cdcn_rejects_the_live_on_the_threshold(self):
        """The original's rule on a perfectly separated set: its threshold is the lowest live score,
        which '>' then rejects (BPCER 1/3 on the very set the threshold came from)."""
        s = make([0.9, 0.8, 0.7, 0.2, 0.1, 0.0], [1, 1, 1, -1, -2, -2])
        r = evaluate(s, s, mode="cdcn")
        # ROC after dropping 0.8, 0.2, 0.1: thr [inf .9 .7 0], fpr [0 0 0 1], tpr [0 1/3 1 1] -> |.| = [1 2/3 0 1].
        assert r["threshold"] == 0.7 and r["eer_dev"] == 0.0
        assert r["bpcer"] == pytest.approx(1 / 3) and r["apcer"] == r["apcer_pooled"] == 0.0
        # BPCER@APCER: the lowest Dev score with no attack above it is 0.2; every live is above.
        assert r["bpcer_at_apcer"] == {"0.05": 0.0, "0.01": 0.0}

    def test_all_wrong_iso(self):
        """Inverted scores: the Dev EER point is the lowest attack score, where every decision is wrong."""
        s = make([0.1, 0.2, 0.3, 0.7, 0.8, 0.9], [1, 1, 1, -1, -1, -2])
        r = evaluate(s, s, mode="iso")
        # t = 0.7: all attacks >= t (FPR 1), all bona fide < t (FNR 1); gap 0 only there.
        assert r["threshold"] == 0.7
        assert r["apcer"] == r["apcer_pooled"] == r["bpcer"] == r["acer"] == 1.0
        assert r["eer_dev"] == 1.0 and r["auc"] == 0.0 and r["acc"] == 0.0

    def test_all_wrong_cdcn(self):
        """Inverted scores in cdcn mode: its tie rule spares the attack sitting on the threshold."""
        s = make([0.1, 0.2, 0.3, 0.7, 0.8, 0.9], [1, 1, 1, 0, 0, 0])
        r = evaluate(s, s, mode="cdcn")
        # ROC after dropping: thr [inf .9 .7 .1], fpr [0 1/3 1 1], tpr [0 0 0 1]; |.| = [1 2/3 0 1].
        assert r["threshold"] == 0.7 and r["eer_dev"] == 1.0
        assert r["apcer_pooled"] == pytest.approx(2 / 3) and r["bpcer"] == 1.0
        assert r["acer_pooled"] == pytest.approx(5 / 6)

    def test_all_scores_equal(self):
        """One distinct score: ISO accepts everything; cdcn's threshold is sklearn's inf and rejects all."""
        s = make([0.5] * 4, [1, 1, -1, -2])
        iso = evaluate(s, s, mode="iso")
        assert iso["threshold"] == 0.5 and iso["apcer"] == 1.0 and iso["bpcer"] == 0.0
        assert iso["eer_dev"] == 0.5 and iso["auc"] == 0.5
        # No Dev score reaches APCER <= x with '>=', so the threshold moves just above 0.5.
        assert iso["bpcer_at_apcer_threshold"]["0.05"] > 0.5 and iso["bpcer_at_apcer"]["0.05"] == 1.0
        cdcn = evaluate(s, s, mode="cdcn")
        assert cdcn["threshold"] == np.inf
        assert cdcn["apcer_pooled"] == 0.0 and cdcn["bpcer"] == 1.0 and cdcn["acer_pooled"] == 0.5
        safe = metrics.json_ready(cdcn)
        assert safe["threshold"] == "inf"
        json.dumps(safe, allow_nan=False)

    def test_single_instrument(self):
        """One attack label: the worst-PAI APCER is the pooled one."""
        s = make([0.9, 0.6, 0.4, 0.7, 0.3, 0.2, 0.1], [1, 1, 1, -1, -1, -1, -1])
        r = evaluate(s, s, threshold=0.5)
        # >= 0.5: live 0.4 rejected (1/3); attack 0.7 accepted (1/4).
        assert list(r["apcer_per_pai"]) == ["-1"]
        assert r["apcer"] == r["apcer_pooled"] == 0.25 and r["bpcer"] == pytest.approx(1 / 3)

    def test_unknown_instrument_is_its_own_group(self):
        """Label 0 attacks form a PAI group of their own beside known instruments."""
        s = make([0.9, 0.8, 0.85, 0.1, 0.2, 0.3], [1, 1, 0, 0, -1, -1])
        r = evaluate(s, s, threshold=0.5)
        assert r["apcer_per_pai"] == {"0": 0.5, "-1": 0.0}
        assert r["apcer"] == 0.5 and r["apcer_pooled"] == 0.25

    def test_eer_tie_breaks(self):
        """Equal |FPR - FNR|: smaller FPR + FNR wins, then the larger threshold."""
        # bf 0.5, attacks 0.4 / 0.6: t=.5 -> (.5, 0), t=.6 -> (.5, 1): same gap, t=.5 has the smaller sum.
        assert metrics.eer_threshold_iso(make([0.5, 0.4, 0.6], [1, -1, -1])) == (0.5, 0.25)
        # bf .5 .9, attacks .1 .5: t=.5 -> (.5, 0) and t=.9 -> (0, .5): same gap and sum, larger wins.
        assert metrics.eer_threshold_iso(make([0.5, 0.9, 0.1, 0.5], [1, 1, -1, -1])) == (0.9, 0.25)

    def test_dev_without_attacks_names_file(self):
        """A one-class set is an error naming its source, not a NaN."""
        dev = make([0.9, 0.8], [1, 1], source="Dev_scores.txt")
        test = make([0.9, 0.1], [1, -1])
        with pytest.raises(ValueError, match="Dev_scores.txt.*no attacks"):
            evaluate(dev, test)
        with pytest.raises(ValueError, match="T.txt.*no bona fide"):
            evaluate(test, make([0.1, 0.2], [-1, -2], source="T.txt"))

    def test_bad_mode(self):
        """An unknown mode is refused."""
        s = make([0.9, 0.1], [1, -1])
        with pytest.raises(ValueError, match="mode"):
            evaluate(s, s, mode="bob")


def _original_performances(dev_scores, dev_live, test_scores, test_live):
    """The original's Test numbers re-derived from its written formulas (sklearn ROC, '>' rule, pooled)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(dev_live.astype(int), dev_scores, pos_label=1)
    t = thr[np.argmin(np.abs(tpr + fpr - 1.0))]
    fr = sum(1 for s, l in zip(test_scores, test_live) if s <= t and l)
    fa = sum(1 for s, l in zip(test_scores, test_live) if s > t and not l)
    apcer, bpcer = fa / (~test_live).sum(), fr / test_live.sum()
    return t, 1 - (fr + fa) / len(test_scores), apcer, bpcer, (apcer + bpcer) / 2


def test_cdcn_matches_formulas_on_random_sets():
    """cdcn mode equals the original formulas on random, heavily tied score sets."""
    rng = np.random.default_rng(0)
    for _ in range(30):
        dev = make(rng.integers(0, 6, 40) / 5, rng.choice([1, -1], 40, p=[0.3, 0.7]))
        test = make(rng.integers(0, 6, 30) / 5, rng.choice([1, -1, -2], 30))
        if len(set(dev.labels == 1)) < 2 or len(set(test.labels == 1)) < 2:
            continue
        t, acc, apcer, bpcer, acer = _original_performances(dev.scores, dev.bona_fide, test.scores, test.bona_fide)
        r = evaluate(dev, test, mode="cdcn")
        got = (r["threshold"], r["acc"], r["apcer_pooled"], r["bpcer"], r["acer_pooled"])
        assert got == (t, acc, apcer, bpcer, acer)


def test_iso_eer_is_the_closest_crossing_on_random_sets():
    """The ISO threshold's |FPR - FNR| is minimal among all Dev scores (brute force)."""
    rng = np.random.default_rng(1)
    for _ in range(20):
        s = make(rng.integers(0, 8, 25) / 7, np.r_[[1, -1], rng.choice([1, -1], 23)])
        t, eer = metrics.eer_threshold_iso(s)

        def gap(th):
            acc = s.scores >= th
            return abs(acc[~s.bona_fide].mean() - (~acc[s.bona_fide]).mean())
        assert gap(t) <= min(gap(c) for c in np.unique(s.scores)) + 1e-12
        assert t in s.scores


class TestScoreFiles:
    def test_round_trip(self, tmp_path):
        """write_scores then read_scores gives the same ids, floats and labels; bona fide written +1."""
        ids, scores, labels = ["1_1_36_1", "1_1_36_2", "p1_0_3"], [0.1 + 0.2, 1e-7, -3.5], [1, -1, 0]
        metrics.write_scores(tmp_path / "s.txt", ids, scores, labels)
        assert (tmp_path / "s.txt").read_text().splitlines()[0] == "1_1_36_1 0.30000000000000004 +1"
        s = metrics.read_scores(tmp_path / "s.txt")
        assert s.ids == ids and s.scores.tolist() == scores and s.labels.tolist() == labels
        assert s.source == str(tmp_path / "s.txt")

    def test_two_column_original_format(self, tmp_path):
        """'<score> <label>' files map 1 to bona fide and 0 to an unknown-instrument attack."""
        (tmp_path / "o.txt").write_text("0.004 1\n0.0001 0\n\n# comment\n0.003 1.0\n")
        s = metrics.read_scores(tmp_path / "o.txt")
        assert s.labels.tolist() == [1, 0, 1] and s.ids == ["line:1", "line:2", "line:5"]
        assert s.pais == [0]

    def test_write_refuses_bad_input(self, tmp_path):
        """Duplicate ids, ids with spaces, bad labels and NaN scores are refused when writing."""
        with pytest.raises(ValueError, match="twice"):
            metrics.write_scores(tmp_path / "a.txt", ["a", "a"], [0.1, 0.2], [1, -1])
        with pytest.raises(ValueError, match="whitespace"):
            metrics.write_scores(tmp_path / "a.txt", ["a b"], [0.1], [1])
        with pytest.raises(ValueError, match="label 2"):
            metrics.write_scores(tmp_path / "a.txt", ["a"], [0.1], [2])
        with pytest.raises(ValueError, match="finite"):
            metrics.write_scores(tmp_path / "a.txt", ["a"], [float("nan")], [1])
        assert not (tmp_path / "a.txt").exists()

    @pytest.mark.parametrize("content, line, message", [
        ("1_1_36_1 0.5 1\n1_1_36_2 0.4 -1 extra\n", 2, "4 columns"),
        ("0.5\n", 1, "1 columns"),
        ("1_1_36_1 abc 1\n", 1, "score 'abc' is not a number"),
        ("1_1_36_1 0.5 1\n1_1_36_2 1_0 -1\n", 2, "score '1_0' is not a number"),
        ("1_1_36_1 nan 1\n", 1, "not finite"),
        ("1_1_36_1 0.5 live\n", 1, "label 'live' is not an integer"),
        ("1_1_36_1 0.5 2\n", 1, "label '2' is unknown"),
        ("1_1_36_1 0.5 1.5\n", 1, "label '1.5' is not an integer"),
        ("0.5 1\n0.4 -1\n", 2, "two-column"),
        ("1_1_36_1 0.5 1\n0.4 0\n", 2, "one file must use one format"),
        ("1_1_36_1 0.5 1\n1_1_36_2 0.4 -1\n1_1_36_1 0.3 1\n", 3, "repeats line 1"),
    ])
    def test_malformed_names_file_and_line(self, tmp_path, content, line, message):
        """Each malformed row raises ScoreFileError with 'file:line' and the problem."""
        p = tmp_path / "scores.txt"
        p.write_text(content)
        with pytest.raises(ScoreFileError) as e:
            metrics.read_scores(p)
        assert f"{p}:{line}:" in str(e.value) and message in str(e.value)

    @pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n"])
    def test_empty_file(self, tmp_path, content):
        """A file without scores is an error naming the file."""
        p = tmp_path / "empty.txt"
        p.write_text(content)
        with pytest.raises(ScoreFileError, match=f"{p}: score file has no scores"):
            metrics.read_scores(p)

    def test_missing_file(self, tmp_path):
        """A missing file is an error naming it."""
        with pytest.raises(ScoreFileError, match="not found"):
            metrics.read_scores(tmp_path / "nope.txt")


class TestAggregateAndTable:
    def test_aggregate_mean_std(self, hand_sets):
        """Mean and sample std per metric; per-PAI keys only where every result has them."""
        dev, test = hand_sets
        a = evaluate(dev, test, threshold=0.6)   # APCER .5, BPCER .25
        b = evaluate(dev, test, threshold=0.7)   # >= .7: print .75 (1/4), replay .7 (1/4); live .65, .5 out
        assert (a["apcer"], a["bpcer"], b["apcer"], b["bpcer"]) == (0.5, 0.25, 0.25, 0.5)
        c = evaluate(dev, make([0.9, 0.1], [1, -1]), threshold=0.6)
        agg = metrics.aggregate([a, b])
        m = agg["metrics"]
        assert agg["n"] == 2 and agg["mode"] == "iso" and agg["ddof"] == 1
        assert m["apcer"]["mean"] == 0.375 and m["apcer"]["std"] == pytest.approx(np.std([0.5, 0.25], ddof=1))
        assert m["bpcer"]["values"] == [0.25, 0.5]
        assert "apcer_per_pai.-2" in m and "bpcer_at_apcer.0.05" in m
        assert metrics.aggregate([a, b], ddof=0)["metrics"]["apcer"]["std"] == 0.125
        assert "apcer_per_pai.-2" not in metrics.aggregate([a, c])["metrics"]
        assert metrics.aggregate([a])["metrics"]["apcer"]["std"] == 0.0
        json.dumps(agg, allow_nan=False)

    def test_aggregate_refuses_mixed_modes(self, hand_sets):
        """Results of iso and cdcn mode cannot be averaged together."""
        dev, test = hand_sets
        with pytest.raises(ValueError, match="different modes"):
            metrics.aggregate([evaluate(dev, test), evaluate(dev, test, mode="cdcn")])
        with pytest.raises(ValueError):
            metrics.aggregate([])

    def test_table_names_definitions(self, hand_sets):
        """The table says which definition, tie rule and threshold source each number follows."""
        dev, test = hand_sets
        iso = metrics.format_table(evaluate(dev, test))
        assert "ISO/IEC 30107-3" in iso and "worst PAI" in iso and "pooled" in iso
        assert "tie -> bona fide" in iso and "(Dev EER)" in iso and "APCER[-2 replay]" in iso
        cdcn = metrics.format_table(evaluate(dev, test, mode="cdcn", threshold=0.7))
        assert "tie -> attack" in cdcn and "given on the command line" in cdcn
        assert "the original's APCER" in cdcn and "APCER=0.1250, BPCER=0.7500, ACER=0.4375" in cdcn
        agg = metrics.format_table(metrics.aggregate([evaluate(dev, test), evaluate(dev, test)]))
        assert "over 2 sub-protocols" in agg and "apcer_pooled" in agg

    def test_table_says_how_many_listed_videos_were_scored(self, hand_sets):
        """With a coverage entry the table counts the listed videos and names the unscored ones (a long
        list is cut, pointing at the file); without one it says the lists are unknown."""
        dev, test = hand_sets
        result = evaluate(dev, test)
        assert "Listed videos: unknown" in metrics.format_table(result)
        listed = test.ids + [f"1_3_5{i}_1" for i in range(2)] + [f"1_3_4{i}_2" for i in range(10)]
        result["coverage"] = {"dev": metrics.coverage(dev.ids, dev.ids), "test": metrics.coverage(test.ids, listed)}
        result["coverage"]["test"]["missing_file"] = "runs/t/missing_videos.txt"
        table = metrics.format_table(result)
        assert f"Dev:  {len(dev)} of {len(dev)} listed videos scored" in table
        assert (f"Test: {len(test)} of {len(test) + 12} listed videos scored; NOT SCORED: 1_3_50_1, 1_3_51_1, "
                "1_3_40_2") in table
        assert "... and 2 more (all, with the reasons: runs/t/missing_videos.txt)" in table
        assert metrics.coverage(["a", "x"], ["a", "b"]) == {"listed": 2, "scored": 1, "missing": ["b"]}
