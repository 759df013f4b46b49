"""The GPU check: the CUDA tests, then the GPU benchmark, all results in one folder, in at most 8 minutes.

    bash benchmarks/gpu_check.sh --inputs benchmarks/gpu_inputs --out gpu_results      # on the CUDA machine
    bash benchmarks/gpu_check.sh --dry-run --inputs benchmarks/gpu_inputs --out runs/gpu_dry_run # anywhere, on the CPU

For a machine whose ``python3`` has torch, torchvision, OpenCV, scikit-learn, tensorboard, tqdm,
onnxruntime and pytest, but not TensorFlow, mtcnn or mediapipe, and no network: the data come from
``--inputs``, made beforehand on a CPU machine by ``python -m benchmarks.gpu_prep`` and carried along.
Every step runs in a child process with TensorFlow, mtcnn and mediapipe made unimportable (so the dry
run here fails where the GPU machine would) and with its own time limit, taken from ``--budget``:

1. ``inputs``: the prepared folder against its manifest (``benchmarks.gpu_prep.check_inputs``);
2. ``environment``: GPU, driver (``nvidia-smi``), torch / CUDA / cuDNN versions -> ``environment.json``;
3. ``tests``: ``pytest -m gpu tests/test_gpu.py`` (JUnit XML ``gpu_tests.xml``, log ``gpu_tests.log``);
4. ``pipeline`` (the dry run only): :func:`pipeline_check` in a child process, on the CPU: DUM/train.py,
   DUM/test.py, the predictor, DUM/export_onnx.py and train_generator.py on the prepared inputs (on CUDA
   the tests run it: ``test_train_test_predict_export_on_cuda``);
5. ``benchmark``: ``benchmarks/bench_gpu.py`` -> ``gpu_bench.json`` / ``gpu_bench.md``.

``summary.json`` and ``summary.md`` (written last) give each step's status, time and the test counts,
with the benchmark table. The exit status is 0 only when every step passed.

``--dry-run`` runs the same steps on the CPU at the smallest sizes, so that CI catches breakage: the
tests are collected (their imports and the ``gpu`` marker checked) and run, where they skip for want
of CUDA; the pipeline trains, scores, exports and trains the generator on the CPU at 32 px;
the benchmark runs ``--quick --device cpu``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.gpu_prep import DEFAULT_OUT as DEFAULT_INPUTS  # noqa: E402
from benchmarks.gpu_prep import GENERATOR_LIST, GpuInputsError, check_inputs  # noqa: E402
from misc.io import atomic_write_json, atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 480.0
# Each step's share of the budget (seconds); a step gets the smaller of its share and what is left.
STEP_LIMITS = {"environment": 60.0, "tests": 270.0, "pipeline": 240.0, "benchmark": 170.0}
ABSENT = ("tensorflow", "mtcnn", "mediapipe")  # not on the GPU machine: every child runs without them
INPUTS_ENV, DRY_RUN_ENV = "DSDG_GPU_INPUTS", "DSDG_GPU_DRY_RUN"


class CheckFailed(AssertionError):
    """A GPU-check expectation did not hold; the message says which and by how much."""


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("DSDG GPU check", add_help=False)
    p.add_argument("--inputs", type=Path, default=DEFAULT_INPUTS,
                   help="folder made by `python -m benchmarks.gpu_prep` on a CPU machine. Default: "
                        "benchmarks/gpu_inputs")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_check",
                   help="folder for every result (an earlier check's is replaced; any other non-empty folder is "
                        "refused). Default: benchmarks/results/gpu_check")
    p.add_argument("--dry-run", action="store_true",
                   help="on the CPU at the smallest sizes: checks the inputs and runs every step's code, for CI")
    p.add_argument("--budget", type=float, default=None,
                   help=f"seconds for the whole check; each step stops at its share. Default: {BUDGET_S:.0f} "
                        f"(8 minutes), or {2 * BUDGET_S:.0f} for --dry-run (a shared CPU; every share doubled)")
    p.add_argument("--python", default=sys.executable, help="interpreter of the steps. Default: this one")
    return p


# ----------------------------------------------------------------------------------------------
# The end-to-end pipeline on the prepared inputs (run by tests/test_gpu.py on CUDA, by the dry run on the CPU)
# ----------------------------------------------------------------------------------------------

def _run_main(module, argv: List[str]):
    parser = argparse.ArgumentParser(parents=[module.get_args_parser()])
    return module.main(parser.parse_args([str(a) for a in argv]))


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise CheckFailed(message)


class BoxFileDetector:
    """The face detector interface of ``DUM.predict.Predictor`` (``detect_all``, ``__call__``) answered
    from box files written on the CPU machine (MTCNN, TensorFlow, is not on the GPU machine): frame i of
    the list gets box i."""

    def __init__(self, boxes):
        self.boxes, self.calls = list(boxes), 0

    def detect_all(self, images_rgb):
        out = [[self.boxes[self.calls + i]] for i in range(len(images_rgb))]
        self.calls += len(images_rgb)
        return out

    def __call__(self, images_rgb):
        return [faces[0] for faces in self.detect_all(images_rgb)]


def pipeline_check(inputs: Path, work: Path, device: str, small: bool = False, log=print) -> dict:
    """Train CDCN + DUM with DUM/train.py on ``device`` (mixed precision on CUDA, 2 DataLoader workers),
    test it with DUM/test.py, score faces with the predictor on ``device`` and on the CPU, export it
    with DUM/export_onnx.py and score the ONNX file, and train the generator for two steps with
    train_generator.py; raises :class:`CheckFailed` when an expectation fails. Returns what it measured.
    ``small`` (the dry run): 32 px, one training step of each network, a generator of 32 channels at most."""
    import cv2
    import numpy as np
    import torch

    import train_generator
    from DUM import export_onnx, predict
    from DUM import test as dum_test
    from DUM import train as dum_train
    from DUM.transforms import normalise_image, resize

    manifest = check_inputs(inputs)
    inputs, work = Path(inputs), Path(work)
    size = 32 if small else manifest["image_size"]
    epochs, iters = (1, 1) if small else (2, 2)
    map_size = size // 8
    crop, cuda = inputs / "crop", device.startswith("cuda")
    precision = "fp16" if cuda else "fp32"  # the trainers' mixed precision on CUDA (GradScaler)
    facts: Dict[str, object] = {"device": device, "image_size": size}
    t0 = time.perf_counter()

    # DUM/train.py: 2 epochs of 2 batches (the dry run: 1 of 1), evaluated on Dev and Test at the end.
    run = work / "dum"
    _run_main(dum_train, ["--data-root", crop, "--output-dir", run, "--image-size", size, "--map-size", map_size,
                          "--batch-size", 8, "--epochs", epochs, "--iters-per-epoch", iters, "--workers", 2,
                          "--preload-mb", 0, "--device", device, "--precision", precision,
                          "--eval-start", epochs, "--eval-every", 1, "--eval-plots", "false", "--lr", 1e-3])
    ckpt = run / "checkpoint.pth"
    _expect(ckpt.is_file(), f"DUM/train.py wrote no {ckpt}")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    params = state["models"]["model"]
    _expect(all(torch.isfinite(v).all() for v in params.values() if v.is_floating_point()),
            f"{ckpt}: non-finite parameters after training on {device}")
    threshold = state.get("extra", {}).get("threshold")
    _expect(threshold is not None and np.isfinite(threshold), f"{ckpt}: no finite Dev threshold stored ({threshold})")
    facts["threshold"] = float(threshold)
    log(f"  DUM/train.py on {device} ({precision}): threshold {threshold:.4g} ({time.perf_counter() - t0:.0f} s)")

    # DUM/test.py on the same device: every Dev and Test video scored.
    report = _run_main(dum_test, ["--checkpoint", ckpt, "--data-root", crop, "--output-dir", work / "test",
                                  "--device", device, "--workers", 2, "--plots", "false"])
    counts = {k: manifest["counts"][f"videos_{k}"] for k in ("dev", "test")}
    scored = _scored_videos(report)
    _expect(scored == counts, f"DUM/test.py scored {scored} videos, the lists have {counts}")
    facts["test_videos_scored"] = scored

    # The predictor: the trained checkpoint on the device and on the CPU, the same faces.
    faces = sorted((crop / "test_images").glob("*/*.jpg"))
    batch = torch.stack([normalise_image(resize(cv2.imread(str(f)), size)) for f in faces])
    on_device = predict.TorchScorer(ckpt, device, size)(batch)
    on_cpu = predict.TorchScorer(ckpt, "cpu", size)(batch)
    scale = float(np.abs(on_cpu).max()) or 1.0
    diff = float(np.abs(on_device - on_cpu).max())
    facts["predict_max_abs_diff_vs_cpu"] = diff
    _expect(diff <= 1e-2 * scale + 1e-6, f"predictor scores on {device} differ from the CPU's by {diff:.2e} "
                                         f"(scores up to {scale:.3g})")
    frames, boxes = _train_frames_and_boxes(inputs, 4)
    predictor = predict.Predictor(predict.TorchScorer(ckpt, device), BoxFileDetector(boxes), float(threshold))
    found = [predictor(cv2.imread(str(f))) for f in frames]
    _expect(all(len(x) == 1 and np.isfinite(x[0].score) for x in found),
            f"Predictor on {device}: expected one finite face per frame, got {[len(x) for x in found]}")
    log(f"  predictor on {device}: {len(faces)} faces, max |score - CPU score| {diff:.1e}")

    # DUM/export_onnx.py from the device-trained checkpoint (it compares onnxruntime with PyTorch itself).
    onnx_path = work / "cdcn_u.onnx"
    _run_main(export_onnx, ["--checkpoint", ckpt, "--out", onnx_path])
    _expect(onnx_path.is_file(), f"DUM/export_onnx.py wrote no {onnx_path}")
    onnx_scores = predict.OnnxScorer(onnx_path, "cpu")(batch)
    onnx_diff = float(np.abs(onnx_scores - on_device).max())
    facts["onnx_max_abs_diff_vs_device"] = onnx_diff
    _expect(onnx_diff <= 1e-2 * scale + 1e-6, f"ONNX scores differ from the {device} scores by {onnx_diff:.2e}")
    log(f"  ONNX export: max |onnxruntime - {device}| {onnx_diff:.1e}")

    # train_generator.py: two steps from the prepared list, 2 DataLoader workers (the dry run: one, narrow).
    gen = work / "generator"
    _run_main(train_generator, ["--prep-root", inputs / "prep", "--train-list", inputs / GENERATOR_LIST,
                                "--output-dir", gen, "--image-size", 32 if small else 64, "--hdim", 16,
                                "--max-channels", 32 if small else 512, "--batch-size", 4, "--workers", 2,
                                "--device", device, "--no-identity-loss", "--epochs", 1,
                                "--max-iters-per-epoch", iters, "--num-grid", 2, "--log-every", 1,
                                "--precision", precision])
    gen_ckpt = gen / "checkpoint.pth"
    _expect(gen_ckpt.is_file(), f"train_generator.py wrote no {gen_ckpt}")
    gstate = torch.load(gen_ckpt, map_location="cpu", weights_only=True)
    _expect(all(torch.isfinite(v).all() for part in gstate["models"].values() for v in part.values()
                if v.is_floating_point()), f"{gen_ckpt}: non-finite generator parameters after training on {device}")
    facts["seconds"] = round(time.perf_counter() - t0, 1)
    log(f"  train_generator.py on {device}: {iters} step(s) ({facts['seconds']:.0f} s in all)")
    return facts


def _scored_videos(report: dict) -> Dict[str, int]:
    """Videos DUM/test.py scored per split."""
    return {k: int(report[k]["videos"]) for k in ("dev", "test")}


def _train_frames_and_boxes(inputs: Path, n: int):
    """The first ``n`` generator-list frames and their face boxes (read from the prepared box files)."""
    from data.box_files import read_box

    lines = (inputs / GENERATOR_LIST).read_text().split()
    rels = [lines[i] for i in range(0, len(lines), 4)][:n]
    frames = [inputs / "prep" / "train_images" / r for r in rels]
    boxes = [read_box(inputs / "prep" / "train_bbox" / Path(r).with_suffix(".dat")) for r in rels]
    return frames, boxes


# ----------------------------------------------------------------------------------------------
# The steps
# ----------------------------------------------------------------------------------------------

BLOCK = "import sys; sys.modules.update({m: None for m in %r}); " % (ABSENT,)


def child_command(python: str, module: str, args: List[str]) -> List[str]:
    """``python -m module args`` with the packages the GPU machine lacks made unimportable."""
    return [python, "-c", BLOCK + f"import runpy; runpy.run_module({module!r}, run_name='__main__', alter_sys=True)",
            *args]


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (a step's cost beside its wall time)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Runner:
    """Runs the steps in order with time limits from one budget, recording each one's outcome."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.out = args, Path(args.out)
        self.start = time.monotonic()
        self.steps: List[dict] = []
        self.env = {**os.environ, INPUTS_ENV: str(Path(args.inputs).resolve()), "DSDG_NO_PROGRESS": "1",
                    "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
        if args.dry_run:
            self.env[DRY_RUN_ENV] = "1"
            self.env["CUDA_VISIBLE_DEVICES"] = ""  # the dry run is the CPU path even on a GPU machine

    def left(self) -> float:
        return self.args.budget - (time.monotonic() - self.start)

    def child(self, name: str, module: str, argv: List[str], log_name: str) -> dict:
        share = STEP_LIMITS[name] * (2 if self.args.dry_run else 1)
        limit = max(5.0, min(share, self.left() - 10))
        t, cpu = time.monotonic(), _children_cpu()
        with open(self.out / log_name, "w", encoding="utf-8") as f:
            try:
                rc = subprocess.run(child_command(self.args.python, module, argv), cwd=ROOT, env=self.env,
                                    stdout=f, stderr=subprocess.STDOUT, timeout=limit).returncode
                status = "passed" if rc == 0 else "failed"
            except subprocess.TimeoutExpired:
                rc, status = None, "timed out"
        step = {"step": name, "status": status, "returncode": rc, "seconds": round(time.monotonic() - t, 1),
                "cpu_seconds": round(_children_cpu() - cpu, 1), "limit_s": round(limit), "log": log_name}
        print(f"[{name}] {status} ({step['seconds']:.0f} s of {limit:.0f}; log {self.out / log_name})", flush=True)
        self.steps.append(step)
        return step

    def record(self, name: str, status: str, t: float, **more) -> dict:
        step = {"step": name, "status": status, "seconds": round(time.monotonic() - t, 1), **more}
        print(f"[{name}] {status}" + (f": {more['error']}" if "error" in more else ""), flush=True)
        self.steps.append(step)
        return step


ENV_CODE = """
import importlib, json, platform, sys
import torch
p = torch.cuda.get_device_properties(0) if torch.cuda.is_available() else None
facts = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
         "cudnn": torch.backends.cudnn.version(), "cuda_available": torch.cuda.is_available(),
         "gpu": p and p.name, "gpu_memory_gib": p and round(p.total_memory / 2 ** 30, 1),
         "capability": p and f"{p.major}.{p.minor}", "bf16": torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
         "packages": {}}
from importlib import metadata, util
dists = metadata.packages_distributions()
for name in sys.argv[1:]:  # found, not imported (fast); the blocked ones count as absent
    found = sys.modules.get(name, 0) is not None and util.find_spec(name) is not None
    versions = [metadata.version(d) for d in dists.get(name, [])] if found else []
    facts["packages"][name] = (versions[0] if versions else "present") if found else None
print(json.dumps(facts))
"""


def environment(python: str, env: dict) -> dict:
    """GPU, driver and library versions, as the steps' interpreter sees them (the packages the GPU
    machine lacks are listed as None: the steps run without them)."""
    names = ("torchvision", "cv2", "sklearn", "tensorboard", "tqdm", "onnxruntime", "onnx") + ABSENT
    done = subprocess.run([python, "-c", BLOCK + ENV_CODE, *names], capture_output=True, text=True,
                          timeout=STEP_LIMITS["environment"], env=env, check=True)
    facts = json.loads(done.stdout)
    smi = shutil.which("nvidia-smi")
    if smi:
        facts["nvidia_smi"] = subprocess.run([smi], capture_output=True, text=True, timeout=20).stdout
    return facts


def junit_counts(xml_path: Path) -> Dict[str, object]:
    """passed / failed / errors / skipped of a JUnit XML file, and the failing tests' names and messages."""
    if not xml_path.is_file():
        return {"error": f"{xml_path.name} was not written"}
    root = ET.parse(xml_path).getroot()
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": []}
    for case in root.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = [c.tag for c in case]
        if "failure" in kinds or "error" in kinds:
            counts["failed" if "failure" in kinds else "errors"] += 1
            node = case.find("failure") if "failure" in kinds else case.find("error")
            counts["failures"].append({"test": name, "message": (node.get("message") or "")[:500]})
        elif "skipped" in kinds:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts


def summary_markdown(summary: dict, out: Path) -> str:
    lines = [f"# GPU check ({'dry run on the CPU' if summary['dry_run'] else 'CUDA'})", "",
             f"Inputs: `{summary['inputs']}` ({summary.get('input_files', '?')} files, "
             f"{summary.get('input_mib', 0):.2f} MiB). Total {summary['seconds']:.0f} s of {summary['budget_s']:.0f}. "
             f"GPU: {summary['environment'].get('gpu') or 'none'}; torch {summary['environment'].get('torch')}, "
             f"CUDA {summary['environment'].get('cuda')}.", "", "| step | status | seconds | CPU seconds | note |", "|---|---|---|---|---|"]
    for s in summary["steps"]:
        note = s.get("error", "")
        if s["step"] == "tests" and "counts" in s:
            c = s["counts"]
            note = (f"{c.get('passed', 0)} passed, {c.get('failed', 0)} failed, {c.get('errors', 0)} errors, "
                    f"{c.get('skipped', 0)} skipped" if "error" not in c else c["error"])
        lines.append(f"| {s['step']} | {s['status']} | {s['seconds']:.0f} | {s.get('cpu_seconds', '-')} | {note} |")
    failures = next((s["counts"].get("failures") for s in summary["steps"] if s["step"] == "tests" and "counts" in s),
                    None)
    if failures:
        lines += ["", "Failing tests:", ""] + [f"- `{f['test']}`: {f['message']}" for f in failures]
    bench = out / "gpu_bench.md"
    if bench.is_file():
        lines += ["", "## Benchmark", "", bench.read_text()]
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    """Run the check; returns the exit status (0: every step passed)."""
    if args.budget is None:
        args.budget = 2 * BUDGET_S if args.dry_run else BUDGET_S
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        if not (out / "summary.json").is_file():  # never delete a folder this script did not write
            raise SystemExit(f"error: --out {out} exists and holds no earlier GPU check (no summary.json); "
                             "choose an empty or new folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner(args)
    summary: dict = {"dry_run": args.dry_run, "inputs": str(args.inputs), "budget_s": args.budget, "environment": {}}

    t = time.monotonic()
    try:
        manifest = check_inputs(args.inputs)
        summary.update(input_files=len(manifest["files"]), input_mib=manifest["bytes"] / 2 ** 20)
        runner.record("inputs", "passed", t, counts=manifest["counts"])
    except GpuInputsError as e:
        runner.record("inputs", "failed", t, error=str(e))
        return finish(runner, summary)

    t = time.monotonic()
    try:
        summary["environment"] = environment(args.python, runner.env)
        atomic_write_json(out / "environment.json", summary["environment"])
        cuda = summary["environment"]["cuda_available"]
        ok = cuda or args.dry_run
        runner.record("environment", "passed" if ok else "failed", t,
                      **({} if ok else {"error": "torch sees no CUDA device (use --dry-run on a CPU machine)"}))
        if not ok:
            return finish(runner, summary)
    except subprocess.TimeoutExpired:
        runner.record("environment", "failed", t, error=f"torch did not start within {STEP_LIMITS['environment']:.0f} s")
        return finish(runner, summary)
    except (subprocess.SubprocessError, OSError, ValueError) as e:
        runner.record("environment", "failed", t, error=f"{type(e).__name__}: {str(e)[-300:]}")
        return finish(runner, summary)

    xml = out / "gpu_tests.xml"
    step = runner.child("tests", "pytest", ["-m", "gpu", "tests/test_gpu.py", "-p", "no:cacheprovider", "-q",
                                            "--junitxml", str(xml)], "gpu_tests.log")
    step["counts"] = junit_counts(xml)
    if args.dry_run and step["status"] == "passed":  # on the CPU every CUDA test must skip, none may pass or fail
        c = step["counts"]
        if c.get("passed") or not c.get("skipped"):
            step.update(status="failed", error=f"on the CPU the gpu tests must all skip: {c}")
    elif not args.dry_run and step["status"] == "passed" and step["counts"].get("skipped"):
        step.update(status="failed", error=f"{step['counts']['skipped']} gpu test(s) skipped on a CUDA machine")

    if args.dry_run:  # on CUDA the tests run the pipeline (test_train_test_predict_export_on_cuda)
        runner.child("pipeline", "benchmarks.gpu_check", ["--pipeline-only", "--inputs", str(args.inputs), "--out",
                                                          str(out / "pipeline"), "--device", "cpu", "--small"],
                     "pipeline.log")

    runner.child("benchmark", "benchmarks.bench_gpu", ["--out", str(out)]
                 + (["--quick", "--device", "cpu"] if args.dry_run else []), "gpu_bench.log")
    return finish(runner, summary)


def finish(runner: Runner, summary: dict) -> int:
    summary["steps"] = runner.steps
    summary["seconds"] = round(time.monotonic() - runner.start, 1)
    summary["passed"] = all(s["status"] == "passed" for s in runner.steps)
    atomic_write_text(runner.out / "summary.md", summary_markdown(summary, runner.out))
    atomic_write_json(runner.out / "summary.json", summary)
    print(f"GPU check {'passed' if summary['passed'] else 'FAILED'} in {summary['seconds']:.0f} s; "
          f"results in {runner.out}", flush=True)
    return 0 if summary["passed"] else 1


def pipeline_main(argv: List[str]) -> int:
    """The pipeline step's child process: pipeline_check with its facts written to <out>/pipeline.json."""
    p = argparse.ArgumentParser("GPU check pipeline step")
    p.add_argument("--pipeline-only", action="store_true", help="run only the pipeline step (a child process)")
    p.add_argument("--inputs", type=Path, required=True, help="the prepared inputs")
    p.add_argument("--out", type=Path, required=True, help="work folder; pipeline.json is written in it")
    p.add_argument("--device", default="cuda", help="cuda or cpu")
    p.add_argument("--small", action="store_true", help="the dry run's sizes (32 px, one step each)")
    a = p.parse_args(argv)
    facts = pipeline_check(a.inputs, a.out, a.device, a.small, log=lambda *m: print(*m, flush=True))
    atomic_write_json(a.out / "pipeline.json", facts)
    return 0


if __name__ == "__main__":
    if "--pipeline-only" in sys.argv[1:]:
        sys.exit(pipeline_main(sys.argv[1:]))
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sys.exit(main(parser.parse_args()))
