"""GPU speed of both trainers and of inference, as a share of the GPU's bf16 matrix-product peak.

    python -m benchmarks.bench_gpu --out benchmarks/results/gpu       # on a CUDA machine, about 2 minutes
    python -m benchmarks.bench_gpu --quick --device cpu --out runs/gpu_quick # tiny sizes on the CPU: checks it runs

Rows (each with its peak memory, ``torch.cuda.max_memory_allocated``, and its model FLOP utilisation):

* ``peak``: the bf16 (and fp16, tf32) matrix product of 8192^3 measured here, the ceiling, beside the
  datasheet figure for the GPU where this file knows it (:data:`DATASHEET_BF16_TFLOPS`);
* CDCN_U training step at ``--batch`` (paper: 64) and ``--image-size`` (256) px with 32 x 32 maps:
  forward, DUM losses, backward, Adam, channels_last, in bf16 and fp16 autocast (fp16 with a
  GradScaler) and fp32;
* CDCN_U inference at batch 1 (latency) and at ``--batch`` (throughput), bf16 / fp16 / fp32;
* the generator's training step (DualVAE + the LightCNN identity losses with random weights of the
  official shape, fused Adam, bf16 autocast) at the largest batch that fits, searched downwards from
  the paper's 240 pairs at 256 px (:func:`largest_batch`: a step that runs out of memory is retried at
  the next smaller batch).

Model FLOP utilisation = the FLOPs the step performs (``benchmarks.common.count_flops`` on the meta
device: convolutions and matrix products, the backward pass as the gradients it computes) x items/s,
divided by the measured bf16 ceiling and by the datasheet peak. cudnn autotuning is on, as in the
trainers. Writes ``gpu_bench.json`` and ``gpu_bench.md`` to ``--out``. Not a test: numbers depend on
the machine.
"""
from __future__ import annotations

import argparse
import functools
import gc
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402

from benchmarks.common import count_flops, fmt, interleaved, machine_info, markdown_table, matmul_gflops  # noqa: E402
from misc.device import resolve_device  # noqa: E402
from misc.io import atomic_write_json, atomic_write_text  # noqa: E402

# Dense bf16 tensor-core peaks from NVIDIA's datasheets (the sparse figures are twice these). Matched
# against torch.cuda.get_device_name, most specific first.
DATASHEET_BF16_TFLOPS = (
    ("H200 NVL", 835.5, "NVIDIA H200 NVL datasheet: 1,671 TFLOP/s bf16 with 2:4 sparsity, 835 dense"),
    ("H200", 989.4, "NVIDIA H200 SXM datasheet: 1,979 TFLOP/s bf16 with 2:4 sparsity, 989 dense"),
)
GENERATOR_BATCHES = (240, 224, 192, 160, 128, 96, 64, 48, 32, 24, 16, 12, 8, 6, 4, 3, 2, 1)
PRECISIONS = ("bf16", "fp16", "fp32")
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("GPU benchmark of the DSDG trainers", add_help=False)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "gpu",
                   help="folder for gpu_bench.json and gpu_bench.md. Default: benchmarks/results/gpu")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (only with --quick). Default: %(default)s")
    p.add_argument("--batch", type=int, default=64,
                   help="CDCN_U training and throughput batch (paper: 64). Default: %(default)s")
    p.add_argument("--image-size", type=int, default=256, help="input size of both networks (paper: 256). "
                                                               "Default: %(default)s")
    p.add_argument("--generator-max-batch", type=int, default=240,
                   help="largest generator batch tried (paper: 240); smaller ones are tried when it does not "
                        "fit. Default: %(default)s")
    p.add_argument("--hdim", type=int, default=128, help="generator latent size (paper: 128). Default: %(default)s")
    p.add_argument("--identity-loss", type=int, choices=(0, 1), default=1,
                   help="1: the generator step includes the LightCNN identity losses, as the paper's. "
                        "Default: %(default)s")
    p.add_argument("--rounds", type=int, default=5, help="timed steps per row (median). Default: %(default)s")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed steps per row first (cudnn autotuning happens there). Default: %(default)s")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS),
                   help="autocast precisions of the CDCN_U rows. Default: all")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (32 px, batch 2, generator up to 3, 1 round; fp32 only on a CPU): checks that the "
                       "code runs, on any device")
    return p


# ----------------------------------------------------------------------------------------------
# Peaks
# ----------------------------------------------------------------------------------------------

def datasheet_peak(name: Optional[str]) -> tuple:
    """(dense bf16 TFLOP/s, source) from :data:`DATASHEET_BF16_TFLOPS`, or (None, why) for another device."""
    for key, tflops, source in DATASHEET_BF16_TFLOPS:
        if name and key.lower() in name.lower():
            return tflops, source
    return None, f"no datasheet figure in this file for {name or 'this device'}"


