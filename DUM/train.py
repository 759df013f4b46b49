"""Train CDCN + DUM (the DSDG depth network), or another depth network of ``DUM/zoo.py``, on a crop
root, with generated data when the protocol has it.

    python -m DUM.train --crop-root CROP_ROOT --protocol 1 --output-dir runs/dum_p1
    python -m DUM.train --model cdcn --crop-root CROP_ROOT --protocol 1 --output-dir runs/dum_cdcn_p1

``--model`` picks the network (default ``cdcn_u``, the paper's) and with it the objective: DSDG's
depth + contrast losses on the sampled map plus the KL term for the DUM networks (``*_u``), plain
CDCN's depth + contrast losses for ``cdcn``. The name is stored in the checkpoint, so DUM/test.py,
DUM/predict.py and DUM/export_onnx.py build the same network from it.

Paper defaults: batches of 64 (48 real + 16 generated), Adam 1e-4 with weight decay 5e-5, the
rate halved every 500 epochs, 1600 epochs, Dev/Test evaluated at epoch 200 and every 50 after.
``--resume auto`` continues the run in ``--output-dir`` exactly where its last checkpoint stopped.
``--output-dir`` is a run directory laid out as the generator's (misc/run_dir.py, docs/RUNS.md).

Several GPUs or nodes (the same script, started by torchrun; NCCL on CUDA, gloo on CPU)::

    torchrun --standalone --nproc_per_node=4 DUM/train.py --crop-root CROP_ROOT ...
    NPROC=4 bash scripts/distributed_train.sh DUM/train.py --crop-root CROP_ROOT ...

``--batch-size`` is the global batch: with N processes each one takes 1/N of the real part and
1/N of the generated part of every batch (64 on 4 GPUs: 12 real + 4 generated each), so the data
order, the epoch length and the loss are those of the single-process run; both parts must divide
by N. On CUDA the BatchNorm layers become SyncBatchNorm, so their statistics cover the global
batch too; on CPU (gloo) each process normalises its own share. Only rank 0 logs, evaluates
(the others wait), draws grids and writes checkpoints, from the unwrapped model, so a checkpoint
resumes on any number of processes. Resuming on the number of processes that wrote it is exact;
on another number rank 0 continues its saved random stream and the other ranks get fresh seeded
ones (reproducible, not bitwise identical to an uninterrupted run).
"""
if __package__ in (None, ""):  # run as a file: make the repository root importable
    import pathlib
    import sys
    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse
import json
import logging
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from data.protocol_lists import ProtocolError, parse_protocol_name, read_protocol
from DUM import engine, scoring, zoo
from DUM.datasets import (DUMTrainDataset, RealGeneratedBatchSampler, VideoFramesDataset, eval_list_path,
                          train_list_path)
from DUM.metrics import json_ready
from DUM.transforms import TrainAugment
from misc import run_dir
from misc.checkpoint import CheckpointError, resume, save_run_checkpoint
from misc.cli import add_renamed_argument, bool_flag
from misc.device import add_device_argument
from misc.distributed import (DistInfo, barrier, finish_on_exit, init_distributed, param_digest, require_same,
                              rng_state_for_checkpoint)
from misc.grids import save_png
from misc.io import atomic_write_json, atomic_write_text
from misc.logger import log_run_header, setup_logging
from misc.precision import add_precision_argument, requested_spec, resolve_precision
from misc.seed import seed_everything, worker_init_fn
from misc.tensorboard import summary_writer
from misc.workers import resolve_workers, workers_type

log = logging.getLogger(__name__)


