"""Test a CDCN + DUM model on a protocol's Dev and Test lists: per-video scores, metrics, plots.

    python -m DUM.test --checkpoint DUM/checkpoint/CDCN_U_P1.pkl --crop-root CROP_ROOT --protocol 1 \\
                       --output-dir runs/test_p1 [--score mean|cdcn] [--scores mean cdcn] \\
                       [--frames-per-video N]

The checkpoint is the released ``CDCN_U_P1.pkl``, a bare state_dict of another network of
``DUM/zoo.py`` in the original's layout, or one written by ``DUM/train.py``; the network is the one
the checkpoint stores, or the one its keys belong to (``--model`` must agree, or picks it). The
threshold is set on Dev (its EER point) and applied to Test; the report gives ISO/IEC 30107-3
metrics (``iso``) and the original code's rule (``cdcn``) side by side.

Both per-video scores are reported in one run (``--scores``, default ``mean cdcn``): ``mean``, the
average predicted depth, which needs only the image (what a deployment uses), and ``cdcn``, the
original's ratio to the test frame's depth map (what the paper's evaluation computes; frames without
a map are left out of it for live and attack videos alike, and counted). ``--score`` names the
primary one: its tables are printed first and it fills the files and keys that older runs had.

Output folder (``--output-dir``):

    dev_scores.txt, test_scores.txt     the primary score, ``<video_id> <score> <label>`` per line
    {dev,test}_scores_<score>.txt       one pair per reported score (``_mean``, ``_cdcn``)
    missing_videos.txt                  listed videos a score could not score: split, score, video, reason
    roc_det.png, score_histogram.png    the primary score's (``_<score>`` suffix for the others)
    report.json, test.log

``--report DIR`` adds the HTML evaluation report (DUM/report.py: one folder, DIR/index.html, that opens
in a browser): every score's tables in both modes, ROC/DET, histograms, per-instrument APCER, and the
primary score's worst errors with their face crops and the mu/sigma maps this model predicts for them.
``--bob-scores FILE`` adds the score files that bob.pad's ``bob pad metrics`` reads (``DUM.metrics``'
bob formats: CSV of bob.pad.base 5.x/6.x for a .csv name, else the four-column files of earlier versions).

``report.json``: the keys of earlier versions keep their meaning and refer to the primary score:
``score`` (its name), ``metrics`` ({mode: result of ``DUM.metrics.evaluate``}), ``files``, ``error``
(only when it has no metrics), and ``dev``/``test`` (frames scored, cdcn exclusions and videos
without frames or score). Added: ``scores_reported`` (the names, primary first); ``coverage``
({'dev'/'test': {'listed', 'scored', 'missing', 'missing_file'}}: "N of M listed videos scored",
also inside each metrics result); ``by_score``: {score: {'metrics': {mode: result}, 'files',
'coverage', 'videos_without_score': {'dev', 'test'}, 'error' when it has no metrics}}, so the metrics
of score S in mode M are ``report["by_score"][S]["metrics"][M]``; the checkpoint's details; ``report``
(the HTML report's index.html) and ``bob_scores`` ({score: {'dev', 'eval', 'format'}}) when asked for;
``precision`` (``--precision``: 'name' fp32/bf16/fp16, 'requested', 'reason', 'native', and 'vs_fp32': for a
run not in fp32, per score and rule the largest |score difference| from an fp32 pass over the scored videos
and the decisions that differ at the Dev thresholds; ``misc/precision.py``).
"""
if __package__ in (None, ""):  # run as a file: make the repository root importable
    import pathlib
    import sys
    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse
import functools
import sys
from pathlib import Path

import numpy as np

