"""Real-photo matting benchmark: ``python -m benchmarks.bench_matting_real DATA_DIR [options]``.

Measures the alpha refinement of :mod:`ben_core.matting.refine` on photos with hand-made ground-truth alpha
mattes (e.g. the 27 training images of the alphamatting.com benchmark, Rhemann et al., CVPR 2009), where
:mod:`benchmarks.bench_matting` only has synthetic mattes and the lemur's estimated alpha.

Data: ``DATA_DIR/image/NAME.png`` (RGB photo) and ``DATA_DIR/alpha/NAME.png`` (its ground-truth alpha,
8-bit grey or RGB with equal channels; the first channel is read), paired by file name. No data ships
with the repository; point the benchmark at a folder you made.

Coarse alpha (what a base model would hand to the refiner), two variants:

* ``model``: the truth as BEN2 would see it: area-downsampled to a square ``S x S`` map (aspect squeezed,
  as BEN2 resizes to 1024x1024) with ``S = round(max(H, W) / model_factor)``, Gaussian blur of
  ``blur_sigma`` (default 1.0) px at that resolution, bilinear upsample back to ``H x W``
  (:func:`benchmarks.synthetic_matting.coarsen_alpha`). The default ``model_factor`` 3.75 is the scale of a
  3840 px photo seen at 1024 (``bench_matting.MODEL_FACTOR``): an 800 px alphamatting.com low-res image is
  treated as a 3840 px photo reduced 4.8x, so its model map is 213x213. Use ``--model-factor`` for another.
* ``hard``: the same, but thin structures are lost entirely, as a segmentation network loses hair: after
  the downsample the map is opened (grey-level minimum then maximum filter, ``open_px x open_px``, default
  3, at model resolution), which removes every structure narrower than ``open_px`` model pixels, then
  blurred and upsampled as above.

``--model-side N`` makes the model map ``N x N`` whatever the image size (``1024``: how BEN2 sees a
full-resolution photo, e.g. 3280 px at 1/3.2; the full-resolution alphamatting.com mattes with
:mod:`benchmarks.fullres_composite`).

Methods (``--methods``): ``coarse`` (the coarse alpha as is), ``snapped`` (the coarse alpha with the
sure pixels of ``refine_alpha``'s own trimap, :func:`ben_core.matting.trimap.auto_trimap`, set to exactly 0/1, no
filtering: what ``refine_alpha`` does outside its band), ``guided`` (``refine_alpha(image, coarse)`` with every
default; ``guided:radius=5,eps=1e-3`` passes keyword arguments; ``guided:working_size=model`` passes each
image's model map side, what a pipeline that made the mask knows; ``guided:scale=3.75`` is the earlier default;
``t_low``, ``t_high``, ``t_min``, ``t_max`` make the confidence trimap with those thresholds, as Show Trimap's
sliders do: ``guided:t_low=0.1,t_high=0.9`` the paper's start, narrower than the default trimap), and external
callables ``path/to/file.py:func`` or
``package.module:func``, called as ``func(image [1,3,H,W], coarse [1,H,W]) -> alpha [1,H,W]`` (float 0..1, CPU
tensors). The evaluation band is always that of the paper's confidence trimap (below), whatever a method's trimap.

Metrics (alpha in 0..1; the usual matting-benchmark definitions, as in the Deep Image Matting evaluation
code of Xu et al. 2017):

* SAD: sum of ``|alpha - gt|`` over the region, divided by 1000.
* MSE: mean of ``(alpha - gt)^2`` over the region.
* Grad (Rhemann et al.): gradient magnitudes of both mattes by first-derivative-of-Gaussian filters
  (sigma 1.4, kernel half-size ``ceil(sigma * sqrt(-2 ln(sqrt(2 pi) sigma 0.01)))``, L2-normalised,
  replicate border); sum over the region of the squared difference of the magnitudes, divided by 1000.
* Conn (Rhemann et al.): connectivity error with threshold step 0.1 (4-connected largest component
  of ``(alpha >= t) & (gt >= t)``; ``phi = 1 - d * (d >= 0.15)``), sum of ``|phi - phi_gt|`` over the
  region, divided by 1000. Needs scipy (``scipy.ndimage.label``); reported as NaN without it.

Regions:

* ``band``: the evaluation band of each image and coarse variant, the union of (1) the unknown pixels of
  ``confidence_trimap(coarse)`` (the band ``refine_alpha`` works in; ``auto_trimap`` picks the same for a
  soft coarse alpha), (2) the pixels whose truth is fractional (``0 < gt < 1``) and (3) the pixels whose
  truth and coarse alpha fall on different sides of 0.5. It is the same for every method, and it contains
  the hair the coarse alpha lost outside the confidence band.
* ``image``: every pixel.

Time is the wall time of one call; ``peak MB`` is the growth of this process's peak resident set (VmHWM,
reset before each call through ``/proc/self/clear_refs``) above the resident set before the call.
``--time-4k`` also times every method on the first image upscaled to 3840x2160 (coarse from a 1024
model map), each in a fresh subprocess (peak RSS of that process); ``--time-size 8000x6000`` likewise at any
size. ``--no-conn`` skips the connectivity error (~20 s per 7 MP image).

Output: markdown tables (averages; per image the band MSE and whole-image SAD as multiples of the coarse
alpha's, with the median, the worst image and how many reach x0.6; per image every metric unless
``--no-per-image``), ``--plot FILE`` a bar chart of band MSE per image (matplotlib,
requirements-bench.txt), and with ``--json`` every number.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ben_core.matting.refine import refine_alpha
from ben_core.matting.trimap import auto_trimap, confidence_trimap

from .synthetic_matting import coarsen_alpha, gaussian_blur

REPO = Path(__file__).resolve().parent.parent
MODEL_FACTOR = 3840 / 1024   # default: a 3840 px photo seen through BEN2's 1024^2 input
BLUR_SIGMA = 1.0             # blur of the coarse map at model resolution (px)
OPEN_PX = 3                  # opening size at model resolution for the "hard" variant
VARIANTS = ("model", "hard")
DEFAULT_METHODS = ("coarse", "snapped", "guided")
#: Keys of a guided spec that set the confidence trimap's thresholds (Show Trimap's sliders), not refine_alpha's.
TRIMAP_KEYS = ("t_low", "t_high", "t_min", "t_max")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


# --------------------------------------------------------------------------------------------------
# data and coarse alphas
# --------------------------------------------------------------------------------------------------

def load_pairs(data_dir, names=None) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """``[(name, image [1,3,H,W], alpha [1,H,W])]`` float32 0..1 from ``data_dir/{image,alpha}/``, sorted by
    name (optionally only the file stems in ``names``)."""
    from PIL import Image

    d = Path(data_dir)
    if not (d / "image").is_dir() or not (d / "alpha").is_dir():
        raise SystemExit(f"{d} must contain the folders image/ and alpha/ (paired files of the same name)")
    out = []
    for p in sorted((d / "image").iterdir()):
        if p.suffix.lower() not in IMAGE_EXTS or (names and p.stem not in names):
            continue
        cands = [q for q in (d / "alpha").glob(p.stem + ".*") if q.suffix.lower() in IMAGE_EXTS]
        if not cands:
            print(f"warning: no alpha for {p.name}; skipped", file=sys.stderr)
            continue
        img = np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255
        am = Image.open(cands[0])
        a = np.asarray(am.convert("RGB") if am.mode == "P" else am)  # palette mattes: the colours, not indices
        a = (a[..., 0] if a.ndim == 3 else a).astype(np.float32)
        a = a / (65535 if a.max() > 255 else 255)
        if a.shape != img.shape[:2]:
            raise SystemExit(f"{cands[0]} is {a.shape[::-1]} but {p} is {img.shape[1::-1]}")
        out.append((p.stem, torch.from_numpy(img).permute(2, 0, 1)[None].contiguous(), torch.from_numpy(a)[None]))
    if not out:
        raise SystemExit(f"no image/alpha pairs found in {d}")
    return out


def model_size(height: int, width: int, model_factor: float = MODEL_FACTOR) -> int:
    """Side of the square model map for an ``height x width`` image: ``max(2, round(max(H, W) / factor))``."""
    return max(2, round(max(height, width) / model_factor))


def coarse_alpha(gt: torch.Tensor, variant: str, model_factor: float = MODEL_FACTOR,
                 blur_sigma: float = BLUR_SIGMA, open_px: int = OPEN_PX, model_side: int | None = None) -> torch.Tensor:
    """Coarse alpha ``[1,H,W]`` of the truth ``gt`` ``[1,H,W]`` for ``variant`` ``"model"`` or ``"hard"``
    (see the module docstring); ``model_side``: the model map's side (default from ``model_factor``)."""
    H, W = gt.shape[-2:]
    S = model_size(H, W, model_factor) if model_side is None else int(model_side)
    if variant == "model":
        return coarsen_alpha(gt, model_size=S, blur_sigma=blur_sigma)
    if variant != "hard":
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    a = gt.reshape(1, 1, H, W).float()
    # the same resampling as coarsen_alpha, with an opening at model resolution before the blur
    small = F.interpolate(a, size=(S, S), mode="area") if (H > S or W > S) \
        else F.interpolate(a, size=(S, S), mode="bilinear", align_corners=False, antialias=True)
    k = int(open_px)
    if k > 1:
        pl, pr = (k - 1) // 2, k // 2
        small = -F.max_pool2d(F.pad(-small, (pl, pr, pl, pr), value=-1.0), k, stride=1)  # grey erosion (outside = 1)
        small = F.max_pool2d(F.pad(small, (pl, pr, pl, pr), value=0.0), k, stride=1)      # grey dilation (outside = 0)
    small = gaussian_blur(small, blur_sigma)
    return F.interpolate(small, size=(H, W), mode="bilinear", align_corners=False).reshape(1, H, W).clamp(0, 1)


