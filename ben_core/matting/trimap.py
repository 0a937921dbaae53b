"""Trimaps for Confidence-Guided Matting.

* :func:`confidence_trimap` -- the BEN paper's Algorithms 1 + 2 (Meyer & Spruyt, arXiv 2501.06230):
  threshold the base model's probability map into foreground / background / unknown and widen the
  thresholds step by step until enough pixels are unknown.  Computed in a bounded number of passes
  (one min/max pass, one candidate pass and a bucketize of the candidates per map) but bit-identical to the naive loop.
* :func:`band_trimap` -- an unknown band of a given radius around the edge of a hard mask, for masks
  that carry no confidence information.
* :func:`make_trimap` -- the policy every door uses when no trimap is given: ``"confidence"``,
  ``"band"``, or ``"auto"`` (:func:`auto_trimap`, the refinement's default: every pixel a soft mask is unsure of,
  the confidence trimap started at its limits; the edge band for a hard mask).
* :func:`snap_trimap` -- any map to exact trimap levels (a trimap drawn or resized elsewhere).

The paper's constants live here once (:data:`PAPER_DEFAULTS`); the ComfyUI widgets and the browser
preview take their defaults from it. Trimap values: 0.0 = sure background, 0.5 = unknown, 1.0 = sure
foreground.
"""
from __future__ import annotations

import math
import operator
from types import MappingProxyType

import numpy as np
import torch

from .guided_filter import box_sum, window_count

__all__ = ["PAPER_DEFAULTS", "TRIMAP_SOURCES", "confidence_trimap", "band_trimap", "make_trimap", "auto_trimap",
           "snap_trimap", "threshold_sequence", "default_min_unknown", "default_band_radius"]

#: The BEN paper's constants for Algorithms 1 + 2: starting thresholds, their limits, the widening step,
#: and N_min as a fraction of the map's area (60,000 pixels of a 1024 x 1024 map, 0.0572...; the fraction
#: 60000 / 2**20 is exact in binary, so ``round(fraction * H * W)`` equals ``round(60000 * H * W / 2**20)``).
PAPER_DEFAULTS = MappingProxyType({
    "t_low": 0.10, "t_high": 0.90, "t_min": 0.03, "t_max": 0.97, "step": 0.001,
    "min_unknown_fraction": 60000 / 1024 ** 2,
})
#: Where a trimap comes from when none is given (see :func:`make_trimap`).
TRIMAP_SOURCES = ("auto", "confidence", "band")