from data.protocol_lists import ProtocolError, parse_protocol_name, read_protocol
from DUM import scoring, zoo
from DUM import report as html_report
from DUM.datasets import VideoFramesDataset, eval_list_path
from DUM.weights import input_size, load_model
from misc.checkpoint import CheckpointError
from misc.cli import add_renamed_argument, bool_flag
from misc.device import add_device_argument, resolve_device
from misc import precision
from misc.io import atomic_write_json
from misc.logger import log_run_header, setup_logging
from misc.run_dir import checkpoint_file
from misc.workers import resolve_workers, workers_type


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("DSDG depth network (CDCN + DUM) testing", add_help=False)
    p.add_argument("--checkpoint", required=True, type=checkpoint_file,
                   help="the released CDCN_U_P1.pkl (DataParallel state_dict), a checkpoint of DUM/train.py, or its "
                        "run directory (then its newest checkpoint)")
    add_renamed_argument(p, "--crop-root", "--data-root", required=True, type=Path,
                         help="crop root (DUM/make_dataset/crop_dataset.py)")
    p.add_argument("--protocol", default="1",
                   help="OULU-NPU protocol: 1, 2, 3_k or 4_k (k = 1..6), or an adapted dataset's siw_1, siw_2_k, "
                        "siw_3_k, casia, replay. Default: %(default)s")
    p.add_argument("--dev-list", type=Path, default=None,
                   help="Dev list; default <crop-root>/protocols/Protocol_N/Dev[_k].txt")
    p.add_argument("--test-list", type=Path, default=None,
                   help="Test list; default <crop-root>/protocols/Protocol_N/Test[_k].txt. Another dataset's Test "
                        "list in the same crop root makes a cross-dataset test (threshold from this protocol's Dev)")
    p.add_argument("--score", choices=scoring.SCORES, default="mean",
                   help="the primary per-video score: its tables come first and it writes dev_scores.txt and "
                        "test_scores.txt. mean: the average predicted depth (needs only the image; default). "
                        "cdcn: the original's sum(mu) / sum(GT depth) per frame, which needs the depth map of the "
                        "test frame; for comparison with the paper")
    p.add_argument("--scores", nargs="+", choices=scoring.SCORES, default=list(scoring.SCORES),
                   help="every score to report, each with its own score files and metrics (--score is added "
                        "if left out). Default: %(default)s")
    p.add_argument("--frames-per-video", type=int, default=0,
                   help="frames scored per video, evenly spaced; 0 = all (the original). Default: %(default)s")
    p.add_argument("--image-size", type=int, default=None,
                   help="input size; default: the checkpoint's training size, 256 for the released file")
    p.add_argument("--map-size", type=int, default=None,
                   help="depth map size; default: the checkpoint's, 32 for the released file")
    p.add_argument("--model", choices=zoo.NAMES, default=None,
                   help="the network the checkpoint must be; default: the one DUM/train.py stored in it, or for a "
                        "bare state_dict the one its keys belong to (CDCN_U_P1.pkl: cdcn_u). A different name is "
                        "an error")
    p.add_argument("--theta", type=float, default=None,
                   help="central difference theta; default: the checkpoint's, 0.7 for the released file")
    p.add_argument("--batch-size", type=int, default=64, help="frames per forward pass")
    p.add_argument("--workers", type=workers_type, default=None,
                   help="data loading processes (0 = in the main process); default 4, at most the usable CPU cores")
    add_device_argument(p)
    precision.add_precision_argument(p, "auto")
    p.add_argument("--fp32-check", type=bool_flag, default=True,
                   help="when the precision is not fp32, score Dev and Test once more in fp32 and report the largest "
                        "score difference and the decisions that differ at the Dev thresholds (report.json "
                        "'precision'); costs one fp32 pass. Default: true")
    p.add_argument("--plots", type=bool_flag, default=True, help="write ROC/DET and histogram PNGs. Default: true")
    p.add_argument("--output-dir", type=Path, default=Path("runs/dum_test"),
                   help="where the score files, missing_videos.txt, report.json, the plots and test.log go")
    p.add_argument("--report", type=Path, default=None, metavar="DIR",
                   help="write the HTML evaluation report here (DIR/index.html and its PNGs, no server or network "
                        "needed): the tables of every score and mode, ROC/DET, histograms, per-instrument APCER and "
                        "the worst errors with face crops and mu/sigma maps (DUM/report.py). "
                        "scripts/09_test_dum.sh writes <TEST_DIR>/report. Default: none")
    p.add_argument("--report-errors", type=int, default=html_report.ERRORS, metavar="N",
                   help="worst errors shown per class (accepted attacks, rejected bona fide). Default: %(default)s")
    p.add_argument("--report-frames", type=int, default=html_report.FRAMES, metavar="K",
                   help="face crops (with their maps) shown per error video, evenly spaced. Default: %(default)s")
    p.add_argument("--bob-scores", type=Path, default=None, metavar="FILE",
                   help="also write the scores for bob.pad's 'bob pad metrics -e DEV EVAL': FILE with -dev / -eval "
                        "before the extension (scores.csv -> scores-dev.csv, scores-eval.csv; the other scores add "
                        "_<score>: scores_cdcn-dev.csv). A .csv name writes the CSV format of bob.pad.base 5.x/6.x "
                        "(is_bonafide, attack_type columns), any other the four-column 'claimed_id real_id "
                        "test_label score' format of bob.pad.base before 5.0. Default: none")
    return p


