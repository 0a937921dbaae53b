"""Show Trimap node: the BEN paper's confidence trimap of a mask, plus a browser preview payload.

The preview payload (``{"ui": {"ben2_trimap": [payload, ...]}}``) follows the team contract: one dict per
image (first 8 of a batch) with the RGB image and the probability map downsampled to a longest side of
at most 512, so the web widget can recompute the trimap while the user drags the sliders.

ComfyUI keeps every run's ui output in its in-memory history, so the payload is kept small: the map is
sent as zlib-compressed uint16 codes (``probs_encoding = "zlib-uint16le"``, still exact to 1/65535) and
the image as JPEG (``image_format = "jpeg"``; it is only drawn, never used for the recompute).
"""
from __future__ import annotations

import base64
import io
import zlib

import numpy as np
import torch
import torch.nn.functional as F

from . import comfy_env, tensors

CATEGORY = "image/BEN2"
PREVIEW_MAX_SIDE = 512
PREVIEW_MAX_IMAGES = 8
STEP = 0.001
DEFAULT_MIN_UNKNOWN_FRACTION = 60000 / 1024 ** 2  # 0.0572...: the paper's 60,000 px of a 1024x1024 map
#: payload["probs_encoding"]: base64 of zlib (RFC 1950) of the little-endian uint16 codes. A payload without
#: the field (older saved history) carries the raw little-endian uint16 bytes; the widget reads both.
PROBS_ENCODING = "zlib-uint16le"
PROBS_ZLIB_LEVEL = 6
#: payload["image_format"]: the preview image's format (a payload without the field carries a PNG).
IMAGE_FORMAT = "jpeg"
JPEG_QUALITY = 85

#: Colours of the visualisation IMAGE (RGB 0..1).
UNKNOWN_TINT = (1.0, 0.15, 0.6)
BACKGROUND_DIM = 0.3


