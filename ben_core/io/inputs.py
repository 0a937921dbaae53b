"""Images in every form users have, as validated tensors: the one input policy of ben_core.

* :func:`image_tensor` turns one PIL image / numpy array / torch tensor into ``[H, W, C]``;
  :func:`pil_to_tensor` is its PIL half (16-bit and wide-integer modes by :func:`wide_mode_to_unit`).
* :func:`to_float_rgb` turns images into float RGB ``[n, 3, H, W]`` in 0..1 where a step needs it, one
  image at a time in the library, so a chunk never exists as full-resolution float copies all at once.
* :func:`resize` is the one resize of images and maps (bilinear, anti-aliased when shrinking).

Files are read by :mod:`ben_core.io.image_files`, batches handed out by :mod:`ben_core.io.batches`.

Accepted pixel formats, everywhere: uint8 0..255; float 0..1 (finite; values in -0.5..1.5 are clamped,
anything further out is refused as probably 0..255 or normalised data); bool; 16-bit (numpy uint16,
PIL ``I;16*``) and 32-bit integer PIL images (``I``) scaled by 1/65535; PIL float images (``F``) clamped
to 0..1. Channels: 3 RGB, 4 RGBA (alpha ignored, not composited), 1 grey, 2 grey + alpha. Nothing here
modifies its argument.
"""
from __future__ import annotations

import warnings
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["WIDE_MODES", "image_tensor", "pil_to_tensor", "wide_mode_to_unit", "to_float_rgb", "resize"]