def training_augment(args: argparse.Namespace) -> TrainAugment:
    """The paper's augmentation, or the same without its colour jitter (``--colour-jitter false``)."""
    if args.colour_jitter:
        return TrainAugment()
    return TrainAugment(brightness=0, gamma_range=(1.0, 1.0))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("DSDG depth network (CDCN + DUM) training", add_help=False)
    g = p.add_argument_group("data")
    add_renamed_argument(g, "--crop-root", "--data-root", required=True, type=Path,
                         help="crop root written by DUM/make_dataset/crop_dataset.py (and generated.py)")
    g.add_argument("--protocol", default="1",
                   help="OULU-NPU protocol: 1, 2, 3_k or 4_k (k = 1..6), or an adapted dataset's siw_1, siw_2_k, "
                        "siw_3_k, casia, replay. Default: %(default)s (the released model's)")
    g.add_argument("--train-list", type=Path, default=None,
                   help="training list; default <crop-root>/protocols/Protocol_N/Train[_k]_g.txt when it exists "
                        "(real + generated rows), else Train[_k].txt (real only: plain CDCN + DUM)")
    g.add_argument("--image-size", type=int, default=256, help="network input size in pixels (paper: 256)")
    g.add_argument("--map-size", type=int, default=32, help="depth map size (paper: 32); 8 suits 64 px inputs")
    g.add_argument("--frames-per-video", type=int, default=0,
                   help="frames scored per Dev/Test video, evenly spaced; 0 = all (paper). A few (e.g. 10) "
                        "make evaluation much faster")
    g.add_argument("--workers", type=workers_type, default=None,
                   help="data loading processes per training process (0 = in the main process); default 4 "
                        "(the original: 8 in its one process), at most this process's share of the usable CPU cores")
    g.add_argument("--preload-mb", type=float, default=1024,
                   help="decode all training frames into memory first when they fit in this many MiB "
                        "(small/demo crop roots; every training process holds its own copy); 0 disables. "
                        "Default: %(default)s")
    g = p.add_argument_group("model and losses")
    g.add_argument("--model", choices=zoo.NAMES, default=zoo.DEFAULT,
                   help="depth network and its objective: cdcn_u (CDCN + DUM, the paper's), cdcn (plain CDCN: depth "
                        "+ contrast losses, no uncertainty), depthnet_u (CDCN_u with plain 3x3 convolutions), "
                        "resnet18_u (ResNet-18-style with DUM heads). Default: %(default)s")
    g.add_argument("--theta", type=float, default=0.7,
                   help="central difference weight (paper: 0.7; 0 = plain conv); cdcn_u and cdcn only")
    g.add_argument("--kl-weight", type=float, default=1e-3,
                   help="weight of the DUM KL term (paper: 0.001); unused by cdcn, which has no uncertainty")
    g.add_argument("--colour-jitter", type=bool_flag, default=True,
                   help="random brightness shift and gamma in the training augmentation (paper: true). "
                        "false keeps the colours of the faces; only for tiny runs such as the demo, which must learn "
                        "in minutes from three people")
    g.add_argument("--generated-weight", type=float, default=0.1,
                   help="weight of every loss term of generated samples (paper: 0.1)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, default=64,
                   help="global batch: samples per optimisation step over all processes (paper: 64 = 48 real + 16 "
                        "generated, on one GPU). Under torchrun with N processes each takes 1/N of the real and "
                        "1/N of the generated part (both must divide by N), so the data order and the loss are "
                        "those of one process (the BatchNorm statistics too on CUDA, where they become SyncBatchNorm)")
    g.add_argument("--real-ratio", type=float, default=0.75,
                   help="share of real samples per batch when generated rows exist (paper: 0.75 -> 48 + 16)")
    g.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (paper: 1e-4)")
    g.add_argument("--weight-decay", type=float, default=5e-5, help="Adam weight decay (paper: 5e-5)")
    g.add_argument("--step-size", type=int, default=500, help="epochs between learning-rate decays (paper: 500)")
    g.add_argument("--gamma", type=float, default=0.5, help="learning-rate decay factor (paper: 0.5)")
    g.add_argument("--epochs", type=int, default=1600, help="training epochs (paper: 1600)")
    g.add_argument("--iters-per-epoch", type=int, default=None,
                   help="batches per epoch; default: enough for every real row once (paper: 1200 / 48 = 25). "
                        "Small values make smoke runs")
    g = p.add_argument_group("evaluation and checkpoints")
    g.add_argument("--eval-start", type=int, default=200, help="first epoch evaluated (paper: 200); the last always is")
    g.add_argument("--eval-every", type=int, default=50, help="epochs between evaluations after that (paper: 50)")
    g.add_argument("--eval-test", type=bool_flag, default=True,
                   help="also score the Test list at each evaluation, at the Dev threshold (reported as Test; "
                        "do not select models on it). Default: %(default)s")
    g.add_argument("--eval-batch-size", type=int, default=64,
                   help="frames per batch when scoring (rank 0 scores alone under torchrun)")
    g.add_argument("--eval-plots", type=bool_flag, default=True,
                   help="draw ROC/DET and score-histogram PNGs at each evaluation. Default: %(default)s")
    g.add_argument("--save-every", type=int, default=1,
                   help="epochs between rewrites of <output-dir>/checkpoint.pth (kept copies, "
                        "checkpoints/NNNN.pth, at each evaluation)")
    g.add_argument("--resume", default=None, metavar="PATH|auto",
                   help="continue from this checkpoint (or run directory: its newest), or 'auto': the newest "
                        "checkpoint in --output-dir when there is one (run directories of older versions too). A "
                        "changed --model or parameter shape is refused. A checkpoint resumes on any number of "
                        "processes (exactly on the number that wrote it)")
    g = p.add_argument_group("run")
    add_device_argument(g)
    add_precision_argument(g, "fp32 (bf16 autocast trains too; fp16 on CUDA adds loss scaling; its effect on the "
                              "loss curve: docs/DUM.md)")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of everything random (data order, augmentation, init); process k adds k for its "
                        "sampling noise")
    g.add_argument("--output-dir", type=Path, default=Path("runs/dum"),
                   help="the run directory (docs/RUNS.md): checkpoint.pth, checkpoints/, tensorboard/, grids/, "
                        "args.json, train.log, log.txt (JSON lines), eval/ (score files, metrics)")
    g.add_argument("--debug-param-digest", type=Path, default=None, metavar="DIR",
                   help="for tests: at the end every process writes DIR/rank<k>.txt, the SHA-256 of its model's "
                        "parameters, to check that distributed ranks stayed identical")
    return p


