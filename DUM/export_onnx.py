"""Export a DUM depth network (CDCN_U, or another network of ``DUM/zoo.py``) to ONNX: the mean depth
map and the liveness score.

    python DUM/export_onnx.py --checkpoint runs/dum/checkpoint.pth --out cdcn_u.onnx
    python -m DUM.export_onnx --checkpoint DUM/checkpoint/CDCN_U_P1.pkl --out cdcn_u_p1.onnx --threshold 0.5

The network is the one the checkpoint was trained as (``DUM/train.py --model``), or for a bare
state_dict the one its keys belong to; its name is stored in the file's metadata (``dsdg.model``).

The graph reads ``input`` (B, 3, S, S) float32 face crops (RGB, (pixel - 127.5) / 128, S = the
training size) and returns ``mu`` (B, M, M), the predicted mean depth, and ``score`` (B,), the
average of ``mu`` over the map: DUM/test.py's ``mean`` score of one frame (higher = more bona fide;
live iff score >= threshold). The batch axis is dynamic; the spatial size is fixed.

The central-difference term is folded into each 3x3 kernel before export (the exported layers are
plain convolutions), and the log-variance head and the reparameterised sample, which only training
uses, are left out of the graph (plain CDCN has neither). After export, onnxruntime runs the file on random inputs of batch 1
and 3 and its outputs are compared with the PyTorch model as DUM/weights.py loads it; the file is not
written when they differ by more than --tolerance.

Everything a deployer needs travels in the file's ``metadata_props`` (keys ``dsdg.*``): the decision
threshold (when the checkpoint or --threshold gives one), input size, normalisation, channel order,
face scale, score and decision rule, and where the weights came from.
"""
if __package__ in (None, ""):  # run as a file: make the repository root importable
    import pathlib
    import sys
    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse
import copy
import io
import logging
import math
import sys
import warnings
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn

from DUM import zoo
from DUM.kernels import fold_central_difference
from DUM.models import CentralDifferenceConv2d
from DUM.scoring import mean_depth_score
from DUM.transforms import CHANNEL_ORDER, EVAL_FACE_SCALE, INPUT_MEAN, INPUT_SCALE
from DUM.weights import input_size, load_model
from misc.checkpoint import CheckpointError
from misc.device import to_input
from misc.io import atomic_write_bytes
from misc.logger import code_version, log_run_header, setup_logging
from misc.run_dir import checkpoint_file

log = logging.getLogger("dsdg.export")

INPUT, OUTPUTS = "input", ("mu", "score")
META_PREFIX = "dsdg."
FORMAT = "dsdg-cdcn-u/1"  # the file layout (named before there were other networks; dsdg.model says which)
DECISION = "live iff score >= threshold"


class ExportError(RuntimeError):
    """The exported graph does not reproduce the PyTorch model (or cannot be built)."""


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("Export CDCN + DUM to ONNX", add_help=False)
    p.add_argument("--checkpoint", required=True, type=checkpoint_file,
                   help="the released CDCN_U_P1.pkl (DataParallel state_dict), a checkpoint of DUM/train.py, or its "
                        "run directory (then its newest checkpoint)")
    p.add_argument("--model", choices=zoo.NAMES, default=None,
                   help="the network the checkpoint must be; default: the one stored in it, or for a bare state_dict "
                        "the one its keys belong to. A different name is an error")
    p.add_argument("--out", type=Path, default=None,
                   help="ONNX file to write. Default: <model>.onnx (e.g. cdcn_u.onnx) in the current folder")
    p.add_argument("--image-size", type=int, default=None,
                   help="input size S of the graph; default: the checkpoint's training size, 256 for the "
                        "released file (paper: 256)")
    p.add_argument("--threshold", type=float, default=None,
                   help="decision threshold to store; default: the checkpoint's Dev EER threshold (stored by "
                        "DUM/train.py). The released file has none: without this flag the ONNX file has none either")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version. Default: %(default)s")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest accepted |onnxruntime - PyTorch| on mu and score. Default: %(default)s")
    return p


# ----------------------------------------------------------------------------------------------
# The deployed network
# ----------------------------------------------------------------------------------------------

