"""Device choice shared by every script: ``--device auto|cpu|cuda|cuda:N``."""
from __future__ import annotations

import argparse

import torch


def add_device_argument(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    parser.add_argument(
        "--device", default=default,
        help="where to run: 'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'. "
             "Under torchrun each process uses the GPU of its LOCAL_RANK. Default: %(default)s.")


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn a ``--device`` string into a ``torch.device``, failing with a clear message on bad input."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {spec} was asked for, but PyTorch sees no CUDA GPU; use --device cpu or auto")
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        return dev
    raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, not {spec!r}")


def to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a (B, C, H, W) batch to ``device`` in channels_last, the memory format the networks run in
    (their weights are converted once when built or loaded; an NCHW input would be converted per layer)."""
    return images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
