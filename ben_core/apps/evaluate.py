"""Score background-removal masks against ground truth: ``python -m ben_core eval``.

Two modes, one scoring path:

* ``--pred DIR --gt DIR``: masks made by anything (BEN2, another model, a hand-made matte);
* ``--images DIR --gt DIR``: BEN2 is run over the images first (the CLI's predictor and
  :class:`ben_core.pipeline.CutoutPipeline`, alpha quantised to uint8 exactly as ``--mask-only`` writes it),
  optionally with our refinement (``--refine guided|vitmatte``).

Files are paired by name stem (``a.png`` prediction with ``a.jpg`` ground truth), in one folder level,
case-sensitively; the extensions read are :data:`ben_core.apps.jobs.IMAGE_EXTENSIONS`. A prediction without a
ground truth, a ground truth without a prediction and two files of one stem in a folder are listed one
per line and never skipped silently.

Conventions (those of the DIS5K / SOD evaluation code: SOCToolbox, PySODMetrics, BiRefNet's evaluation,
DIS's ``hce_metric_main.py``):

* a mask file is read as uint8 0..255 grey: its alpha channel if it has one (RGBA, LA, PA, palette
  with transparency), else its luminance (ITU-R 601: ``L = 0.299 R + 0.587 G + 0.114 B``, PIL's "L",
  what OpenCV's ``IMREAD_GRAYSCALE`` gives); 16-bit files are scaled by 255/65535; EXIF orientation is
  applied (as OpenCV's ``imread`` does); multi-frame files give their first frame;
* ground truth is foreground where the value is > 128;
* a prediction of another size than its ground truth is resized to it, bilinear (OpenCV's
  ``INTER_LINEAR``, as BiRefNet's DIS5K evaluation does), and the resize is reported;
* MAE, F-, E-, S- and weighted F-measure are PySODMetrics' (``pysodmetrics==1.6.2``) with its defaults:
  the prediction is min-max stretched to 0..1 unless constant (MATLAB ``mapminmax``), F uses
  beta^2 = 0.3, F and E are computed at the 256 thresholds 0..255 (a pixel is foreground where its
  value >= the threshold), the adaptive threshold is ``min(2 * mean(prediction), 1)``;
* HCE (human correction efforts, DIS paper) follows DIS's ``hce_metric_main.py``: the prediction
  *without* stretching is foreground where > 128, the skeleton is that of the binarised ground truth,
  relax = 5, epsilon = 2.0 (computed with PySODMetrics' ``HumanCorrectionEffortMeasure``).

Dataset means (:func:`dataset_means`): max/mean F and max/mean E are the maximum/mean over thresholds of
the per-threshold curve averaged over the images (as in the papers' tables, so max F is *not* the mean
of the per-image max F); every other metric is the mean of the per-image values.

PySODMetrics is an optional dependency (``pip install pysodmetrics==1.6.2``; it brings OpenCV,
scikit-image and SciPy); it is imported only when something is scored.

Exit codes of :func:`main`: 0 every pair scored; 1 a pair is missing (unless ``--allow-missing``), a file
could not be read or a prediction failed (the other pairs are still scored and written); 2 usage or
setup error (bad arguments, folder missing, no pairs, PySODMetrics not installed); 3 the model could not
be loaded (``--images`` mode).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .jobs import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_MODEL,
    EXIT_OK,
    IMAGE_EXTENSIONS,
    MODEL_OPTIONS,
    Progress,
    UsageError,
    build_predictor,
    cut_out,
    fill_model_defaults,
    model_options,
    run_program,
)

__all__ = [
    "METRIC_KEYS", "PIP_COMMAND", "EvalError", "Pair", "Pairing", "ImageScore",
    "load_metrics", "mask_from_pil", "read_mask", "fit_to", "pair_by_stem", "score_pair",
    "dataset_means", "format_table", "write_json", "write_csv", "build_parser", "main",
]

#: The dataset means and per-image values, in this order (JSON keys, CSV columns).
METRIC_KEYS = ("mae", "max_f", "mean_f", "weighted_f", "s_measure", "e_measure_mean", "e_measure_max",
               "e_measure_adaptive", "hce")
PIP_COMMAND = "pip install pysodmetrics==1.6.2"
GT_THRESHOLD = 128      # ground truth (and HCE's prediction) is foreground where the value is > 128
F_BETA2 = 0.3           # beta^2 of the F-measure, as in every SOD / DIS table
HCE_RELAX = 5           # DIS hce_metric_main.py defaults
HCE_EPSILON = 2.0

# The columns of the printed table, in the order of the DIS5K tables (BiRefNet's eval_existingOnes.py).
_TABLE_COLUMNS = (("maxF", "max_f"), ("wF", "weighted_f"), ("MAE", "mae"), ("S", "s_measure"),
                  ("meanE", "e_measure_mean"), ("HCE", "hce"), ("maxE", "e_measure_max"),
                  ("meanF", "mean_f"), ("adpE", "e_measure_adaptive"))


class EvalError(UsageError):
    """A usage or setup problem, told in one line (exit code 2)."""


# --------------------------------------------------------------------------------------------------
# the optional dependency
# --------------------------------------------------------------------------------------------------

def load_metrics():
    """The ``py_sod_metrics`` module (PyPI ``pysodmetrics``), imported on first use.

    Raises EvalError with the pip command when it is not installed (or one of its dependencies,
    OpenCV / scikit-image / SciPy, is broken).
    """
    try:
        import py_sod_metrics
    except ImportError as e:
        raise EvalError(f"scoring needs PySODMetrics, which is not installed ({e}); install it with: "
                        f"{PIP_COMMAND}") from None
    return py_sod_metrics


def _pysodmetrics_version() -> Optional[str]:
    try:
        from importlib.metadata import version

        return version("pysodmetrics")
    except Exception:  # only recorded in the JSON report
        return None


# --------------------------------------------------------------------------------------------------
# reading masks
# --------------------------------------------------------------------------------------------------

def mask_from_pil(im) -> Tuple[np.ndarray, str]:
    """One PIL image -> ``(mask, channel)``: ``mask`` uint8 ``[H, W]`` 0..255, ``channel`` says which
    one was read: ``"alpha"`` when the image has an alpha channel (RGBA, LA, PA, RGBa, a palette with
    transparency), else ``"luminance"`` (PIL's "L": ITU-R 601 luma of RGB, the grey itself for L).
    16/32-bit integer images are scaled by 255/65535 (clipped), float images (mode F) are taken as
    0..1 (clipped). EXIF orientation is not applied here (see :func:`read_mask`)."""
    from ..io.inputs import WIDE_MODES, wide_mode_to_unit

    bands = im.getbands()
    if "A" in bands or "a" in bands:
        return np.array(im.getchannel("A" if "A" in bands else "a")), "alpha"
    if im.mode == "P" and "transparency" in im.info:
        return np.array(im.convert("RGBA").getchannel("A")), "alpha"
    if im.mode in WIDE_MODES:
        unit = np.nan_to_num(wide_mode_to_unit(im))
        return np.round(unit * 255.0).astype(np.uint8), "luminance"
    return np.array(im.convert("L")), "luminance"


def read_mask(path) -> Tuple[np.ndarray, str]:
    """Read a mask file fully: ``(uint8 [H, W] 0..255, channel)`` as :func:`mask_from_pil` says, after
    applying the file's EXIF orientation (as OpenCV's ``imread`` does); first frame of multi-frame files.

    Raises OSError / PIL.UnidentifiedImageError / ValueError for unreadable files.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.load()
        return mask_from_pil(ImageOps.exif_transpose(im))


