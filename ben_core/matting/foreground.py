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

Large images go through in horizontal strips (:func:`estimate_foreground_strips`, which
:func:`estimate_foreground` and the cut-out pipeline use): the passes run top to bottom and carry
their running sums from strip to strip, so the result is bit-identical to the whole image at once
while memory holds one strip's temporaries (see the note above :data:`STRIP_PIXELS`).
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence

import torch

from ..callbacks import Progress, ShouldStop, check_stop, report

__all__ = ["estimate_foreground", "estimate_foreground_strips", "foreground_halo", "default_strip_rows",
           "STRIP_PIXELS", "box_blur"]

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


def _box_cumsum_padded(padded: torch.Tensor, r: int, dim: int, n: int) -> torch.Tensor:
    """Normalised box of width ``r`` along ``dim`` from cumulative sums (cost independent of r).

    ``padded`` holds the ``n + r - 1`` input positions the ``n`` outputs read (output ``i`` covers
    ``padded[i .. i + r - 1]``). The cumulative sum restarts every ``_BLOCK`` outputs (each block re-reads
    its r - 1 overlap), so partial sums never exceed ~_BLOCK + r and the rounding error of a box mean
    stays below ~1e-6; a window of zeros gives exactly 0. Returns a new float32 tensor, ``n`` long along dim.
    """
    shape = list(padded.shape)
    shape[dim] = n
    out = torch.empty(shape, dtype=torch.float32, device=padded.device)
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


def _box_direct_padded(padded: torch.Tensor, r: int, dim: int, n: int) -> torch.Tensor:
    """Normalised box of width ``r`` along ``dim`` as a sum of r shifted slices of ``padded`` (see
    :func:`_box_cumsum_padded` for its layout). Returns a new float32 tensor, ``n`` long along dim."""
    out = padded.narrow(dim, 0, n).to(torch.float32, copy=True)
    for j in range(1, r):
        out.add_(padded.narrow(dim, j, n))
    return out.mul_(1.0 / r)


