"""Remove Background node: BEN_MODEL + IMAGE -> cut-out IMAGE + soft MASK (1 = foreground)."""
from __future__ import annotations

import torch

from ..ben_core.compose import parse_colour
from . import comfy_env, tensors

CATEGORY = "image/BEN2"
OUTPUT_MODES = ["RGBA", "RGB"]
WORKING_SIZES = ["1024", "768", "512"]


def foreground_colours(rgb_bchw: torch.Tensor, alpha: torch.Tensor, device: torch.device,
                       estimator=None) -> torch.Tensor:
    """Blur-fusion foreground estimate, one image at a time on ``device``; returns ``[B,3,H,W]`` on rgb's device.

    rgb_bchw ``[B,3,H,W]`` float 0..1, alpha ``[B,H,W]`` float 0..1. ``estimator(image [1,3,H,W], alpha [1,H,W])
    -> [1,3,H,W]`` defaults to ``ben_core.foreground.estimate_foreground``. Checks for interruption between images.
    """
    if estimator is None:
        from ..ben_core.foreground import estimate_foreground as estimator

    out = torch.empty_like(rgb_bchw)
    for i in range(rgb_bchw.shape[0]):
        comfy_env.check_interrupt()
        fg = estimator(rgb_bchw[i:i + 1].to(device), alpha[i:i + 1].to(device))
        out[i:i + 1] = fg.to(out.device, out.dtype)
    return out


def predict_alpha(ben_model, rgb: torch.Tensor, batch_size: int, working_size: int) -> torch.Tensor:
    """Run BEN2 over every image of ``rgb`` ``[B,H,W,3]`` in chunks of ``batch_size``; ``[B,H,W]`` float32 CPU.

    Drives ComfyUI's progress bar (one step per image) and stops with ComfyUI's interrupt exception
    between chunks when the user cancels.
    """
    predictor = ben_model.predictor(batch_size=batch_size, working_size=working_size)
    progress = comfy_env.progress_callback(rgb.shape[0])

    def should_stop() -> bool:
        comfy_env.check_interrupt()  # raises InterruptProcessingException inside ComfyUI
        return False

    alpha = predictor.predict_alpha(rgb, progress=progress, should_stop=should_stop)
    if isinstance(alpha, list):  # only for mixed-size lists, which a ComfyUI IMAGE batch never is
        alpha = torch.stack(alpha)
    return alpha.to(torch.float32)


class BEN2RemoveBackground:
    DESCRIPTION = ("Removes the background of every image in the batch with BEN2. Outputs the cut-out (transparent "
                   "RGBA, or RGB over a colour) and the soft mask, 1 = foreground. Note: ComfyUI's Load Image "
                   "masks and Join Image with Alpha use the opposite polarity (1 = transparent): use invert_mask "
                   "or an Invert Mask node for them.")
    CATEGORY = CATEGORY
    FUNCTION = "remove_background"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "mask")
    OUTPUT_TOOLTIPS = (
        "Cut-out at the input size: RGBA (4 channels, transparent background; save it with Save Image, but 4-channel "
        "images do not go into a VAE: use the RGB mode or 'Join Image with Alpha' for that) or RGB composited over "
        "background_colour. Always shows the foreground, whatever invert_mask says.",
        "Soft alpha at the image size, float 0..1, 1 = foreground (0 = foreground if invert_mask is on). Feed it to "
        "Show Trimap / Refine Mask (BEN2).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "ben_model": ("BEN_MODEL", {"tooltip": "The network from Load BEN (BEN2)."}),
                "image": ("IMAGE", {"tooltip": "Images of any size; every image of the batch is processed. "
                                               "An alpha channel (RGBA input) is ignored."}),
                "output_mode": (OUTPUT_MODES, {
                    "default": "RGBA",
                    "tooltip": "RGBA: transparent cut-out (4 channels; don't feed it to a VAE). RGB: the foreground "
                               "composited over background_colour (3 channels, works everywhere)."}),
                "background_colour": ("STRING", {
                    "default": "#FFFFFF",
                    "tooltip": "Colour behind the foreground in RGB mode: #RRGGBB, #RGB or r,g,b (0-255)."}),
                "refine_foreground": ("BOOLEAN", {
                    "default": True,
                    "tooltip": "Estimate the true foreground colours at semi-transparent edges (blur fusion, as "
                               "upstream BEN2's refine_foreground) so hair and edges carry no old-background colour. "
                               "Costs a little time at full resolution."}),
                "invert_mask": ("BOOLEAN", {
                    "default": False,
                    "tooltip": "Output the MASK as 1 = background (the polarity of ComfyUI's Load Image masks and "
                               "Join Image with Alpha). The IMAGE output is unaffected."}),
                "batch_size": ("INT", {
                    "default": 1, "min": 1, "max": 64,
                    "tooltip": "How many images go through the network at once. Larger is faster on a big GPU but "
                               "needs more VRAM (about 1-2 GB per image at 1024 in fp16). All images are processed "
                               "either way."}),
            },
            "optional": {
                "working_size": (WORKING_SIZES, {
                    "default": "1024",
                    "tooltip": "Square size the network sees. 1024 is BEN2's native size (best quality); 768/512 are "
                               "faster with coarser edges. The mask is always returned at the image size."}),
            },
        }

    def remove_background(self, ben_model, image, output_mode="RGBA", background_colour="#FFFFFF",
                          refine_foreground=True, invert_mask=False, batch_size=1, working_size="1024"):
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        if output_mode == "RGB":
            parse_colour(background_colour)  # fail before the slow part
        size = int(working_size)
        if str(size) not in WORKING_SIZES:
            raise ValueError(f"working_size must be one of {WORKING_SIZES}, got {working_size!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not hasattr(ben_model, "predictor"):
            raise TypeError(f"ben_model must come from Load BEN (BEN2), got {type(ben_model).__name__}")

        rgb = tensors.image_rgb(image)                                   # [B,H,W,3] new tensor
        alpha = predict_alpha(ben_model, rgb, int(batch_size), size)     # [B,H,W] cpu float32
        rgb_bchw = rgb.permute(0, 3, 1, 2).to(alpha.device)
        if refine_foreground:
            fg = foreground_colours(rgb_bchw, alpha, ben_model.device)
        else:
            fg = rgb_bchw
        out_image = tensors.compose_output(fg, alpha, output_mode, background_colour)
        out_mask = 1.0 - alpha if invert_mask else alpha
        dev = comfy_env.intermediate_device()
        return (out_image.to(dev), out_mask.contiguous().to(dev))
