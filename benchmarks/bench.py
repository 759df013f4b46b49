"""All of issue 7's speed measurements in one run: a JSON file and a Markdown table.

    python -m benchmarks.bench                         # paper sizes (256x256, batch 4): tens of minutes on 2 cores
    python -m benchmarks.bench --quick --out benchmarks/results/quick    # tiny sizes, a smoke run of every section

Sections (``--sections``, all by default):

* ``peak``: this CPU's matrix-multiply GFLOP/s in fp32 and bf16, the ceiling for the convolutions;
* ``inference``: CDCN_U inference, ours (folded CDC, channels_last, fused conv + BN + ReLU) against
  the original two-convolution NCHW formulation in the same run, fp32 and bf16 autocast
  (``benchmarks/bench_dum.py``);
* ``dum_train``: a DUM training step (forward, losses, backward, Adam) against the original;
* ``networks``: inference and training-step images/s of every depth network of ``DUM/zoo.py``
  (``--models``), interleaved in the same run, each against cdcn_u;
* ``generator``: a generator training step (with the LightCNN identity losses) and prior
  sampling against the original (``benchmarks/bench_generator.py``);
* ``data_loading``: the DUM training DataLoader's images/s beside the training step's;
* ``data_prep``: the data-preparation stages on 1080p frames (``benchmarks/bench_data.py``, in a
  child process: it imports TensorFlow) and the synthetic dataset (``benchmarks/bench_synthetic.py``);
* ``compile``: ``torch.compile`` inference, in a child process with a time limit;
* ``gpu``: when CUDA is present, ``benchmarks/bench_gpu.py`` (both trainers' images/s, inference at
  batch 1 and 64, peak memory, FLOP utilisation; otherwise recorded as skipped).

Every timed comparison is interleaved in one process (``benchmarks/common.py``); targets get a
PASS/MISS. Numbers depend on the machine and its load: this is not a test.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402

from benchmarks import bench_dum, bench_generator  # noqa: E402
from benchmarks.common import fmt, machine_info, markdown_table, matmul_gflops, sync  # noqa: E402
from DUM import zoo  # noqa: E402
from misc.io import atomic_write_json, atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("peak", "inference", "dum_train", "networks", "generator", "data_loading", "data_prep", "compile", "gpu")
# The stated ceilings for this machine class, printed beside the measured ones.
STATED_PEAK = {"fp32": 190.0, "bf16": 750.0}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("DSDG speed benchmarks", add_help=False)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results",
                   help="folder for bench.json and bench.md (and bench_data.json/.md of the data-preparation "
                        "section). Default: benchmarks/results")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (32x32 images, 8x8 maps, batch 2, 1 round): checks that every section runs, "
                        "its numbers mean nothing")
    p.add_argument("--sections", nargs="+", choices=SECTIONS + ("compile-child",), default=list(SECTIONS),
                   metavar="SECTION", help=f"sections to run, any of {' '.join(SECTIONS)} (compile-child is the "
                                           "compile section's own child process). Default: all")
    p.add_argument("--rounds", type=int, default=None,
                   help="timed calls per variant, interleaved, median reported (training steps use 2 fewer, "
                        "at least 1). Default: 5, or 1 with --quick")
    p.add_argument("--device", default="cpu",
                   help="device of the comparison sections (cpu, cuda, cuda:N); the gpu section always uses "
                        "CUDA when present. Default: %(default)s")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads. Default: torch's choice")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None,
                   help="bf16 autocast rows of the inference and dum_train sections (bench_dum.py --precision: "
                        "auto = fewer rounds where bf16 is emulated, fp32 = none) and the generator step's precision "
                        "(bench_generator.py --precision). Default: auto for the depth network, fp32 for the "
                        "generator (the trainers' CPU default)")
    p.add_argument("--models", "--model", nargs="+", choices=zoo.NAMES, default=list(zoo.NAMES), metavar="MODEL",
                   help=f"depth networks of the networks section, any of {' '.join(zoo.NAMES)}. Default: all")
    p.add_argument("--compile-timeout", type=float, default=600,
                   help="seconds allowed for the torch.compile section (compilation included) before it is "
                        "recorded as skipped. Default: %(default)s")
    p.add_argument("--prep-frames", type=int, default=None,
                   help="1080p frames of the data-preparation video. Default: 30, or 2 with --quick")
    p.add_argument("--gpu-batch", type=int, default=64,
                   help="batch of the GPU section's DUM training and throughput rows (paper: 64). Default: %(default)s")
    p.add_argument("--gpu-generator-batch", type=int, default=240,
                   help="largest generator batch the GPU section tries (paper: 240; smaller ones are tried "
                        "when it does not fit). Default: %(default)s")
    return p


# ----------------------------------------------------------------------------------------------
# Arguments of the per-area benchmarks, built from their own parsers (one source of defaults)
# ----------------------------------------------------------------------------------------------

def dum_args(args: argparse.Namespace) -> argparse.Namespace:
    sizes = ["--image-size", "32", "--map-size", "8", "--batch-size", "2", "--data-batch-size", "4",
             "--data-batches", "1", "--workers", "0", "1"] if args.quick else []
    precision = ["--precision", args.precision] if getattr(args, "precision", None) else []
    ns = bench_dum.get_args_parser().parse_args(sizes + precision + ["--rounds", str(args.rounds), "--device",
                                                                     args.device])
    ns.warmup = 0 if args.quick else 1
    ns.out = None
    ns.models = list(args.models)
    return ns


def generator_args(args: argparse.Namespace) -> argparse.Namespace:
    sizes = ["--image-size", "32", "--hdim", "8", "--batch-size", "2", "--identity-loss", "false"] if args.quick else []
    precision = ["--precision", args.precision] if getattr(args, "precision", None) else []
    ns = bench_generator.get_args_parser().parse_args(sizes + precision + ["--rounds", str(args.rounds), "--device",
                                                                           args.device])
    ns.warmup = 0 if args.quick else 1
    ns.out = None
    return ns


# ----------------------------------------------------------------------------------------------
# Sections. Each returns a list of rows (benchmarks.bench_dum.row dicts) or raises SectionSkipped.
# ----------------------------------------------------------------------------------------------

class SectionSkipped(Exception):
    """A section that cannot run here (no CUDA, no compiler, time limit): the reason is recorded."""


def peak_rows(args, state, log) -> List[dict]:
    from misc.precision import native_cpu_bf16

    rows = []
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        n = 256 if args.quick else 2048
        if dtype == torch.bfloat16 and not native_cpu_bf16():
            n = min(n, 512)  # emulated bf16 runs below 1 GFLOP/s: a 2048^3 product would take a minute
        gflops = matmul_gflops(dtype, n)
        log(f"  {n}^3 matrix product, {name}: {gflops:.0f} GFLOP/s (stated peak {STATED_PEAK[name]:.0f})")
        rows.append(bench_dum.row(f"matrix product {n}x{n}x{n}, {name} (the ceiling)", "GFLOP/s", None, gflops,
                                  None, note=f"stated peak of this CPU class: {STATED_PEAK[name]:.0f} GFLOP/s",
                                  stated_peak=STATED_PEAK[name], dtype=name))
    state["peak"] = {r["dtype"]: r["ours"] for r in rows}
    return rows


def inference_section(args, state, log) -> List[dict]:
    return bench_dum.inference_rows(dum_args(args), torch.device(args.device), log)


def dum_train_section(args, state, log) -> List[dict]:
    ns = dum_args(args)
    rows = bench_dum.training_rows(ns, torch.device(args.device), log)
    state["dum_train_img_s"] = rows[0]["ours"]
    return rows


def networks_section(args, state, log) -> List[dict]:
    return bench_dum.network_rows(dum_args(args), torch.device(args.device), log)


def generator_section(args, state, log) -> List[dict]:
    return bench_generator.main(generator_args(args), log)["rows"]


def data_loading_section(args, state, log) -> List[dict]:
    train_rate = state.get("dum_train_img_s")
    if train_rate is None:
        log("  (dum_train not run: the loader rates stand alone)")
    return bench_dum.data_rows(dum_args(args), train_rate, log)


def data_prep_section(args, state, log) -> List[dict]:
    """bench_data.py in a child process (TensorFlow for MTCNN stays out of this one; importing it
    next to torch's optimisers has crashed them), then the synthetic dataset, timed here."""
    frames = args.prep_frames or (2 if args.quick else 30)
    out = Path(args.out)
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_data.py"), "--frames", str(frames),
           "--mtcnn-frames", str(1 if args.quick else 3), "--out", str(out)]
    if args.quick:  # the original call on every real photo takes about half a minute
        cmd.append("--no-photos")
    log(f"  {' '.join(cmd[1:])}")
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"bench_data.py failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    result = json.loads((out / "bench_data.json").read_text())
    rows = [bench_dum.row(f"data prep: {r['stage']}", "frames/s", None, r["frames_per_s"], None,
                          note=f"{r['frames']} frame(s) of 1920x1080, {r['seconds']:.2f} s wall, "
                               f"{r['frames_per_cpu_s']:.1f} frames per CPU s", frames=r["frames"])
            for r in result["rows"]]
    rows.append(mtcnn_row(result["mtcnn"]))
    rows.append(synthetic_row(args, log))
    return rows


