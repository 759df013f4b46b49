"""The GPU check on the CPU (benchmarks/gpu_prep.py, benchmarks/gpu_check.py, benchmarks/bench_gpu.py): the
inputs it carries, its dry run, and the parts of the benchmark that decide without a GPU."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import bench_gpu, gpu_check, gpu_prep

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gpu") / "inputs"
    gpu_prep.prepare(folder, log=lambda *a: None)
    return folder


def test_prepared_inputs_are_small_and_complete(inputs):
    """The preparation writes a crop root with Train/Dev/Test crops and lists, depth maps and a generator
    list, all under 2 MiB, and a manifest that check_inputs accepts."""
    manifest = gpu_prep.check_inputs(inputs)
    assert manifest["bytes"] < 2 * 2 ** 20
    assert manifest["bytes"] == sum(p.stat().st_size for p in inputs.rglob("*") if p.is_file() and p.name != "manifest.json")
    c = manifest["counts"]
    assert c["videos_train"] == 10 and c["videos_dev"] == 10 and c["videos_test"] == 5  # 1 person each, 1 phone
    assert min(c.values()) > 0
    for rel in manifest["crop_lists"] + [manifest["generator_list"]]:
        assert (inputs / rel).is_file(), rel
    assert not (inputs / "sources").exists()  # the videos stay behind


def test_check_inputs_names_the_problem(inputs, tmp_path):
    """A missing manifest, a changed file and a foreign folder are refused, naming the folder and the file."""
    with pytest.raises(gpu_prep.GpuInputsError, match="no manifest.json.*gpu_prep"):
        gpu_prep.check_inputs(tmp_path)
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(inputs), str(copy)], check=True)
    victim = next((copy / "crop" / "test_images").glob("*/*.jpg"))
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(gpu_prep.GpuInputsError, match=victim.relative_to(copy).as_posix()):
        gpu_prep.check_inputs(copy)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(gpu_prep.GpuInputsError, match="no earlier preparation"):
        gpu_prep.prepare(tmp_path / "other")
    assert (tmp_path / "other" / "keep.txt").is_file()


@pytest.mark.slow
def test_dry_run(inputs, tmp_path):
    """benchmarks/gpu_check.sh --dry-run on the CPU, without TensorFlow, mtcnn and mediapipe: every step
    passes (the CUDA tests collect and skip, the pipeline trains, tests, predicts, exports and trains the
    generator, the benchmark runs at tiny sizes) and the results folder has its JSON and Markdown."""
    out = tmp_path / "results"
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run", "--inputs", str(inputs), "--out", str(out),
                           "--python", sys.executable], cwd=REPO, capture_output=True, text=True, timeout=900)
    summary = json.loads((out / "summary.json").read_text())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + json.dumps(summary["steps"])
    assert [s["step"] for s in summary["steps"]] == ["inputs", "environment", "tests", "pipeline", "benchmark"]
    tests = summary["steps"][2]["counts"]
    assert tests["skipped"] > 0 and tests["passed"] == tests["failed"] == tests["errors"] == 0
    env = summary["environment"]
    assert all(env["packages"][m] is None for m in gpu_check.ABSENT)
    facts = json.loads((out / "pipeline" / "pipeline.json").read_text())
    assert facts["test_videos_scored"] == {"dev": 10, "test": 5}
    bench = json.loads((out / "gpu_bench.json").read_text())
    kinds = {(r.get("network"), r.get("kind")) for r in bench["rows"]}
    assert {("cdcn_u", "train"), ("cdcn_u", "inference"), ("generator", "train")} <= kinds
    assert "## Benchmark" in (out / "summary.md").read_text()


def test_largest_batch_steps_down_on_out_of_memory():
    """The generator's batch search takes the first batch that fits; other errors are not swallowed."""
    tried = []

    def try_batch(b):
        tried.append(b)
        if b > 96:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    batch, failed = bench_gpu.largest_batch(try_batch, [240, 192, 128, 96, 64], torch.device("cpu"), log=lambda *a: None)
    assert (batch, failed, tried) == (96, [240, 192, 128], [240, 192, 128, 96])

    def broken(b):
        raise RuntimeError("cuDNN error: CUDNN_STATUS_BAD_PARAM")

    with pytest.raises(RuntimeError, match="BAD_PARAM"):
        bench_gpu.largest_batch(broken, [4, 2], torch.device("cpu"), log=lambda *a: None)
    with pytest.raises(ValueError, match="no generator batch"):
        bench_gpu.largest_batch(lambda b: try_batch(500), [4, 2], torch.device("cpu"), log=lambda *a: None)


def test_datasheet_peak_is_only_claimed_for_known_gpus():
    assert bench_gpu.datasheet_peak("NVIDIA H200")[0] == pytest.approx(989.4)
    assert bench_gpu.datasheet_peak("NVIDIA H200 NVL")[0] == pytest.approx(835.5)
    assert bench_gpu.datasheet_peak("NVIDIA A10")[0] is None and bench_gpu.datasheet_peak(None)[0] is None


def test_junit_counts(tmp_path):
    xml = tmp_path / "t.xml"
    xml.write_text('<testsuites><testsuite><testcase classname="a" name="ok"/><testcase classname="a" name="s">'
                   '<skipped message="no CUDA"/></testcase><testcase classname="a" name="f"><failure message="boom"/>'
                   '</testcase></testsuite></testsuites>')
    c = gpu_check.junit_counts(xml)
    assert (c["passed"], c["skipped"], c["failed"], c["errors"]) == (1, 1, 1, 0)
    assert c["failures"] == [{"test": "a::f", "message": "boom"}]
    assert "error" in gpu_check.junit_counts(tmp_path / "missing.xml")


def test_every_flag_has_help():
    """The three parsers (one per script) document every flag."""
    for module in (gpu_prep, gpu_check, bench_gpu):
        for action in module.get_args_parser()._actions:
            assert action.help, (module.__name__, action.option_strings)
