"""One bad video does not stop the pipeline: stage exit codes, STRICT=1 in the scripts, and the
end-of-run summary of what failed where (data/prep_common.py, data/failures.py, scripts/_common.sh)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from data import failures
from data.prep_common import Summary, VideoResult, write_report
from test_extract_frame import write_video

REPO = Path(__file__).resolve().parents[1]


def _summary(done: int, failed: int, fatal: int = 0) -> Summary:
    s = Summary("bbox")
    for i in range(done):
        s.add(VideoResult("test", f"1_3_36_{i + 1}", "done"))
    for i in range(failed):
        s.add(VideoResult("test", f"1_3_37_{i + 1}", "failed", f"frame {i}: unreadable image"))
    for i in range(fatal):
        s.fail("prep/dev_images", "frame folder not found")
    return s


class TestExitCode:
    def test_per_video_failures_exit_0_unless_strict(self):
        s = _summary(done=3, failed=1)
        assert (s.exit_code(), s.exit_code(strict=True)) == (0, 1) and not s.ok
        assert "1 of 4 videos failed" in s.outcome() and "exit 1" in s.outcome(strict=True)

    def test_what_is_not_about_one_video_exits_1(self):
        assert _summary(done=3, failed=0, fatal=1).exit_code() == 1   # a missing input folder
        assert _summary(done=0, failed=2).exit_code() == 1            # every video failed
        assert _summary(done=0, failed=0).exit_code() == 1            # nothing found at all
        assert _summary(done=2, failed=0).exit_code(strict=True) == 0


def test_summary_names_every_failure_and_the_test_coverage(tmp_path, capsys):
    """data.failures prints, per stage report, the videos done and the failed ones by name; per test
    report how many listed videos each score scored and which not; the generator's label sources."""
    args = argparse.Namespace(root=tmp_path)
    write_report(tmp_path, _summary(done=3, failed=2), args)
    ok = Summary("extract_frame")
    ok.add(VideoResult("train", "1_1_01_1", "done"))
    write_report(tmp_path, ok, args)
    (tmp_path / "generated_p1.json").write_text(json.dumps(
        {"settings": {"depth_backend": "mesh", "fallback_backend": "ellipsoid"},
         "summary": {"pairs": 400, "depth_maps_primary": 10, "depth_maps_fallback": 390}}))
    report = tmp_path / "test" / "report.json"
    report.parent.mkdir()
    cov = {"dev": {"listed": 40, "scored": 40, "missing": []},
           "test": {"listed": 40, "scored": 38, "missing": ["1_3_36_2", "1_3_40_4"]}}
    report.write_text(json.dumps({"score": "mean", "by_score": {"mean": {"coverage": cov}}}))
    assert failures.main([str(tmp_path), str(report), str(tmp_path / "not_run_yet")]) == 0
    out = capsys.readouterr().out
    assert "bbox: 3 of 5 videos complete, 2 FAILED" in out
    assert "test/1_3_37_1: frame 0: unreadable image" in out and "test/1_3_37_2" in out
    assert "extract_frame: 1 of 1 videos complete  [" in out
    assert "10 by 'mesh', 390 by the fallback 'ellipsoid'" in out
    assert "score 'mean': listed videos scored: Dev 40 of 40; Test 38 of 40 (not scored: 1_3_36_2, 1_3_40_4)" in out


def _script_env(tmp_path: Path, **extra) -> dict:
    env = dict(os.environ, DSDG_PYTHON=sys.executable, OULU_ROOT=str(tmp_path / "oulu"),
               PREP_ROOT=str(tmp_path / "prep"), SPLITS="train", DSDG_NO_PROGRESS="1")
    env.update(extra)
    return env


def test_scripts_go_on_past_a_bad_video_and_stop_with_strict(tmp_path):
    """scripts/01_extract_frames.sh exits 0 with one corrupt video (so a set -e driver goes on) and 1 with
    STRICT=1; report_failures (scripts/_common.sh) then names the video."""
    write_video(tmp_path / "oulu" / "Train_files" / "1_1_01_1.avi", n=2)
    (tmp_path / "oulu" / "Train_files" / "1_1_01_2.avi").write_bytes(b"junk")
    script = str(REPO / "scripts" / "01_extract_frames.sh")
    r = subprocess.run(["bash", script], env=_script_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    strict = subprocess.run(["bash", script, "--overwrite"], env=_script_env(tmp_path, STRICT="1"),
                            capture_output=True, text=True, timeout=120)
    assert strict.returncode == 1 and "--strict" in strict.stdout
    bad = subprocess.run(["bash", script], env=_script_env(tmp_path, STRICT="yes"), capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 1 and "STRICT must be 0 or 1" in bad.stderr
    summary = subprocess.run(["bash", "-c", 'source scripts/_env.sh; source scripts/_common.sh; report_failures "$1"',
                              "_", str(tmp_path / "prep")], cwd=REPO, env=_script_env(tmp_path),
                             capture_output=True, text=True, timeout=120)
    assert summary.returncode == 0 and "what failed where" in summary.stdout
    assert "1_1_01_2.avi: OpenCV cannot open it" in summary.stdout
