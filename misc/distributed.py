"""One helper for distributed training that also works as a single process on CPU or one GPU.

Launch with ``torchrun --nproc_per_node=N script.py ...`` (or ``scripts/distributed_train.sh``):
torchrun sets RANK/WORLD_SIZE/LOCAL_RANK, :func:`init_distributed` reads them and picks NCCL on CUDA
(each process on ``cuda:LOCAL_RANK``) and gloo on CPU. Without them the script runs as one ordinary
process and every helper here is an identity or a no-op, so the trainers have a single code path::

    info = init_distributed(args.device)
    with finish_on_exit(info):          # the end of a distributed run goes through finish()
        return train(args, info)

Collectives (``all_reduce_*``, :func:`gather_batch`, :func:`rng_state_for_checkpoint`, :func:`barrier`)
must be called by every rank in the same order.

The process-group timeout is ``DSDG_DIST_TIMEOUT_MIN`` minutes (default 60): long enough for rank 0 to
evaluate a full Dev/Test set while the other ranks wait at a barrier (NCCL's own default, 10 minutes,
is not). A rank that *fails* does not wait for it: it exits non-zero at once and torchrun stops the
others.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Sequence, Tuple, Type

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from misc.device import resolve_device
from misc.seed import get_rng_state, seed_everything, set_rng_state


def unwrap(model: nn.Module) -> nn.Module:
    """The bare network inside DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        else:
            return model


TIMEOUT_ENV = "DSDG_DIST_TIMEOUT_MIN"


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_spec: str = "auto") -> DistInfo:
    """Start the process group when launched by torchrun; return rank, world size and this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_spec)
    if world_size <= 1:
        return DistInfo(device=device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        minutes = float(os.environ.get(TIMEOUT_ENV, "60"))
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=minutes))
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: float, device: torch.device | None = None) -> float:
    """Average a python number over ranks (identity in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device or "cpu")
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def all_reduce_sum(values: Sequence[float], device: torch.device | None = None) -> List[float]:
    """Sum each of several python numbers over ranks in one collective (identity in a single process)."""
    if not _active():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device or "cpu")
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_tensor_mean(t: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of a tensor (a new tensor; ``t`` itself in a single process). No autograd."""
    if not _active():
        return t
    out = t.detach().clone()
    dist.all_reduce(out)
    return out / dist.get_world_size()


class _GatherBatch(torch.autograd.Function):
    """Concatenate every rank's (B, ...) tensor along dim 0; the backward pass hands each rank the
    gradient of its own slice, summed over the ranks (every rank computes the loss of the global batch)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.size = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.size:(ctx.rank + 1) * ctx.size]


def gather_batch(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) per rank -> (world_size * B, ...) in rank order, differentiable; ``x`` in a single process.

    For loss terms that are not a mean of per-sample terms (e.g. a distance between batch means):
    computed on the gathered tensor, their gradient under DDP equals the single-process gradient of
    the global batch, because DDP averages the ranks' gradients and the backward here sums them.
    Every rank must pass the same B.
    """
    if not _active():
        return x
    return _GatherBatch.apply(x)


def gather_objects(obj: Any) -> List[Any]:
    """Every rank's picklable ``obj`` in rank order (``[obj]`` in a single process). Collective."""
    if not _active():
        return [obj]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def require_same(value: Any, what: str) -> None:
    """Stop every rank with one clear message when ranks disagree on ``value`` (e.g. the epoch they
    resumed from: on several machines a checkpoint path that only one of them can read). Collective."""
    values = gather_objects(value)
    if any(v != values[0] for v in values):
        raise SystemExit(f"error: the processes disagree on {what}: " + ", ".join(
            f"rank {r}: {v}" for r, v in enumerate(values)))


# ----------------------------------------------------------------------------------------------
# RNG state across ranks
# ----------------------------------------------------------------------------------------------

def rng_state_for_checkpoint() -> Dict[str, Any]:
    """The RNG state a checkpoint stores: this process's :func:`misc.seed.get_rng_state` in a single
    process; under distributed training rank 0's state plus ``"ranks"``, every rank's state in rank
    order. Collective: every rank calls it, rank 0 writes it."""
    states = gather_objects(get_rng_state())
    if len(states) == 1:
        return states[0]
    return {**states[0], "ranks": states}


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """A seed for ``rank`` that differs between ranks and epochs and never collides with ``seed + rank``."""
    return int(np.random.SeedSequence([seed, epoch, rank, 0x5EED]).generate_state(1)[0])


