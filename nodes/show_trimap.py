"""Show Trimap node: the BEN paper's confidence trimap of a mask, its visualisation, and the browser
preview payload (:mod:`.trimap_preview`) under ``{"ui": {"ben2_trimap": [payload, ...]}}``.

Widget defaults are the paper's constants (``ben_core.trimap.PAPER_DEFAULTS``).
"""
from __future__ import annotations

import torch

from ..ben_core.inputs import to_float_rgb
from ..ben_core.trimap import PAPER_DEFAULTS, confidence_trimap
from . import comfy_env, image_mask, trimap_preview, widgets

#: Colours of the visualisation IMAGE (RGB 0..1).
UNKNOWN_TINT = (1.0, 0.15, 0.6)
BACKGROUND_DIM = 0.3


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


class BEN2ShowTrimap:
    DESCRIPTION = ("Shows the confidence trimap of the BEN paper for a soft mask (e.g. from Remove Background): "
                   "pixels with p >= t_high are sure foreground, p <= t_low sure background, the rest unknown; the "
                   "thresholds widen step by step (down to t_min / up to t_max) until at least "
                   "min_unknown_fraction of the image is unknown. The preview below the node lets you try thresholds "
                   "in the browser; the values you pick are written back into the widgets for the next run.")
    CATEGORY = widgets.CATEGORY
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
        paper = PAPER_DEFAULTS

        def thr(name, tip):
            return ("FLOAT", {"default": paper[name], "min": 0.0, "max": 1.0, "step": paper["step"], "round": 0.001,
                              "tooltip": f"{tip} (paper: {paper[name]:.2f})."})

        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The images the mask belongs to (for the preview and visualisation)."}),
                "mask": ("MASK", {"tooltip": "Soft mask / probability map, 1 = foreground (Remove Background's MASK "
                                             "with invert_mask off). One mask for all images or one per image; "
                                             "resized to the image if needed."}),
                "t_low": thr("t_low", "Starting background threshold: p <= t_low is sure background"),
                "t_high": thr("t_high", "Starting foreground threshold: p >= t_high is sure foreground"),
                "t_min": thr("t_min", "Lowest value t_low may be lowered to while widening"),
                "t_max": thr("t_max", "Highest value t_high may be raised to while widening"),
                "min_unknown_fraction": ("FLOAT", {
                    "default": paper["min_unknown_fraction"], "min": 0.0, "max": 1.0, "step": 0.0001,
                    "round": 0.000001,
                    "tooltip": "Wanted unknown area as a fraction of the image (paper: 60,000 px of 1024x1024 = "
                               f"{paper['min_unknown_fraction']:.4f}). The thresholds widen by {paper['step']} per "
                               "step until this is reached or the limits are hit."}),
            }
        }

    def show(self, image, mask, t_low=PAPER_DEFAULTS["t_low"], t_high=PAPER_DEFAULTS["t_high"],
             t_min=PAPER_DEFAULTS["t_min"], t_max=PAPER_DEFAULTS["t_max"],
             min_unknown_fraction=PAPER_DEFAULTS["min_unknown_fraction"]):
        image = image_mask.check_image(image)
        probs = image_mask.match_mask(mask, image)
        params = {"t_low": float(t_low), "t_high": float(t_high), "t_min": float(t_min), "t_max": float(t_max),
                  "step": PAPER_DEFAULTS["step"], "min_unknown_fraction": float(min_unknown_fraction)}
        trimap, fin_low, fin_high = confidence_trimap(probs, **params)
        rgb = to_float_rgb(image)  # [B,3,H,W] float32 0..1, a new tensor
        payloads = []
        for i in range(min(rgb.shape[0], trimap_preview.PREVIEW_MAX_IMAGES)):
            unknown = int((trimap[i] == 0.5).sum())
            payloads.append(trimap_preview.build_payload(rgb[i], probs[i], params, float(fin_low[i]),
                                                         float(fin_high[i]), unknown))
        vis = visualise(rgb, trimap)
        dev = comfy_env.intermediate_device()
        return {"ui": {"ben2_trimap": payloads}, "result": (trimap.contiguous().to(dev), vis.to(dev))}
