"""Second stage of Confidence-Guided Matting: refine a coarse alpha inside the trimap's unknown band.

The public BEN2 weights ship no refiner network, so the refinement is ours:

* ``method="guided"`` (default): a confidence-weighted *colour* guided filter (He et al.) of the
  coarse alpha. Inside every window the local linear model ``alpha ~ a . RGB + b`` is fitted with
  weight 1 on the trimap's sure pixels (whose alpha is exactly 0/1) and ``unknown_weight`` on the
  unknown pixels, so the colour-to-alpha mapping is learnt mostly from pixels whose alpha is known.
  The models are fitted at the resolution where the coarse alpha's own detail ends and applied to the
  full-resolution colours (a fast guided filter). By default that resolution is measured on the coarse
  alpha itself (:func:`mask_softness`: a BEN2 map of 1024 px upsampled to a 3280 px photo is ~3 px
  soft, one drawn at 213 px for an 800 px image ~4 px), the fit's guide is blurred as softly as the
  coarse alpha (else the fitted slopes shrink: a sharp guide against a soft target), the windows are
  small (``DEFAULT_FIT_RADIUS`` fit pixels: the colour model is local), and the guide the models are
  applied to is lightly smoothed (sensor noise times the fitted slopes). So the refinement behaves the
  same on an 800 px and an 8000 px photo. Defaults measured on real photos with hand-made ground truth at
  ~800 px and at their full 6-9 MP resolution (``python -m benchmarks.bench_matting_real``) and on
  synthetic data (``python -m benchmarks.bench_matting``). An explicit ``scale`` keeps the
  earlier default's behaviour (radius ~min(H, W)/45, no blurs; that default was ``scale=3.75``).
* ``method="vitmatte"``: the ViTMatte network through ``transformers`` (see :mod:`ben_core.matting.vitmatte`).

Only pixels with ``trimap == 0.5`` change; sure foreground/background come out exactly 1/0. Without a
trimap, :func:`ben_core.matting.trimap.auto_trimap` makes one.
"""
from __future__ import annotations

import math

import torch

from ..callbacks import Progress, ShouldStop, check_stop, report
from .guided_filter import fast_guided_filter, guided_filter
from .trimap import auto_trimap

__all__ = ["refine_alpha", "default_radius", "mask_softness", "fit_scale", "check_working_size", "DEFAULT_EPS",
           "DEFAULT_SCALE",
           "DEFAULT_UNKNOWN_WEIGHT", "DEFAULT_FIT_RADIUS", "DEFAULT_FIT_SIGMA", "DEFAULT_APPLY_SIGMA",
           "SOFTNESS_QUANTILE", "METHODS"]

#: Refinement methods of :func:`refine_alpha`.
METHODS = ("guided", "vitmatte")

#: weight of unknown pixels in the local least-squares fit (sure pixels weigh 1); measured.
DEFAULT_UNKNOWN_WEIGHT = 0.3
#: eps of the guided filter (guide in 0..1 RGB): measured best with the fast filter on real photos (1e-4 and
#: 1e-3 cut the band error less); at scale 1, 1e-5 and 1e-4 measured within 2% on the synthetic data.
DEFAULT_EPS = 1e-5
#: The earlier default of ``scale`` (fit at 1/3.75 of the resolution, radius ~min(H, W)/45); a caller that
#: passes ``scale=DEFAULT_SCALE`` gets that refinement. The default now measures the scale (fit_scale).
DEFAULT_SCALE = 3.75
#: Window radius of the local fits, in pixels of the fit's resolution (3x3 windows; the full-resolution
#: default is ``round(DEFAULT_FIT_RADIUS * scale)``). Measured against 2 on 27 real photos: at full resolution
#: the mean band MSE cut rose from 69 % to 72 % and the mesh (GT25) went from 1.22x to 0.89x the coarse
#: alpha's; at ~800 px it moved by under 1 point (docs/refinement.md).
DEFAULT_FIT_RADIUS = 1
#: Blur of the fit's guide in fit pixels (a coarse alpha is about this soft at its own resolution).
DEFAULT_FIT_SIGMA = 1.0
#: Quantile of the coarse alpha's gradient magnitude that :func:`mask_softness` reads as its steepest edges.
SOFTNESS_QUANTILE = 0.999
#: Blur of the guide the fitted models are applied to, in full-resolution pixels (sensor noise).
DEFAULT_APPLY_SIGMA = 0.7


