"""Synthetic video with ground-truth alpha and a flickering per-frame "model", for the temporal benchmark.

:func:`make_clip` draws (seeded, no global RNG use) a clip in four segments:

* ``still``: subject and camera do not move (only sensor noise changes);
* ``pan``: the camera pans over the textured background, the subject drifts with it;
* ``walk``: the camera is still, the subject moves slowly across the frame;
* ``fast``: the subject moves fast (several pixels per frame) and sways its hair.

The subject is a soft-edged head (ellipse) with ~40 thin hair-like strands of partial coverage; the
background a multi-scale texture that the camera pans over. Frames are ``alpha * F + (1 - alpha) * B``
plus a little sensor noise. :func:`simulate_model` makes a per-frame prediction that errs the way a
per-frame network does: a stable part (the truth coarsened as a 1024-wide model sees it) and a part
that changes every frame, concentrated where the truth is uncertain (edges, strands) and on a few
false-positive blobs in the background: it flickers.

:func:`temporal_metrics` gives, for a prediction against the truth and per segment: dtSSD (RMS over
pixels of the temporal-gradient error ``(p_t - p_{t-1}) - (g_t - g_{t-1})``, x 100, averaged over frame
pairs), per-frame MSE (x 1000) and the MSE on moving edges (x 1000: pixels whose true alpha changed by
more than 0.02 from the previous frame).
"""
from __future__ import annotations

import math

import torch

from .synthetic_matting import _smooth_noise, coarsen_alpha, gaussian_blur

__all__ = ["SEGMENTS", "make_clip", "simulate_model", "temporal_metrics"]

SEGMENTS = ("still", "pan", "walk", "fast")


