"""Sample paired spoof/live faces from a trained DSDG generator, with depth maps, for DUM training.

Each pair decodes ``[z_pattern, z_id, z_id]`` with z_pattern, z_id ~ N(0, I): one new identity shown
as a live face and as a spoof face with a random spoof pattern. The output goes straight into the
crop root the DUM trainer reads (``--crop-root CROP_ROOT``)::

    train_images/p<tag>_0_<k>/<i>_scene.jpg     spoof image i of folder k   (i = 1..pairs-per-folder)
    train_images/p<tag>_1_<k>/<i>_scene.jpg     its live partner
    train_depth/p<tag>_1_<k>/<i>_depth1D.jpg    depth map of the live image, --map-size square
    protocols/Protocol_N/Train_g.txt            Train.txt rows (from --protocols-dir), then '1,p<tag>_1_<k>'
                                                and '0,p<tag>_0_<k>' (Train_<sub>_g.txt for protocols 3, 4)
    generated_p<tag>.json                       settings and counts of the run

Depth maps come from the data-preparation depth backend (``--depth-backend``, default ``mesh``) run
on the whole generated live image. When it finds no face (always the case for an untrained
generator, sometimes for a trained one) the ``--fallback-backend`` makes the map, so every live
image has a map; ``--fallback-backend none`` stops instead. The default fallback, ``ellipsoid``
(``data.depth.EllipsoidDepth``), is a smooth face-shaped height field placed, sized and scaled so
that its mean grey level matches that of mesh maps measured on real faces cropped as the generator's
training faces are (122 against 123 at 32 x 32; the flat ``mask`` ellipse at 255 gives 202, far
brighter than any real live label). The log, the summary and ``generated_p<tag>.json`` say how
many labels came from each backend; many fallbacks mean the generator does not draw faces yet.

Images and maps are written as JPEG of quality 75 (``--jpeg-quality``), PIL's default, through which
the original saved its generated images.

Rerunning is safe: folder k is drawn from a seed derived from (--seed, k), complete folders are
skipped, an interrupted folder is redone with the same images, and ``--overwrite`` regenerates all.
A rerun with different settings (seed, checkpoint, sizes) over existing output stops unless
``--overwrite`` is given.
"""
from __future__ import annotations

import argparse
import json
import logging
import pickle
import re
from pathlib import Path
from typing import Dict, Optional, Tuple

import cv2
import numpy as np
import torch

from data.protocol_lists import format_protocol, parse_protocol_name, protocol_path, protocol_tag, read_protocol
from misc.checkpoint import CheckpointError, load_checkpoint, load_state_dict_strict, strip_prefix
from misc.cli import add_renamed_argument
from misc.device import add_device_argument, resolve_device
from misc.io import atomic_write_image, atomic_write_json, atomic_write_text, remove_stale_temporaries
from misc.logger import log_run_header, setup_logging
from misc.progress import progress
from misc.run_dir import kept_checkpoint_file
from networks.engine import sample_pairs, to_uint8
from networks.generator import Decoder

log = logging.getLogger("dsdg.generated")

