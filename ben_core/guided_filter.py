"""Colour guided filter (He, Sun & Tang, "Guided Image Filtering", TPAMI 2013), pure torch.

Box means use cumulative sums, so the cost per pixel does not depend on the radius. The filter can
weight pixels (a weighted least-squares fit of the local linear model ``q = a . I + b``), which
:mod:`ben_core.refine` uses to fit the colour-to-alpha model mostly on the trimap's sure pixels.
Large images are processed in row strips with a ``2 * radius`` halo, which gives exactly the same
result as one pass over the whole image while bounding the memory.
"""
from __future__ import annotations

import torch

from .devices import accumulator_dtype

__all__ = ["box_sum", "window_count", "box_mean", "guided_filter", "fast_guided_filter"]


def box_sum(x: torch.Tensor, r: int, dim: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Sum of ``x`` over the centred window ``[i - r, i + r]`` along ``dim``, clipped to the array.

    x: any tensor (bool/int/float), r >= 0, dim: the axis. Cumulative sums, so the cost does not depend
    on ``r``. dtype: accumulation/result dtype (default as ``torch.cumsum``: float x keeps its dtype,
    bool/int x gives int64; pass ``torch.int32`` for faster exact counts of a mask below 2**31 pixels).
    Returns a tensor of x's shape. Window sizes for normalising: :func:`window_count`.
    """
    n = x.shape[dim]
    c = torch.cumsum(x, dim=dim, dtype=dtype)
    zero_shape = list(x.shape)
    zero_shape[dim] = 1
    c = torch.cat([torch.zeros(zero_shape, dtype=c.dtype, device=x.device), c], dim=dim)  # c[0] = 0
    idx = torch.arange(n, device=x.device)
    hi = torch.clamp(idx + r + 1, max=n)
    lo = torch.clamp(idx - r, min=0)
    return c.index_select(dim, hi) - c.index_select(dim, lo)


def window_count(n: int, r: int, dtype: torch.dtype = torch.int32, device=None) -> torch.Tensor:
    """``[n]`` number of positions in each clipped window ``[i - r, i + r]`` of an axis of length n (as box_sum)."""
    idx = torch.arange(n, device=device)
    return ((idx + r).clamp(max=n - 1) - (idx - r).clamp(min=0) + 1).to(dtype)


def box_mean(x: torch.Tensor, r: int, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``x`` over each pixel's ``(2r+1)^2`` window (windows clipped at the border).

    x: ``[..., H, W]`` floating tensor. weight: optional ``[H, W]`` (or broadcastable) non-negative
    weights; then the weighted mean ``box(w x) / box(w)`` is returned (0 where a window has no weight).
    Returns a tensor of x's shape and dtype.
    """
    if weight is None:
        s = box_sum(box_sum(x, r, -2), r, -1)
        H, W = x.shape[-2:]
        n_h = window_count(H, r, x.dtype, x.device)[:, None]
        n_w = window_count(W, r, x.dtype, x.device)[None, :]
        return s / (n_h * n_w)
    num = box_sum(box_sum(x * weight, r, -2), r, -1)
    den = box_sum(box_sum(weight.expand(x.shape[-2:]), r, -2), r, -1)
    return num / den.clamp_min(torch.finfo(x.dtype).tiny)


def _guided_strip(I: torch.Tensor, p: torch.Tensor, r: int, eps: float, w: torch.Tensor | None) -> torch.Tensor:
    """One colour guided filter pass on a strip. I [3,h,W], p [h,W], w [h,W] or None (compute dtype)."""
    ma, mb = _mean_coefficients(I, p, r, eps, w)
    return (ma * I).sum(0) + mb


def _mean_coefficients(I: torch.Tensor, p: torch.Tensor, r: int, eps: float,
                       w: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The box-mean coefficients ``(mean a [3,h,W], mean b [h,W])`` of the local linear models
    ``p ~ a . I + b`` (weighted by ``w``); the filter's output is ``(mean a * I).sum(0) + mean b``."""
    mI = box_mean(I, r, w)                                   # [3,h,W]
    mp = box_mean(p, r, w)                                   # [h,W]
    cov = box_mean(I * p, r, w) - mI * mp                    # [3,h,W]
    r_, g_, b_ = I[0], I[1], I[2]
    prods = torch.stack([r_ * r_, r_ * g_, r_ * b_, g_ * g_, g_ * b_, b_ * b_])
    m = box_mean(prods, r, w)
    del prods
    srr = m[0] - mI[0] * mI[0] + eps
    srg = m[1] - mI[0] * mI[1]
    srb = m[2] - mI[0] * mI[2]
    sgg = m[3] - mI[1] * mI[1] + eps
    sgb = m[4] - mI[1] * mI[2]
    sbb = m[5] - mI[2] * mI[2] + eps
    del m
    irr = sgg * sbb - sgb * sgb
    irg = sgb * srb - srg * sbb
    irb = srg * sgb - sgg * srb
    igg = srr * sbb - srb * srb
    igb = srb * srg - srr * sgb
    ibb = srr * sgg - srg * srg
    det = srr * irr + srg * irg + srb * irb
    c0, c1, c2 = cov[0], cov[1], cov[2]
    a = torch.stack([irr * c0 + irg * c1 + irb * c2,
                     irg * c0 + igg * c1 + igb * c2,
                     irb * c0 + igb * c1 + ibb * c2]) / det
    b = mp - (a * mI).sum(0)
    return box_mean(a, r), box_mean(b, r)


def _check_filter_args(guide, src, radius, eps, weight) -> None:
    """ValueError/TypeError naming the problem for the guided filters' arguments."""
    for name, t in (("guide", guide), ("src", src), ("weight", weight)):
        if t is not None and not (isinstance(t, torch.Tensor) and t.is_floating_point()):
            raise TypeError(f"{name} must be a float torch.Tensor, got {getattr(t, 'dtype', type(t).__name__)}; "
                            "convert uint8 with x.float() / 255")
    if guide.dim() != 3 or guide.shape[0] != 3:
        raise ValueError(f"guide must be [3, H, W] (one RGB image, channels first), got shape {tuple(guide.shape)}")
    if src.shape != guide.shape[1:]:
        raise ValueError(f"src must be [H, W] = {tuple(guide.shape[1:])}, got {tuple(src.shape)}")
    if weight is not None and weight.shape != src.shape:
        raise ValueError(f"weight must be [H, W] = {tuple(src.shape)}, got {tuple(weight.shape)}")
    for name, t in (("src", src), ("weight", weight)):
        if t is not None and t.device != guide.device:
            raise ValueError(f"guide is on {guide.device} but {name} is on {t.device}; move them to one device")
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 1:
        raise ValueError(f"radius must be an int >= 1, got {radius!r}")
    if not (float(eps) > 0):
        raise ValueError(f"eps must be > 0, got {eps!r}")


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float,
                  weight: torch.Tensor | None = None, strip_rows: int = 512) -> torch.Tensor:
    """Colour guided filter of ``src`` guided by the RGB image ``guide``.

    Args:
        guide: ``[3, H, W]`` float image (0..1 range expected), any device.
        src: ``[H, W]`` float map to filter (e.g. an alpha matte), same device.
        radius: window radius r >= 1 (window ``(2r+1)^2``); the cost does not depend on r.
        eps: regularisation > 0 (in guide-intensity^2 units, e.g. 1e-5 .. 1e-2).
        weight: optional ``[H, W]`` non-negative per-pixel weights of the local least-squares fit
            (None = the plain filter of He et al.).
        strip_rows: rows per strip (memory bound); the result does not depend on it.

    Returns: ``[H, W]`` filtered map in ``src``'s dtype (computed in float64, float32 on MPS); not clamped.
    Inputs are not modified.
    """
    _check_filter_args(guide, src, radius, eps, weight)
    if strip_rows < 1:
        raise ValueError(f"strip_rows must be >= 1, got {strip_rows}")
    cd = accumulator_dtype(src.device)  # E[I^2] - E[I]^2 cancels badly in float32 with eps ~ 1e-5
    H, W = src.shape
    halo = 2 * radius
    out = torch.empty((H, W), dtype=src.dtype, device=src.device)
    for y0 in range(0, H, strip_rows):
        y1 = min(H, y0 + strip_rows)
        a0, a1 = max(0, y0 - halo), min(H, y1 + halo)
        I = guide[:, a0:a1].to(cd)
        p = src[a0:a1].to(cd)
        w = weight[a0:a1].to(cd) if weight is not None else None
        q = _guided_strip(I, p, radius, float(eps), w)
        out[y0:y1] = q[y0 - a0:y1 - a0].to(src.dtype)
    return out


def fast_guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float, scale: float,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
    """Guided filter with the local linear models fitted at ``1/scale`` of the resolution ("fast guided
    filter", He & Sun 2015) and applied to the full-resolution guide.

    Args:
        guide: ``[3, H, W]`` float RGB in 0..1. src: ``[H, W]`` float map. weight: optional ``[H, W]``
            non-negative weights of the local fits (as :func:`guided_filter`).
        radius: window radius in full-resolution pixels (``max(1, round(radius / scale))`` at the low
            resolution). eps: regularisation > 0. scale: >= 1; 1 is :func:`guided_filter` itself.

    Guide, weight and weighted source are area-downsampled (the source as ``area(w p) / area(w)``), the
    coefficients are fitted there in float64 (float32 on MPS), box-averaged, upsampled bilinearly and
    applied to the guide (centred at 0.5) at full resolution. Returns ``[H, W]`` in ``src``'s dtype, not
    clamped; inputs are not modified. Cost and memory are those of the low resolution plus one pass over
    the full image.
    """
    import torch.nn.functional as F

    if not float(scale) >= 1:
        raise ValueError(f"scale must be >= 1, got {scale!r}")
    if float(scale) == 1:
        return guided_filter(guide, src, radius, eps, weight=weight)
    _check_filter_args(guide, src, radius, eps, weight)
    cd = accumulator_dtype(src.device)
    H, W = src.shape
    size = (max(1, round(H / scale)), max(1, round(W / scale)))
    r = max(1, int(round(radius / scale)))
    w = torch.ones_like(src) if weight is None else weight
    # MPS's area resize (adaptive pooling) needs sizes that divide evenly: resize on the CPU there
    area_dev = torch.device("cpu") if src.device.type == "mps" else src.device

    def area(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x.to(area_dev).float(), size=size, mode="area").to(src.device)

    I_low = area(guide[None])[0].to(cd) - 0.5
    w_low = area(w[None, None])[0, 0].to(cd)
    wp_low = area((src * w)[None, None])[0, 0].to(cd)
    p_low = wp_low / w_low.clamp_min(torch.finfo(cd).tiny)
    ma, mb = _mean_coefficients(I_low, p_low, r, float(eps), w_low)
    coeffs = F.interpolate(torch.cat([ma, mb[None]]).float()[None], size=(H, W), mode="bilinear",
                           align_corners=False)[0]
    return ((coeffs[:3] * (guide.float() - 0.5)).sum(0) + coeffs[3]).to(src.dtype)
