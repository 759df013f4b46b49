"""The paper's ablation in miniature: does DUM help, and do DSDG's generated pairs help?

    bash scripts/ablation.sh --out runs/ablation                      # synthetic data (60-90 min on 2 cores)
    bash scripts/ablation.sh --out runs/ablation_oulu --oulu-root datasets/OULU-NPU
    bash scripts/ablation.sh --out runs/ablation_smoke --quick        # every row runs; numbers mean nothing

The data stages run once (frames, face boxes, depth maps, the generator's list, the generator, the
sampled pairs, the crops); then the depth network is trained and tested in the four configurations of
the paper's ablation (DSDG, TCSVT, the DUM and generated-data rows), each with several seeds:

    row  network              training data
    a    CDCN (no DUM)        real
    b    CDCN + DUM           real
    c    CDCN (no DUM)        real + generated
    d    CDCN + DUM (DSDG)    real + generated (the paper's mix: ratio 0.75, generated losses x 0.1)

Every run is trained for the same number of steps and tested once, at the end, at its Dev EER threshold
(no model selection, nothing chosen on Test). Outputs under ``--out``::

    data/oulu/ data/prep/ data/crop/       the dataset (synthetic unless --oulu-root), stages 1-4 and 7
    generator/                             the generator run (checkpoints, grids, TensorBoard)
    runs/<row>_seed<k>/train/ .../test/    each depth network run (checkpoint, log, grids; scores, report.json)
    runs/<row>_seed<k>/run.json            its settings and time, written last: a finished run is skipped
    logs/<step>.log                        the full output of every command
    commands.jsonl                         every command with its start time, duration and exit status
    ablation.json  ablation.md             the table: mean +- std over seeds of Test ACER (ISO/IEC 30107-3),
                                           Test ACER pooled (the original's rule), Test AUC and Dev EER
    ablation.png                           the same as a plot, every seed's value shown
    pairs_vs_real.png                      real training crops beside generated pairs

Interrupted? Run the same command again: every stage resumes (the data stages and the generator from
their own markers and checkpoints, the depth network runs with ``--resume auto``), finished runs are
skipped. Changing a setting over an existing ``--out`` stops with the difference; ``--overwrite-runs``
redoes the depth network runs.
"""
if __package__ in (None, ""):  # run as a file: make the repository root importable
    import pathlib
    import sys
    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse
import dataclasses
import json
import logging
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from misc import run_dir
from misc.io import atomic_write_figure, atomic_write_json, atomic_write_text

log = logging.getLogger("dsdg.ablation")
REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------
# Rows and sizes
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    key: str
    model: str       # DUM/zoo.py name
    generated: bool  # train on real + generated pairs
    network: str
    data: str


ROWS = {r.key: r for r in (
    Row("a", "cdcn", False, "CDCN (no DUM)", "real"),
    Row("b", "cdcn_u", False, "CDCN + DUM", "real"),
    Row("c", "cdcn", True, "CDCN (no DUM)", "real + generated"),
    Row("d", "cdcn_u", True, "CDCN + DUM (the paper's model)", "real + generated"),
)}


@dataclass(frozen=True)
class Preset:
    """Every size of the experiment. The paper's values are noted; the defaults fit 2 CPU cores."""
    # synthetic dataset (ignored with --oulu-root)
    users: int = 30               # 12 train / 8 dev / 10 test people (OULU-NPU: 20 / 15 / 20)
    phones: int = 2
    frames: int = 4               # frames per video
    video_size: str = "320x240"
    detect_max_side: int = 160    # MTCNN on frames shrunk to this side (synthetic faces are large)
    # generator (paper: 256 px, batch 240, 32,000 steps, LightCNN identity losses)
    gen_image_size: int = 32
    gen_batch: int = 8
    gen_steps: int = 1500
    gen_face_scale: float = 1.0   # the original crops the generator's faces tightly (scale 1.0)
    gen_max_channels: int = 128   # paper: 512; the 4x4 bottleneck blocks dominate a small run's step
    pairs: int = 1000             # paper: 20,000 sampled (35,000 in the released list)
    # depth network (paper: 256 px, 32 x 32 maps, batch 64, Adam 1e-4, 40,000 steps)
    image_size: int = 32
    batch: int = 8
    lr: float = 1e-3
    epochs: int = 15              # 15 x 28 batches of 8 = 420 steps with the default dataset
    step_size: int = 10           # epochs between learning-rate halvings
    real_ratio: float = 0.75      # paper: 48 real + 16 generated of 64
    generated_weight: float = 0.1  # paper: 0.1
    colour_jitter: bool = True    # paper: true
    max_iters_per_epoch: int = 0  # 0: each real training video once per epoch (the smoke test takes a few)
    plots: bool = True            # each run's ROC/DET and score histograms
    seeds: tuple = (0, 1, 2)