ORIGINAL_CHECKPOINT_HELP = (
    "The original DSDG code saved checkpoints as pickled DataParallel modules ({'epoch', 'model': <module>}), "
    "which cannot be loaded safely and are not supported. Convert one where the original code is importable "
    "and the file is trusted: torch.save(torch.load(f, weights_only=False)['model'].state_dict(), "
    "'netG_state_dict.pth'), then pass that file with --image-size and --hdim.")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("DSDG paired sampling", add_help=False)
    g = p.add_argument_group("generator")
    g.add_argument("--checkpoint", type=kept_checkpoint_file, required=True,
                   help="generator checkpoint written by train_generator.py (its decoder size and latent size are "
                        "read from it), or its run directory (then its newest checkpoints/NNNN.pth), or a plain decoder "
                        "state_dict file (then --image-size/--hdim apply).")
    g.add_argument("--image-size", type=int, default=256,
                   help="decoder output size, only for plain state_dict files (paper: 256). Default: %(default)s.")
    g.add_argument("--hdim", type=int, default=128,
                   help="latent size, only for plain state_dict files (paper: 128). Default: %(default)s.")
    g = p.add_argument_group("output")
    add_renamed_argument(g, "--crop-root", "--out-root", type=Path, required=True,
                         help="crop root the DUM trainer reads (CROP_ROOT); images go to train_images/, maps to "
                              "train_depth/, the extended protocol to protocols/.")
    g.add_argument("--protocol", default="1",
                   help="protocol the data is for: OULU-NPU 1, 2, 3_k or 4_k, or an adapted dataset's siw_1, "
                        "siw_2_k, siw_3_k, casia, replay; names the folders p<tag>_* and the list extended (paper: 1). "
                        "Default: %(default)s.")
    g.add_argument("--protocols-dir", type=Path, default=None,
                   help="folder with Protocol_N/Train[_k].txt to extend (the extended list is always written to "
                        "<crop-root>/protocols). Default: <crop-root>/protocols.")
    g.add_argument("--num-pairs", type=int, default=20000,
                   help="pairs to generate (original script: 20000; the released Train_g.txt lists 35000). "
                        "Default: %(default)s.")
    g.add_argument("--pairs-per-folder", type=int, default=100,
                   help="pairs per folder, i.e. per generated 'video' row (paper: 100). Default: %(default)s.")
    g.add_argument("--map-size", type=int, default=32,
                   help="side of the depth maps written, the DUM map size (paper: 32). Default: %(default)s.")
    g.add_argument("--jpeg-quality", type=int, default=75,
                   help="JPEG quality of images and maps (the original saved through PIL's default, 75). "
                        "Default: %(default)s.")
    g.add_argument("--overwrite", action="store_true",
                   help="regenerate every folder, even complete ones made with other settings.")
    g = p.add_argument_group("depth and run")
    g.add_argument("--depth-backend", default="mesh",
                   help="data/depth.py backend for the live images' depth maps (paper: PRNet; here 'mesh', "
                        "MediaPipe face mesh). Default: %(default)s.")
    g.add_argument("--fallback-backend", default="ellipsoid",
                   help="backend used when --depth-backend finds no face in a generated live image: ellipsoid (a "
                        "smooth face-shaped height field with the mean grey level of mesh maps of real faces), mask "
                        "(a flat ellipse at 255, much brighter), or 'none' to stop with an error instead. "
                        "Default: %(default)s.")
    g.add_argument("--seed", type=int, default=0, help="sampling seed; folder k uses a seed derived from "
                                                       "(seed, k). Default: %(default)s.")
    g.add_argument("--batch-size", type=int, default=100, help="pairs decoded at once. Default: %(default)s.")
    add_device_argument(g)
    return p


# ----------------------------------------------------------------------------------------------
# Decoder loading
# ----------------------------------------------------------------------------------------------

def load_decoder(path: Path, image_size: int = 256, hdim: int = 128) -> Tuple[Decoder, Dict[str, object]]:
    """The trained decoder from a train_generator.py checkpoint or a plain state_dict; and where it came from."""
    try:
        state = load_checkpoint(path, kind="generator")
    except CheckpointError as ours:
        if not path.is_file():
            raise
        return _load_plain_decoder(path, image_size, hdim, ours)
    saved = state.get("args", {})
    # Checkpoints made before --max-channels existed have the original's 512.
    decoder = Decoder(int(saved.get("hdim", hdim)), int(saved.get("image_size", image_size)),
                      int(saved.get("max_channels", 512)))
    load_state_dict_strict(decoder, state["models"]["netG"], f"{path} [netG]")
    return decoder, {"checkpoint": str(path), "epoch": state.get("epoch"), "iteration": state.get("iteration")}


