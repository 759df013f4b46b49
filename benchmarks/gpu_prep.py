"""The GPU check's inputs, made on the CPU machine: a tiny crop root and a tiny generator list.

    python -m benchmarks.gpu_prep --out benchmarks/gpu_inputs          # about 10 s, well under 1 MB
    python -m benchmarks.gpu_prep --out benchmarks/gpu_inputs --boxes mtcnn --depth mesh   # the detectors

The GPU machine has torch but not TensorFlow (MTCNN) nor MediaPipe (depth maps) and reaches no network,
so ``benchmarks/gpu_check.sh`` cannot run the data stages there: this script runs them here, on a
synthetic OULU-NPU-shaped dataset (``data/synthetic.py``: 3 people, one per split, 1 phone, 3
sessions, ``--frames`` frames per video), through the stages' own entry points:

1. ``data.synthetic`` renders the videos and Protocol_1/2 lists;
2. ``data.extract_frame`` extracts the frames;
3. face boxes: ``--boxes nominal`` (default) writes the box the renderer aims every face at (centred
   a little above the middle of the frame, 40 % of its height tall; the synthetic faces move a few
   pixels around it), so no detector is needed and the step takes no time; ``--boxes mtcnn`` runs
   ``data.detect_faces`` (TensorFlow, about half a minute more);
4. ``data.depth`` (``--depth mask``, default: an ellipse in the box; ``mesh``: MediaPipe's face mesh);
5. ``data.make_train_list``: the generator's list of the Train videos (every boxed frame);
6. ``DUM/make_dataset/crop_dataset.py``: face crops and depth labels, Train/Dev/Test of protocol 1.

What the GPU needs is then kept and the rest deleted (the videos, the Dev/Test frames of the prepared
root): ``<out>/crop`` (the crop root: ``{train,dev,test}_images``, ``train_depth``, ``protocols``) and
``<out>/prep`` (``train_images``, ``train_bbox``, ``train_list/train_list_oulu_p1.txt``), with
``<out>/manifest.json`` (written last) listing every file and its size. :func:`check_inputs` verifies
a folder against its manifest; the GPU check does so before it starts. The inputs exercise code paths
(data loading, training, scoring, export on CUDA); what the networks learn from them means nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from misc.io import atomic_write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "gpu_inputs"
FORMAT = "dsdg-gpu-inputs/1"
MANIFEST = "manifest.json"
PROTOCOL = "1"
# What the GPU check reads, relative to the inputs folder.
CROP, PREP = "crop", "prep"
GENERATOR_LIST = f"{PREP}/train_list/train_list_oulu_p1.txt"
CROP_LISTS = tuple(f"{CROP}/protocols/Protocol_{PROTOCOL}/{s}.txt" for s in ("Train", "Dev", "Test"))


class GpuInputsError(RuntimeError):
    """The prepared inputs are missing or incomplete; the message names the folder and what is wrong."""


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("GPU check inputs (made on the CPU machine)", add_help=False)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="folder to write (replaced when it holds an earlier preparation). Default: "
                        "benchmarks/gpu_inputs (ignored by git: name it in the device run's carry)")
    p.add_argument("--frames", type=int, default=2, help="frames per synthetic video (45 videos). Default: %(default)s")
    p.add_argument("--size", default="160x120",
                   help="synthetic frame size WxH (the faces are about 40 %% of the height). Default: %(default)s")
    p.add_argument("--image-size", type=int, default=64,
                   help="face crop size in pixels (the map is 1/8 of it, as 256 -> 32). Default: %(default)s")
    p.add_argument("--boxes", choices=("nominal", "mtcnn"), default="nominal",
                   help="face boxes: nominal (where the renderer puts the face; no detector) or mtcnn "
                        "(data/detect_faces.py, needs TensorFlow). Default: %(default)s")
    p.add_argument("--depth", choices=("mask", "mesh"), default="mask",
                   help="depth backend of data/depth.py (mesh needs MediaPipe). Default: %(default)s")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic dataset. Default: %(default)s")
    return p


def _quietly(fn, *args):
    """Run a stage's main() with its log lines and summary kept out of this script's output."""
    root_logger = logging.getLogger()
    handlers, level = list(root_logger.handlers), root_logger.level
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return fn(*args)
        finally:
            for h in list(root_logger.handlers):  # stages add their own handlers: drop them again
                if h not in handlers:
                    root_logger.removeHandler(h)
            root_logger.setLevel(level)


def _stage(module, argv: List[str]):
    """``module.main(module.get_args_parser().parse_args(argv))``; fails when the stage reports failures."""
    args = module.get_args_parser().parse_args([str(a) for a in argv])
    summary = _quietly(module.main, args)
    if summary.failures:  # data.prep_common.Summary
        raise GpuInputsError(f"{module.__name__}: {len(summary.failures)} failure(s): "
                             + "; ".join(summary.failures[:3]))
    return summary


def nominal_boxes(prep: Path) -> int:
    """A box file for every extracted frame: the renderer's face placement (data/synthetic.py puts the
    face centre at 50 % / 46 % of the frame, its height at 36-50 % of the frame's, width about 0.8 of
    the height). Returns the number written."""
    import cv2

    from data.box_files import FaceBox, write_box

    n = 0
    for frame in sorted(prep.glob("*_images/*/*.jpg")):
        h, w = cv2.imread(str(frame), cv2.IMREAD_REDUCED_GRAYSCALE_2).shape[:2]
        h, w = 2 * h, 2 * w
        bh, bw = int(round(0.42 * h)), int(round(0.34 * h))
        box = FaceBox(int(round(0.5 * w - bw / 2)), int(round(0.46 * h - bh / 2)), bw, bh, 1.0, None)
        split = frame.parent.parent.name.split("_")[0]
        write_box(prep / f"{split}_bbox" / frame.parent.name / (frame.stem + ".dat"), box)
        n += 1
    return n


def prepare(out: Path, frames: int = 2, size: str = "160x120", image_size: int = 64, boxes: str = "nominal",
            depth: str = "mask", seed: int = 0, log=print) -> dict:
    """Make the inputs under ``out`` (see the module docstring); returns the manifest."""
    from data import depth as depth_stage
    from data import extract_frame, make_train_list, synthetic
    from DUM.make_dataset import crop_dataset

    if image_size % 8 or image_size < 16:
        raise ValueError(f"--image-size must be a multiple of 8 and at least 16, got {image_size}")
    out = Path(out)
    if out.exists():
        if not (out / MANIFEST).is_file() and any(out.iterdir()):
            raise GpuInputsError(f"{out}: exists and is no earlier preparation (no {MANIFEST}); "
                                 "choose an empty or new folder")
        shutil.rmtree(out)
    t0 = time.perf_counter()
    work = out / "sources"
    oulu, prep, crop = work / "oulu", out / PREP, out / CROP
    os.environ.setdefault("DSDG_NO_PROGRESS", "1")
    w, h = synthetic.parse_size(size)
    synthetic.make_dataset(oulu, users=3, phones=1, sessions=3, frames=frames, size=(w, h), seed=seed, workers=1,
                           show_progress=False)
    log(f"  synthetic dataset: 45 videos of {frames} frames, {w}x{h} ({time.perf_counter() - t0:.1f} s)")
    _stage(extract_frame, ["--input", oulu, "--out", prep, "--splits", "train", "dev", "test"])
    if boxes == "nominal":
        n = nominal_boxes(prep)
        log(f"  nominal face boxes for {n} frames")
    else:
        _stage(__import__("data.detect_faces", fromlist=["main"]), ["--root", prep, "--detect-max-side", "160"])
        log(f"  MTCNN face boxes ({time.perf_counter() - t0:.1f} s)")
    _stage(depth_stage, ["--root", prep, "--backend", depth])
    _stage(make_train_list, ["--root", prep, "--oulu-root", oulu, "--protocol", PROTOCOL, "--frames-per-video", "0"])
    _stage(crop_dataset, ["--prep-root", prep, "--crop-root", crop, "--oulu-root", oulu, "--image-size", image_size,
                          "--map-size", image_size // 8])
    # Only what the GPU check reads travels: the crop root, and the generator's Train frames, boxes, list.
    shutil.rmtree(work)
    for p in list(prep.iterdir()):
        if p.name not in ("train_images", "train_bbox", "train_list"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    manifest = {"format": FORMAT, "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "command": "python -m benchmarks.gpu_prep " + " ".join(
                    ["--frames", str(frames), "--size", size, "--image-size", str(image_size), "--boxes", boxes,
                     "--depth", depth, "--seed", str(seed)]),
                "image_size": image_size, "map_size": image_size // 8, "protocol": PROTOCOL, "boxes": boxes,
                "depth": depth, "generator_list": GENERATOR_LIST, "crop_lists": list(CROP_LISTS),
                "counts": _counts(out), "files": _file_sizes(out)}
    manifest["bytes"] = sum(manifest["files"].values())
    manifest["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(out / MANIFEST, manifest)
    log(f"  wrote {out}: {len(manifest['files'])} files, {manifest['bytes'] / 2 ** 20:.2f} MiB "
        f"({manifest['seconds']:.1f} s)")
    return manifest


def _file_sizes(out: Path) -> Dict[str, int]:
    return {p.relative_to(out).as_posix(): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}


def _counts(out: Path) -> Dict[str, int]:
    lines = lambda p: sum(1 for ln in (out / p).read_text().splitlines() if ln.strip())  # noqa: E731
    counts = {f"crops_{s}": len(list((out / CROP / f"{s}_images").glob("*/*.jpg"))) for s in ("train", "dev", "test")}
    counts["maps_train"] = len(list((out / CROP / "train_depth").glob("*/*.jpg")))
    counts.update({f"videos_{Path(p).stem.lower()}": lines(p) for p in CROP_LISTS})
    counts["generator_list_lines"] = lines(GENERATOR_LIST)
    return counts


def check_inputs(folder: Path) -> dict:
    """The manifest of a prepared folder after checking that every file it lists is there with its size
    and that every split has crops; GpuInputsError naming the folder and the problem otherwise."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise GpuInputsError(f"{folder}: no {MANIFEST}: prepare the inputs first on a CPU machine with "
                             f"`python -m benchmarks.gpu_prep --out {folder}` and carry the folder along")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as e:
        raise GpuInputsError(f"{path}: not valid JSON ({e})") from None
    if manifest.get("format") != FORMAT:
        raise GpuInputsError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}; prepare again")
    missing = [f for f, size in manifest["files"].items()
               if not (folder / f).is_file() or (folder / f).stat().st_size != size]
    if missing:
        raise GpuInputsError(f"{folder}: {len(missing)} of the {len(manifest['files'])} listed files are missing or "
                             f"changed, e.g. {', '.join(missing[:3])}; prepare again")
    empty = [k for k, v in manifest["counts"].items() if not v]
    if empty:
        raise GpuInputsError(f"{path}: nothing in {', '.join(empty)}; prepare again")
    return manifest


def main(args: argparse.Namespace, log=print) -> dict:
    return prepare(args.out, args.frames, args.size, args.image_size, args.boxes, args.depth, args.seed, log)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    try:
        main(parser.parse_args())
    except (GpuInputsError, ValueError) as e:
        sys.exit(f"error: {e}")
