"""``python -m ben_core eval``: metrics against plain-numpy oracles, reading and pairing rules, errors,
the JSON / CSV files, and the --images mode (stand-in predictor; real network with synthetic weights)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ben_core.__main__ import main as module_main
from ben_core.apps import cli, jobs
from ben_core.apps import evaluate as ev

REPO = Path(__file__).resolve().parents[1]
EPS = np.spacing(1)  # MATLAB's eps, the one the SOD tools add to denominators

needs_metrics = pytest.mark.skipif(
    __import__("importlib").util.find_spec("py_sod_metrics") is None,
    reason="PySODMetrics is not installed (pip install pysodmetrics==1.6.2)")


# --------------------------------------------------------------------------------------------------
# oracles: the metric definitions written out in plain numpy, pixel by pixel (no PySODMetrics)
# --------------------------------------------------------------------------------------------------

def unstretched(pred: np.ndarray) -> np.ndarray:
    """The prediction as the SOD tools see it, for inputs that need no min-max stretch (span 0..255
    or constant): value / 255. The oracles below only take such inputs, so their thresholds are exact."""
    assert pred.min() == pred.max() or (pred.min() == 0 and pred.max() == 255)
    return pred.astype(np.float64) / 255


def f_beta(binary: np.ndarray, gt: np.ndarray, beta2: float = 0.3) -> float:
    tp = np.count_nonzero(binary & gt)
    if tp == 0:
        return 0.0
    precision, recall = tp / np.count_nonzero(binary), tp / np.count_nonzero(gt)
    return (1 + beta2) * precision * recall / (beta2 * precision + recall)


def e_phi(binary: np.ndarray, gt: np.ndarray) -> float:
    """Enhanced-alignment measure (Fan et al. 2018), per pixel, with the original code's N - 1."""
    n = gt.size
    if not gt.any():
        total = np.count_nonzero(~binary)
    elif gt.all():
        total = np.count_nonzero(binary)
    else:
        dp = binary.astype(np.float64) - binary.mean()
        dg = gt.astype(np.float64) - gt.mean()
        align = 2 * dp * dg / (dp ** 2 + dg ** 2 + EPS)
        total = np.sum((align + 1) ** 2 / 4)
    return total / (n - 1 + EPS)


def curves(pred: np.ndarray, gt_u8: np.ndarray):
    """F and E at the thresholds t = 0..255 (foreground where value >= t), in that order."""
    gt = gt_u8 > 128
    q = pred.astype(np.int64)
    unstretched(pred)  # checks the input needs no stretch
    f = np.array([f_beta(q >= t, gt) for t in range(256)])
    e = np.array([e_phi(q >= t, gt) for t in range(256)])
    return f, e


def square(h=32, w=32, top=8, left=8, size=12, value=255) -> np.ndarray:
    a = np.zeros((h, w), np.uint8)
    a[top:top + size, left:left + size] = value
    return a


