"""Refine Mask node: refine any mask inside the unknown band of a trimap (guided filter or ViTMatte).

Without a trimap input the node builds one itself (``trimap_source``):
* "confidence": the BEN paper's confidence trimap of the mask (paper thresholds and minimum area);
* "band": an unknown band of ``band_radius`` pixels around the mask edge (for hard 0/1 masks);
* "auto" (default): per image, the confidence trimap if the mask is soft enough to reach the paper's
  minimum unknown area (a BEN2 probability map), otherwise the band (a hard mask from SAM, a painted
  mask, a segmentation model...), so masks from any node get refined edges.
"""
from __future__ import annotations

import inspect

import torch

from . import comfy_env, tensors
from .remove_background import OUTPUT_MODES
from .show_trimap import DEFAULT_MIN_UNKNOWN_FRACTION

CATEGORY = "image/BEN2"
METHODS = ["guided", "vitmatte"]
TRIMAP_SOURCES = ["auto", "confidence", "band"]


def auto_band_radius(height: int, width: int) -> int:
    """Band half-width used when band_radius is 0: 1% of the longest side, at least 3 px."""
    return max(3, int(round(0.01 * max(height, width))))


def make_trimap(mask: torch.Tensor, source: str, band_radius: int) -> torch.Tensor:
    """Trimap ``[B,H,W]`` {0,0.5,1} for a mask ``[B,H,W]`` 0..1 (see the module docstring for the sources)."""
    from ..ben_core.trimap import band_trimap, confidence_trimap

    if source not in TRIMAP_SOURCES:
        raise ValueError(f"trimap_source must be one of {TRIMAP_SOURCES}, got {source!r}")
    H, W = mask.shape[-2:]
    radius = int(band_radius) if int(band_radius) > 0 else auto_band_radius(H, W)
    if source == "band":
        return band_trimap(mask, radius)
    n_min = int(round(DEFAULT_MIN_UNKNOWN_FRACTION * H * W))
    conf, _, _ = confidence_trimap(mask, min_unknown=n_min)
    if source == "confidence":
        return conf
    out = conf.clone()
    for i in range(mask.shape[0]):
        if int((conf[i] == 0.5).sum()) < n_min:  # not a confidence map: use the edge band instead
            out[i] = band_trimap(mask[i:i + 1], radius)[0]
    return out


def _call_refine(rgb_bchw, alpha, trimap, method, radius, eps):
    from ..ben_core.refine import refine_alpha

    kwargs = {"method": method, "radius": radius, "eps": eps}
    params = inspect.signature(refine_alpha).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return refine_alpha(rgb_bchw, alpha, trimap, **kwargs)


