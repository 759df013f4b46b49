"""The HTML evaluation report (DUM/report.py) written by DUM/test.py --report and DUM/evaluate.py --report, the
bob.pad score files of --bob-scores, and the page as a browser renders it (headless Chromium from Debian's
packages; that test is skipped where /usr/bin/chromium is not installed)."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from DUM import evaluate, metrics
from DUM import test as dum_test
from DUM.report import worst_errors
from deploy_helpers import write_checkpoint
from dum_helpers import make_crop_root

CHROMIUM = Path("/usr/bin/chromium")


class Page(HTMLParser):
    """What a reader of the page sees: tables (id -> rows of cell texts), images, the error cards per list."""

    def __init__(self, text: str):
        super().__init__()
        self.tables, self.images, self.cases, self.text = {}, [], defaultdict(list), []
        self._table = self._row = self._cell = self._cases = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id", f"table{len(self.tables)}"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(a["src"])
        elif tag == "div" and "cases" == a.get("class"):
            self._cases = a["id"]
        elif tag == "span" and a.get("class") == "id" and self._cases:
            self._cell = ["@case"]

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "span" and self._cell and self._cell[0] == "@case":
            self.cases[self._cases].append("".join(self._cell[1:]).strip())
            self._cell = None
        elif tag == "table":
            self._table = self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def crop_root(tmp_path_factory):
    return make_crop_root(tmp_path_factory.mktemp("crop"), image_size=32, map_size=4, frames=3)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "checkpoint.pth", image_size=32, map_size=4)


@pytest.fixture(scope="module")
def tested(crop_root, checkpoint, tmp_path_factory):
    """One DUM/test.py run with --report and --bob-scores: (output folder, returned report)."""
    out = tmp_path_factory.mktemp("test")
    args = dum_test.get_args_parser().parse_args(
        ["--checkpoint", str(checkpoint), "--crop-root", str(crop_root), "--output-dir", str(out), "--workers", "0",
         "--device", "cpu", "--plots", "false", "--report", str(out / "report"), "--bob-scores",
         str(out / "bob" / "scores.csv")])
    return out, dum_test.main(args)


def _strip_rows(path: Path) -> int:
    """Rows of 96 px tiles in an error strip (face, mu, sigma)."""
    ink = (cv2.imread(str(path)).min(2) < 250)
    tall = [ink[:, j] for j in range(ink.shape[1]) if ink[:, j].sum() >= 96]
    column = max(tall, key=lambda c: c.sum())
    edges = np.flatnonzero(np.diff(np.concatenate([[0], column.astype(int), [0]])))
    return sum(1 for start, stop in zip(edges[::2], edges[1::2]) if stop - start >= 96)


def test_worst_errors_order_counts_and_closest_calls():
    """Accepted attacks by decreasing score, rejected bona fide by increasing score, at most n each; a class
    without errors shows its closest correct calls, marked as such; the iso rule accepts a tie."""
    s = metrics.ScoreSet(list("abcdefgh"), [0.9, 0.2, 0.6, 0.5, 0.1, 0.7, 0.5, 0.3], [1, 1, -1, -1, -2, -2, 1, -1])
    w = worst_errors(s, 0.5, "iso", n=2)
    assert [c.video for c in w["attacks"]] == ["f", "c"] and w["attacks_accepted"] == 3  # d (0.5) is the third
    assert [c.video for c in w["bona_fide"]] == ["b"] and w["bona_fide_rejected"] == 1
    assert all(c.misclassified for c in w["attacks"] + w["bona_fide"])
    assert (w["attacks_total"], w["bona_fide_total"]) == (5, 3)
    strict = worst_errors(s, 0.5, "cdcn", n=5)  # score > threshold: the tie is rejected
    assert [c.video for c in strict["attacks"]] == ["f", "c"] and [c.video for c in strict["bona_fide"]] == ["b", "g"]
    clean = worst_errors(s, 0.95, "iso", n=6)
    assert clean["attacks_accepted"] == 0 and [c.video for c in clean["attacks"]] == ["f", "c", "d"]
    assert not any(c.misclassified for c in clean["attacks"]) and len(clean["bona_fide"]) == 3


def test_test_report_tables_figures_and_errors(tested):
    """DUM/test.py --report: both scores in both modes as tables that hold report.json's numbers, the
    per-instrument APCER, every figure and strip present, and the worst errors those of the score files."""
    out, report = tested
    index = out / "report" / "index.html"
    assert report["report"] == str(index) and json.loads((out / "report.json").read_text())["report"] == str(index)
    page = Page(index.read_text())
    for kind in ("mean", "cdcn"):
        for mode in ("iso", "cdcn"):
            rows = {r[0]: r[1] for r in page.tables[f"metrics-{kind}-{mode}"][1:]}
            m = report["by_score"][kind]["metrics"][mode]
            assert rows["APCER"] == f"{100 * m['apcer']:.2f} %" and rows["BPCER"] == f"{100 * m['bpcer']:.2f} %"
            assert rows["APCER[-2 replay]"] == f"{100 * m['apcer_per_pai']['-2']:.2f} %"
        pai = page.tables[f"pai-{kind}"]
        assert [r[0] for r in pai[1:]] == ["-1 print", "-2 replay", "+1 bona fide (BPCER)"]
        assert [r[1] for r in pai[1:]] == ["4", "4", "4"]  # the Test videos of each class
    assert "Test: 12 of 12 listed videos scored" in "".join(page.text)
    for src in page.images:
        image = cv2.imread(str(index.parent / src))
        assert image is not None and min(image.shape[:2]) > 90, src
    assert {"roc_det_mean.png", "score_histogram_mean.png", "roc_det_cdcn.png"} <= set(page.images)
    test = metrics.read_scores(out / "test_scores.txt")
    thr = report["by_score"]["mean"]["metrics"]["iso"]["threshold"]
    expected = worst_errors(test, thr, "iso", 6)
    assert page.cases["errors-mean-attacks"] == [c.video for c in expected["attacks"]]
    assert page.cases["errors-mean-bona_fide"] == [c.video for c in expected["bona_fide"]]
    strips = sorted((out / "report" / "errors").glob("*.png"))
    assert len(strips) == len(expected["attacks"]) + len(expected["bona_fide"])
    assert "errors-cdcn-attacks" not in page.cases  # worst errors of the primary score only
    assert all(_strip_rows(p) == 3 for p in strips)  # face crops, mu, sigma


def _bob_csv(path: Path):
    """Bona fide scores and attack scores per PAI, read the way bob.pad.base 5/6's split_csv_pad_per_pai does."""
    pos, negs = [], defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            (pos if row["is_bonafide"].lower() == "true" else negs[row["attack_type"]]).append(float(row["score"]))
    return np.array(pos), {k: np.array(v) for k, v in negs.items()}


