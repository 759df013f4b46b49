"""End-to-end: ``scripts/demo.sh`` at a tiny size, every stage's outputs, the final metrics, and a rerun (the
ablation's smoke test is in tests/test_ablation_smoke.py).

Selected with ``-m e2e``; part of the default suite too. It runs the real shell scripts with this
interpreter (``DSDG_PYTHON``), so it checks exactly what a user runs, only smaller.
"""
from __future__ import annotations

import json
import math

import pytest

from data.protocol_lists import read_protocol
from e2e_demo import METRIC_KEYS, run_demo

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo(tiny_demo):
    """The tiny demo run of the session (tests/conftest.py)."""
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
