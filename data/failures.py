"""What failed where: the end-of-run summary the pipeline drivers print.

    python -m data.failures PREP_ROOT CROP_ROOT runs/test_p1/report.json ...

A folder argument is a root whose ``reports/<stage>.json`` files (written by every stage through
``data/prep_common.write_report``) are read, plus the ``generated_p<tag>.json`` manifests of
``generated.py`` in it; a file argument is a ``report.json`` of ``DUM/test.py``. For each stage the
summary gives the videos done and failed and names the failed ones; for each test report how many
listed Dev and Test videos were scored, per score, and which were not. Paths that do not exist
(stages not run) are skipped. It only reads and prints, and exits 0, so a driver can call it last.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: make the repository root importable
    import pathlib
    import sys
    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse
import json
import sys
from pathlib import Path
from typing import List

LIMIT = 10  # failures named per stage; the report file has them all


def stage_lines(path: Path) -> List[str]:
    """The summary of one ``reports/<stage>.json``."""
    try:
        r = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return [f"{path}: unreadable report ({e})"]
    v = r.get("videos", {})
    per_video = r.get("video_failures", r.get("failures", []))
    fatal = r.get("fatal", [])
    seen = r.get("videos_seen", v.get("done", 0) + v.get("skipped", 0) + len(per_video))
    head = f"{r.get('stage', path.stem)}: {seen - len(per_video)} of {seen} videos complete"
    if per_video:
        head += f", {len(per_video)} FAILED"
    if fatal:
        head += f", {len(fatal)} failure(s) outside single videos (the stage stopped with an error)"
    if r.get("not_run"):
        head += f", {r['not_run']} not processed (--strict stopped at a failure)"
    out = [f"{head}  [{path}]"]
    for item in (fatal + per_video)[:LIMIT]:
        out.append(f"    {item}")
    if len(fatal) + len(per_video) > LIMIT:
        out.append(f"    ... {len(fatal) + len(per_video) - LIMIT} more in {path}")
    return out


def generated_lines(path: Path) -> List[str]:
    """Where the depth labels of generated live faces came from (``generated_p<tag>.json``)."""
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return [f"{path}: unreadable manifest ({e})"]
    s, settings = m.get("summary") or {}, m.get("settings", {})
    if not s:
        return [f"{path.stem}: generation did not finish  [{path}]"]
    return [f"{path.stem}: {s.get('pairs', 0)} pairs; depth labels of the live images: "
            f"{s.get('depth_maps_primary', 0)} by '{settings.get('depth_backend')}', "
            f"{s.get('depth_maps_fallback', 0)} by the fallback '{settings.get('fallback_backend')}' "
            f"(no face found) in this run  [{path}]"]


def test_lines(path: Path) -> List[str]:
    """Dev/Test coverage of one ``DUM/test.py`` report, per score."""
    try:
        r = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return [f"{path}: unreadable report ({e})"]
    by_score = r.get("by_score") or {r.get("score", "?"): {"coverage": r.get("coverage", {})}}
    out = []
    for kind, entry in by_score.items():
        parts = []
        for split, c in sorted((entry.get("coverage") or {}).items()):
            part = f"{split.capitalize()} {c['scored']} of {c['listed']}"
            if c.get("missing"):
                part += " (not scored: " + ", ".join(c["missing"][:LIMIT]) + (" ..." if len(c["missing"]) > LIMIT
                                                                               else "") + ")"
            parts.append(part)
        what = "; ".join(parts) if parts else "coverage not recorded"
        error = f"; no metrics: {entry['error']}" if entry.get("error") else ""
        out.append(f"test, score '{kind}': listed videos scored: {what}{error}  [{path}]")
    return out


def summary_lines(paths: List[Path]) -> List[str]:
    lines: List[str] = []
    for p in paths:
        if p.is_dir():
            for report in sorted((p / "reports").glob("*.json")):
                lines += stage_lines(report)
            for manifest in sorted(p.glob("generated_p*.json")):
                lines += generated_lines(manifest)
        elif p.is_file():
            lines += test_lines(p)
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path,
                        help="roots holding reports/ (PREP_ROOT, CROP_ROOT) and DUM/test.py report.json files")
    args = parser.parse_args(argv)
    lines = summary_lines(args.paths)
    print("\n".join(lines) if lines else "no stage reports found under " + " ".join(map(str, args.paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
