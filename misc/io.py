"""Atomic file writes.

Every output that a later stage reads (frames, boxes, depth maps, lists, checkpoints, score
files) goes through these helpers: the bytes are written to a temporary file in the same folder
and moved over the final name with ``os.replace``, which is atomic on POSIX and Windows. A crash
mid-write therefore leaves either the old file or no file, never a truncated one that a resumed
run would mistake for finished work.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Union

import numpy as np

PathLike = Union[str, os.PathLike]

# Temporary files carry this marker so that cleanup code and humans can recognise leftovers.
TMP_MARK = ".tmp-"

# mkstemp creates files readable by their owner only; give finished files the permissions that
# open() would have given them (0666 minus the umask), so shared output folders stay readable.
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on a clean exit move it to ``path``.

    If the body raises, the temporary file is removed and ``path`` is left untouched.
    """
    if not any(m in mode for m in "wx"):
        raise ValueError(f"atomic_open is for writing; got mode {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + TMP_MARK, dir=path.parent)
    try:
        os.chmod(tmp, _FILE_MODE)
        with os.fdopen(fd, mode.replace("x", "w"), **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_figure(path: PathLike, fig: Any, dpi: int = 120) -> None:
    """A matplotlib figure as a PNG, rendered in memory first so that a reader never sees half a file."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_text(path: PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def atomic_write_json(path: PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    # numpy scalars and arrays show up in metrics and detector outputs.
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_write_image(path: PathLike, image: np.ndarray, jpeg_quality: int = 95) -> None:
    """Encode ``image`` (BGR or grey uint8, OpenCV convention) by the file's extension and write it atomically."""
    import cv2  # imported here so that modules without images do not pay for OpenCV

    path = Path(path)
    params = [int(cv2.IMWRITE_JPEG_QUALITY), int(jpeg_quality)] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(path.suffix, image, params)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode a {image.shape} {image.dtype} image as {path.suffix}")
    atomic_write_bytes(path, buf.tobytes())


def remove_stale_temporaries(folder: PathLike) -> int:
    """Delete temporary files left by a killed process in ``folder`` (not recursive). Returns how many."""
    n = 0
    for p in Path(folder).glob(f"*{TMP_MARK}*"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            n += 1
    return n