def _load_plain_decoder(path: Path, image_size: int, hdim: int, why: Exception):
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: not a train_generator.py checkpoint and not a plain state_dict. "
                              + ORIGINAL_CHECKPOINT_HELP) from None
    except Exception:
        raise why from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not (isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())):
        raise CheckpointError(f"{path}: neither a train_generator.py checkpoint nor a decoder state_dict. "
                              + ORIGINAL_CHECKPOINT_HELP)
    decoder = Decoder(hdim, image_size)
    load_state_dict_strict(decoder, strip_prefix(obj, "module."), str(path))
    return decoder, {"checkpoint": str(path), "plain_state_dict": True}


# ----------------------------------------------------------------------------------------------
# Folder bookkeeping
# ----------------------------------------------------------------------------------------------

def folder_names(tag: str, k: int) -> Tuple[str, str]:
    """(spoof, live) folder names of folder k: ``p<tag>_0_<k>``, ``p<tag>_1_<k>``."""
    return f"p{tag}_0_{k}", f"p{tag}_1_{k}"


def folder_sizes(num_pairs: int, per_folder: int) -> list[int]:
    """Pairs in each folder: full folders, then the remainder."""
    full, rest = divmod(num_pairs, per_folder)
    return [per_folder] * full + ([rest] if rest else [])


def folder_seed(seed: int, k: int) -> int:
    """A seed for folder k that does not depend on which other folders were generated."""
    return int(np.random.SeedSequence([seed, k]).generate_state(1, dtype=np.uint64)[0] % (2**63))


_INDEXED = re.compile(r"^(\d+)_(scene|depth1D)\.jpg$")


def _expected_files(folder: Path, suffix: str, n: int) -> list[Path]:
    return [folder / f"{i}_{suffix}.jpg" for i in range(1, n + 1)]


def is_complete(dirs: Tuple[Path, Path, Path], n: int) -> bool:
    spoof_dir, live_dir, depth_dir = dirs
    return all(p.is_file() for d, s in ((spoof_dir, "scene"), (live_dir, "scene"), (depth_dir, "depth1D"))
               for p in _expected_files(d, s, n))


def clear_extra_files(folder: Path, n: int, overwrite: bool) -> None:
    """Remove temporaries, and our indexed files beyond n (or all of them with --overwrite)."""
    if not folder.is_dir():
        return
    remove_stale_temporaries(folder)
    for p in folder.iterdir():
        m = _INDEXED.match(p.name)
        if m and (overwrite or int(m.group(1)) > n):
            p.unlink()


# ----------------------------------------------------------------------------------------------
# Depth
# ----------------------------------------------------------------------------------------------

class DepthMaker:
    """Primary depth backend with an optional fallback for images where it finds no face."""

    def __init__(self, primary: str, fallback: Optional[str], map_size: int):
        from data.depth import make_depth_backend  # imports MediaPipe: only when maps are needed
        self._make = make_depth_backend
        self.primary_name, self.fallback_name = primary, fallback
        self.primary = make_depth_backend(primary)
        self.fallback = None
        self.map_size = map_size
        self.counts = {"primary": 0, "fallback": 0}

    def __call__(self, bgr: np.ndarray, where: str) -> np.ndarray:
        depth = self.primary(bgr, None)
        if depth is not None:
            self.counts["primary"] += 1
        else:
            if self.fallback_name is None:
                raise RuntimeError(f"{where}: depth backend '{self.primary_name}' found no face in this generated "
                                   "live image and --fallback-backend is 'none'")
            if self.fallback is None:
                self.fallback = self._make(self.fallback_name)
            depth = self.fallback(bgr, None)
            if depth is None:
                raise RuntimeError(f"{where}: neither '{self.primary_name}' nor the fallback "
                                   f"'{self.fallback_name}' produced a depth map")
            self.counts["fallback"] += 1
        return cv2.resize(depth, (self.map_size, self.map_size), interpolation=cv2.INTER_LINEAR)

    def close(self) -> None:
        for b in (self.primary, self.fallback):
            if b is not None:
                b.close()


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def settings_of(args: argparse.Namespace, image_size: int, hdim: int) -> Dict[str, object]:
    """What the images of a folder depend on; a rerun over existing output must match it."""
    return {"checkpoint": str(Path(args.checkpoint).resolve()), "seed": args.seed,
            "pairs_per_folder": args.pairs_per_folder, "image_size": image_size, "hdim": hdim,
            "map_size": args.map_size, "depth_backend": args.depth_backend,
            "fallback_backend": args.fallback_backend, "jpeg_quality": args.jpeg_quality}


