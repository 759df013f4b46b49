"""Score any model's per-video Dev/Test scores: ISO/IEC 30107-3 metrics or the original CDCN/DSDG rule.

    python -m DUM.evaluate --dev Dev_scores.txt --test Test_scores.txt [--mode iso|cdcn]
                           [--threshold VALUE] [--json OUT.json] [--plots DIR]

Score files hold one video per line, ``<video_id> <score> <label>`` (labels +1/1 bona fide, -1 print,
-2 replay, other negative integers other instruments, 0 an attack of unknown instrument) or the
original ``<score> <label>`` (1 live, 0 attack); higher score = more bona fide. The threshold is set
on Dev (its EER point) unless ``--threshold`` is given, then applied to Test.

Cross-dataset tests (CASIA-MFSD <-> Replay-Attack) pass the *source* Dev scores and the *target* Test
scores: ``hter`` is then the HTER on the target at the source Dev threshold. ``--target-eer`` adds the
original code's rule for comparison: the HTER at the target Test set's own EER threshold.

OULU-NPU protocols 3 and 4: pass the six pairs in order (``--dev D1 ... D6 --test T1 ... T6``). Each
pair is scored at its own Dev threshold and the table and JSON add the mean and standard deviation
over the pairs. The definitions behind every number are in ``DUM/metrics.py``. ``--names`` labels the
pairs (SiW-M's leave-one-out folds by the spoof type each tests on): the JSON then carries the names and
the printout ends with a table of the main numbers per pair beside their mean and standard deviation,
the layout of the SiW-M tables (APCER, BPCER, ACER, EER per spoof type, then mean ± std).

A score file only holds the videos that were scored. ``--dev-list`` / ``--test-list`` (the protocol
lists the files come from, paired in the same order) make the table and the JSON say "N of M listed
videos scored" and name the videos missing from the files; without them the table says that this
cannot be checked.

``--report DIR`` writes the HTML evaluation report (DUM/report.py): the tables, figures and the worst
errors of each pair. Score files hold no images, so the errors' face crops need ``--crop-root`` (the crop
root the Test scores come from) and their mu/sigma maps also ``--checkpoint``; without them the page
lists the errors by id and score and says what to pass. ``DUM/test.py --report`` has the model and the
crops at hand and always shows them. ``--bob-scores FILE`` writes the pairs as bob.pad score files
(``bob pad metrics``; format by extension, see ``DUM.metrics``).
"""
if __package__ in (None, ""):  # run as a file: make the repository root importable
    import pathlib
    import sys
    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse
import html
import sys
from pathlib import Path

from data.protocol_lists import ProtocolError, read_protocol
from DUM import metrics
from DUM import report as html_report
from misc.checkpoint import CheckpointError
from misc.device import add_device_argument, resolve_device
from misc.io import atomic_write_json


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("DSDG/DUM evaluation of per-video scores", add_help=False)
    p.add_argument("--dev", nargs="+", required=True, metavar="DEV",
                   help="Dev score file(s); the threshold is chosen here. Several files = several "
                        "sub-protocols (OULU-NPU P3/P4: six), paired in order with --test.")
    p.add_argument("--test", nargs="+", required=True, metavar="TEST",
                   help="Test score file(s), as many as --dev; the metrics are measured here.")
    p.add_argument("--mode", choices=metrics.MODES, default="iso",
                   help="iso: ISO/IEC 30107-3 (tie -> bona fide, Dev-EER threshold over the Dev scores, "
                        "APCER = worst instrument). cdcn: reproduce the original CDCN/DSDG performances() "
                        "exactly (sklearn-ROC EER threshold, tie -> attack, pooled APCER). The paper's "
                        "tables were most likely made with cdcn. Default: iso.")
    p.add_argument("--threshold", type=float, nargs="+", default=None, metavar="VALUE",
                   help="Use this decision threshold instead of the Dev EER one: one value for all "
                        "pairs or one per pair. Default: none (Dev EER).")
    p.add_argument("--json", default=None, metavar="OUT",
                   help="Write the metrics (fractions) to this JSON file, atomically. With several "
                        "pairs it holds 'subprotocols' (one result each) and 'aggregate'. Default: none.")
    p.add_argument("--plots", default=None, metavar="DIR",
                   help="Write roc_det.png and score_histogram.png (per pair: _<k> suffix) here. Default: none.")
    p.add_argument("--target-eer", action="store_true",
                   help="Also report the HTER at the Test set's own EER threshold, the original's "
                        "performances_CASIA_Replay rule for cross-dataset tests (optimistic: no Dev set involved). "
                        "Default: off.")
    p.add_argument("--dev-list", nargs="+", type=Path, default=None, metavar="LIST",
                   help="protocol list(s) (<label>,<video> rows) the Dev file(s) should cover, one per --dev; "
                        "the report then counts and names the listed videos without a score. Default: none")
    p.add_argument("--test-list", nargs="+", type=Path, default=None, metavar="LIST",
                   help="the same for --test. Default: none")
    p.add_argument("--names", nargs="+", default=None, metavar="NAME",
                   help="a name per pair, in order (e.g. the spoof type each SiW-M fold leaves out); adds a table "
                        "with one column per pair and the names to the JSON. Default: none")
    p.add_argument("--std-ddof", type=int, default=1, choices=(0, 1),
                   help="Degrees of freedom of the std over sub-protocols: 1 = sample std (default), "
                        "0 = numpy's population std. The OULU-NPU papers do not say which they use.")
    g = p.add_argument_group("HTML report and other tools' formats")
    g.add_argument("--report", type=Path, default=None, metavar="DIR",
                   help="write the HTML evaluation report here (DIR/index.html and its PNGs; opens in a browser, no "
                        "server or network): the tables, ROC/DET, histograms, per-instrument APCER and the worst "
                        "errors of each pair. Score files hold no images: the errors' face crops need --crop-root, "
                        "their mu/sigma maps also --checkpoint; without them the page lists the errors and says so. "
                        "Default: none")
    g.add_argument("--crop-root", type=Path, default=None, metavar="ROOT",
                   help="with --report: the crop root the Test scores come from (its test_images/<video>/ folders "
                        "give the worst errors' face crops). Default: none")
    g.add_argument("--checkpoint", type=Path, default=None, metavar="FILE",
                   help="with --report and --crop-root: the model that made the scores (any file DUM/test.py "
                        "takes); it predicts the mu/sigma maps of the worst errors' crops. Default: none")
    add_device_argument(g)
    g.add_argument("--report-errors", type=int, default=html_report.ERRORS, metavar="N",
                   help="worst errors shown per class and pair. Default: %(default)s")
    g.add_argument("--report-frames", type=int, default=html_report.FRAMES, metavar="K",
                   help="face crops shown per error video. Default: %(default)s")
    g.add_argument("--bob-scores", type=Path, default=None, metavar="FILE",
                   help="also write every pair as bob.pad score files for 'bob pad metrics -e DEV EVAL': FILE with "
                        "-dev / -eval before the extension (scores.csv -> scores-dev.csv, scores-eval.csv; several "
                        "pairs: scores_1-dev.csv, ...). A .csv name writes the CSV format of bob.pad.base 5.x/6.x "
                        "(is_bonafide, attack_type columns), any other name the four-column 'claimed_id real_id "
                        "test_label score' format of bob.pad.base before 5.0. Default: none")
    return p


