"""Layout helpers of the multi-view decoder: quadrant split/stitch and NCHW <-> NHWC views.

For ``B`` input images the backbone sees ``5*B`` views in groups of five per image: the four
quadrants (top-left, top-right, bottom-left, bottom-right) and the global view.
"""
from __future__ import annotations

from torch import Tensor

__all__ = ["quadrants", "stitch", "to_nhwc", "from_nhwc"]


def quadrants(x: Tensor) -> Tensor:
    """Channels-last quadrant split: ``[B, 2h, 2w, C]`` -> ``[B, 4, h, w, C]`` (TL, TR, BL, BR)."""
    b, hh, ww, c = x.shape
    x = x.reshape(b, 2, hh // 2, 2, ww // 2, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, 4, hh // 2, ww // 2, c)


def stitch(x: Tensor) -> Tensor:
    """Inverse of :func:`quadrants`: ``[B, 4, h, w, C]`` -> ``[B, 2h, 2w, C]``."""
    b, _, h, w, c = x.shape
    return x.reshape(b, 2, 2, h, w, c).permute(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, c)


def to_nhwc(x: Tensor) -> Tensor:
    """``[N, C, H, W]`` -> ``[N, H, W, C]`` (a view when ``x`` is channels-last, else a copy)."""
    return x.permute(0, 2, 3, 1).contiguous()


def from_nhwc(x: Tensor) -> Tensor:
    """``[N, H, W, C]`` -> ``[N, C, H, W]`` view with channels-last memory."""
    return x.permute(0, 3, 1, 2)
