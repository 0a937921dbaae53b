"""Colour guided filter (He, Sun & Tang, "Guided Image Filtering", TPAMI 2013), pure torch.

Box means use cumulative sums, so the cost per pixel does not depend on the radius. The filter can
weight pixels (a weighted least-squares fit of the local linear model ``q = a . I + b``), which
:mod:`ben_core.matting.refine` uses to fit the colour-to-alpha model mostly on the trimap's sure pixels.
Large images are processed in row strips with a ``2 * radius`` halo, which gives exactly the same
result as one pass over the whole image while bounding the memory.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..devices import accumulator_dtype

__all__ = ["box_sum", "window_count", "box_mean", "guided_filter", "fast_guided_filter", "gaussian_blur",
           "gaussian_kernel"]


def box_sum(x: torch.Tensor, r: int, dim: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Sum of ``x`` over the centred window ``[i - r, i + r]`` along ``dim``, clipped to the array.

    x: any tensor (bool/int/float), r >= 0, dim: the axis. Cumulative sums, so the cost does not depend
    on ``r``. dtype: accumulation/result dtype (default as ``torch.cumsum``: float x keeps its dtype,
    bool/int x gives int64; pass ``torch.int32`` for faster exact counts of a mask below 2**31 pixels).
    Returns a tensor of x's shape. Window sizes for normalising: :func:`window_count`.
    """
    out_dtype = dtype if dtype is not None else x.dtype
    if out_dtype.is_floating_point and out_dtype != torch.float64:
        return _blocked_box_sum(x, r, dim, out_dtype)
    n = x.shape[dim]
    c = torch.cumsum(x, dim=dim, dtype=dtype)
    zero_shape = list(x.shape)
    zero_shape[dim] = 1
    c = torch.cat([torch.zeros(zero_shape, dtype=c.dtype, device=x.device), c], dim=dim)  # c[0] = 0
    idx = torch.arange(n, device=x.device)
    hi = torch.clamp(idx + r + 1, max=n)
    lo = torch.clamp(idx - r, min=0)
    return c.index_select(dim, hi) - c.index_select(dim, lo)