def _bob_four_column(path: Path):
    """The same from a four-column file, the way earlier bob.pad.base versions read it (bona fide iff
    claimed_id == real_id, attacks grouped by real_id)."""
    pos, negs = [], defaultdict(list)
    for line in path.read_text().splitlines():
        claimed, real, _label, score = line.split(" ")
        (pos if claimed == real else negs[real]).append(float(score))
    return np.array(pos), {k: np.array(v) for k, v in negs.items()}


def test_bob_score_files_give_our_rates(tested, tmp_path):
    """--bob-scores: CSV (bob.pad.base 5.x/6.x) and four-column (earlier) files hold every video once, and
    bob's way of reading them gives our per-instrument APCER and BPCER at our threshold (both accept a tie)."""
    out, report = tested
    files = report["bob_scores"]
    assert set(files) == {"mean", "cdcn"} and files["mean"]["eval"] == str(out / "bob" / "scores-eval.csv")
    assert files["cdcn"]["dev"] == str(out / "bob" / "scores_cdcn-dev.csv")
    test = metrics.read_scores(out / "test_scores.txt")
    m = report["by_score"]["mean"]["metrics"]["iso"]
    four = metrics.write_bob_pair(tmp_path / "scores.txt", metrics.read_scores(out / "dev_scores.txt"), test)
    assert four["format"] == metrics.BOB_VERSIONS["other"] and files["mean"]["format"] == metrics.BOB_VERSIONS[".csv"]
    for pos, negs in (_bob_csv(Path(files["mean"]["eval"])), _bob_four_column(Path(four["eval"]))):
        negs = {k.replace("attack/", ""): v for k, v in negs.items()}
        assert len(pos) + sum(map(len, negs.values())) == len(test) == 12 and set(negs) == {"print", "replay"}
        assert np.mean(pos < m["threshold"]) == m["bpcer"]
        assert np.mean(negs["print"] >= m["threshold"]) == m["apcer_per_pai"]["-1"]
        assert np.mean(negs["replay"] >= m["threshold"]) == m["apcer_per_pai"]["-2"]
    assert metrics.bob_attack_type(0) == "unknown" and metrics.bob_attack_type(-9) == "instrument_-9"
    with pytest.raises(ValueError, match="comma"):
        metrics.write_bob_scores(tmp_path / "x.csv", metrics.ScoreSet(["a,b", "c"], [0.1, 0.2], [1, -1]))


