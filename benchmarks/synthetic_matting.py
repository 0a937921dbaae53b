"""Synthetic matting benchmark: procedural soft alpha, textured F/B, composite, coarse mask, metrics.

:func:`make_synthetic_matte` draws (seeded, no global RNG use) a furry blob with thin tapered
strands (analytic sub-pixel coverage), smooth hard-edged sectors and a semi-transparent veil over a
textured background, composites ``I = alpha * F + (1 - alpha) * B`` and derives the coarse alpha
the way a base model running at ``model_size^2`` and upsampled back would see it (area-downsample
to ``model_size x model_size``, slight blur, bilinear upsample).

:func:`band_sad` / :func:`band_mse` measure errors inside a region (the unknown band of a trimap).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["make_synthetic_matte", "coarsen_alpha", "band_sad", "band_mse", "gaussian_blur"]


def _smooth_noise(g: torch.Generator, c: int, h: int, w: int, cells: int) -> torch.Tensor:
    """[c,h,w] smooth noise in ~[-1,1]: random values on a coarse grid, bicubic-upsampled."""
    ch = max(2, round(cells * h / max(h, w)))
    cw = max(2, round(cells * w / max(h, w)))
    z = torch.rand(1, c, ch + 2, cw + 2, generator=g) * 2 - 1
    up = F.interpolate(z, size=(h + 2 * (h // ch + 1), w + 2 * (w // cw + 1)), mode="bicubic", align_corners=False)
    oy, ox = h // ch + 1, w // cw + 1
    return up[0, :, oy:oy + h, ox:ox + w].clamp(-1, 1)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[N, C, H, W]`` float (any size; reflect padding; kernel radius
    ceil(3 sigma), truncated and renormalised on sides shorter than it). sigma <= 0 returns a copy.
    Returns a new tensor of x's shape and dtype."""
    if sigma <= 0:
        return x.clone()
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    C = x.shape[1]
    pad_h = min(r, x.shape[-2] - 1)  # reflect padding needs pad < size: tiny images get a truncated kernel
    pad_w = min(r, x.shape[-1] - 1)

    def taps(pad: int) -> torch.Tensor:
        kk = k[r - pad:r + pad + 1]
        return kk if pad == r else kk / kk.sum()  # a truncated kernel is renormalised (constants stay constant)

    y = F.pad(x, (pad_w, pad_w, 0, 0), mode="reflect" if pad_w > 0 else "replicate")
    y = F.conv2d(y, taps(pad_w).reshape(1, 1, 1, -1).expand(C, 1, 1, -1).contiguous(), groups=C)
    y = F.pad(y, (0, 0, pad_h, pad_h), mode="reflect" if pad_h > 0 else "replicate")
    return F.conv2d(y, taps(pad_h).reshape(1, 1, -1, 1).expand(C, 1, -1, 1).contiguous(), groups=C)


def coarsen_alpha(alpha: torch.Tensor, model_size: int = 1024, blur_sigma: float = 0.7) -> torch.Tensor:
    """What a base model at ``model_size^2`` would output for ``alpha``, upsampled back.

    alpha: ``[B, H, W]`` float 0..1. Area-downsample to ``model_size x model_size`` (aspect squeezed,
    as BEN2 resizes), Gaussian blur (``blur_sigma`` px at model resolution), bilinear upsample to H x W.
    Returns ``[B, H, W]`` float 0..1 (new tensor).
    """
    B, H, W = alpha.shape
    a = alpha.reshape(B, 1, H, W).float()
    small = F.interpolate(a, size=(model_size, model_size), mode="area") if (H > model_size or W > model_size) \
        else F.interpolate(a, size=(model_size, model_size), mode="bilinear", align_corners=False, antialias=True)
    small = gaussian_blur(small, blur_sigma)
    up = F.interpolate(small, size=(H, W), mode="bilinear", align_corners=False)
    return up.reshape(B, H, W).clamp(0, 1).to(alpha.dtype)