PRESETS = {
    "default": Preset(),
    # Smoke test: every stage and row runs end to end at a toy size. Its numbers mean nothing.
    "quick": Preset(users=6, phones=1, frames=2, gen_steps=4, gen_batch=4, pairs=20, epochs=2, step_size=1,
                    batch=8, max_iters_per_epoch=3, plots=False, seeds=(0,)),
}


def get_args_parser() -> argparse.ArgumentParser:
    d = PRESETS["default"]
    p = argparse.ArgumentParser("DSDG ablation in miniature", add_help=False)
    p.add_argument("--out", type=Path, required=True, help="folder for everything the experiment writes")
    p.add_argument("--oulu-root", type=Path, default=None,
                   help="a dataset in the OULU-NPU layout (Train_files/ Dev_files/ Test_files/ Protocols/); "
                        "default: a synthetic OULU-NPU-shaped dataset built under --out")
    p.add_argument("--protocol", default="1", help="protocol (OULU-NPU 1, 2, 3_k, 4_k). Default: %(default)s")
    p.add_argument("--quick", action="store_true",
                   help="toy sizes for a smoke test (a few minutes): checks that every row runs; its numbers "
                        "mean nothing")
    p.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=sorted(ROWS),
                   help="ablation rows to run (default: all four)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help=f"seeds of every row (default: {' '.join(map(str, d.seeds))}; --quick: 0)")
    g = p.add_argument_group("sizes (defaults: the 'default' preset; --quick replaces them)")
    for f in dataclasses.fields(Preset):
        if f.name == "seeds":
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = {bool: _bool, int: int, float: float, str: str}[type(f.default)]
        g.add_argument(flag, type=kind, default=None, help=f"default {f.default}")
    g = p.add_argument_group("passing options through")
    g.add_argument("--generator-args", default="", help="extra arguments for train_generator.py (one string)")
    g.add_argument("--sample-args", default="", help="extra arguments for generated.py (one string)")
    g.add_argument("--train-args", default="", help="extra arguments for DUM/train.py (one string)")
    g = p.add_argument_group("run")
    g.add_argument("--shared-data", type=Path, default=None,
                   help="use the dataset and prepared root (data/oulu, data/prep) of another ablation folder "
                        "instead of building them: variants of the generator then share stages 1-4")
    g.add_argument("--prep-root", type=Path, default=None,
                   help="a prepared root of --oulu-root whose frames, face boxes and depth maps are done (stages "
                        "1-3, e.g. the demo's prep/): those stages are not run again, and nothing in it is changed "
                        "except a missing generator list")
    g.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="processes for the data stages (default: up to 2)")
    g.add_argument("--device", default="cpu", help="device for the networks: cpu, cuda, auto. Default: %(default)s")
    g.add_argument("--overwrite-runs", action="store_true", help="redo the depth network runs even when finished")
    g.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    return p


def _bool(v: str) -> bool:
    from misc.cli import bool_flag

    return bool_flag(v)


def resolve_preset(args: argparse.Namespace) -> Preset:
    """The preset (quick or default) with every size given on the command line in place."""
    base = PRESETS["quick" if args.quick else "default"]
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Preset)
             if f.name != "seeds" and getattr(args, f.name, None) is not None}
    if args.seeds:
        given["seeds"] = tuple(args.seeds)
    return dataclasses.replace(base, **given)