def mtcnn_row(m: dict) -> dict:
    """Issue 16's face-box goals: the defaults' frames/s (against the original call, same run) and the
    mean IoU of their boxes to the original call's on the real photos, with how many photos it rests on."""
    photos, video = m["agreement"].get("photos"), m["agreement"]["video"]
    iou = (f"mean IoU {photos['mean_iou']:.4f} (lowest {photos['min_iou']:.4f}) on "
           f"{photos['photos'] - photos['missed']} of {photos['photos']} real photos at 1920x1080"
           if photos else "IoU on real photos not measured (--quick or no ../shared)")
    r = bench_dum.row("data prep: MTCNN boxes, defaults against the original call", "frames/s", m["full_fps"],
                      m["fast_fps"], None,
                      note=f"goals (not a ratio) >= {m['fps_goal']:.0f} frames/s: "
                           f"{'PASS' if m['fps_goal_met'] else 'MISS'}, IoU >= {m['iou_goal']}: "
                           f"{'PASS' if m['iou_goal_met'] else 'MISS'}, {iou}; "
                           f"mean IoU {video['mean_iou']:.4f} on {video['frames']} video frames; "
                           f"{m['two_process_fps']:.1f} frames/s in 2 processes (--workers 2, the goal's measure); "
                           f"{m['vs_depth_mesh']}x the depth (mesh) stage in the same run",
                      mean_iou=photos["mean_iou"] if photos else None, photos=photos["photos"] if photos else 0)
    r["met"] = bool(m["fps_goal_met"] and m["iou_goal_met"])
    return r


