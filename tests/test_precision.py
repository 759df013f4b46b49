"""misc/precision.py: --precision auto chooses by what torch says about bf16, both ways; the aliases; the deviation."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from misc import precision


def _torch_says_native() -> bool:
    return bool((torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
                and torch.ops.mkldnn._is_mkldnn_bf16_supported())


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_the_native_bf16_detection(monkeypatch, caplog, native):
    """auto: bf16 where native bf16 is reported, fp32 where not, and the log says which and why."""
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: native)
    with caplog.at_level(logging.INFO, logger="dsdg.precision"):
        p = precision.resolve_precision("auto", "cpu")
    assert p.name == ("bf16" if native else "fp32") and p.requested == "auto" and p.native
    assert p.dtype == (torch.bfloat16 if native else None) and p.mixed == native and not p.loss_scaling
    assert ("has native bf16" if native else "has no native bf16") in p.reason
    assert f"precision: {p.name} on cpu (--precision auto" in caplog.text


@pytest.mark.parametrize("native", [True, False])
def test_bf16_asked_for_runs_and_says_when_emulated(monkeypatch, caplog, native):
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: native)
    with caplog.at_level(logging.INFO, logger="dsdg.precision"):
        p = precision.resolve_precision("bf16", torch.device("cpu"))
    assert p.name == "bf16" and p.native == native
    assert ("emulated" in p.reason) != native
    assert any(r.levelno == (logging.INFO if native else logging.WARNING) for r in caplog.records)
    with p.autocast():  # the context really computes in bf16
        y = torch.ones(4, 4) @ torch.ones(4, 4)
    assert y.dtype == torch.bfloat16
    fp32 = precision.resolve_precision("fp32", "cpu")
    with fp32.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert fp32.as_dict() == {"name": "fp32", "requested": "fp32", "device": "cpu", "reason": "asked for",
                              "native": True}


def test_real_detection_agrees_with_torch_and_the_cpu_flags():
    """On this machine, whatever its CPU: the detection is torch's own answer, and it is consistent with the
    instruction sets the kernel reports (native bf16 needs avx512_bf16 or amx_bf16)."""
    support = precision.cpu_bf16_support()
    assert support == {"avx512_bf16": torch.cpu._is_avx512_bf16_supported(),
                       "amx_tile": torch.cpu._is_amx_tile_supported(),
                       "onednn_bf16": torch.ops.mkldnn._is_mkldnn_bf16_supported()}
    assert precision.native_cpu_bf16() == _torch_says_native()
    assert precision.resolve_precision("auto", "cpu").name == ("bf16" if _torch_says_native() else "fp32")
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags = set(next((ln.split(":", 1)[1].split() for ln in cpuinfo.read_text().splitlines()
                          if ln.startswith("flags")), []))
        if flags and precision.native_cpu_bf16():
            assert flags & {"avx512_bf16", "amx_bf16"}
        if flags and not flags & {"avx512_bf16", "amx_bf16", "amx_tile"}:
            assert not precision.native_cpu_bf16()


def test_bad_requests_are_refused():
    with pytest.raises(ValueError, match="one of auto, fp32, bf16, fp16"):
        precision.resolve_precision("half", "cpu")
    with pytest.raises(ValueError, match="fp16 is for CUDA"):
        precision.resolve_precision("fp16", "cpu")
    assert precision.resolve_precision("fp32", "meta").name == "fp32"
    assert precision.resolve_precision("auto", "meta").name == "fp32"


def test_precision_flag_and_hidden_amp_alias():
    """--precision wins; the older --amp true|false still works (hidden from --help), mapped by the script."""
    p = argparse.ArgumentParser()
    precision.add_precision_argument(p, "auto")
    assert "--amp" not in p.format_help() and "--precision" in p.format_help()
    spec = lambda *argv: precision.requested_spec(p.parse_args(list(argv)), "auto", "fp16")  # noqa: E731
    assert spec() == "auto"
    assert spec("--precision", "bf16") == "bf16"
    assert spec("--amp", "true") == "fp16" and spec("--amp", "false") == "fp32"
    with pytest.raises(SystemExit, match="not both"):
        spec("--precision", "fp32", "--amp", "true")


@pytest.mark.parametrize("module", ["DUM.test", "DUM.predict", "DUM.train", "train_generator",
                                    "benchmarks.bench_generator"])
def test_every_script_has_precision_and_the_hidden_amp(module):
    import importlib

    parser = importlib.import_module(module).get_args_parser()
    text = parser.format_help()
    assert "--precision" in text and "--amp" not in text
    dests = {a.dest for a in parser._actions}
    assert {"precision", "amp"} <= dests


def test_score_deviation_counts_flips():
    scores, reference = np.array([0.10, 0.30, 0.501, np.nan]), np.array([0.11, 0.30, 0.499, 0.2])
    d = precision.score_deviation(scores, reference, 0.5, ids=["a", "b", "c", "d"])
    assert d["items"] == 3 and d["max_abs_diff"] == pytest.approx(0.01)
    assert d["flips"] == 1 and d["flipped"] == ["c"]
    # each at its own threshold: 0.501 >= 0.5 and 0.499 >= 0.49 agree
    assert precision.score_deviation(scores, reference, 0.5, reference_threshold=0.49)["flips"] == 0
    assert "flips" not in precision.score_deviation(scores, reference)
    with pytest.raises(ValueError, match="reference"):
        precision.score_deviation([1.0], [1.0, 2.0])
