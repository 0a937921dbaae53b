"""Steady video mattes: damp the frame-to-frame flicker of per-frame alpha where nothing moves.

A per-frame model is unsure in the same places from frame to frame (hair, motion blur, semi-transparent
edges), and there its answer wobbles although the picture does not change: the matte flickers. Plain
exponential smoothing of the alpha (what early real-time matting and OBS-style plugins tried) damps the
flicker but smears and lags wherever the subject or the camera moves, and it drags sure pixels into
grey. RobustVideoMatting and MatAnyone avoid both by carrying state inside the network (recurrent
features / memory); with BEN2's per-frame weights the state has to live outside, so this module gates a
recursive filter per pixel on what can be seen:

* **image change**: the frames are compared at a reduced size (box-averaged to a longest side of about
  ``analysis_size``, so sensor noise averages out) and the absolute change is averaged over 3x3 pixels.
  The frame's median change, up to half of ``motion_high``, is taken as its noise floor and subtracted
  (sensor noise, compression; a pan changes every pixel and stays motion),
  and the largest change within a ``window`` box counts for a pixel (an edge sweeps a band). Where that
  change is above ``motion_high`` the pixel is *moving* and takes the new alpha as it is (no lag, no
  smear); below ``motion_low`` it is *still* and carries the full weight; in between the weight falls
  linearly;
* **confidence**: only alpha the model is unsure of is carried. A pixel whose new alpha is sure
  (``<= sure_background`` or ``>= sure_foreground``) is passed through unchanged, so sure foreground and
  background stay sure; between the two the weight rises over ``confidence_ramp`` to full.

For each frame ``t``: ``out[t] = alpha[t] + w[t] * (out[t-1] - alpha[t])`` with
``w = strength * still * unsure`` in 0..strength, and ``out[0] = alpha[0]`` (the first frame is never
worse than per-frame). The filter is causal and its state is the previous output and the previous
frame's analysis image, so :class:`AlphaStabilizer` fed chunk after chunk gives bit-identical results
for any chunking, equal to :func:`stabilize_alpha` on the whole clip. Everything is pure torch on the
inputs' device; the cost is a few element-wise passes over the frame (measured in
``benchmarks/bench_temporal.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["StabilizerOptions", "AlphaStabilizer", "stabilize_alpha"]


@dataclass(frozen=True)
class StabilizerOptions:
    """Settings of :class:`AlphaStabilizer` (defaults chosen on ``benchmarks/bench_temporal.py``).

    Attributes:
        strength: the largest weight of the previous output (0 = off, < 1), reached where nothing moves and
            the model is unsure. 0.85 keeps ~15 % of each new frame: flicker variance drops ~12-fold.
        motion_low, motion_high: image change (0..1: absolute change averaged over RGB and 3x3 pixels at
            the analysis size, less the frame's median, the largest within ``window``) below which a pixel
            counts as still (full weight) and above which it counts as moving (weight 0).
        window: box size (pixels at the analysis size, odd) over which the largest change counts.
        analysis_size: about the longest side the frames are compared at (box-averaged over k x k pixels,
            k = ceil(longest side / analysis_size); smaller is faster and less sensitive to noise, coarser at
            motion boundaries).
        sure_background, sure_foreground: new alpha at or beyond these passes through unchanged.
        confidence_ramp: alpha distance beyond the sure thresholds over which the weight rises to full.
    """

    strength: float = 0.85
    motion_low: float = 0.01
    motion_high: float = 0.04
    window: int = 5
    analysis_size: int = 384
    sure_background: float = 0.02
    sure_foreground: float = 0.98
    confidence_ramp: float = 0.15

    def check(self) -> "StabilizerOptions":
        """Return self, or raise ValueError naming the bad setting and its range."""
        if not 0.0 <= self.strength < 1.0:
            raise ValueError(f"strength must be in [0, 1) (0 = off), got {self.strength!r}")
        if not 0.0 <= self.motion_low < self.motion_high:
            raise ValueError(f"need 0 <= motion_low < motion_high (image changes in 0..1), got {self.motion_low!r}, "
                             f"{self.motion_high!r}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"window must be an odd int >= 1, got {self.window!r}")
        if isinstance(self.analysis_size, bool) or not isinstance(self.analysis_size, int) or self.analysis_size < 16:
            raise ValueError(f"analysis_size must be an int >= 16, got {self.analysis_size!r}")
        if not 0.0 <= self.sure_background < self.sure_foreground <= 1.0:
            raise ValueError(f"need 0 <= sure_background < sure_foreground <= 1, got {self.sure_background!r}, "
                             f"{self.sure_foreground!r}")
        if not self.confidence_ramp > 0.0:
            raise ValueError(f"confidence_ramp must be > 0, got {self.confidence_ramp!r}")
        return self


class AlphaStabilizer:
    """Streaming stabiliser: feed chunks of frames with their alpha in order; state is kept between chunks.

    ``update(frames [n, 3, H, W] float 0..1, alphas [n, H, W] float 0..1) -> [n, H, W] float32`` on the
    inputs' device. Every chunk must have the first chunk's size and device. :meth:`reset` starts a new
    clip (e.g. after a cut). The inputs are never modified.
    """

    def __init__(self, options: Optional[StabilizerOptions] = None, **overrides):
        base = options if options is not None else StabilizerOptions()
        if overrides:
            unknown = set(overrides) - set(StabilizerOptions.__dataclass_fields__)
            if unknown:
                raise TypeError(f"unknown stabiliser option(s) {sorted(unknown)}; "
                                f"known: {sorted(StabilizerOptions.__dataclass_fields__)}")
            base = StabilizerOptions(**{**base.__dict__, **overrides})
        self.options = base.check()
        self.reset()

    def reset(self) -> None:
        """Forget the previous frames: the next frame passes through as it is."""
        self._prev_out: Optional[torch.Tensor] = None
        self._prev_small: Optional[torch.Tensor] = None
        self._shape: Optional[tuple] = None
        self.frames_seen = 0

    def _check(self, frames: torch.Tensor, alphas: torch.Tensor) -> None:
        if not isinstance(frames, torch.Tensor) or not isinstance(alphas, torch.Tensor):
            raise TypeError("frames and alphas must be torch tensors ([n, 3, H, W] and [n, H, W], float 0..1)")
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be [n, 3, H, W] (RGB, channels first), got {tuple(frames.shape)}")
        if alphas.dim() != 3 or alphas.shape[0] != frames.shape[0] or alphas.shape[1:] != frames.shape[2:]:
            raise ValueError(f"alphas must be [n, H, W] matching frames {tuple(frames.shape)}, got {tuple(alphas.shape)}")
        if not frames.is_floating_point() or not alphas.is_floating_point():
            raise ValueError(f"frames and alphas must be float 0..1, got {frames.dtype} and {alphas.dtype}")
        if frames.device != alphas.device:
            raise ValueError(f"frames are on {frames.device} but alphas on {alphas.device}; move them to one device")
        if not bool(torch.isfinite(alphas.sum())):  # one pass; NaN/inf anywhere make the sum non-finite
            raise ValueError("alphas contain NaN/inf; the stabiliser needs finite values in 0..1")
        shape = (tuple(frames.shape[2:]), frames.device)
        if self._shape is not None and shape != self._shape:
            raise ValueError(f"this clip's frames are {self._shape[0]} on {self._shape[1]}, got {shape[0]} on "
                             f"{shape[1]}; call reset() to start another clip")

    def _small(self, frames: torch.Tensor) -> torch.Tensor:
        """``[n, 3, H, W]`` -> the analysis images ``[n, 3, h, w]`` float32 in 0..1: box-averaged over k x k
        pixels, k = ceil(longest side / analysis_size) (sensor noise averages out)."""
        x = frames.to(torch.float32)
        k = -(-max(x.shape[2], x.shape[3]) // self.options.analysis_size)
        if k > 1:
            x = F.avg_pool2d(x, k, stride=k, ceil_mode=True)
        else:
            x = x.clone()
        if not bool(torch.isfinite(x.sum())):
            raise ValueError("frames contain NaN/inf; the stabiliser needs finite values in 0..1")
        return x.clamp_(0.0, 1.0)

    def _weight(self, small: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """Carried weight ``[H, W]`` in 0..strength for this frame (``small`` ``[1, 3, h, w]``)."""
        o = self.options
        # the absolute change, differenced before averaging (a texture that changes while its local mean
        # stays the same still counts), averaged over RGB and 3x3 pixels (noise averages out)
        change = (small - self._prev_small).abs_().mean(dim=1, keepdim=True)  # [1, 1, h, w]
        change = F.avg_pool2d(F.pad(change, [1] * 4, mode="replicate"), 3, stride=1)
        # the noise floor: what a still picture's noise / compression changes by, taken as the frame's median
        # change but never more than half of motion_high (a pan or a cut changes every pixel: that is motion)
        floor = change.median().clamp(max=0.5 * o.motion_high)  # a 0-d tensor: no host sync
        r = o.window // 2
        if r:  # motion anywhere near a pixel counts: covers the band an edge sweeps (separable max)
            change = F.max_pool2d(change, (1, o.window), stride=1, padding=(0, r))
            change = F.max_pool2d(change, (o.window, 1), stride=1, padding=(r, 0))
        still = change.sub_(floor).clamp_(min=0.0)
        still = still.neg_().add_(o.motion_high).div_(o.motion_high - o.motion_low).clamp_(0.0, 1.0)
        if still.shape[2:] != alpha.shape:
            still = F.interpolate(still, size=alpha.shape, mode="bilinear", align_corners=False)
        # distance of alpha from the nearer sure threshold, over the ramp: min(a - lo, hi - a) = half - |a - mid|
        half = 0.5 * (o.sure_foreground - o.sure_background)
        mid = 0.5 * (o.sure_foreground + o.sure_background)
        unsure = (alpha - mid).abs_().neg_().add_(half).div_(o.confidence_ramp).clamp_(0.0, 1.0)
        return unsure.mul_(still[0, 0]).mul_(o.strength)

    def update(self, frames: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        """Steady the next chunk of a clip. See the class docstring for shapes."""
        self._check(frames, alphas)
        self._shape = (tuple(frames.shape[2:]), frames.device)
        smalls = self._small(frames)
        out = torch.empty(alphas.shape, dtype=torch.float32, device=alphas.device)
        for i in range(frames.shape[0]):
            a = alphas[i].to(torch.float32).clamp(0.0, 1.0)  # a new tensor: the state never aliases the caller's
            small = smalls[i:i + 1]
            if self._prev_out is None or self.options.strength == 0.0:
                cur = a
            else:
                w = self._weight(small, a)
                cur = torch.sub(self._prev_out, a).mul_(w).add_(a)  # a + w * (prev - a)
            out[i] = cur
            self._prev_out, self._prev_small = cur, small
            self.frames_seen += 1
        return out


def stabilize_alpha(frames: torch.Tensor, alphas: torch.Tensor, options: Optional[StabilizerOptions] = None,
                    **overrides) -> torch.Tensor:
    """Steady a whole clip's alpha: ``frames`` ``[T, 3, H, W]`` float 0..1, ``alphas`` ``[T, H, W]`` float 0..1
    -> ``[T, H, W]`` float32 0..1 on their device, identical to :class:`AlphaStabilizer` fed any chunking.
    Options as :class:`StabilizerOptions` (an instance and/or keyword overrides)."""
    return AlphaStabilizer(options, **overrides).update(frames, alphas)