class ScoredCDCN(nn.Module):
    """A depth network reduced to what inference needs: x (B, 3, S, S) -> (mu (B, M, M), score (B,)).

    ``score`` is :func:`DUM.scoring.mean_depth_score`, the tester's ``mean`` score of one frame.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        mu = self.model(x).mu
        return mu, mean_depth_score(mu)


def fold_cdc(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose central-difference layers are plain convolutions with folded kernels.

    Same function (``fold_central_difference`` is what the layers compute on every call), but the
    kernel becomes a constant: the ONNX exporter cannot give a convolution a kernel that is computed
    in the graph, and deployment saves the per-call fold.
    """
    folded = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    for layer in folded.modules():
        if isinstance(layer, CentralDifferenceConv2d) and abs(layer.theta) >= 1e-8:
            with torch.no_grad():
                layer.conv.weight.copy_(fold_central_difference(layer.conv.weight, layer.theta))
            layer.theta = 0.0  # theta 0: the layer is its convolution
    return folded.eval()


def export_bytes(model: nn.Module, image_size: int, opset: int = 17) -> bytes:
    """The serialised ONNX graph of ``ScoredCDCN(fold_cdc(model))`` with a dynamic batch axis."""
    net = ScoredCDCN(fold_cdc(model)).eval()
    buf = io.BytesIO()
    dynamic = {name: {0: "batch"} for name in (INPUT, *OUTPUTS)}
    with warnings.catch_warnings():
        # The tracer warns that the map-size test in the networks' _resize becomes a constant: intended,
        # the graph's spatial size is fixed. The TorchScript exporter is used because the newer one
        # needs onnxscript, which the project does not install.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        with torch.no_grad():
            torch.onnx.export(net, (torch.zeros(1, 3, image_size, image_size),), buf, dynamo=False,
                              input_names=[INPUT], output_names=list(OUTPUTS), dynamic_axes=dynamic,
                              opset_version=opset, do_constant_folding=True)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# Metadata
# ----------------------------------------------------------------------------------------------

def deploy_metadata(model: nn.Module, image_size: int, meta: Mapping, checkpoint: Path,
                    threshold: Optional[float], threshold_source: str) -> Dict[str, str]:
    """The ``dsdg.*`` metadata_props of an exported file (all strings, as ONNX stores them)."""
    props = {
        "format": FORMAT, "model": meta["model"],
        "image_size": str(image_size), "map_size": str(model.map_size), "theta": repr(float(model.theta)),
        "input": f"{INPUT}: float32 (batch, 3, {image_size}, {image_size}), NCHW, {CHANNEL_ORDER}, "
                 f"(pixel - {INPUT_MEAN}) / {INPUT_SCALE}",
        "input_mean": repr(INPUT_MEAN), "input_scale": repr(INPUT_SCALE), "channel_order": CHANNEL_ORDER,
        "face_scale": repr(EVAL_FACE_SCALE),
        "face_crop": "MTCNN face box enlarged by face_scale about its centre, clipped to the "
                     "frame, resized to image_size x image_size (DUM/make_dataset/crop_dataset.py)",
        "outputs": "mu: (batch, map, map) predicted mean depth; score: (batch,) mean of mu over the map",
        "score": "mean", "decision": DECISION,
        "checkpoint": str(checkpoint), "checkpoint_source": str(meta.get("source")),
        "code_version": code_version()["sha"],
    }
    if meta.get("epoch") is not None:
        props["checkpoint_epoch"] = str(meta["epoch"])
    if meta.get("extra", {}).get("protocol") is not None:
        props["protocol"] = str(meta["extra"]["protocol"])
    if threshold is not None:
        props["threshold"] = repr(float(threshold))
        props["threshold_source"] = threshold_source
    return {META_PREFIX + k: v for k, v in props.items()}


def read_metadata(props: Mapping[str, str], source: str = "<onnx>") -> Dict[str, object]:
    """Typed values of the ``dsdg.*`` metadata of an exported file (``threshold`` None when absent).

    ``model`` is the network's ``DUM.zoo`` name (``cdcn_u`` for files exported before there was a
    choice). Raises ExportError naming ``source`` when the file was not written by this script.
    """
    own = {k[len(META_PREFIX):]: v for k, v in props.items() if k.startswith(META_PREFIX)}
    if own.get("format") != FORMAT:
        raise ExportError(f"{source}: no '{META_PREFIX}format: {FORMAT}' metadata; export the model with "
                          "DUM/export_onnx.py")
    try:
        return {"model": own.get("model", zoo.DEFAULT), "image_size": int(own["image_size"]), "map_size": int(own["map_size"]),
                "input_mean": float(own["input_mean"]), "input_scale": float(own["input_scale"]),
                "channel_order": own["channel_order"], "face_scale": float(own["face_scale"]),
                "threshold": float(own["threshold"]) if "threshold" in own else None,
                "threshold_source": own.get("threshold_source"), "checkpoint": own.get("checkpoint")}
    except (KeyError, ValueError) as e:
        raise ExportError(f"{source}: malformed {META_PREFIX}* metadata ({type(e).__name__}: {e})") from None


