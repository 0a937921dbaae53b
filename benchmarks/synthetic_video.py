"""Synthetic video with ground-truth alpha and a flickering per-frame "model", for the temporal benchmark.

:func:`make_clip` draws (seeded, no global RNG use) a clip in segments of ``frames_per_segment`` frames
(speeds in pixels per frame at the clip's size; :data:`SEGMENTS` names them):

* ``still``: subject and camera do not move (only sensor noise changes);
* ``pan3`` / ``pan8``: the camera pans by 3 / 8 px per frame (background and subject move together);
* ``subject4``: the camera is still, the subject moves 4 px per frame over the background, its hair
  swaying (non-rigid motion, occlusion and disocclusion of the background);
* ``cut``: a cut to another shot (another background, the subject elsewhere and smaller), in which the
  subject then moves 2 px per frame;
* ``track3`` / ``track8``: a tracking shot: the camera follows the subject, which walks 3 / 8 px per frame
  through the scene, so the subject stays put in the picture while the background slides behind it;
* ``counter``: the subject walks 4 px per frame one way while the camera pans 3 px per frame the other
  (7 px per frame in the picture, the background 3 px the other way).

:data:`SHOTS` names the clips the benchmark runs, each a set of segments and a look (``make_clip``'s
``noise``, ``background`` and ``subject``): ``classic`` (the first five segments above, sensor noise,
textured subject and background: the clip of the 0.3 benchmark, unchanged), ``tracking`` (still,
``track3``, ``track8``, ``counter``, ``cut``: clean frames, no sensor noise), ``plain`` (a subject with
little texture of its own, a plain-coloured cloth, crossing a still textured background: still,
``subject4``, ``counter``, ``cut``, clean) and ``defocused`` (the tracking segments over a smooth,
defocused background, clean).

The subject is a soft-edged head (ellipse) with ~40 thin, semi-transparent hair strands (0.6-2 px wide,
opacity 0.35-0.95) over a textured background; its own, fainter texture (skin / cloth) moves with it. Frames are
``alpha * F + (1 - alpha) * B`` plus a little sensor noise (none in clean clips). :func:`simulate_model`
makes a per-frame prediction that errs the way a per-frame network does: a stable part (the truth
coarsened as a 1024-wide model sees it) and a part that changes every frame, concentrated where the truth
is uncertain (edges, strands), and a few faint false-positive blobs in the background: it flickers. With
``edge_jitter`` the silhouette itself wobbles too, as a network's does (the new shots: that, and no background
blobs): the edge band moves in and out by a smooth random displacement (up to ``edge_jitter`` px) from frame to
frame, so the flicker lives where the pixels mix subject and background.

:func:`temporal_metrics` gives, for a prediction against the truth and per segment: dtSSD (RMS over
pixels of the temporal-gradient error ``(p_t - p_{t-1}) - (g_t - g_{t-1})``, x 100, averaged over frame
pairs), per-frame MSE (x 1000) and the MSE on moving edges (x 1000: pixels whose true alpha changed by
more than 0.02 from the previous frame).
"""
from __future__ import annotations

import math

import torch

from .synthetic_matting import _smooth_noise, coarsen_alpha, gaussian_blur

__all__ = ["SEGMENTS", "MOVING_SEGMENTS", "SHOTS", "make_clip", "make_shot", "simulate_model", "stable_alpha",
           "temporal_metrics"]

SEGMENTS = ("still", "pan3", "pan8", "subject4", "cut")
MOVING_SEGMENTS = ("pan3", "pan8", "subject4", "cut", "track3", "track8", "counter")
# per segment: (camera px/frame (+ = the view moves right, the scene left), subject px/frame (x, y) in the
# scene, hair sway amplitude). pan3 and pan8 go opposite ways, so the subject stays in view.
_MOTION = {"still": (0, (0, 0), 0.0), "pan3": (-3, (0, 0), 0.0), "pan8": (8, (0, 0), 0.0),
           "subject4": (0, (4, 0), 0.12), "cut": (0, (2, -1), 0.05),
           "track3": (3, (3, 0), 0.05), "track8": (8, (8, 0), 0.05), "counter": (-3, (4, 0), 0.05)}