class BEN2RefineMask:
    DESCRIPTION = ("Refines a mask from any node (BEN2, SAM, a painted mask...) inside the unknown band of a trimap: "
                   "sure foreground/background stay exactly 1/0, only unknown pixels change. 'guided' is a colour "
                   "guided filter (fast, any size); 'vitmatte' runs the ViTMatte matting network (needs the "
                   "transformers package and downloads hustvl/vitmatte weights once). Without a trimap input the "
                   "node makes one (trimap_source). Also outputs the cut-out with re-estimated edge colours.")
    CATEGORY = CATEGORY
    FUNCTION = "refine"
    RETURN_TYPES = ("MASK", "IMAGE")
    RETURN_NAMES = ("mask", "image")
    OUTPUT_TOOLTIPS = (
        "Refined alpha at the image size, float 0..1, 1 = foreground.",
        "Cut-out with the refined alpha: RGBA (4 channels; not for a VAE) or RGB over background_colour.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The images the mask belongs to (the guide for the refinement)."}),
                "mask": ("MASK", {"tooltip": "Mask to refine, 1 = foreground, from any node. One mask for all images "
                                             "or one per image; resized to the image if needed."}),
                "method": (METHODS, {
                    "default": "guided",
                    "tooltip": "guided: colour guided filter on the unknown band (fast, CPU or GPU). vitmatte: the "
                               "ViTMatte trimap-based matting network, tiled over the unknown band (slower, needs "
                               "transformers)."}),
                "radius": ("INT", {
                    "default": 0, "min": 0, "max": 256,
                    "tooltip": "Guided-filter window radius in pixels; 0 = automatic (scales with the image size)."}),
                "eps": ("FLOAT", {
                    "default": 0.0, "min": 0.0, "max": 1.0, "step": 0.000001, "round": 0.000001,
                    "tooltip": "Guided-filter regularisation (smaller follows image edges more closely); "
                               "0 = automatic."}),
                "trimap_source": (TRIMAP_SOURCES, {
                    "default": "auto",
                    "tooltip": "Only used when no trimap is connected. confidence: BEN paper trimap of the mask; band: "
                               "unknown band of band_radius px around the mask edge (for hard masks); auto: confidence "
                               "where the mask is soft enough, band otherwise."}),
                "band_radius": ("INT", {
                    "default": 0, "min": 0, "max": 1024,
                    "tooltip": "Half-width in pixels of the unknown band around the mask edge (band/auto); 0 = 1% of "
                               "the longest image side (at least 3 px)."}),
                "refine_foreground": ("BOOLEAN", {
                    "default": True,
                    "tooltip": "Re-estimate the foreground colours where the refined alpha is between 0 and 1, so "
                               "edges carry no old-background colour (affects the IMAGE output only)."}),
                "output_mode": (OUTPUT_MODES, {
                    "default": "RGBA",
                    "tooltip": "RGBA: transparent cut-out (4 channels; don't feed it to a VAE). RGB: composited over "
                               "background_colour."}),
                "background_colour": ("STRING", {
                    "default": "#FFFFFF",
                    "tooltip": "Colour behind the foreground in RGB mode: #RRGGBB, #RGB or r,g,b (0-255)."}),
            },
            "optional": {
                "trimap": ("MASK", {"tooltip": "Optional trimap (0 = background, 0.5 = unknown, 1 = foreground), e.g. "
                                               "from Show Trimap (BEN2). Values are snapped to 0 / 0.5 / 1."}),
            },
        }

    def refine(self, image, mask, method="guided", radius=0, eps=0.0, trimap_source="auto", band_radius=0,
               refine_foreground=True, output_mode="RGBA", background_colour="#FFFFFF", trimap=None):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        if output_mode == "RGB":
            tensors.parse_colour(background_colour)
        rgb = tensors.image_to_bchw(image)                       # [B,3,H,W] new tensor
        alpha = tensors.match_mask(mask, image)                  # [B,H,W]
        if trimap is not None:
            tri = tensors.match_mask(trimap, image, mask_name="trimap", mode="nearest")
            tri = torch.where(tri >= 0.75, torch.ones_like(tri),
                              torch.where(tri <= 0.25, torch.zeros_like(tri), torch.full_like(tri, 0.5)))
        else:
            tri = make_trimap(alpha, trimap_source, int(band_radius))
        device = comfy_env.torch_device()  # both methods run per image on ComfyUI's compute device
        refined = torch.empty_like(alpha)
        bar = comfy_env.progress_bar(rgb.shape[0])
        for i in range(rgb.shape[0]):
            comfy_env.check_interrupt()
            r = _call_refine(rgb[i:i + 1].to(device), alpha[i:i + 1].to(device), tri[i:i + 1].to(device), method,
                             int(radius) if int(radius) > 0 else None, float(eps) if float(eps) > 0 else None)
            refined[i:i + 1] = r.to(refined.device, refined.dtype)
            bar.update_absolute(i + 1, rgb.shape[0])
        refined = refined.clamp(0.0, 1.0)
        if refine_foreground:
            from .remove_background import foreground_colours

            est = foreground_colours(rgb, refined, device)
            soft = ((refined > 0) & (refined < 1)).unsqueeze(1)
            fg = torch.where(soft, est, rgb)
        else:
            fg = rgb
        out_image = tensors.compose_output(fg, refined, output_mode, background_colour)
        dev = comfy_env.intermediate_device()
        return (refined.contiguous().to(dev), out_image.to(dev))
