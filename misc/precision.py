"""The numeric precision a run computes in: fp32, or bf16 / fp16 autocast. One helper for every script.

``--precision auto|fp32|bf16|fp16`` (:func:`add_precision_argument`) is resolved once per run by
:func:`resolve_precision` into a :class:`Precision`, which says what it took and why and gives the
autocast context the loops enter. ``auto`` takes bf16 where the hardware computes it natively (a
CUDA GPU with bf16, or a CPU whose oneDNN has AVX512-BF16 or AMX kernels) and fp32 elsewhere.

Native bf16 on a CPU is what torch and oneDNN report (:func:`cpu_bf16_support`), never a guess from
the model name: without AVX512-BF16/AMX oneDNN still runs bf16 convolutions, by converting to fp32
and back, several times slower than fp32 itself. bf16 can still be asked for there (``bf16``); the
run then says it is emulated.

Autocast computes convolutions and matrix products in the low precision and keeps reductions and
the losses in fp32; :func:`score_deviation` measures what that changes in a run's scores.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch

from misc.cli import bool_flag

log = logging.getLogger("dsdg.precision")

SPECS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _ask(owner, name: str) -> bool:
    """The answer of a torch capability query, False where this torch build lacks it."""
    try:
        return bool(getattr(owner, name)())
    except (AttributeError, RuntimeError):
        return False


def cpu_bf16_support() -> Dict[str, bool]:
    """What torch says about bf16 on this CPU: the instruction sets (cpuinfo, as torch sees them) and
    whether oneDNN itself runs bf16 kernels (its effective ISA, which ``ONEDNN_MAX_CPU_ISA`` can lower)."""
    return {"avx512_bf16": _ask(torch.cpu, "_is_avx512_bf16_supported"),
            "amx_tile": _ask(torch.cpu, "_is_amx_tile_supported"),
            "onednn_bf16": _ask(torch.ops.mkldnn, "_is_mkldnn_bf16_supported")}


def native_cpu_bf16() -> bool:
    """True when this CPU computes bf16 natively: AVX512-BF16 or AMX, and oneDNN using bf16 kernels.
    (oneDNN also reports bf16 on plain AVX-512 CPUs, where it converts through fp32: not native.)"""
    s = cpu_bf16_support()
    return (s["avx512_bf16"] or s["amx_tile"]) and s["onednn_bf16"]


def _cpu_support_text() -> str:
    s = cpu_bf16_support()
    return ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in s.items())


@dataclass(frozen=True)
class Precision:
    """What a run computes in: ``name`` 'fp32', 'bf16' or 'fp16' on ``device_type``; ``requested`` the
    --precision value; ``reason`` why; ``native`` False for bf16 emulated by a CPU without bf16 units."""
    name: str
    device_type: str = "cpu"
    requested: str = "fp32"
    reason: str = "asked for"
    native: bool = True

    @property
    def dtype(self) -> Optional[torch.dtype]:
        """The autocast dtype, None for fp32."""
        return DTYPES[self.name]

    @property
    def mixed(self) -> bool:
        """Whether autocast is on (anything but fp32)."""
        return self.name != "fp32"

    @property
    def loss_scaling(self) -> bool:
        """fp16 on CUDA needs a GradScaler (bf16 has fp32's exponent range and does not)."""
        return self.name == "fp16"

    def autocast(self):
        """The context a forward pass runs in: autocast at this precision, nothing for fp32."""
        if not self.mixed:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def describe(self) -> str:
        return f"{self.name} on {self.device_type} (--precision {self.requested}: {self.reason})"

    def as_dict(self) -> Dict[str, object]:
        return {"name": self.name, "requested": self.requested, "device": self.device_type,
                "reason": self.reason, "native": self.native}


FP32 = Precision("fp32", "cpu", "fp32", "asked for")


def fp32_on(device: torch.device | str) -> Precision:
    """fp32 on ``device``: the reference the other precisions are compared with."""
    return Precision("fp32", torch.device(device).type, "fp32", "reference")


def resolve_precision(spec: str, device: torch.device | str, logger: Optional[logging.Logger] = None) -> Precision:
    """The precision ``spec`` (one of :data:`SPECS`) gives on ``device``, logged with the reason.

    auto: bf16 on a CUDA GPU that supports it or a CPU with native bf16 (:func:`native_cpu_bf16`),
    fp32 elsewhere. bf16 on a CPU without native bf16 runs (emulated, slow) with a warning. fp16 is
    CUDA's (with loss scaling when training); on a CPU it is an error, as are bf16/fp16 on devices
    without autocast. Raises ValueError for an unknown spec or an impossible request.
    """
    logger = logger or log
    device = torch.device(device)
    if spec not in SPECS:
        raise ValueError(f"--precision must be one of {', '.join(SPECS)}, not {spec!r}")
    kind = device.type
    if spec == "fp32":
        p = Precision("fp32", kind, spec, "asked for")
    elif kind == "cuda":
        p = _resolve_cuda(spec, device)
    elif kind == "cpu":
        p = _resolve_cpu(spec)
    elif spec == "auto":
        p = Precision("fp32", kind, spec, f"no mixed precision chosen automatically on {kind}")
    else:
        raise ValueError(f"--precision {spec}: autocast is supported here on cpu and cuda, not {kind}")
    (logger.info if p.native else logger.warning)("precision: %s", p.describe())
    return p


def _resolve_cuda(spec: str, device: torch.device) -> Precision:
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if spec == "fp16":
        return Precision("fp16", "cuda", spec, "asked for (with loss scaling when training)")
    if spec == "bf16":
        if not bf16:
            raise ValueError(f"--precision bf16: {device} does not support bf16; use fp16 or fp32")
        return Precision("bf16", "cuda", spec, "asked for")
    if bf16:
        return Precision("bf16", "cuda", spec, "this GPU computes bf16")
    return Precision("fp32", "cuda", spec, "this GPU has no bf16 (fp16 is one flag away: --precision fp16)")


def _resolve_cpu(spec: str) -> Precision:
    if spec == "fp16":
        raise ValueError("--precision fp16 is for CUDA; on a CPU use bf16 or fp32")
    native = native_cpu_bf16()
    if spec == "bf16":
        if native:
            return Precision("bf16", "cpu", spec, f"asked for; native on this CPU ({_cpu_support_text()})")
        return Precision("bf16", "cpu", spec, "asked for, but this CPU has no native bf16 "
                         f"({_cpu_support_text()}): emulated, several times slower than fp32", native=False)
    if native:
        return Precision("bf16", "cpu", spec, f"this CPU has native bf16 ({_cpu_support_text()})")
    return Precision("fp32", "cpu", spec, f"this CPU has no native bf16 ({_cpu_support_text()}), so bf16 "
                     "would be emulated and slower than fp32")


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

def add_precision_argument(parser, default_text: str) -> None:
    """``--precision`` (default None: the script's default, which ``default_text`` describes) and the
    hidden ``--amp true|false`` of earlier versions, which :func:`requested_spec` maps onto it."""
    parser.add_argument("--precision", choices=SPECS, default=None,
                        help="numeric precision: auto (bf16 where the hardware computes it natively: a CUDA GPU "
                             "with bf16, a CPU with AVX512-BF16 or AMX; else fp32), fp32, bf16 (autocast; "
                             "emulated and slow on a CPU without native bf16), fp16 (CUDA autocast). The run "
                             f"logs which it took and why. Default: {default_text}")
    parser.add_argument("--amp", type=bool_flag, default=None, help=argparse.SUPPRESS)


def requested_spec(args: argparse.Namespace, default: str, amp_true: str) -> str:
    """The --precision value of a run: --precision if given; else the old ``--amp``, true -> ``amp_true``
    (what --amp true did in that script on this device), false -> fp32; else ``default``."""
    amp = getattr(args, "amp", None)
    if args.precision is not None:
        if amp is not None:
            raise SystemExit("give --precision or the older --amp, not both")
        return args.precision
    if amp is not None:
        return amp_true if amp else "fp32"
    return default


# ----------------------------------------------------------------------------------------------
# Effect on scores
# ----------------------------------------------------------------------------------------------

def at_least(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Decision rule of the ISO mode and of predict: accepted (bona fide) iff score >= threshold."""
    return scores >= threshold


def score_deviation(scores: Sequence[float], reference: Sequence[float], threshold: Optional[float] = None,
                    accept: Callable[[np.ndarray, float], np.ndarray] = at_least,
                    reference_threshold: Optional[float] = None, ids: Optional[Sequence[str]] = None
                    ) -> Dict[str, object]:
    """How far ``scores`` (a mixed-precision run) are from ``reference`` (the same items in fp32).

    Returns {'items': items compared (both finite), 'max_abs_diff', 'mean_abs_diff'} and, with a
    ``threshold``, 'flips': items whose decision ``accept(score, threshold)`` differs from the
    reference's at ``reference_threshold`` (default the same threshold; pass the threshold the fp32
    run would have chosen to compare the two runs end to end), and 'flipped' (their ids or indices).
    """
    s, r = np.asarray(scores, np.float64), np.asarray(reference, np.float64)
    if s.shape != r.shape:
        raise ValueError(f"score_deviation: {s.shape} scores against {r.shape} reference scores")
    ok = np.isfinite(s) & np.isfinite(r)
    d = np.abs(s[ok] - r[ok])
    out: Dict[str, object] = {"items": int(ok.sum()), "max_abs_diff": float(d.max()) if d.size else 0.0,
                              "mean_abs_diff": float(d.mean()) if d.size else 0.0}
    if threshold is not None:
        ref_thr = threshold if reference_threshold is None else reference_threshold
        flipped = np.flatnonzero(ok & (accept(s, threshold) != accept(r, ref_thr)))
        names = list(ids) if ids is not None else list(range(len(s)))
        out.update(threshold=float(threshold), reference_threshold=float(ref_thr), flips=int(flipped.size),
                   flipped=[names[i] for i in flipped])
    return out