def main(args: argparse.Namespace) -> dict:
    from DUM import metrics

    args.output_dir.mkdir(parents=True, exist_ok=True)
    log = setup_logging(args.output_dir / "test.log")
    log_run_header(log, args)
    parse_protocol_name(args.protocol)  # fail early on a bad name
    if args.report_errors < 1 or args.report_frames < 1:
        raise SystemExit("--report-errors and --report-frames must be at least 1")
    device = resolve_device(args.device)
    prec = precision.resolve_precision(
        precision.requested_spec(args, "auto", "fp16" if device.type == "cuda" else "auto"), device, log)
    workers = resolve_workers(args.workers, 4, "data loading workers", log)

    model, meta = load_model(args.checkpoint, device, theta=args.theta, map_size=args.map_size,
                             model=args.model, return_meta=True)
    image_size = args.image_size or input_size(meta)
    log.info("model: %s file %s, %s, %d px input, %d x %d maps", meta["source"], args.checkpoint,
             zoo.get(meta["model"]).describe(model.theta), image_size, model.map_size, model.map_size)

    datasets, lists = {}, {}
    for split, given in (("Dev", args.dev_list), ("Test", args.test_list)):
        path = lists[split] = given or eval_list_path(args.crop_root, args.protocol, split)
        rows = read_protocol(path)
        datasets[split] = VideoFramesDataset(args.crop_root, split.lower(), rows, image_size, model.map_size,
                                             args.frames_per_video)
        log.info("%s list %s: %d videos, %d frames to score", split, path, len(rows), len(datasets[split]))

    report = scoring.evaluate(model, datasets["Dev"], datasets["Test"], device, args.output_dir, score=args.score,
                             scores=tuple(args.scores), modes=metrics.MODES, batch_size=args.batch_size,
                             workers=workers, precision=prec, plots=args.plots)
    report.update(checkpoint=str(args.checkpoint), checkpoint_source=meta["source"], model=meta["model"],
                  checkpoint_epoch=meta["epoch"], training_threshold=meta["extra"].get("threshold"),
                  protocol=args.protocol, frames_per_video=args.frames_per_video, image_size=image_size,
                  map_size=model.map_size)
    vs_fp32 = fp32_check(args, report, model, datasets, device, workers, prec)
    report["precision"] = {**prec.as_dict(), "vs_fp32": vs_fp32}
    atomic_write_json(args.output_dir / "report.json", metrics.json_ready(report))
    if args.bob_scores or args.report:  # after report.json, so that the metrics are kept whatever happens here
        if args.bob_scores:
            report["bob_scores"] = write_bob_files(report, args.bob_scores, log)
        if args.report:
            report["report"] = str(write_html(args, report, model, meta, device, image_size, lists))
        atomic_write_json(args.output_dir / "report.json", metrics.json_ready(report))
    for split in ("dev", "test"):
        s = report[split]
        log.info("%s: %d videos scored from %d frames; cdcn score: %d frames left out (%d without a GT map, "
                 "%d with an empty one), %d videos without it; %d listed videos without frames", split,
                 s["videos"], s["frames"], s["cdcn_excluded_frames"], s["cdcn_frames_without_map"],
                 s["cdcn_frames_empty_map"], len(s["videos_without_cdcn_score"]), len(s["videos_without_frames"]))
    for kind in report["scores_reported"]:
        entry = report["by_score"][kind]
        if "error" in entry:
            log.error("score '%s': no metrics: %s", kind, entry["error"])
            continue
        for mode in metrics.MODES:
            print(f"=== score '{kind}'{' (primary)' if kind == args.score else ''}, {mode} rule ===")
            print(metrics.format_table(entry["metrics"][mode]), end="\n\n")
    print(precision_line(report["precision"]))
    log.info("wrote %s", args.output_dir / "report.json")
    if "report" in report:
        print(f"evaluation report: {report['report']} (open it in a browser)")
    return report