_FLOAT_RANGE = (-0.5, 1.5)  # floats outside this are almost surely 0..255 or normalised data, not 0..1
_OK_DTYPES = (torch.uint8, torch.bool, torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: PIL modes with more than 8 bits a channel: 16-bit and 32-bit integers (scaled by 1/65535) and floats.
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_U16_MAX = 65535.0


def is_pil(x) -> bool:
    """Whether ``x`` is a PIL image."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
    return isinstance(x, Image.Image)


def wide_mode_to_unit(im) -> np.ndarray:
    """A PIL image of a :data:`WIDE_MODES` mode -> float32 ``[H, W]`` in 0..1: integers scaled by 1/65535,
    floats as they are, both clipped (NaN is left for the caller to refuse or replace)."""
    if im.mode not in WIDE_MODES:
        raise ValueError(f"expected a PIL image of mode {WIDE_MODES}, got {im.mode!r}")
    arr = np.asarray(im, dtype=np.float32)
    if im.mode != "F":
        arr = arr / _U16_MAX
    return np.clip(arr, 0.0, 1.0)


def pil_to_tensor(im) -> torch.Tensor:
    """PIL image -> ``[H, W, 3]`` tensor: uint8 for 8-bit modes, float32 0..1 for 16/32-bit integer
    and float modes (:func:`wide_mode_to_unit`). Alpha is dropped, not composited."""
    mode = im.mode
    if mode == "RGB":
        arr = np.array(im)
    elif mode in WIDE_MODES:
        arr = wide_mode_to_unit(im)
        if not np.isfinite(arr).all():
            raise ValueError("PIL image (mode 'F') contains NaN/inf")
        arr = arr[..., None].repeat(3, axis=-1)
    else:  # L, LA, RGBA, P, PA, CMYK, YCbCr, 1, ...: PIL's own conversion
        try:
            if mode == "P" and "transparency" in im.info:  # PIL warns converting such palettes straight to RGB
                im = im.convert("RGBA")
            arr = np.array(im.convert("RGB"))
        except (ValueError, OSError) as e:
            raise TypeError(f"cannot convert a PIL image of mode {mode!r} to RGB ({e}); convert it first") from e
    return torch.from_numpy(np.ascontiguousarray(arr))


def numpy_to_tensor(arr: np.ndarray) -> torch.Tensor:
    """A numpy image as a tensor (uint16 scaled to float 0..1; a view of other dtypes where possible)."""
    if arr.dtype == np.uint16:
        return torch.from_numpy(arr.astype(np.float32) / _U16_MAX)
    with warnings.catch_warnings():  # read-only arrays: we never write into the result
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return torch.from_numpy(np.ascontiguousarray(arr) if not arr.flags.c_contiguous else arr)


def check_array(t: torch.Tensor, what: str) -> None:
    """TypeError / ValueError naming ``what`` unless ``t`` is ``[..., H, W, C]`` of an accepted dtype."""
    if t.dtype not in _OK_DTYPES:
        raise TypeError(f"{what}: unsupported dtype {t.dtype}; pass uint8 (0..255) or float (0..1) images")
    if t.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"{what}: expected channels last [..., H, W, C] with C = 3 (RGB), 4 (RGBA), 1 or 2 "
                         f"(grey, grey+alpha); got shape {tuple(t.shape)}"
                         + (" -- this looks channels-first: permute to [B,H,W,C]"
                            if t.dim() >= 3 and t.shape[-3] in (1, 3, 4) else ""))
    if t.shape[-2] == 0 or t.shape[-3] == 0:
        raise ValueError(f"{what}: empty image (shape {tuple(t.shape)})")


def check_values(t: torch.Tensor, what: str) -> None:
    """Floats must be finite and (roughly) 0..1; checked one image at a time (no full-batch temporaries)."""
    if not t.is_floating_point():
        return
    batch = t if t.dim() == 4 else t.unsqueeze(0)
    for i in range(batch.shape[0]):
        lo, hi = torch.aminmax(batch[i])
        lo, hi = float(lo), float(hi)
        name = what if t.dim() == 3 else f"{what}[{i}]"
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(f"{name} contains NaN or inf values; fix the upstream node/image")
        if lo < _FLOAT_RANGE[0] or hi > _FLOAT_RANGE[1]:
            raise ValueError(f"{name}: float images must be in 0..1, got values in [{lo:.3g}, {hi:.3g}] "
                             "(0..255 floats: divide by 255 or pass uint8; normalised tensors: undo the "
                             "normalisation)")


def image_tensor(img, what: str = "image") -> torch.Tensor:
    """One image (PIL, numpy or torch ``[H, W]`` / ``[H, W, C]`` / ``[1, H, W, C]``) -> validated
    ``[H, W, C]`` tensor (a view where possible; uint8, bool or float). Raises TypeError/ValueError
    naming ``what`` for anything not accepted (see the module docstring)."""
    if is_pil(img):
        if img.width == 0 or img.height == 0:
            raise ValueError(f"{what}: empty PIL image ({img.width}x{img.height})")
        return pil_to_tensor(img)
    if isinstance(img, np.ndarray):
        t = numpy_to_tensor(img)
    elif isinstance(img, torch.Tensor):
        t = img
    else:
        raise TypeError(f"{what}: expected a PIL image, numpy array or torch tensor, got {type(img).__name__}")
    if t.dim() == 2:
        t = t.unsqueeze(-1)
    if t.dim() == 4 and t.shape[0] == 1:  # a one-image batch [1,H,W,C]
        t = t[0]
    if t.dim() != 3:
        raise ValueError(f"{what}: expected one image [H,W,C] or [H,W], got shape {tuple(t.shape)}")
    check_array(t, what)
    check_values(t, what)
    return t


def to_float_rgb(raw: torch.Tensor) -> torch.Tensor:
    """``[n, H, W, C]`` of any accepted dtype -> new float32 ``[n, 3, H, W]`` in 0..1 (never aliases ``raw``).

    uint8 is divided by 255, floats are clamped to 0..1, grey is repeated, alpha is dropped. The result
    is the only full-size tensor made: converted and laid out channels-first in one copy.
    """
    n, h, w, c = raw.shape
    src = raw.permute(0, 3, 1, 2)
    src = src[:, :1].expand(n, 3, h, w) if c in (1, 2) else src[:, :3]
    x = torch.empty((n, 3, h, w), dtype=torch.float32, device=raw.device)
    x.copy_(src)
    if raw.dtype == torch.uint8:
        x.div_(255.0)
    elif raw.dtype != torch.bool:
        x.clamp_(0.0, 1.0)
    return x


def resize(x: torch.Tensor, size: Tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize float ``[n, C, h, w]`` to ``size = (H, W)``: the one resize of images, alpha and masks.

    ``mode="bilinear"``: ``align_corners=False``, anti-aliased when shrinking (like PIL's BILINEAR);
    on a backend without anti-aliased bilinear the resize runs on the CPU and comes back.
    ``mode="nearest"``: nearest-exact (keeps discrete levels, e.g. trimaps). Returns ``x`` itself when
    it already has that size, else a new tensor on ``x``'s device.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest-exact")
    if mode != "bilinear":
        raise ValueError(f"resize mode must be 'bilinear' or 'nearest', got {mode!r}")
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    try:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    except (RuntimeError, NotImplementedError):
        if x.device.type == "cpu":
            raise
        return F.interpolate(x.cpu(), size=size, mode="bilinear", align_corners=False,
                             antialias=shrink).to(x.device)