def eval_band(coarse: torch.Tensor, gt: torch.Tensor, trimap: torch.Tensor | None = None) -> torch.Tensor:
    """Bool ``[H, W]``: unknown pixels of ``confidence_trimap(coarse)`` OR ``0 < gt < 1`` OR coarse and truth
    on different sides of 0.5 (see the module docstring). ``coarse``, ``gt``: ``[1,H,W]``."""
    if trimap is None:
        trimap = confidence_trimap(coarse)[0]
    return ((trimap[0] == 0.5) | ((gt[0] > 0) & (gt[0] < 1)) | ((coarse[0] >= 0.5) != (gt[0] >= 0.5)))


# --------------------------------------------------------------------------------------------------
# metrics (numpy float64 [H, W] in 0..1, region bool [H, W] or None for the whole image)
# --------------------------------------------------------------------------------------------------

def sad(pred: np.ndarray, gt: np.ndarray, region=None) -> float:
    """Sum of absolute differences over ``region`` / 1000."""
    d = np.abs(pred - gt)
    return float(d[region].sum() if region is not None else d.sum()) / 1000


def mse(pred: np.ndarray, gt: np.ndarray, region=None) -> float:
    """Mean squared difference over ``region`` (0.0 for an empty region)."""
    d = (pred - gt) ** 2
    d = d[region] if region is not None else d.reshape(-1)
    return float(d.mean()) if d.size else 0.0