def synthetic_row(args, log) -> dict:
    """The synthetic OULU-NPU-shaped dataset (data/synthetic.py) through bench_synthetic.py, detection off."""
    from benchmarks import bench_synthetic

    size = "160x120" if args.quick else "320x240"
    with tempfile.TemporaryDirectory(prefix="bench_synthetic_") as tmp:
        root = Path(tmp) / "synthetic"
        ns = bench_synthetic.get_args_parser().parse_args(
            ["--out", str(root), "--users", "3", "--phones", "1", "--sessions", "1", "--frames",
             "2" if args.quick else "8", "--size", size, "--no-detect"])
        printed = io.StringIO()
        t = time.perf_counter()
        with contextlib.redirect_stdout(printed):
            bench_synthetic.main(ns)
        wall = time.perf_counter() - t
        frames = len(list(root.glob("*_files/*.avi"))) * ns.frames
    log(f"  {printed.getvalue().strip()}")
    return bench_dum.row(f"data prep: synthetic dataset ({size}, 3 users, 1 phone, 1 session)", "frames/s", None,
                         frames / wall, None, note=f"{frames} frames in {wall:.1f} s (render + MJPG write)",
                         frames=frames)


def compile_section(args, state, log) -> List[dict]:
    """bench_dum's torch.compile row in a child process, so that a slow compilation can be stopped."""
    with tempfile.TemporaryDirectory(prefix="bench_compile_") as tmp:
        cmd = [sys.executable, "-m", "benchmarks.bench", "--sections", "compile-child", "--out", tmp,
               "--rounds", str(args.rounds), "--device", args.device] + (["--quick"] if args.quick else [])
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        try:
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.compile_timeout)
        except subprocess.TimeoutExpired:
            raise SectionSkipped(f"torch.compile did not finish within {args.compile_timeout:.0f} s on this machine")
        if done.returncode != 0:
            raise SectionSkipped(f"child process failed ({done.returncode}): {done.stderr.strip()[-300:]}")
        result = json.loads((Path(tmp) / "bench.json").read_text())
    row = result["sections"]["compile-child"]["rows"][0]
    if row["ours"] is None:
        raise SectionSkipped(row["note"])
    return [row]


