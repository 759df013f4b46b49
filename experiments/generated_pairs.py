"""What the generated pairs look like next to the real training crops: a labelled picture, and how
much the two images of a pair share (the generator has no identity network here, see below)."""
from __future__ import annotations

from pathlib import Path
from typing import List

import cv2
import numpy as np

from data.protocol_lists import is_generated, parse_protocol_name, protocol_path, read_protocol
from misc.io import atomic_write_figure

TILE = 112  # pixels a tile is shown at, whatever the training size (32 px crops are unreadable as they are)


def _first_frame(folder: Path) -> np.ndarray | None:
    frames = sorted(folder.glob("*_scene.jpg"))
    if not frames:
        return None
    image = cv2.imread(str(frames[0]), cv2.IMREAD_COLOR)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _tiles(folders: List[Path], n: int) -> List[np.ndarray]:
    out = []
    for f in folders:
        image = _first_frame(f)
        if image is not None:
            out.append(cv2.resize(image, (TILE, TILE), interpolation=cv2.INTER_NEAREST))
        if len(out) == n:
            break
    return out


def _generated_folders(crop_root: Path, protocol: str):
    """(Train_g rows, [(live folder, spoof folder)] of the generated pairs), folders in list order."""
    proto, sub = parse_protocol_name(protocol)
    listing = protocol_path(crop_root / "protocols", proto, "Train", sub)
    rows = read_protocol(listing.with_name(listing.stem + "_g.txt"))
    images = crop_root / "train_images"
    live = [images / r.video for r in rows if is_generated(r.video) and r.label == 1]
    return rows, [(d, d.with_name(d.name.replace("_1_", "_0_", 1))) for d in live]


def pair_consistency(crop_root: Path, protocol: str, size: int = 32, max_pairs: int = 2000) -> dict:
    """Mean absolute grey-level difference (0-255) between the live and the spoof image of a generated
    pair, against the same between a live image and the spoof image of another pair.

    Without LightCNN the generator has no identity-preserving or pair loss (its weights cannot be
    shipped); the pair shares one identity latent only. A ratio well below 1 says the decoder still
    draws the two images of a pair alike; 1 would mean they are unrelated.
    """
    _, folders = _generated_folders(crop_root, protocol)
    live, spoof = [], []
    for live_dir, spoof_dir in folders:
        for path in sorted(live_dir.glob("*_scene.jpg")):
            other = spoof_dir / path.name
            a, b = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), cv2.imread(str(other), cv2.IMREAD_GRAYSCALE)
            if a is None or b is None:
                continue
            live.append(cv2.resize(a, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32))
            spoof.append(cv2.resize(b, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32))
            if len(live) == max_pairs:
                break
        if len(live) == max_pairs:
            break
    if len(live) < 2:
        return {"pairs": len(live)}
    live_a, spoof_a = np.stack(live), np.stack(spoof)
    paired = float(np.abs(live_a - spoof_a).mean())
    shuffled = float(np.abs(live_a - np.roll(spoof_a, 1, axis=0)).mean())  # each live image vs another pair's spoof
    return {"pairs": len(live), "paired_l1": paired, "unpaired_l1": shuffled, "ratio": paired / shuffled}


def image_statistics(crop_root: Path, protocol: str, max_images: int = 1000) -> dict:
    """Per group of training crops (real live, real attack, generated live, generated spoof): how sharp
    (variance of the Laplacian of the grey image), how colourful (mean HSV saturation, 0-255), how
    contrasted (std of the grey levels) and how bright (mean grey level) the images are, and how many
    images each figure rests on. A cue that separates generated from real faces, or that the generated
    pairs tie to the wrong class (e.g. blur), shows here as a difference between the groups."""
    rows, folders = _generated_folders(crop_root, protocol)
    images = crop_root / "train_images"
    groups = {
        "real live": [images / r.video for r in rows if not is_generated(r.video) and r.label == 1],
        "real attack": [images / r.video for r in rows if not is_generated(r.video) and r.label != 1],
        "generated live": [live for live, _ in folders],
        "generated spoof": [spoof for _, spoof in folders],
    }
    out = {}
    for name, dirs in groups.items():
        stats = []
        for folder in dirs:
            for path in sorted(folder.glob("*_scene.jpg")):
                bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if bgr is None:
                    continue
                grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
                stats.append((cv2.Laplacian(grey, cv2.CV_64F).var(),
                              cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)[..., 1].mean(), grey.std(), grey.mean()))
                if len(stats) == max_images:
                    break
            if len(stats) == max_images:
                break
        if stats:
            a = np.asarray(stats)
            out[name] = {"images": len(stats), "sharpness": float(a[:, 0].mean()), "saturation": float(a[:, 1].mean()),
                         "contrast": float(a[:, 2].mean()), "brightness": float(a[:, 3].mean())}
        else:
            out[name] = {"images": 0}
    return out


def pairs_vs_real(crop_root: Path, protocol: str, path: Path, n: int = 8) -> Path:
    """``path``: four labelled rows of ``n`` tiles — real live and real attack training crops, then
    generated live faces and, below each, its spoof partner (the same sampled identity)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, folders = _generated_folders(crop_root, protocol)
    images = crop_root / "train_images"
    real_live = [images / r.video for r in rows if not is_generated(r.video) and r.label == 1]
    real_attack = [images / r.video for r in rows if not is_generated(r.video) and r.label != 1]
    # Spread the picks over the list: neighbouring rows are often the same person.
    pick = lambda xs: xs[:: max(1, len(xs) // n)]  # noqa: E731
    generated_live, generated_spoof = [], []
    if folders:  # image i of p<tag>_1_<k> and of p<tag>_0_<k> are one pair
        live_dir, spoof_dir = folders[0]
        for i in range(1, n + 1):
            for folder, out in ((live_dir, generated_live), (spoof_dir, generated_spoof)):
                image = cv2.imread(str(folder / f"{i}_scene.jpg"), cv2.IMREAD_COLOR)
                if image is not None:
                    out.append(cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), (TILE, TILE),
                                          interpolation=cv2.INTER_NEAREST))
    grid = [("real live", _tiles(pick(real_live), n)), ("real attack", _tiles(pick(real_attack), n)),
            ("generated live", generated_live), ("generated spoof\n(same identity)", generated_spoof)]
    fig, axes = plt.subplots(len(grid), n, figsize=(1.3 * n + 1.2, 1.45 * len(grid)))
    for r, (label, tiles) in enumerate(grid):
        for c in range(n):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if c < len(tiles):
                ax.imshow(tiles[c])
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=10)
    fig.suptitle(f"training crops ({crop_root}): real (rows 1-2) and generated pairs (rows 3-4, one column "
                 "= one pair)", fontsize=10)
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=100)
    plt.close(fig)
    return path