def ceiling_rows(device: torch.device, n: int, log) -> List[dict]:
    """Matrix products of n^3 in bf16, fp16 and tf32 (fp32 inputs, TF32 tensor cores): the ceilings."""
    rows = []
    tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("tf32", torch.float32)):
            if device.type == "cpu" and name != "bf16":
                continue  # the dry run: one product shows the code runs
            torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
            tflops = matmul_gflops(dtype, n, repeats=10, device=device) / 1e3
            log(f"  {n}^3 matrix product, {name}: {tflops:.1f} TFLOP/s")
            rows.append(dict(what=f"matrix product {n}x{n}x{n}, {name} (the ceiling)", unit="TFLOP/s", value=tflops,
                             precision=name))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return rows


# ----------------------------------------------------------------------------------------------
# Measuring one row
# ----------------------------------------------------------------------------------------------

class Measure:
    """Times a step, records its peak memory and its FLOP utilisation against the two peaks."""

    def __init__(self, device: torch.device, rounds: int, warmup: int, ceiling_tflops: Optional[float],
                 datasheet_tflops: Optional[float], log):
        self.device, self.rounds, self.warmup, self.log = device, rounds, warmup, log
        self.ceiling, self.datasheet = ceiling_tflops, datasheet_tflops

    def __call__(self, what: str, unit: str, items: int, fn: Callable[[], object], flop_per_item: Optional[float],
                 **more) -> dict:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        t = interleaved({"step": fn}, self.rounds, self.warmup, self.device)["step"]
        rate = items / t.median
        tflops = None if flop_per_item is None else rate * flop_per_item / 1e12
        row = dict(what=what, unit=unit, value=rate, items=items, tflops=tflops,
                   mfu_measured=None if tflops is None or not self.ceiling else tflops / self.ceiling,
                   mfu_datasheet=None if tflops is None or not self.datasheet else tflops / self.datasheet,
                   peak_memory_gib=torch.cuda.max_memory_allocated(self.device) / 2 ** 30 if cuda else None,
                   latency_ms=1000 * t.median if items == 1 else None, gflop_per_item=None if flop_per_item is None
                   else flop_per_item / 1e9, timings=t.as_dict(), **more)
        self.log(f"  {what}: {rate:.1f} {unit}" + (f", {tflops:.1f} TFLOP/s" if tflops is not None else "")
                 + (f", peak {row['peak_memory_gib']:.2f} GiB" if cuda else ""))
        return row


def autocast(device: torch.device, precision: str):
    """torch.autocast in ``precision`` (a disabled context for fp32)."""
    dtype = AUTOCAST[precision]
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------
# CDCN_U
# ----------------------------------------------------------------------------------------------

def cdcn_flops(image_size: int, map_size: int, train: bool) -> int:
    """FLOPs of one image through CDCN_U (a training step with the DUM losses, or inference)."""
    from DUM import zoo

    spec = zoo.get("cdcn_u")
    with torch.device("meta"):
        net = spec.build(map_size=map_size).train(train)
        x = torch.randn(1, 3, image_size, image_size)
        target = torch.rand(1, map_size, map_size)
        generated = torch.zeros(1, dtype=torch.bool)

    def run():
        if train:
            spec.losses(net(x), target, generated)["total"].backward()
        else:
            with torch.no_grad():
                net(x)

    return count_flops(run)


def cdcn_rows(measure: Measure, device: torch.device, batch: int, image_size: int, precisions: Sequence[str],
              log) -> List[dict]:
    """CDCN_U training steps at ``batch`` and inference at 1 and ``batch``, as DUM/train.py and DUM/test.py
    run the network (channels_last, Adam lr 1e-4 / weight decay 5e-5, GradScaler with fp16)."""
    from DUM import zoo

    spec = zoo.get("cdcn_u")
    map_size = max(image_size // 8, 2)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, image_size, image_size, generator=g).to(device).contiguous(
        memory_format=torch.channels_last)
    target = torch.rand(batch, map_size, map_size, generator=g).to(device)
    generated = torch.arange(batch, device=device) >= int(0.75 * batch)  # 48 real + 16 generated of 64
    train_flop, infer_flop = cdcn_flops(image_size, map_size, True), cdcn_flops(image_size, map_size, False)
    rows = []
    for precision in precisions:
        torch.manual_seed(0)
        model = spec.build(map_size=map_size).to(device).to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=5e-5)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")
        losses = []

        def step():
            with autocast(device, precision):
                loss = spec.losses(model(x), target, generated)["total"]
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(loss.detach())

        model.train()
        r = measure(f"CDCN_U training step, batch {batch}, {image_size} px, {precision}", "img/s", batch, step,
                    train_flop, network="cdcn_u", kind="train", precision=precision, batch=batch)
        r["losses_finite"] = bool(torch.isfinite(torch.stack(losses)).all().item())
        rows.append(r)
        model.eval()
        for b in (1, batch):
            xb = x[:b]

            def infer(xb=xb):
                with torch.no_grad(), autocast(device, precision):
                    model(xb)

            label = "latency" if b == 1 else "throughput"
            rows.append(measure(f"CDCN_U inference {label}, batch {b}, {precision}", "img/s", b, infer, infer_flop,
                                network="cdcn_u", kind="inference", precision=precision, batch=b))
        del model, opt
        free(device)
    return rows


