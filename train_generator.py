"""Train the DSDG dual-encoder VAE generator (spoof encoder, live encoder, decoder, spoof-type classifier).

Paper defaults (OULU-NPU Protocol 1, ``train_generator.sh``)::

    python train_generator.py --prep-root PREP_ROOT --protocol 1 --output-dir runs/generator_p1

Resume: ``--resume auto`` (the newest checkpoint in ``--output-dir``) or ``--resume PATH``.
``--output-dir`` is a run directory laid out as DUM/train.py's (misc/run_dir.py, docs/RUNS.md):
``checkpoint.pth`` and the kept ``checkpoints/NNNN.pth`` (both after epoch 1, every ``--save-every``
epochs and at the end), ``grids/`` (inputs, reconstructions, prior samples at full resolution),
``tensorboard/``, ``train.log``, ``log.txt`` (one JSON line per epoch), ``args.json`` and
``skipped_rows.txt``.

Several GPUs or nodes (the same script, started by torchrun; NCCL on CUDA, gloo on CPU)::

    torchrun --standalone --nproc_per_node=4 train_generator.py ...
    NPROC=4 bash train_generator.sh        # or: NPROC=4 bash scripts/distributed_train.sh train_generator.py ...

``--batch-size`` is the global batch (the paper's 240 on 4 GPUs): each of N processes takes 240/N
samples of every batch (a DistributedSampler, so the global batches are those of a single process).
The per-sample loss terms are batch means, which DDP's gradient averaging turns into global means;
the two batch-level terms (identity alignment and orthogonality) are computed on the latents of the
whole global batch, gathered from all ranks, as the original's DataParallel did. The networks use
InstanceNorm, so there are no batch statistics to synchronise. Only rank 0 logs (losses averaged over
ranks), draws grids and writes checkpoints, from the unwrapped networks, so a checkpoint resumes on
any number of processes. Resuming on the number of processes that wrote it is exact; on another
number rank 0 continues its saved random stream and the other ranks get fresh seeded ones
(reproducible, not bitwise identical to an uninterrupted run).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from data.generation_dataset import GenerationDataset
from data.make_train_list import list_path_for
from data.protocol_lists import parse_protocol_name, protocol_tag
from data.prep_common import stage_dir
from misc import run_dir
from misc.checkpoint import CheckpointError, resume, save_run_checkpoint
from misc.cli import bool_flag
from misc.device import add_device_argument
from misc.grids import save_png
from misc.distributed import (DistInfo, barrier, finish_on_exit, init_distributed, param_digest, require_same,
                              rng_state_for_checkpoint)
from misc.io import atomic_write_json, atomic_write_text
from misc.logger import log_run_header, setup_logging
from misc.precision import add_precision_argument, requested_spec, resolve_precision
from misc.seed import seed_everything, worker_init_fn
from misc.tensorboard import summary_writer
from misc.workers import resolve_workers, workers_type
from networks.engine import regulariser_scale, train_one_epoch, visualise
from networks.generator import DualVAE
from networks.light_cnn import DEFAULT_PATH as LIGHTCNN_PATH, WHERE_TO_GET, load_lightcnn
from networks.losses import LossWeights

log = logging.getLogger(__name__)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("DSDG generator training", add_help=False)

    g = p.add_argument_group("data")
    g.add_argument("--prep-root", type=Path, default=None,
                   help="prepared root written by the data-preparation stages (frames in train_images/, boxes in "
                        "train_bbox/, lists in train_list/). Required unless --train-list, --image-root and "
                        "--bbox-root are all given.")
    g.add_argument("--protocol", default="1",
                   help="protocol whose generator list is used: OULU-NPU 1, 2, 3_k or 4_k (paper: 1), or an adapted "
                        "dataset's siw_1, siw_2_k, siw_3_k, siwm_k, casia, replay (data/adapters/). "
                        "Default: %(default)s.")
    g.add_argument("--train-list", type=Path, default=None,
                   help="generator list (rows '<video>/<frame> <subject> <live_flag> <digit>'). "
                        "Default: <prep-root>/train_list/train_list_oulu_p<protocol>.txt.")
    g.add_argument("--image-root", type=Path, default=None, help="frames root. Default: <prep-root>/train_images.")
    g.add_argument("--bbox-root", type=Path, default=None, help="face boxes root. Default: <prep-root>/train_bbox.")
    g.add_argument("--bbox-format", default="mtcnn", choices=["mtcnn", "prnet", "cdcn"],
                   help="format of the .dat box files (paper/ours: mtcnn 'x y w h'). Default: %(default)s.")
    g.add_argument("--face-scale", type=float, default=1.0,
                   help="crop = face box enlarged by this factor about its centre (paper: 1.0, the tight MTCNN "
                        "box). Default: %(default)s.")
    g.add_argument("--image-size", type=int, default=256,
                   help="generator input/output size, a power of two <= 256 (paper: 256; use 64 for CPU "
                        "experiments). Default: %(default)s.")
    g.add_argument("--workers", type=workers_type, default=None,
                   help="data-loading processes per training process, i.e. per GPU (0 = in the main process). "
                        "Default: the paper's 8, at most this process's share of the usable CPU cores.")

    g = p.add_argument_group("model")
    g.add_argument("--hdim", type=int, default=128, help="size of each latent (paper: 128). Default: %(default)s.")
    g.add_argument("--max-channels", type=int, default=512,
                   help="cap on every layer's channel count (paper: 512, i.e. none). 128 makes 32-64 px CPU runs "
                        "several times faster per step (the 4x4 bottleneck blocks are most of the work there); the "
                        "checkpoint records it. Default: %(default)s.")
    g.add_argument("--num-spoof-types", type=int, default=4,
                   help="spoof-type classes (paper: 4 = print1, print2, replay1, replay2; SiW needs 6, CASIA-MFSD and "
                        "Replay-Attack have 3, so 4 fits). Default: %(default)s.")

    g = p.add_argument_group("losses (paper values from train_generator.sh)")
    g.add_argument("--lambda-align", "--lambda-mmd", type=float, default=50.0,
                   help="weight of the identity-latent alignment, the L1 distance between the batch means of the "
                        "spoof- and live-identity latents (the original's 'MMD'; paper: 50). Default: %(default)s.")
    g.add_argument("--lambda-ip", type=float, default=1000.0,
                   help="weight of identity preservation, MSE between LightCNN features of inputs and "
                        "reconstructions (paper: 1000). Default: %(default)s.")
    g.add_argument("--lambda-pair", type=float, default=5.0,
                   help="weight of pair identity, MSE between LightCNN features of the reconstructed spoof and "
                        "live images (paper: 5). Default: %(default)s.")
    g.add_argument("--lambda-type", type=float, default=10.0,
                   help="weight of the spoof-type cross-entropy on the pattern latent (paper: 10). "
                        "Default: %(default)s.")
    g.add_argument("--lambda-ort", type=float, default=1.0,
                   help="weight of the pattern/identity orthogonality term |mean <z_pattern, z_id>| (paper: 1). "
                        "Default: %(default)s.")
    g.add_argument("--warmup-epochs", type=int, default=1,
                   help="epochs during which every term except the reconstruction is scaled by --warmup-factor "
                        "(paper: 1). Default: %(default)s.")
    g.add_argument("--warmup-factor", type=float, default=0.01,
                   help="scale of the non-reconstruction terms during warm-up (paper: 0.01). Default: %(default)s.")
    g.add_argument("--ip-model", type=Path, default=Path(LIGHTCNN_PATH),
                   help="official LightCNN-29 v2 checkpoint (LightCNN_29Layers_V2_checkpoint.pth.tar from "
                        "AlfredXiangWu/LightCNN) for the identity losses. Default: %(default)s.")
    g.add_argument("--ip-model-trusted", type=bool_flag, default=False,
                   help="load --ip-model with full unpickling (weights_only=False). Only for a file from a source "
                        "you trust that torch refuses to load safely. Default: %(default)s.")
    g.add_argument("--no-identity-loss", action="store_true",
                   help="train without LightCNN, i.e. without the identity-preserving and pair-identity terms. "
                        "Does NOT reproduce the paper; for tests and demos where the weights are unavailable.")

    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, default=240,
                   help="global batch size, summed over all processes (paper: 240 on 4 GPUs). Under torchrun with N "
                        "processes each takes batch/N samples (N must divide it), so the data order and the loss are "
                        "those of one process. Default: %(default)s.")
    g.add_argument("--epochs", type=int, default=200, help="training epochs (paper: 200 = 32k iterations on OULU "
                                                           "P1). Default: %(default)s.")
    g.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate, constant (paper: 2e-4). "
                                                          "Default: %(default)s.")
    g.add_argument("--adam-betas", type=float, nargs=2, default=(0.9, 0.999), metavar=("BETA1", "BETA2"),
                   help="Adam betas (paper: PyTorch defaults 0.9 0.999). Default: %(default)s.")
    g.add_argument("--max-iters-per-epoch", type=int, default=None,
                   help="stop each epoch after this many iterations (smoke tests and demos; paper: unset).")

    g = p.add_argument_group("run")
    add_device_argument(g)
    add_precision_argument(g, "fp16 on CUDA (autocast + loss scaling; the losses stay float32), fp32 on a CPU "
                              "(bf16 autocast is an option there; its effect on the loss curve: docs/DUM.md)")
    g.add_argument("--seed", type=int, default=0, help="random seed (data order, pairing, latent noise, "
                                                       "initialisation). Default: %(default)s.")
    g.add_argument("--output-dir", type=Path, default=Path("runs/generator_p1"),
                   help="the run directory (docs/RUNS.md): checkpoint.pth, checkpoints/, tensorboard/, grids/, "
                        "args.json, train.log, log.txt. Default: %(default)s.")
    g.add_argument("--resume", default="",
                   help="'auto' resumes from the newest checkpoint in --output-dir (a fresh start if there is none; "
                        "run directories of older versions too); a path resumes from that file (a run directory: "
                        "its newest); empty starts fresh. A changed --image-size, --hdim, --num-spoof-types or "
                        "--max-channels is refused. Default: none.")
    g.add_argument("--save-every", type=int, default=10,
                   help="write checkpoint.pth (networks, optimizer, scaler and RNG state: about 0.5 GB) and keep a "
                        "copy as checkpoints/NNNN.pth after epoch 1, every N epochs and after the last one (paper: "
                        "10). Default: %(default)s.")
    g.add_argument("--sample-every", type=int, default=10,
                   help="save image grids after epoch 1 and every N epochs (paper: 10). Default: %(default)s.")
    g.add_argument("--num-grid", type=int, default=32,
                   help="image pairs per grid (inputs, reconstructions, prior samples). Default: %(default)s.")
    g.add_argument("--log-every", type=int, default=20,
                   help="iterations between progress-bar/TensorBoard updates (paper print_freq: 20). "
                        "Default: %(default)s.")
    g.add_argument("--debug-param-digest", type=Path, default=None, metavar="DIR",
                   help="for tests: at the end every process writes DIR/rank<k>.txt, the SHA-256 of its networks' "
                        "parameters, to check that distributed ranks stayed identical.")
    return p


def resolve_paths(args: argparse.Namespace) -> None:
    """Fill in list/image/box paths from --prep-root and --protocol."""
    tag = protocol_tag(*parse_protocol_name(args.protocol))
    if args.prep_root is None and None in (args.train_list, args.image_root, args.bbox_root):
        raise SystemExit("error: give --prep-root (or all of --train-list, --image-root and --bbox-root)")
    if args.train_list is None:
        args.train_list = list_path_for(args.prep_root, "train", tag)
    if args.image_root is None:
        args.image_root = stage_dir(args.prep_root, "train", "images")
    if args.bbox_root is None:
        args.bbox_root = stage_dir(args.prep_root, "train", "bbox")


def load_identity_network(args: argparse.Namespace, device: torch.device, main_proc: bool = True):
    """LightCNN for the identity losses, or None with --no-identity-loss; a clear exit if it is missing."""
    if args.no_identity_loss:
        if main_proc:
            log.warning("--no-identity-loss: training WITHOUT the identity-preserving and pair-identity losses; "
                        "this does not reproduce the paper")
        return None
    if not Path(args.ip_model).is_file():
        raise SystemExit(f"error: LightCNN weights not found at {args.ip_model}. {WHERE_TO_GET} "
                         "To train without the identity losses (not the paper's setting), pass --no-identity-loss.")
    try:
        return load_lightcnn(args.ip_model, allow_pickle=args.ip_model_trusted).to(device)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None


# Arguments that fix the networks' parameter shapes, with the value checkpoints from before the flag existed had.
ARCHITECTURE = {"image_size": None, "hdim": None, "num_spoof_types": None, "max_channels": 512}


def build_loader(dataset: GenerationDataset, args: argparse.Namespace, info: DistInfo):
    """This rank's sampler and loader: batches of ``--batch-size / world_size`` samples.

    A DistributedSampler (drop_last) gives rank r the samples r, r + N, ... of each epoch's seeded
    permutation, so the ranks' k-th batches together are exactly the single-process run's k-th
    global batch, and every rank has the same number of batches.
    """
    if args.batch_size % info.world_size:
        raise SystemExit(f"error: --batch-size {args.batch_size} is the global batch; it must divide evenly over "
                         f"{info.world_size} processes")
    per_rank_batch = args.batch_size // info.world_size
    sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank,
                                 shuffle=True, seed=args.seed, drop_last=True)
    # Workers are not persistent: each epoch they get a fresh copy of the dataset carrying set_epoch's value.
    loader = DataLoader(dataset, batch_size=per_rank_batch, sampler=sampler, num_workers=args.workers,
                        pin_memory=info.device.type == "cuda", drop_last=True, worker_init_fn=worker_init_fn)
    return sampler, loader


def checkpoint_due(done: int, args: argparse.Namespace) -> bool:
    """Checkpoints after epoch 1, every --save-every epochs and after the last one."""
    return done == 1 or done == args.epochs or done % args.save_every == 0


def main(args: argparse.Namespace) -> None:
    """Train. Under torchrun the process ends here (misc.distributed.finish)."""
    info = init_distributed(args.device)
    with finish_on_exit(info, brief=(CheckpointError,)):
        train(args, info)


def train(args: argparse.Namespace, info: DistInfo) -> None:
    device, main_proc = info.device, info.is_main
    out = Path(args.output_dir)
    if main_proc:
        out.mkdir(parents=True, exist_ok=True)
    setup_logging(out / run_dir.LOG, main_process=main_proc)
    resolve_paths(args)
    log_run_header(log, args)
    args.workers = resolve_workers(args.workers, 8, "data-loading workers", log)
    if info.distributed:
        log.info("distributed: %d processes, %s backend, this one on %s", info.world_size,
                 torch.distributed.get_backend(), device)
    seed_everything(args.seed + info.rank)
    torch.backends.cudnn.benchmark = True

    # ============ identity network (fail fast, before reading thousands of files) ============
    lightcnn = load_identity_network(args, device, main_proc)

    # ============ data ============
    dataset = GenerationDataset(args.train_list, args.image_root, args.bbox_root, image_size=args.image_size,
                                bbox_format=args.bbox_format, face_scale=args.face_scale, seed=args.seed,
                                show_progress=main_proc)
    if main_proc:
        atomic_write_text(out / "skipped_rows.txt", "".join(p + "\n" for p in dataset.problems))
    if dataset.num_spoof_types > args.num_spoof_types:  # else the classifier's loss fails with an index error
        raise SystemExit(f"error: {args.train_list} has spoof classes 0..{dataset.num_spoof_types - 1}, more than "
                         f"--num-spoof-types {args.num_spoof_types}; pass --num-spoof-types {dataset.num_spoof_types} "
                         "(SiW has six: print1-2, replay1-4; SiW-M thirteen)")
    sampler, loader = build_loader(dataset, args, info)
    iters = len(loader) if args.max_iters_per_epoch is None else min(len(loader), args.max_iters_per_epoch)
    log.info("%d spoof samples, batch %d (%d per process x %d), %d iterations per epoch",
             len(dataset), args.batch_size, loader.batch_size, info.world_size, iters)
    if len(loader) == 0:
        raise SystemExit(f"error: {len(dataset)} samples is less than one global batch of {args.batch_size}; "
                         "lower --batch-size")
    vis_spoof = vis_live = None
    if main_proc:  # fixed pairs for the grids, spread over the list so that they show different people and attacks
        picks = np.unique(np.linspace(0, len(dataset) - 1, min(args.num_grid, len(dataset))).round())
        vis = [dataset[int(i)] for i in picks]
        vis_spoof, vis_live = torch.stack([v["spoof"] for v in vis]), torch.stack([v["live"] for v in vis])

    # ============ model, optimizer, resume ============
    model = DualVAE(args.hdim, args.image_size, args.num_spoof_types, args.max_channels).to(device)
    # The classifier is optimised too (the original left it out, so it stayed a random projection).
    # The fused kernel is several times faster than the per-tensor loop on CPU and on GPU.
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=tuple(args.adam_betas), fused=True)
    # Today's default, and what --amp true did: fp16 with loss scaling on CUDA, fp32 on a CPU.
    default = "fp16" if device.type == "cuda" else "fp32"
    precision = resolve_precision(requested_spec(args, default, default), device)
    scaler = torch.amp.GradScaler("cuda", enabled=precision.loss_scaling)
    resumed = resume(args.resume, out, kind="generator", models=model.parts(), optimizer=optimizer, scaler=scaler,
                     args=args, architecture=ARCHITECTURE, info=info, map_location=device) if args.resume else None
    start_epoch, iteration = (int(resumed["epoch"]), int(resumed["iteration"])) if resumed else (0, 0)
    # Every rank reads the checkpoint itself: on several machines it must be on storage they all see.
    require_same(start_epoch, "the epoch to start from (is the --resume checkpoint readable on every machine?)")
    # DDP starts from rank 0's parameters and averages gradients; grids and checkpoints use the bare model.
    train_model = model
    if info.distributed:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    weights = LossWeights(args.lambda_align, args.lambda_ip, args.lambda_pair, args.lambda_type, args.lambda_ort)
    writer = None
    if main_proc:
        writer = summary_writer(run_dir.tensorboard_dir(out))
        atomic_write_json(out / run_dir.ARGS, vars(args))

    # ============ training ============
    try:
        for epoch in range(start_epoch, args.epochs):
            t0 = time.time()
            sampler.set_epoch(epoch)
            dataset.set_epoch(epoch)
            scale = regulariser_scale(epoch, args.warmup_epochs, args.warmup_factor)
            stats, iteration = train_one_epoch(
                train_model, loader, optimizer, device, epoch, weights, lightcnn=lightcnn, scaler=scaler,
                precision=precision, scale=scale, iteration=iteration, max_iters=args.max_iters_per_epoch,
                writer=writer,
                log_every=args.log_every, total_iters=iters)
            done = epoch + 1
            log.info("epoch %d/%d (%.0f s): %s", done, args.epochs, time.time() - t0,
                     "  ".join(f"{k} {v:.4g}" for k, v in stats.items()))
            # Every rank's RNG state, taken before rank 0 draws grids (which leave the global RNG alone), so a
            # resumed run continues with exactly the numbers an uninterrupted run would draw next.
            rng = rng_state_for_checkpoint() if checkpoint_due(done, args) else None
            if main_proc:
                write_epoch_outputs(args, out, model, optimizer, scaler, writer, stats, done, iteration,
                                    vis_spoof, vis_live, device, t0, rng)
            barrier()
    finally:
        if writer is not None:
            writer.close()
    log.info("finished: %d epochs, %d iterations; latest checkpoint %s", args.epochs, iteration,
             run_dir.latest_path(out))
    if args.debug_param_digest is not None:
        atomic_write_text(args.debug_param_digest / f"rank{info.rank}.txt", param_digest(model) + "\n")


def write_epoch_outputs(args, out: Path, model: DualVAE, optimizer, scaler, writer, stats: dict, done: int,
                        iteration: int, vis_spoof, vis_live, device, t0: float, rng: dict | None) -> None:
    """Rank 0, after each epoch: scalars; grids after epoch 1, every N epochs and at the end; a checkpoint
    when ``rng`` (every rank's RNG state, :func:`checkpoint_due`) is given."""
    for k, v in stats.items():
        writer.add_scalar(f"epoch/{k}", v, done)
    with open(out / run_dir.EPOCH_LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps({"epoch": done, "iteration": iteration, "seconds": round(time.time() - t0, 1),
                            **{f"train_{k}": v for k, v in stats.items()}}) + "\n")
    if done == 1 or done == args.epochs or done % args.sample_every == 0:
        grids = visualise(model, vis_spoof, vis_live, args.seed, args.num_grid, device)
        for name, grid in grids.items():
            save_png(grid, out / run_dir.GRIDS / f"epoch_{done:04d}_{name}.png")
            writer.add_image(f"grids/{name}", grid, done)
    writer.flush()
    if rng is not None:
        path = save_run_checkpoint(out, keep=True, kind="generator", models=model.parts(), optimizer=optimizer,
                                   scaler=scaler if scaler.is_enabled() else None, epoch=done, iteration=iteration,
                                   args=args, rng=rng, extra={"train_stats": stats})
        log.info("saved %s and %s", path, run_dir.kept_path(out, done))


if __name__ == "__main__":
    try:
        main(argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter).parse_args())
    except CheckpointError as e:  # the messages name the file and the problem
        sys.exit(f"error: {e}")