def _strand_coverage(d: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Fraction of a unit pixel (1-D box) at distance d from a strand axis covered by a strand of width w."""
    hi = torch.minimum(d + 0.5, w / 2)
    lo = torch.maximum(d - 0.5, -w / 2)
    return (hi - lo).clamp(0, 1)


def make_synthetic_matte(height: int = 512, width: int = 768, seed: int = 0, model_size: int = 1024,
                         blur_sigma: float = 0.7, dtype: torch.dtype = torch.float32) -> dict:
    """One synthetic matting sample.

    Args:
        height, width: image size (>= 64).
        seed: drawing seed (a private ``torch.Generator``; global RNG untouched).
        model_size: resolution of the simulated base model (coarse mask, see :func:`coarsen_alpha`).
        blur_sigma: blur of the coarse mask at model resolution.

    Returns dict with ``image`` [1,3,H,W], ``alpha`` [1,H,W] (ground truth), ``fg`` [1,3,H,W],
    ``bg`` [1,3,H,W], ``coarse`` [1,H,W]; all float in 0..1 of ``dtype``.
    """
    if height < 64 or width < 64:
        raise ValueError(f"height and width must be >= 64, got {height}x{width}")
    g = torch.Generator().manual_seed(int(seed))
    H, W = height, width
    S = min(H, W)
    yy = torch.arange(H, dtype=torch.float64).reshape(H, 1)
    xx = torch.arange(W, dtype=torch.float64).reshape(1, W)
    cx = W * (0.5 + 0.08 * (torch.rand(1, generator=g).item() - 0.5))
    cy = H * (0.5 + 0.08 * (torch.rand(1, generator=g).item() - 0.5))
    rho = torch.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    theta = torch.atan2(yy - cy, xx - cx)  # -pi..pi
    # body outline R(theta): a few low harmonics
    R0 = 0.27 * S
    Rth = torch.ones_like(theta)
    for k in range(2, 6):
        c = 0.06 * torch.rand(1, generator=g).item() / (k - 1)
        ph = 2 * math.pi * torch.rand(1, generator=g).item()
        Rth = Rth + c * torch.cos(k * theta + ph)
    Rth = R0 * Rth
    body = (Rth - rho + 0.5).clamp(0, 1)  # ~1 px anti-aliased hard edge

    # fur: n strands around the outline, combed/curled, tapered, random length/width/opacity
    n = max(64, int(2 * math.pi * R0 / 2.2))
    fur_len = 0.10 * S
    lengths = fur_len * (0.15 + 0.85 * torch.rand(n, generator=g, dtype=torch.float64) ** 1.5)
    widths = 0.35 + 1.4 * torch.rand(n, generator=g, dtype=torch.float64)
    opac = 0.55 + 0.45 * torch.rand(n, generator=g, dtype=torch.float64)
    offs = 0.3 * (torch.rand(n, generator=g, dtype=torch.float64) - 0.5)
    curl_amp = 0.6 + 1.5 * torch.rand(1, generator=g).item()
    curl_lam = 0.02 * S * (1 + torch.rand(1, generator=g).item())
    lean = 0.4 * (torch.rand(1, generator=g).item() - 0.5)
    rel = (rho - Rth)  # px outside the outline
    t = ((theta + math.pi) * n / (2 * math.pi) + curl_amp * torch.sin(rel.clamp_min(0) / curl_lam)
         + lean * rel.clamp_min(0) / 4)
    cell = torch.floor(t).long() % n
    frac = t - torch.floor(t) - 0.5 - offs[cell]
    d_px = frac.abs() * (2 * math.pi * rho.clamp_min(1.0) / n)
    L = lengths[cell]
    taper = (1 - rel / L).clamp(0, 1)
    in_len = (rel > -3) & (rel < L)
    fur = torch.where(in_len, opac[cell] * _strand_coverage(d_px, widths[cell] * taper), torch.zeros_like(rho))
    # fur only on some sectors: the rest keeps a smooth hard edge
    sector = torch.zeros_like(theta)
    for k in (1, 2, 3):
        sector = sector + torch.rand(1, generator=g).item() * torch.cos(
            k * theta + 2 * math.pi * torch.rand(1, generator=g).item())
    fur = fur * (sector > -0.3).to(fur.dtype)
    alpha = 1 - (1 - body) * (1 - fur)

    # semi-transparent veil: an ellipse touching the body, smoothly varying opacity 0.25..0.65
    vang = 2 * math.pi * torch.rand(1, generator=g).item()
    vx, vy = cx + 1.15 * R0 * math.cos(vang), cy + 1.15 * R0 * math.sin(vang)
    ell = ((xx - vx) / (0.35 * S)) ** 2 + ((yy - vy) / (0.18 * S)) ** 2
    veil_op = 0.45 + 0.2 * _smooth_noise(g, 1, H, W, 6)[0].double()
    veil = veil_op * (1 - ell).clamp(0, 1).pow(0.35) * (ell < 1)
    alpha = 1 - (1 - alpha) * (1 - veil)
    alpha = alpha.clamp(0, 1)

    # textures
    fg_base = 0.25 + 0.6 * torch.rand(3, 1, 1, generator=g)
    fgc = fg_base * (1 + 0.35 * _smooth_noise(g, 3, H, W, 10)) + 0.08 * _smooth_noise(g, 3, H, W, max(16, S // 12))
    bg_base = 0.2 + 0.6 * torch.rand(3, 1, 1, generator=g)
    bgc = bg_base + 0.35 * _smooth_noise(g, 3, H, W, 5) + 0.15 * _smooth_noise(g, 3, H, W, max(16, S // 20))
    fgc, bgc = fgc.clamp(0, 1), bgc.clamp(0, 1)
    a32 = alpha.to(torch.float32)
    image = a32 * fgc + (1 - a32) * bgc
    out = {
        "image": image.unsqueeze(0).to(dtype),
        "alpha": a32.unsqueeze(0).to(dtype),
        "fg": fgc.unsqueeze(0).to(dtype),
        "bg": bgc.unsqueeze(0).to(dtype),
    }
    out["coarse"] = coarsen_alpha(out["alpha"], model_size=model_size, blur_sigma=blur_sigma)
    return out


def _region_diff(pred: torch.Tensor, gt: torch.Tensor, region: torch.Tensor | None) -> torch.Tensor:
    """float64 ``pred - gt`` at the pixels of ``region`` (all pixels when None), flattened."""
    if pred.shape != gt.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must have the same shape")
    d = pred.double() - gt.double()
    if region is None:
        return d.reshape(-1)
    if region.shape != gt.shape:
        raise ValueError(f"region {tuple(region.shape)} must match gt {tuple(gt.shape)} (e.g. trimap == 0.5)")
    return d[region.bool()]


def band_sad(pred: torch.Tensor, gt: torch.Tensor, region: torch.Tensor | None = None) -> float:
    """Sum of absolute alpha differences inside ``region`` (bool, e.g. ``trimap == 0.5``), in thousands."""
    d = _region_diff(pred, gt, region)
    return float(d.abs().sum()) / 1000.0


def band_mse(pred: torch.Tensor, gt: torch.Tensor, region: torch.Tensor | None = None) -> float:
    """Mean squared alpha difference inside ``region`` (bool); 0.0 for an empty region."""
    d = _region_diff(pred, gt, region)
    return float((d * d).mean()) if d.numel() else 0.0