def _thresholds(args: argparse.Namespace, n: int) -> list:
    if args.threshold is None:
        return [None] * n
    if len(args.threshold) == 1:
        return args.threshold * n
    if len(args.threshold) != n:
        raise SystemExit(f"--threshold takes 1 value or one per pair ({n}), got {len(args.threshold)}")
    return list(args.threshold)


def _lists(given, n: int, flag: str) -> list:
    """One protocol list (its video ids) per score file, or None each when not given."""
    if given is None:
        return [None] * n
    if len(given) != n:
        raise SystemExit(f"{flag} takes one list per score file ({n}), got {len(given)}")
    try:
        return [[r.video for r in read_protocol(path)] for path in given]
    except ProtocolError as e:
        raise SystemExit(f"error: {e}") from None


def _coverage(dev: metrics.ScoreSet, test: metrics.ScoreSet, dev_ids, test_ids):
    """The coverage entry of one pair, or None when no list was given."""
    if dev_ids is None and test_ids is None:
        return None
    out = {}
    for split, scores, ids in (("dev", dev, dev_ids), ("test", test, test_ids)):
        if ids is None:
            continue
        if scores.ids and scores.ids[0].startswith("line:"):
            raise SystemExit(f"{scores.source}: a two-column '<score> <label>' file names no videos, so it cannot "
                             "be checked against a list; leave --dev-list/--test-list out for it")
        out[split] = metrics.coverage(scores.ids, ids)
    return out


def _check_report_args(args: argparse.Namespace) -> None:
    if (args.crop_root or args.checkpoint) and not args.report:
        raise SystemExit("--crop-root and --checkpoint are for the worst errors of --report DIR; add --report")
    if args.checkpoint and not args.crop_root:
        raise SystemExit("--checkpoint predicts the maps of the errors' face crops, which come from --crop-root; "
                         "add --crop-root")
    if args.crop_root and not (args.crop_root / "test_images").is_dir():
        raise SystemExit(f"--crop-root {args.crop_root}: has no test_images folder (made by "
                         "DUM/make_dataset/crop_dataset.py)")
    if args.report_errors < 1 or args.report_frames < 1:
        raise SystemExit("--report-errors and --report-frames must be at least 1")