def _gauss_deriv_kernels(sigma: float = 1.4, epsilon: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    half = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * epsilon)))
    u = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-u ** 2 / (2 * sigma ** 2)) / (sigma * math.sqrt(2 * math.pi))
    dg = -u * g / sigma ** 2
    hx = g[:, None] * dg[None, :]  # derivative along x (columns), Gaussian along y
    hx = hx / math.sqrt((hx * hx).sum())
    return hx, hx.T.copy()


def gradient_magnitude(a: np.ndarray, sigma: float = 1.4) -> np.ndarray:
    """|grad a| by first-derivative-of-Gaussian filters (replicate border), float64 ``[H, W]``."""
    hx, hy = _gauss_deriv_kernels(sigma)
    r = hx.shape[0] // 2
    x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))[None, None]
    x = F.pad(x, (r, r, r, r), mode="replicate")
    k = torch.from_numpy(np.stack([hx, hy]))[:, None]
    g = F.conv2d(x, k)[0]
    return torch.sqrt(g[0] ** 2 + g[1] ** 2).numpy()


def grad_error(pred: np.ndarray, gt: np.ndarray, region=None, gt_mag: np.ndarray | None = None) -> float:
    """Rhemann gradient error over ``region`` / 1000 (``gt_mag``: precomputed ``gradient_magnitude(gt)``)."""
    gm = gradient_magnitude(gt) if gt_mag is None else gt_mag
    d = (gradient_magnitude(pred) - gm) ** 2
    return float(d[region].sum() if region is not None else d.sum()) / 1000