def _blocked_box_sum(x: torch.Tensor, r: int, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """:func:`box_sum` for float32 / half results without a running sum over the whole axis: a float32
    cumulative sum over a 4000-pixel row is ~1000 times larger than one window's sum, and the difference of
    two such totals loses the window (float64 is not everywhere: MPS has none). Sums restart every block of
    ``K = max(2r + 1, 64)`` elements; a window then spans at most two blocks, and one that does adds the first
    block's total, so every term stays the size of a block's sum."""
    x = x.movedim(dim, -1)
    n = x.shape[-1]
    k = max(2 * r + 1, 64)
    nb = -(-n // k)
    blocks = F.pad(x.to(dtype), (0, nb * k - n)).reshape(*x.shape[:-1], nb, k)
    local = torch.cumsum(blocks, dim=-1)
    local = torch.cat([torch.zeros_like(local[..., :1]), local], dim=-1)     # [..., nb, k + 1]: sum of the first m
    flat = local[..., :k].reshape(*x.shape[:-1], nb * k)
    totals = local[..., k]                                                    # [..., nb]
    idx = torch.arange(n, device=x.device)

    def prefix(i: torch.Tensor):
        """(sum of the first i elements of i's block, i's block); the end of the axis is its last block's end."""
        block = torch.clamp(i // k, max=nb - 1)
        at_end = i >= nb * k
        value = torch.where(at_end, totals[..., block], flat[..., torch.clamp(i, max=nb * k - 1)])
        return value, block

    hi, hb = prefix(torch.clamp(idx + r + 1, max=n))
    lo, lb = prefix(torch.clamp(idx - r, min=0))
    out = hi - lo + torch.where(hb > lb, totals[..., lb], torch.zeros((), dtype=dtype, device=x.device))
    return out.movedim(-1, dim)


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


def _guided_strip(G: torch.Tensor, p: torch.Tensor, r: int, eps: float, w: torch.Tensor | None) -> torch.Tensor:
    """One colour guided filter pass on a strip. I [3,h,W], p [h,W], w [h,W] or None (compute dtype)."""
    ma, mb = _mean_coefficients(G, p, r, eps, w)
    return (ma * G).sum(0) + mb


def _mean_coefficients(G: torch.Tensor, p: torch.Tensor, r: int, eps: float,
                       w: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The box-mean coefficients ``(mean a [3,h,W], mean b [h,W])`` of the local linear models
    ``p ~ a . I + b`` (weighted by ``w``); the filter's output is ``(mean a * I).sum(0) + mean b``.

    The second moments are taken of ``I`` and ``p`` centred on their means over the strip (the slopes do
    not change; ``b`` is shifted back at the end), so ``E[I^2] - E[I]^2`` does not cancel away the
    window's variance where the accumulator is float32 (MPS has no float64)."""
    cI = G.mean(dim=(1, 2), keepdim=True)                    # [3,1,1]
    cp = p.mean()
    G, p = G - cI, p - cp
    mI = box_mean(G, r, w)                                   # [3,h,W]
    mp = box_mean(p, r, w)                                   # [h,W]
    cov = box_mean(G * p, r, w) - mI * mp                    # [3,h,W]
    r_, g_, b_ = G[0], G[1], G[2]
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
    ma = box_mean(a, r)
    return ma, box_mean(b, r) + cp - (ma * cI).sum(0)


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
        G = guide[:, a0:a1].to(cd)
        p = src[a0:a1].to(cd)
        w = weight[a0:a1].to(cd) if weight is not None else None
        q = _guided_strip(G, p, radius, float(eps), w)
        out[y0:y1] = q[y0 - a0:y1 - a0].to(src.dtype)
    return out


def gaussian_kernel(sigma: float, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian taps of standard deviation ``sigma`` > 0 px, radius ``ceil(3 sigma)``."""
    r = max(1, int(math.ceil(3 * float(sigma))))
    t = torch.arange(-r, r + 1, dtype=torch.float64, device=device)
    k = torch.exp(-0.5 * (t / float(sigma)) ** 2)
    return (k / k.sum()).to(dtype)


def _blur_padded(x: torch.Tensor, k: torch.Tensor, pad_top: int, pad_bottom: int) -> torch.Tensor:
    """Separable blur of ``[C, h, w]`` by taps ``k``: columns padded by replication, rows by ``pad_top`` /
    ``pad_bottom`` replicated rows (the caller gives real neighbour rows for the rest of the halo)."""
    C = x.shape[0]
    r = (k.numel() - 1) // 2
    kk = k.to(x.dtype)
    y = F.pad(x[None], (r, r, pad_top, pad_bottom), mode="replicate")
    y = F.conv2d(y, kk.reshape(1, 1, 1, -1).expand(C, 1, 1, -1).contiguous(), groups=C)
    y = F.conv2d(y, kk.reshape(1, 1, -1, 1).expand(C, 1, -1, 1).contiguous(), groups=C)
    return y[0]


def gaussian_blur(x: torch.Tensor, sigma: float, rows: tuple[int, int] | None = None) -> torch.Tensor:
    """Gaussian blur (``sigma`` px, replicated border) of ``[C, H, W]``; ``rows=(y0, y1)``: only those output
    rows, computed from the rows around them, equal to the same rows of the whole-image blur. Returns a
    new tensor in x's dtype; ``sigma <= 0`` returns a copy of the rows."""
    H = x.shape[-2]
    y0, y1 = (0, H) if rows is None else rows
    if sigma <= 0:
        return x[:, y0:y1].clone()
    k = gaussian_kernel(sigma, torch.float64, x.device)
    r = (k.numel() - 1) // 2
    lo, hi = max(0, y0 - r), min(H, y1 + r)
    return _blur_padded(x[:, lo:hi], k, r - (y0 - lo), r - (hi - y1))


def _linear_taps(n_out: int, n_in: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices (lo, hi) and weight of hi for bilinear resizing ``n_in -> n_out`` samples with
    ``align_corners=False`` (as ``torch.nn.functional.interpolate``)."""
    pos = ((torch.arange(n_out, device=device, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp_min(0)
    lo = pos.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    return lo, hi, (pos - lo).float()


def fast_guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float, scale: float,
                       weight: torch.Tensor | None = None, fit_sigma: float = 0.0, apply_sigma: float = 0.0,
                       strip_rows: int = 512) -> torch.Tensor:
    """Guided filter with the local linear models fitted at ``1/scale`` of the resolution ("fast guided
    filter", He & Sun 2015) and applied to the full-resolution guide.

    Args:
        guide: ``[3, H, W]`` float RGB in 0..1. src: ``[H, W]`` float map. weight: optional ``[H, W]``
            non-negative weights of the local fits (as :func:`guided_filter`).
        radius: window radius in full-resolution pixels (``max(1, round(radius / scale))`` at the low
            resolution). eps: regularisation > 0. scale: >= 1; 1 with both sigmas 0 is :func:`guided_filter`.
        fit_sigma: Gaussian blur (low-resolution pixels) of the low-resolution guide before the fit, so the
            guide is as soft as a source that was itself predicted at about that resolution and blurred (a
            sharper guide than source shrinks the fitted slopes). 0 = none.
        apply_sigma: Gaussian blur (full-resolution pixels) of the guide the models are applied to (keeps
            the fitted slopes from multiplying per-pixel sensor noise). 0 = none.
        strip_rows: full-resolution rows per strip of the application step (memory bound only).

    Guide, weight and weighted source are area-downsampled (the source as ``area(w p) / area(w)``), the
    coefficients are fitted there in float64 (float32 on MPS), box-averaged, upsampled bilinearly and
    applied to the guide (centred at 0.5) at full resolution, ``strip_rows`` rows at a time; the result
    does not depend on ``strip_rows`` beyond float rounding (~1e-6). Returns ``[H, W]`` in ``src``'s dtype,
    not clamped; inputs are not modified. Cost and memory are those of the low resolution plus one pass
    over the full image.
    """
    if not float(scale) >= 1:
        raise ValueError(f"scale must be >= 1, got {scale!r}")
    for name, v in (("fit_sigma", fit_sigma), ("apply_sigma", apply_sigma)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (float(v) >= 0 and math.isfinite(v)):
            raise ValueError(f"{name} must be a number >= 0, got {v!r}")
    if isinstance(strip_rows, bool) or not isinstance(strip_rows, int) or strip_rows < 1:
        raise ValueError(f"strip_rows must be an int >= 1, got {strip_rows!r}")
    if float(scale) == 1 and fit_sigma == 0 and apply_sigma == 0:
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
        if tuple(x.shape[-2:]) == size:
            return x.float()
        return F.interpolate(x.to(area_dev).float(), size=size, mode="area").to(src.device)

    I_low = area(guide[None])[0].to(cd) - 0.5
    if fit_sigma > 0:
        I_low = gaussian_blur(I_low, float(fit_sigma))
    w_low = area(w[None, None])[0, 0].to(cd)
    wp_low = area((src * w)[None, None])[0, 0].to(cd)
    p_low = wp_low / w_low.clamp_min(torch.finfo(cd).tiny)
    ma, mb = _mean_coefficients(I_low, p_low, r, float(eps), w_low)
    coeffs = torch.cat([ma, mb[None]]).float()                   # [4, h, w]
    del ma, mb, I_low, w_low, wp_low, p_low
    ylo, yhi, wy = _linear_taps(H, size[0], src.device)
    xlo, xhi, wx = _linear_taps(W, size[1], src.device)
    out = torch.empty((H, W), dtype=src.dtype, device=src.device)
    for y0 in range(0, H, strip_rows):
        y1 = min(H, y0 + strip_rows)
        fy = wy[y0:y1, None]
        c = coeffs[:, ylo[y0:y1]] * (1 - fy) + coeffs[:, yhi[y0:y1]] * fy       # [4, n, w]
        c = c[:, :, xlo] * (1 - wx) + c[:, :, xhi] * wx                          # [4, n, W]
        g = gaussian_blur(guide, float(apply_sigma), (y0, y1)).float() if apply_sigma > 0 else guide[:, y0:y1].float()
        out[y0:y1] = ((c[:3] * (g - 0.5)).sum(0) + c[3]).to(src.dtype)
    return out
