"""Background colours and compositing, shared by the CLI, the video writer and the ComfyUI nodes.

- :func:`parse_colour` reads a colour given as text (``#RRGGBB``, ``RRGGBB``, ``#RGB``, ``r,g,b`` with
  0..255 values, and ``transparent``/``none``/``alpha`` where the caller allows a transparent result).
- :func:`composite` attaches alpha to foreground colours (RGBA cut-out) or composites them over a colour.
- :func:`to_uint8` quantises 0..1 floats to 0..255 ``uint8`` (clamp, round half to even).

Layout is channels-last: colours ``[..., H, W, 3]`` float 0..1, alpha ``[..., H, W]`` float 0..1 (1 =
foreground). Torch tensors and numpy arrays are both accepted; results have the type of the colour
input. Pure torch/numpy: nothing here imports ComfyUI, and no argument is modified in place.
"""
from __future__ import annotations

import re
from typing import Optional, Tuple, Union

import numpy as np
import torch

__all__ = ["TRANSPARENT_WORDS", "parse_colour", "composite", "to_uint8"]

TRANSPARENT_WORDS = ("transparent", "none", "alpha")

_HEX = re.compile(r"^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})$")

Array = Union[torch.Tensor, np.ndarray]


def _forms(allow_transparent: bool) -> str:
    forms = "#RRGGBB (e.g. #00FF00), RRGGBB, #RGB or 'r,g,b' with 0..255 values (e.g. 0,255,0)"
    return ("'transparent' or " + forms) if allow_transparent else forms


def parse_colour(text: str, allow_transparent: bool = False) -> Optional[Tuple[float, float, float]]:
    """Parse a colour given as text into an RGB triple of floats in 0..1.

    Accepted (surrounding spaces ignored, hex digits in any case):
      ``#RRGGBB`` / ``RRGGBB``, ``#RGB`` / ``RGB`` (each digit doubled), ``r,g,b`` with three numbers in
      0..255 (spaces allowed, fractions allowed); with ``allow_transparent=True`` also ``transparent``,
      ``none`` or ``alpha`` (any case), which return None (meaning: keep alpha, no background).
    Returns ``(r, g, b)`` floats 0..1 (channel / 255), or None for a transparent word.
    Raises ValueError naming the text and every accepted form for anything else.
    """
    s = str(text).strip()
    if allow_transparent and s.lower() in TRANSPARENT_WORDS:
        return None
    m = _HEX.match(s)
    if m:
        hx = m.group(1)
        if len(hx) == 3:
            hx = "".join(ch * 2 for ch in hx)
        return tuple(int(hx[i:i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]
    parts = [p.strip() for p in s.split(",")]
    if len(parts) == 3:
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            vals = []
        if len(vals) == 3 and all(0.0 <= v <= 255.0 for v in vals):
            return tuple(v / 255.0 for v in vals)  # type: ignore[return-value]
    raise ValueError(f"background colour {text!r} is not a colour: use {_forms(allow_transparent)}.")


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if not x.flags.writeable:  # torch.from_numpy warns on read-only arrays; we never write, but copy
            x = x.copy()
        return torch.from_numpy(x)
    raise TypeError(f"{name}: expected a torch tensor or numpy array, got {type(x).__name__}.")


def composite(rgb: Array, alpha: Array, colour: Optional[Tuple[float, float, float]] = None) -> Array:
    """Attach alpha to colours, or composite the colours over a solid background.

    rgb: ``[..., H, W, 3]`` floating point 0..1 (torch tensor or numpy array), the foreground colours.
    alpha: ``[..., H, W]`` 0..1, same leading shape as ``rgb`` (torch or numpy; cast to rgb's dtype).
    colour: None -> RGBA ``[..., H, W, 4]`` = rgb with alpha as the 4th channel (a cut-out);
      ``(r, g, b)`` floats 0..1 -> RGB ``[..., H, W, 3]`` = ``rgb * alpha + colour * (1 - alpha)``.
    Returns a new array of rgb's type, dtype and device, clamped to 0..1. The inputs are not modified.
    Raises TypeError for non-float colours and ValueError for mismatched shapes or a bad colour.
    """
    is_numpy = isinstance(rgb, np.ndarray)
    c = _as_tensor(rgb, "rgb")
    a = _as_tensor(alpha, "alpha")
    if not torch.is_floating_point(c):
        raise TypeError(f"rgb: expected float colours 0..1, got dtype {c.dtype}; divide uint8 images by 255 first.")
    if c.dim() < 3 or c.shape[-1] != 3:
        raise ValueError(f"rgb: expected channels-last colours [..., H, W, 3], got shape {tuple(c.shape)}.")
    if tuple(a.shape) != tuple(c.shape[:-1]):
        raise ValueError(f"alpha has shape {tuple(a.shape)} but rgb has shape {tuple(c.shape)}: "
                         f"alpha must be [..., H, W] = {tuple(c.shape[:-1])}.")
    a = a.to(device=c.device, dtype=c.dtype).unsqueeze(-1)
    if colour is None:
        out = torch.cat([c, a], dim=-1)
    else:
        vals = tuple(float(v) for v in colour)
        if len(vals) != 3 or not all(0.0 <= v <= 1.0 for v in vals):
            raise ValueError(f"colour must be three floats in 0..1 (see parse_colour), got {colour!r}.")
        bg = torch.tensor(vals, dtype=c.dtype, device=c.device)
        out = (c * a).add_(bg * (1.0 - a))
    out.clamp_(0.0, 1.0)  # out is new: clamped in place, no second full-size copy
    return out.numpy() if is_numpy else out


def to_uint8(x: Array) -> Array:
    """Float 0..1 (torch or numpy, any shape) -> uint8 0..255: clamp, scale by 255, round half to even."""
    if isinstance(x, np.ndarray):
        return np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8)
    return x.clamp(0, 1).mul_(255).round_().to(torch.uint8)  # one float temporary, not three
