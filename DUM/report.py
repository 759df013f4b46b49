"""The evaluation report: one folder that opens in a browser, with no server and no network.

    DIR/index.html                      the page: what was evaluated and on how many listed videos, the
                                        metric tables of every mode, per-instrument APCER, the figures
                                        and the worst errors
    DIR/roc_det_<key>.png               ROC + DET and score histograms of each section (DUM/plots.py)
    DIR/score_histogram_<key>.png
    DIR/errors/<key>_<kind>_<rank>.png  the worst errors' face crops with their mu / sigma maps

Written by ``DUM/test.py --report DIR`` (every score, both modes, faces and maps from the model it
tests) and ``DUM/evaluate.py --report DIR`` (the score files; faces when given the crop root, maps
when also given the model). Images are separate PNG files referenced by relative paths, so the folder
can be moved or zipped whole; index.html is written last, atomically, so a half-written report never
looks finished.

**Worst errors** of a section: at the Test threshold of its first mode (the Dev EER threshold of the
ISO rule unless the run said otherwise), the attack videos accepted as bona fide with the highest
scores, and the bona fide videos rejected with the lowest, ``errors`` of each at most; each shown with
``frames`` face crops evenly spaced over the video, the predicted depth mu (grey, 0..1, nearer =
brighter) and uncertainty sigma (colour-mapped from 0 to the largest sigma of the report's strips, so
strips compare) of those frames, its score and id. When a class has no error, its videos closest to the
threshold are shown instead, marked as correctly classified.
"""
from __future__ import annotations

import contextlib
import datetime
import html
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from data.protocol_lists import label_kind
from data.prep_common import stage_dir
from DUM import metrics
from DUM.datasets import list_video_frames, pick_evenly, read_image
from DUM.metrics import ScoreSet
from DUM.scoring import predict_maps
from DUM.transforms import normalise_image
from misc.grids import colour_map, labelled_grid, save_png
from misc.io import atomic_write_text

log = logging.getLogger("dsdg.report")

INDEX = "index.html"
ERRORS_DIR = "errors"
ERRORS = 6   # worst errors shown per class and section
FRAMES = 4   # face crops per error video


@dataclass
class Section:
    """One block of the page: a score (DUM/test.py) or a Dev/Test pair (DUM/evaluate.py).

    ``results``: {mode: result of ``DUM.metrics.evaluate``} (the first mode sets the worst errors'
    threshold); ``dev``/``test``: the score sets behind them; ``key``: a file-name tag; ``errors``: whether
    to show this section's worst errors; ``error``: why there are no metrics (one-class sets), instead.
    """
    title: str
    key: str
    results: Dict[str, dict] = field(default_factory=dict)
    dev: Optional[ScoreSet] = None
    test: Optional[ScoreSet] = None
    errors: bool = True
    error: Optional[str] = None


@dataclass
class ErrorCase:
    video: str
    label: int
    score: float
    misclassified: bool  # False: shown as the closest correct call of a class without errors


def worst_errors(test: ScoreSet, threshold: float, mode: str, n: int = ERRORS) -> Dict[str, object]:
    """The worst errors of ``test`` at ``threshold`` under the decision rule of ``mode``.

    Returns {'attacks': [ErrorCase], 'bona_fide': [ErrorCase], 'attacks_accepted': count,
    'bona_fide_rejected': count, 'attacks_total', 'bona_fide_total'}: the accepted attacks by decreasing
    score and the rejected bona fide by increasing score, ``n`` at most each; a class without errors
    lists its ``min(n, 3)`` videos nearest the threshold instead (``misclassified`` False).
    """
    acc = metrics.accepted(test.scores, threshold, mode)
    bf = test.bona_fide
    out: Dict[str, object] = {"attacks_total": int((~bf).sum()), "bona_fide_total": int(bf.sum())}
    for name, members, wrong, order in (("attacks", ~bf, acc, -1), ("bona_fide", bf, ~acc, 1)):
        idx = np.flatnonzero(members & wrong)
        out["attacks_accepted" if name == "attacks" else "bona_fide_rejected"] = int(idx.size)
        misclassified = idx.size > 0
        if not misclassified:  # nearest to the threshold: the most live attacks / the least live bona fide
            idx, n_show = np.flatnonzero(members), min(n, 3)
        else:
            n_show = n
        # stable sort on the score (ties keep list order), most extreme first
        idx = idx[np.argsort(order * test.scores[idx], kind="stable")][:n_show]
        out[name] = [ErrorCase(test.ids[i], int(test.labels[i]), float(test.scores[i]), misclassified) for i in idx]
    return out


