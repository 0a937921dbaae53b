"""Foreground colour estimation by blur fusion (what upstream BEN2 calls ``refine_foreground``).

Algorithm: Germer et al., "Fast Multi-Level Foreground Estimation" (ICPR 2020), in the two-pass
"blur fusion" form upstream BEN2 uses (``FB_blur_fusion_foreground_estimator_2``): a first pass with
a large box (90 px) estimates smooth foreground/background colours from the image itself, a second
pass with a small box (6 px) refines the foreground using the first pass's results. For one pass
with box size ``r``, image ``I``, current foreground ``F``, background ``B`` and alpha ``a``::

    A  = blur(a)
    Fb = blur(F * a) / (A + 1e-5)
    Bb = blur(B * (1 - a)) / ((1 - A) + 1e-5)
    F' = clip(Fb + a * (I - a * Fb - (1 - a) * Bb), 0, 1)

``blur`` is OpenCV's ``cv2.blur(x, (r, r))``: a normalised r x r box filter whose window covers
offsets ``-(r // 2) .. r - 1 - r // 2`` (anchor at ``r // 2``, so even sizes are not centred) and
whose border mode is ``BORDER_REFLECT_101`` (``gfedcb|abcdefgh|gfedcba``, applied repeatedly when
the box is larger than the image). Here the box filter is separable and its cost hardly depends on
``r``: along rows by blockwise float32 cumulative sums (boxes of <= 16 px: a direct sum of shifted
slices), down columns on CPU by a float64 running row sum, on other devices like the rows. Everything
runs in float32 (float64 only for the small CPU row accumulator) on the input's device, one image at
a time. Agreement with OpenCV's float64 ``cv2.blur`` pipeline: ~1e-6.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .callbacks import Progress, ShouldStop, check_stop, report

__all__ = ["estimate_foreground", "box_blur"]

_EPS = 1e-5


def _reflect101_index(n: int, r: int) -> list[int]:
    """Source indices of the BORDER_REFLECT_101-padded axis used by an r-wide box at anchor r // 2.

    Returns ``n + r - 1`` ints; entry ``m`` is the source index of padded position ``m`` (offset
    ``m - r // 2`` from the start of the axis), reflecting as often as needed when ``r > n``.
    """
    if n == 1:
        return [0] * (n + r - 1)
    period = 2 * (n - 1)  # the reflect-101 extension is even and periodic with this period
    out = []
    for m in range(-(r // 2), n + r - 1 - (r // 2)):
        m %= period
        out.append(period - m if m >= n else m)
    return out


def _pad_reflect101(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """New float32 tensor: ``x`` padded along ``dim`` by r // 2 before and r - 1 - r // 2 after, BORDER_REFLECT_101."""
    n = x.shape[dim]
    before, after = r // 2, r - 1 - r // 2
    shape = list(x.shape)
    shape[dim] = n + r - 1
    out = torch.empty(shape, dtype=torch.float32, device=x.device)
    out.narrow(dim, before, n).copy_(x)
    if before < n and after < n:  # one reflection suffices: copy mirrored slices
        if before:
            out.narrow(dim, 0, before).copy_(x.narrow(dim, 1, before).flip(dim))
        if after:
            out.narrow(dim, before + n, after).copy_(x.narrow(dim, n - 1 - after, after).flip(dim))
        return out
    idx = _reflect101_index(n, r)  # box larger than the image: reflect repeatedly, via explicit indices
    if before:
        out.narrow(dim, 0, before).copy_(x.index_select(dim, torch.tensor(idx[:before], device=x.device)))
    if after:
        out.narrow(dim, before + n, after).copy_(
            x.index_select(dim, torch.tensor(idx[before + n:], device=x.device)))
    return out


_BLOCK = 512  # cumulative sums restart every _BLOCK outputs, so float32 sums stay small and exact-ish


def _box_cumsum(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Normalised box of width ``r`` along ``dim`` from cumulative sums (cost independent of r).

    The float32 cumulative sum restarts every ``_BLOCK`` outputs (each block re-reads its r - 1
    overlap), so partial sums never exceed ~_BLOCK + r and the rounding error of a box mean stays
    below ~1e-6; a window of zeros gives exactly 0.
    """
    n = x.shape[dim]
    padded = _pad_reflect101(x, r, dim)
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    for start in range(0, n, _BLOCK):
        m = min(_BLOCK, n - start)
        c = torch.cumsum(padded.narrow(dim, start, m + r - 1), dim=dim)
        # window i covers padded[i .. i + r - 1]  ->  c[i + r - 1] - c[i - 1]   (c[-1] = 0)
        o = out.narrow(dim, start, m)
        o.copy_(c.narrow(dim, r - 1, m))
        if m > 1:
            o.narrow(dim, 1, m - 1).sub_(c.narrow(dim, 0, m - 1))
        del c
    return out.mul_(1.0 / r)


_DIRECT_MAX = 16  # boxes up to this size are summed directly (r shifted slices): cheap and most accurate


def _box_direct(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Normalised box of width ``r`` along ``dim`` as a sum of r shifted slices (for small r)."""
    n = x.shape[dim]
    padded = _pad_reflect101(x, r, dim)
    out = padded.narrow(dim, 0, n).clone()
    for j in range(1, r):
        out.add_(padded.narrow(dim, j, n))
    return out.mul_(1.0 / r)


def _box_along(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    return _box_direct(x, r, dim) if r <= _DIRECT_MAX else _box_cumsum(x, r, dim)


def _box_rows_sliding(x: torch.Tensor, r: int) -> torch.Tensor:
    """Normalised box of height ``r`` along dim -2 of ``[C,H,W]`` by a sliding running sum.

    On CPU, ``torch.cumsum`` over a non-innermost dim is several times slower than stepping a
    float64 row accumulator down the image; the result is the same sum (float64 accumulation).
    """
    h = x.shape[-2]
    idx = _reflect101_index(h, r)
    acc = torch.zeros(x.shape[:-2] + x.shape[-1:], dtype=torch.float64, device=x.device)
    for j in idx[:r]:
        acc.add_(x[..., j, :])
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    inv = 1.0 / r
    torch.mul(acc, inv, out=out[..., 0, :])
    for i in range(1, h):
        acc.add_(x[..., idx[i + r - 1], :])
        acc.sub_(x[..., idx[i - 1], :])
        torch.mul(acc, inv, out=out[..., i, :])
    return out


def _box_rows(x: torch.Tensor, r: int) -> torch.Tensor:
    if x.device.type == "cpu":
        return _box_rows_sliding(x, r)
    return _box_along(x, r, x.dim() - 2)


def box_blur(x: torch.Tensor, r: int) -> torch.Tensor:
    """``cv2.blur(x, (r, r))`` for a float tensor ``[..., H, W]`` (any leading dims).

    Returns float32 of the same shape on the same device. ``r`` is the box size in pixels (>= 1).
    Border handling is BORDER_REFLECT_101; the window's anchor is ``r // 2`` as in OpenCV.
    """
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise ValueError(f"box size r must be a positive int, got {r!r}")
    if x.dim() < 2:
        raise ValueError(f"box_blur expects a tensor [..., H, W], got shape {tuple(x.shape)}")
    if r == 1:
        return x.to(torch.float32, copy=True)
    return _box_rows(_box_along(x, r, x.dim() - 1), r)


def _blur_fusion_pass(image: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor, alpha: torch.Tensor,
                      r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One blur-fusion pass on a single image. image/fg/bg [3,H,W], alpha [1,H,W], all float32."""
    # blur F*a, B*(1-a) and a together (one cumulative-sum sweep over 7 channels)
    stacked = torch.empty((7,) + tuple(image.shape[1:]), dtype=torch.float32, device=image.device)
    torch.mul(fg, alpha, out=stacked[0:3])
    torch.mul(bg, 1.0 - alpha, out=stacked[3:6])
    stacked[6:7].copy_(alpha)
    blurred = box_blur(stacked, r)
    del stacked
    blurred_fa, blurred_b1a, blurred_a = blurred[0:3], blurred[3:6], blurred[6:7]
    blurred_f = blurred_fa / (blurred_a + _EPS)
    blurred_b = blurred_b1a / ((1.0 - blurred_a) + _EPS)
    del blurred, blurred_fa, blurred_b1a, blurred_a
    # F' = Fb + a * (I - a * Fb - (1 - a) * Bb), computed with few full-size temporaries
    residual = image - alpha * blurred_f
    residual.sub_((1.0 - alpha) * blurred_b)
    new_fg = blurred_f.add_(residual.mul_(alpha)).clamp_(0.0, 1.0)
    return new_fg, blurred_b


def estimate_foreground(image: torch.Tensor, alpha: torch.Tensor, radii: Sequence[int] = (90, 6),
                        progress: Progress = None, should_stop: ShouldStop = None,
                        check_finite: bool = True) -> torch.Tensor:
    """Estimate the foreground colours of ``image`` under ``alpha`` (blur fusion, upstream refine_foreground).

    Args:
        image: ``[B,3,H,W]`` (or ``[3,H,W]``) float tensor, RGB in 0..1.
        alpha: ``[B,H,W]`` (or ``[B,1,H,W]``, or ``[H,W]`` with a 3-D image) float in 0..1, 1 = foreground,
            same spatial size and device as ``image``.
        radii: box sizes of the passes, in pixels, exactly as upstream passes them to
            ``cv2.blur(x, (r, r))`` (a box of ``r`` pixels, not a half-width). Default ``(90, 6)``
            is upstream's two-pass estimator; the first pass starts from F = B = image, each later pass
            starts from the previous pass's foreground and blurred background.
        progress, should_stop: after / before every image (see :mod:`ben_core.callbacks`).
        check_finite: raise ValueError for NaN/inf inputs (one host sync per image); False for callers
            whose inputs are finite by construction (the cut-out pipeline).

    Returns:
        ``[B,3,H,W]`` (``[3,H,W]`` for 3-D input) foreground colours in 0..1, in ``image``'s dtype, on
        ``image``'s device. Computed in float32 at full resolution, one image at a time. Composite as
        ``fg * alpha + new_background * (1 - alpha)``: edges then carry no colour of the old background.
        The inputs are not modified.
    """
    if not isinstance(image, torch.Tensor) or not isinstance(alpha, torch.Tensor):
        raise TypeError("estimate_foreground expects torch tensors (image [B,3,H,W], alpha [B,H,W]), "
                        f"got {type(image).__name__} and {type(alpha).__name__}")
    if not image.is_floating_point():
        raise TypeError(f"image must be a float tensor in 0..1, got dtype {image.dtype} "
                        "(convert uint8 with image.float() / 255)")
    if not alpha.is_floating_point():
        raise TypeError(f"alpha must be a float tensor in 0..1, got dtype {alpha.dtype}")
    single = image.dim() == 3
    if single:
        image = image.unsqueeze(0)
        if alpha.dim() == 2:
            alpha = alpha.unsqueeze(0)
        elif alpha.dim() == 3 and alpha.shape[0] == 1:
            pass
        else:
            raise ValueError(f"with a single image [3,H,W] alpha must be [H,W], got {tuple(alpha.shape)}")
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be [B,3,H,W] (channels first, RGB), got shape {tuple(image.shape)}")
    if alpha.dim() == 4 and alpha.shape[1] == 1:
        alpha = alpha[:, 0]
    b, _, h, w = image.shape
    if alpha.dim() != 3 or tuple(alpha.shape) != (b, h, w):
        raise ValueError(f"alpha must be [B,H,W] = {[b, h, w]} to match image {tuple(image.shape)}, "
                         f"got {tuple(alpha.shape)}")
    if alpha.device != image.device:
        raise ValueError(f"image is on {image.device} but alpha is on {alpha.device}; move them to one device")
    if b == 0 or h == 0 or w == 0:
        raise ValueError(f"empty input: image shape {tuple(image.shape)}")
    radii = tuple(radii)
    if not radii or any(not isinstance(r, int) or isinstance(r, bool) or r < 1 for r in radii):
        raise ValueError(f"radii must be a non-empty sequence of positive ints, got {radii!r}")

    out = torch.empty((b, 3, h, w), dtype=image.dtype, device=image.device)
    for i in range(b):  # one image at a time keeps the full-resolution temporaries small
        check_stop(should_stop, i, b)
        img = image[i].to(torch.float32)  # .to() copies only if needed; nothing below writes in place into it
        a = alpha[i].to(torch.float32).unsqueeze(0)
        if check_finite and not (bool(torch.isfinite(img).all()) and bool(torch.isfinite(a).all())):
            raise ValueError(f"image {i}: image or alpha contains NaN/inf")
        img = img.clamp(0.0, 1.0)
        a = a.clamp(0.0, 1.0)
        fg, bg = img, img
        for r in radii:
            fg, bg = _blur_fusion_pass(img, fg, bg, a, r)
        out[i] = fg.to(image.dtype)
        del fg, bg, img, a
        report(progress, i + 1, b)
    return out[0] if single else out
