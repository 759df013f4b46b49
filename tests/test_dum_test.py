"""End-to-end tests of DUM/test.py on a small crop root (released-format and project checkpoints)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from DUM import test as dum_test
from DUM.datasets import VideoFramesDataset
from DUM.weights import load_model
from DUM.metrics import read_scores
from DUM.models import CDCN_U
from data.protocol_lists import read_protocol
from misc.checkpoint import save_checkpoint
from misc.io import atomic_write_image
from dum_helpers import make_crop_root
from cli_helpers import cli_help

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def crop_root(tmp_path_factory):
    root = make_crop_root(tmp_path_factory.mktemp("crop"), image_size=32, map_size=4, frames=3)
    # One Test attack loses every map, one Dev attack gets an all-black (empty) map on one frame.
    for f in (root / "test_depth" / "1_3_36_2").iterdir():
        f.unlink()
    atomic_write_image(root / "dev_depth" / "1_1_21_4" / "1_1_21_4_2_depth1D.jpg", np.zeros((4, 4), np.uint8))
    return root


@pytest.fixture(scope="module")
def released_file(tmp_path_factory):
    """A random CDCN_U saved the way the released CDCN_U_P1.pkl was (DataParallel state_dict)."""
    torch.manual_seed(0)
    net = torch.nn.DataParallel(CDCN_U())
    path = tmp_path_factory.mktemp("ckpt") / "CDCN_U_P1.pkl"
    torch.save(net.state_dict(), path)
    return path


def _run(root, checkpoint, out, *extra):
    args = dum_test.get_args_parser().parse_args(
        ["--checkpoint", str(checkpoint), "--crop-root", str(root), "--output-dir", str(out),
         "--image-size", "32", "--map-size", "4", "--workers", "0", "--device", "cpu",
         *(() if {"--precision", "--amp"} & set(extra) else ("--precision", "fp32")), *extra])
    return dum_test.main(args)


def test_released_checkpoint_end_to_end(crop_root, released_file, tmp_path):
    """Score files (protocol labels), report with both rules, and plots from the released format."""
    out = tmp_path / "out"
    report = _run(crop_root, released_file, out)
    dev, test = read_scores(out / "dev_scores.txt"), read_scores(out / "test_scores.txt")
    assert len(dev) == len(test) == 12
    assert sorted(set(test.labels.tolist())) == [-2, -1, 1] and sorted(set(dev.labels.tolist())) == [-1, 1]
    saved = json.loads((out / "report.json").read_text())
    assert saved["score"] == "mean" and saved["checkpoint_source"] == "released"
    assert saved["model"] == "cdcn_u"  # recognised from the keys of the released layout
    assert set(saved["metrics"]) == {"iso", "cdcn"}
    assert set(saved["metrics"]["iso"]["apcer_per_pai"]) == {"-1", "-2"}
    assert saved["metrics"]["iso"]["threshold"] == report["metrics"]["iso"]["threshold"]
    for png in ("roc_det.png", "score_histogram.png"):
        assert (out / png).stat().st_size > 1000


def test_mean_score_is_the_average_predicted_depth(crop_root, released_file, tmp_path):
    """A video's mean score equals mu averaged over its frames' maps, recomputed by hand."""
    out = tmp_path / "out"
    _run(crop_root, released_file, out, "--frames-per-video", "2", "--plots", "false")
    scores = read_scores(out / "dev_scores.txt")
    model = load_model(released_file, map_size=4)
    rows = read_protocol(crop_root / "protocols" / "Protocol_1" / "Dev.txt")
    ds = VideoFramesDataset(crop_root, "dev", rows, 32, 4, frames_per_video=2)
    video = ds.videos[0].row.video
    frames = torch.stack([ds[i]["image"] for i, (v, _) in enumerate(ds.items) if v == 0])
    assert len(frames) == 2
    with torch.no_grad():
        expected = model(frames).mu.mean().item()
    assert scores.scores[scores.ids.index(video)] == pytest.approx(expected, rel=1e-5)


def test_cdcn_score_excludes_empty_and_missing_maps(crop_root, released_file, tmp_path):
    """cdcn: frames with an all-zero GT map are excluded and counted; a video without maps is reported."""
    out = tmp_path / "out"
    report = _run(crop_root, released_file, out, "--score", "cdcn", "--plots", "false")
    assert report["dev"]["cdcn_excluded_frames"] == 1
    assert report["test"]["cdcn_excluded_frames"] == 3
    assert report["test"]["videos_without_cdcn_score"] == ["1_3_36_2"]
    test = read_scores(out / "test_scores.txt")
    assert "1_3_36_2" not in test.ids and len(test) == 11 and np.isfinite(test.scores).all()


def test_project_checkpoint_sizes_come_from_its_args(crop_root, tmp_path):
    """Our checkpoint supplies image and map size; the stored training threshold is reported."""
    torch.manual_seed(1)
    ckpt = tmp_path / "checkpoint.pth"
    save_checkpoint(ckpt, kind="dum", models={"model": CDCN_U(map_size=4)}, epoch=5,
                    args={"image_size": 32, "map_size": 4, "theta": 0.7}, extra={"threshold": 0.1, "score": "mean"})
    args = dum_test.get_args_parser().parse_args(
        ["--checkpoint", str(ckpt), "--crop-root", str(crop_root), "--output-dir", str(tmp_path / "o"),
         "--workers", "0", "--device", "cpu", "--plots", "false"])
    report = dum_test.main(args)
    assert report["image_size"] == 32 and report["map_size"] == 4
    assert report["checkpoint_epoch"] == 5 and report["training_threshold"] == 0.1


def test_cli_help_and_bad_checkpoint(tmp_path):
    """--help works as file and module; a wrong file exits with a message naming it."""
    for how in (["DUM/test.py"], ["-m", "DUM.test"]):
        r = cli_help(how)
        assert r.returncode == 0 and "--frames-per-video" in r.stdout
    bad = tmp_path / "bad.pkl"
    torch.save({"module.fc.weight": torch.zeros(2)}, bad)
    r = subprocess.run([sys.executable, "DUM/test.py", "--checkpoint", str(bad), "--crop-root", str(tmp_path),
                        "--output-dir", str(tmp_path / "o"), "--device", "cpu"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "bad.pkl" in r.stderr and "missing keys" in r.stderr


def test_both_scores_in_one_run(crop_root, released_file, tmp_path, capsys):
    """One run reports mean and cdcn, one score file pair each; --score picks the primary, whose files keep
    the old names and whose tables come first."""
    out = tmp_path / "out"
    report = _run(crop_root, released_file, out, "--plots", "false")
    assert report["scores_reported"] == ["mean", "cdcn"] and set(report["by_score"]) == {"mean", "cdcn"}
    for kind in ("mean", "cdcn"):
        assert set(report["by_score"][kind]["metrics"]) == {"iso", "cdcn"}
        for split in ("dev", "test"):
            assert (out / f"{split}_scores_{kind}.txt").is_file()
    assert (out / "dev_scores.txt").read_text() == (out / "dev_scores_mean.txt").read_text()
    assert report["metrics"] == report["by_score"]["mean"]["metrics"]
    cdcn_test = read_scores(out / "test_scores_cdcn.txt")
    assert "1_3_36_2" not in cdcn_test.ids and len(cdcn_test) == 11  # that attack has no maps
    saved = json.loads((out / "report.json").read_text())
    assert saved["by_score"]["cdcn"]["metrics"]["iso"]["threshold"] == pytest.approx(
        report["by_score"]["cdcn"]["metrics"]["iso"]["threshold"])
    printed = capsys.readouterr().out
    assert printed.index("=== score 'mean' (primary), iso rule") < printed.index("=== score 'cdcn', iso rule")

    out2 = tmp_path / "out2"
    _run(crop_root, released_file, out2, "--plots", "false", "--score", "cdcn")
    assert (out2 / "test_scores.txt").read_text() == (out2 / "test_scores_cdcn.txt").read_text()
    printed = capsys.readouterr().out
    assert printed.index("=== score 'cdcn' (primary)") < printed.index("=== score 'mean', iso rule")
    only = _run(crop_root, released_file, tmp_path / "out3", "--plots", "false", "--scores", "mean")
    assert only["scores_reported"] == ["mean"] and not (tmp_path / "out3" / "dev_scores_cdcn.txt").exists()


def test_tables_and_report_say_how_many_listed_videos_were_scored(crop_root, released_file, tmp_path, capsys):
    """A listed Test video without frames and one without maps are counted and named in every table,
    in report.json and in missing_videos.txt: they never disappear silently."""
    rows = read_protocol(crop_root / "protocols" / "Protocol_1" / "Test.txt")
    test_list = tmp_path / "Test.txt"
    test_list.write_text("".join(r.format() + "\n" for r in rows) + "+1,1_3_40_1\n")  # never extracted
    out = tmp_path / "out"
    report = _run(crop_root, released_file, out, "--plots", "false", "--test-list", str(test_list))
    cov = report["coverage"]
    assert (cov["dev"]["listed"], cov["dev"]["scored"], cov["dev"]["missing"]) == (12, 12, [])
    assert (cov["test"]["listed"], cov["test"]["scored"], cov["test"]["missing"]) == (13, 12, ["1_3_40_1"])
    cdcn = report["by_score"]["cdcn"]["coverage"]["test"]
    assert (cdcn["scored"], cdcn["missing"]) == (11, ["1_3_36_2", "1_3_40_1"])
    printed = capsys.readouterr().out
    assert printed.count("Test: 12 of 13 listed videos scored; NOT SCORED: 1_3_40_1") == 2  # mean: iso and cdcn
    assert printed.count("Test: 11 of 13 listed videos scored; NOT SCORED: 1_3_36_2, 1_3_40_1") == 2
    assert printed.count("Dev:  12 of 12 listed videos scored") == 4
    saved = json.loads((out / "report.json").read_text())
    assert saved["metrics"]["iso"]["coverage"]["test"]["missing"] == ["1_3_40_1"]
    lines = (out / "missing_videos.txt").read_text().splitlines()
    assert [ln.split("\t")[:3] for ln in lines[1:]] == [["test", "mean", "1_3_40_1"], ["test", "cdcn", "1_3_36_2"],
                                                        ["test", "cdcn", "1_3_40_1"]]
    assert "no folder" in lines[1] and "depth map" in lines[2]


def _input_driven_checkpoint(path: Path, crop_root: Path) -> Path:
    """A CDCN_U whose scores follow its input: default initialisation with neutral batch-norm statistics (no
    offsets that would swamp the input) and the depth head scaled so that mu is about 1 on the fixture's faces.
    Its per-video scores then spread about 20x wider than the bf16 rounding moves them."""
    from deploy_helpers import _depth_head
    from DUM.transforms import normalise_image
    import cv2

    torch.manual_seed(0)
    net = CDCN_U(map_size=4).eval()
    frames = sorted(crop_root.glob("dev_images/*/*_1_scene.jpg"))
    faces = torch.stack([normalise_image(cv2.imread(str(f))) for f in frames])
    with torch.no_grad():
        _depth_head(net).weight.mul_(1.0 / net(faces).mu.abs().mean())
    save_checkpoint(path, kind="dum", models={"model": net}, epoch=1,
                    args={"model": "cdcn_u", "image_size": 32, "map_size": 4, "theta": 0.7}, extra={})
    return path


def test_precision_auto_both_ways_and_the_fp32_check(crop_root, tmp_path, monkeypatch, capsys):
    """--precision auto: bf16 where native bf16 is reported (monkeypatched here: this CPU may lack it, bf16 then
    runs emulated), fp32 where not. The bf16 run reports its largest score difference from an fp32 pass and the
    decisions that differ at the Dev thresholds: none on this fixture."""
    from misc import precision

    ckpt = _input_driven_checkpoint(tmp_path / "c.pth", crop_root)
    fast = ("--frames-per-video", "1", "--scores", "mean", "--plots", "false")
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: True)
    bf16 = _run(crop_root, ckpt, tmp_path / "bf16", "--precision", "auto", *fast)["precision"]
    assert (bf16["name"], bf16["requested"]) == ("bf16", "auto") and "native bf16" in bf16["reason"]
    check = bf16["vs_fp32"]
    assert check["measured"] and set(check["by_score"]) == {"mean"}
    fp32_scores = np.concatenate([read_scores(tmp_path / "bf16" / f"{s}_scores.txt").scores for s in ("dev", "test")])
    spread = fp32_scores.max() - fp32_scores.min()
    for mode in ("iso", "cdcn"):
        d = check["by_score"]["mean"][mode]
        assert d["items"] == 24 and 0 < d["max_abs_diff"] < 0.1 * spread, d
        assert d["flips"] == 0, d  # every video decided alike in bf16 and fp32, each at its own Dev threshold
    saved = json.loads((tmp_path / "bf16" / "report.json").read_text())["precision"]
    assert saved["name"] == "bf16" and saved["vs_fp32"]["by_score"]["mean"]["iso"]["flips"] == 0
    assert "vs fp32, score 'mean', iso rule: max |d score|" in capsys.readouterr().out

    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: False)
    fp32 = _run(crop_root, ckpt, tmp_path / "fp32", "--amp", "true", *fast)["precision"]  # the older flag: auto
    assert (fp32["name"], fp32["requested"]) == ("fp32", "auto") and "no native bf16" in fp32["reason"]
    assert fp32["vs_fp32"] == {"measured": False, "why": "the run is fp32"}