# ----------------------------------------------------------------------------------------------
# Running commands
# ----------------------------------------------------------------------------------------------

class StepFailed(RuntimeError):
    """A step of the experiment failed; the message names it and its log."""


class Runner:
    """Runs each step's command with the output in ``logs/<step>.log`` and one line per command in
    ``commands.jsonl`` (start, seconds, exit status), so that the experiment documents itself."""

    def __init__(self, out: Path, dry_run: bool = False):
        self.out, self.dry_run = out, dry_run
        self.seconds: Dict[str, float] = {}

    def __call__(self, step: str, cmd: Sequence[str], group: str) -> None:
        cmd = [str(c) for c in cmd]
        shown = " ".join(shlex.quote(c) for c in cmd)
        if self.dry_run:
            print(shown)
            return
        log_path = self.out / "logs" / f"{step}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log.info("[%s] %s", step, shown)
        start = time.time()
        env = dict(os.environ, DSDG_NO_PROGRESS="1", PYTHONUNBUFFERED="1")
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(f"\n$ {shown}\n")
            f.flush()
            rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
        seconds = time.time() - start
        self.seconds[group] = self.seconds.get(group, 0.0) + seconds
        with open(self.out / "commands.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "group": group, "command": shown, "start": time.strftime(
                "%Y-%m-%dT%H:%M:%S", time.localtime(start)), "seconds": round(seconds, 1), "exit": rc}) + "\n")
        if rc != 0:
            raise StepFailed(f"step '{step}' failed (exit {rc}); its output: {log_path}")
        log.info("[%s] done in %.0f s", step, seconds)


# ----------------------------------------------------------------------------------------------
# The stages, run once
# ----------------------------------------------------------------------------------------------

@dataclass
class Paths:
    out: Path
    oulu: Path
    prep: Path
    crop: Path
    generator: Path

    @classmethod
    def of(cls, out: Path, oulu_root: Optional[Path], shared: Optional[Path],
           prep_root: Optional[Path] = None) -> "Paths":
        data = (shared or out) / "data"
        return cls(out=out, oulu=oulu_root or data / "oulu", prep=prep_root or data / "prep",
                   crop=out / "data" / "crop", generator=out / "generator")


def prepare_data(run: Runner, paths: Paths, preset: Preset, args: argparse.Namespace, synthetic: bool) -> None:
    """Stages 0-4 and 7: dataset, frames, boxes, depth maps, generator list, crops (each resumes itself)."""
    py, w = sys.executable, str(args.workers)
    if synthetic:
        run("synthetic", [py, "-m", "data.synthetic", "--out", paths.oulu, "--users", preset.users,
                          "--phones", preset.phones, "--frames", preset.frames, "--size", preset.video_size,
                          "--seed", 0, "--workers", w], "data")
    if args.prep_root is None:
        max_side = preset.detect_max_side if synthetic else 640
        run("frames", [py, "-m", "data.extract_frame", "--input", paths.oulu, "--prep-root", paths.prep,
                       "--workers", w], "data")
        run("boxes", [py, "-m", "data.detect_faces", "--prep-root", paths.prep, "--detect-max-side", max_side], "data")
        run("depth", [py, "-m", "data.depth", "--prep-root", paths.prep, "--workers", w], "data")
    run("train_list", [py, "-m", "data.make_train_list", "--prep-root", paths.prep, "--oulu-root", paths.oulu,
                       "--protocol", args.protocol, "--frames-per-video", preset.frames], "data")
    run("crop", [py, "-m", "DUM.make_dataset.crop_dataset", "--prep-root", paths.prep, "--crop-root", paths.crop,
                 "--oulu-root", paths.oulu, "--image-size", preset.image_size,
                 "--map-size", map_size(preset), "--workers", w], "data")