def _largest_cc(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    lab, n = ndimage.label(mask)  # 4-connectivity
    if n == 0:
        return np.zeros_like(mask, dtype=bool)
    counts = np.bincount(lab.ravel())
    counts[0] = 0
    return lab == counts.argmax()


def _conn_diff(pred: np.ndarray, gt: np.ndarray, step: float = 0.1) -> np.ndarray:
    """Per-pixel ``|phi(pred) - phi(gt)|`` of the connectivity error (needs scipy)."""
    ts = np.arange(0, 1 + step, step)
    lmap = np.full(pred.shape, -1.0)
    for i in range(1, len(ts)):
        omega = _largest_cc((pred >= ts[i]) & (gt >= ts[i]))
        lmap[(lmap == -1) & ~omega] = ts[i - 1]
    lmap[lmap == -1] = 1
    pd, gd = pred - lmap, gt - lmap
    return np.abs((1 - pd * (pd >= 0.15)) - (1 - gd * (gd >= 0.15)))


def _have_scipy() -> bool:
    try:
        import scipy.ndimage  # noqa: F401
    except ImportError:
        return False
    return True


def conn_error(pred: np.ndarray, gt: np.ndarray, region=None, step: float = 0.1) -> float:
    """Rhemann connectivity error over ``region`` / 1000 (NaN when scipy is missing)."""
    if not _have_scipy():
        return float("nan")
    d = _conn_diff(pred, gt, step)
    return float(d[region].sum() if region is not None else d.sum()) / 1000


def all_metrics(pred: np.ndarray, gt: np.ndarray, band: np.ndarray, gt_mag: np.ndarray, conn: bool = True) -> dict:
    """``{band_sad, band_mse, band_grad, band_conn, img_sad, img_mse, img_grad, img_conn}`` (conn NaN when
    ``conn`` is False or scipy is missing)."""
    pm = gradient_magnitude(pred)
    g2 = (pm - gt_mag) ** 2
    out = {"band_sad": sad(pred, gt, band), "band_mse": mse(pred, gt, band),
           "band_grad": float(g2[band].sum()) / 1000, "img_sad": sad(pred, gt), "img_mse": mse(pred, gt),
           "img_grad": float(g2.sum()) / 1000}
    if conn and _have_scipy():
        c = _conn_diff(pred, gt)
        out["band_conn"], out["img_conn"] = float(c[band].sum()) / 1000, float(c.sum()) / 1000
    else:
        out["band_conn"] = out["img_conn"] = float("nan")
    return out


# --------------------------------------------------------------------------------------------------
# methods
# --------------------------------------------------------------------------------------------------

def _parse_value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"none": None, "true": True, "false": False}.get(v.lower(), v)


def with_model_side(spec: str, side: int) -> str:
    """``spec`` with ``working_size=model`` replaced by the model map side ``side`` it stands for."""
    return spec.replace("working_size=model", f"working_size={side}")


def resolve_method(spec: str):
    """A callable ``fn(image [1,3,H,W], coarse [1,H,W]) -> alpha [1,H,W]`` for a method spec (see the
    module docstring)."""
    if spec == "coarse":
        return lambda img, c: c.clone()
    if spec == "snapped":
        def snapped(img, c):
            tri = auto_trimap(c)  # refine_alpha's own trimap
            return torch.where(tri == 0.5, c, tri)
        return snapped
    if spec == "guided" or spec.startswith("guided:"):
        kw = {}
        if ":" in spec:
            for item in filter(None, spec.split(":", 1)[1].split(",")):
                k, _, v = item.partition("=")
                kw[k.strip()] = _parse_value(v.strip())
        tkw = {k: kw.pop(k) for k in TRIMAP_KEYS if k in kw}
        if not tkw:  # refine_alpha's own trimap (auto_trimap)
            return lambda img, c: refine_alpha(img, c, **kw)
        # the confidence trimap with these thresholds, as Show Trimap's sliders make it
        return lambda img, c: refine_alpha(img, c, confidence_trimap(c, **tkw)[0], **kw)
    if ":" in spec:
        target, _, fname = spec.rpartition(":")
        if target.endswith(".py"):
            sp = importlib.util.spec_from_file_location(Path(target).stem + "_bench_method", target)
            if sp is None or sp.loader is None:
                raise SystemExit(f"cannot load {target}")
            mod = importlib.util.module_from_spec(sp)
            sp.loader.exec_module(mod)
        else:
            mod = importlib.import_module(target)
        return getattr(mod, fname)
    raise SystemExit(f"unknown method {spec!r}: use coarse, snapped, guided[:k=v,...], file.py:func or module:func")