def _evaluate(out: Path, report_dir: Path, *extra: str) -> dict:
    args = evaluate.get_args_parser().parse_args(
        ["--dev", str(out / "dev_scores.txt"), "--test", str(out / "test_scores.txt"), "--report", str(report_dir),
         "--device", "cpu", *extra])
    return evaluate.main(args)


def test_evaluate_report_says_what_it_needs_for_faces(tested, crop_root, checkpoint, tmp_path):
    """DUM/evaluate.py --report: the tables, figures and error list from the score files alone, saying that
    face crops need --crop-root; crops with --crop-root, and their mu/sigma maps with --checkpoint too."""
    out, _ = tested
    bare = _evaluate(out, tmp_path / "bare")
    page = Page(Path(bare["report"]).read_text())
    text = "".join(page.text)
    assert "Face crops not shown" in text and "--crop-root" in text and "metrics-scores-iso" in page.tables
    assert page.cases["errors-scores-attacks"] and not list((tmp_path / "bare" / "errors").glob("*.png"))
    crops = _evaluate(out, tmp_path / "crops", "--crop-root", str(crop_root), "--report-frames", "2")
    assert "mu / sigma maps not shown" in Path(crops["report"]).read_text()
    assert {_strip_rows(p) for p in (tmp_path / "crops" / "errors").glob("*.png")} == {1}  # face crops only
    full = _evaluate(out, tmp_path / "full", "--crop-root", str(crop_root), "--checkpoint", str(checkpoint),
                     "--bob-scores", str(tmp_path / "bob" / "s.csv"))
    assert {_strip_rows(p) for p in (tmp_path / "full" / "errors").glob("*.png")} == {3}
    assert full["bob_scores"][0]["eval"] == str(tmp_path / "bob" / "s-eval.csv")
    with pytest.raises(SystemExit, match="add --crop-root"):
        _evaluate(out, tmp_path / "x", "--checkpoint", str(checkpoint))
    with pytest.raises(SystemExit, match="no test_images"):
        _evaluate(out, tmp_path / "x", "--crop-root", str(tmp_path))


def test_evaluate_report_of_several_pairs(tested, tmp_path):
    """Several Dev/Test pairs (OULU-NPU P3/P4, SiW-M folds): a section per pair and the mean ± std table."""
    out, _ = tested
    dev, test = str(out / "dev_scores.txt"), str(out / "test_scores.txt")
    args = evaluate.get_args_parser().parse_args(["--dev", dev, dev, "--test", test, test, "--names", "A", "B",
                                                  "--report", str(tmp_path / "r"), "--bob-scores",
                                                  str(tmp_path / "s.txt")])
    result = evaluate.main(args)
    page = Path(result["report"]).read_text()
    assert "Pair 1/2: A" in page and "Pair 2/2: B" in page and "Mean and standard deviation" in page
    assert {"metrics-pair1-iso", "metrics-pair2-iso"} <= set(Page(page).tables)
    assert [b["eval"] for b in result["bob_scores"]] == [str(tmp_path / "s_1-eval.txt"), str(tmp_path / "s_2-eval.txt")]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (Debian's chromium package)")
def test_report_renders_in_a_browser(tested, tmp_path):
    """Headless Chromium opens index.html from disk (file://, no server, no network) and decodes every image;
    the tables are there, and a screenshot is not blank."""
    out, _ = tested
    folder = tmp_path / "moved"  # the folder stands alone: moved elsewhere, it still shows everything
    shutil.copytree(out / "report", folder)
    probe = folder / "probe.html"  # the page plus a script that records what the browser made of its images
    probe.write_text((folder / "index.html").read_text().replace(
        "</body>", "<script>window.addEventListener('load', () => document.body.setAttribute('data-images', "
        "JSON.stringify([...document.images].map(i => [i.getAttribute('src'), i.naturalWidth]))));</script></body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([str(CHROMIUM), *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    start = dom.stdout.index("data-images=\"") + len("data-images=\"")
    images = json.loads(dom.stdout[start:dom.stdout.index("\"", start)].replace("&quot;", "\""))
    assert len(images) >= 6 and all(width > 90 for _, width in images), images
    rendered = Page(dom.stdout)
    assert {"metrics-mean-iso", "metrics-mean-cdcn", "metrics-cdcn-iso", "pai-mean"} <= set(rendered.tables)
    shot = tmp_path / "shot.png"
    done = subprocess.run([str(CHROMIUM), *flags, "--window-size=1280,1600", "--hide-scrollbars",
                           f"--screenshot={shot}", (folder / "index.html").as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = cv2.imread(str(shot))
    assert pixels.shape[:2] == (1600, 1280) and pixels.std() > 20  # text, tables and plots, not an empty page