class FaceSource:
    """Face crops of a crop root's videos and, with a model, their predicted mu / sigma maps.

    ``root``: the crop root (``<split>_images/<video>/``); ``image_size``: the model's input size (crops
    are read at their stored size without a model); ``frames``: crops per video, evenly spaced.
    """

    def __init__(self, root: str | Path, split: str = "test", model: Optional[nn.Module] = None,
                 device: Optional[torch.device] = None, image_size: Optional[int] = None, frames: int = FRAMES):
        self.root, self.split, self.model = Path(root), split, model
        self.device = device or torch.device("cpu")
        self.image_size, self.frames = image_size, frames
        self.image_root, self.depth_root = stage_dir(self.root, split, "images"), stage_dir(self.root, split, "depth")

    def load(self, video: str) -> Dict[str, object]:
        """{'images': (K, 3, S, S) RGB in [0, 1], 'frames': frame numbers, 'mu', 'sigma': (K, M, M) or None};
        {'missing': reason} when the video has no readable frame."""
        frames = list_video_frames(self.image_root / video, self.depth_root / video)
        if not frames:
            return {"missing": f"no frames in {self.image_root / video}"}
        picks = [frames[j] for j in pick_evenly(len(frames), self.frames)]
        try:
            if self.image_size:
                bgr = [read_image(f.image, self.image_size) for f in picks]
            else:
                first = read_image(picks[0].image, _side(picks[0].image))
                bgr = [first] + [read_image(f.image, first.shape[0]) for f in picks[1:]]
        except OSError as e:
            return {"missing": str(e)}
        rgb = torch.from_numpy(np.stack([b[:, :, ::-1] for b in bgr]).copy()).permute(0, 3, 1, 2).float() / 255
        out = {"images": rgb, "frames": [f.index for f in picks], "mu": None, "sigma": None}
        if self.model is not None:
            mu, sigma = predict_maps(self.model, torch.stack([normalise_image(b) for b in bgr]), self.device)
            out.update(mu=mu, sigma=sigma)
        return out