def fp32_check(args: argparse.Namespace, report: dict, model, datasets: dict, device, workers: int, prec) -> dict:
    """What the run's precision changed against fp32 (``--fp32-check``): Dev and Test rescored in fp32;
    for every reported score and rule, the largest |score difference| over the videos both scored and
    the decisions that differ, each run at its own Dev EER threshold ('flips') and both at this run's
    ('flips_at_same_threshold'). {'measured': False, 'why'} for an fp32 run or with the check off."""
    from DUM import metrics

    if not prec.mixed:
        return {"measured": False, "why": "the run is fp32"}
    if not args.fp32_check:
        return {"measured": False, "why": "--fp32-check false"}
    reference = {name.lower(): scoring.score_videos(model, ds, device, args.batch_size, workers,
                                                   precision.fp32_on(device), desc=f"fp32 check {name}")
                 for name, ds in datasets.items()}
    out = {"measured": True, "by_score": {}}
    for kind in report["scores_reported"]:
        entry = report["by_score"][kind]
        if "error" in entry:
            continue
        runs = {split: metrics.read_scores(entry["files"][split])
                for split in ("dev", "test") if split in entry["files"]}
        refs = {split: dict(zip(reference[split].ids, getattr(reference[split], kind))) for split in runs}
        ids = [f"{split}/{v}" for split, s in runs.items() for v in s.ids]
        got = np.concatenate([s.scores for s in runs.values()])
        ref = np.array([refs[split][v] for split, s in runs.items() for v in s.ids], np.float64)
        ref_dev = metrics.ScoreSet(runs["dev"].ids, ref[: len(runs["dev"])], runs["dev"].labels)
        out["by_score"][kind] = {}
        for mode in entry["metrics"]:
            rule = functools.partial(metrics.accepted, mode=mode)
            thr = entry["metrics"][mode]["threshold"]
            own = precision.score_deviation(got, ref, thr, rule, metrics.eer_threshold(ref_dev, mode)[0], ids)
            same = precision.score_deviation(got, ref, thr, rule, ids=ids)
            out["by_score"][kind][mode] = {**own, "flips_at_same_threshold": same["flips"],
                                           "flipped_at_same_threshold": same["flipped"]}
    return out


def precision_line(info: dict) -> str:
    """One printed line: the precision and, when measured, its effect on the primary score."""
    line = f"precision: {info['name']} ({info['reason']})"
    check = info["vs_fp32"]
    if not check["measured"]:
        return f"{line}; no fp32 comparison ({check['why']})"
    for kind, modes in check["by_score"].items():
        for mode, d in modes.items():
            line += (f"\n  vs fp32, score '{kind}', {mode} rule: max |d score| {d['max_abs_diff']:.3g} over "
                     f"{d['items']} videos, {d['flips']} decisions differ at the Dev thresholds "
                     f"({d['flips_at_same_threshold']} at the same threshold)")
    return line


def write_bob_files(report: dict, path: Path, log) -> dict:
    """bob.pad score files of every score with metrics (``--bob-scores``): {score: {'dev', 'eval', 'format'}}."""
    from DUM import metrics

    out = {}
    for kind in report["scores_reported"]:
        files = report["by_score"][kind]["files"]
        if "dev" not in files:
            log.warning("score '%s': no scores, so no bob score files", kind)
            continue
        dev = metrics.read_scores(files["dev"])
        test = metrics.read_scores(files["test"]) if "test" in files else dev
        out[kind] = metrics.write_bob_pair(path, dev, test, "" if kind == report["score"] else f"_{kind}")
        log.info("bob score files (%s) of score '%s': %s %s", out[kind]["format"], kind, out[kind]["dev"],
                 out[kind]["eval"])
    return out


def write_html(args: argparse.Namespace, result: dict, model, meta: dict, device, image_size: int, lists: dict) -> Path:
    """The HTML report of ``--report`` (DUM/report.py): every score, both modes, the primary's worst errors with
    face crops from the crop root and the maps this model predicts for them."""
    about = {"checkpoint": f"{args.checkpoint} ({meta['source']}, epoch {meta['epoch']})",
             "network": zoo.get(meta["model"]).describe(model.theta),
             "input / maps": f"{image_size} px faces, {model.map_size} x {model.map_size} depth maps",
             "protocol": args.protocol, "crop root": args.crop_root,
             "Dev list": lists["Dev"], "Test list": lists["Test"],
             "frames per video": args.frames_per_video or "all",
             "scores": ", ".join(result["scores_reported"]) + f" (primary: {result['score']})",
             "written by": "DUM/test.py"}
    for split in ("dev", "test"):
        cov = result["coverage"].get(split)
        if cov:
            about[f"{split.capitalize()} videos"] = f"{cov['scored']} of {cov['listed']} listed videos scored " \
                                                     f"(score '{result['score']}')"
    faces = html_report.FaceSource(args.crop_root, "test", model, device, image_size, args.report_frames)
    sections = html_report.score_sections(result["by_score"], result["score"])
    return html_report.write_report(args.report, sections, about, faces=faces, errors=args.report_errors)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__.split("\n\n")[0])
    try:
        main(parser.parse_args())
    except (CheckpointError, ProtocolError, OSError) as e:  # the messages name the file and the problem
        sys.exit(f"error: {e}")
