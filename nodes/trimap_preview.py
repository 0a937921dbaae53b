"""Show Trimap's browser preview payload: one JSON-serialisable dict per image, built here and read by
``web/js/trimap_core.js`` (``decodePayload``); the two sides are kept in sync by the widget tests.

Each payload carries the parameters of the run (thresholds, step, minimum unknown fraction:
ben_core.matting.trimap.PAPER_DEFAULTS unless the user changed them), the full-resolution result, and references
to two files in ComfyUI's temp folder (``{"filename", "subfolder", "type": "temp"}``, served by ``/view``,
the way core's previews travel): the probability map downsampled to a longest side of at most 512, as
zlib-compressed uint16 codes (``probs``, ``probs_encoding = "zlib-uint16le"``, exact to 1/65535), from which
the widget recomputes the trimap while the user drags the sliders; and the image at that size as a JPEG
(``image``, ``image_format = "jpeg"``; only drawn, never used for the recompute). ComfyUI keeps every run's
ui output in its in-memory history (up to 10,000 entries), so the payload itself stays well under 1 KB.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch

from ..ben_core.io.inputs import resize
from ..ben_core.matting.compose import to_uint8

PREVIEW_MAX_SIDE = 512
PREVIEW_MAX_IMAGES = 8
#: payload["probs_encoding"]: the probs file is zlib (RFC 1950) of the little-endian uint16 codes.
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


def probs_codes(probs_hw: torch.Tensor) -> np.ndarray:
    """float ``[h,w]`` 0..1 (clamped) -> uint16 numpy ``[h,w]`` codes ``round(p*65535)`` (ties to even)."""
    return torch.round(probs_hw.double().clamp(0.0, 1.0) * 65535.0).to(torch.int32).cpu().numpy().astype(np.uint16)


def probs_zlib(probs_hw: torch.Tensor) -> bytes:
    """float ``[h,w]`` 0..1 -> the probability-map file (encoding :data:`PROBS_ENCODING`).

    ``zlib.compress(codes.astype("<u2").tobytes(), 6)`` with codes from :func:`probs_codes`, row-major; the
    browser inflates it with ``DecompressionStream("deflate")`` (zlib-wrapped deflate).
    """
    raw = probs_codes(probs_hw).astype("<u2").tobytes(order="C")
    return zlib.compress(raw, PROBS_ZLIB_LEVEL)


def preview_arrays(rgb_3hw: torch.Tensor, probs_hw: torch.Tensor):
    """The preview-size image and map: ``(rgb uint8 numpy [h, w, 3], probs float [h, w])`` for an image
    ``[3, H, W]`` and map ``[H, W]`` in 0..1 (longest side at most :data:`PREVIEW_MAX_SIDE`)."""
    h, w = preview_size(*probs_hw.shape[-2:])
    small_rgb = _downsample(rgb_3hw.cpu(), h, w)
    small_probs = _downsample(probs_hw.cpu().unsqueeze(0), h, w)[0]
    return to_uint8(small_rgb.permute(1, 2, 0)).numpy(), small_probs


def build_payload(image_ref: dict, probs_ref: dict, size: tuple, params: dict, final_low: float,
                  final_high: float, unknown_count: int, full_size: tuple) -> dict:
    """One preview dict (JSON-serialisable): ``image_ref`` / ``probs_ref`` the saved preview image and
    probability map (``{"filename", "subfolder", "type"}``), ``size`` their ``(h, w)``, ``params`` the run's
    t_low, t_high, t_min, t_max, step and min_unknown_fraction, the final thresholds and unknown count of
    the full-resolution trimap, ``full_size`` its ``(H, W)``."""
    h, w = size
    return {
        "width": int(w), "height": int(h),
        "image": dict(image_ref),
        "image_format": IMAGE_FORMAT,
        "probs": dict(probs_ref),
        "probs_encoding": PROBS_ENCODING,
        "t_low": float(params["t_low"]), "t_high": float(params["t_high"]),
        "t_min": float(params["t_min"]), "t_max": float(params["t_max"]),
        "step": float(params["step"]), "min_unknown_fraction": float(params["min_unknown_fraction"]),
        "final_t_low": float(final_low), "final_t_high": float(final_high),
        "unknown_count": int(unknown_count),
        "full_width": int(full_size[1]), "full_height": int(full_size[0]),
    }