def _box_direct(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Normalised box of width ``r`` along ``dim`` (BORDER_REFLECT_101) as a sum of r shifted slices."""
    return _box_direct_padded(_pad_reflect101(x, r, dim), r, dim, x.shape[dim])


def _box_padded(padded: torch.Tensor, r: int, dim: int, n: int) -> torch.Tensor:
    if r <= _DIRECT_MAX:
        return _box_direct_padded(padded, r, dim, n)
    return _box_cumsum_padded(padded, r, dim, n)


def _box_along(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    return _box_padded(_pad_reflect101(x, r, dim), r, dim, x.shape[dim])


def _slide_rows(x: torch.Tensor, lo: int, idx: list[int], r: int, t0: int, t1: int,
                acc: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``t0 .. t1 - 1`` of the normalised box of height ``r`` down dim -2, by a running row sum.

    ``x``: ``[..., n, W]`` float32, the input's rows ``lo .. lo + n - 1`` (at least those ``idx``, the
    reflect-101 source row of every padded position, names for these outputs). ``acc``: the float64
    running sum after row ``t0 - 1`` (what the previous call returned), None when ``t0 == 0``.
    Returns ``(out [..., t1 - t0, W] float32, acc after row t1 - 1)``. Rows computed in several calls
    are bit-identical to one call over all rows: the same additions in the same order.

    On CPU, ``torch.cumsum`` over a non-innermost dim is several times slower than stepping a
    float64 row accumulator down the image.
    """
    out = torch.empty(x.shape[:-2] + (t1 - t0,) + x.shape[-1:], dtype=torch.float32, device=x.device)
    inv = 1.0 / r
    first = t0
    if t0 == 0:
        acc = torch.zeros(x.shape[:-2] + x.shape[-1:], dtype=torch.float64, device=x.device)
        for j in idx[:r]:
            acc.add_(x[..., j - lo, :])
        torch.mul(acc, inv, out=out[..., 0, :])
        first = 1
    for i in range(first, t1):
        acc.add_(x[..., idx[i + r - 1] - lo, :])
        acc.sub_(x[..., idx[i - 1] - lo, :])
        torch.mul(acc, inv, out=out[..., i - t0, :])
    return out, acc


def _box_rows_sliding(x: torch.Tensor, r: int) -> torch.Tensor:
    """Normalised box of height ``r`` along dim -2 of ``[..., H, W]`` by a float64 running row sum."""
    h = x.shape[-2]
    return _slide_rows(x, 0, _reflect101_index(h, r), r, 0, h)[0]


def _running_sums(device: torch.device) -> bool:
    """Whether the vertical box runs as a running row sum (CPU) rather than as cumulative sums."""
    return device.type == "cpu"


def _box_rows(x: torch.Tensor, r: int) -> torch.Tensor:
    if _running_sums(x.device):
        return _box_rows_sliding(x, r)
    return _box_along(x, r, x.dim() - 2)


def _box_rows_range(x: torch.Tensor, lo: int, idx: list[int], r: int, t0: int, t1: int,
                    acc: Optional[torch.Tensor]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Rows ``t0 .. t1 - 1`` of :func:`_box_rows` of a ``[C, H, W]`` input of which ``x`` holds rows
    ``lo ..`` (see :func:`_slide_rows`); ``(rows, running sums to pass to the next range)``.

    CPU: the running row sum, carried between ranges. Other devices: the cumulative-sum blocks of
    :func:`_box_cumsum_padded`, the same blocks as for the whole image when ``t0`` is a multiple of
    ``_BLOCK`` (the caller's ranges are).
    """
    if _running_sums(x.device):
        return _slide_rows(x, lo, idx, r, t0, t1, acc)
    pos = torch.tensor([idx[k] - lo for k in range(t0, t1 + r - 1)], device=x.device)
    return _box_padded(x.index_select(x.dim() - 2, pos), r, x.dim() - 2, t1 - t0), None


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


def _fuse(image: torch.Tensor, alpha: torch.Tensor, blurred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-pixel end of a blur-fusion pass on some rows.

    ``image`` ``[3, n, W]``, ``alpha`` ``[1, n, W]`` and ``blurred`` = the box means of ``(F * a, B * (1 - a),
    a)`` ``[7, n, W]``, all float32. Returns the new foreground ``[3, n, W]`` in 0..1 and the blurred
    background ``Bb`` ``[3, n, W]`` (the next pass's B). ``blurred`` is reused for the foreground.
    """
    blurred_fa, blurred_b1a, blurred_a = blurred[0:3], blurred[3:6], blurred[6:7]
    blurred_f = blurred_fa / (blurred_a + _EPS)
    blurred_b = blurred_b1a / ((1.0 - blurred_a) + _EPS)
    del blurred_fa, blurred_b1a, blurred_a
    # F' = Fb + a * (I - a * Fb - (1 - a) * Bb), computed with few temporaries
    residual = image - alpha * blurred_f
    residual.sub_((1.0 - alpha) * blurred_b)
    new_fg = blurred_f.add_(residual.mul_(alpha)).clamp_(0.0, 1.0)
    return new_fg, blurred_b


# -- strips ------------------------------------------------------------------------------------------
#
# Foreground row i depends on image and alpha rows i - sum(r // 2) .. i + sum(r - 1 - r // 2): each pass's
# box reads offsets -(r // 2) .. r - 1 - r // 2 of its input, and pass k's box reads what pass k - 1's
# boxes made (the three boxes of one pass are side by side, not nested). At the top and bottom the
# reflect-101 border folds that range back into the image. A strip that re-read those rows above it would
# restart the CPU's running column sums there and round differently from the whole image (~1 ulp), so
# the passes below run top to bottom and carry their running sums from strip to strip instead: every row
# gets exactly the operations, in the same order, that the whole image gets. What is read twice is the
# rows below a strip (sum(r - 1 - r // 2) of them) and one row above per pass.

#: Pixels per strip when the caller does not choose (a strip's temporaries are ~100 bytes per pixel).
STRIP_PIXELS = 1 << 22


def foreground_halo(radii: Sequence[int] = (90, 6)) -> tuple[int, int]:
    """``(above, below)``: how many image rows above and below a row its blur-fusion foreground depends on.

    ``(sum(r // 2), sum(r - 1 - r // 2))`` over the passes: ``(48, 46)`` for the default ``(90, 6)``.
    Near the top and bottom the reflect-101 border folds the range back into the image.
    """
    radii = _check_radii(radii)
    return sum(r // 2 for r in radii), sum(r - 1 - r // 2 for r in radii)


def default_strip_rows(width: int) -> int:
    """Rows per strip for images ``width`` pixels wide: about :data:`STRIP_PIXELS` pixels, at least 1 row."""
    return max(1, STRIP_PIXELS // max(1, int(width)))


def _check_radii(radii: Sequence[int]) -> tuple[int, ...]:
    radii = tuple(radii)
    if not radii or any(not isinstance(r, int) or isinstance(r, bool) or r < 1 for r in radii):
        raise ValueError(f"radii must be a non-empty sequence of positive ints, got {radii!r}")
    return radii


class _Pass:
    """One blur-fusion pass, computed in consecutive row ranges from the top.

    Rows ``[0, done)`` are computed; ``fg`` / ``bg`` (``[3, done - lo, W]``) hold rows ``[lo, done)``
    while the next pass still reads them; ``acc`` is the CPU running column sum after row ``done - 1``.
    """

    def __init__(self, h: int, r: int):
        self.h = h
        self.r = r
        self.idx = _reflect101_index(h, r)  # padded position -> source row, h + r - 1 entries
        self.done = 0
        self.lo = 0
        self.acc: Optional[torch.Tensor] = None
        self.fg: Optional[torch.Tensor] = None
        self.bg: Optional[torch.Tensor] = None

    def sources(self, t0: int, t1: int) -> tuple[int, int]:
        """Input rows ``[lo, hi)`` that rows ``t0 .. t1 - 1`` read: their boxes (reflected at the image's
        borders) and the row leaving the running sum at ``t0``."""
        ks = self.idx[max(t0 - 1, 0):t1 + self.r - 1]
        return min(ks), max(ks) + 1

    def first_source(self, t0: int) -> int:
        """The lowest input row that any row from ``t0`` on reads (``h`` when none is left)."""
        return min(self.idx[max(t0 - 1, 0):]) if t0 < self.h else self.h

    def append(self, fg: torch.Tensor, bg: torch.Tensor) -> None:
        """Rows ``[done, done + n)`` computed (``[3, n, W]`` each)."""
        if self.fg is None or self.fg.shape[1] == 0:
            self.lo, self.fg, self.bg = self.done, fg, bg
        else:
            self.fg = torch.cat([self.fg, fg], dim=1)
            self.bg = torch.cat([self.bg, bg], dim=1)
        self.done += fg.shape[1]

    def drop_before(self, row: int) -> None:
        """Free the held rows above ``row`` (copying the few kept ones, so the old strip's memory goes)."""
        if self.fg is None or row <= self.lo:
            return
        keep = max(0, self.done - row)
        self.fg = self.fg[:, self.fg.shape[1] - keep:].clone()
        self.bg = self.bg[:, self.bg.shape[1] - keep:].clone()
        self.lo = self.done - keep


class _FusionStrips:
    """The blur-fusion passes over an image, computed strip by strip from the top (see the note above).

    ``rows(lo, hi)``: the image's rows ``[lo, hi)`` as float32 ``[3, hi - lo, W]`` in 0..1 (read, never
    written). ``alpha``: ``[H, W]`` float (clamped to 0..1 here, row range by row range).
    """

    def __init__(self, rows: Callable[[int, int], torch.Tensor], alpha: torch.Tensor, radii: tuple[int, ...]):
        self.rows = rows
        self.alpha = alpha
        self.h, self.w = alpha.shape
        self.cpu = _running_sums(alpha.device)
        self.passes = [_Pass(self.h, r) for r in radii]
        # the last rows fetched: a later pass's rows mostly lie inside the first pass's wider range
        self._image: tuple[int, Optional[torch.Tensor]] = (0, None)
        self._alpha: tuple[int, Optional[torch.Tensor]] = (0, None)

    def _image_rows(self, lo: int, hi: int) -> torch.Tensor:
        """Image rows ``[lo, hi)``, ``[3, hi - lo, W]`` float32 0..1 (a view of the last fetch when it covers them)."""
        start, held = self._image
        if held is None or lo < start or hi > start + held.shape[1]:
            start, held = self._image = (lo, self.rows(lo, hi))
        return held[:, lo - start:hi - start]

    def _alpha_rows(self, lo: int, hi: int) -> torch.Tensor:
        """Alpha rows ``[lo, hi)``, ``[1, hi - lo, W]`` float32 clamped to 0..1 (cached like the image's)."""
        start, held = self._alpha
        if held is None or lo < start or hi > start + held.shape[1]:
            start, held = self._alpha = (lo, self.alpha[lo:hi].to(torch.float32).clamp(0.0, 1.0).unsqueeze(0))
        return held[:, lo - start:hi - start]

    def _end(self, want: int) -> int:
        if self.cpu:
            return min(want, self.h)
        # other devices: ranges end on a block boundary, so the cumulative sums run over box_blur's blocks
        return min(self.h, -(-want // _BLOCK) * _BLOCK)

    def advance(self, k: int, want: int) -> None:
        """Compute pass ``k`` at least down to row ``want`` (exclusive), computing earlier passes as needed."""
        p = self.passes[k]
        if p.done >= want:
            return
        t0, t1 = p.done, self._end(want)
        lo, hi = p.sources(t0, t1)
        prev = None
        if k == 0:
            fg = bg = self._image_rows(lo, hi)
        else:
            self.advance(k - 1, hi)
            prev = self.passes[k - 1]
            fg = prev.fg[:, lo - prev.lo:hi - prev.lo]
            bg = prev.bg[:, lo - prev.lo:hi - prev.lo]
        a = self._alpha_rows(lo, hi)
        stacked = torch.empty((7, hi - lo, self.w), dtype=torch.float32, device=a.device)
        torch.mul(fg, a, out=stacked[0:3])
        torch.mul(bg, 1.0 - a, out=stacked[3:6])
        stacked[6:7].copy_(a)
        if p.r == 1:
            blurred = stacked[:, t0 - lo:t1 - lo]
        else:
            across = _box_along(stacked, p.r, 2)
            del stacked
            blurred, p.acc = _box_rows_range(across, lo, p.idx, p.r, t0, t1, p.acc)
            del across
        new_fg, new_bg = _fuse(self._image_rows(t0, t1), a[:, t0 - lo:t1 - lo], blurred)
        del fg, bg, blurred, a
        p.append(new_fg, new_bg)
        if prev is not None:
            prev.drop_before(p.first_source(p.done))


def estimate_foreground_strips(rows: Callable[[int, int], torch.Tensor], alpha: torch.Tensor,
                               radii: Sequence[int] = (90, 6), strip_rows: Optional[int] = None,
                               should_stop: ShouldStop = None) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Blur-fusion foreground colours of one image, strip by strip from the top, bit-identical to
    :func:`estimate_foreground` on the whole image whatever the strip height.

    Args:
        rows: ``rows(lo, hi)`` returns the image's rows ``[lo, hi)`` as float32 ``[3, hi - lo, W]`` in
            0..1 on alpha's device; it is called for overlapping ranges (each strip reads the
            ``foreground_halo(radii)[1]`` rows below it again) and its results are never written to.
        alpha: ``[H, W]`` float in 0..1 (values outside are clamped), 1 = foreground.
        radii: box sizes of the passes, as for :func:`estimate_foreground`.
        strip_rows: rows per strip (None: :func:`default_strip_rows`; ``>= H``: one strip, the whole
            image). Memory grows with it, the result does not change. On devices other than the CPU
            strips end on multiples of 512 rows, so they may be taller.
        should_stop: checked before every strip after the first (see :mod:`ben_core.callbacks`).

    Yields ``(r0, r1, fg)``: rows ``[r0, r1)`` of the foreground, ``fg`` float32 ``[3, r1 - r0, W]``
    in 0..1, consecutive strips covering ``[0, H)``. Full-resolution memory: none beyond the caller's
    alpha; a strip's temporaries peak at ~100 bytes per pixel of ``strip_rows + sum(radii)`` rows.
    """
    radii = _check_radii(radii)
    if not isinstance(alpha, torch.Tensor) or not alpha.is_floating_point() or alpha.dim() != 2 \
            or alpha.shape[0] == 0 or alpha.shape[1] == 0:
        what = f"{alpha.dtype} {tuple(alpha.shape)}" if isinstance(alpha, torch.Tensor) else type(alpha).__name__
        raise ValueError(f"alpha must be a non-empty float [H, W] map, got {what}")
    step = default_strip_rows(alpha.shape[1]) if strip_rows is None else strip_rows
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"strip_rows must be None or an int >= 1, got {strip_rows!r}")
    return _strips(_FusionStrips(rows, alpha, radii), step, should_stop)


def _strips(strips: _FusionStrips, step: int, should_stop: ShouldStop) -> Iterator[tuple[int, int, torch.Tensor]]:
    """The generator behind :func:`estimate_foreground_strips` (arguments checked already)."""
    last = strips.passes[-1]
    while last.done < strips.h:
        if last.done:
            check_stop(should_stop, last.done, strips.h, "rows")
        strips.advance(len(strips.passes) - 1, last.done + step)
        r0, r1, fg = last.lo, last.done, last.fg
        last.fg = last.bg = None  # the caller holds the strip; the stream keeps nothing of the last pass
        last.lo = last.done
        yield r0, r1, fg
        del fg


def estimate_foreground(image: torch.Tensor, alpha: torch.Tensor, radii: Sequence[int] = (90, 6),
                        progress: Progress = None, should_stop: ShouldStop = None,
                        check_finite: bool = True, strip_rows: Optional[int] = None) -> torch.Tensor:
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
            whose inputs are finite by construction.
        strip_rows: rows per strip (see :func:`estimate_foreground_strips`; None: about
            :data:`STRIP_PIXELS` pixels). The result is the same for every strip height.

    Returns:
        ``[B,3,H,W]`` (``[3,H,W]`` for 3-D input) foreground colours in 0..1, in ``image``'s dtype, on
        ``image``'s device. Computed in float32, one image at a time, in horizontal strips: beyond the
        inputs and the result, memory holds one strip's temporaries. Composite as
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
    radii = _check_radii(radii)

    out = torch.empty((b, 3, h, w), dtype=image.dtype, device=image.device)
    for i in range(b):  # one image at a time keeps the full-resolution temporaries small
        check_stop(should_stop, i, b)
        img = image[i].to(torch.float32)  # .to() copies only if needed; nothing below writes into it
        a = alpha[i].to(torch.float32)
        if check_finite and not (bool(torch.isfinite(img).all()) and bool(torch.isfinite(a).all())):
            raise ValueError(f"image {i}: image or alpha contains NaN/inf")
        for r0, r1, fg in estimate_foreground_strips(_clamped_rows(img), a, radii, strip_rows):
            out[i, :, r0:r1] = fg
        del img, a
        report(progress, i + 1, b)
    return out[0] if single else out


def _clamped_rows(img: torch.Tensor) -> Callable[[int, int], torch.Tensor]:
    """``rows(lo, hi)`` for :func:`estimate_foreground_strips`: rows of a float32 ``[3, H, W]`` image,
    clamped to 0..1 (a new tensor per call)."""
    return lambda lo, hi: img[:, lo:hi].clamp(0.0, 1.0)