# the new shots' model: its flicker lives in the edge band (the silhouette wobbles), no background blobs,
# so that the whole frame's dtSSD is the edge's
_EDGE_MODEL = {"edge_jitter": 1.0, "blobs": 0.0}
#: The benchmark's clips: name -> make_clip keywords (segments and look) and simulate_model keywords.
SHOTS = {
    "classic": ({"segments": SEGMENTS}, {}),
    "tracking": ({"segments": ("still", "track3", "track8", "counter", "cut"), "noise": 0.0}, _EDGE_MODEL),
    "plain": ({"segments": ("still", "subject4", "counter", "cut"), "noise": 0.0, "subject": "plain"},
              _EDGE_MODEL),
    "defocused": ({"segments": ("still", "track3", "track8", "counter", "cut"), "noise": 0.0,
                   "background": "defocused"}, _EDGE_MODEL),
}


def _texture(g: torch.Generator, h: int, w: int) -> torch.Tensor:
    """[3, h, w] textured background in 0..1 (coarse colour blobs + fine detail + stripes)."""
    coarse = _smooth_noise(g, 3, h, w, cells=max(6, w // 80))
    fine = _smooth_noise(g, 1, h, w, cells=max(8, w // 12))
    stripes = torch.sin(torch.linspace(0, w / 12 * math.pi, w)).view(1, 1, w) * 0.08
    return (0.45 + 0.25 * coarse + 0.12 * fine + stripes).clamp(0, 1)


def _subject_alpha(h: int, w: int, cx: float, cy: float, radius: float, strands: torch.Tensor,
                   sway: float) -> torch.Tensor:
    """[h, w] alpha: a soft-edged ellipse at (cx, cy) with hair strands (angle, length, width, opacity, phase),
    drawn inside the box the longest strand can reach (zero outside it)."""
    alpha = torch.zeros(h, w)
    reach = radius * (0.9 + float(strands[:, 1].max()) + 0.1) + 4
    y0, y1 = max(0, int(cy - reach)), min(h, int(cy + reach) + 2)
    x0, x1 = max(0, int(cx - reach)), min(w, int(cx + reach) + 2)
    if y1 <= y0 or x1 <= x0:
        return alpha
    yy = torch.arange(y0, y1, dtype=torch.float32).view(-1, 1)
    xx = torch.arange(x0, x1, dtype=torch.float32).view(1, -1)
    dx, dy = xx - cx, (yy - cy) * 1.25
    r = torch.sqrt(dx * dx + dy * dy)
    box = torch.sigmoid((radius - r) / 1.2)
    theta = torch.atan2(dy, dx)
    for angle, length, width, opacity, phase in strands.tolist():
        wobble = 0.08 * torch.sin(r / radius * 6.0 + phase) + sway * (r / radius - 1.0).clamp(min=0)
        d_ang = torch.remainder(theta - angle - wobble + math.pi, 2 * math.pi) - math.pi
        dist = (d_ang * r).abs()  # arc distance to the strand's axis
        along = ((r - radius * 0.9) / (radius * length)).clamp(0, 1.0)
        inside = ((r > radius * 0.9) & (r < radius * (0.9 + length))).float()
        coverage = (width / 2 + 0.5 - dist).clamp(0, 1) * opacity * (1 - along) * inside
        box = torch.maximum(box, coverage)
    alpha[y0:y1, x0:x1] = box
    return alpha


def _strands(g: torch.Generator, k: int = 40) -> torch.Tensor:
    return torch.stack([
        -math.pi / 2 + (torch.rand(k, generator=g) - 0.5) * 2.4,  # mostly upwards
        0.25 + 0.5 * torch.rand(k, generator=g),                  # length, in radii
        0.6 + 1.4 * torch.rand(k, generator=g),                   # width, px
        0.35 + 0.6 * torch.rand(k, generator=g),                  # opacity
        2 * math.pi * torch.rand(k, generator=g),                 # phase
    ], dim=1)


def make_clip(height: int = 360, width: int = 640, frames_per_segment: int = 24, seed: int = 0,
              segments: tuple = SEGMENTS, noise: float = 0.01, background: str = "textured",
              subject: str = "textured") -> dict:
    """A synthetic clip (see the module docstring). ``segments``: names from ``_MOTION`` in order (a ``cut``
    only last); ``noise``: the sensor noise's standard deviation (0: clean frames); ``background``:
    ``"textured"`` or ``"defocused"`` (the same texture blurred smooth, sigma 6 px at 360 rows);
    ``subject``: ``"textured"`` (skin / cloth) or ``"plain"`` (one colour, faint shading). Returns
    ``frames`` [T,3,H,W] and ``alpha`` [T,H,W] float32 0..1, ``segment``: a list of T segment names, and
    ``fps`` (24). The defaults give the ``classic`` clip."""
    if any(name not in _MOTION for name in segments) or "cut" in segments[:-1]:
        raise ValueError(f"segments must be names from {tuple(_MOTION)}, a 'cut' only last; got {segments!r}")
    if background not in ("textured", "defocused") or subject not in ("textured", "plain"):
        raise ValueError(f"background: textured|defocused, subject: textured|plain; got {background!r}, {subject!r}")
    g = torch.Generator().manual_seed(seed)
    n = frames_per_segment
    cams = [0]  # the camera's position (px) after each segment of the first shot
    for name in segments:
        if name != "cut":
            cams.append(cams[-1] + _MOTION[name][0] * n)
    cam_lo, span = min(cams), max(cams) - min(cams)
    shots = []
    for radius_frac, cx_frac, cy_frac in ((0.2, 0.35, 0.62), (0.14, 0.3, 0.6)):  # the first shot; the one after the cut
        radius = height * radius_frac
        pad = int(math.ceil(radius * 2.5))
        bg = _texture(g, height, width + span + 8)
        if background == "defocused":
            bg = gaussian_blur(bg[None], 6.0 * height / 360)[0]
        fg = (torch.tensor([0.75, 0.55, 0.35]).view(3, 1, 1) + 0.15 * _smooth_noise(g, 3, 2 * pad, 2 * pad, cells=5)
              + 0.06 * _smooth_noise(g, 1, 2 * pad, 2 * pad, cells=max(8, pad // 3))).clamp(0, 1)
        if subject == "plain":  # a plain-coloured cloth: one colour, a faint broad shading (-> +-1.5 %)
            fg = (torch.tensor([0.30, 0.42, 0.62]).view(3, 1, 1) + 0.015 * fg.mean(dim=0, keepdim=True).sub(0.55)
                  .div(0.2).clamp(-1, 1)).expand(3, 2 * pad, 2 * pad).clone()
        shots.append({"bg": bg, "fg": fg, "pad": pad, "radius": radius, "strands": _strands(g),
                      "x": round(width * cx_frac), "y": round(height * cy_frac)})
    frames, alphas, segment = [], [], []
    shot, cam = shots[0], 0
    x, y = shot["x"], shot["y"]  # the subject's position in the scene (px, integers: exact texture shifts)
    for name in segments:
        pan, (vx, vy), sway_amp = _MOTION[name]
        if name == "cut":
            shot, cam = shots[1], 0
            x, y = shot["x"], shot["y"]
        for i in range(n):
            if i or name != "cut":  # the cut's first frame shows the new shot as it starts
                cam += pan
                x, y = x + vx, y + vy
            cx, cy = x - cam, y  # in the image
            a = _subject_alpha(height, width, cx, cy, shot["radius"], shot["strands"], sway_amp * math.sin(i * 0.7))
            off = cam - cam_lo + 4
            bg = shot["bg"][:, :, off:off + width]
            fg = shot["fg"].mean(dim=(1, 2), keepdim=True).expand(3, height, width).clone()
            p = shot["pad"]
            y0, x0 = cy - p, cx - p
            ys, xs, ye, xe = max(0, y0), max(0, x0), min(height, y0 + 2 * p), min(width, x0 + 2 * p)
            if ye > ys and xe > xs:  # the subject's own texture moves with it
                fg[:, ys:ye, xs:xe] = shot["fg"][:, ys - y0:ye - y0, xs - x0:xe - x0]
            img = a * fg + (1 - a) * bg
            img = img + noise * torch.randn(img.shape, generator=g)
            frames.append(img.clamp(0, 1))
            alphas.append(a)
            segment.append(name)
    return {"frames": torch.stack(frames), "alpha": torch.stack(alphas), "segment": segment, "fps": 24}


def stable_alpha(alpha: torch.Tensor, model_size: int = 1024, coarsen: float = 2.0) -> torch.Tensor:
    """The part of :func:`simulate_model`'s prediction that does not flicker: the truth ``alpha`` [T,H,W] as a
    network that sees the clip's longest side at ``max(H, W) / coarsen`` px (at most ``model_size``) outputs
    it. Its own temporal error is the flicker-free floor no stabiliser removes. Returns [T,H,W] 0..1."""
    t, h, w = alpha.shape
    return coarsen_alpha(alpha, model_size=min(model_size, round(max(h, w) / coarsen)), blur_sigma=0.8)


def simulate_model(alpha: torch.Tensor, seed: int = 1, flicker: float = 0.22, model_size: int = 1024,
                   edge_jitter: float = 0.0, blobs: float = 1.2, coarsen: float = 2.0) -> torch.Tensor:
    """A flickering per-frame prediction of ``alpha`` [T,H,W]: the truth as a ``model_size`` network sees it
    (stable) plus, per frame, smooth random error where the truth is uncertain and a few faint
    false-positive blobs (``blobs``: their gain; 0: none); with ``edge_jitter`` > 0 the edge band also moves in
    and out by a smooth random displacement of up to that many pixels (first order: displacement x the stable
    alpha's gradient magnitude), new every frame. ``coarsen``: the clip's longest side over the side the model
    sees (2: a 1024 network on a 2048-wide clip; its stable error is what no stabiliser removes, see
    ``bench_temporal``'s flicker-free floor). Returns [T,H,W] float32 0..1."""
    g = torch.Generator().manual_seed(seed)
    t, h, w = alpha.shape
    stable = stable_alpha(alpha, model_size, coarsen)
    unsure = gaussian_blur((4 * stable * (1 - stable)).clamp(0, 1)[:, None], 2.0)[:, 0].clamp(0, 1)
    if edge_jitter > 0:
        gy, gx = torch.gradient(stable, dim=(1, 2))
        slope = torch.sqrt(gx * gx + gy * gy)
    out = torch.empty_like(alpha)
    for i in range(t):
        noise = _smooth_noise(g, 1, h, w, cells=max(6, w // 20))[0]
        spots = (_smooth_noise(g, 1, h, w, cells=8)[0] - 0.6).clamp(min=0) * blobs * (stable[i] < 0.02)
        frame = stable[i] + flicker * noise * unsure[i] + spots
        if edge_jitter > 0:
            frame = frame + edge_jitter * _smooth_noise(g, 1, h, w, cells=max(6, w // 40))[0] * slope[i]
        out[i] = frame.clamp(0, 1)
    return out


def make_shot(name: str, height: int = 360, width: int = 640, frames_per_segment: int = 24, seed: int = 0) -> tuple:
    """One of :data:`SHOTS`: ``(clip, prediction, stable)``: :func:`make_clip`'s dict, :func:`simulate_model`'s
    flickering alpha for it (model seed ``seed + 100``) and that model's stable part (:func:`stable_alpha`)."""
    clip_kw, model_kw = SHOTS[name]
    clip = make_clip(height, width, frames_per_segment, seed=seed, **clip_kw)
    stable = stable_alpha(clip["alpha"], coarsen=model_kw.get("coarsen", 2.0))
    return clip, simulate_model(clip["alpha"], seed=seed + 100, **model_kw), stable


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