# ----------------------------------------------------------------------------------------------
# The generator
# ----------------------------------------------------------------------------------------------

def is_out_of_memory(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def largest_batch(try_batch: Callable[[int], object], candidates: Sequence[int], device: torch.device,
                  log=print) -> tuple:
    """(the first batch of ``candidates`` whose ``try_batch(batch)`` does not run out of memory, the
    batches that did). Other errors propagate; ValueError when none fits."""
    failed = []
    for b in candidates:
        try:
            try_batch(b)
            return b, failed
        except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
            if not is_out_of_memory(e):
                raise
            failed.append(b)
            log(f"  generator batch {b}: out of memory, trying a smaller one")
            del e
            free(device)
    raise ValueError(f"no generator batch of {list(candidates)} fits on {device}")


def generator_flops(hdim: int, image_size: int, identity_loss: bool) -> int:
    """FLOPs of one pair through our generator step (DualVAE forward with the phase-kernel decoder, the
    losses, LightCNN when on, backward), counted on the meta device."""
    from networks.generator import DualVAE
    from networks.light_cnn import LightCNN29v2
    from networks.losses import LossWeights, generator_loss

    with torch.device("meta"):
        model = DualVAE(hdim, image_size)
        lightcnn = LightCNN29v2().eval().requires_grad_(False) if identity_loss else None
        spoof, live = torch.rand(1, 3, image_size, image_size), torch.rand(1, 3, image_size, image_size)
        kind = torch.zeros(1, dtype=torch.long)

    def run():
        generator_loss(model(spoof, live), spoof, live, kind, LossWeights(), lightcnn)[0].backward()

    return count_flops(run)


def generator_rows(measure: Measure, device: torch.device, max_batch: int, image_size: int, hdim: int,
                   identity_loss: bool, precision: str, log) -> List[dict]:
    """The generator's training step (``precision`` autocast, bf16 on the GPU) at the largest batch up to
    ``max_batch`` that fits."""
    from networks.generator import DualVAE
    from networks.light_cnn import LightCNN29v2
    from networks.losses import LossWeights, generator_loss

    torch.manual_seed(0)
    model = DualVAE(hdim, image_size).to(device)
    lightcnn = LightCNN29v2().to(device).eval().requires_grad_(False) if identity_loss else None
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, fused=device.type == "cuda")
    weights = LossWeights()
    state: Dict[str, object] = {}
    losses: List[torch.Tensor] = []

    def make_batch(b: int):
        state.clear()
        g = torch.Generator().manual_seed(1)
        state.update(spoof=torch.rand(b, 3, image_size, image_size, generator=g).to(device),
                     live=torch.rand(b, 3, image_size, image_size, generator=g).to(device),
                     kind=torch.randint(0, 4, (b,), generator=g).to(device))

    def step():
        with autocast(device, precision):
            total, _ = generator_loss(model(state["spoof"], state["live"]), state["spoof"], state["live"],
                                      state["kind"], weights, lightcnn)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        losses.append(total.detach())

    def try_batch(b: int):
        state.clear()
        opt.zero_grad(set_to_none=True)
        free(device)
        make_batch(b)
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    candidates = [b for b in GENERATOR_BATCHES if b <= max_batch] or [max_batch]
    if candidates[0] != max_batch:
        candidates.insert(0, max_batch)
    batch, failed = largest_batch(try_batch, candidates, device, log)
    flop = generator_flops(hdim, image_size, identity_loss)
    what = (f"generator training step, batch {batch}, {image_size} px, {precision}"
            + (", LightCNN identity losses" if identity_loss else ", no identity losses"))
    row = measure(what, "pairs/s", batch, step, flop, network="generator", kind="train", precision=precision,
                  batch=batch, batches_out_of_memory=failed, identity_loss=identity_loss)
    row["losses_finite"] = bool(torch.isfinite(torch.stack(losses)).all().item())
    del model, opt, lightcnn
    state.clear()
    free(device)
    return [row]


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------