def write(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def run_eval(argv):
    return ev.main([str(a) for a in argv])


# --------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------

@needs_metrics
def test_perfect_prediction_scores_perfectly():
    gt = square()
    values, f_curve, e_curve = ev.score_pair(gt.copy(), gt)
    n = gt.size
    assert values["mae"] == 0.0 and values["max_f"] == 1.0 and values["hce"] == 0.0
    assert values["weighted_f"] == pytest.approx(1.0, abs=1e-12)
    assert values["s_measure"] == pytest.approx(1.0, abs=1e-12)
    # E of a perfect map is N / (N - 1) in the original definition (MATLAB divides by N - 1)
    assert values["e_measure_max"] == pytest.approx(n / (n - 1), abs=1e-12)
    assert values["e_measure_adaptive"] == pytest.approx(n / (n - 1), abs=1e-12)
    # mean over thresholds: t = 0 marks every pixel foreground, so the means are a little below the max
    f_oracle, e_oracle = curves(gt, gt)
    assert values["mean_f"] == pytest.approx(f_oracle.mean(), abs=1e-12) and values["mean_f"] < 1
    assert values["e_measure_mean"] == pytest.approx(e_oracle.mean(), abs=1e-12)


@needs_metrics
@pytest.mark.parametrize("case", ["shifted square", "constant 0.5", "all zero", "three levels"])
def test_known_perturbations_match_numpy(case):
    gt = square()
    pred = {
        "shifted square": np.roll(square(), (3, 2), axis=(0, 1)),
        "constant 0.5": np.full_like(gt, 128),
        "all zero": np.zeros_like(gt),
        "three levels": np.where(np.roll(gt, 5, axis=1) > 0, 255, square(left=20, top=2, size=6, value=100)),
    }[case]
    values, f_curve, e_curve = ev.score_pair(pred, gt)
    p, g = unstretched(pred), gt > 128
    f_oracle, e_oracle = curves(pred, gt)
    # PySODMetrics orders its curves from threshold 255 down to 0
    np.testing.assert_allclose(f_curve[::-1], f_oracle, rtol=0, atol=1e-12)
    np.testing.assert_allclose(e_curve[::-1], e_oracle, rtol=0, atol=1e-12)
    assert values["mae"] == pytest.approx(np.abs(p - g).mean(), abs=1e-15)
    assert values["max_f"] == pytest.approx(f_oracle.max(), abs=1e-12)
    assert values["mean_f"] == pytest.approx(f_oracle.mean(), abs=1e-12)
    assert values["e_measure_max"] == pytest.approx(e_oracle.max(), abs=1e-12)
    # adaptive threshold: twice the mean prediction, at most 1, foreground where >= it
    threshold = min(2 * p.mean(), 1.0)
    assert values["e_measure_adaptive"] == pytest.approx(e_phi(p >= threshold, g), abs=1e-12)
    assert 0 <= values["weighted_f"] < 1 and 0 <= values["s_measure"] < 1
    if case == "three levels":  # the adaptive threshold is below 0.5 here: the faint patch counts
        assert threshold < 100 / 255 < 0.5
        assert values["e_measure_adaptive"] != pytest.approx(e_phi(p >= 0.5, g), abs=1e-6)
    if case == "all zero":  # only t = 0 (everything foreground) gives a non-zero F
        assert values["max_f"] == pytest.approx(f_beta(np.ones_like(g), g), abs=1e-12)


@needs_metrics
def test_stretch_and_binarisation_rules():
    gt = square()
    # predictions are min-max stretched (mapminmax): 0/100 scores like 0/255 ...
    low, _, _ = ev.score_pair((gt // 255 * 100).astype(np.uint8), gt)
    assert low["mae"] == 0.0 and low["max_f"] == 1.0
    # ... but HCE binarises the raw values at > 128, as DIS's hce_metric_main.py: 128 is background
    at_128, _, _ = ev.score_pair((gt // 255 * 128).astype(np.uint8), gt)
    above, _, _ = ev.score_pair((gt // 255 * 129).astype(np.uint8), gt)
    zero, _, _ = ev.score_pair(np.zeros_like(gt), gt)
    assert above["hce"] == 0 and at_128["hce"] == zero["hce"] > 0
    # ground truth is foreground where > 128: a 128 square is empty ground truth
    empty, _, _ = ev.score_pair(np.zeros_like(gt), (gt // 255 * 128).astype(np.uint8))
    assert empty["mae"] == 0.0 and empty["s_measure"] == 1.0  # S of an empty gt: 1 - mean(pred)
    const = np.full_like(gt, 77)
    s_empty, _, _ = ev.score_pair(const, np.zeros_like(gt))
    assert s_empty["s_measure"] == pytest.approx(1 - 77 / 255, abs=1e-12)
    no_hce, _, _ = ev.score_pair(gt, gt, hce=False)
    assert no_hce["hce"] is None


@needs_metrics
def test_dataset_max_f_is_the_max_of_the_mean_curve():
    gt = square()
    # image 1 is perfect only at thresholds 201..255 (a false patch at 200), image 2 (constant 128) is
    # best at thresholds <= 128: the mean curve peaks lower than the mean of the two peaks
    one = np.where(gt > 0, 255, square(left=22, top=2, size=5, value=200)).astype(np.uint8)
    two = np.full_like(gt, 128)
    scores = []
    for name, pred in (("one", one), ("two", two)):
        values, f_curve, e_curve = ev.score_pair(pred, gt)
        scores.append(ev.ImageScore(name, name, "gt", values, f_curve, e_curve))
    means = ev.dataset_means(scores)
    (f1, e1), (f2, e2) = curves(one, gt), curves(two, gt)
    assert means["max_f"] == pytest.approx(((f1 + f2) / 2).max(), abs=1e-12)
    assert means["max_f"] < (f1.max() + f2.max()) / 2 - 0.05
    assert means["mean_f"] == pytest.approx(((f1 + f2) / 2).mean(), abs=1e-12)
    assert means["e_measure_max"] == pytest.approx(((e1 + e2) / 2).max(), abs=1e-12)
    assert means["mae"] == pytest.approx((scores[0].values["mae"] + scores[1].values["mae"]) / 2)
    assert set(means) == set(ev.METRIC_KEYS)


def test_score_pair_refuses_bad_arrays():
    gt = square()
    with pytest.raises(ValueError, match="differ in size"):
        ev.score_pair(gt[:, :-1].copy(), gt)
    with pytest.raises(ValueError, match="uint8"):
        ev.score_pair(gt.astype(np.float32) / 255, gt)


# --------------------------------------------------------------------------------------------------
# reading and resizing
# --------------------------------------------------------------------------------------------------

def test_mask_channel_rules(tmp_path):
    mask = square()
    noise = np.random.default_rng(0).integers(0, 256, mask.shape + (3,), dtype=np.uint8)
    rgba = np.dstack([noise, mask])
    assert ev.read_mask(write(tmp_path / "rgba.png", rgba))[1] == "alpha"
    np.testing.assert_array_equal(ev.read_mask(tmp_path / "rgba.png")[0], mask)  # alpha, not colours
    la = Image.fromarray(np.dstack([noise[..., 0], mask]), "LA")
    la.save(tmp_path / "la.png")
    np.testing.assert_array_equal(ev.read_mask(tmp_path / "la.png")[0], mask)
    red = np.zeros(mask.shape + (3,), np.uint8)
    red[..., 0] = 255
    got, channel = ev.read_mask(write(tmp_path / "red.png", red))
    assert channel == "luminance" and np.all(got == 76)  # 0.299 * 255, ITU-R 601 luma
    grey = np.repeat(mask[..., None], 3, axis=-1)
    np.testing.assert_array_equal(ev.read_mask(write(tmp_path / "grey.png", grey))[0], mask)
    wide = Image.fromarray((mask.astype(np.uint16) * 257).astype(np.uint16))
    wide.save(tmp_path / "wide.png")
    np.testing.assert_array_equal(ev.read_mask(tmp_path / "wide.png")[0], mask)


@needs_metrics
def test_fit_to_is_bilinear_with_half_pixel_centres():
    small = np.array([[0, 255], [0, 255]], np.uint8)
    big = ev.fit_to(small, (4, 4))
    # sample points -0.25, 0.25, 0.75, 1.25 of the 2-pixel row, clamped at the borders
    np.testing.assert_array_equal(big[0], [0, 64, 191, 255])
    assert ev.fit_to(small, (2, 2)) is small


# --------------------------------------------------------------------------------------------------
# pairing, the command, its files and errors
# --------------------------------------------------------------------------------------------------

@pytest.fixture
def dataset(tmp_path):
    """DIS5K-like layout: set/gt/{a,b}.png; predictions pred/a.jpg (exact, greyscale JPEG at q100 of a
    0/255 mask), pred/b.png (RGBA, half size: resized)."""
    gt_a, gt_b = square(), np.roll(square(40, 48), 4, axis=1)
    write(tmp_path / "DIS-VD" / "gt" / "a.png", gt_a)
    write(tmp_path / "DIS-VD" / "gt" / "b.png", gt_b)
    pred = tmp_path / "pred"
    pred.mkdir()
    Image.fromarray(gt_a).save(pred / "a.jpg", quality=100)
    rgba = np.zeros((20, 24, 4), np.uint8)
    rgba[..., 3] = gt_b[::2, ::2]
    write(pred / "b.png", rgba)
    return tmp_path


@needs_metrics
def test_pred_mode_writes_table_json_and_csv(dataset, capsys):
    out = dataset / "out"
    code = run_eval(["--pred", dataset / "pred", "--gt", dataset / "DIS-VD" / "gt", "--json", out / "r.json",
                     "--csv", out / "r.csv", "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "| DIS-VD | 2 |" in captured.out  # dataset named after gt's parent, DIS5K layout
    assert "maxF" in captured.out and "HCE" in captured.out
    assert "resized" in captured.err and "b" in captured.err
    data = json.loads((out / "r.json").read_text())
    assert list(data["means"]) == list(ev.METRIC_KEYS)
    assert data["complete"] is True and data["images"] == 2 and data["hce_reason"] is None
    assert [r["name"] for r in data["per_image"]] == ["a", "b"]
    assert data["per_image"][0]["resized_from"] is None and data["per_image"][1]["resized_from"] == [20, 24]
    assert set(ev.METRIC_KEYS) <= set(data["per_image"][0])
    assert data["problems"]["resized"] == ["b"]
    with open(out / "r.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["name", "pred", "gt", *ev.METRIC_KEYS, "resized_from"]
    assert [r["name"] for r in rows] == ["a", "b"] and rows[1]["resized_from"] == "20x24"
    for row, rec in zip(rows, data["per_image"], strict=True):
        assert all(float(row[k]) == rec[k] for k in ev.METRIC_KEYS)
    # the file values are those of score_pair on what the rules read (alpha channel, bilinear resize)
    gt_b = ev.read_mask(dataset / "DIS-VD" / "gt" / "b.png")[0]
    pred_b = ev.fit_to(ev.read_mask(dataset / "pred" / "b.png")[0], gt_b.shape)
    assert ev.score_pair(pred_b, gt_b)[0] == {k: float(rows[1][k]) for k in ev.METRIC_KEYS}
    means = ev.dataset_means([ev.ImageScore(r["name"], "", "", {k: float(r[k]) for k in ev.METRIC_KEYS},
                                            np.zeros(256), np.zeros(256)) for r in rows])
    for key in ("mae", "weighted_f", "s_measure", "e_measure_adaptive", "hce"):
        assert data["means"][key] == pytest.approx(means[key], abs=1e-15)


@needs_metrics
def test_missing_and_duplicate_files_are_listed_and_fail(dataset, capsys):
    pred, gt = dataset / "pred", dataset / "DIS-VD" / "gt"
    write(pred / "extra.png", square())             # prediction without ground truth
    write(gt / "lonely.png", square())              # ground truth without prediction
    (pred / "notes.txt").write_text("not an image")
    code = run_eval(["--pred", pred, "--gt", gt, "--json", dataset / "r.json", "-q"])
    err = capsys.readouterr().err
    assert code == jobs.EXIT_FAILED
    assert "extra.png: no file named extra.* in --gt" in err and "--allow-missing" in err
    assert "lonely.png: no file named lonely.* in --pred" in err
    assert "notes.txt: ignored" in err and "Traceback" not in err
    data = json.loads((dataset / "r.json").read_text())
    assert data["complete"] is False and data["images"] == 2
    assert data["problems"]["without_gt"] == [str(pred / "extra.png")]
    assert data["problems"]["without_prediction"] == [str(gt / "lonely.png")]

    assert run_eval(["--pred", pred, "--gt", gt, "-q", "--allow-missing"]) == jobs.EXIT_OK
    err = capsys.readouterr().err
    assert "warning:" in err and "extra.png" in err and "lonely.png" in err

    write(pred / "a.png", square())  # a.jpg and a.png: which one? neither, and say so
    assert run_eval(["--pred", pred, "--gt", gt, "-q", "--allow-missing"]) == jobs.EXIT_FAILED
    err = capsys.readouterr().err
    assert "a.jpg and" in err and "a.png" in err and "keep one" in err


@needs_metrics
def test_unreadable_file_is_named_and_the_rest_scored(dataset, capsys):
    (dataset / "pred" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    code = run_eval(["--pred", dataset / "pred", "--gt", dataset / "DIS-VD" / "gt", "-q",
                     "--json", dataset / "r.json"])
    captured = capsys.readouterr()
    assert code == jobs.EXIT_FAILED
    line = next(ln for ln in captured.err.splitlines() if "b.png" in ln)
    assert line.startswith("error: ") and "cannot read the prediction" in line and "fix or replace" in line
    assert "| DIS-VD | 1 |" in captured.out and "Traceback" not in captured.err
    assert json.loads((dataset / "r.json").read_text())["problems"]["failed"][0]["path"].endswith("b.png")


@needs_metrics
def test_unwritable_output_is_one_line(dataset, capsys):
    blocker = dataset / "file.txt"
    blocker.write_text("a file, not a folder")
    code = run_eval(["--pred", dataset / "pred", "--gt", dataset / "DIS-VD" / "gt", "-q", "--json", blocker / "r.json"])
    err = capsys.readouterr().err
    assert code == jobs.EXIT_FAILED and "cannot write the results" in err and "Traceback" not in err


@needs_metrics
def test_usage_errors_are_one_line_exit_2(dataset, capsys):
    gt = dataset / "DIS-VD" / "gt"
    cases = [
        (["--pred", dataset / "nope", "--gt", gt], "--pred"),
        (["--pred", dataset / "pred", "--gt", dataset / "DIS-VD"], "sub-folders gt"),  # forgot /gt
        (["--pred", dataset / "pred", "--gt", gt, "--working-size", "512"], "only used with --images"),
    ]
    for argv, expect in cases:
        assert run_eval(argv) == jobs.EXIT_USAGE
        err = capsys.readouterr().err.strip()
        assert expect in err and "Traceback" not in err and len(err.splitlines()) == 1, err
    other = dataset / "other"
    write(other / "zzz.png", square())
    assert run_eval(["--pred", other, "--gt", gt]) == jobs.EXIT_USAGE
    assert "paired by name stem" in capsys.readouterr().err
    assert run_eval(["--gt", gt]) == jobs.EXIT_USAGE  # neither --pred nor --images (argparse)


def test_missing_pysodmetrics_names_the_pip_command(dataset, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "py_sod_metrics", None)  # as if not installed
    assert run_eval(["--pred", dataset / "pred", "--gt", dataset / "DIS-VD" / "gt"]) == jobs.EXIT_USAGE
    err = capsys.readouterr().err
    assert ev.PIP_COMMAND in err and len(err.strip().splitlines()) == 1


def test_module_dispatch_and_help(capsys):
    assert module_main(["--help"]) == 0
    assert "python -m ben_core eval" in capsys.readouterr().out  # the cut-out help points at eval
    assert module_main(["eval", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--pred" in out and "--images" in out and "--allow-missing" in out
    r = subprocess.run([sys.executable, "-m", "ben_core", "eval", "--help"], capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    assert r.returncode == 0 and "--gt" in r.stdout


# --------------------------------------------------------------------------------------------------
# --images: BEN2 first
# --------------------------------------------------------------------------------------------------

class RedPredictor:
    """Stand-in for BENPredictor: alpha = the red channel (as tests/test_cli.py's)."""

    device = torch.device("cpu")
    batch_size = 1

    def predict_chunk(self, chunk, deferred=False):
        red = [im[..., 0].float() / 255 for im in chunk]
        alpha = torch.stack(red) if isinstance(chunk, torch.Tensor) else red
        return (alpha, lambda: None) if deferred else alpha


@needs_metrics
def test_images_mode_scores_the_predicted_alpha(tmp_path, capsys):
    images, gt = tmp_path / "im", tmp_path / "gt"
    for name, size in (("p", (32, 32)), ("q", (20, 28))):
        mask = square(*size, top=4, left=5, size=10)
        rgb = np.random.default_rng(1).integers(0, 256, mask.shape + (3,), dtype=np.uint8)
        rgb[..., 0] = mask  # the stand-in's alpha is the red channel: a perfect prediction
        write(images / f"{name}.png", rgb)
        write(gt / f"{name}.png", mask)
    argv = ["--images", images, "--gt", gt, "--batch-size", "2", "-q", "--json", tmp_path / "r.json"]
    assert ev.main([str(a) for a in argv], predictor=RedPredictor()) == jobs.EXIT_OK
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["settings"]["mode"] == "images" and data["settings"]["refine"] == "none"
    assert [r["image"] for r in data["per_image"]] == [str(images / "p.png"), str(images / "q.png")]
    assert data["means"]["mae"] == 0 and data["means"]["max_f"] == 1 and data["means"]["hce"] == 0

    # a soft edge (a ring of 0.5 around the square): --refine guided changes it, none keeps it
    rgb = np.array(Image.open(images / "p.png"))
    ring = square(top=3, left=4, size=12) & ~square(top=4, left=5, size=10)
    rgb[..., 0] = np.where(ring > 0, 128, rgb[..., 0])
    write(images / "p.png", rgb)
    maes = {}
    for refine in ("none", "guided"):
        assert ev.main([str(a) for a in [*argv, "--refine", refine, "--no-hce"]], predictor=RedPredictor()) == 0
        data = json.loads((tmp_path / "r.json").read_text())
        assert data["settings"]["refine"] == refine and data["means"]["hce"] is None
        maes[refine] = data["per_image"][0]["mae"]
    assert maes["none"] == pytest.approx(np.mean(ring > 0) * 128 / 255, abs=1e-12)
    assert maes["guided"] != pytest.approx(maes["none"], abs=1e-6)
    assert data["hce_reason"] == "skipped (--no-hce)" and "| - |" in capsys.readouterr().out


@needs_metrics
@pytest.mark.slow
def test_images_mode_end_to_end_equals_pred_mode_on_cli_masks(tmp_path):
    """Real BEN2 network, synthetic checkpoint, working size 512: scoring --images gives exactly the
    scores of --pred on the masks `python -m ben_core --mask-only` writes for the same images
    (one ground truth of another size than its image: both modes resize the same way)."""
    from helpers import synth_sd

    ckpt = tmp_path / "BEN2_Base.pth"
    torch.save({"model_state_dict": synth_sd(0)}, ckpt)
    images, gt = tmp_path / "im", tmp_path / "gt"
    rng = np.random.default_rng(3)
    write(images / "one.png", rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    write(images / "two.jpg", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    write(gt / "one.png", square(48, 64, top=10, left=12, size=20))
    write(gt / "two.png", square(80, 80, top=20, left=20, size=30))  # twice the image's size
    model = ["--checkpoint", ckpt, "--working-size", "512", "--device", "cpu", "--batch-size", "2", "-q"]
    masks = tmp_path / "masks"
    assert cli.main([str(a) for a in [images, "-o", masks, "--mask-only", *model]]) == jobs.EXIT_OK
    assert run_eval(["--pred", masks, "--gt", gt, "--json", tmp_path / "a.json", "-q"]) == jobs.EXIT_OK
    assert run_eval(["--images", images, "--gt", gt, "--json", tmp_path / "b.json", *model]) == jobs.EXIT_OK
    a, b = (json.loads((tmp_path / f"{x}.json").read_text()) for x in "ab")
    assert a["means"] == b["means"]
    for ra, rb in zip(a["per_image"], b["per_image"], strict=True):
        assert {k: ra[k] for k in ev.METRIC_KEYS} == {k: rb[k] for k in ev.METRIC_KEYS}
        assert ra["resized_from"] == rb["resized_from"]
    assert b["per_image"][1]["resized_from"] == [40, 40]
    assert b["settings"]["working_size"] == 512 and b["settings"]["checkpoint"] == str(ckpt)


@needs_metrics
def test_images_mode_model_errors(tmp_path, capsys):
    write(tmp_path / "im" / "a.png", np.zeros((8, 8, 3), np.uint8))
    write(tmp_path / "gt" / "a.png", square(8, 8, 2, 2, 4))
    base = ["--images", tmp_path / "im", "--gt", tmp_path / "gt"]
    assert run_eval([*base, "--checkpoint", tmp_path / "nope.pth", "--device", "cpu"]) == jobs.EXIT_MODEL
    err = capsys.readouterr().err
    assert "nope.pth" in err and "Traceback" not in err
    if not torch.cuda.is_available():
        assert run_eval([*base, "--device", "cuda"]) == jobs.EXIT_USAGE
        assert "no CUDA device" in capsys.readouterr().err
