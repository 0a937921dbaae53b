"""Show Trimap node: the BEN paper's confidence trimap of a mask, its visualisation, and the browser
preview payload (:mod:`.trimap_preview`) under ``{"ui": {"ben2_trimap": [payload, ...]}}`` (one per image,
at most ``PREVIEW_MAX_IMAGES``; none outside ComfyUI, where there is no temp folder to serve them from).

Widget defaults are the paper's constants (``ben_core.matting.trimap.PAPER_DEFAULTS``).
"""
from __future__ import annotations

import torch

from ..ben_core.io.inputs import to_float_rgb
from ..ben_core.matting.trimap import PAPER_DEFAULTS, confidence_trimap
from ..ben_core.model.ben2 import BENBase
from . import catalogue, comfy_env, image_mask, trimap_preview, widgets
from .comfy_env import io

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


class BEN2ShowTrimap(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        paper = PAPER_DEFAULTS
        side = BENBase.native_size  # the paper's unknown area is given in pixels at this size

        def thr(name, tip):
            return io.Float.Input(name, default=paper[name], min=0.0, max=1.0, step=paper["step"], round=0.001,
                                  tooltip=f"{tip} (paper: {paper[name]:.2f}).")

        return comfy_env.schema(
            **catalogue.SHOW_TRIMAP.schema_names(),
            category=widgets.CATEGORY,
            description=("Shows the confidence trimap of the BEN paper for a soft mask (e.g. from Remove Background): "
                         "pixels with p >= t_high are sure foreground, p <= t_low sure background, the rest unknown; "
                         "the thresholds widen step by step (down to t_min / up to t_max) until at least "
                         "min_unknown_fraction of the image is unknown. The preview below the node lets you try "
                         "thresholds in the browser; the values you pick are written back into the widgets for the "
                         "next run. For Refine Mask, start at the limits (t_low 0.03, t_high 0.97: every pixel the "
                         "mask is unsure of, what Refine Mask uses when no trimap is connected): measured best on real "
                         "photos; the paper's 0.10 / 0.90 start makes fuzzy hair and translucent parts sure, and "
                         "Refine Mask snaps them to 0 / 1."),
            search_aliases=["trimap", "confidence", "matting", "unknown band"],
            is_output_node=True,  # runs (and sends its preview) even when nothing is connected to its outputs
            inputs=[
                io.Image.Input("image", tooltip="The images the mask belongs to (for the preview and visualisation)."),
                io.Mask.Input("mask", tooltip="Soft mask / probability map, 1 = foreground (Remove Background's MASK "
                                              "with invert_mask off). One mask for all images or one per image; "
                                              "resized to the image if needed."),
                thr("t_low", "Starting background threshold: p <= t_low is sure background"),
                thr("t_high", "Starting foreground threshold: p >= t_high is sure foreground"),
                comfy_env.advanced(thr("t_min", "Lowest value t_low may be lowered to while widening")),
                comfy_env.advanced(thr("t_max", "Highest value t_high may be raised to while widening")),
                io.Float.Input("min_unknown_fraction", default=paper["min_unknown_fraction"], min=0.0, max=1.0,
                               step=0.0001, round=0.000001,
                               tooltip="Wanted unknown area as a fraction of the image (paper: "
                                       f"{paper['min_unknown_fraction'] * side * side:,.0f} px of {side}x{side} "
                                       f"= {paper['min_unknown_fraction']:.4f}). The thresholds widen by "
                                       f"{paper['step']} per step until this is reached or the limits are hit."),
            ],
            outputs=[
                io.Mask.Output(display_name="trimap", tooltip=(
                    "Trimap at the image size: 0 = sure background, 0.5 = unknown, 1 = sure foreground. Connect it to "
                    "Refine Mask's trimap input.")),
                io.Image.Output(display_name="visualisation", tooltip=(
                    "The image with the trimap drawn on it: foreground unchanged, background dimmed, unknown tinted "
                    "pink.")),
            ],
        )

    @classmethod
    def execute(cls, image, mask, t_low=PAPER_DEFAULTS["t_low"], t_high=PAPER_DEFAULTS["t_high"],
                t_min=PAPER_DEFAULTS["t_min"], t_max=PAPER_DEFAULTS["t_max"],
                min_unknown_fraction=PAPER_DEFAULTS["min_unknown_fraction"]):
        image = image_mask.check_image(image)
        probs = image_mask.match_mask(mask, image)
        params = {"t_low": float(t_low), "t_high": float(t_high), "t_min": float(t_min), "t_max": float(t_max),
                  "step": PAPER_DEFAULTS["step"], "min_unknown_fraction": float(min_unknown_fraction)}
        trimap, fin_low, fin_high = confidence_trimap(probs, **params)
        rgb = to_float_rgb(image)  # [B,3,H,W] float32 0..1, a new tensor
        payloads = []  # outside ComfyUI (no temp folder, no browser) there is no preview
        shown = trimap_preview.PREVIEW_MAX_IMAGES if comfy_env.temp_directory() is not None else 0
        for i in range(min(rgb.shape[0], shown)):
            small_rgb, small_probs = trimap_preview.preview_arrays(rgb[i], probs[i])
            image_ref = comfy_env.save_temp_jpeg(small_rgb, "ben2_trimap", trimap_preview.JPEG_QUALITY)
            probs_ref = comfy_env.save_temp_file(trimap_preview.probs_zlib(small_probs), "ben2_trimap", "u16.zlib")
            payloads.append(trimap_preview.build_payload(
                image_ref, probs_ref, tuple(small_probs.shape), params, float(fin_low[i]), float(fin_high[i]),
                int((trimap[i] == 0.5).sum()), tuple(probs.shape[-2:])))
        vis = visualise(rgb, trimap)
        return io.NodeOutput(*comfy_env.node_outputs(trimap.contiguous(), vis), ui={"ben2_trimap": payloads})
