"""Refine Mask node: refine any mask inside the unknown band of a trimap (guided filter or ViTMatte).

Without a trimap input the node builds one itself (``trimap_source``):
* "confidence": the BEN paper's confidence trimap of the mask (paper thresholds and minimum area);
* "band": an unknown band of ``band_radius`` pixels around the mask edge (for hard 0/1 masks);
* "auto" (default): per image, the confidence trimap for a soft mask (a BEN2 probability map), the band
  for a hard mask (fewer than a tenth of the paper's minimum unknown area is strictly between 0.03 and
  0.97: SAM, a painted mask, a segmentation model...), so masks from any node get refined edges. With
  band_radius 0 this is exactly ``ben_core.refine.auto_trimap``.
"""
from __future__ import annotations

import torch

from ..ben_core.compose import parse_colour
from . import comfy_env, tensors
from .remove_background import OUTPUT_MODES, foreground_colours

CATEGORY = "image/BEN2"
METHODS = ["guided", "vitmatte"]
TRIMAP_SOURCES = ["auto", "confidence", "band"]


def auto_band_radius(height: int, width: int) -> int:
    """Band half-width used when band_radius is 0: ben_core's default, max(2, round(min(H, W) / 90))."""
    from ..ben_core.refine import default_band_radius

    return default_band_radius(height, width)


def make_trimap(mask: torch.Tensor, source: str, band_radius: int) -> torch.Tensor:
    """Trimap ``[B,H,W]`` {0,0.5,1} for a mask ``[B,H,W]`` 0..1 (see the module docstring for the sources)."""
    from ..ben_core.refine import auto_trimap
    from ..ben_core.trimap import band_trimap, confidence_trimap

    if source not in TRIMAP_SOURCES:
        raise ValueError(f"trimap_source must be one of {TRIMAP_SOURCES}, got {source!r}")
    H, W = mask.shape[-2:]
    radius = int(band_radius) if int(band_radius) > 0 else auto_band_radius(H, W)
    if source == "band":
        return band_trimap(mask, radius)
    if source == "confidence":
        return confidence_trimap(mask)[0]  # paper thresholds and N_min
    return auto_trimap(mask, band_radius=radius)  # hard masks (no confidence) get the edge band


_vitmatte_models: dict = {}  # at most one entry: {"device", "net", "patcher"}


def vitmatte_model(device: torch.device):
    """The ViTMatte network (hustvl/vitmatte-small-composition-1k from the Hugging Face cache, downloaded
    once if missing), loaded once and returned with its weights on ``device``.

    Inside ComfyUI it is loaded to the offload device, wrapped in a ModelPatcher and put on ``device`` by
    ``load_models_gpu`` before every use, so ComfyUI can free its VRAM for other models (it is not pinned
    on the GPU for the rest of the session). Outside ComfyUI it is simply moved to ``device``.
    """
    from .model_cache import _Holder

    device = torch.device(device)
    entry = _vitmatte_models.get("entry")
    if entry is None or entry["device"] != device:
        from ..ben_core.vitmatte import load_vitmatte

        _vitmatte_models.clear()  # keep one copy
        offload = comfy_env.offload_device() if device.type != "cpu" else device
        net = load_vitmatte(device=offload)
        # the holder: ModelPatcher sets `.device` on its model, a read-only property of transformers models
        patcher = comfy_env.make_patcher(_Holder(net, torch.float32), device, offload)
        entry = _vitmatte_models["entry"] = {"device": device, "net": net, "patcher": patcher}
    if entry["patcher"] is not None:
        comfy_env.load_models_gpu([entry["patcher"]])
    else:
        entry["net"].to(device)
    return entry["net"]


def _call_refine(rgb_bchw, alpha, trimap, method, radius, eps):
    from ..ben_core.refine import refine_alpha

    if method == "vitmatte":
        return refine_alpha(rgb_bchw, alpha, trimap, method="vitmatte", model=vitmatte_model(rgb_bchw.device))
    return refine_alpha(rgb_bchw, alpha, trimap, method="guided", radius=radius, eps=eps)


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
                    "tooltip": "Guided-filter window radius in pixels; 0 = automatic (shorter image side / 45, measured "
                               "best). Not used by vitmatte."}),
                "eps": ("FLOAT", {
                    "default": 0.0, "min": 0.0, "max": 1.0, "step": 0.000001, "round": 0.000001,
                    "tooltip": "Guided-filter regularisation (smaller follows image edges more closely); "
                               "0 = automatic (1e-4). Not used by vitmatte."}),
                "trimap_source": (TRIMAP_SOURCES, {
                    "default": "auto",
                    "tooltip": "Only used when no trimap is connected. confidence: BEN paper trimap of the mask; band: "
                               "unknown band of band_radius px around the mask edge (for hard masks); auto: confidence "
                               "for soft masks (BEN2), band for hard 0/1 masks (SAM, painted...)."}),
                "band_radius": ("INT", {
                    "default": 0, "min": 0, "max": 1024,
                    "tooltip": "Half-width in pixels of the unknown band around the mask edge (band, and auto for "
                               "hard masks); 0 = shorter image side / 90 (at least 2 px)."}),
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
            parse_colour(background_colour)  # fail before the slow part
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
            from ..ben_core.refine import estimate_foreground_colors

            fg = foreground_colours(rgb, refined, device, estimate_foreground_colors)  # per image on the device
        else:
            fg = rgb
        out_image = tensors.compose_output(fg, refined, output_mode, background_colour)
        dev = comfy_env.intermediate_device()
        return (refined.contiguous().to(dev), out_image.to(dev))