def check_previous_run(manifest: Path, settings: Dict[str, object], overwrite: bool) -> None:
    if overwrite or not manifest.is_file():
        return
    try:
        old = json.loads(manifest.read_text(encoding="utf-8")).get("settings", {})
    except ValueError:
        return  # unreadable manifest: folders are still checked one by one
    diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
    if diff:
        lines = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise SystemExit(f"error: {manifest.parent} already holds generated data made with other settings ({lines}); "
                         "pass --overwrite to replace it, or choose another --crop-root")


def write_protocol(args: argparse.Namespace, tag: str, num_folders: int) -> Path:
    """Train[_k].txt followed by the generated rows, as Train_g.txt / Train_k_g.txt."""
    proto, sub = parse_protocol_name(args.protocol)
    src = protocol_path(args.protocols_dir, proto, "Train", sub)
    rows = read_protocol(src)
    if any(r.generated for r in rows):
        raise SystemExit(f"error: {src} already contains generated rows; give the release's Train list")
    generated = []
    for k in range(num_folders):
        spoof_name, live_name = folder_names(tag, k)
        generated += [f"1,{live_name}\n", f"0,{spoof_name}\n"]
    # Always inside the crop root, even when the Train list is read from elsewhere (e.g. the release).
    dst = protocol_path(args.crop_root / "protocols", proto, "Train", sub)
    dst = dst.with_name(f"{dst.stem}_g.txt")
    atomic_write_text(dst, format_protocol(rows) + "".join(generated))
    return dst


def generate_folder(decoder: Decoder, dirs: Tuple[Path, Path, Path], n: int, seed: int, batch_size: int,
                    device: torch.device, depth: DepthMaker, jpeg_quality: int, bar) -> None:
    spoof_dir, live_dir, depth_dir = dirs
    gen = torch.Generator().manual_seed(seed)
    i = 1
    for start in range(0, n, batch_size):
        pairs = sample_pairs(decoder, min(batch_size, n - start), gen, device)
        spoof, live = to_uint8(pairs[:, :3]), to_uint8(pairs[:, 3:])
        for s_rgb, l_rgb in zip(spoof, live):
            l_bgr = np.ascontiguousarray(l_rgb[..., ::-1])
            atomic_write_image(spoof_dir / f"{i}_scene.jpg", np.ascontiguousarray(s_rgb[..., ::-1]), jpeg_quality)
            atomic_write_image(live_dir / f"{i}_scene.jpg", l_bgr, jpeg_quality)
            atomic_write_image(depth_dir / f"{i}_depth1D.jpg", depth(l_bgr, str(live_dir / f"{i}_scene.jpg")),
                               jpeg_quality)
            i += 1
            bar.update(1)


