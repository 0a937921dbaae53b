"""Steady video mattes: damp the frame-to-frame flicker of per-frame alpha, on still and on moving shots.

A per-frame model is unsure in the same places from frame to frame (hair, motion blur, semi-transparent
edges), and there its answer wobbles although the subject does not change: the matte flickers. Plain
exponential smoothing of the alpha damps the flicker but smears and lags wherever the subject or the camera
moves. RobustVideoMatting and MatAnyone carry state inside their networks; with BEN2's per-frame weights
the state lives outside, and this module follows the picture's motion instead:

* **motion**: dense optical flow between consecutive frames (OpenCV's DIS flow, medium preset, on the
  grey frames box-averaged to a longest side of about ``analysis_size``, the new one shifted to the old
  one's mean brightness: a fade is no motion), in both directions. The previous steadied alpha, and the
  colours it was steadied with (carried exactly like the alpha), are warped along the flow at full size;
* **alpha belongs to the subject**: a per-frame model's flicker lives in the subject's edge band (hair,
  the silhouette), whose pixels mix the subject with a background that may move otherwise (a tracking
  shot: the subject stays put while the background slides; a subject walking against a pan). Neither the
  band's flow nor its colours say where its alpha went, so within ``subject_reach`` (analysis pixels) of
  the subject's sure foreground (the new alpha >= ``sure_foreground``, 3 analysis pixels in from its rim,
  where the flow is the subject's own) the carried state moves with the subject: its motion is spread
  from the inside over the band by normalised convolution. Three candidates are spread: none, the
  picture's flow, and the flow of the frames with their alpha multiplied in, which follows the outline (a
  plain-coloured subject has no texture of its own to follow). The one whose carried colours match the
  subject's inside best wins; a tie, as on a plain subject, goes to the outline. The trust in the band
  is the subject's: how well the carried colours match inside, spread like the motion, and the carried
  alpha may not differ from the new one by more than flicker does (``alpha_low`` .. ``alpha_high``). A
  band pixel whose own motion (below) is trusted at least as much keeps it (a rigid pan: subject and
  background move together, and the per-pixel flow is exact where the spread one resamples);
* **trust in the warp** elsewhere, per pixel: the two flows must agree (forward-backward consistency; a
  pixel whose flow leaves the frame has none, nor have its neighbours), and the carried colours must match
  the new frame at full resolution (absolute difference over RGB less each channel's median difference,
  averaged over 3 x 3 pixels, the largest within ``window`` pixels, less the frame's noise floor: its
  median, at most half of ``motion_high``). Below ``motion_low`` the warp is trusted fully, above
  ``motion_high`` not at all. Because the colours are carried with the alpha, a carried matte that has
  drifted from the picture (a flow a little off, frame after frame) shows as a mismatch and is let go.
  Where the carried state fits the new frame as well *unmoved*, it stays where it is (flow is guesswork
  on textureless areas; a still part keeps its sharpness). Occlusion, disocclusion, fast or non-rigid
  motion the flow misses and motion blur fail these checks, and there the new frame's alpha is taken as
  it is: no lag, no ghost edges, no smeared hair;
* **scene cuts**: when more than ``cut_fraction`` of the pixels fail the colour check (before the
  subject's judgement), the shot has changed and the state starts again from the new frame;
* **confidence**: only alpha the model is unsure of is carried. A pixel whose new alpha is sure
  (``<= sure_background`` or ``>= sure_foreground``) is passed through unchanged; between the two the
  weight rises over ``confidence_ramp`` to full.

For each frame ``t`` (causal mode): ``out[t] = alpha[t] + w[t] * (warp(out[t-1]) - alpha[t])`` with
``w = strength * trust * unsure`` in 0..strength, and ``out[0] = alpha[0]``. Its state is the previous
output, its colours and the previous frame, so memory does not grow with the clip, and
:class:`AlphaStabilizer` fed chunk after chunk gives bit-identical results for any chunking, equal to
:func:`stabilize_alpha` on the whole clip.

**Bidirectional** mode (offline) adds the same recursion run backwards in time (the future frames warped
back) and returns the mean of the two passes. The backward pass runs over blocks of ``lookahead``
frames, each with ``lookahead`` frames of future behind it, so a frame comes out ``lookahead`` to
``2 * lookahead - 1`` frames after it went in and memory holds at most ``2 * lookahead`` frames (their
alpha and forward pass as float16, their colours as uint8: about 14 MB a 1080p frame; their two motions
to the next frame at the analysis size, 2 MB more), whatever the length of the clip. (The backward
weights fall as ``strength ** k``, 0.85 ** 16 = 7 %, so a longer look-ahead changes little.)

``flow="none"`` skips the optical flow (the frames are compared where they are: flicker is damped only
where the picture is still); ``"auto"`` (the default) uses OpenCV when it is installed and otherwise
falls back to ``"none"`` with a warning in the log; ``"dis"`` requires OpenCV
(``pip install opencv-python-headless``). Everything except the flow itself is torch on the inputs'
device; the cost is measured in ``benchmarks/bench_temporal.py``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .guided_filter import box_mean

__all__ = ["StabilizerOptions", "AlphaStabilizer", "make_stabilizer", "stabilize_alpha", "TemporalDependencyError",
           "MODES", "FLOWS"]

log = logging.getLogger("ben_core")

MODES = ("causal", "bidirectional")
FLOWS = ("auto", "dis", "none")


class TemporalDependencyError(ImportError):
    """Motion-compensated stabilisation was asked for and OpenCV is not installed."""


def _import_cv2():
    try:
        import cv2
    except ImportError as e:
        raise TemporalDependencyError(
            "motion-compensated mattes (flow='dis') need OpenCV's optical flow: install it with "
            "`pip install opencv-python-headless` (or opencv-python), or pass flow='none' to steady only "
            "where the picture is still") from e
    return cv2


@dataclass(frozen=True)
class StabilizerOptions:
    """Settings of :class:`AlphaStabilizer` (defaults chosen on ``benchmarks/bench_temporal.py``, seeds 0-2).

    Attributes:
        strength: the largest weight of the previous (warped) output (0 = off, < 1), reached where the warp
            is trusted and the model is unsure. 0.85 keeps ~15 % of each new frame.
        motion_low, motion_high: colour mismatch (0..1, see the module docstring) between the new frame and
            the carried colours warped into it, below which the warp is trusted fully and above which not
            at all.
        window: box size (full-resolution pixels, odd) over which the largest mismatch counts.
        analysis_size: about the longest side the optical flow is computed at (frames box-averaged over
            k x k pixels, k = ceil(longest side / analysis_size)); the flow is applied at full size.
        flow: ``"auto"``, ``"dis"`` (OpenCV DIS optical flow) or ``"none"`` (no motion compensation).
        flow_tolerance: forward-backward flow disagreement (pixels at the analysis size, plus 10 % of
            the motion) up to which the flow is trusted fully; 3 x this and beyond, not at all.
        cut_fraction: the share of pixels whose warp fails above which a frame starts a new shot.
        lookahead: bidirectional mode: frames of future each backward pass sees at least (and the block
            length); memory holds at most twice this many frames.
        sure_background, sure_foreground: new alpha at or beyond these passes through unchanged.
        confidence_ramp: alpha distance beyond the sure thresholds over which the weight rises to full.
        subject_reach: pixels at the analysis size over which the subject's motion and trust are spread
            from its sure inside across its edge band (0: no subject motion, the 0.3 behaviour).
        alpha_low, alpha_high: disagreement between the carried alpha (moved with the subject) and the new
            one (3 x 3 mean) below which the subject's trust holds fully and above which not at all.
    """

    strength: float = 0.85
    motion_low: float = 0.005
    motion_high: float = 0.025
    window: int = 3
    analysis_size: int = 384
    flow: str = "auto"
    flow_tolerance: float = 0.5
    cut_fraction: float = 0.5
    lookahead: int = 16
    sure_background: float = 0.02
    sure_foreground: float = 0.98
    confidence_ramp: float = 0.05
    subject_reach: int = 24
    alpha_low: float = 0.4
    alpha_high: float = 0.8

    def check(self) -> "StabilizerOptions":
        """Return self, or raise ValueError naming the bad setting and its range."""
        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        if not 0.0 <= self.strength < 1.0:
            raise ValueError(f"strength must be in [0, 1) (0 = off), got {self.strength!r}")
        if not 0.0 <= self.motion_low < self.motion_high:
            raise ValueError(f"need 0 <= motion_low < motion_high (colour mismatch in 0..1), got {self.motion_low!r}, "
                             f"{self.motion_high!r}")
        if not is_int(self.window) or self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"window must be an odd int >= 1, got {self.window!r}")
        if not is_int(self.analysis_size) or self.analysis_size < 16:
            raise ValueError(f"analysis_size must be an int >= 16, got {self.analysis_size!r}")
        if self.flow not in FLOWS:
            raise ValueError(f"flow must be one of {FLOWS}, got {self.flow!r}")
        if not self.flow_tolerance > 0.0:
            raise ValueError(f"flow_tolerance must be > 0 (pixels), got {self.flow_tolerance!r}")
        if not 0.0 < self.cut_fraction <= 1.0:
            raise ValueError(f"cut_fraction must be in (0, 1], got {self.cut_fraction!r}")
        if not is_int(self.lookahead) or self.lookahead < 1:
            raise ValueError(f"lookahead must be an int >= 1 (frames), got {self.lookahead!r}")
        if not 0.0 <= self.sure_background < self.sure_foreground <= 1.0:
            raise ValueError(f"need 0 <= sure_background < sure_foreground <= 1, got {self.sure_background!r}, "
                             f"{self.sure_foreground!r}")
        if not self.confidence_ramp > 0.0:
            raise ValueError(f"confidence_ramp must be > 0, got {self.confidence_ramp!r}")
        if not is_int(self.subject_reach) or self.subject_reach < 0:
            raise ValueError("subject_reach must be an int >= 0 (pixels at the analysis size), "
                             f"got {self.subject_reach!r}")
        if not 0.0 <= self.alpha_low < self.alpha_high:
            raise ValueError(f"need 0 <= alpha_low < alpha_high (alpha disagreement in 0..1), got {self.alpha_low!r}, "
                             f"{self.alpha_high!r}")
        return self


def _ramp_down(x: torch.Tensor, lo, hi) -> torch.Tensor:
    """1 at or below ``lo``, 0 at or above ``hi``, linear between (``lo``/``hi`` numbers or tensors); in place."""
    return x.neg_().add_(hi).div_(hi - lo).clamp_(0.0, 1.0)


def _warp(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: ``out[..., y, x] = img[..., y + flow[1, y, x], x + flow[0, y, x]]`` (bilinear; the border
    repeated outside). ``img`` ``[C, H, W]``, ``flow`` ``[2, H, W]`` in pixels -> ``[C, H, W]``."""
    c, h, w = img.shape
    ys = torch.arange(h, dtype=flow.dtype, device=flow.device).view(h, 1)
    xs = torch.arange(w, dtype=flow.dtype, device=flow.device).view(1, w)
    # grid_sample's coordinates (align_corners=False): -1 and 1 are the outer edges of the border pixels
    gx = (flow[0] + xs).mul_(2.0 / w).add_(1.0 / w - 1.0)
    gy = (flow[1] + ys).mul_(2.0 / h).add_(1.0 / h - 1.0)
    grid = torch.stack((gx, gy), dim=-1)[None]
    return F.grid_sample(img[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]


def _lands_inside(flow: torch.Tensor) -> torch.Tensor:
    """``[h, w]`` float: 1 where ``x + flow`` lies inside the frame, else 0 (``flow`` ``[2, h, w]``)."""
    _, h, w = flow.shape
    ys = torch.arange(h, dtype=flow.dtype, device=flow.device).view(h, 1)
    xs = torch.arange(w, dtype=flow.dtype, device=flow.device).view(1, w)
    x, y = flow[0] + xs, flow[1] + ys
    return ((x > -0.5) & (x < w - 0.5) & (y > -0.5) & (y < h - 0.5)).to(flow.dtype)


# a plain subject's inside matches every candidate motion as well: its outline's motion wins such a tie
# unless another candidate matches better by this share of motion_low
_TIE_MARGIN = 0.5


def _box_mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """``[h, w]`` -> ``[h, w]``: the mean over a (2r+1)^2 box, twice (close to a Gaussian of sigma ~ 0.8 r), the
    box cut at the border (only pixels inside count); running sums, so the cost does not depend on ``r``."""
    return box_mean(box_mean(x, r), r)


def _running_max(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """The largest of the ``2r+1`` values along ``dim`` centred on each (cut at the border): windows doubled
    ``log2(2r+1)`` times, then two overlapping ones (exact, and cheap whatever ``r``)."""
    if r == 0:
        return x
    pad = [0, 0] * (x.dim() - 1 - dim % x.dim()) + [r, r]
    m = F.pad(x, pad, value=float("-inf"))
    length, p = 2 * r + 1, 1
    while 2 * p <= length:
        size = m.shape[dim] - p
        m = torch.maximum(m.narrow(dim, 0, size), m.narrow(dim, p, size))
        p *= 2
    n = x.shape[dim]
    return torch.maximum(m.narrow(dim, 0, n), m.narrow(dim, length - p, n))


def _box_max(x: torch.Tensor, r: int) -> torch.Tensor:
    """``[h, w]`` -> ``[h, w]``: the largest value within a (2r+1)^2 box (cut at the border)."""
    return _running_max(_running_max(x, r, -1), r, -2)


def _box_min(x: torch.Tensor, r: int) -> torch.Tensor:
    """``[h, w]`` -> ``[h, w]``: the smallest value within a (2r+1)^2 box (cut at the border)."""
    return _box_max(x.neg(), r).neg_()


def _mean3(x: torch.Tensor) -> torch.Tensor:
    """``[h, w]`` -> ``[h, w]``: the mean over 3 x 3 pixels, the border repeated."""
    return F.avg_pool2d(F.pad(x[None, None], [1] * 4, mode="replicate"), 3, stride=1)[0, 0]


def _upsample(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``[C, h', w']`` -> ``[C, h, w]`` (bilinear)."""
    return F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False)[0]


def _match_brightness(grey: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``grey`` (uint8) shifted so that its mean brightness is the ``reference``'s: optical flow assumes
    constant brightness, and a fade or an exposure change would otherwise read as motion."""
    shift = float(reference.mean()) - float(grey.mean())
    if abs(shift) < 0.5:
        return grey
    return np.clip(grey.astype(np.float32) + shift, 0, 255).round().astype(np.uint8)


class _Frame:
    """What the stabiliser keeps of a frame: float RGB ``[3, H, W]`` and the grey analysis image (uint8 numpy)."""

    __slots__ = ("rgb", "grey")

    def __init__(self, rgb: torch.Tensor, grey: Optional[np.ndarray]):
        self.rgb, self.grey = rgb, grey


class _Buffered:
    """A frame waiting for the backward pass (bidirectional mode): its alpha and forward-pass output (float16),
    its colours (uint8) and, once the next frame has come, the link to it (None after a cut)."""

    __slots__ = ("alpha", "forward", "rgb", "link")

    def __init__(self, alpha: torch.Tensor, forward: torch.Tensor, rgb: torch.Tensor):
        self.alpha, self.forward = alpha.to(torch.float16), forward.to(torch.float16)
        self.rgb = rgb.mul(255.0).round_().to(torch.uint8)
        # the motion from this frame to the next (see AlphaStabilizer._motion); () without motion
        # compensation
        self.link: Optional[tuple] = None


class AlphaStabilizer:
    """Streaming stabiliser: feed chunks of frames with their alpha in order; state is kept between chunks.

    ``update(frames [n, 3, H, W] float 0..1, alphas [n, H, W] float 0..1) -> [m, H, W] float32`` on the
    inputs' device: the steadied alpha of the next ``m`` frames, oldest first. In ``"causal"`` mode
    ``m == n`` (each frame comes out with its chunk); in ``"bidirectional"`` mode frames come out after up
    to ``2 * lookahead - 1`` later frames have gone in, and :meth:`flush` returns the rest at the end of
    the clip. Every chunk must have the first chunk's size and device. :meth:`reset` starts a new clip
    (in bidirectional mode, :meth:`flush` first). The inputs are never modified.

    ``flow_used`` says which motion estimate runs (``"dis"`` or ``"none"``); ``frames_seen`` counts the
    frames that went in, ``cuts`` the scene cuts found.
    """

    def __init__(self, options: Optional[StabilizerOptions] = None, *, mode: str = "causal", **overrides):
        base = options if options is not None else StabilizerOptions()
        if overrides:
            unknown = set(overrides) - set(StabilizerOptions.__dataclass_fields__)
            if unknown:
                raise TypeError(f"unknown stabiliser option(s) {sorted(unknown)}; "
                                f"known: {sorted(StabilizerOptions.__dataclass_fields__)}")
            base = StabilizerOptions(**{**base.__dict__, **overrides})
        self.options = base.check()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self._dis = None
        self.flow_used = "none"
        if self.options.flow != "none" and self.options.strength > 0.0:
            try:
                cv2 = _import_cv2()
            except TemporalDependencyError:
                if self.options.flow == "dis":
                    raise
                log.warning("ben_core: OpenCV is not installed, so video mattes are steadied only where the "
                            "picture is still (no motion compensation); `pip install opencv-python-headless` "
                            "for moving shots")
            else:
                self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
                self.flow_used = "dis"
        self.reset()

    @property
    def delay(self) -> int:
        """The most frames this stabiliser holds back before they come out (0 in causal mode)."""
        return 0 if self.mode == "causal" else 2 * self.options.lookahead - 1

    @property
    def held(self) -> int:
        """How many frames that went in have not come out yet (always 0 in causal mode)."""
        return len(self._pending)

    def reset(self) -> None:
        """Forget the previous frames: the next frame passes through as it is. In bidirectional mode frames
        still held are dropped: call :meth:`flush` first to get them."""
        self._prev_out: Optional[torch.Tensor] = None
        self._prev: Optional[_Frame] = None
        self._shape: Optional[tuple] = None
        self._prev_colour: Optional[torch.Tensor] = None
        self._pending: List[_Buffered] = []
        self.frames_seen = 0
        self.cuts = 0

    # -- inputs ----------------------------------------------------------------------------------

    def _check(self, frames: torch.Tensor, alphas: torch.Tensor) -> None:
        if not isinstance(frames, torch.Tensor) or not isinstance(alphas, torch.Tensor):
            raise TypeError("frames and alphas must be torch tensors ([n, 3, H, W] and [n, H, W], float 0..1)")
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be [n, 3, H, W] (RGB, channels first), got {tuple(frames.shape)}")
        if alphas.dim() != 3 or alphas.shape[0] != frames.shape[0] or alphas.shape[1:] != frames.shape[2:]:
            raise ValueError(f"alphas must be [n, H, W] matching frames {tuple(frames.shape)}, "
                             f"got {tuple(alphas.shape)}")
        if not frames.is_floating_point() or not alphas.is_floating_point():
            raise ValueError(f"frames and alphas must be float 0..1, got {frames.dtype} and {alphas.dtype}")
        if frames.device != alphas.device:
            raise ValueError(f"frames are on {frames.device} but alphas on {alphas.device}; move them to one device")
        if not bool(torch.isfinite(alphas.sum())):  # one pass; NaN/inf anywhere make the sum non-finite
            raise ValueError("alphas contain NaN/inf; the stabiliser needs finite values in 0..1")
        if not bool(torch.isfinite(frames.sum())):
            raise ValueError("frames contain NaN/inf; the stabiliser needs finite values in 0..1")
        shape = (tuple(frames.shape[2:]), frames.device)
        if self._shape is not None and shape != self._shape:
            raise ValueError(f"this clip's frames are {self._shape[0]} on {self._shape[1]}, got {shape[0]} on "
                             f"{shape[1]}; call reset() to start another clip")

    def _frame(self, rgb: torch.Tensor) -> _Frame:
        """``[3, H, W]`` float -> the kept frame: float32 RGB clamped to 0..1 (a new tensor) and, when the flow
        runs, its grey analysis image (box-averaged over k x k pixels, k = ceil(longest side / analysis_size))."""
        x = rgb.to(torch.float32).clamp(0.0, 1.0)
        if self._dis is None:
            return _Frame(x, None)
        k = -(-max(x.shape[1], x.shape[2]) // self.options.analysis_size)
        small = F.avg_pool2d(x[None], k, stride=k, ceil_mode=True)[0] if k > 1 else x
        grey = small[0] * 0.299 + small[1] * 0.587 + small[2] * 0.114
        return _Frame(x, grey.mul_(255.0).round_().to(torch.uint8).cpu().numpy())

    # -- one pair of frames ----------------------------------------------------------------------

    def _flow(self, a: np.ndarray, b: np.ndarray, device) -> torch.Tensor:
        """``[2, h, w]`` float32 flow at the analysis size with ``a(x) ~ b(x + flow(x))``."""
        return torch.from_numpy(self._dis.calc(a, b, None)).to(device).permute(2, 0, 1).contiguous()

    def _motion(self, cur: tuple, prev: tuple, device) -> tuple:
        """Both motions between two frames, each given as a tuple of analysis images (grey, and when the subject
        is followed its premultiplied grey): ``(forward, backward)``, each ``(flow, its consistency)`` per
        image, concatenated, at the analysis size; forward maps this frame into the previous one
        (``cur(x) ~ prev(x + flow(x))``), backward the previous one into this (what the backward pass carries
        along)."""
        forward, backward = (), ()
        for a, b in zip(cur, prev, strict=True):
            to_prev = self._flow(a, b, device)
            to_cur = self._flow(b, a, device)
            forward += (to_prev, self._consistency(to_prev, to_cur))
            backward += (to_cur, self._consistency(to_cur, to_prev))
        return forward, backward

    @staticmethod
    def _premultiplied(grey: np.ndarray, alpha: torch.Tensor) -> np.ndarray:
        """The analysis image ``grey`` (uint8 ``[h, w]``) with ``alpha`` (``[H, W]``, box-averaged to ``h x w``)
        multiplied in, the grey lifted to 64..255 so that a dark subject still shows its outline."""
        small = F.adaptive_avg_pool2d(alpha[None, None].float(), grey.shape)[0, 0].cpu().numpy()
        return (small * (64.0 + grey.astype(np.float32) * (191.0 / 255.0))).round().astype(np.uint8)

    def _consistency(self, flow: torch.Tensor, back: torch.Tensor) -> torch.Tensor:
        """``[h, w]`` in 0..1 at the analysis size: how well ``flow`` (this frame -> the other) and ``back``
        (the other -> this) agree: going there and back should end where it began."""
        o = self.options
        back_there = _warp(back, flow)
        err = (flow + back_there).square_().sum(dim=0)
        slack = (flow.square().sum(dim=0) + back_there.square_().sum(dim=0)).mul_(0.01)
        consistent = _ramp_down(err, slack + o.flow_tolerance ** 2, slack + (3 * o.flow_tolerance) ** 2)
        consistent.mul_(_lands_inside(flow))
        # a failure also distrusts its 3 x 3 neighbours: flow is least sure right beside an occlusion
        return _box_min(consistent, 1)

    @staticmethod
    def _mismatch(new: torch.Tensor, moved: torch.Tensor, step: int) -> torch.Tensor:
        """``[H, W]``: how far the carried colours ``moved`` (``[3, H, W]``, warped into this frame) differ from
        the frame ``new``: the absolute difference over RGB, less each channel's median difference (a fade
        or an exposure change is no mismatch; the medians over every ``step``-th row and column), averaged
        over 3 x 3 pixels."""
        diff = new - moved
        diff -= diff[:, ::step, ::step].reshape(3, -1).median(dim=1).values.view(3, 1, 1)
        return _mean3(diff.abs_().mean(dim=0))

    def _colour_trust(self, mismatch: torch.Tensor, step: int) -> torch.Tensor:
        """``[H, W]`` in 0..1 from :meth:`_mismatch`: less the frame's noise floor (its median mismatch: sensor
        noise, compression; at most half of motion_high), the largest within the window, ramped between
        motion_low (1) and motion_high (0)."""
        o = self.options
        floor = mismatch[::step, ::step].median().clamp(max=0.5 * o.motion_high)  # 0-d: no host sync
        r = o.window // 2
        if r:
            mismatch = _box_max(mismatch, r)
        return _ramp_down(mismatch.sub(floor).clamp_(min=0.0), o.motion_low, o.motion_high)

    def _weight(self, alpha: torch.Tensor, trust: torch.Tensor) -> torch.Tensor:
        """Carried weight ``[H, W]`` in 0..strength: ``strength * trust * unsure(alpha)``."""
        o = self.options
        # distance of alpha from the nearer sure threshold, over the ramp: min(a - lo, hi - a) = half - |a - mid|
        half = 0.5 * (o.sure_foreground - o.sure_background)
        mid = 0.5 * (o.sure_foreground + o.sure_background)
        unsure = (alpha - mid).abs_().neg_().add_(half).div_(o.confidence_ramp).clamp_(0.0, 1.0)
        return unsure.mul_(trust).mul_(o.strength)

    def _inside(self, alpha: torch.Tensor, size: tuple) -> torch.Tensor:
        """``[h, w]`` in 0..1 at the analysis ``size``: the new frame's sure foreground well inside the subject
        (its alpha box-averaged to the analysis size, eroded by 3 px there, ramped up to full at
        ``sure_foreground``): the subject's rim is left out, its flow is pulled towards the background's
        (the flow's patches straddle it)."""
        o = self.options
        small = _box_min(F.adaptive_avg_pool2d(alpha[None, None], size)[0, 0], 3)
        lo = o.sure_foreground - o.confidence_ramp
        return small.sub_(lo).div_(o.sure_foreground - lo).clamp_(0.0, 1.0)

    def _spread(self, x: torch.Tensor, weight: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """Normalised convolution at the analysis size: the ``weight``-ed mean of ``x`` (``[..., h, w]``) within
        ``subject_reach`` (``support``: the weight's own mean there, see :func:`_box_mean`)."""
        r = self.options.subject_reach
        flat = x.reshape(-1, *x.shape[-2:])
        out = torch.stack([_box_mean(c * weight, r) for c in flat]).div_(support.clamp(min=1e-6))
        return out.reshape(x.shape)

    def _carry(self, alpha: torch.Tensor, rgb: torch.Tensor, carried_alpha: torch.Tensor,
               carried_rgb: torch.Tensor, motion: Optional[tuple]):
        """One step of the recursion (either direction): the carried alpha and colours (``[H, W]``,
        ``[3, H, W]``) are warped into this frame and blended with its ``alpha`` and ``rgb`` by
        ``strength * trust * unsure``. Returns ``(alpha, rgb, share of untrusted pixels as a 0-d tensor)``.

        Away from the subject they move along ``flow`` (analysis size; None: they stay where they are),
        trusted where the carried colours match the frame. Within ``subject_reach`` of the subject's sure
        foreground they move with the subject (:meth:`_carry_subject`): the edge band's own pixels mix the
        subject with a background that may move otherwise, so neither their flow nor their colours say
        where the alpha went. There the trust is the subject's: how well the colours carried with it match
        inside, extended over the band like its flow, and the carried alpha must not disagree with the new
        one by more than flicker does (``alpha_low`` .. ``alpha_high``): a missed motion or a swaying strand
        is let go. The share of untrusted pixels (the cut test) is the first, colour-only judgement's."""
        h, w = alpha.shape
        step = max(1, int((h * w / 250_000) ** 0.5))  # ~250k pixels give a frame's medians plenty well
        still_mismatch = self._mismatch(rgb, carried_rgb, step)
        if motion is None:
            trust = self._colour_trust(still_mismatch, step)
        else:
            flow, consistent = motion[:2]
            fh, fw = flow.shape[1:]
            scale = torch.tensor([w / fw, h / fh], dtype=flow.dtype, device=flow.device).view(2, 1, 1)
            full = _upsample(flow, h, w).mul_(scale)
            state = (carried_alpha, carried_rgb)
            moved = _warp(torch.cat((carried_alpha[None], carried_rgb)), full)  # one grid for both
            moved_alpha, moved_rgb = moved[0], moved[1:]
            moved_mismatch = self._mismatch(rgb, moved_rgb, step)
            # where the carried state fits as well unmoved, it stays where it is: flow is guesswork where the
            # picture has no texture (and a still part keeps its sharpness: no resampling)
            stay = still_mismatch <= moved_mismatch
            carried_alpha = torch.where(stay, carried_alpha, moved_alpha)
            carried_rgb = torch.where(stay, carried_rgb, moved_rgb)
            mismatch = torch.minimum(still_mismatch, moved_mismatch)
            consistent_full = _upsample(consistent[None], h, w)[0]
            trust = self._colour_trust(mismatch, step).mul_(torch.where(stay, 1.0, consistent_full))
        untrusted = (trust < 0.5).float().mean()
        if motion is not None and self.options.subject_reach > 0:
            carried_alpha, carried_rgb, trust = self._carry_subject(
                alpha, rgb, (state, still_mismatch), (carried_alpha, carried_rgb, trust), motion, scale, step)
        return self._blend(alpha, rgb, carried_alpha, carried_rgb, trust) + (untrusted,)

    def _carry_subject(self, alpha, rgb, still, background, motion, scale, step):
        """Near the subject, the carried state moved with the subject and the subject's trust (see
        :meth:`_carry`), blended into the ``background`` judgement (alpha, colours, trust) by how near the
        subject each pixel is. ``still``: the carried (alpha, colours) where they are, and their colour
        mismatch with this frame; ``scale``: analysis-size flow to full-size pixels (``[2, 1, 1]``).

        The subject's motion is one of three candidates, each spread from the subject's inside over the
        band: none, the picture's flow, and the flow of the frames with their alpha multiplied in (which
        follows the outline: a plain-coloured subject has no texture of its own to follow). The candidate
        whose carried colours match the subject's inside best wins; a tie, as on a plain subject, goes to
        the outline's motion. A pixel whose own (background) judgement trusts its per-pixel motion at least
        as much keeps that: in a rigid pan the per-pixel flow is exact, the spread one resamples."""
        o = self.options
        h, w = alpha.shape
        flow, consistent, outline, outline_consistent = motion
        fh, fw = flow.shape[1:]
        inside = self._inside(alpha, (fh, fw))
        support = _box_mean(inside, o.subject_reach)
        (state_alpha, state_rgb), still_mismatch = still
        best = None
        for k, (f, c) in enumerate(((None, None), (flow, consistent), (outline, outline_consistent))):
            if f is None:
                moved_alpha, moved_rgb, mismatch = state_alpha, state_rgb, still_mismatch
            else:
                wf = inside * c
                spread = self._spread(f, wf, _box_mean(wf, o.subject_reach))
                full = _upsample(spread, h, w).mul_(scale)
                moved = _warp(torch.cat((state_alpha[None], state_rgb)), full)
                moved_alpha, moved_rgb = moved[0], moved[1:]
                mismatch = self._mismatch(rgb, moved_rgb, step)
            inner = F.adaptive_avg_pool2d(mismatch[None, None], (fh, fw))[0, 0]
            score = _upsample(self._spread(inner, inside, support)[None], h, w)[0]
            if k == 2:
                score -= _TIE_MARGIN * o.motion_low
            if best is None:
                best = [score, moved_alpha, moved_rgb, mismatch]
            else:
                better = score < best[0]
                best[0] = torch.where(better, score, best[0])
                best[1] = torch.where(better, moved_alpha, best[1])
                best[2] = torch.where(better[None], moved_rgb, best[2])
                best[3] = torch.where(better, mismatch, best[3])
        _, s_alpha, s_rgb, mismatch = best
        inner_trust = F.adaptive_avg_pool2d(self._colour_trust(mismatch, step)[None, None], (fh, fw))[0, 0]
        band = self._spread(inner_trust, inside, support)
        r = o.subject_reach
        near = _box_max(inside, r)
        up = _upsample(torch.stack([band, near]), h, w)
        disagree = _mean3((s_alpha - alpha).abs_())
        s_trust = _ramp_down(disagree, o.alpha_low, o.alpha_high).mul_(up[0].clamp_(0.0, 1.0))
        near_full = up[1]
        bg_alpha, bg_rgb, bg_trust = background
        # where the pixel's own motion is trusted at least as much (a rigid pan: subject and background move
        # together), it is kept: per-pixel flow is exact there, the spread one is smooth and resamples
        pixel = bg_trust >= s_trust
        s_alpha = torch.where(pixel, bg_alpha, s_alpha)
        s_rgb = torch.where(pixel[None], bg_rgb, s_rgb)
        s_trust = torch.maximum(bg_trust, s_trust)
        return (torch.lerp(bg_alpha, s_alpha, near_full), torch.lerp(bg_rgb, s_rgb, near_full),
                torch.lerp(bg_trust, s_trust, near_full))

    def _blend(self, alpha, rgb, carried_alpha, carried_rgb, trust):
        wgt = self._weight(alpha, trust)
        out = torch.sub(carried_alpha, alpha).mul_(wgt).add_(alpha)
        colour = torch.sub(carried_rgb, rgb).mul_(wgt).add_(rgb)
        return out, colour

    def _step(self, rgb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """The forward (causal) recursion for one frame; in bidirectional mode it also buffers the frame."""
        cur = self._frame(rgb)
        a = alpha.to(torch.float32).clamp(0.0, 1.0)  # a new tensor: the state never aliases the caller's
        out, colour, link = a, cur.rgb, None
        if self._prev is not None and self.options.strength > 0.0:
            motion = back = None
            if self._dis is not None and min(cur.grey.shape) >= 12:  # DIS needs 12 px; a tiny clip goes without
                grey = _match_brightness(cur.grey, self._prev.grey)  # a fade is no motion
                # the picture's motion, and the subject's: the frames with their alpha (the previous frame's
                # steadied) multiplied in, so a background sliding behind the subject is no motion of its
                cur_images, prev_images = (grey,), (self._prev.grey,)
                if self.options.subject_reach > 0:
                    cur_images += (self._premultiplied(cur.grey, a),)
                    prev_images += (self._premultiplied(self._prev.grey, self._prev_out),)
                motion, back = self._motion(cur_images, prev_images, a.device)
            steady, steady_rgb, untrusted = self._carry(a, cur.rgb, self._prev_out, self._prev_colour, motion)
            if bool(untrusted > self.options.cut_fraction):  # one host sync a frame
                self.cuts += 1  # a new shot: start again from this frame (in both directions)
            else:
                out, colour = steady, steady_rgb
                link = back if back is not None else ()  # () = linked, without motion compensation
        if self.mode == "bidirectional":
            if self._pending:
                self._pending[-1].link = link
            self._pending.append(_Buffered(a, out, cur.rgb))
        self._prev_out, self._prev_colour, self._prev = out, colour, cur
        self.frames_seen += 1
        return out

    # -- the backward pass (bidirectional) -------------------------------------------------------

    def _finish(self, count: int) -> List[torch.Tensor]:
        """Run the backward pass over all pending frames and return the first ``count`` of them finished
        (mean of the two passes), dropping them from the buffer."""
        items = self._pending
        outs: List[Optional[torch.Tensor]] = [None] * count
        carried = carried_rgb = None
        for i in range(len(items) - 1, -1, -1):
            it = items[i]
            a = it.alpha.to(torch.float32)
            rgb = it.rgb.to(torch.float32).div_(255.0)
            if carried is None or it.link is None:
                carried, carried_rgb = a, rgb
            else:
                carried, carried_rgb, _ = self._carry(a, rgb, carried, carried_rgb, it.link or None)
            if i < count:
                outs[i] = torch.add(carried, it.forward.to(torch.float32)).mul_(0.5)
        del items[:count]
        return outs

    def _ready(self) -> List[torch.Tensor]:
        """Blocks whose look-ahead has arrived, finished: the oldest ``lookahead`` frames once ``lookahead``
        more stand behind them."""
        L = self.options.lookahead
        return self._finish(L) if len(self._pending) >= 2 * L else []

    # -- public ----------------------------------------------------------------------------------

    def update(self, frames: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        """Steady the next chunk of a clip. See the class docstring for shapes."""
        self._check(frames, alphas)
        self._shape = (tuple(frames.shape[2:]), frames.device)
        outs: List[torch.Tensor] = []
        for i in range(frames.shape[0]):
            out = self._step(frames[i], alphas[i])
            # bidirectional: a block comes out as soon as its look-ahead is in, so any chunking gives the same
            outs += [out] if self.mode == "causal" else self._ready()
        return self._stack(outs, alphas)

    def flush(self) -> torch.Tensor:
        """The frames still held (bidirectional mode), finished as the end of the clip: ``[m, H, W]``
        float32 (``m = 0`` in causal mode or when none are held)."""
        outs = self._finish(len(self._pending)) if self._pending else []
        return self._stack(outs, None)

    def _stack(self, outs: List[torch.Tensor], like: Optional[torch.Tensor]) -> torch.Tensor:
        if outs:
            return torch.stack(outs)
        h, w = self._shape[0] if self._shape is not None else (0, 0)
        device = like.device if like is not None else (self._shape[1] if self._shape is not None else "cpu")
        return torch.empty((0, h, w), dtype=torch.float32, device=device)


def make_stabilizer(temporal) -> AlphaStabilizer:
    """The stabiliser a door's ``temporal`` setting asks for: True or ``"causal"`` (defaults, causal),
    ``"bidirectional"``, a :class:`StabilizerOptions` (causal) or an :class:`AlphaStabilizer` (as it is)."""
    if isinstance(temporal, AlphaStabilizer):
        return temporal
    if isinstance(temporal, StabilizerOptions):
        return AlphaStabilizer(temporal)
    if temporal is True:
        return AlphaStabilizer()
    if isinstance(temporal, str) and temporal in MODES:
        return AlphaStabilizer(mode=temporal)
    raise ValueError(f"temporal must be False, True, one of {MODES}, a StabilizerOptions or an AlphaStabilizer; "
                     f"got {temporal!r}")


def stabilize_alpha(frames: torch.Tensor, alphas: torch.Tensor, options: Optional[StabilizerOptions] = None,
                    *, mode: str = "causal", **overrides) -> torch.Tensor:
    """Steady a whole clip's alpha: ``frames`` ``[T, 3, H, W]`` float 0..1, ``alphas`` ``[T, H, W]`` float 0..1
    -> ``[T, H, W]`` float32 0..1 on their device, identical to :class:`AlphaStabilizer` fed any chunking.
    ``mode``: ``"causal"`` or ``"bidirectional"`` (see the module docstring). Options as
    :class:`StabilizerOptions` (an instance and/or keyword overrides)."""
    stab = AlphaStabilizer(options, mode=mode, **overrides)
    first = stab.update(frames, alphas)
    return torch.cat([first, stab.flush()]) if mode == "bidirectional" else first