def default_min_unknown(height: int, width: int,
                        fraction: float = PAPER_DEFAULTS["min_unknown_fraction"]) -> int:
    """N_min for an ``height x width`` map: ``round(fraction * H * W)`` (Python round, ties to even).

    The default fraction is the paper's 60,000 pixels at 1024 x 1024. Raises ValueError for a fraction
    outside 0..1.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"min_unknown_fraction must be a number between 0 and 1, got {fraction!r}")
    return int(round(float(fraction) * height * width))


def default_band_radius(height: int, width: int) -> int:
    """Unknown-band half-width for a hard mask of ``height x width``: ``max(2, round(min(H, W) / 90))``."""
    return max(2, int(round(min(height, width) / 90)))


def _check_thresholds(t_low, t_high, t_min, t_max, step) -> tuple[float, float, float, float, float]:
    vals = {}
    for name, v in (("t_low", t_low), ("t_high", t_high), ("t_min", t_min), ("t_max", t_max), ("step", step)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
        v = float(v)
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v}")
        vals[name] = v
    tl, th, tmin, tmax, s = (vals[k] for k in ("t_low", "t_high", "t_min", "t_max", "step"))
    if not (0.0 <= tmin <= tl < th <= tmax <= 1.0):
        raise ValueError(
            "thresholds must satisfy 0 <= t_min <= t_low < t_high <= t_max <= 1, got "
            f"t_min={tmin}, t_low={tl}, t_high={th}, t_max={tmax}; fix the threshold values")
    if s <= 0.0:
        raise ValueError(f"step must be > 0, got {s}")
    if max(tl - tmin, tmax - th) / s > 1_000_000:
        raise ValueError(f"step={s} is too small for the threshold range (more than 1e6 steps); use a larger step")
    return tl, th, tmin, tmax, s


def threshold_sequence(t_low: float = PAPER_DEFAULTS["t_low"], t_high: float = PAPER_DEFAULTS["t_high"],
                       t_min: float = PAPER_DEFAULTS["t_min"], t_max: float = PAPER_DEFAULTS["t_max"],
                       step: float = PAPER_DEFAULTS["step"]) -> tuple[list[float], list[float]]:
    """The float64 threshold pairs Algorithm 2 visits, in order.

    Element 0 is ``(t_low, t_high)``; element k+1 is ``(max(tl_k - step, t_min), min(th_k + step, t_max))``.
    The sequence ends with the first pair for which ``not (tl > t_min or th < t_max)`` (both clamped),
    i.e. the last pair Algorithm 2 can reach.  Returns two Python-float lists of equal length >= 1.
    """
    tl, th, tmin, tmax, s = _check_thresholds(t_low, t_high, t_min, t_max, step)
    lows, highs = [tl], [th]
    while tl > tmin or th < tmax:
        tl = max(tl - s, tmin)
        th = min(th + s, tmax)
        lows.append(tl)
        highs.append(th)
    return lows, highs


def _round_threshold(t: float, work: torch.dtype, up: bool) -> float:
    """``t`` rounded to the nearest ``work``-representable value >= t (``up``) or <= t (not ``up``)."""
    if work == torch.float64:
        return t
    c = np.float32(t)
    if up and float(c) < t:
        c = np.nextafter(c, np.float32(np.inf))
    elif not up and float(c) > t:
        c = np.nextafter(c, np.float32(-np.inf))
    return float(c)


def _check_map(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [..., H, W], got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"{name} must have at least 2 dims [..., H, W], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor with values in 0..1, got dtype {x.dtype}; "
                        "convert with x.float() / 255 for uint8 masks")
    return x


def confidence_trimap(probs: torch.Tensor, t_low: float = PAPER_DEFAULTS["t_low"],
                      t_high: float = PAPER_DEFAULTS["t_high"], t_min: float = PAPER_DEFAULTS["t_min"],
                      t_max: float = PAPER_DEFAULTS["t_max"], step: float = PAPER_DEFAULTS["step"],
                      min_unknown: int | None = None, min_unknown_fraction: float | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Confidence trimap of the BEN paper (Algorithms 1 + 2), per map.

    Args:
        probs: ``[..., H, W]`` floating tensor of probabilities in ``[0, 1]`` (sigmoid of the logits);
            any leading dims, any device. Not modified.
        t_low, t_high: starting thresholds (paper: 0.10, 0.90).
        t_min, t_max: limits of the thresholds (paper: 0.03, 0.97). Need ``0<=t_min<=t_low<t_high<=t_max<=1``.
        step: threshold step s (paper: 0.001), > 0.
        min_unknown: N_min, the wanted number of unknown pixels per map. Default:
            ``round(min_unknown_fraction * H * W)`` (:func:`default_min_unknown`).
        min_unknown_fraction: N_min as a fraction of the area, 0..1 (paper: 60000 / 1024**2); give at
            most one of ``min_unknown`` and ``min_unknown_fraction``.

    Semantics: the thresholds follow the float64 sequence of :func:`threshold_sequence`; a pixel p
    (converted to float64) is foreground if ``p >= t_high``, background if ``p <= t_low``, otherwise
    unknown. Each map stops at the first pair with ``n_unknown >= min_unknown`` or at the last pair.

    Returns:
        ``(trimap, t_low_final, t_high_final)``: trimap ``[..., H, W]`` with values {0, 0.5, 1} in
        ``probs``' dtype and device; final thresholds as float64 tensors ``[N]`` on the CPU, N = number
        of maps (product of the leading dims, 1 for a plain ``[H, W]`` map).
    """
    probs = _check_map(probs, "probs")
    lows, highs = threshold_sequence(t_low, t_high, t_min, t_max, step)
    H, W = probs.shape[-2:]
    if min_unknown is not None and min_unknown_fraction is not None:
        raise TypeError("give min_unknown (a pixel count) or min_unknown_fraction (a fraction of the area), not both")
    if min_unknown is None:
        n_min = default_min_unknown(H, W, PAPER_DEFAULTS["min_unknown_fraction"] if min_unknown_fraction is None
                                    else min_unknown_fraction)
    else:
        if isinstance(min_unknown, bool) or not hasattr(min_unknown, "__index__"):
            raise TypeError(f"min_unknown must be an int (pixel count) or None, got {type(min_unknown).__name__}; "
                            "use round(fraction * H * W) for a fraction of the area")
        n_min = operator.index(min_unknown)  # Python or numpy integer
        if n_min < 0:
            raise ValueError(f"min_unknown must be >= 0, got {n_min}")

    lead = probs.shape[:-2]
    n_maps = math.prod(lead)
    flat = probs.reshape(n_maps, H * W)  # explicit count: reshape(-1, 0) is ambiguous for empty maps
    out = torch.empty(flat.shape, dtype=probs.dtype, device=probs.device)
    fin_low = torch.empty(n_maps, dtype=torch.float64)
    fin_high = torch.empty(n_maps, dtype=torch.float64)
    if n_maps == 0 or H * W == 0:
        fin_low.fill_(lows[0])
        fin_high.fill_(highs[0])
        return out.reshape(probs.shape), fin_low, fin_high

    # Work in float32 for float16/bfloat16/float32 maps (exact upcast) and float64 for float64 maps.
    # A float64 comparison of a float32 value with a float64 threshold equals a float32 comparison
    # with the threshold rounded outward to float32 (up for ">= t_high", down for "<= t_low").
    work = torch.float64 if probs.dtype == torch.float64 else torch.float32
    c_high = [_round_threshold(v, work, up=True) for v in highs]
    f_low = [_round_threshold(v, work, up=False) for v in lows]
    bounds_list = sorted(set(c_high) | set(f_low))
    pos = {v: j for j, v in enumerate(bounds_list)}
    high_idx = torch.tensor([pos[v] for v in c_high], dtype=torch.long)
    low_idx = torch.tensor([pos[v] for v in f_low], dtype=torch.long)
    nb = len(bounds_list)
    lo_min, hi_max = min(f_low), max(c_high)
    bounds = torch.tensor(bounds_list, dtype=work, device=probs.device)
    for i in range(n_maps):
        p = flat[i] if flat.dtype == work else flat[i].to(work)
        mn, mx = torch.aminmax(p)
        if not (float(mn) >= 0.0 and float(mx) <= 1.0):
            if not bool(torch.isfinite(p).all()):
                raise ValueError(f"probs contains NaN or infinite values (map {i}); pass sigmoid probabilities")
            raise ValueError(f"probs must lie in [0, 1] (map {i} has min {float(mn)}, max {float(mx)}); "
                             "pass sigmoid(logits), not logits")
        # only pixels with lo_min < p < hi_max can be unknown at any step: count those
        cand = p[(p > lo_min) & (p < hi_max)]
        # n_lt[j] = #(cand < b_j) ; n_le[j] = #(cand <= b_j)
        idx = torch.bucketize(cand, bounds, right=True)   # #(b <= p): p < b_j  <=> idx <= j
        n_lt = torch.bincount(idx, minlength=nb + 1).cumsum(0)[:nb].cpu()
        idx = torch.bucketize(cand, bounds, right=False)  # #(b < p): p <= b_j <=> idx <= j
        n_le = torch.bincount(idx, minlength=nb + 1).cumsum(0)[:nb].cpu()
        del idx, cand
        # unknown count at step k: #(t_l < p < t_h) = #(p < t_h) - #(p <= t_l)   (t_l < t_h always)
        n_unknown = n_lt[high_idx] - n_le[low_idx]
        ok = (n_unknown >= n_min).nonzero()
        k = int(ok[0, 0]) if ok.numel() else len(lows) - 1
        fin_low[i], fin_high[i] = lows[k], highs[k]
        o = out[i]
        o.fill_(0.5)
        o.masked_fill_(p >= c_high[k], 1.0)
        o.masked_fill_(p <= f_low[k], 0.0)
    return out.reshape(*lead, H, W), fin_low, fin_high