def is_eval_epoch(epoch: int, args: argparse.Namespace) -> bool:
    """1-based ``epoch``: eval-start, eval-start + eval-every, ..., and the last epoch."""
    if epoch == args.epochs:
        return True
    return epoch >= args.eval_start and (epoch - args.eval_start) % args.eval_every == 0


def build_data(args: argparse.Namespace, info: DistInfo):
    """Training dataset + this rank's sampler and loader; Dev/Test datasets on rank 0 (None when their
    lists are absent; the other ranks do not evaluate)."""
    train_list = args.train_list or train_list_path(args.crop_root, args.protocol)
    rows = read_protocol(train_list)
    n_gen = sum(r.generated for r in rows)
    log.info("training list %s: %d real rows, %d generated rows", train_list, len(rows) - n_gen, n_gen)
    dataset = DUMTrainDataset(args.crop_root, rows, args.image_size, args.map_size, augment=training_augment(args),
                              preload_mb=args.preload_mb)
    try:
        sampler = RealGeneratedBatchSampler(dataset.generated, args.batch_size, args.real_ratio, seed=args.seed,
                                            rank=info.rank, world_size=info.world_size,
                                            iters_per_epoch=args.iters_per_epoch)
    except ValueError as e:
        raise SystemExit(f"error: --batch-size/--real-ratio: {e}") from None
    log.info("batches: %d real + %d generated samples (%d + %d in each of %d processes), %d batches per epoch, "
             "%d iterations in all", sampler.n_real, sampler.n_gen, sampler.local_real, sampler.local_gen,
             info.world_size, len(sampler), len(sampler) * args.epochs)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=args.workers,
                        pin_memory=info.device.type == "cuda", persistent_workers=args.workers > 0,
                        worker_init_fn=worker_init_fn,
                        # a private generator: worker seeding must not consume the global RNG,
                        # or a resumed run would draw different reparameterisation noise
                        generator=torch.Generator().manual_seed(args.seed))
    evals = {}
    for split in ("Dev", "Test") if info.is_main else ():
        path = eval_list_path(args.crop_root, args.protocol, split)
        if split == "Test" and not args.eval_test:
            continue
        if not path.is_file():
            log.warning("%s: not found; no %s evaluation", path, split)
            continue
        evals[split.lower()] = VideoFramesDataset(args.crop_root, split.lower(), read_protocol(path),
                                                  args.image_size, args.map_size, args.frames_per_video)
    return dataset, sampler, loader, evals