def _face_source(args: argparse.Namespace, pairs: list):
    """(FaceSource or None, why there are no faces) for the report."""
    if args.crop_root is None:
        return None, ("DUM/evaluate.py reads score files, which hold no images; pass --crop-root CROP_ROOT (and "
                      "--checkpoint MODEL for the mu/sigma maps), or use DUM/test.py --report")
    if any(test.ids and test.ids[0].startswith("line:") for _, test, _ in pairs):
        return None, "the two-column '<score> <label>' files name no videos, so no face can be found for a score"
    model, image_size, device = None, None, None
    if args.checkpoint is not None:
        from DUM.weights import input_size, load_model

        device = resolve_device(args.device)
        model, meta = load_model(args.checkpoint, device, return_meta=True)
        image_size = input_size(meta)
    return html_report.FaceSource(args.crop_root, "test", model, device, image_size, args.report_frames), ""


def write_extras(args: argparse.Namespace, pairs: list, report: dict) -> None:
    """--bob-scores and --report of the evaluated pairs [(dev, test, result)]; their paths go into ``report``."""
    tag = (lambda k: f"_{k}") if len(pairs) > 1 else (lambda k: "")
    if args.bob_scores:
        report["bob_scores"] = [metrics.write_bob_pair(args.bob_scores, dev, test, tag(k))
                                for k, (dev, test, _) in enumerate(pairs, 1)]
        print(f"bob.pad score files ({report['bob_scores'][0]['format']}): "
              + " ".join(f"{b['dev']} {b['eval']}" for b in report["bob_scores"]))
    if not args.report:
        return
    sections = []
    for k, (dev, test, r) in enumerate(pairs, 1):
        name = f": {args.names[k - 1]}" if args.names else ""
        title = f"Pair {k}/{len(pairs)}{name}" if len(pairs) > 1 else "Scores"
        sections.append(html_report.Section(title, f"pair{k}" if len(pairs) > 1 else "scores", {args.mode: r},
                                            dev, test))
    faces, why = _face_source(args, pairs)
    about = {"Dev score files": " ".join(args.dev), "Test score files": " ".join(args.test), "mode": args.mode,
             "threshold": "given: " + " ".join(map(str, args.threshold)) if args.threshold else "Dev EER",
             "crop root": args.crop_root or "not given", "model": args.checkpoint or "not given",
             "written by": "DUM/evaluate.py"}
    extra = ""
    if "aggregate" in report:
        agg = report["aggregate"]
        extra = ("<h2 id=\"aggregate\">Mean and standard deviation over the pairs</h2><pre>"
                 + html.escape(metrics.format_table(agg)
                               + ("\n\n" + metrics.format_per_pair(agg) if args.names else "")) + "</pre>")
    report["report"] = str(html_report.write_report(args.report, sections, about, faces=faces, no_faces=why,
                                                    errors=args.report_errors, extra_html=extra))
    print(f"evaluation report: {report['report']} (open it in a browser)")


def main(args: argparse.Namespace) -> dict:
    _check_report_args(args)
    if len(args.dev) != len(args.test):
        raise SystemExit(f"--dev has {len(args.dev)} files but --test has {len(args.test)}; pair them in order")
    dev_lists = _lists(args.dev_list, len(args.dev), "--dev-list")
    test_lists = _lists(args.test_list, len(args.test), "--test-list")
    if args.names is not None and len(args.names) != len(args.dev):
        raise SystemExit(f"--names takes one name per pair ({len(args.dev)}), got {len(args.names)}")
    results, pairs = [], []
    for k, (dev_path, test_path, thr) in enumerate(zip(args.dev, args.test, _thresholds(args, len(args.dev))), 1):
        dev, test = metrics.read_scores(dev_path), metrics.read_scores(test_path)
        r = metrics.evaluate(dev, test, mode=args.mode, threshold=thr, target_eer=args.target_eer)
        cov = _coverage(dev, test, dev_lists[k - 1], test_lists[k - 1])
        if cov is not None:
            r["coverage"] = cov
        if args.names:
            r["name"] = args.names[k - 1]
        results.append(r)
        pairs.append((dev, test, r))
        if len(args.dev) > 1:
            print(f"=== pair {k}/{len(args.dev)}" + (f": {args.names[k - 1]}" if args.names else "") + " ===")
        print(metrics.format_table(r), end="\n\n")
        if args.plots:
            from DUM import plots  # matplotlib only when asked for

            tag = f"_{k}" if len(args.dev) > 1 else ""
            out = Path(args.plots)
            plots.plot_roc_det(dev, test, out / f"roc_det{tag}.png", r["threshold"], mode=args.mode)
            plots.plot_score_histogram(dev, test, out / f"score_histogram{tag}.png", r["threshold"])
    if len(results) == 1:
        report = results[0]
    else:
        agg = metrics.aggregate(results, ddof=args.std_ddof)
        print(metrics.format_table(agg))
        if args.names:
            agg["names"] = list(args.names)
            print("\n" + metrics.format_per_pair(agg))
        report = {"subprotocols": results, "aggregate": agg}
    write_extras(args, pairs, report)
    if args.json:
        atomic_write_json(args.json, metrics.json_ready(report))
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()],
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    try:
        main(parser.parse_args())
    except (ValueError, OSError, CheckpointError) as e:  # bad score files, one-class sets, unusable models:
        sys.exit(f"error: {e}")                            # the messages name the file and the problem