def compile_child(args, state, log) -> List[dict]:
    ns = dum_args(args)
    device = torch.device(args.device)
    original, ours = bench_dum.make_pair(ns, device)
    original.eval(), ours.eval()
    x = torch.randn(ns.batch_size, 3, ns.image_size, ns.image_size, generator=torch.Generator().manual_seed(1))
    x = x.to(device)
    with torch.no_grad():
        ref = original(x)[0]
    gflop = bench_dum.flops_per_image(ns, train=False) / 1e9
    return [bench_dum.compile_row(ns, original, ours, x, x.contiguous(memory_format=torch.channels_last), ref,
                                  gflop, device, log)]


def gpu_section(args, state, log) -> List[dict]:
    """The GPU benchmark of benchmarks/bench_gpu.py (its own files go to OUT/gpu), as rows of this table."""
    if not torch.cuda.is_available():
        raise SectionSkipped("no CUDA device: no GPU machine was available for this run")
    from benchmarks import bench_gpu

    argv = ["--device", "cuda", "--batch", str(args.gpu_batch), "--generator-max-batch", str(args.gpu_generator_batch),
            "--rounds", str(args.rounds), "--out", str(Path(args.out) / "gpu")] + (["--quick"] if args.quick else [])
    return gpu_rows(bench_gpu.main(bench_gpu.get_args_parser().parse_args(argv), log=log))


def gpu_rows(result: dict) -> List[dict]:
    """bench_gpu's rows (rates, TFLOP/s, utilisation, peak memory) in this table's row format."""
    rows = []
    for r in result["rows"]:
        notes = [f"{r['tflops']:.1f} TFLOP/s" if r.get("tflops") is not None else "",
                 f"{100 * r['mfu_measured']:.0f} % of the measured bf16 ceiling" if r.get("mfu_measured") else "",
                 f"peak {r['peak_memory_gib']:.2f} GiB" if r.get("peak_memory_gib") is not None else ""]
        rows.append(bench_dum.row(f"GPU: {r['what']}", r["unit"], None, r["value"], None,
                                  note="; ".join(n for n in notes if n),
                                  **{k: r.get(k) for k in ("tflops", "mfu_measured", "mfu_datasheet",
                                                           "peak_memory_gib", "latency_ms")}))
    return rows


SECTION_FUNCTIONS: Dict[str, Callable] = {
    "peak": peak_rows, "inference": inference_section, "dum_train": dum_train_section, "networks": networks_section,
    "generator": generator_section, "data_loading": data_loading_section, "data_prep": data_prep_section,
    "compile": compile_section, "gpu": gpu_section, "compile-child": compile_child,
}


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------