def default_radius(height: int, width: int) -> int:
    """The earlier default's guided-filter radius (used with an explicit ``scale``) for an image of ``height x width``:
    ``max(2, round(min(H, W) / 45))``.

    Chosen by measurement (synthetic benchmark at 960x540 / 1920x1080 and the lemur photo, coarse
    alpha from a model at ~1/3.75 of the resolution): the best radius grew with the image side,
    about min-side / 45 (lemur 440 px -> 10, 1080 px -> 24, 4K -> 48).
    """
    return max(2, int(round(min(height, width) / 45)))


def _check_inputs(image, alpha, trimap):
    for name, t in (("image", image), ("alpha", alpha)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a float tensor in 0..1, got {t.dtype}; convert uint8 with x.float() / 255")
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be [B, 3, H, W] (channels first), got shape {tuple(image.shape)}; "
                         "for ComfyUI IMAGE [B, H, W, 3] use image.permute(0, 3, 1, 2)")
    if alpha.dim() != 3 or alpha.shape[0] != image.shape[0] or alpha.shape[1:] != image.shape[2:]:
        raise ValueError(f"alpha must be [B, H, W] = {(image.shape[0], *image.shape[2:])}, got {tuple(alpha.shape)}")
    if alpha.numel() == 0:
        raise ValueError(f"empty input: image shape {tuple(image.shape)}; need at least one image of at least 1x1 "
                         "pixels")
    if alpha.device != image.device:
        raise ValueError(f"image is on {image.device} but alpha is on {alpha.device}; move them to one device")
    if not bool(torch.isfinite(image).all()) or not bool(torch.isfinite(alpha).all()):
        raise ValueError("image and alpha must not contain NaN or infinite values; "
                         "replace them (e.g. torch.nan_to_num) before refining")
    if float(alpha.min()) < 0 or float(alpha.max()) > 1:
        raise ValueError(f"alpha must lie in [0, 1], got min {float(alpha.min())}, max {float(alpha.max())}; "
                         "pass probabilities (sigmoid of logits) or clamp the mask")
    if trimap is not None:
        if not isinstance(trimap, torch.Tensor) or not trimap.is_floating_point():
            raise TypeError("trimap must be a float tensor with values {0, 0.5, 1}")
        if trimap.shape != alpha.shape:
            raise ValueError(f"trimap must have alpha's shape {tuple(alpha.shape)}, got {tuple(trimap.shape)}")
        if trimap.device != alpha.device:
            raise ValueError(f"alpha is on {alpha.device} but trimap is on {trimap.device}; move them to one device")
        ok = (trimap == 0) | (trimap == 0.5) | (trimap == 1)
        if not bool(ok.all()):
            raise ValueError("trimap values must be exactly 0 (background), 0.5 (unknown) or 1 (foreground); "
                             "build one with confidence_trimap() or band_trimap()")


def mask_softness(alpha: torch.Tensor, unknown: torch.Tensor | None = None, strip_rows: int = 512) -> float:
    """How soft the edges of a coarse alpha are, in pixels: the standard deviation ``sigma`` of a Gaussian-
    blurred step whose steepest slope, ``1 / (sigma sqrt(2 pi))``, is the :data:`SOFTNESS_QUANTILE` quantile
    of the alpha's gradient magnitude (central differences) over its fractional pixels
    (``0.02 < alpha < 0.98``, inside ``unknown`` when given).

    alpha: ``[H, W]`` float in 0..1; unknown: optional ``[H, W]`` bool. A map predicted at ``S`` px (blurred
    by ~1 px there) and resized to the image measures about ``max(H, W) / S``: 0.73-1.10 times that on the
    27 alphamatting.com mattes at ~800 px, 0.90-1.72 at their full 6-9 MP (fuzzy hair reads softer). Returns
    0.0 when no pixel is fractional (a hard 0/1 mask). Read in row strips (memory).
    """
    H, W = alpha.shape
    vals = []
    for y0 in range(0, H, strip_rows):
        y1 = min(H, y0 + strip_rows)
        lo, hi = max(0, y0 - 1), min(H, y1 + 1)
        a = alpha[lo:hi].float()
        gy = torch.zeros_like(a)
        gx = torch.zeros_like(a)
        if a.shape[0] > 2:
            gy[1:-1] = (a[2:] - a[:-2]) * 0.5
        if W > 2:
            gx[:, 1:-1] = (a[:, 2:] - a[:, :-2]) * 0.5
        g = torch.sqrt(gx * gx + gy * gy)[y0 - lo:y1 - lo]
        a = a[y0 - lo:y1 - lo]
        m = (a > 0.02) & (a < 0.98)
        if unknown is not None:
            m &= unknown[y0:y1]
        vals.append(g[m])
    v = torch.cat(vals)
    if v.numel() == 0:
        return 0.0
    steep = float(v.kthvalue(max(1, int(math.ceil(SOFTNESS_QUANTILE * v.numel())))).values)
    return 1.0 / (math.sqrt(2 * math.pi) * steep) if steep > 0 else 0.0