def band_trimap(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Trimap from a hard mask: an unknown band of ``radius`` pixels on both sides of its edge.

    Args:
        mask: ``[..., H, W]`` floating tensor in 0..1 (binarised: foreground where ``mask >= 0.5``),
            any leading dims, any device. Not modified.
        radius: band half-width in pixels (int >= 0). A pixel is unknown if a pixel of the other
            class lies within its ``(2*radius+1)``-square neighbourhood (Chebyshev distance <= radius);
            the image border does not count as an edge. ``radius=0`` gives the binarised mask.

    Returns: ``[..., H, W]`` trimap {0, 0.5, 1} in ``mask``'s dtype and device.
    Cost: box sums by cumulative sums, independent of the radius (fine at 4K).
    """
    mask = _check_map(mask, "mask")
    if isinstance(radius, bool) or not isinstance(radius, int):
        raise TypeError(f"radius must be an int, got {type(radius).__name__}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if torch.isnan(mask).any():
        raise ValueError("mask contains NaN values; replace them first (e.g. torch.nan_to_num(mask))")
    H, W = mask.shape[-2:]
    flat = mask.reshape(-1, H, W)
    out = torch.empty(flat.shape, dtype=mask.dtype, device=mask.device)
    if radius > 0 and H * W > 0:
        # pixels of the clipped window: the image border never counts as the other class
        n_win = (window_count(H, radius, device=mask.device)[:, None]
                 * window_count(W, radius, device=mask.device)[None, :])
    for i in range(flat.shape[0]):
        fg = flat[i] >= 0.5
        o = out[i]
        o.copy_(fg)
        if radius == 0 or H * W == 0:
            continue
        s = box_sum(box_sum(fg, radius, 0, dtype=torch.int32), radius, 1, dtype=torch.int32)  # exact counts
        o.masked_fill_((s > 0) & (s < n_win), 0.5)
    return out.reshape(mask.shape)


def snap_trimap(x: torch.Tensor) -> torch.Tensor:
    """Exact trimap levels from any ``[..., H, W]`` float map 0..1: ``>= 0.75`` -> 1 (foreground),
    ``<= 0.25`` -> 0 (background), else 0.5 (unknown). For trimaps drawn or resized elsewhere.
    Returns a new tensor of ``x``'s dtype and device."""
    x = _check_map(x, "trimap")
    return torch.where(x >= 0.75, torch.ones_like(x), torch.where(x <= 0.25, torch.zeros_like(x),
                                                                  torch.full_like(x, 0.5)))


def auto_trimap(alpha: torch.Tensor, band_radius: int | None = None) -> torch.Tensor:
    """The trimap a mask of unknown origin is refined in, per map. For a soft mask: every pixel it is
    unsure of is unknown, ``t_min < alpha < t_max`` (0.03 and 0.97), ``alpha >= t_max`` foreground and
    ``alpha <= t_min`` background: the paper's confidence trimap with its thresholds started at their limits
    (:func:`confidence_trimap` with ``t_low=t_min, t_high=t_max``). For a hard mask: an unknown band of
    ``band_radius`` pixels around its edge (None -> :func:`default_band_radius`).

    Why not the paper's 0.10 / 0.90 start: that trimap calls pixels sure that a soft mask is not sure of
    (fuzzy hair, a translucent flag at alpha ~0.9), and the refinement then snaps them to 0 / 1. On 27 real
    photos at full resolution, refined from the limits, 24 images end at most 0.6x the coarse band MSE
    instead of 20 and none gets a worse whole-image SAD (from the paper's start one got 1.4x worse);
    measured in docs/refinement.md, ``python -m benchmarks.bench_matting_real``.

    A map is hard when fewer than a tenth of the paper's N_min of its pixels lie strictly between
    ``t_min`` and ``t_max``: a hard mask (SAM, a painted mask) carries no confidence, so its confidence
    trimap would be a bare outline. ``alpha``: ``[B, H, W]`` float 0..1.
    Returns ``[B, H, W]`` {0, 0.5, 1} in alpha's dtype and device.
    """
    H, W = alpha.shape[-2:]
    radius = default_band_radius(H, W) if band_radius is None else int(band_radius)
    # a new tensor: hard-mask maps are overwritten in place below
    out = confidence_trimap(alpha, t_low=PAPER_DEFAULTS["t_min"], t_high=PAPER_DEFAULTS["t_max"])[0]
    n_min = default_min_unknown(H, W)
    for i in range(alpha.shape[0]):
        soft = int(((alpha[i] > PAPER_DEFAULTS["t_min"]) & (alpha[i] < PAPER_DEFAULTS["t_max"])).sum())
        if soft < max(1, n_min // 10):
            out[i] = band_trimap(alpha[i], radius)
    return out


def make_trimap(mask: torch.Tensor, source: str = "auto", band_radius: int | None = None) -> torch.Tensor:
    """The trimap of ``mask`` ``[B, H, W]`` (float 0..1) when none is given.

    ``source``: ``"confidence"`` (the paper's confidence trimap with its constants), ``"band"`` (an
    unknown band of ``band_radius`` px around the edge of the binarised mask) or ``"auto"``
    (:func:`auto_trimap`: every pixel a soft mask is unsure of, 0.03 < alpha < 0.97; the band for hard
    ones). ``band_radius`` None or
    0 means :func:`default_band_radius`. Returns ``[B, H, W]`` {0, 0.5, 1} in the mask's dtype/device.
    """
    if source not in TRIMAP_SOURCES:
        raise ValueError(f"trimap source must be one of {list(TRIMAP_SOURCES)}, got {source!r}")
    H, W = mask.shape[-2:]
    radius = int(band_radius) if band_radius else default_band_radius(H, W)
    if source == "band":
        return band_trimap(mask, radius)
    if source == "confidence":
        return confidence_trimap(mask)[0]
    return auto_trimap(mask, band_radius=radius)