def fit_to(pred: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """``pred`` (uint8 ``[h, w]``) at ``shape = (H, W)``: itself when it has that size, else resized
    bilinearly with OpenCV's ``INTER_LINEAR`` (half-pixel centres, no anti-aliasing: what BiRefNet's
    DIS5K evaluation does with ``cv2.resize``), uint8."""
    if pred.shape == tuple(shape):
        return pred
    load_metrics()  # OpenCV comes with PySODMetrics: the same one-line message when it is missing
    import cv2

    return cv2.resize(pred, (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_LINEAR)


# --------------------------------------------------------------------------------------------------
# pairing
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pair:
    """A prediction (or input image) and its ground truth, matched by the stem ``name``."""

    name: str
    pred: Path
    gt: Path


@dataclass
class Pairing:
    """What :func:`pair_by_stem` found: ``pairs`` (sorted by name), files of one side without a partner
    (``pred_only``, ``gt_only``), ``duplicates`` (several files with one stem in a folder: neither is
    used), and ``ignored`` (files without an image extension, sub-folders: listed, not read)."""

    pairs: List[Pair] = field(default_factory=list)
    pred_only: List[Path] = field(default_factory=list)
    gt_only: List[Path] = field(default_factory=list)
    duplicates: List[List[Path]] = field(default_factory=list)
    ignored: List[Path] = field(default_factory=list)


def _image_files(folder: Path, option: str) -> Tuple[Dict[str, List[Path]], List[Path]]:
    """Image files of ``folder`` (one level, hidden files left out) by stem, and the entries ignored."""
    if not folder.is_dir():
        raise EvalError(f"{option} {folder}: no such folder")
    by_stem: Dict[str, List[Path]] = {}
    ignored: List[Path] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS:
            by_stem.setdefault(entry.stem, []).append(entry)
        else:
            ignored.append(entry)
    if not by_stem:
        subs = ", ".join(p.name for p in ignored if p.is_dir())
        hint = f" (it has sub-folders {subs}: point {option} at the one holding the images)" if subs else ""
        raise EvalError(f"{option} {folder}: no image files{hint}")
    return by_stem, ignored


def pair_by_stem(pred_dir, gt_dir, pred_option: str = "--pred") -> Pairing:
    """Pair the image files of ``pred_dir`` and ``gt_dir`` by name stem (``a.png`` with ``a.jpg``).

    One folder level; stems compare exactly (case-sensitive); hidden files are left out. Raises
    EvalError when a folder does not exist or holds no image file.
    """
    preds, ignored_p = _image_files(Path(pred_dir), pred_option)
    gts, ignored_g = _image_files(Path(gt_dir), "--gt")
    out = Pairing(ignored=ignored_p + ignored_g)
    for files in list(preds.values()) + list(gts.values()):
        if len(files) > 1:
            out.duplicates.append(files)
    for stem in sorted(set(preds) | set(gts)):
        p, g = preds.get(stem, []), gts.get(stem, [])
        if len(p) > 1 or len(g) > 1:
            continue  # listed in duplicates
        if p and g:
            out.pairs.append(Pair(stem, p[0], g[0]))
        elif p:
            out.pred_only.append(p[0])
        else:
            out.gt_only.append(g[0])
    return out


# --------------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------------

@dataclass
class ImageScore:
    """The scores of one pair: ``values`` (one float per :data:`METRIC_KEYS` key; ``hce`` None when not
    computed), the F- and E-measure curves (``[256]`` float64, thresholds 255 down to 0, as PySODMetrics
    gives them; averaged over images for the dataset's max/mean F and E), and ``resized_from``: the
    prediction's ``(h, w)`` when it was resized to its ground truth, else None."""

    name: str
    pred: str
    gt: str
    values: Dict[str, Optional[float]]
    f_curve: np.ndarray
    e_curve: np.ndarray
    resized_from: Optional[Tuple[int, int]] = None


def _check_mask(a: np.ndarray, what: str) -> None:
    if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 2 or a.size < 2:
        got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
        raise ValueError(f"{what} must be a uint8 [H, W] array of 0..255 with at least 2 pixels, got {got}")


Values = Dict[str, Optional[float]]


def score_pair(pred: np.ndarray, gt: np.ndarray, hce: bool = True) -> Tuple[Values, np.ndarray, np.ndarray]:
    """Score one prediction against its ground truth.

    ``pred``, ``gt``: uint8 ``[H, W]`` 0..255 of the same shape (resize first: :func:`fit_to`). Returns
    ``(values, f_curve, e_curve)``: ``values`` holds every :data:`METRIC_KEYS` key (the image's own max /
    mean over its curves; ``hce`` None when ``hce`` is False), the curves are ``[256]`` float64.
    Settings: see the module docstring. Raises ValueError for arrays of another dtype, rank or shape.
    """
    _check_mask(pred, "prediction")
    _check_mask(gt, "ground truth")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size; resize first")
    m = load_metrics()
    f_measure = m.FmeasureV2({"f": m.FmeasureHandler(with_dynamic=True, with_adaptive=False, beta=F_BETA2)})
    e_measure, s_measure, wf_measure, mae = m.Emeasure(), m.Smeasure(), m.WeightedFmeasure(), m.MAE()
    for metric in (f_measure, e_measure, s_measure, wf_measure, mae):
        metric.step(pred=pred, gt=gt)  # PySODMetrics' normalisation: gt > 128, mapminmax(pred / 255)
    f_curve = np.asarray(f_measure.get_results()["f"]["dynamic"], dtype=np.float64)
    em = e_measure.get_results()["em"]
    e_curve = np.asarray(em["curve"], dtype=np.float64)
    values = {
        "mae": float(mae.get_results()["mae"]),
        "max_f": float(f_curve.max()),
        "mean_f": float(f_curve.mean()),
        "weighted_f": float(wf_measure.get_results()["wfm"]),
        "s_measure": float(s_measure.get_results()["sm"]),
        "e_measure_mean": float(e_curve.mean()),
        "e_measure_max": float(e_curve.max()),
        "e_measure_adaptive": float(em["adp"]),
        "hce": _hce(m, pred, gt) if hce else None,
    }
    return values, f_curve, e_curve


def _hce(m, pred: np.ndarray, gt: np.ndarray) -> float:
    """HCE as DIS's hce_metric_main.py: both binarised at > 128 of the raw uint8 values (no stretch)."""
    measure = m.HumanCorrectionEffortMeasure(relax=HCE_RELAX, epsilon=HCE_EPSILON)
    binary = (pred > GT_THRESHOLD).astype(np.float64)  # its own "> 0.5" then keeps exactly these pixels
    measure.step(pred=binary, gt=gt > GT_THRESHOLD, normalize=False)
    return float(measure.get_results()["hce"])


def dataset_means(scores: Sequence[ImageScore]) -> Dict[str, Optional[float]]:
    """The dataset row: max / mean F and E over thresholds of the image-averaged curves, the mean of
    the per-image values for the rest; ``hce`` None unless every image has one. Empty input: all None."""
    if not scores:
        return {key: None for key in METRIC_KEYS}
    f_curve = np.mean([s.f_curve for s in scores], axis=0)
    e_curve = np.mean([s.e_curve for s in scores], axis=0)
    out: Dict[str, Optional[float]] = {}
    for key in METRIC_KEYS:
        vals = [s.values[key] for s in scores]
        out[key] = None if any(v is None for v in vals) else float(np.mean(vals))
    out["max_f"] = float(f_curve.max())
    out["mean_f"] = float(f_curve.mean())
    out["e_measure_max"] = float(e_curve.max())
    out["e_measure_mean"] = float(e_curve.mean())
    return out


# --------------------------------------------------------------------------------------------------
# writers
# --------------------------------------------------------------------------------------------------

def _cell(key: str, value: Optional[float]) -> str:
    if value is None:
        return "-"
    return str(int(round(value))) if key == "hce" else f"{value:.3f}"


def format_table(name: str, count: int, means: Dict[str, Optional[float]]) -> str:
    """The dataset row as a Markdown table in the column order of the DIS5K tables (3 decimals, HCE
    rounded to an integer, "-" where not computed), with a legend line."""
    head = ["dataset", "images"] + [label for label, _ in _TABLE_COLUMNS]
    row = [name, str(count)] + [_cell(key, means.get(key)) for _, key in _TABLE_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|",
             "| " + " | ".join(row) + " |",
             "higher is better except MAE and HCE; max/mean F and E over thresholds 0..255 of the "
             "image-averaged curves, F with beta^2 = 0.3; adpE at the adaptive threshold"]
    return "\n".join(lines)


def _json_number(v):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    return v


def _score_record(score: ImageScore, pred_key: str) -> dict:
    rec = {"name": score.name, pred_key: score.pred, "gt": score.gt}
    rec.update({key: _json_number(score.values[key]) for key in METRIC_KEYS})
    rec["resized_from"] = list(score.resized_from) if score.resized_from else None
    return rec


def write_json(path, report: dict, scores: Sequence[ImageScore], pred_key: str = "pred") -> None:
    """Write ``report`` (``means`` with exactly the :data:`METRIC_KEYS` keys, settings, problems) plus
    ``per_image``: one record per scored pair (name, ``pred_key`` path, gt path, the metric keys,
    ``resized_from`` ``[h, w]`` or null). Non-finite numbers are written as null."""
    data = dict(report)
    data["means"] = {key: _json_number(data["means"][key]) for key in METRIC_KEYS}
    data["per_image"] = [_score_record(s, pred_key) for s in scores]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def write_csv(path, scores: Sequence[ImageScore], pred_key: str = "pred") -> None:
    """Write the per-image table: a header (name, ``pred_key``, gt, the :data:`METRIC_KEYS`,
    resized_from) and one row per scored pair; full float precision, empty cells where not computed,
    ``resized_from`` as ``HxW`` or empty."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["name", pred_key, "gt", *METRIC_KEYS, "resized_from"])
        for s in scores:
            vals = ["" if s.values[k] is None else repr(s.values[k]) for k in METRIC_KEYS]
            resized = f"{s.resized_from[0]}x{s.resized_from[1]}" if s.resized_from else ""
            writer.writerow([s.name, s.pred, s.gt, *vals, resized])


# --------------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------------

PROG = "python -m ben_core eval"
_MODEL_GROUP = "BEN2 options (with --images only)"
_MODEL_OPTIONS = MODEL_OPTIONS + ("refine",)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m ben_core eval`` argument parser (model options from
    :func:`ben_core.apps.jobs.model_options`, without defaults: they belong to ``--images``)."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Score masks against ground truth with the DIS5K / SOD metrics (MAE, max/mean F, "
                    "weighted F, S, E mean/max/adaptive, HCE). Needs: " + PIP_COMMAND,
        epilog="Files are paired by name stem (a.png with a.jpg). Exit codes: 0 all pairs scored, 1 a pair "
               "missing or a file failed (the rest is scored), 2 usage/setup error, 3 model not loaded.",
        parents=[model_options(defaults=False, title=_MODEL_GROUP)],
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pred", metavar="DIR", help="folder of predicted masks to score")
    src.add_argument("--images", metavar="DIR", help="folder of images: run BEN2 on them, then score its masks")
    p.add_argument("--gt", required=True, metavar="DIR", help="folder of ground-truth masks (foreground > 128)")
    p.add_argument("--json", metavar="FILE", help="write the dataset means, settings and per-image scores")
    p.add_argument("--csv", metavar="FILE", help="write the per-image table")
    p.add_argument("--name", help="dataset name in the table (default: the --gt folder's name, or its "
                                  "parent's when it is called gt, as in DIS5K's DIS-VD/gt)")
    p.add_argument("--allow-missing", action="store_true",
                   help="exit 0 when some files have no partner (they are still listed)")
    p.add_argument("--no-hce", action="store_true", help="skip HCE (the slowest metric); reported as null")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    model = next(g for g in p._action_groups if g.title == _MODEL_GROUP)
    model.add_argument("--refine", choices=["none", "guided", "vitmatte"],
                       help="our refinement of the unknown band (ben_core.pipeline.Refinement); default none")
    return p


def _check_mode_options(args) -> None:
    """Model options belong to --images; fill their defaults there (EvalError, exit 2, with --pred)."""
    given = [name for name in _MODEL_OPTIONS if getattr(args, name) is not None]
    if args.pred is not None and given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise EvalError(f"{flags}: only used with --images (BEN2 is run); --pred scores existing masks")
    fill_model_defaults(args)
    if args.refine is None:
        args.refine = "none"


def _dataset_name(args) -> str:
    if args.name:
        return args.name
    gt = Path(args.gt).resolve()
    return gt.parent.name if gt.name.lower() == "gt" and gt.parent.name else gt.name


class _Run:
    """The state of one evaluation: scores, problems, output channels."""

    def __init__(self, args, progress_total: int):
        self.args = args
        self.scores: List[ImageScore] = []
        self.failed: List[Tuple[str, str]] = []    # (path, reason)
        self.resized: List[str] = []
        self.progress = Progress(progress_total, enabled=not args.quiet)

    def __enter__(self) -> "_Run":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def say(self, msg: str) -> None:
        self.progress.write(msg)

    def fail(self, path, reason: str) -> None:
        self.failed.append((str(path), reason))
        self.say(f"error: {path}: {reason}")

    def add(self, pair: Pair, pred: np.ndarray, pred_channel: str, gt: np.ndarray) -> None:
        """Score one pair (pred already read or predicted, uint8) and record it."""
        if pred_channel == "alpha" and pred.min() == 255 and pred.size > 1:
            self.say(f"warning: {pair.pred}: its alpha channel is fully opaque, so all of it counts as "
                     "foreground; if the mask is in the colour channels, save it as greyscale (mode L)")
        resized_from = None
        if pred.shape != gt.shape:
            resized_from = tuple(pred.shape)
            self.resized.append(pair.name)
            pred = fit_to(pred, gt.shape)
        values, f_curve, e_curve = score_pair(pred, gt, hce=not self.args.no_hce)
        self.scores.append(ImageScore(pair.name, str(pair.pred), str(pair.gt), values, f_curve, e_curve,
                                      resized_from))


def _read_or_fail(run: _Run, path: Path, what: str) -> Optional[Tuple[np.ndarray, str]]:
    try:
        return read_mask(path)
    except Exception as e:  # unreadable file: reported, the others are scored
        run.fail(path, f"cannot read the {what} ({type(e).__name__}: {e}); fix or replace the file")
        return None


def _score_files(run: _Run, pairs: Sequence[Pair]) -> None:
    """--pred mode: read both files of every pair and score them."""
    for pair in pairs:
        gt = _read_or_fail(run, pair.gt, "ground truth")
        pred = _read_or_fail(run, pair.pred, "prediction") if gt is not None else None
        if gt is not None and pred is not None:
            run.add(pair, pred[0], pred[1], gt[0])
        run.progress.update(1, pair.name)


def _pipeline(predictor, refine: str):
    from ..pipeline import CutoutOptions, CutoutPipeline, Refinement

    refinement = None if refine == "none" else Refinement(method=refine)
    # the alpha alone, as `python -m ben_core --mask-only` makes it (no foreground colours, no composite)
    return CutoutPipeline(predictor, CutoutOptions(foreground=False, background=None, refine=refinement, image=False))


def _load_chunk(run: _Run, pairs: Sequence[Pair]) -> list:
    """``(pair, gt mask, image)`` for the pairs whose ground truth and image both read; the others are
    reported (and counted done) here, before the network runs."""
    from ..io.image_files import load_image_file

    loaded = []
    for pair in pairs:
        gt = _read_or_fail(run, pair.gt, "ground truth")
        image = None
        if gt is not None:
            try:
                image = load_image_file(pair.pred)  # the CLI's reader: EXIF orientation, first frame
            except Exception as e:  # unreadable image: reported, the others are scored
                run.fail(pair.pred, f"cannot read the image ({type(e).__name__}: {e}); fix or replace the file")
        if image is None:
            run.progress.update(1, pair.name)
        else:
            loaded.append((pair, gt[0], image))
    return loaded


def _score_predictions(run: _Run, pairs: Sequence[Pair], predictor) -> None:
    """--images mode: run BEN2 over the images, ``batch_size`` at a time (a failing batch is retried
    image by image, as the CLI does), and score the uint8 alpha."""
    pipeline = _pipeline(predictor, run.args.refine)
    size = run.args.batch_size
    for start in range(0, len(pairs), size):
        loaded = _load_chunk(run, pairs[start:start + size])
        results = cut_out(pipeline, [image for _, _, image in loaded]) if loaded else []
        for (pair, gt, _), result in zip(loaded, results, strict=True):
            if isinstance(result, Exception):
                run.fail(pair.pred, f"BEN2 failed on this image ({type(result).__name__}: {result})")
            else:
                run.add(pair, result[0].numpy(), "ben2", gt)
            run.progress.update(1, pair.name)


def _report_pairing(pairing: Pairing, args, say: Callable[[str], None]) -> int:
    """Print every unpaired / duplicate file on its own line; returns how many count as failures."""
    side = "--images" if args.images is not None else "--pred"
    level = "warning" if args.allow_missing else "error"
    fix = "" if args.allow_missing else ", or pass --allow-missing to score the pairs that exist"
    for p in pairing.pred_only:
        say(f"{level}: {p}: no file named {p.stem}.* in --gt {args.gt} (add its ground truth{fix})")
    for g in pairing.gt_only:
        say(f"{level}: {g}: no file named {g.stem}.* in {side} {args.images or args.pred} "
            f"(add its {'image' if side == '--images' else 'prediction'}{fix})")
    for files in pairing.duplicates:
        say(f"error: {' and '.join(str(f) for f in files)}: several files named {files[0].stem}.* in one "
            "folder, none of them is used; keep one")
    for entry in pairing.ignored:
        kind = "a folder (not searched)" if entry.is_dir() else "not an image extension"
        say(f"note: {entry}: ignored, {kind}")
    missing = 0 if args.allow_missing else len(pairing.pred_only) + len(pairing.gt_only)
    return missing + len(pairing.duplicates)


def _settings(args) -> dict:
    s = {
        "mode": "images" if args.images is not None else "pred",
        "pred": args.pred, "images": args.images, "gt": args.gt,
        "pairing": "by file name stem, one folder level, case-sensitive",
        "prediction_channel": "alpha if present, else luminance (ITU-R 601); uint8 0..255",
        "gt_threshold": f"> {GT_THRESHOLD}",
        "resize": "prediction to ground-truth size, bilinear (cv2.INTER_LINEAR)",
        "normalisation": "PySODMetrics: prediction / 255, min-max stretched unless constant",
        "f_beta2": F_BETA2, "thresholds": "0..255 (>=)", "adaptive_threshold": "min(2 * mean, 1)",
        "hce": None if args.no_hce else {"relax": HCE_RELAX, "epsilon": HCE_EPSILON,
                                         "prediction_threshold": f"> {GT_THRESHOLD} of the raw uint8 prediction"},
        "pysodmetrics": _pysodmetrics_version(),
    }
    if args.images is not None:
        s.update({name: getattr(args, name) for name in _MODEL_OPTIONS})
    return s


def _report(args, pairing: Pairing, run: _Run, means: dict) -> dict:
    return {
        "dataset": _dataset_name(args),
        "images": len(run.scores),
        "complete": not (pairing.pred_only or pairing.gt_only or pairing.duplicates or run.failed),
        "means": means,
        "hce_reason": "skipped (--no-hce)" if args.no_hce else None,
        "settings": _settings(args),
        "problems": {
            "without_gt": [str(p) for p in pairing.pred_only],
            "without_prediction": [str(g) for g in pairing.gt_only],
            "duplicates": [[str(f) for f in files] for files in pairing.duplicates],
            "failed": [{"path": path, "reason": reason} for path, reason in run.failed],
            "resized": run.resized,
        },
    }


def _write_outputs(args, report: dict, run: _Run) -> None:
    pred_key = "image" if args.images is not None else "pred"
    if args.json:
        write_json(args.json, report, run.scores, pred_key)
    if args.csv:
        write_csv(args.csv, run.scores, pred_key)


def _prepare(args) -> Tuple[Pairing, int]:
    """Check the options and the dependency, pair the files and list the pairing problems on stderr
    (before any model loads); returns the pairing and how many problems count as failures.
    Raises EvalError (exit 2) for bad options, a missing dependency or folder, or no pair at all."""
    _check_mode_options(args)
    load_metrics()  # fail before any work when PySODMetrics is missing
    source = args.images if args.images is not None else args.pred
    pairing = pair_by_stem(source, args.gt, "--images" if args.images is not None else "--pred")
    problems = _report_pairing(pairing, args, lambda m: print(m, file=sys.stderr))
    if not pairing.pairs:
        raise EvalError(f"no file of {source} has a ground truth of the same name in {args.gt}; "
                        "files are paired by name stem (a.png with a.jpg)")
    return pairing, problems


def main(argv: Optional[Sequence[str]] = None, predictor=None) -> int:
    """Run ``python -m ben_core eval``; returns the exit code (see the module docstring).

    ``predictor``: a loaded ``BENPredictor`` to use in ``--images`` mode instead of loading BEN2 from
    ``--checkpoint`` (embedding, tests).
    """
    return run_program(build_parser(), argv, lambda args, log: _main(args, log, predictor))


def _main(args, log, predictor) -> int:
    pairing, problems = _prepare(args)
    if args.images is not None and predictor is None:
        try:
            predictor = build_predictor(args, log)
        except UsageError:
            raise
        except Exception as e:  # WeightsNotFoundError, CheckpointError, FileNotFoundError, ...
            print(f"error: could not load the BEN2 model: {e}", file=sys.stderr)
            return EXIT_MODEL
    with _Run(args, len(pairing.pairs)) as run:
        try:
            if args.images is not None:
                _score_predictions(run, pairing.pairs, predictor)
            else:
                _score_files(run, pairing.pairs)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
    return _finish(args, pairing, run, problems)


def _finish(args, pairing: Pairing, run: _Run, problems: int) -> int:
    """Print the table and the summary, write the files, pick the exit code."""
    means = dataset_means(run.scores)
    report = _report(args, pairing, run, means)
    if run.scores:
        print(format_table(report["dataset"], len(run.scores), means))
    try:
        _write_outputs(args, report, run)
    except OSError as e:
        print(f"error: cannot write the results: {e}; choose another --json / --csv path", file=sys.stderr)
        return EXIT_FAILED
    if run.resized:
        print(f"note: {len(run.resized)} prediction(s) resized to their ground truth's size (bilinear): "
              f"{', '.join(run.resized)}", file=sys.stderr)
    total = problems + len(run.failed)
    if total:
        print(f"{len(run.scores)} of {len(pairing.pairs)} pair(s) scored; {total} problem(s) listed above",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