def fit_scale(alpha: torch.Tensor, unknown: torch.Tensor | None = None) -> float:
    """The default fit scale for a coarse alpha ``[H, W]``: its :func:`mask_softness` in pixels, at least 1
    (the fit then runs where the coarse alpha's own detail ends: ~3.2 for BEN2's 1024 map of a 3280 px photo)."""
    return max(1.0, mask_softness(alpha, unknown))


def check_working_size(working_size) -> None:
    """Raise ValueError unless ``working_size`` (the side of the square map a mask was predicted at) is an
    int >= 1."""
    if isinstance(working_size, bool) or not isinstance(working_size, int) or working_size < 1:
        raise ValueError(f"working_size must be an int >= 1 (the side of the map the mask came from), "
                         f"got {working_size!r}")


def _guided_refine_one(image: torch.Tensor, alpha: torch.Tensor, trimap: torch.Tensor, radius: int | None,
                       eps: float, unknown_weight: float, strip_rows: int, scale: float | None,
                       working_size: int | None) -> torch.Tensor:
    """[3,H,W], [H,W], [H,W] -> refined [H,W] (float, unknown pixels only changed; clamped).

    ``scale`` None: fit at ``max(H, W) / working_size`` (at least 1), or at :func:`fit_scale` when
    ``working_size`` is None too, with small windows and blurred guides; a number: the earlier default's behaviour
    (``radius`` None -> :func:`default_radius`)."""
    unk = trimap == 0.5
    out = trimap.to(alpha.dtype).clone()
    if not bool(unk.any()):
        return out
    H, W = alpha.shape
    # source: coarse alpha in the unknown band, the trimap's exact 0/1 elsewhere
    src = torch.where(unk, alpha, out)
    wgt = torch.where(unk, torch.full_like(alpha, float(unknown_weight)), torch.ones_like(alpha))
    if scale is None:
        sc = fit_scale(alpha, unk) if working_size is None else max(1.0, max(H, W) / working_size)
        r = max(1, int(round(DEFAULT_FIT_RADIUS * sc))) if radius is None else radius
        q = fast_guided_filter(image, src, r, eps, sc, weight=wgt, fit_sigma=DEFAULT_FIT_SIGMA,
                               apply_sigma=DEFAULT_APPLY_SIGMA, strip_rows=strip_rows)
        del src, wgt
        return torch.where(unk, q.clamp_(0, 1), out, out=out)
    radius = default_radius(H, W) if radius is None else radius
    if scale > 1:
        q = fast_guided_filter(image, src, radius, eps, scale, weight=wgt, strip_rows=strip_rows)
        return torch.where(unk, q.clamp(0, 1), out)
    rows = unk.any(1).nonzero()[:, 0]
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    halo = 2 * radius  # a 2r halo makes every strip's result equal to the whole-image filter
    for s0 in range(y0, y1, strip_rows):
        s1 = min(y1, s0 + strip_rows)
        scols = unk[s0:s1].any(0).nonzero()[:, 0]
        if scols.numel() == 0:
            continue
        sx0, sx1 = int(scols[0]), int(scols[-1]) + 1  # this strip's unknown columns
        cx0, cx1 = max(0, sx0 - halo), min(W, sx1 + halo)
        u = unk[s0:s1, sx0:sx1]
        a0, a1 = max(0, s0 - halo), min(H, s1 + halo)
        q = guided_filter(image[:, a0:a1, cx0:cx1], src[a0:a1, cx0:cx1], radius, eps,
                          weight=wgt[a0:a1, cx0:cx1], strip_rows=a1 - a0)
        q = q[s0 - a0:s1 - a0, sx0 - cx0:sx1 - cx0].clamp(0, 1)
        out[s0:s1, sx0:sx1] = torch.where(u, q, out[s0:s1, sx0:sx1])
    return out