def restore_rng_state(state: Dict[str, Any], info: DistInfo, seed: int, epoch: int) -> str:
    """Restore the RNG state of this rank from a checkpoint's ``rng`` entry; returns what was done.

    * The checkpoint was written by as many ranks as run now: each rank takes its own state, so a
      resumed run draws exactly what the uninterrupted one would ("exact").
    * Otherwise rank 0 takes the saved rank-0 state (for a single-process checkpoint resumed in a
      single process that is again exact) and every other rank starts a fresh stream seeded by
      (seed, epoch, rank) ("rank 0 only"): a resume on another world size is reproducible but not
      bitwise identical to any uninterrupted run.
    """
    ranks = state.get("ranks")
    if ranks is not None and len(ranks) == info.world_size:
        set_rng_state(ranks[info.rank])
        return "exact"
    if info.rank == 0:
        set_rng_state(state)
        return "exact" if ranks is None and info.world_size == 1 else "rank 0 only"
    seed_everything(rank_seed(seed, epoch, info.rank))
    return "rank 0 only"


def param_digest(model: nn.Module) -> str:
    """SHA-256 of a model's parameters (names, dtypes, shapes and bytes, in registration order).

    Ranks of a correct DDP run have equal digests. Buffers are left out: without SyncBatchNorm each
    rank's BatchNorm running statistics follow its own batches (rank 0's are the ones saved).
    """
    h = hashlib.sha256()
    for name, p in unwrap(model).named_parameters():
        t = p.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# The end of a run
# ----------------------------------------------------------------------------------------------

def _flush_everything() -> None:
    logging.shutdown()  # flushes and closes the file handlers (train.log) that os._exit would skip
    sys.stdout.flush()
    sys.stderr.flush()


def finish(info: DistInfo, exit_code: int = 0) -> None:
    """End a (possibly distributed) run; returns only in a single process.

    With gloo, about one run in ten aborts at interpreter exit ("terminate called without an active
    exception") after training has finished. Tearing the process group down, flushing, and leaving
    through ``os._exit`` skips the interpreter shutdown that triggers it. Close TensorBoard writers
    before calling this: nothing after it runs. With a non-zero ``exit_code`` (this rank failed)
    there is no final barrier: the other ranks may never reach it.
    """
    if not info.distributed:
        return
    if exit_code == 0 and dist.is_initialized():
        try:
            dist.barrier()
            dist.destroy_process_group()
        except Exception as e:  # another rank died: its error is the one that matters, but do fail
            print(f"[rank {info.rank}] the final barrier failed: {type(e).__name__}: {e}", file=sys.stderr)
            exit_code = 1
    _flush_everything()
    os._exit(exit_code)


@contextlib.contextmanager
def finish_on_exit(info: DistInfo, brief: Tuple[Type[BaseException], ...] = ()) -> Iterator[None]:
    """Run the body of a training script and end a distributed run through :func:`finish`.

    In a single process this does nothing: return values and exceptions pass through unchanged
    (tests call ``main()`` in-process). Under torchrun, success ends in ``finish(info)`` (barrier,
    exit 0); an exception is printed (one ``error:`` line for ``SystemExit`` messages and the
    ``brief`` types, whose messages already name the file and the problem; else the traceback),
    prefixed with the rank, and the process leaves at once with a non-zero code, so torchrun sees
    the failure and stops the other ranks instead of leaving them waiting in a collective.
    """
    if not info.distributed:
        yield
        return
    try:
        yield
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if code != 0 and e.code is not None and not isinstance(e.code, int):
            print(f"[rank {info.rank}] {e.code}", file=sys.stderr)
        finish(info, code)
    except BaseException as e:  # KeyboardInterrupt included: never fall through to a hang
        if isinstance(e, brief):
            print(f"[rank {info.rank}] error: {e}", file=sys.stderr)
        else:
            print(f"[rank {info.rank}] failed:", file=sys.stderr)
            traceback.print_exc()
        finish(info, 1)
    else:
        finish(info, 0)