def preview_size(height: int, width: int, max_side: int = PREVIEW_MAX_SIDE) -> tuple:
    """(h, w) with the longest side <= max_side, aspect kept, never upscaled, each >= 1."""
    scale = min(1.0, max_side / float(max(height, width)))
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def _downsample(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[C,H,W] float -> [C,h,w] (area-like: bilinear with antialias), clamped to 0..1."""
    if x.shape[-2:] == (h, w):
        return x.clamp(0.0, 1.0)
    y = F.interpolate(x.unsqueeze(0).float(), size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return y[0].clamp(0.0, 1.0)


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
    """One preview dict per the contract (JSON-serialisable). rgb ``[3,H,W]`` 0..1, probs ``[H,W]`` 0..1.

    ``image`` is a base64 JPEG (``image_format`` "jpeg"), ``probs`` base64 zlib of uint16le codes
    (``probs_encoding`` "zlib-uint16le"), both at the preview size ``width`` x ``height``.
    """
    H, W = probs_hw.shape[-2:]
    h, w = preview_size(H, W)
    small_rgb = _downsample(rgb_3hw.cpu(), h, w)
    small_probs = _downsample(probs_hw.cpu().unsqueeze(0), h, w)[0]
    img = (small_rgb.permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
    return {
        "width": int(w), "height": int(h),
        "image": jpeg_base64(img),
        "image_format": IMAGE_FORMAT,
        "probs": probs_base64(small_probs),
        "probs_encoding": PROBS_ENCODING,
        "t_low": float(params["t_low"]), "t_high": float(params["t_high"]),
        "t_min": float(params["t_min"]), "t_max": float(params["t_max"]),
        "step": float(STEP), "min_unknown_fraction": float(params["min_unknown_fraction"]),
        "final_t_low": float(final_low), "final_t_high": float(final_high),
        "unknown_count": int(unknown_count),
        "full_width": int(W), "full_height": int(H),
    }


def visualise(rgb_bchw: torch.Tensor, trimap: torch.Tensor) -> torch.Tensor:
    """Image with the trimap drawn on it: foreground as is, background dimmed, unknown tinted pink.

    rgb ``[B,3,H,W]`` 0..1, trimap ``[B,H,W]`` {0,0.5,1} -> ComfyUI IMAGE ``[B,H,W,3]`` float32 (new tensor).
    One image at a time into the output, so a 4K batch never holds several full-batch temporaries.
    """
    b, _, h, w = rgb_bchw.shape
    out = torch.empty((b, h, w, 3), dtype=torch.float32, device=rgb_bchw.device)
    tint = torch.tensor(UNKNOWN_TINT, dtype=rgb_bchw.dtype, device=rgb_bchw.device).view(3, 1, 1)
    for i in range(b):
        x, t = rgb_bchw[i], trimap[i].unsqueeze(0)
        unknown = 0.4 * x + 0.6 * tint
        out[i] = torch.where(t >= 0.75, x, torch.where(t <= 0.25, BACKGROUND_DIM * x, unknown)).permute(1, 2, 0)
    return out


def compute_trimap(probs: torch.Tensor, t_low: float, t_high: float, t_min: float, t_max: float,
                   min_unknown_fraction: float):
    """Confidence trimap of ``probs`` ``[B,H,W]`` with min_unknown = round(fraction * H * W).

    Returns (trimap ``[B,H,W]`` {0,0.5,1}, final t_low ``[B]`` float64, final t_high ``[B]`` float64).
    """
    from ..ben_core.trimap import confidence_trimap

    if not (0.0 <= float(min_unknown_fraction) <= 1.0):
        raise ValueError(f"min_unknown_fraction must be between 0 and 1, got {min_unknown_fraction}")
    H, W = probs.shape[-2:]
    n_min = int(round(float(min_unknown_fraction) * H * W))
    return confidence_trimap(probs, t_low=float(t_low), t_high=float(t_high), t_min=float(t_min),
                             t_max=float(t_max), step=STEP, min_unknown=n_min)


class BEN2ShowTrimap:
    DESCRIPTION = ("Shows the confidence trimap of the BEN paper for a soft mask (e.g. from Remove Background): "
                   "pixels with p >= t_high are sure foreground, p <= t_low sure background, the rest unknown; the "
                   "thresholds widen step by step (down to t_min / up to t_max) until at least "
                   "min_unknown_fraction of the image is unknown. The preview below the node lets you try thresholds "
                   "in the browser; the values you pick are written back into the widgets for the next run.")
    CATEGORY = CATEGORY
    FUNCTION = "show"
    OUTPUT_NODE = True  # runs (and sends its preview) even when nothing is connected to its outputs
    RETURN_TYPES = ("MASK", "IMAGE")
    RETURN_NAMES = ("trimap", "visualisation")
    OUTPUT_TOOLTIPS = (
        "Trimap at the image size: 0 = sure background, 0.5 = unknown, 1 = sure foreground. Connect it to Refine "
        "Mask's trimap input.",
        "The image with the trimap drawn on it: foreground unchanged, background dimmed, unknown tinted pink.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        def thr(default, tip):
            return ("FLOAT", {"default": default, "min": 0.0, "max": 1.0, "step": 0.001, "round": 0.001,
                              "tooltip": tip})

        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The images the mask belongs to (for the preview and visualisation)."}),
                "mask": ("MASK", {"tooltip": "Soft mask / probability map, 1 = foreground (Remove Background's MASK "
                                             "with invert_mask off). One mask for all images or one per image; "
                                             "resized to the image if needed."}),
                "t_low": thr(0.10, "Starting background threshold (paper: 0.10): p <= t_low is sure background."),
                "t_high": thr(0.90, "Starting foreground threshold (paper: 0.90): p >= t_high is sure foreground."),
                "t_min": thr(0.03, "Lowest value t_low may be lowered to while widening (paper: 0.03)."),
                "t_max": thr(0.97, "Highest value t_high may be raised to while widening (paper: 0.97)."),
                "min_unknown_fraction": ("FLOAT", {
                    "default": DEFAULT_MIN_UNKNOWN_FRACTION, "min": 0.0, "max": 1.0, "step": 0.0001,
                    "round": 0.000001,
                    "tooltip": "Wanted unknown area as a fraction of the image (paper: 60,000 px of 1024x1024 = "
                               "0.0572). The thresholds widen by 0.001 per step until this is reached or the limits "
                               "are hit."}),
            }
        }

    def show(self, image, mask, t_low=0.10, t_high=0.90, t_min=0.03, t_max=0.97,
             min_unknown_fraction=DEFAULT_MIN_UNKNOWN_FRACTION):
        rgb = tensors.image_to_bchw(image)
        probs = tensors.match_mask(mask, image)
        trimap, fin_low, fin_high = compute_trimap(probs, t_low, t_high, t_min, t_max, min_unknown_fraction)
        params = {"t_low": t_low, "t_high": t_high, "t_min": t_min, "t_max": t_max,
                  "min_unknown_fraction": min_unknown_fraction}
        payloads = []
        for i in range(min(rgb.shape[0], PREVIEW_MAX_IMAGES)):
            unknown = int((trimap[i] == 0.5).sum())
            payloads.append(build_payload(rgb[i], probs[i], params, float(fin_low[i]), float(fin_high[i]), unknown))
        vis = visualise(rgb, trimap)
        dev = comfy_env.intermediate_device()
        return {"ui": {"ben2_trimap": payloads}, "result": (trimap.contiguous().to(dev), vis.to(dev))}
