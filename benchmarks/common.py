"""Shared measurement helpers for the benchmarks: interleaved timing, FLOP counts, machine facts, tables.

Timing on a machine shared with other jobs: the variants under comparison run interleaved
(A B A B ...) in one process after their warm-up calls, so a burst of outside load hits both, and
each is summarised by its median. Wall seconds and this process's CPU seconds (all threads) are
both recorded; the wall ratio is what the targets are about, the CPU ratio is less disturbed by
other processes.
"""
from __future__ import annotations

import os
import platform
import re
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Wall and CPU seconds of the timed calls of one variant."""
    wall: List[float] = field(default_factory=list)
    cpu: List[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    def as_dict(self) -> dict:
        return {"wall_s": [round(t, 4) for t in self.wall], "cpu_s": [round(t, 4) for t in self.cpu],
                "median_wall_s": round(self.median, 4), "median_cpu_s": round(self.cpu_median, 4),
                "min_wall_s": round(min(self.wall), 4)}


def interleaved(fns: Mapping[str, Callable[[], object]], rounds: int, warmup: int = 1,
                device: torch.device = torch.device("cpu"), warmup_overrides: Optional[Mapping[str, int]] = None,
                rounds_overrides: Optional[Mapping[str, int]] = None) -> Dict[str, Timing]:
    """Time each function ``rounds`` times, interleaved A B A B ..., after ``warmup`` untimed calls each.

    ``warmup_overrides``/``rounds_overrides`` give single variants other counts (e.g. a very slow one
    timed fewer times; it then drops out of the later rounds).
    """
    warm = {k: (warmup_overrides or {}).get(k, warmup) for k in fns}
    reps = {k: (rounds_overrides or {}).get(k, rounds) for k in fns}
    for name, fn in fns.items():
        for _ in range(warm[name]):
            fn()
    out = {k: Timing() for k in fns}
    for r in range(max(reps.values())):
        for name, fn in fns.items():
            if r >= reps[name]:
                continue
            sync(device)
            t, c = time.perf_counter(), time.process_time()
            fn()
            sync(device)
            out[name].wall.append(time.perf_counter() - t)
            out[name].cpu.append(time.process_time() - c)
    return out


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of the convolutions and matrix products that ``fn`` runs
    (torch.utils.flop_counter: 2 * C_in * C_out * k * k per output pixel for a convolution, its
    backward counted as the input and weight gradients it really computes). Run ``fn`` on the
    ``meta`` device to count without computing."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_gflops(dtype: torch.dtype, n: int, repeats: int = 5, device: torch.device = torch.device("cpu")) -> float:
    """Best GFLOP/s of an n x n x n matrix product on ``device`` (the ceiling for convolutions)."""
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> List[str]:
    """The SIMD flags that decide which kernels oneDNN/MKL use (AVX2, AVX-512, bf16, AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return []
    m = re.search(r"^flags\s*:(.*)$", text, re.M)
    flags = set(m.group(1).split()) if m else set()
    keep = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "avx_vnni")
    return [f for f in keep if f in flags]


def machine_info() -> dict:
    return {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_avg": [round(x, 2) for x in os.getloadavg()]}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(x: Optional[float], digits: int = 2) -> str:
    """A number for a table cell ('-' when absent)."""
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"