def with_metadata(onnx_bytes: bytes, props: Mapping[str, str]) -> bytes:
    """``onnx_bytes`` with ``props`` added to metadata_props, checked by the ONNX checker."""
    import onnx

    proto = onnx.load_from_string(onnx_bytes)
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"DSDG depth network ({props.get(META_PREFIX + 'model', zoo.DEFAULT)}): " + DECISION
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


# ----------------------------------------------------------------------------------------------
# Verification
# ----------------------------------------------------------------------------------------------

def max_differences(onnx_bytes: bytes, model: nn.Module, image_size: int, batches=(1, 3),
                    seed: int = 0) -> Dict[str, float]:
    """Largest |onnxruntime - PyTorch| of mu and score over random inputs of each batch size.

    The reference is the model as given (central difference computed per call), so folding is
    checked too. Inputs are uniform in [-1, 1], the range of normalised pixels. A wrong output
    shape or a non-finite value counts as an infinite difference.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    reference = ScoredCDCN(model).eval()
    gen = torch.Generator().manual_seed(seed)
    worst = {name: 0.0 for name in OUTPUTS}
    for b in batches:
        x = torch.rand(b, 3, image_size, image_size, generator=gen) * 2 - 1
        with torch.no_grad(), torch.random.fork_rng():  # the model's unused sample draws noise
            expected = [t.float().cpu().numpy() for t in reference(to_input(x, torch.device("cpu")))]
        got = session.run(list(OUTPUTS), {INPUT: x.numpy()})
        for name, e, g in zip(OUTPUTS, expected, got):
            ok = g.shape == e.shape and np.isfinite(g).all() and np.isfinite(e).all()
            worst[name] = max(worst[name], float(np.abs(g - e).max()) if ok else math.inf)
    return worst


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def main(args: argparse.Namespace) -> Dict[str, object]:
    setup_logging()
    log_run_header(log, args)
    model, meta = load_model(args.checkpoint, "cpu", model=args.model, return_meta=True)
    out = args.out or Path(f"{meta['model']}.onnx")
    image_size = args.image_size or input_size(meta)
    if image_size < 8:
        raise SystemExit(f"--image-size must be at least 8, got {image_size}")
    threshold, source = args.threshold, "--threshold"
    if threshold is None:
        threshold = meta["extra"].get("threshold")
        epoch = meta["extra"].get("threshold_epoch")
        source = f"checkpoint (Dev EER threshold{f' of epoch {epoch}' if epoch is not None else ''})"
    if threshold is None:
        log.warning("%s stores no decision threshold; the ONNX file will have none (pass --threshold to add one, "
                    "or DUM/predict.py --threshold when using it)", args.checkpoint)
    log.info("model: %s file %s, %s, %d px input, %d x %d maps, threshold %s", meta["source"],
             args.checkpoint, zoo.get(meta["model"]).describe(model.theta), image_size, model.map_size,
             model.map_size, threshold)

    onnx_bytes = export_bytes(model, image_size, args.opset)
    onnx_bytes = with_metadata(onnx_bytes, deploy_metadata(model, image_size, meta, args.checkpoint, threshold, source))
    diffs = max_differences(onnx_bytes, model, image_size)
    summary = ", ".join(f"{k} {v:.3g}" for k, v in diffs.items())
    print(f"max |onnxruntime - PyTorch| over batches 1 and 3: {summary} (tolerance {args.tolerance:g})")
    if not max(diffs.values()) <= args.tolerance:
        raise ExportError(f"{out}: not written: onnxruntime differs from PyTorch by more than "
                          f"{args.tolerance:g} ({summary})")
    atomic_write_bytes(out, onnx_bytes)
    log.info("wrote %s (%.1f MB)", out, len(onnx_bytes) / 1e6)
    return {"out": out, "model": meta["model"], "image_size": image_size, "threshold": threshold,
            "max_abs_diff": diffs}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__.split("\n\n")[0])
    try:
        main(parser.parse_args())
    except (CheckpointError, ExportError, OSError) as e:  # the messages name the file and the problem
        sys.exit(f"error: {e}")
