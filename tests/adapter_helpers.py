"""Shared pieces of the dataset-adapter tests: running an adapter, reading what it wrote, empty-file layouts."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterable, List

from data import protocol_lists

REPO = Path(__file__).resolve().parents[1]


def adapt(module, *argv) -> dict:
    """Run an adapter's main() with these arguments (as strings) and return its summary."""
    parser = argparse.ArgumentParser(parents=[module.get_args_parser()])
    return module.main(parser.parse_args([str(a) for a in argv]))


def lists(root: Path, protocol: str) -> Dict[str, List[protocol_lists.ProtocolRow]]:
    """Train/Dev/Test rows of one (sub-)protocol of an adapted root."""
    proto, sub = protocol_lists.parse_protocol_name(protocol)
    return {s: protocol_lists.read_protocol(protocol_lists.protocol_path(root / "Protocols", proto, s, sub))
            for s in protocol_lists.SPLITS}


def linked(root: Path, split: str) -> List[str]:
    """Video ids linked into <root>/<Split>_files/."""
    return sorted(p.stem for p in (root / f"{split}_files").iterdir())


def touch(root: Path, paths: Iterable[str]) -> Path:
    """Empty files at these relative paths: the adapters look at names only, so layouts need no video."""
    for rel in paths:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    return root


def run_module(module: str, *argv, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *[str(a) for a in argv]], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