def map_size(preset: Preset) -> int:
    """CDCN's maps are 1/8 of the input side (256 -> 32)."""
    return max(preset.image_size // 8, 3)


def generator_epochs(paths: Paths, preset: Preset, protocol: str, dry_run: bool = False) -> int:
    """Epochs that give at least ``gen_steps`` steps: one epoch is every spoof row of the list once
    (0 in a dry run before the list exists)."""
    from data.make_train_list import list_path_for
    from data.protocol_lists import parse_protocol_name, protocol_tag

    listing = list_path_for(paths.prep, "train", protocol_tag(*parse_protocol_name(protocol)))
    if dry_run and not listing.is_file():  # the list is made by a stage a dry run only prints
        return 0
    spoof_rows = sum(1 for line in listing.read_text(encoding="utf-8").splitlines()
                     if line.strip() and line.split()[2] == "0")
    per_epoch = spoof_rows // preset.gen_batch
    if per_epoch < 1:
        raise StepFailed(f"{listing}: {spoof_rows} spoof rows, fewer than one generator batch of {preset.gen_batch}")
    return max(1, math.ceil(preset.gen_steps / per_epoch))


def train_and_sample(run: Runner, paths: Paths, preset: Preset, args: argparse.Namespace) -> None:
    """Stages 5-6: the generator (no LightCNN identity losses: its weights cannot be shipped), then pairs."""
    py = sys.executable
    epochs = generator_epochs(paths, preset, args.protocol, run.dry_run)
    run("generator", [py, "train_generator.py", "--prep-root", paths.prep, "--protocol", args.protocol,
                      "--output-dir", paths.generator, "--no-identity-loss", "--image-size", preset.gen_image_size,
                      "--batch-size", preset.gen_batch, "--epochs", epochs, "--save-every", epochs,
                      "--sample-every", max(1, epochs // 4), "--face-scale", preset.gen_face_scale,
                      "--max-channels", preset.gen_max_channels,
                      "--workers", 0, "--precision", "fp32", "--device", args.device, "--resume", "auto",
                      *shlex.split(args.generator_args)], "generator")
    # the kept checkpoint of the last epoch (older generator runs named it checkpoints/checkpoint_epoch_NNNN.pth)
    checkpoint = run_dir.epoch_checkpoint(paths.generator, epochs) or run_dir.kept_path(paths.generator, epochs)
    if not checkpoint.is_file() and not run.dry_run:
        raise StepFailed(f"{checkpoint}: the generator's last checkpoint is missing")
    run("sample", [py, "generated.py", "--checkpoint", checkpoint, "--crop-root", paths.crop,
                   "--protocol", args.protocol, "--protocols-dir", paths.oulu / "Protocols",
                   "--num-pairs", preset.pairs, "--map-size", map_size(preset), "--device", args.device,
                   *shlex.split(args.sample_args)], "sample")


# ----------------------------------------------------------------------------------------------
# Depth network runs
# ----------------------------------------------------------------------------------------------

def train_list(paths: Paths, protocol: str, generated: bool) -> Path:
    """The crop root's Train list, or its Train_g list (real rows, then the generated ones)."""
    from data.protocol_lists import parse_protocol_name, protocol_path

    proto, sub = parse_protocol_name(protocol)
    plain = protocol_path(paths.crop / "protocols", proto, "Train", sub)
    return plain.with_name(plain.stem + "_g.txt") if generated else plain


def iters_per_epoch(paths: Paths, protocol: str, batch: int) -> int:
    """Steps per epoch of every row: the real-only rows' (each real video once per epoch), so that rows
    with generated data take as many steps as those without (DUM/train.py would otherwise size an epoch
    by the smaller real share of a mixed batch)."""
    from data.protocol_lists import read_protocol

    return math.ceil(len(read_protocol(train_list(paths, protocol, generated=False))) / batch)


def run_settings(row: Row, seed: int, preset: Preset, args: argparse.Namespace) -> Dict[str, object]:
    """What one depth-network run depends on (a finished run with other settings is not reused)."""
    keys = ("image_size", "batch", "lr", "epochs", "step_size", "real_ratio", "generated_weight", "colour_jitter")
    # (max_iters_per_epoch changes the training too, but is left out while 0 so that runs made before it existed
    # are still recognised)
    s: Dict[str, object] = {"row": row.key, "model": row.model, "generated": row.generated, "seed": seed,
                            "protocol": args.protocol, "train_args": args.train_args,
                            **{k: getattr(preset, k) for k in keys}}
    if preset.max_iters_per_epoch:
        s["max_iters_per_epoch"] = preset.max_iters_per_epoch
    if row.generated:  # the generated pairs depend on the generator and the sampler
        s.update(gen_steps=preset.gen_steps, gen_image_size=preset.gen_image_size, gen_batch=preset.gen_batch,
                 gen_face_scale=preset.gen_face_scale, gen_max_channels=preset.gen_max_channels, pairs=preset.pairs,
                 generator_args=args.generator_args,
                 sample_args=args.sample_args)
    return s


def finished(folder: Path, settings: Dict[str, object], overwrite: bool) -> bool:
    """True when ``folder`` holds a finished run with these settings; a finished run with other settings
    stops the experiment (checked for every run before anything starts, so it fails at once)."""
    marker = folder / "run.json"
    if overwrite or not marker.is_file():
        return False
    old = json.loads(marker.read_text(encoding="utf-8")).get("settings", {})
    if old == settings:
        return True
    diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
    raise SystemExit(f"error: {folder} was made with other settings (was, now) {diff}; use another --out or "
                     "--overwrite-runs")


def run_folder(paths: Paths, row: Row, seed: int) -> Path:
    return paths.out / "runs" / f"{row.key}_seed{seed}"


def depth_run(run: Runner, paths: Paths, row: Row, seed: int, preset: Preset, args: argparse.Namespace) -> Path:
    """Train and test one (row, seed); returns its run folder. Skipped when finished with these settings."""
    folder = run_folder(paths, row, seed)
    marker = folder / "run.json"
    settings = run_settings(row, seed, preset, args)
    if finished(folder, settings, args.overwrite_runs):
        log.info("[%s seed %d] finished earlier: %s", row.key, seed, folder)
        return folder
    if args.overwrite_runs and folder.exists() and not run.dry_run:
        import shutil
        shutil.rmtree(folder)
    py, start = sys.executable, time.time()
    name = f"{row.key}_seed{seed}"
    iters = iters_per_epoch(paths, args.protocol, preset.batch) if not run.dry_run else 1
    if preset.max_iters_per_epoch:
        iters = min(iters, preset.max_iters_per_epoch)
    run(f"{name}_train", [py, "-m", "DUM.train", "--crop-root", paths.crop, "--protocol", args.protocol,
                          "--model", row.model, "--train-list", train_list(paths, args.protocol, row.generated),
                          "--output-dir", folder / "train", "--image-size", preset.image_size,
                          "--map-size", map_size(preset), "--batch-size", preset.batch, "--lr", preset.lr,
                          "--epochs", preset.epochs, "--iters-per-epoch", iters, "--step-size", preset.step_size,
                          "--real-ratio", preset.real_ratio, "--generated-weight", preset.generated_weight,
                          "--colour-jitter", str(preset.colour_jitter).lower(),
                          # evaluate once, at the end, on Dev only: Test is scored by DUM.test below
                          "--eval-start", preset.epochs, "--eval-every", preset.epochs, "--eval-test", "false",
                          "--eval-plots", "false", "--workers", 0, "--seed", seed, "--device", args.device,
                          "--resume", "auto", *shlex.split(args.train_args)], "depth_train")
    run(f"{name}_test", [py, "-m", "DUM.test", "--checkpoint", folder / "train" / "checkpoint.pth",
                         "--crop-root", paths.crop, "--protocol", args.protocol, "--output-dir", folder / "test",
                         "--plots", str(preset.plots).lower(), "--workers", 0, "--device", args.device], "depth_test")
    if not run.dry_run:
        atomic_write_json(marker, {"settings": settings, "seconds": round(time.time() - start, 1)})
    return folder


# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------

# (key in the ISO result, column title): the four numbers.
COLUMNS = (("acer", "Test ACER (ISO)"), ("acer_pooled", "Test ACER pooled"), ("auc", "Test AUC"),
           ("eer_dev", "Dev EER"))


def read_run(folder: Path) -> Dict[str, object]:
    """One run's ISO result (mean score) and how many listed videos it rests on."""
    report = json.loads((folder / "test" / "report.json").read_text(encoding="utf-8"))
    if "error" in report:
        raise StepFailed(f"{folder / 'test' / 'report.json'}: no metrics ({report['error']})")
    score = report.get("score", "mean")
    return {"iso": report["metrics"]["iso"], "coverage": report["coverage"], "score": score,
            "distinct_test_scores": distinct_scores(folder / "test" / f"test_scores_{score}.txt")}


def distinct_scores(path: Path) -> int:
    """How many different scores a run gave its Test videos: 1 means the network's output no longer depends
    on its input (e.g. a final ReLU that only outputs zeros), and its metrics are those of a coin."""
    values = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2:
            values.add(round(float(parts[1]), 6))
    return len(values)


def summarise(folders: Dict[str, List[Path]]) -> Dict[str, object]:
    """Mean and std over seeds of every column, per row (DUM.metrics.aggregate: sample std)."""
    from DUM.metrics import aggregate

    rows = {}
    for key, runs in folders.items():
        results = [read_run(f) for f in runs]
        agg = aggregate([r["iso"] for r in results], ddof=1)
        row = ROWS[key]
        rows[key] = {"network": row.network, "model": row.model, "data": row.data, "seeds": len(runs),
                     "runs": [str(f) for f in runs], "coverage": [r["coverage"] for r in results],
                     "collapsed": sum(r["distinct_test_scores"] <= 1 for r in results),
                     **{k: agg["metrics"][k] for k, _ in COLUMNS}}
    return rows


def _cell(m: Dict[str, object], percent: bool) -> str:
    scale = 100 if percent else 1
    fmt = "{:.1f} ± {:.1f}" if percent else "{:.3f} ± {:.3f}"
    return fmt.format(scale * m["mean"], scale * m["std"])


def markdown_table(rows: Dict[str, Dict[str, object]]) -> str:
    head = "| row | network | training data | seeds | " + " | ".join(
        t + (" %" if k != "auc" else "") for k, t in COLUMNS) + " | constant output |"
    lines = [head, "|" + "---|" * (5 + len(COLUMNS))]
    for key, r in rows.items():
        cells = [_cell(r[k], k != "auc") for k, _ in COLUMNS]
        lines.append(f"| {key} | {r['network']} | {r['data']} | {r['seeds']} | " + " | ".join(cells)
                     + f" | {r.get('collapsed', 0)} of {r['seeds']} |")
    return "\n".join(lines)


def plot(rows: Dict[str, Dict[str, object]], path: Path, title: str) -> None:
    """One panel per column: the mean over seeds as a bar, each seed as a dot."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(rows)
    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(4.2 * len(COLUMNS), 4.6))
    for ax, (k, name) in zip(axes, COLUMNS):
        scale = 1 if k == "auc" else 100
        means = [scale * rows[r][k]["mean"] for r in keys]
        stds = [scale * rows[r][k]["std"] for r in keys]
        ax.bar(range(len(keys)), means, yerr=stds, capsize=5, color=["#8da0cb", "#66c2a5", "#fc8d62", "#e78ac3"][
            :len(keys)], alpha=0.8)
        for i, r in enumerate(keys):
            vals = [scale * v for v in rows[r][k]["values"]]
            ax.scatter([i] * len(vals), vals, color="black", s=14, zorder=3)
            if rows[r].get("collapsed"):  # say on the bar that these numbers are a coin's
                ax.text(i, means[i] * 0.5, f"constant\noutput\n{rows[r]['collapsed']} of {rows[r]['seeds']}",
                        ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels([_tick(r, rows[r]) for r in keys], fontsize=8)
        ax.set_title(name + ("" if k == "auc" else " (%)"), fontsize=11)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=110)
    plt.close(fig)


def _tick(key: str, row: Dict[str, object]) -> str:
    """A bar's label in short lines: the row, the network without its note, the training data."""
    network = str(row["network"]).split(" (")[0]
    data = str(row["data"]).replace(" + ", " +\n")
    return f"{key}\n{network}\n{data}"


def write_results(paths: Paths, preset: Preset, args: argparse.Namespace, rows: Dict[str, Dict[str, object]],
                  runner: Runner, started: float) -> Dict[str, object]:
    generated = _generated_summary(paths, args.protocol)
    if generated:
        from experiments.generated_pairs import image_statistics, pair_consistency
        generated["pair_consistency"] = pair_consistency(paths.crop, args.protocol)
        generated["image_statistics"] = image_statistics(paths.crop, args.protocol)
    result = {"rows": rows, "preset": dataclasses.asdict(preset), "quick": args.quick,
              "dataset": str(paths.oulu), "synthetic": args.oulu_root is None, "protocol": args.protocol,
              "generated": generated, "seconds": {k: round(v, 1) for k, v in runner.seconds.items()},
              "total_seconds": round(time.time() - started, 1), "command": " ".join(map(shlex.quote, sys.argv)),
              "metric_notes": "mean score (average predicted depth); threshold at the Dev EER; ACER = ISO/IEC 30107-3 "
                              "(worst attack instrument); ACER pooled = the original code's rule; std over seeds "
                              "is the sample std (n - 1)"}
    atomic_write_json(paths.out / "ablation.json", result)
    lines = [f"# Ablation ({'quick smoke test: the numbers mean nothing' if args.quick else 'miniature'})", "",
             f"Command: `{result['command']}`", "",
             markdown_table(rows), "",
             "Mean ± sample std over seeds. Score: mean predicted depth; threshold: Dev EER; ACER (ISO) takes the "
             "worst attack instrument, ACER pooled pools them as the original code does.", ""]
    lines.append(coverage_line(rows))
    if any(r.get("collapsed") for r in rows.values()):
        lines.append("Constant output: runs whose Test videos all got the same score (the network's output no longer "
                     "depends on the face; for plain CDCN a final ReLU stuck at zero). Their numbers are chance.")
    if generated:
        lines.append(f"Generated pairs: {generated.get('pairs')}, depth labels of the generated live faces: "
                     f"{generated.get('depth_maps_primary')} from the face mesh, {generated.get('depth_maps_fallback')} "
                     "from the fallback.")
        pc = generated["pair_consistency"]
        if "ratio" in pc:
            lines.append(f"Pair consistency (no identity network): a live image differs from its own spoof partner by "
                         f"{pc['paired_l1']:.1f} grey levels on average, from another pair's spoof by "
                         f"{pc['unpaired_l1']:.1f} (ratio {pc['ratio']:.2f}; 1 = unrelated), over {pc['pairs']} pairs.")
    if generated.get("image_statistics"):
        lines += ["", statistics_table(generated["image_statistics"])]
    lines += ["", "Time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in result["seconds"].items())
              + f"; total {result['total_seconds'] / 60:.1f} min (this invocation).", ""]
    atomic_write_text(paths.out / "ablation.md", "\n".join(lines))
    plot(rows, paths.out / "ablation.png", f"DSDG ablation, {'synthetic data' if result['synthetic'] else paths.oulu}"
         f" ({len(preset.seeds)} seed(s) a row)" + (" - quick smoke test, numbers mean nothing" if args.quick else ""))
    return result


def statistics_table(stats: Dict[str, Dict[str, float]]) -> str:
    """The training crops' image statistics (experiments.generated_pairs.image_statistics) as Markdown."""
    lines = ["| training crops | images | sharpness (Laplacian variance) | saturation | contrast | brightness |",
             "|---|---|---|---|---|---|"]
    for name, s in stats.items():
        if s.get("images"):
            lines.append(f"| {name} | {s['images']} | {s['sharpness']:.0f} | {s['saturation']:.1f} | "
                         f"{s['contrast']:.1f} | {s['brightness']:.1f} |")
        else:
            lines.append(f"| {name} | 0 | | | | |")
    return "\n".join(lines)


def coverage_line(rows: Dict[str, Dict[str, object]]) -> str:
    """How many of the listed Dev and Test videos the runs were scored on (the fewest over all runs)."""
    parts = []
    for split in ("dev", "test"):
        cov = [c[split] for r in rows.values() for c in r["coverage"]]
        scored, listed = min(c["scored"] for c in cov), max(c["listed"] for c in cov)
        parts.append(f"{scored} of {listed} listed {split.capitalize()} videos scored"
                     + ("" if scored == listed else " (see each run's test/missing_videos.txt)"))
    return "Every run: " + "; ".join(parts) + "."


def _generated_summary(paths: Paths, protocol: str) -> Dict[str, object]:
    from data.protocol_lists import parse_protocol_name, protocol_tag

    manifest = paths.crop / f"generated_p{protocol_tag(*parse_protocol_name(protocol))}.json"
    if not manifest.is_file():
        return {}
    return json.loads(manifest.read_text(encoding="utf-8")).get("summary") or {}


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def main(args: argparse.Namespace) -> Optional[Dict[str, object]]:
    from misc.logger import setup_logging

    args.out.mkdir(parents=True, exist_ok=True)
    setup_logging(args.out / "ablation.log")
    preset = resolve_preset(args)
    synthetic = args.oulu_root is None and args.shared_data is None
    if args.prep_root is not None and (args.oulu_root is None or args.shared_data is not None):
        raise SystemExit("error: --prep-root needs --oulu-root (the dataset it was prepared from) and no --shared-data")
    paths = Paths.of(args.out.resolve(), args.oulu_root, args.shared_data, args.prep_root)
    if args.prep_root is not None and not (paths.prep / "train_images").is_dir():
        raise SystemExit(f"error: --prep-root {args.prep_root}: no train_images/ in it (run stages 1-3 first)")
    if args.shared_data is not None and args.oulu_root is None and not paths.oulu.is_dir():
        raise SystemExit(f"error: --shared-data {args.shared_data}: {paths.oulu} not found")
    run = Runner(args.out, args.dry_run)
    started = time.time()
    log.info("ablation rows %s, seeds %s, preset %s", " ".join(args.rows), list(preset.seeds), preset)
    for r in args.rows:  # a finished run with other settings stops here, before any stage runs
        for seed in preset.seeds:
            finished(run_folder(paths, ROWS[r], seed), run_settings(ROWS[r], seed, preset, args), args.overwrite_runs)
    try:
        if args.shared_data is None:
            prepare_data(run, paths, preset, args, synthetic)
        else:  # stages 1-4 are shared; the crops (cheap) and the generated pairs are this folder's own
            _crop_only(run, paths, preset, args)
        if any(ROWS[r].generated for r in args.rows):
            train_and_sample(run, paths, preset, args)
            if not args.dry_run:
                from experiments.generated_pairs import pairs_vs_real
                pairs_vs_real(paths.crop, args.protocol, args.out / "pairs_vs_real.png")
        folders = {r: [depth_run(run, paths, ROWS[r], s, preset, args) for s in preset.seeds] for r in args.rows}
    except StepFailed as e:
        raise SystemExit(f"error: {e}") from None
    if args.dry_run:
        return None
    rows = summarise({k: folders[k] for k in sorted(folders)})  # the table in row order, whatever the run order
    result = write_results(paths, preset, args, rows, run, started)
    print((args.out / "ablation.md").read_text(encoding="utf-8"))
    print(f"table: {args.out / 'ablation.md'}  plot: {args.out / 'ablation.png'}  runs: {args.out / 'runs'}")
    return result


def _crop_only(run: Runner, paths: Paths, preset: Preset, args: argparse.Namespace) -> None:
    run("crop", [sys.executable, "-m", "DUM.make_dataset.crop_dataset", "--prep-root", paths.prep,
                 "--crop-root", paths.crop, "--oulu-root", paths.oulu, "--image-size", preset.image_size,
                 "--map-size", map_size(preset), "--workers", args.workers], "data")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    main(parser.parse_args())