def main(args: argparse.Namespace) -> Dict[str, object]:
    setup_logging()
    log_run_header(log, args)
    if args.num_pairs < 1 or args.pairs_per_folder < 1:
        raise SystemExit("error: --num-pairs and --pairs-per-folder must be positive")
    if args.protocols_dir is None:
        args.protocols_dir = args.crop_root / "protocols"
    tag = protocol_tag(*parse_protocol_name(args.protocol))
    proto, sub = parse_protocol_name(args.protocol)
    train_list = protocol_path(args.protocols_dir, proto, "Train", sub)
    if not train_list.is_file():  # fail before generating anything
        raise SystemExit(f"error: {train_list} not found; the crop script copies the protocol lists into "
                         "<CROP_ROOT>/protocols, or point --protocols-dir at them")
    device = resolve_device(args.device)
    try:
        decoder, source = load_decoder(Path(args.checkpoint), args.image_size, args.hdim)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    decoder.to(device).eval()
    log.info("decoder from %s: %dx%d images, hdim %d", args.checkpoint, decoder.image_size, decoder.image_size,
             decoder.hdim)

    settings = settings_of(args, decoder.image_size, decoder.hdim)
    manifest = args.crop_root / f"generated_p{tag}.json"
    check_previous_run(manifest, settings, args.overwrite)
    atomic_write_json(manifest, {"settings": settings, "source": source, "summary": None})

    sizes = folder_sizes(args.num_pairs, args.pairs_per_folder)
    fallback = None if args.fallback_backend.lower() == "none" else args.fallback_backend
    depth = DepthMaker(args.depth_backend, fallback, args.map_size)
    done, skipped = 0, 0
    try:
        with torch.no_grad(), progress(total=args.num_pairs, desc="generating pairs", unit="pair") as bar:
            for k, n in enumerate(sizes):
                spoof_name, live_name = folder_names(tag, k)
                dirs = (args.crop_root / "train_images" / spoof_name, args.crop_root / "train_images" / live_name,
                        args.crop_root / "train_depth" / live_name)
                for d in dirs:
                    clear_extra_files(d, n, args.overwrite)
                if not args.overwrite and is_complete(dirs, n):
                    skipped += 1
                    bar.update(n)
                    continue
                for d in dirs:
                    d.mkdir(parents=True, exist_ok=True)
                generate_folder(decoder, dirs, n, folder_seed(args.seed, k), args.batch_size, device, depth,
                                args.jpeg_quality, bar)
                done += 1
    finally:
        depth.close()

    protocol_file = write_protocol(args, tag, len(sizes))
    n_primary, n_fallback = depth.counts["primary"], depth.counts["fallback"]
    summary = {"folders": len(sizes), "folders_generated": done, "folders_skipped": skipped,
               "pairs": args.num_pairs, "pairs_generated": n_primary + n_fallback,
               "depth_maps_primary": n_primary, "depth_maps_fallback": n_fallback,
               "depth_labels": {"primary_backend": args.depth_backend, "primary": n_primary,
                                "fallback_backend": args.fallback_backend, "fallback": n_fallback,
                                "counted_over": "the pairs generated in this run (complete folders are skipped)"},
               "protocol_file": str(protocol_file)}
    atomic_write_json(manifest, {"settings": settings, "source": source, "summary": summary})
    log.info("%d folders (%d generated, %d already complete), %d pairs written; protocol: %s", len(sizes), done,
             skipped, summary["pairs_generated"], protocol_file)
    log_depth_labels(log, n_primary, n_fallback, args.depth_backend, args.fallback_backend)
    return summary


def log_depth_labels(logger: logging.Logger, n_primary: int, n_fallback: int, primary: str, fallback: str) -> None:
    """Say clearly where the depth labels of the generated live faces came from."""
    n = n_primary + n_fallback
    if n == 0:
        logger.info("depth labels: no live image generated in this run (all folders were complete)")
        return
    logger.info("depth labels of the %d generated live faces: %d (%.1f %%) from '%s', %d (%.1f %%) from the "
                "fallback '%s' (the '%s' backend found no face)", n, n_primary, 100 * n_primary / n, primary,
                n_fallback, 100 * n_fallback / n, fallback, primary)
    if n_fallback > n_primary:
        logger.warning("most generated live faces got the fallback label: the '%s' backend sees no face in them, "
                       "so the generator does not draw convincing faces yet (train it longer?)", primary)


if __name__ == "__main__":
    main(argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter).parse_args())
