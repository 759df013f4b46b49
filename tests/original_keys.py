"""Parameter names and shapes of the original networks, read from tests/data/original_state_dict_keys.json.

They are facts about the networks of the original code (see the file's "about"), kept in the repository so the
checks that our networks match them run in every clone.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Tuple

KEYS_FILE = Path(__file__).resolve().parent / "data" / "original_state_dict_keys.json"
Layout = List[Tuple[str, Tuple[int, ...]]]


@lru_cache(maxsize=None)
def _networks() -> Dict[str, list]:
    return json.loads(KEYS_FILE.read_text(encoding="utf-8"))["networks"]


def original_keys(network: str) -> Layout:
    """``[(name, shape), ...]`` of ``network``'s state_dict in the original code, in state_dict order, without
    DataParallel's ``module.`` prefix. ``network``: CDCN_u, depthnet_u, ResNet18_u, Encoder, Encoder_s,
    Decoder_s, Cls or LightCNN_29v2."""
    return [(name, tuple(shape)) for name, shape in _networks()[network]]
