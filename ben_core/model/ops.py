"""Low-level kernels of the BEN2 network: in-place activations, exact norm statistics and the
closed-form / banded convolutions of the full-resolution head.

Each function computes exactly what a plain composition of torch ops would (tests compare them with
that composition; :func:`attention`'s bf16 CPU path within bf16 rounding); they exist to save memory
traffic, peak memory and time. The architecture files
(:mod:`.ben2`, :mod:`.decoder`, :mod:`.swin`) call them; nothing here knows the architecture.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..devices import accumulator_dtype

__all__ = ["exporting", "export_path", "tracing_for_export", "gelu_", "attention", "channel_stats",
           "instance_norm_gelu_", "conv3x3_then_box_down", "nearest_up2_conv3x3", "upsample_norm_gelu_conv"]


_EXPORT_PATH = threading.local()


def exporting() -> bool:
    """True while ``torch.export`` traces the network, or inside :func:`export_path`.

    On that path every kernel here is one plain op per step of its arithmetic, out of place, without
    Python-side chunking that depends on the batch size, so a graph exporter sees static sizes for a given
    working size and a symbolic batch; the network's caches are read but never filled while tracing.
    """
    return getattr(_EXPORT_PATH, "depth", 0) > 0 or tracing_for_export()


def tracing_for_export() -> bool:
    """True while ``torch.export`` traces (``torch.compiler.is_exporting``; False on a torch without it)."""
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return is_exporting is not None and is_exporting()


@contextmanager
def export_path() -> Iterator[None]:
    """Run the network's export path eagerly (this thread): what :mod:`ben_core.model.export` traces, and
    what the tests compare with the fast kernels."""
    _EXPORT_PATH.depth = getattr(_EXPORT_PATH, "depth", 0) + 1
    try:
        yield
    finally:
        _EXPORT_PATH.depth -= 1


def gelu_(x: Tensor) -> Tensor:
    """Exact (erf) GELU applied in place on a temporary ``x`` (any shape/dtype); returns ``x``.

    Avoids allocating a second buffer of ``x``'s size. When autograd records ``x``, returns
    ``F.gelu(x)`` instead (the backward pass needs the un-activated input), as on the export path.
    """
    if (torch.is_grad_enabled() and x.requires_grad) or exporting():
        return F.gelu(x)
    return torch.ops.aten.gelu_(x)


# bf16 attention on the CPU with at least this many scores runs in query blocks (:func:`attention`)
_BLOCKED_MIN_SCORES = 1 << 24
_QUERY_BLOCK = 256


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """``softmax(q k^T / sqrt(C)) v`` for ``q [..., Lq, C]``, ``k, v [..., Lk, C]`` -> ``[..., Lq, C]``.

    :func:`torch.nn.functional.scaled_dot_product_attention`, except for large bf16 inputs on the CPU
    (``Lq * Lk >= 2**24``, BEN2's decoder cross-attentions of 16384 queries over 5376 keys at 1024): there
    blocks of 256 queries run as two bf16 GEMMs around a softmax whose probabilities are stored in bf16,
    which the CPU's flash kernel takes 1.6x as long for (1.03 s against 0.65 s a call on 2 cores). The
    result differs from the flash kernel's by bf16 rounding of the probabilities. Under ``torch.compile``
    (and with gradients) it is SDPA.
    """
    lq, lk = q.shape[-2], k.shape[-2]
    if (q.device.type != "cpu" or q.dtype != torch.bfloat16 or lq * lk < _BLOCKED_MIN_SCORES
            or (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad))
            or torch.compiler.is_compiling() or exporting()):  # compilers fuse SDPA; the loop would unroll
        return F.scaled_dot_product_attention(q, k, v)
    with torch.autocast("cpu", enabled=False):  # autocast would run the softmax in float32
        k_t = k.to(q.dtype).transpose(-1, -2)
        v = v.to(q.dtype)
        scale = q.shape[-1] ** -0.5
        out = q.new_empty(q.shape[:-1] + (v.shape[-1],))
        for i in range(0, lq, _QUERY_BLOCK):
            scores = torch.matmul(q[..., i:i + _QUERY_BLOCK, :], k_t).mul_(scale)
            out[..., i:i + _QUERY_BLOCK, :] = torch.matmul(torch.softmax(scores, dim=-1), v)
    return out


def channel_stats(x: Tensor, chunk_elems: int = 1 << 23) -> Tuple[Tensor, Tensor]:
    """Per-(sample, channel) biased variance and mean of ``x [B, C, H, W]`` over ``H, W``.

    Returns ``(var, mean)``, each ``[B, C, 1, 1]`` in float32 (float64 for float64 input).
    Channels-last CPU inputs are reduced as ``[B, H*W, C]`` in chunks with an exact two-pass
    scheme (``torch.var_mean`` over non-innermost dims is very slow on CPU); partial sums are
    accumulated in float64 and no full-size temporary is allocated. Other inputs use
    ``torch.var_mean`` (half inputs upcast to float32 first).
    """
    b, c, h, w = x.shape
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    cpu_channels_last = (x.device.type == "cpu" and not x.is_contiguous()
                         and x.is_contiguous(memory_format=torch.channels_last) and not exporting())
    if not cpu_channels_last:
        var, mean = torch.var_mean(x.to(acc_dtype), dim=(2, 3), keepdim=True, correction=0)
        return var, mean
    n = h * w
    tokens = x.permute(0, 2, 3, 1).reshape(b, n, c)  # a view for channels-last memory
    rows = max(1, chunk_elems // max(1, b * c))
    total = torch.zeros(b, 1, c, dtype=torch.float64, device=x.device)
    for part in tokens.split(rows, dim=1):
        total += part.to(acc_dtype).sum(1, keepdim=True)
    mean = (total / n).to(acc_dtype)
    total.zero_()
    buf = None
    for part in tokens.split(rows, dim=1):
        if buf is None or buf.shape != part.shape:  # reuse one scratch buffer (no page faults)
            buf = torch.empty(part.shape, dtype=acc_dtype, device=x.device)
        d = torch.sub(part, mean, out=buf)
        total += d.mul_(d).sum(1, keepdim=True)
    var = (total / n).to(acc_dtype)
    return var.transpose(1, 2).reshape(b, c, 1, 1), mean.transpose(1, 2).reshape(b, c, 1, 1)


def instance_norm_gelu_(x: Tensor, eps: float = 1e-5) -> Tensor:
    """In-place ``GELU(InstanceNorm2d(x))`` (no affine, biased variance) on ``[B, C, H, W]``.

    ``x`` must be a temporary owned by the caller (it is overwritten and returned); any memory
    layout. Statistics are computed in float32 (float64 for float64 input) even for half
    inputs. With autograd recording, falls back to the out-of-place functional ops.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return F.gelu(F.instance_norm(x, eps=eps))
    var, mean = channel_stats(x)
    rstd = torch.rsqrt(var + eps)
    if exporting():
        return F.gelu((x - mean.to(x.dtype)) * rstd.to(x.dtype))
    x.sub_(mean.to(x.dtype)).mul_(rstd.to(x.dtype))
    return gelu_(x)


def conv3x3_then_box_down(x: Tensor, weight: Tensor, bias: Tensor, factor: int) -> Tensor:
    """``bilinear_resize(conv3x3(x, pad=1), size=S/factor)`` for ``factor`` in {2, 4}, without
    the full-resolution conv output.

    Bilinear downsampling by exactly 2 or 4 (``align_corners=False``) averages a 2x2 block of
    the conv output (rows ``f*i + f/2 - 1`` and ``f*i + f/2``), so the composition is a single
    4x4 convolution with stride ``factor`` whose kernel is the 3x3 kernel box-filtered 2x2. With
    padding 1 (factor 2) or 0 (factor 4) it touches exactly the zero padding the 3x3 conv did.

    Args:
        x: ``[B, Cin, S, S]``; weight ``[Cout, Cin, 3, 3]``; bias ``[Cout]``.

    Returns:
        ``[B, Cout, S/factor, S/factor]``.
    """
    if factor not in (2, 4):
        raise ValueError(f"factor must be 2 or 4, got {factor}")
    k = sum(F.pad(weight, (dx, 1 - dx, dy, 1 - dy)) for dy in (0, 1) for dx in (0, 1)) * 0.25
    return F.conv2d(x, k, bias, stride=factor, padding=1 if factor == 2 else 0)


def _subpixel_kernels(weight: Tensor) -> dict:
    """3x3 kernel ``[Co, Ci, 3, 3]`` -> the four 2x2 kernels of nearest-2x-upsample + conv.

    After nearest 2x upsampling, output pixel ``(2i+a, 2j+c)`` of a 3x3 conv only sees input
    rows ``i-1+a .. i+a`` and columns ``j-1+c .. j+c``, with the 3x3 taps summed accordingly
    (rows ``{0},{1,2}`` for ``a=0``, ``{0,1},{2}`` for ``a=1``; the same for columns).

    Returns:
        ``{(a, c): [Co, Ci, 2, 2]}``.
    """
    taps = ((0,), (1, 2)), ((0, 1), (2,))
    kernels = {}
    for a in (0, 1):
        rows = torch.stack([weight[:, :, list(t)].sum(2) for t in taps[a]], dim=2)  # [Co, Ci, 2, 3]
        for c in (0, 1):
            kernels[a, c] = torch.stack([rows[..., list(t)].sum(3) for t in taps[c]], dim=3)
    return kernels


def _subpixel_band(x: Tensor, kernels: dict, bias: Tensor, i0: int, i1: int):
    """Sub-pixel outputs of ``conv3x3(nearest_up2(x))`` for input rows ``i0 .. i1-1``.

    Yields ``(a, c, phase)`` with ``phase [B, Co, i1-i0, w]`` = output pixels
    ``(2i+a, 2j+c)``, channels-last.
    """
    h, w = x.shape[-2:]
    # Input rows i0-1 .. i1 and columns -1 .. w, zero outside the image (the conv's padding).
    lo, hi = max(i0 - 1, 0), min(i1 + 1, h)
    band = F.pad(x[:, :, lo:hi], (1, 1, lo - (i0 - 1), (i1 + 1) - hi))
    band = band.contiguous(memory_format=torch.channels_last)
    for (a, c), k in kernels.items():
        yield a, c, F.conv2d(band[:, :, a:a + (i1 - i0) + 1, c:c + w + 1], k, bias)


def nearest_up2_conv3x3(x: Tensor, weight: Tensor, bias: Tensor, band_rows: int = 128) -> Tensor:
    """``conv3x3(nearest_upsample_2x(x), pad=1)`` computed as four 2x2 sub-pixel convolutions.

    Needs 4/9 of the multiply-adds of the direct form and never builds the upsampled input
    (see :func:`_subpixel_kernels`). Work is done in bands of ``band_rows`` input rows.

    Args:
        x: ``[B, Cin, h, w]``; weight ``[Cout, Cin, 3, 3]``; bias ``[Cout]``.

    Returns:
        ``[B, Cout, 2h, 2w]`` (channels-last memory; on the export path, the phases interleaved by
        stacking instead of strided writes).
    """
    b, _, h, w = x.shape
    kernels = _subpixel_kernels(weight)
    if exporting():
        phase = {(a, c): p for a, c, p in _subpixel_band(x, kernels, bias, 0, h)}
        rows = [torch.stack((phase[a, 0], phase[a, 1]), dim=-1).flatten(-2) for a in (0, 1)]  # [B, Co, h, 2w]
        return torch.stack(rows, dim=-2).flatten(-3, -2)
    out = None
    for i0 in range(0, h, band_rows):
        i1 = min(i0 + band_rows, h)
        for a, c, phase in _subpixel_band(x, kernels, bias, i0, i1):
            if out is None:  # dtype of the conv result (autocast may change it)
                out = torch.empty((b, weight.shape[0], 2 * h, 2 * w), dtype=phase.dtype,
                                  device=x.device, memory_format=torch.channels_last)
            out[:, :, 2 * i0 + a:2 * i1:2, c::2] = phase
    return out


def upsample_norm_gelu_conv(x: Tensor, up: nn.Conv2d, out_conv: nn.Conv2d, band_rows: int = 64,
                            eps: float = 1e-5) -> Tensor:
    """``out_conv(GELU(InstanceNorm(up(nearest_up2(x)))))`` without the full-resolution tensor.

    The full-resolution activation (``[B, C, 2h, 2w]``, 512 MB at 1024^2) is the largest
    tensor of the network. Pass 1 runs the sub-pixel convolution band by band and merges exact
    per-band statistics (Chan et al.'s parallel variance, float64; float32 on MPS); pass 2 recomputes each band
    with a one-row halo, normalises it, applies GELU and the final 3x3 conv (zero padding at
    the image border, exactly like the full-size computation).

    Args:
        x: ``[B, C, h, w]``; up: 3x3 conv ``C -> C``; out_conv: 3x3 conv ``C -> Co``.

    Returns:
        ``[B, Co, 2h, 2w]``.
    """
    b, _, h, w = x.shape
    c_out = up.weight.shape[0]
    kernels = _subpixel_kernels(up.weight)

    acc = accumulator_dtype(x.device)
    count, mean, m2 = 0, None, None  # pass 1: statistics
    for i0 in range(0, h, band_rows):
        i1 = min(i0 + band_rows, h)
        for _, _, phase in _subpixel_band(x, kernels, up.bias, i0, i1):
            var_b, mean_b = channel_stats(phase)
            n_b = phase.shape[2] * phase.shape[3]
            var_b, mean_b = var_b.to(acc), mean_b.to(acc)
            if mean is None:
                count, mean, m2 = n_b, mean_b, var_b * n_b
                continue
            delta, total = mean_b - mean, count + n_b
            mean = mean + delta * (n_b / total)
            m2 = m2 + var_b * n_b + delta * delta * (count * n_b / total)
            count = total
    stat_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    rstd = torch.rsqrt(m2 / count + eps).to(stat_dtype)
    mean = mean.to(stat_dtype)

    result = None  # pass 2: recompute with a halo, normalise, GELU, final conv
    for i0 in range(0, h, band_rows):
        i1 = min(i0 + band_rows, h)
        lo, hi = max(i0 - 1, 0), min(i1 + 1, h)
        u = None
        for a, c, phase in _subpixel_band(x, kernels, up.bias, lo, hi):
            if u is None:
                u = torch.empty((b, c_out, 2 * (hi - lo), 2 * w), dtype=phase.dtype, device=x.device,
                                memory_format=torch.channels_last)
            u[:, :, a::2, c::2] = phase
        u.sub_(mean.to(u.dtype)).mul_(rstd.to(u.dtype))
        u = gelu_(u)
        # Full-resolution rows 2*lo .. 2*hi-1; padding=1 is exact at the image border and the
        # rows next to inner band edges (wrongly zero-padded) are cropped away.
        y = out_conv(u)[:, :, 2 * (i0 - lo):2 * (i1 - lo)]
        if result is None:
            result = torch.empty((b, y.shape[1], 2 * h, 2 * w), dtype=y.dtype, device=x.device)
        result[:, :, 2 * i0:2 * i1] = y
    return result