def _texture(g: torch.Generator, h: int, w: int) -> torch.Tensor:
    """[3, h, w] textured background in 0..1 (coarse colour blobs + fine detail)."""
    coarse = _smooth_noise(g, 3, h, w, cells=6)
    fine = _smooth_noise(g, 1, h, w, cells=max(8, w // 12))
    stripes = torch.sin(torch.linspace(0, 40 * math.pi, w)).view(1, 1, w) * 0.08
    return (0.45 + 0.25 * coarse + 0.12 * fine + stripes).clamp(0, 1)


def _subject_alpha(h: int, w: int, cx: float, cy: float, radius: float, strands: torch.Tensor,
                   sway: float) -> torch.Tensor:
    """[h, w] alpha: a soft-edged ellipse at (cx, cy) with hair strands (angle, length, width, opacity, phase)."""
    yy = torch.arange(h, dtype=torch.float32).view(h, 1)
    xx = torch.arange(w, dtype=torch.float32).view(1, w)
    dx, dy = xx - cx, (yy - cy) * 1.25
    r = torch.sqrt(dx * dx + dy * dy)
    head = torch.sigmoid((radius - r) / 1.2)
    theta = torch.atan2(dy, dx)
    alpha = head
    for angle, length, width, opacity, phase in strands.tolist():
        wobble = 0.08 * torch.sin(r / radius * 6.0 + phase) + sway * (r / radius - 1.0).clamp(min=0)
        d_ang = torch.remainder(theta - angle - wobble + math.pi, 2 * math.pi) - math.pi
        dist = (d_ang * r).abs()  # arc distance to the strand's axis
        along = ((r - radius * 0.9) / (radius * length)).clamp(0, 1.0)
        inside = ((r > radius * 0.9) & (r < radius * (0.9 + length))).float()
        coverage = (width / 2 + 0.5 - dist).clamp(0, 1) * opacity * (1 - along) * inside
        alpha = torch.maximum(alpha, coverage)
    return alpha


def make_clip(height: int = 270, width: int = 480, frames_per_segment: int = 24, seed: int = 0) -> dict:
    """A synthetic clip. Returns ``frames`` [T,3,H,W] and ``alpha`` [T,H,W] float32 0..1, ``segment``: a list
    of T names from :data:`SEGMENTS`, and ``fps`` (24)."""
    g = torch.Generator().manual_seed(seed)
    n = frames_per_segment
    pan_total = int(width * 0.5)
    bg_big = _texture(g, height, width + pan_total + 8)
    fg_tex = (torch.tensor([0.75, 0.55, 0.35]).view(3, 1, 1) + 0.15 * _smooth_noise(g, 3, height, width, cells=5)).clamp(0, 1)
    k = 40
    strands = torch.stack([
        -math.pi / 2 + (torch.rand(k, generator=g) - 0.5) * 2.4,  # mostly upwards
        0.25 + 0.5 * torch.rand(k, generator=g),                  # length, in radii
        0.6 + 1.4 * torch.rand(k, generator=g),                   # width, px
        0.35 + 0.6 * torch.rand(k, generator=g),                  # opacity
        2 * math.pi * torch.rand(k, generator=g),                 # phase
    ], dim=1)
    radius = height * 0.2
    frames, alphas, segment = [], [], []
    cx, cy, cam = width * 0.35, height * 0.62, 0.0
    for name in SEGMENTS:
        for i in range(n):
            sway = 0.0
            if name == "pan":
                cam += pan_total / n
                cx += 0.3
            elif name == "walk":
                cx += width * 0.15 / n
            elif name == "fast":
                cx += (width * 0.35 / n) * (1 if i < n // 2 else -1)
                cy += 2.0 * math.sin(i * 0.9)
                sway = 0.15 * math.sin(i * 0.7)
            a = _subject_alpha(height, width, cx, cy, radius, strands, sway)
            off = int(round(cam))
            bg = bg_big[:, :, off:off + width]
            img = a * fg_tex + (1 - a) * bg
            img = img + 0.01 * torch.randn(img.shape, generator=g)
            frames.append(img.clamp(0, 1))
            alphas.append(a)
            segment.append(name)
    return {"frames": torch.stack(frames), "alpha": torch.stack(alphas), "segment": segment, "fps": 24}


def simulate_model(alpha: torch.Tensor, seed: int = 1, flicker: float = 0.22, model_size: int = 1024) -> torch.Tensor:
    """A flickering per-frame prediction of ``alpha`` [T,H,W]: the truth as a ``model_size`` network sees it
    (stable) plus, per frame, smooth random error where the truth is uncertain and a few faint
    false-positive blobs. Returns [T,H,W] float32 0..1."""
    g = torch.Generator().manual_seed(seed)
    t, h, w = alpha.shape
    stable = coarsen_alpha(alpha, model_size=min(model_size, max(h, w) // 2), blur_sigma=0.8)
    unsure = gaussian_blur((4 * stable * (1 - stable)).clamp(0, 1)[:, None], 2.0)[:, 0].clamp(0, 1)
    out = torch.empty_like(alpha)
    for i in range(t):
        noise = _smooth_noise(g, 1, h, w, cells=max(6, w // 20))[0]
        blobs = (_smooth_noise(g, 1, h, w, cells=8)[0] - 0.6).clamp(min=0) * 1.2 * (stable[i] < 0.02)
        out[i] = (stable[i] + flicker * noise * unsure[i] + blobs).clamp(0, 1)
    return out


def temporal_metrics(pred: torch.Tensor, gt: torch.Tensor, segment: list) -> dict:
    """``{segment name or "clip": {"dtssd", "mse", "moving_edge_mse", "moving_px"}}`` (see the module docstring).
    Frame 0 has no temporal pair: it counts in MSE only."""
    dp = pred[1:] - pred[:-1]
    dg = gt[1:] - gt[:-1]
    dt = ((dp - dg) ** 2).mean(dim=(1, 2)).sqrt() * 100            # [T-1], pair (t-1, t) at index t-1
    mse = ((pred - gt) ** 2).mean(dim=(1, 2)) * 1000                 # [T]
    moving = dg.abs() > 0.02                                         # [T-1]
    err = (pred[1:] - gt[1:]) ** 2
    out = {}
    for name in list(dict.fromkeys(segment)) + ["clip"]:
        idx = [i for i, s in enumerate(segment) if name == "clip" or s == name]
        pairs = [i - 1 for i in idx if i > 0]
        m = moving[pairs]
        px = int(m.sum())
        out[name] = {
            "dtssd": float(dt[pairs].mean()) if pairs else float("nan"),
            "mse": float(mse[idx].mean()),
            "moving_edge_mse": float(err[pairs][m].mean() * 1000) if px else float("nan"),
            "moving_px": px,
        }
    return out