def _proc_status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run_method(fn, image: torch.Tensor, coarse: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """``(alpha [1,H,W], seconds, peak MB above the RSS before the call or NaN)`` of one call."""
    ok = _reset_peak()
    rss0 = _proc_status_mb("VmRSS")
    t = time.perf_counter()
    with torch.inference_mode():
        out = fn(image, coarse)
    dt = time.perf_counter() - t
    peak = max(0.0, _proc_status_mb("VmHWM") - rss0) if ok else float("nan")
    out = out.reshape(coarse.shape).float()
    if not bool(torch.isfinite(out).all()) or float(out.min()) < -1e-6 or float(out.max()) > 1 + 1e-6:
        raise RuntimeError("method returned values outside 0..1")
    return out.clamp(0, 1), dt, peak


# --------------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------------

def evaluate(pairs, methods, variants, model_factor=MODEL_FACTOR, blur_sigma=BLUR_SIGMA, open_px=OPEN_PX,
             log=None, model_side=None, conn=True) -> list[dict]:
    """One record per (image, variant, method): name, variant, method, size, band/unknown pixel counts,
    the metrics of :func:`all_metrics`, ``time_s`` and ``peak_mb``. A method spec with
    ``working_size=model`` gets the model map side of each image's coarse alpha (what a pipeline that made
    the mask knows). ``conn=False`` skips the connectivity error (NaN; it costs ~20 s per 7 MP image)."""
    fns = {m: resolve_method(with_model_side(m, 1)) for m in methods}  # checks every spec up front
    recs = []
    for name, img, gt in pairs:
        gt_np = gt[0].double().numpy()
        gt_mag = gradient_magnitude(gt_np)
        for var in variants:
            c = coarse_alpha(gt, var, model_factor, blur_sigma, open_px, model_side)
            S = model_size(*gt.shape[-2:], model_factor) if model_side is None else int(model_side)
            tri = confidence_trimap(c)[0]
            band = eval_band(c, gt, tri).numpy()
            unknown = int((tri == 0.5).sum())
            for m, fn in fns.items():
                if "working_size=model" in m:
                    fn = resolve_method(with_model_side(m, S))
                pred, dt, peak = run_method(fn, img, c)
                r = {"image": name, "variant": var, "method": m, "size": list(gt.shape[-2:]),
                     "band_px": int(band.sum()), "unknown_px": unknown, "time_s": dt, "peak_mb": peak}
                r.update(all_metrics(pred[0].double().numpy(), gt_np, band, gt_mag, conn))
                recs.append(r)
                if log:
                    log(f"{name} {var:5s} {m}: band MSE {r['band_mse']:.5f}, image SAD {r['img_sad']:.2f}, "
                        f"{dt:.2f} s")
    return recs


def _f(x: float, nd: int) -> str:
    return "nan" if math.isnan(x) else f"{x:.{nd}f}"


def per_image_table(recs, variant) -> str:
    """Markdown: every image x method of ``variant``."""
    lines = [("| image | band px | unknown px | method | band SAD | band MSE | band MSE cut | band Grad | band Conn "
              "| image SAD | image MSE | image Grad | image Conn | time (s) | peak MB |"),
             "|---" * 15 + "|"]
    base = {r["image"]: r for r in recs if r["variant"] == variant and r["method"] == "coarse"}
    for r in recs:
        if r["variant"] != variant:
            continue
        b = base.get(r["image"])
        cut = f"{100 * (1 - r['band_mse'] / b['band_mse']):+.1f}%" if b and b["band_mse"] > 0 else "-"
        lines.append(f"| {r['image']} | {r['band_px']} | {r['unknown_px']} | {r['method']} | {_f(r['band_sad'], 2)} | "
                     f"{_f(r['band_mse'], 5)} | {cut} | {_f(r['band_grad'], 2)} | {_f(r['band_conn'], 2)} | "
                     f"{_f(r['img_sad'], 2)} | {_f(r['img_mse'], 5)} | {_f(r['img_grad'], 2)} | "
                     f"{_f(r['img_conn'], 2)} | {r['time_s']:.2f} | {_f(r['peak_mb'], 0)} |")
    return "\n".join(lines)


def summary_table(recs, variants, methods) -> str:
    """Markdown: per variant and method, metric means over the images, the mean of the per-image band-MSE
    cut vs coarse, and the images worse than coarse on whole-image SAD."""
    lines = [("| variant | method | images | band SAD | band MSE | mean band MSE cut | band Grad | band Conn | "
              "image SAD | image MSE | image Grad | image Conn | image SAD worse than coarse | time (s) | peak MB |"),
             "|---" * 15 + "|"]
    for var in variants:
        base = {r["image"]: r for r in recs if r["variant"] == var and r["method"] == "coarse"}
        for m in methods:
            rs = [r for r in recs if r["variant"] == var and r["method"] == m]
            if not rs:
                continue
            mean = {k: float(np.mean([r[k] for r in rs])) for k in
                    ("band_sad", "band_mse", "band_grad", "band_conn", "img_sad", "img_mse", "img_grad", "img_conn",
                     "time_s", "peak_mb")}
            cuts = [1 - r["band_mse"] / base[r["image"]]["band_mse"] for r in rs
                    if r["image"] in base and base[r["image"]]["band_mse"] > 0]
            worse = [r["image"] for r in rs if r["image"] in base and r["img_sad"] > base[r["image"]]["img_sad"] + 1e-9]
            lines.append(f"| {var} | {m} | {len(rs)} | {mean['band_sad']:.2f} | {mean['band_mse']:.5f} | "
                         f"{100 * float(np.mean(cuts)):+.1f}% | {mean['band_grad']:.2f} | {_f(mean['band_conn'], 2)} | "
                         f"{mean['img_sad']:.2f} | {mean['img_mse']:.5f} | {mean['img_grad']:.2f} | "
                         f"{_f(mean['img_conn'], 2)} | {len(worse)}{': ' + ', '.join(worse) if worse else ''} | "
                         f"{mean['time_s']:.2f} | {_f(mean['peak_mb'], 0)} |")
    return "\n".join(lines)


def ratio_table(recs, variant, methods) -> str:
    """Markdown: per image of ``variant``, the coarse band MSE and each method's band MSE and whole-image SAD
    as multiples of the coarse alpha's (x0.50 = half the error), then the median, the worst image and how
    many images reach <= x0.6 band MSE and <= x1.0 SAD."""
    ms = [m for m in methods if m != "coarse"]
    base = {r["image"]: r for r in recs if r["variant"] == variant and r["method"] == "coarse"}
    by = {(r["image"], r["method"]): r for r in recs if r["variant"] == variant}
    head = "| image | size | coarse band MSE | " + " | ".join(f"{m}: band MSE | {m}: image SAD" for m in ms) + " |"
    lines = [head, "|---" * (3 + 2 * len(ms)) + "|"]
    cols = {m: ([], []) for m in ms}
    for name, b in base.items():
        cells = []
        for m in ms:
            r = by.get((name, m))
            if r is None or b["band_mse"] <= 0 or b["img_sad"] <= 0:
                cells += ["-", "-"]
                continue
            q, d = r["band_mse"] / b["band_mse"], r["img_sad"] / b["img_sad"]
            cols[m][0].append(q)
            cols[m][1].append(d)
            cells += [f"x{q:.2f}", f"x{d:.2f}"]
        lines.append(f"| {name} | {b['size'][1]}x{b['size'][0]} | {b['band_mse']:.5f} | " + " | ".join(cells) + " |")
    for label, fn in (("median", np.median), ("worst", np.max)):
        cells = []
        for m in ms:
            q, d = cols[m]
            cells += [f"x{fn(q):.2f}" if q else "-", f"x{fn(d):.2f}" if d else "-"]
        lines.append(f"| **{label}** | | | " + " | ".join(cells) + " |")
    cells = []
    for m in ms:
        q, d = cols[m]
        cells += [f"{sum(x <= 0.6 for x in q)}/{len(q)} <= x0.6", f"{sum(x <= 1.0 for x in d)}/{len(d)} <= x1"]
    lines.append("| **images** | | | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_band_mse(recs, variants, methods, path) -> None:
    """Bar chart of band MSE (multiple of the coarse alpha's) per image and method, one panel per variant,
    to ``path`` (PNG/SVG/PDF by extension). Needs matplotlib (requirements-bench.txt)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise SystemExit(f"--plot needs matplotlib ({e}); pip install -r requirements-bench.txt") from e
    ms = [m for m in methods if m != "coarse"]
    fig, axes = plt.subplots(len(variants), 1, figsize=(12, 3.2 * len(variants)), squeeze=False)
    for ax, var in zip(axes[:, 0], variants, strict=True):
        base = {r["image"]: r["band_mse"] for r in recs if r["variant"] == var and r["method"] == "coarse"}
        names = sorted(base)
        x = np.arange(len(names))
        wbar = 0.8 / max(1, len(ms))
        for k, m in enumerate(ms):
            by = {r["image"]: r["band_mse"] for r in recs if r["variant"] == var and r["method"] == m}
            ax.bar(x + k * wbar, [by.get(n, np.nan) / base[n] if base[n] > 0 else np.nan for n in names], wbar, label=m)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(0.6, color="r", lw=0.8, ls="--")
        ax.set_xticks(x + 0.4 - wbar / 2, names, rotation=90, fontsize=7)
        ax.set_ylabel("band MSE / coarse")
        ax.set_title(f"coarse variant {var}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- 4K timing in fresh subprocesses -------------------------------------------------------------

def _child_4k(path: str, spec: str) -> None:
    d = torch.load(path, weights_only=True)
    fn = resolve_method(spec)
    ok = _reset_peak()
    rss0 = _proc_status_mb("VmHWM")
    t = time.perf_counter()
    with torch.inference_mode():
        fn(d["image"], d["coarse"])
    dt = time.perf_counter() - t
    print(json.dumps({"time_s": dt, "rss_before_mb": rss0, "peak_rss_mb": _proc_status_mb("VmHWM"),
                      "peak_reset": ok}))


def time_4k(pair, methods, H=2160, W=3840) -> list[dict]:
    """Each method on ``pair``'s image and truth resized to ``H x W`` (bicubic / bilinear) with the coarse
    alpha of a 1024 model map, each in a fresh subprocess: ``[{method, time_s, rss_before_mb, peak_rss_mb}]``
    (the inputs are made in float32, resized in row strips so this process stays small at 8000 x 6000)."""
    name, img, gt = pair
    img4 = F.interpolate(img, size=(H, W), mode="bicubic", align_corners=False).clamp_(0, 1)
    gt4 = F.interpolate(gt[None], size=(H, W), mode="bilinear", align_corners=False)[0].clamp_(0, 1)
    c4 = coarsen_alpha(gt4, model_size=1024, blur_sigma=BLUR_SIGMA)
    del gt4
    out = []
    with tempfile.TemporaryDirectory() as td:
        p = os.path.join(td, "in.pt")
        torch.save({"image": img4.contiguous(), "coarse": c4.contiguous()}, p)
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        for m in methods:
            spec = with_model_side(m, 1024)  # the map c4 was made at
            r = subprocess.run([sys.executable, "-m", "benchmarks.bench_matting_real", "--child-4k", p, spec],
                               capture_output=True, text=True, cwd=str(REPO), env=env, check=False)
            if r.returncode != 0:
                raise RuntimeError(f"4K run of {m} failed:\n{r.stderr}")
            d = json.loads(r.stdout.strip().splitlines()[-1])
            d.update(method=m, image=name, size=[H, W])
            out.append(d)
    return out


def fourk_table(rows) -> str:
    lines = ["| method | image | size | time (s) | RSS with inputs (MB) | peak RSS (MB) |", "|---|---|---|---|---|---|"]
    for d in rows:
        lines.append(f"| {d['method']} | {d['image']} | {d['size'][1]}x{d['size'][0]} | {d['time_s']:.2f} | "
                     f"{d['rss_before_mb']:.0f} | {d['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    """Command line entry (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_dir", nargs="?", help="folder with image/ and alpha/ (paired file names)")
    ap.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                    help="coarse, snapped, guided, guided:k=v,..., file.py:func, module:func (default: %(default)s)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS, help="coarse-alpha variants")
    ap.add_argument("--names", nargs="+", help="only these image stems (e.g. GT01 GT04)")
    ap.add_argument("--model-factor", type=float, default=MODEL_FACTOR,
                    help="image long side / model map side (default 3840/1024 = 3.75)")
    ap.add_argument("--blur-sigma", type=float, default=BLUR_SIGMA, help="coarse blur at model resolution (px)")
    ap.add_argument("--open-px", type=int, default=OPEN_PX, help="opening size of the hard variant (model px)")
    ap.add_argument("--time-4k", action="store_true", help="also time each method at 3840x2160 (subprocesses)")
    ap.add_argument("--time-size", nargs="+", default=[], metavar="WxH",
                    help="also time each method at these sizes, e.g. 8000x6000 (first image upscaled; subprocesses)")
    ap.add_argument("--model-side", type=int, default=None,
                    help="square model map side of the coarse alpha (e.g. 1024, as BEN2 sees a full-resolution "
                         "photo); overrides --model-factor")
    ap.add_argument("--per-image", action="store_true", default=True, help=argparse.SUPPRESS)
    ap.add_argument("--no-per-image", dest="per_image", action="store_false", help="print only the summary tables")
    ap.add_argument("--no-conn", action="store_true", help="skip the connectivity error (slow at full resolution)")
    ap.add_argument("--plot", help="draw band MSE per image (x coarse) to this image file (needs matplotlib)")
    ap.add_argument("--json", help="write every record to this JSON file")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    ap.add_argument("--from-json", metavar="JSON",
                    help="print the tables (and --plot) of a run saved with --json instead of measuring; its "
                         "methods and variants, not --methods/--variants")
    ap.add_argument("--child-4k", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_4k:
        _child_4k(*args.child_4k)
        return
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        recs, fourk_saved = saved["records"], saved.get("fourk")
        for key in ("methods", "variants", "model_side", "model_factor", "blur_sigma", "open_px", "data_dir"):
            setattr(args, key, saved["settings"][key])
        n_images = len({r["image"] for r in recs})
        args.time_4k, args.time_size, args.json = False, [], None
        print(f"# Real-photo matting benchmark ({n_images} images from {args.data_dir}; read from "
              f"{args.from_json})\n")
    else:
        if not args.data_dir:
            ap.error("DATA_DIR is required")
        if "coarse" not in args.methods:
            args.methods = ["coarse"] + args.methods  # the reference of every comparison
        pairs = load_pairs(args.data_dir, set(args.names) if args.names else None)
        log = None if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
        recs = evaluate(pairs, args.methods, args.variants, args.model_factor, args.blur_sigma, args.open_px, log,
                        args.model_side, not args.no_conn)
        fourk_saved = None
        print(f"# Real-photo matting benchmark ({len(pairs)} images from {args.data_dir}; torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads)\n")
    side = f"{args.model_side}" if args.model_side else f"round(max(H, W) / {args.model_factor:g})"
    print(f"Coarse alpha: model map side {side}, blur sigma {args.blur_sigma:g} "
          f"model px; hard variant opened with {args.open_px}x{args.open_px} model px. Band = confidence-trimap "
          "unknown OR 0 < gt < 1 OR coarse/gt on different sides of 0.5. SAD, Grad, Conn in thousands.\n")
    print("## Averages\n")
    print(summary_table(recs, args.variants, args.methods), "\n")
    for var in args.variants:
        print(f"## Per image, coarse variant `{var}`: multiples of the coarse alpha's error\n")
        print(ratio_table(recs, var, args.methods), "\n")
    if args.plot:
        plot_band_mse(recs, args.variants, args.methods, args.plot)
        print(f"(plot: {args.plot})\n")
    if args.per_image:
        for var in args.variants:
            print(f"## Per image, coarse variant `{var}`, every metric\n")
            print(per_image_table(recs, var), "\n")
    fourk = None
    sizes = (["3840x2160"] if args.time_4k else []) + list(args.time_size)

    def save(fourk_rows) -> None:
        if args.json:
            Path(args.json).write_text(json.dumps({"settings": {k: v for k, v in vars(args).items()
                                                                if k != "child_4k"},
                                                   "records": recs, "fourk": fourk_rows}, indent=1))

    if sizes:
        save(None)  # the records now, so a failed timing run below loses nothing
        fourk = []
        for spec in sizes:
            w, _, h = spec.lower().partition("x")
            if not (w.isdigit() and h.isdigit()):
                ap.error(f"--time-size wants WxH such as 8000x6000, got {spec!r}")
            fourk += time_4k(pairs[0], args.methods, int(h), int(w))
        print(f"## Timing at {', '.join(sizes)} (first image upscaled, coarse from a 1024 map; fresh subprocess "
              f"per method; load average before: {os.getloadavg()[0]:.2f})\n")
        print(fourk_table(fourk), "\n")
    elif fourk_saved:
        print("## Timing (as saved)\n")
        print(fourk_table(fourk_saved), "\n")
    save(fourk)


if __name__ == "__main__":
    main()
