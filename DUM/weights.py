"""Model files into networks: the released ``CDCN_U_P1.pkl``, a bare state_dict of another network of
``DUM/zoo.py`` in the original's layout, or a checkpoint of ``DUM/train.py``.

    model, meta = load_model("DUM/checkpoint/CDCN_U_P1.pkl", "cpu", return_meta=True)

The tester, the evaluator, the exporter and the predictor load files through it alone. It reads files
and builds networks and imports nothing of training.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch

from DUM import zoo
from DUM.transforms import IMAGE_SIZE, MAP_SIZE
from misc.checkpoint import FORMAT, CheckpointError, load_state_dict_strict, strip_prefix

THETA = 0.7  # the original's central-difference weight, which a bare state_dict does not record


def load_model(path: str | Path, device: str | torch.device = "cpu", theta: Optional[float] = None,
               map_size: Optional[int] = None, return_meta: bool = False, model: Optional[str] = None):
    """The network of a model file, in eval mode: the released ``CDCN_U_P1.pkl``, a bare state_dict of
    another network in the original's layout, or one of our checkpoints.

    Which network (``DUM.zoo`` name): a checkpoint of ``DUM/train.py`` stores it in its args (files
    written before there was a choice are recognised by their keys); a bare state_dict (DataParallel
    ``module.`` prefixes allowed) is recognised by its keys. ``model`` names the network expected:
    for a checkpoint it must be the stored one, for a bare state_dict it overrides the recognition
    (and the keys must fit it). Bare state_dicts carry no sizes: theta 0.7 and 32 x 32 maps, as the
    original; checkpoints carry theta and the map size in their args; ``theta``/``map_size``
    override either. With ``return_meta`` the result is ``(model, meta)``, meta = {'source':
    'released'|'checkpoint', 'model', 'args', 'extra', 'epoch'}. Raises CheckpointError naming the
    file and the problem: unreadable, another network than asked, or keys that fit no network (the
    missing/unexpected keys of the nearest one listed).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling fails in many ways (pickled modules, corrupt files)
        raise CheckpointError(f"{path}: not loadable with torch.load(weights_only=True) "
                              f"({type(e).__name__}: {e}). Expected a state_dict or a DSDG checkpoint.") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state_dict or a DSDG checkpoint")
    if state.get("format") == FORMAT:
        if state.get("kind") != "dum":
            raise CheckpointError(f"{path}: is a '{state.get('kind')}' checkpoint, expected 'dum'")
        if "model" not in state.get("models", {}):
            raise CheckpointError(f"{path}: DUM checkpoint without a 'model' entry")
        args = state.get("args", {})
        sd = state["models"]["model"]
        meta = {"source": "checkpoint", "args": args, "extra": state.get("extra", {}), "epoch": state.get("epoch")}
    else:
        args = {}
        sd = strip_prefix(state, "module.")
        meta = {"source": "released", "args": {}, "extra": {}, "epoch": None}
    name = _network_of(path, sd, args.get("model"), model)
    spec = zoo.get(name)
    theta = theta if theta is not None else float(args.get("theta", THETA))
    map_size = map_size if map_size is not None else int(args.get("map_size", MAP_SIZE))
    net = spec.build(theta=theta, map_size=map_size)
    load_state_dict_strict(net, sd, source=f"{path} (as {name})")
    meta["model"] = name
    net = net.to(device).to(memory_format=torch.channels_last).eval()
    return (net, meta) if return_meta else net


def input_size(meta: Mapping[str, Any]) -> int:
    """The input size a loaded file was trained at: its checkpoint's ``image_size``, else the paper's
    256 (the released file's; bare state_dicts record none)."""
    return int(meta["args"].get("image_size", IMAGE_SIZE))


def _network_of(path: Path, sd: Dict[str, Any], stored: Optional[str], asked: Optional[str]) -> str:
    """The registry name to build for a file: its stored name (which ``asked`` must equal), else the
    network its keys are exactly those of (``asked`` overrides, but must not contradict them)."""
    if asked is not None:
        zoo.get(asked)  # an unknown name fails here, listing the choices
    if stored is not None:
        if stored not in zoo.MODELS:
            raise CheckpointError(f"{path}: trained as '{stored}', which this code does not know "
                                  f"(it knows {', '.join(zoo.NAMES)})")
        if asked is not None and asked != stored:
            raise CheckpointError(f"{path}: was trained as '{stored}', not '{asked}' (--model {asked}); "
                                  f"leave --model out or pass --model {stored}")
        return stored
    detected = zoo.detect(sd)
    if asked is not None:
        if detected is not None and detected != asked:
            raise CheckpointError(f"{path}: its keys are those of '{detected}', not of '{asked}' (--model {asked}); "
                                  f"leave --model out or pass --model {detected}")
        return asked  # keys that fit no network fail in the strict load, naming the file and '{asked}'
    if detected is None:
        nearest = zoo.closest(sd)
        try:  # lists the nearest network's missing, unexpected and wrongly shaped keys
            load_state_dict_strict(zoo.get(nearest).build(), sd, source=f"{path} (nearest: {nearest})")
        except CheckpointError as e:
            raise CheckpointError(f"{path}: its keys fit none of the networks ({', '.join(zoo.NAMES)}).\n{e}") from None
        raise AssertionError("unreachable: equal key sets are detected")
    return detected
