"""Show Trimap's browser preview payload: one JSON-serialisable dict per image, built here and read by
``web/js/trimap_core.js`` (``decodePayload``); the two sides are kept in sync by the widget tests.

Each payload carries the RGB image and the probability map downsampled to a longest side of at most
512, so the widget can recompute the trimap while the user drags the sliders, and the parameters of the
run (thresholds, step, minimum unknown fraction: ben_core.trimap.PAPER_DEFAULTS unless the user changed
them). ComfyUI keeps every run's ui output in its in-memory history, so the payload is kept small: the
map is sent as zlib-compressed uint16 codes (``probs_encoding = "zlib-uint16le"``, still exact to
1/65535) and the image as JPEG (``image_format = "jpeg"``; it is only drawn, never used for the
recompute).
"""
from __future__ import annotations

import base64
import io
import zlib

import numpy as np
import torch

from ..ben_core.compose import to_uint8
from ..ben_core.inputs import resize

PREVIEW_MAX_SIDE = 512
PREVIEW_MAX_IMAGES = 8
#: payload["probs_encoding"]: base64 of zlib (RFC 1950) of the little-endian uint16 codes.
PROBS_ENCODING = "zlib-uint16le"
PROBS_ZLIB_LEVEL = 6
#: payload["image_format"]: the preview image's format.
IMAGE_FORMAT = "jpeg"
JPEG_QUALITY = 85


def preview_size(height: int, width: int, max_side: int = PREVIEW_MAX_SIDE) -> tuple:
    """(h, w) with the longest side <= max_side, aspect kept, never upscaled, each >= 1."""
    scale = min(1.0, max_side / float(max(height, width)))
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def _downsample(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[C,H,W] float -> [C,h,w] (bilinear, anti-aliased: never upscaled here), clamped to 0..1."""
    return resize(x.unsqueeze(0).float(), (h, w))[0].clamp(0.0, 1.0)


def jpeg_base64(rgb_hw3: np.ndarray, quality: int = JPEG_QUALITY) -> str:
    """uint8 ``[H,W,3]`` -> base64 JPEG string (no data: prefix), baseline, 4:2:0, ``quality`` 1..95."""
    from PIL import Image

    if rgb_hw3.dtype != np.uint8 or rgb_hw3.ndim != 3 or rgb_hw3.shape[2] != 3:
        raise ValueError(f"jpeg_base64 needs a uint8 [H,W,3] array, got {rgb_hw3.dtype} {tuple(rgb_hw3.shape)}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb_hw3), mode="RGB").save(buf, format="JPEG", quality=int(quality))
    return base64.b64encode(buf.getvalue()).decode("ascii")


def probs_codes(probs_hw: torch.Tensor) -> np.ndarray:
    """float ``[h,w]`` 0..1 (clamped) -> uint16 numpy ``[h,w]`` codes ``round(p*65535)`` (ties to even)."""
    return torch.round(probs_hw.double().clamp(0.0, 1.0) * 65535.0).to(torch.int32).cpu().numpy().astype(np.uint16)


def probs_base64(probs_hw: torch.Tensor) -> str:
    """float ``[h,w]`` 0..1 -> payload ``probs`` (encoding :data:`PROBS_ENCODING`).

    base64 of ``zlib.compress(codes.astype("<u2").tobytes(), 6)`` with codes from :func:`probs_codes`,
    row-major; the browser inflates it with ``DecompressionStream("deflate")`` (zlib-wrapped deflate).
    """
    raw = probs_codes(probs_hw).astype("<u2").tobytes(order="C")
    return base64.b64encode(zlib.compress(raw, PROBS_ZLIB_LEVEL)).decode("ascii")


def build_payload(rgb_3hw: torch.Tensor, probs_hw: torch.Tensor, params: dict, final_low: float,
                  final_high: float, unknown_count: int) -> dict:
    """One preview dict (JSON-serialisable). rgb ``[3,H,W]`` 0..1, probs ``[H,W]`` 0..1; ``params``: the
    run's t_low, t_high, t_min, t_max, step and min_unknown_fraction.

    ``image`` is a base64 JPEG (``image_format`` "jpeg"), ``probs`` base64 zlib of uint16le codes
    (``probs_encoding`` "zlib-uint16le"), both at the preview size ``width`` x ``height``.
    """
    H, W = probs_hw.shape[-2:]
    h, w = preview_size(H, W)
    small_rgb = _downsample(rgb_3hw.cpu(), h, w)
    small_probs = _downsample(probs_hw.cpu().unsqueeze(0), h, w)[0]
    img = to_uint8(small_rgb.permute(1, 2, 0)).numpy()
    return {
        "width": int(w), "height": int(h),
        "image": jpeg_base64(img),
        "image_format": IMAGE_FORMAT,
        "probs": probs_base64(small_probs),
        "probs_encoding": PROBS_ENCODING,
        "t_low": float(params["t_low"]), "t_high": float(params["t_high"]),
        "t_min": float(params["t_min"]), "t_max": float(params["t_max"]),
        "step": float(params["step"]), "min_unknown_fraction": float(params["min_unknown_fraction"]),
        "final_t_low": float(final_low), "final_t_high": float(final_high),
        "unknown_count": int(unknown_count),
        "full_width": int(W), "full_height": int(H),
    }