def refine_alpha(image: torch.Tensor, alpha: torch.Tensor, trimap: torch.Tensor | None = None,
                 method: str = "guided", radius: int | None = None, eps: float | None = None,
                 unknown_weight: float = DEFAULT_UNKNOWN_WEIGHT, strip_rows: int = 256,
                 progress: Progress = None, should_stop: ShouldStop = None, scale: float | None = None,
                 working_size: int | None = None, **vitmatte_kwargs) -> torch.Tensor:
    """Refine a coarse alpha inside the unknown band of a trimap.

    Args:
        image: ``[B, 3, H, W]`` float RGB in 0..1, any size/device.
        alpha: ``[B, H, W]`` float coarse alpha in 0..1 (BEN2, SAM, a painted mask, ...), same device.
        trimap: ``[B, H, W]`` float {0, 0.5, 1}, or None -> :func:`ben_core.matting.trimap.auto_trimap`: for a
            soft mask every pixel it is unsure of (0.03 < alpha < 0.97; the paper's confidence trimap
            starts at 0.10 / 0.90 and calls more pixels sure), for a hard mask a band around its edge.
        method: ``"guided"`` (confidence-weighted colour guided filter, default) or ``"vitmatte"``.
        radius: guided-filter radius in image pixels (default ``round(DEFAULT_FIT_RADIUS * scale)`` with the
            measured scale; with an explicit ``scale``, :func:`default_radius`, ~min(H, W)/45).
        eps: guided-filter regularisation (default :data:`DEFAULT_EPS`).
        unknown_weight: weight of unknown pixels in the local fit (sure pixels weigh 1), in (0, 1].
        strip_rows: rows per processing strip (memory bound only; the result depends on it by float
            rounding at most, ~1e-6).
        scale: fit the local colour models at 1/scale of the resolution and apply them at full resolution.
            Default None: measured per image on the coarse alpha (:func:`fit_scale`), with small windows and
            a guide blurred to the coarse alpha's softness. A number (>= 1; 1 = the plain full-resolution
            filter) keeps the earlier behaviour: radius ~min(H, W)/45, no blurs (the earlier default was 3.75).
        working_size: side of the square map the coarse alpha was predicted at, when known (BEN2: the
            Remove Background node's working size, 1024 by default): the fit then runs at
            ``max(H, W) / working_size`` instead of the measured scale. Not together with ``scale``.
        progress, should_stop: per image (guided) or per tile (vitmatte); see :mod:`ben_core.callbacks`.
        **vitmatte_kwargs: passed to :func:`ben_core.matting.vitmatte.vitmatte_refine` (model, tile_size, ...).

    Returns:
        refined alpha ``[B, H, W]`` in alpha's dtype and device, 0..1, equal to the trimap where it
        is 0 or 1. Inputs are not modified.
    """
    _check_inputs(image, alpha, trimap)
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    B = image.shape[0]
    if trimap is None:
        trimap = auto_trimap(alpha)
    if method == "vitmatte":
        if radius is not None or eps is not None or scale is not None or working_size is not None:
            raise TypeError("radius, eps, scale and working_size apply to method='guided' only; "
                            "drop them for method='vitmatte'")
        from .vitmatte import vitmatte_refine
        out = vitmatte_refine(image, trimap, progress=progress, should_stop=should_stop, **vitmatte_kwargs)
        return torch.where(trimap == 0.5, out.to(alpha.dtype).clamp(0, 1), trimap.to(alpha.dtype))
    if vitmatte_kwargs:
        raise TypeError(f"unexpected arguments for method='guided': {sorted(vitmatte_kwargs)}")
    r = radius
    if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 1):
        raise ValueError(f"radius must be an int >= 1, got {r!r}")
    e = DEFAULT_EPS if eps is None else float(eps)
    if not e > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    if not 0 < float(unknown_weight) <= 1:
        raise ValueError(f"unknown_weight must be in (0, 1], got {unknown_weight!r}")
    if int(strip_rows) < 1:
        raise ValueError(f"strip_rows must be >= 1, got {strip_rows!r}")
    sc = scale
    if sc is not None and (isinstance(sc, bool) or not isinstance(sc, (int, float)) or not float(sc) >= 1
                           or not math.isfinite(sc)):
        raise ValueError(f"scale must be a number >= 1 (or None for the measured default), got {scale!r}")
    if working_size is not None:
        check_working_size(working_size)
        if sc is not None:
            raise TypeError("give scale or working_size, not both (working_size sets the scale)")
    out = torch.empty_like(alpha)
    for i in range(B):
        check_stop(should_stop, i, B)
        out[i] = _guided_refine_one(image[i], alpha[i], trimap[i], r, e, float(unknown_weight), int(strip_rows),
                                    None if sc is None else float(sc), working_size)
        report(progress, i + 1, B)
    return out