def gpu_facts(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"name": None, "note": "not a CUDA device (a dry run)"}
    p = torch.cuda.get_device_properties(device)
    return {"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_gib": round(p.total_memory / 2 ** 30, 1),
            "multiprocessors": p.multi_processor_count, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "bf16_supported": torch.cuda.is_bf16_supported()}


def markdown(result: dict) -> str:
    gpu, peak = result["gpu"], result["peaks"]
    lines = [f"GPU: {gpu.get('name') or 'none (' + result['device'] + ')'}"
             + (f", compute capability {gpu['capability']}, {gpu['memory_gib']} GiB, CUDA {gpu['cuda']}, "
                f"cuDNN {gpu['cudnn']}" if gpu.get("name") else "")
             + f"; torch {result['machine']['torch']}. Command: `{result['command']}`.",
             f"bf16 ceiling measured here: {fmt(peak['measured_bf16_tflops'], 1)} TFLOP/s; datasheet: "
             f"{fmt(peak['datasheet_bf16_tflops'], 1)} TFLOP/s ({peak['datasheet_source']}).", ""]
    header = ["measurement", "rate", "unit", "latency ms", "TFLOP/s", "% of measured bf16", "% of datasheet bf16",
              "peak memory GiB", "note"]
    rows = []
    for r in result["rows"]:
        pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
        note = []
        if r.get("batches_out_of_memory"):
            note.append("out of memory at " + ", ".join(map(str, r["batches_out_of_memory"])))
        if r.get("losses_finite") is False:
            note.append("NON-FINITE LOSS")
        rows.append([r["what"], fmt(r["value"]), r["unit"], fmt(r.get("latency_ms")), fmt(r.get("tflops"), 1),
                     pct(r.get("mfu_measured")), pct(r.get("mfu_datasheet")), fmt(r.get("peak_memory_gib")),
                     "; ".join(note)])
    lines.append(markdown_table(header, rows))
    lines += ["", "TFLOP/s counts the convolutions and matrix products of each step (torch.utils.flop_counter on "
              "the meta device); the percentages divide it by the bf16 peaks above, also for the fp16 and fp32 rows."]
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace, log=print, command: str = "benchmarks.bench_gpu.main (called from Python)") -> dict:
    """Run every row and write gpu_bench.json and gpu_bench.md to ``args.out``; returns the result."""
    device = resolve_device(args.device)
    if device.type != "cuda" and not args.quick:
        raise SystemExit(f"--device {args.device}: the GPU benchmark needs CUDA (use --quick for a dry run elsewhere)")
    if args.quick:
        args.batch, args.image_size, args.generator_max_batch, args.hdim = 2, 32, 3, 8
        args.rounds, args.warmup, args.identity_loss = 1, 0, 0
        if device.type == "cpu":  # CPUs without native bf16 emulate it (minutes): the dry run stays in fp32
            args.precisions = ["fp32"]
    generator_precision = "bf16" if "bf16" in args.precisions else args.precisions[0]
    torch.backends.cudnn.benchmark = True  # what the trainers set on CUDA
    start = time.perf_counter()
    gpu = gpu_facts(device)
    datasheet, source = datasheet_peak(gpu.get("name"))
    rows = ceiling_rows(device, 256 if args.quick else 8192, log)
    measured = next(r["value"] for r in rows if r["precision"] == "bf16")
    measure = Measure(device, args.rounds, args.warmup, measured, datasheet, log)
    rows += cdcn_rows(measure, device, args.batch, args.image_size, args.precisions, log)
    rows += generator_rows(measure, device, args.generator_max_batch, args.image_size, args.hdim,
                           bool(args.identity_loss), generator_precision, log)
    result = {"command": command, "device": str(device), "quick": args.quick, "gpu": gpu, "machine": machine_info(),
              "peaks": {"measured_bf16_tflops": measured, "datasheet_bf16_tflops": datasheet,
                        "datasheet_source": source},
              "settings": {"batch": args.batch, "image_size": args.image_size, "rounds": args.rounds,
                           "warmup": args.warmup, "cudnn_benchmark": True,
                           "tf32_convolutions": torch.backends.cudnn.allow_tf32},
              "rows": rows}
    result["seconds"] = round(time.perf_counter() - start, 1)
    out = Path(args.out)
    atomic_write_json(out / "gpu_bench.json", result)
    atomic_write_text(out / "gpu_bench.md", markdown(result))
    log(f"wrote {out / 'gpu_bench.json'} and {out / 'gpu_bench.md'} ({result['seconds']:.0f} s)")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    main(parser.parse_args(), log=functools.partial(print, flush=True),
         command=" ".join(["python -m benchmarks.bench_gpu", *sys.argv[1:]]))
