"""Smoke tests for benchmarks/bench.py: every section runs at tiny sizes and the JSON/Markdown are complete."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from benchmarks import bench
from DUM import zoo
from cli_helpers import cli_help



def _run(tmp_path: Path, *flags: str) -> dict:
    args = bench.get_args_parser().parse_args(["--quick", "--out", str(tmp_path), *flags])
    bench.main(args, log=lambda *a: None)
    return json.loads((tmp_path / "bench.json").read_text())


def _numeric(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_quick_run_writes_every_section(tmp_path):
    """A --quick run writes bench.json and bench.md with every section, numeric rates and PASS/MISS verdicts."""
    torch.manual_seed(0)
    result = _run(tmp_path, "--sections", "peak", "inference", "dum_train", "networks", "generator", "data_loading",
                  "gpu", "compile", "--compile-timeout", "1")
    sections = result["sections"]
    assert set(sections) == set(bench.SECTIONS)
    for name in ("peak", "inference", "dum_train", "networks", "generator", "data_loading"):
        assert sections[name]["status"] == "ran" and sections[name]["rows"], name
        for row in sections[name]["rows"]:
            assert _numeric(row["ours"]) and row["ours"] > 0, (name, row["what"])
            if row["baseline"] is not None:
                assert _numeric(row["baseline"]) and _numeric(row["ratio"])
            if row["target"] is not None:
                assert isinstance(row["met"], bool)
    assert sections["compile"]["status"] == "skipped" and "1 s" in sections["compile"]["reason"]
    assert sections["data_prep"]["reason"] == "not selected (--sections)"
    if not torch.cuda.is_available():
        assert sections["gpu"]["status"] == "skipped" and "CUDA" in sections["gpu"]["reason"]
    # Output checks (not timing): the fp32 paths agree with the original, bf16 deviation is reported.
    fp32, bf16 = sections["inference"]["rows"][:2]
    assert fp32["max_abs_diff"] <= 1e-5 and _numeric(bf16["max_abs_deviation"])
    assert sections["generator"]["rows"][0]["max_abs_diff"] <= 1e-5
    # Every network of DUM.zoo, inference and training, each against cdcn_u measured in the same run.
    networks = sections["networks"]["rows"]
    assert sorted((r["model"], r["what"].split(" ", 1)[1]) for r in networks) == sorted(
        (m, kind) for m in zoo.NAMES for kind in ("inference, fp32", "training step, fp32"))
    assert all(_numeric(r["baseline"]) and r["gflop_per_image"] > 0 for r in networks)
    assert set(result["peak_gflops"]) == {"fp32", "bf16"}
    md = (tmp_path / "bench.md").read_text()
    assert "| section | measurement |" in md and ("PASS" in md or "MISS" in md)
    for name in bench.SECTIONS:
        assert f"| {name} |" in md, name


def test_gpu_rows_are_bench_gpu_rows_in_this_table():
    """The gpu section reports benchmarks/bench_gpu.py's rows (run on the CPU by tests/test_gpu_check.py's dry
    run): each keeps its rate, utilisation and peak memory, and the note says them in words."""
    result = {"rows": [
        {"what": "CDCN_U training step, batch 64, 256 px, bf16", "unit": "img/s", "value": 812.0, "tflops": 150.2,
         "mfu_measured": 0.21, "mfu_datasheet": 0.15, "peak_memory_gib": 20.5, "latency_ms": None},
        {"what": "CDCN_U inference latency, batch 1, 256 px, bf16", "unit": "img/s", "value": 400.0, "tflops": None,
         "mfu_measured": None, "mfu_datasheet": None, "peak_memory_gib": None, "latency_ms": 2.5}]}
    rows = bench.gpu_rows(result)
    assert [r["what"] for r in rows] == ["GPU: " + r["what"] for r in result["rows"]]
    assert rows[0]["ours"] == 812.0 and rows[0]["ratio"] is None and rows[0]["met"] is None
    assert rows[0]["note"] == "150.2 TFLOP/s; 21 % of the measured bf16 ceiling; peak 20.50 GiB"
    assert rows[1]["note"] == "" and rows[1]["latency_ms"] == 2.5


def test_help_runs_as_file_and_module():
    """bench.py prints --help both as a file and as a module, naming every section."""
    for how in (["benchmarks/bench.py"], ["-m", "benchmarks.bench"]):
        done = cli_help(how)
        assert done.returncode == 0, done.stderr
        assert "--sections" in done.stdout and "data_prep" in done.stdout and "--quick" in done.stdout


@pytest.mark.slow
def test_quick_data_prep_section(tmp_path):
    """The data-preparation section (bench_data.py child process, synthetic dataset) gives frames/s per stage."""
    result = _run(tmp_path, "--sections", "data_prep")
    rows = result["sections"]["data_prep"]["rows"]
    assert any("extract frames" in r["what"] for r in rows) and any("synthetic" in r["what"] for r in rows)
    assert all(_numeric(r["ours"]) and r["ours"] > 0 for r in rows)
    assert (tmp_path / "bench_data.json").is_file()


def _target_sections(inference_gflops, train_gflops, generator_gflops, generator_precision="fp32"):
    def rows(*pairs):
        return {"status": "ran", "rows": [{"what": what, "gflops_ours": g, **more} for what, g, more in pairs]}
    return {"inference": rows(("CDCN_U inference, fp32", 150.0, {}),
                              ("CDCN_U inference, bf16 autocast (vs original fp32)", inference_gflops,
                               {"cpu_bf16_supported": True})),
            "dum_train": rows(("CDCN_U training step, fp32", train_gflops, {})),
            "generator": rows(("Generator training step", generator_gflops, {"precision": generator_precision}))}


def test_targets_pass_miss_against_the_same_run_ceilings():
    """PASS at or above the fraction of the ceiling of the row's own dtype, MISS below with the numbers, and
    'not measured' (never PASS) without the row or without a ceiling."""
    peak = {"fp32": 100.0, "bf16": 400.0}
    got = {t["target"]: t for t in bench.target_rows(_target_sections(380.0, 89.0, 90.0), peak)}
    assert got["bf16 inference"]["verdict"] == "PASS" and got["bf16 inference"]["fraction"] == pytest.approx(0.95)
    assert got["fp32 DUM training step"]["verdict"] == "MISS"
    assert "89.0 GFLOP/s = 89 % of the 100 GFLOP/s fp32 ceiling (needs 90 %)" in got["fp32 DUM training step"]["why"]
    assert "not measured in this run" in got["fp32 DUM training step"]["why"]  # what bounds it: not guessed
    assert got["bf16 DUM training step"]["verdict"] == "not measured"  # no bf16 training row
    assert got["generator training step"]["verdict"] == "PASS" and got["generator training step"]["dtype"] == "fp32"
    # A bf16 generator step is held against the bf16 ceiling; below 95 % of it, bf16 inference misses.
    got = {t["target"]: t for t in bench.target_rows(_target_sections(379.0, 95.0, 90.0, "bf16"), peak)}
    assert got["bf16 inference"]["verdict"] == "MISS"
    assert got["generator training step"]["verdict"] == "MISS" and got["generator training step"]["ceiling"] == 400.0
    # Without the peak section nothing passes.
    assert {t["verdict"] for t in bench.target_rows(_target_sections(380.0, 95.0, 95.0), None)} == {"not measured"}
    md = bench.markdown({"machine": {"cpu": "x", "cores": 2, "cpu_flags": [], "torch": "t", "threads": 2, "cuda": None},
                         "command": "c", "peak_gflops": peak, "sections": {},
                         "targets": bench.target_rows(_target_sections(380.0, 89.0, 90.0), peak)})
    assert "| fp32 DUM training step | 89.0 | 100 (fp32) | 89 % | 90 % | MISS |" in md
