"""The Python API snippet of docs/DEPLOY.md, run exactly as written, so that the documentation cannot rot.

The snippet names ``runs/dum_p1/checkpoint.pth`` and ``photo.jpg`` relative to where it runs: the test writes
a small freshly initialised CDCN_U checkpoint (with a stored Dev threshold, as DUM/train.py stores it) and a
real photo that ships with scikit-image (the astronaut) under those names in a temporary folder, runs the
block there, and checks what it printed against the predictor itself.
"""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import cv2
import pytest

from deploy_helpers import write_checkpoint
from DUM.predict import Predictor

DOC = Path(__file__).resolve().parents[1] / "docs" / "DEPLOY.md"
MARK = "tests/test_deploy_docs.py"


def documented_snippet() -> str:
    """The first ```python block after the line that names this test."""
    text = DOC.read_text()
    after = text[text.index(MARK):]
    match = re.search(r"```python\n(.*?)```", after, re.S)
    assert match, f"{DOC}: no ```python block after the line naming {MARK}"
    return match.group(1)


def test_snippet_is_five_lines():
    code = [line for line in documented_snippet().splitlines() if line.strip()]
    assert len(code) == 5, code


def test_documented_snippet_runs(tmp_path, monkeypatch):
    """The block runs as written and prints, per face, the box, the score and the decision the predictor gives."""
    from skimage import data

    write_checkpoint(tmp_path / "runs" / "dum_p1" / "checkpoint.pth", threshold=0.25)
    cv2.imwrite(str(tmp_path / "photo.jpg"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(documented_snippet(), str(DOC), "exec"), {"__name__": "__docs__"})
    lines = printed.getvalue().splitlines()
    assert len(lines) == 1, lines  # one face in the photo
    x, y, w, h, score, decision = lines[0].split()
    (face,) = Predictor.load("runs/dum_p1/checkpoint.pth")(cv2.imread("photo.jpg"))
    assert [int(x), int(y), int(w), int(h)] == [face.box.x, face.box.y, face.box.w, face.box.h]
    assert 150 < int(x) < 250 and 40 < int(y) < 120 and int(w) > 50  # the astronaut's face, top centre
    assert float(score) == pytest.approx(face.score) and decision == ("live" if float(score) >= 0.25 else "spoof")