# The targets: (name, section, start of the row's 'what', ceiling dtype (None: the row's
# 'precision'), the fraction of that same-run matrix-product ceiling the row's GFLOP/s must reach).
TARGETS = (
    ("bf16 inference", "inference", "CDCN_U inference, bf16 autocast", "bf16", 0.95),
    ("fp32 DUM training step", "dum_train", "CDCN_U training step, fp32", "fp32", 0.90),
    ("bf16 DUM training step", "dum_train", "CDCN_U training step, bf16 autocast", "bf16", 0.90),
    ("generator training step", "generator", "Generator training step", None, 0.90),
)


def target_rows(sections: dict, peak: Optional[dict]) -> List[dict]:
    """Each target of :data:`TARGETS` against the ceiling measured in the same run: {'target', 'required',
    'dtype', 'gflops', 'ceiling', 'fraction', 'verdict' (PASS / MISS / not measured), 'why'}.

    Only measured numbers enter: a target whose row or ceiling this run did not measure is 'not
    measured' (with the reason), never a PASS. What bounds a MISS is not measured here, and the
    line says so instead of guessing."""
    out = []
    for name, section, prefix, dtype, required in TARGETS:
        entry = {"target": name, "required": required, "dtype": dtype, "gflops": None, "ceiling": None,
                 "fraction": None, "verdict": "not measured"}
        sec = sections.get(section, {})
        row = next((r for r in sec.get("rows", []) if r["what"].startswith(prefix)), None)
        if row is not None:
            entry["dtype"] = dtype = dtype or row.get("precision", "fp32")
        ceiling = (peak or {}).get(dtype)
        if sec.get("status") != "ran" or row is None or row.get("gflops_ours") is None:
            entry["why"] = (f"section '{section}' not run" if sec.get("status") != "ran"
                            else f"no '{prefix}' row in section '{section}'")
        elif ceiling is None:
            entry["why"] = f"no {dtype} ceiling measured in this run (section 'peak')"
        else:
            fraction = row["gflops_ours"] / ceiling
            entry.update(gflops=row["gflops_ours"], ceiling=ceiling, fraction=fraction,
                         verdict="PASS" if fraction >= required else "MISS")
            entry["why"] = (f"{row['gflops_ours']:.1f} GFLOP/s = {100 * fraction:.0f} % of the {ceiling:.0f} GFLOP/s "
                            f"{dtype} ceiling (needs {100 * required:.0f} %)")
            if entry["verdict"] == "MISS":
                entry["why"] += "; what bounds it was not measured in this run"
            if dtype == "bf16" and row.get("native_bf16", row.get("cpu_bf16_supported")) is False:
                entry["why"] += "; bf16 is emulated on this CPU (no native bf16), ceiling and row alike"
        out.append(entry)
    return out


def target_cells(t: dict) -> List[str]:
    """One line of the Markdown targets table."""
    ceiling = "" if t["ceiling"] is None else f"{t['ceiling']:.0f} ({t['dtype']})"
    fraction = "" if t["fraction"] is None else f"{100 * t['fraction']:.0f} %"
    return [t["target"], fmt(t["gflops"], 1), ceiling, fraction, f"{100 * t['required']:.0f} %", t["verdict"],
            t["why"].replace("|", "\\|")]


def verdict(r: dict) -> str:
    if r.get("target") is None:
        return ""
    return "PASS" if r.get("met") else "MISS"