def build_model(args: argparse.Namespace, info: DistInfo) -> nn.Module:
    """The --model network on this rank's device, channels_last; SyncBatchNorm on CUDA under torchrun.

    Batch statistics then cover the global batch, as in a single-process run. gloo has no
    SyncBatchNorm, so on CPU each process normalises its own share of the batch.
    """
    spec = zoo.get(args.model)
    model = spec.build(theta=args.theta, map_size=args.map_size)
    log.info("model: %s, %d parameters; objective: %s", spec.describe(args.theta),
             sum(p.numel() for p in model.parameters()), spec.objective)
    if info.distributed and info.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        log.info("BatchNorm -> SyncBatchNorm over %d processes", info.world_size)
    elif info.distributed:
        log.info("CPU processes: BatchNorm statistics are per process (%d samples), not global",
                 args.batch_size // info.world_size)
    return model.to(info.device).to(memory_format=torch.channels_last)


def main(args: argparse.Namespace) -> dict:
    """Train; returns the last epoch's record. Under torchrun the process ends here (misc.distributed.finish)."""
    info = init_distributed(args.device)
    with finish_on_exit(info, brief=(CheckpointError, ProtocolError)):
        return train(args, info)


def train(args: argparse.Namespace, info: DistInfo) -> dict:
    if info.is_main:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(args.output_dir / run_dir.LOG, main_process=info.is_main)
    log_run_header(log, args)
    args.workers = resolve_workers(args.workers, 4, "data loading workers", log)
    if info.distributed:
        log.info("distributed: %d processes, %s backend, this one on %s", info.world_size,
                 torch.distributed.get_backend(), info.device)
    parse_protocol_name(args.protocol)  # fail early on a bad name
    device = info.device
    precision = resolve_precision(requested_spec(args, "fp32", "fp16" if device.type == "cuda" else "auto"), device)
    # Rank 0 draws the single-process stream; the other ranks their own reparameterisation noise.
    seed_everything(args.seed + info.rank)

    # ============ data ============
    dataset, sampler, loader, evals = build_data(args, info)

    # ============ model, optimiser, schedule ============
    model = build_model(args, info)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.step_size, gamma=args.gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=precision.loss_scaling)
    resumed = resume(args.resume, args.output_dir, kind="dum", models={"model": model}, optimizer=optimizer,
                     scheduler=scheduler, scaler=scaler, args=args, info=info,
                     architecture={"model": zoo.DEFAULT}) if args.resume else None  # before --model: CDCN_U
    start_epoch, extra = (resumed["epoch"], resumed.get("extra", {})) if resumed else (0, {})
    # Every rank reads --resume itself: on several machines it must be on storage they all see.
    require_same(start_epoch, "the epoch to start from (is the --resume checkpoint readable on every machine?)")
    extra = {"threshold": extra.get("threshold"), "score": "mean", "protocol": args.protocol}
    # DDP starts from rank 0's parameters and averages gradients; evaluation, grids and checkpoints
    # use the bare ``model`` (no "module." prefix, no collectives on rank 0 alone).
    train_model = model
    if info.distributed:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    writer = None
    if info.is_main:
        writer = summary_writer(run_dir.tensorboard_dir(args.output_dir),
                                purge_step=start_epoch + 1 if start_epoch else None)
        atomic_write_json(args.output_dir / run_dir.ARGS, vars(args))
    grid_keys = engine.grid_keys(dataset, seed=args.seed)
    record: dict = {}

    # ============ training loop ============
    try:
        for epoch in range(start_epoch, args.epochs):
            sampler.set_epoch(epoch)
            stats = engine.train_one_epoch(train_model, loader, optimizer, device, epoch, scaler=scaler,
                                           precision=precision,
                                           generated_weight=args.generated_weight, kl_weight=args.kl_weight)
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            done = epoch + 1
            record = {"epoch": done, "lr": lr, **{f"train_{k}": v for k, v in stats.items()}}
            log.info("epoch %d/%d lr %.3g %s", done, args.epochs, lr,
                     " ".join(f"{k} {v:.4f}" for k, v in sorted(stats.items())))
            if writer is not None:
                for k, v in stats.items():
                    writer.add_scalar(f"train/{k}", v, done)
                writer.add_scalar("train/lr", lr, done)

            if is_eval_epoch(done, args):
                if info.is_main:  # the other ranks wait at the barrier
                    if "dev" in evals:
                        record.update(evaluate_epoch(args, model, evals, device, precision, done, extra, writer))
                    grid = engine.depth_grid(model, dataset, grid_keys, device,
                                             title=f"epoch {done}: fixed training samples, their labels, mu, sigma")
                    writer.add_image("inputs_labels_mu_sigma", grid, done)
                    save_png(grid, args.output_dir / run_dir.GRIDS / f"epoch_{done:04d}.png")
                barrier()

            # ============ checkpoint and log ============
            if done % args.save_every == 0 or is_eval_epoch(done, args):
                rng = rng_state_for_checkpoint()  # every rank's state: a collective
                if info.is_main:
                    state = dict(kind="dum", models={"model": model}, optimizer=optimizer, scheduler=scheduler,
                                 scaler=scaler, epoch=done, iteration=done * len(sampler), args=args,
                                 rng=rng, extra=extra)
                    save_run_checkpoint(args.output_dir, keep=is_eval_epoch(done, args), **state)
            if info.is_main:
                with open(args.output_dir / run_dir.EPOCH_LOG, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
                writer.flush()
    finally:
        if writer is not None:
            writer.close()
    if args.debug_param_digest is not None:
        atomic_write_text(args.debug_param_digest / f"rank{info.rank}.txt", param_digest(model) + "\n")
    return record


def evaluate_epoch(args, model, evals, device, precision, epoch, extra, writer) -> dict:
    """Score Dev/Test with the mean score, keep the Dev threshold, log the metrics (rank 0, bare model)."""
    out_dir = args.output_dir / "eval" / f"epoch_{epoch:04d}"
    report = scoring.evaluate(model, evals["dev"], evals.get("test"), device, out_dir, score="mean",
                              modes=("iso",), batch_size=args.eval_batch_size, workers=min(args.workers, 2),
                              precision=precision, plots=args.eval_plots)
    result = report["metrics"].get("iso")
    if result is None:
        return {"eval_error": report.get("error")}
    extra["threshold"] = result["threshold"]
    extra["threshold_epoch"] = epoch
    name = "test" if "test" in evals else "dev"
    out = {"dev_threshold": result["threshold"], "dev_acer": result["dev"]["acer"], "dev_eer": result["eer_dev"]}
    if name == "test":
        out.update({f"test_{k}": result[k] for k in ("apcer", "bpcer", "acer", "acer_pooled", "auc")})
    for k, v in out.items():
        writer.add_scalar(f"eval/{k}", v, epoch)
    log.info("epoch %d eval (mean score, Dev EER threshold %.4g): %s", epoch, result["threshold"],
             " ".join(f"{k} {v:.4f}" for k, v in out.items() if k != "dev_threshold"))
    atomic_write_json(out_dir / "metrics.json", json_ready(report))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__.split("\n\n")[0])
    try:
        main(parser.parse_args())
    except (CheckpointError, ProtocolError) as e:  # the messages name the file and the problem
        sys.exit(f"error: {e}")