def _side(path: Path) -> int:
    """The height of an image file (crops are square)."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"{path}: cannot be read as an image (missing or corrupt file)")
    return image.shape[0]


# ----------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1280px;
       padding: 0 1em; color: #1b1b1b; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 2px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f1f1f1; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.sub td:first-child { padding-left: 1.6em; }
.tables { display: flex; flex-wrap: wrap; gap: 1.5em; } .tables > div { flex: 1 1 560px; }
figure { margin: 0.8em 0; } figure img { max-width: min(100%, 1100px); border: 1px solid #ddd; }
figcaption, .note { color: #555; font-size: 0.9em; }
.warn { color: #8a1c00; font-weight: 600; }
.cases { display: flex; flex-wrap: wrap; gap: 0.8em; }
.case { border: 1px solid #ddd; border-radius: 6px; padding: 0.5em; flex: 0 1 auto; max-width: min(100%, 36em); }
.case img { max-width: 100%; display: block; margin-top: 0.3em; }
.case .id { font-family: ui-monospace, monospace; font-weight: 600; }
.wrong { border-left: 6px solid #c0392b; } .right { border-left: 6px solid #7f8c8d; }
dl.about { display: grid; grid-template-columns: max-content 1fr; gap: 0.15em 1em; }
dl.about dt { font-weight: 600; }
dl.about dd { margin: 0; font-family: ui-monospace, monospace; word-break: break-all; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
"""


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _metrics_table(result: Mapping, table_id: str) -> str:
    """One mode's result as an HTML table (the rows of ``DUM.metrics.metric_rows``) with its rule and threshold."""
    mode = result["mode"]
    src = "the Dev EER point" if result["threshold_source"] == "dev_eer" else "given"
    rule = " ".join(x.strip() for x in metrics.rule_lines(mode))
    head = [f"<h3>{_e(mode)} rule</h3>", f"<p class=\"note\">{_e(rule)}"
            f"<br>Threshold <b>{result['threshold']:.6g}</b> ({_e(src)}).</p>"]
    rows = []
    for name, value, what in metrics.metric_rows(result):
        sub = " class=\"sub\"" if name.startswith("  ") else ""
        rows.append(f"<tr{sub}><td>{_e(name.strip())}</td><td class=\"num\">{_pct(value)}</td><td>{_e(what)}</td></tr>")
    d = result["dev"]
    rows.append(f"<tr><td>Dev at the threshold</td><td class=\"num\">{_pct(d['acer'])}</td><td>ACER on Dev (APCER "
                f"{_pct(d['apcer'])}, pooled {_pct(d['apcer_pooled'])}, BPCER {_pct(d['bpcer'])}, "
                f"ACC {_pct(d['acc'])})</td></tr>")
    return ("\n".join(head) + f"<table id=\"{_e(table_id)}\" class=\"metrics\"><thead><tr><th>metric</th><th>value</th>"
            "<th>definition</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _per_pai_table(section: Section) -> str:
    """Per-instrument APCER of every mode side by side, with the Test counts."""
    modes = list(section.results)
    first = section.results[modes[0]]
    counts = first["counts"]["test"]["attack"]
    head = "".join(f"<th>APCER ({_e(m)} rule)</th>" for m in modes)
    rows = []
    for label, n in counts.items():
        kind = "unknown instrument" if int(label) == metrics.UNKNOWN_ATTACK else label_kind(int(label))
        cells = "".join(f"<td class=\"num\">{_pct(section.results[m]['apcer_per_pai'][label])}</td>" for m in modes)
        rows.append(f"<tr><td>{_e(label)} {_e(kind)}</td><td class=\"num\">{n}</td>{cells}</tr>")
    bf = first["counts"]["test"]["bona_fide"]
    cells = "".join(f"<td class=\"num\">{_pct(section.results[m]['bpcer'])}</td>" for m in modes)
    rows.append(f"<tr><td>+1 bona fide (BPCER)</td><td class=\"num\">{bf}</td>{cells}</tr>")
    return (f"<h3>Per instrument (Test)</h3><table id=\"pai-{_e(section.key)}\" class=\"per-pai\"><thead><tr>"
            f"<th>instrument</th><th>Test videos</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _coverage_html(result: Mapping) -> str:
    lines = metrics.coverage_lines(result.get("coverage"))
    missing = any("NOT SCORED" in ln or "unknown" in ln for ln in lines)
    return f"<p class=\"{'warn' if missing else 'note'}\">" + "<br>".join(_e(ln) for ln in lines) + "</p>"


def _case_html(case: ErrorCase, threshold: float, strip: Optional[str], note: Optional[str]) -> str:
    kind = "bona fide" if case.label == metrics.BONA_FIDE else (
        "unknown-instrument attack" if case.label == metrics.UNKNOWN_ATTACK else f"{label_kind(case.label)} attack")
    verdict = ("misclassified" if case.misclassified else "correctly classified (the closest call of its class)")
    img = (f"<img src=\"{_e(strip)}\" alt=\"face crops and mu/sigma maps of {_e(case.video)}\">" if strip
           else f"<p class=\"note\">{_e(note)}</p>" if note else "")
    return (f"<div class=\"case {'wrong' if case.misclassified else 'right'}\">"
            f"<span class=\"id\">{_e(case.video)}</span>"
            f" &middot; {_e(kind)} (label {case.label:+d})<br>score <b>{case.score:.6g}</b> (threshold "
            f"{threshold:.6g}, {case.score - threshold:+.3g}) &middot; {_e(verdict)}{img}</div>")


def _figures(section: Section, out: Path, threshold: float, mode: str) -> str:
    from DUM import plots  # matplotlib only when a report is written

    roc, hist = f"roc_det_{section.key}.png", f"score_histogram_{section.key}.png"
    plots.plot_roc_det(section.dev, section.test, out / roc, threshold, mode=mode)
    plots.plot_score_histogram(section.dev, section.test, out / hist, threshold)
    return (f"<figure><img src=\"{roc}\" alt=\"ROC and DET curves\"><figcaption>ROC and DET of Dev and Test, "
            f"the operating point at the {_e(mode)} threshold {threshold:.6g} marked.</figcaption></figure>"
            f"<figure><img src=\"{hist}\" alt=\"score histograms\"><figcaption>Per-video scores of Dev and Test "
            "by class (higher = more bona fide), threshold dashed.</figcaption></figure>")


def _errors_html(section: Section, out: Path, faces: Optional[FaceSource], no_faces: str, n: int,
                 strips: Dict[str, Dict[str, object]]) -> str:
    mode = next(iter(section.results))
    thr = section.results[mode]["threshold"]
    if not math.isfinite(thr):
        return "<p class=\"note\">No worst errors: the threshold is infinite (every Dev score equal).</p>"
    rule = "bona fide iff score >= threshold" if mode == "iso" else "bona fide iff score > threshold"
    w = worst_errors(section.test, thr, mode, n)
    parts = [f"<h3>Worst errors on Test at the {_e(mode)} threshold {thr:.6g} ({_e(rule)})</h3>"]
    if faces is None:
        parts.append(f"<p class=\"note\">Face crops not shown: {_e(no_faces)}</p>")
    elif faces.model is None:
        parts.append("<p class=\"note\">mu / sigma maps not shown: no model was given (DUM/evaluate.py "
                     "--checkpoint).</p>")
    for name, title, count, total in (("attacks", "Attacks scored most live", "attacks_accepted", "attacks_total"),
                                      ("bona_fide", "Bona fide scored most spoof", "bona_fide_rejected",
                                       "bona_fide_total")):
        what = "accepted" if name == "attacks" else "rejected"
        parts.append(f"<h4>{title}: {w[count]} of {w[total]} {what}</h4>")
        if not w[count]:
            parts.append(f"<p class=\"note\">None {what}; the closest correct calls:</p>")
        parts.append(f"<div class=\"cases\" id=\"errors-{_e(section.key)}-{name}\">")
        for rank, case in enumerate(w[name], 1):
            strip, note = None, None  # without faces, the note above the lists says why once
            if faces is not None:
                info = strips.get(case.video) or faces.load(case.video)
                strips[case.video] = info
                if "missing" in info:
                    note = f"no face crops: {info['missing']}"
                else:
                    strip = f"{ERRORS_DIR}/{section.key}_{name}_{rank}.png"
                    save_png(_strip(info, strips), out / strip)
            parts.append(_case_html(case, thr, strip, note))
        parts.append("</div>")
    return "\n".join(parts)


def _strip(info: Mapping, strips: Mapping[str, Mapping]) -> torch.Tensor:
    """The labelled grid of one video: face crops, mu, sigma (rows), one column per frame."""
    rows, names = [info["images"]], ["face"]
    if info["mu"] is not None:
        rows.append(info["mu"].clamp(0, 1))
        names.append("mu\n0 .. 1")
    if info["sigma"] is not None:
        top = max(float(s["sigma"].max()) for s in strips.values() if s.get("sigma") is not None)
        rows.append(colour_map(info["sigma"], top))
        names.append(f"sigma\n0 .. {top:.3g}")
    return labelled_grid(rows, names, [f"frame {i}" for i in info["frames"]])


def write_report(out_dir: str | Path, sections: Sequence[Section], about: Mapping[str, object], *,
                 faces: Optional[FaceSource] = None, no_faces: str = "", errors: int = ERRORS,
                 extra_html: str = "", title: str = "DSDG evaluation report") -> Path:
    """Write the report folder (see the module docstring); returns the path of index.html.

    ``about``: what was evaluated (checkpoint, lists, ...), shown at the top; ``faces``: where the worst
    errors' crops and maps come from, or None with ``no_faces`` saying why there are none; ``extra_html``:
    more content before the end (e.g. DUM/evaluate.py's mean and std over sub-protocols).
    """
    out = Path(out_dir)
    (out / ERRORS_DIR).mkdir(parents=True, exist_ok=True)
    for old in (out / ERRORS_DIR).glob("*.png"):  # strips of an earlier report in this folder
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    body = [f"<h1>{_e(title)}</h1>", f"<p class=\"note\">Written {_e(when)}. Rates in %; higher scores mean more "
            "bona fide. The definitions behind every number are in DUM/metrics.py.</p>", "<dl class=\"about\">"]
    body += [f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in about.items()]
    body.append("</dl>")
    if len(sections) > 1:
        body.append("<p>Sections: " + ", ".join(f"<a href=\"#{_e(s.key)}\">{_e(s.title)}</a>" for s in sections)
                    + "</p>")
    # Sigma strips share one colour scale: load every error video of the report first.
    strips: Dict[str, Dict[str, object]] = {}
    if faces is not None and faces.model is not None:
        for s in sections:
            if s.errors and s.results and math.isfinite(next(iter(s.results.values()))["threshold"]):
                mode = next(iter(s.results))
                w = worst_errors(s.test, s.results[mode]["threshold"], mode, errors)
                for case in w["attacks"] + w["bona_fide"]:
                    strips.setdefault(case.video, faces.load(case.video))
    for s in sections:
        body.append(f"<h2 id=\"{_e(s.key)}\">{_e(s.title)}</h2>")
        if s.error or not s.results:
            body.append(f"<p class=\"warn\">No metrics: {_e(s.error or 'nothing was scored')}</p>")
            continue
        first_mode = next(iter(s.results))
        first = s.results[first_mode]
        body.append(_coverage_html(first))
        body.append("<div class=\"tables\">" + "".join(
            f"<div>{_metrics_table(r, f'metrics-{s.key}-{m}')}</div>" for m, r in s.results.items()) + "</div>")
        body.append(_per_pai_table(s))
        thr = first["threshold"]
        body.append(_figures(s, out, thr if math.isfinite(thr) else None, first_mode))
        if s.errors:
            body.append(_errors_html(s, out, faces, no_faces, errors, strips))
    body.append(extra_html)
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_e(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    index = out / INDEX
    atomic_write_text(index, page)
    log.info("report: %s (open it in a browser)", index)
    return index


def score_sections(by_score: Mapping[str, Mapping], primary: str) -> List[Section]:
    """The sections of DUM/test.py's report: one per reported score, the primary first and the only one with
    worst errors. ``by_score``: report.json's 'by_score' (metrics per mode, score files)."""
    sections = []
    for kind, entry in by_score.items():
        title = f"Score '{kind}'" + (" (primary)" if kind == primary else "")
        if "error" in entry or not entry.get("metrics"):
            sections.append(Section(title, kind, error=entry.get("error", "no metrics")))
            continue
        files = entry["files"]
        dev = metrics.read_scores(files["dev"])
        test = metrics.read_scores(files["test"]) if "test" in files else dev
        sections.append(Section(title, kind, dict(entry["metrics"]), dev, test, errors=kind == primary))
    return sections
