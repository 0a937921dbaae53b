"""Second stage of Confidence-Guided Matting: refine a coarse alpha inside the trimap's unknown band.

The public BEN2 weights ship no refiner network, so the refinement is ours:

* ``method="guided"`` (default): a confidence-weighted *colour* guided filter (He et al.) of the
  coarse alpha. Inside every window the local linear model ``alpha ~ a . RGB + b`` is fitted with
  weight 1 on the trimap's sure pixels (whose alpha is exactly 0/1) and ``unknown_weight`` on the
  unknown pixels, so the colour-to-alpha mapping is learnt mostly from pixels whose alpha is known.
  The models are fitted at 1/``scale`` of the resolution and applied to the full-resolution colours
  (a fast guided filter): smoother models from larger windows, and full-resolution detail from the
  colours. Radius, eps and scale defaults were chosen by measurement on real photos with hand-made
  ground truth (``python -m benchmarks.bench_matting_real``) and on synthetic data
  (``python -m benchmarks.bench_matting``).
* ``method="vitmatte"``: the ViTMatte network through ``transformers`` (see :mod:`ben_core.vitmatte`).

Only pixels with ``trimap == 0.5`` change; sure foreground/background come out exactly 1/0. Without a
trimap, :func:`ben_core.trimap.auto_trimap` makes one.
"""
from __future__ import annotations

import torch

from .callbacks import Progress, ShouldStop, check_stop, report
from .guided_filter import fast_guided_filter, guided_filter
from .trimap import auto_trimap

__all__ = ["refine_alpha", "default_radius", "DEFAULT_EPS", "DEFAULT_SCALE", "DEFAULT_UNKNOWN_WEIGHT", "METHODS"]

#: Refinement methods of :func:`refine_alpha`.
METHODS = ("guided", "vitmatte")

#: weight of unknown pixels in the local least-squares fit (sure pixels weigh 1); measured.
DEFAULT_UNKNOWN_WEIGHT = 0.3
#: eps of the guided filter (guide in 0..1 RGB): measured best with the fast filter on real photos (1e-4 and
#: 1e-3 cut the band error less); at scale 1, 1e-5 and 1e-4 measured within 2% on the synthetic data.
DEFAULT_EPS = 1e-5
#: The local colour models are fitted at 1/scale of the resolution (a fast guided filter) and applied at
#: full resolution: on the 27 alphamatting.com training photos this cut the band MSE 59% against 47% at
#: scale 1, and made 4K refinement ~8x faster (benchmarks/bench_matting_real.py).
DEFAULT_SCALE = 3.75


def default_radius(height: int, width: int) -> int:
    """Guided-filter radius for an image of ``height x width``: ``max(2, round(min(H, W) / 45))``.

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
        raise ValueError(f"empty input: image shape {tuple(image.shape)}; need at least one image of at least 1x1 pixels")
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


def _guided_refine_one(image: torch.Tensor, alpha: torch.Tensor, trimap: torch.Tensor, radius: int, eps: float,
                       unknown_weight: float, strip_rows: int, scale: float) -> torch.Tensor:
    """[3,H,W], [H,W], [H,W] -> refined [H,W] (float, unknown pixels only changed; clamped)."""
    unk = trimap == 0.5
    out = trimap.to(alpha.dtype).clone()
    if not bool(unk.any()):
        return out
    # source: coarse alpha in the unknown band, the trimap's exact 0/1 elsewhere
    src = torch.where(unk, alpha, trimap.to(alpha.dtype))
    wgt = torch.where(unk, torch.full_like(alpha, float(unknown_weight)), torch.ones_like(alpha))
    if scale > 1:
        q = fast_guided_filter(image, src, radius, eps, scale, weight=wgt)
        return torch.where(unk, q.clamp(0, 1), out)
    H, W = alpha.shape
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
                 **vitmatte_kwargs) -> torch.Tensor:
    """Refine a coarse alpha inside the unknown band of a trimap.

    Args:
        image: ``[B, 3, H, W]`` float RGB in 0..1, any size/device.
        alpha: ``[B, H, W]`` float coarse alpha in 0..1 (BEN2, SAM, a painted mask, ...), same device.
        trimap: ``[B, H, W]`` float {0, 0.5, 1}, or None -> :func:`ben_core.trimap.auto_trimap` (the
            paper's confidence trimap; a band around the edge for hard masks).
        method: ``"guided"`` (confidence-weighted colour guided filter, default) or ``"vitmatte"``.
        radius: guided-filter radius (default :func:`default_radius`, ~min(H, W)/45).
        eps: guided-filter regularisation (default :data:`DEFAULT_EPS`).
        unknown_weight: weight of unknown pixels in the local fit (sure pixels weigh 1), in (0, 1].
        strip_rows: rows per processing strip at scale 1 (memory bound only; the result does not depend on it).
        scale: fit the local colour models at 1/scale of the resolution and apply them at full resolution
            (default :data:`DEFAULT_SCALE`); 1 = the plain full-resolution filter.
        progress, should_stop: per image (guided) or per tile (vitmatte); see :mod:`ben_core.callbacks`.
        **vitmatte_kwargs: passed to :func:`ben_core.vitmatte.vitmatte_refine` (model, tile_size, ...).

    Returns:
        refined alpha ``[B, H, W]`` in alpha's dtype and device, 0..1, equal to the trimap where it
        is 0 or 1. Inputs are not modified.
    """
    _check_inputs(image, alpha, trimap)
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    B, _, H, W = image.shape
    if trimap is None:
        trimap = auto_trimap(alpha)
    if method == "vitmatte":
        if radius is not None or eps is not None or scale is not None:
            raise TypeError("radius, eps and scale apply to method='guided' only; drop them for method='vitmatte'")
        from .vitmatte import vitmatte_refine
        out = vitmatte_refine(image, trimap, progress=progress, should_stop=should_stop, **vitmatte_kwargs)
        return torch.where(trimap == 0.5, out.to(alpha.dtype).clamp(0, 1), trimap.to(alpha.dtype))
    if vitmatte_kwargs:
        raise TypeError(f"unexpected arguments for method='guided': {sorted(vitmatte_kwargs)}")
    r = default_radius(H, W) if radius is None else radius
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"radius must be an int >= 1, got {r!r}")
    e = DEFAULT_EPS if eps is None else float(eps)
    if not e > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    if not 0 < float(unknown_weight) <= 1:
        raise ValueError(f"unknown_weight must be in (0, 1], got {unknown_weight!r}")
    if int(strip_rows) < 1:
        raise ValueError(f"strip_rows must be >= 1, got {strip_rows!r}")
    sc = DEFAULT_SCALE if scale is None else scale
    if isinstance(sc, bool) or not isinstance(sc, (int, float)) or not float(sc) >= 1:
        raise ValueError(f"scale must be a number >= 1, got {scale!r}")
    out = torch.empty_like(alpha)
    for i in range(B):
        check_stop(should_stop, i, B)
        out[i] = _guided_refine_one(image[i], alpha[i], trimap[i], r, e, float(unknown_weight), int(strip_rows),
                                    float(sc))
        report(progress, i + 1, B)
    return out