def markdown(result: dict) -> str:
    m = result["machine"]
    peak = result.get("peak_gflops") or {}
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores ({', '.join(m['cpu_flags']) or 'no AVX2'}), torch "
             f"{m['torch']}, {m['threads']} threads, GPU: {m['cuda'] or 'none'}. Command: `{result['command']}`.",
             f"Matrix-product ceiling measured here: {fmt(peak.get('fp32'), 0)} GFLOP/s fp32, "
             f"{fmt(peak.get('bf16'), 0)} GFLOP/s bf16 (stated for this CPU class: {STATED_PEAK['fp32']:.0f} / "
             f"{STATED_PEAK['bf16']:.0f}).", ""]
    # Percentages against the stated peak: the measured one drops with the machine's load.
    header = ["section", "measurement", "unit", "original", "ours", "ours / original (wall)", "CPU-time ratio",
              "target", "PASS/MISS", "GFLOP/s ours", f"% of {STATED_PEAK['fp32']:.0f}", "note"]
    rows = []
    for name, sec in result["sections"].items():
        if sec["status"] != "ran":
            rows.append([name, "(skipped)"] + [""] * (len(header) - 3) + [sec["reason"]])
            continue
        for r in sec["rows"]:
            gflops = r.get("gflops_ours")
            pct = None if gflops is None else 100 * gflops / STATED_PEAK["fp32"]
            x = lambda v: "" if v is None else fmt(v) + "x"  # noqa: E731
            rows.append([name, r["what"], r["unit"], fmt(r.get("baseline")), fmt(r.get("ours")), x(r.get("ratio")),
                         x(r.get("cpu_ratio")), "" if r.get("target") is None else f">= {r['target']}x",
                         verdict(r), fmt(gflops, 1), fmt(pct, 0), str(r.get("note", "")).replace("|", "\\|")])
    lines.append(markdown_table(header, rows))
    if result.get("targets"):
        lines += ["", "Targets (fractions of the matrix-product ceilings measured in this run):", "",
                  markdown_table(["target", "GFLOP/s", "ceiling", "fraction", "required", "PASS/MISS", "why"],
                                 [target_cells(t) for t in result["targets"]])]
    return "\n".join(lines) + "\n"


def run_sections(args: argparse.Namespace, log=print) -> dict:
    state: dict = {}
    sections = {}
    for name in args.sections:
        log(f"[{name}]")
        t = time.perf_counter()
        try:
            sections[name] = {"status": "ran", "rows": SECTION_FUNCTIONS[name](args, state, log)}
        except SectionSkipped as e:
            log(f"  skipped: {e}")
            sections[name] = {"status": "skipped", "reason": str(e), "rows": []}
        sections[name]["seconds"] = round(time.perf_counter() - t, 1)
        log(f"  ({sections[name]['seconds']:.0f} s)")
    for name in SECTIONS:  # every section appears, those not asked for as skipped
        if name not in sections and "compile-child" not in args.sections:
            sections[name] = {"status": "skipped", "reason": "not selected (--sections)", "rows": []}
    return {"sections": sections, "peak_gflops": state.get("peak")}


def main(args: argparse.Namespace, log=print, command: str = "benchmarks.bench.main (called from Python)") -> dict:
    """Run the selected sections and write bench.json and bench.md to ``args.out``; ``command`` is recorded."""
    if args.rounds is None:
        args.rounds = 1 if args.quick else 5
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device != "cpu":
        sync(torch.device(args.device))  # fails early on a device that is not there
    start = time.perf_counter()
    result = {"command": command, "quick": args.quick,
              "rounds": args.rounds, "device": args.device, "machine": machine_info(),
              "stated_peak_gflops": STATED_PEAK}
    result.update(run_sections(args, log))
    if "compile-child" not in args.sections:
        result["targets"] = target_rows(result["sections"], result.get("peak_gflops"))
        for t in result["targets"]:
            log(f"target {t['target']} >= {100 * t['required']:.0f} % of the {t['dtype']} ceiling: {t['verdict']} "
                f"({t['why']})")
    result["seconds"] = round(time.perf_counter() - start, 1)
    out = Path(args.out)
    atomic_write_json(out / "bench.json", result)
    if "compile-child" not in args.sections:
        atomic_write_text(out / "bench.md", markdown(result))
        log(f"wrote {out / 'bench.json'} and {out / 'bench.md'} ({result['seconds']:.0f} s)")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    main(parser.parse_args(), log=functools.partial(print, flush=True),  # progress shows even when piped
         command=" ".join(["python -m benchmarks.bench", *sys.argv[1:]]))
