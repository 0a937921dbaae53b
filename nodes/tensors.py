"""Conversions between ComfyUI tensors and ben_core tensors, plus the batch/size rules the nodes share.

ComfyUI conventions: IMAGE is ``[B,H,W,C]`` float 0..1 (C = 3, sometimes 4 or 1), MASK is ``[B,H,W]``
float 0..1 (a single ``[H,W]`` mask also occurs). ben_core conventions: images ``[B,3,H,W]`` float 0..1,
masks/alpha/trimaps ``[B,H,W]`` float 0..1 with 1 = foreground.

Every function here returns new tensors; nothing modifies its arguments in place.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ben_core.compose import composite, parse_colour


def _shape(t) -> str:
    return "x".join(str(s) for s in t.shape) if isinstance(t, torch.Tensor) else type(t).__name__


def check_image(image, name: str = "image") -> torch.Tensor:
    """Validate a ComfyUI IMAGE and return it as ``[B,H,W,C]`` (a view, never a copy-and-modify).

    Accepts ``[B,H,W,C]`` or ``[H,W,C]`` (batch of one) with C in {1, 3, 4}, floating point, values 0..1.
    Raises TypeError for non-tensors / non-float dtypes and ValueError for bad shapes or empty images.
    """
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name}: expected a ComfyUI IMAGE tensor [B,H,W,C], got {type(image).__name__}.")
    if not torch.is_floating_point(image):
        raise TypeError(f"{name}: expected a float IMAGE (values 0..1), got dtype {image.dtype}; "
                        "convert it with image.float() / 255 first.")
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{name}: expected a ComfyUI IMAGE of shape [B,H,W,C] with C in 1/3/4, got shape "
                         f"{_shape(image)}. (Channels-first [B,C,H,W] tensors are not ComfyUI IMAGEs.)")
    if image.shape[0] == 0 or image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"{name}: the IMAGE is empty (shape {_shape(image)}).")
    return image


def image_rgb(image, name: str = "image") -> torch.Tensor:
    """ComfyUI IMAGE -> RGB ``[B,H,W,3]`` float32 0..1 (new tensor).

    4-channel (RGBA) images lose their alpha channel (the network only sees colour); 1-channel images
    are repeated to grey RGB. Values are clamped to 0..1.
    """
    image = check_image(image, name)
    c = image.shape[-1]
    if c == 4:
        rgb = image[..., :3]
    elif c == 1:
        rgb = image.expand(-1, -1, -1, 3)
    else:
        rgb = image
    return rgb.to(torch.float32).clamp(0.0, 1.0).contiguous()


def image_to_bchw(image, name: str = "image") -> torch.Tensor:
    """ComfyUI IMAGE -> ben_core image ``[B,3,H,W]`` float32 0..1 (new tensor, alpha dropped)."""
    return image_rgb(image, name).permute(0, 3, 1, 2).contiguous()


def check_mask(mask, name: str = "mask") -> torch.Tensor:
    """Validate a ComfyUI MASK and return it as ``[B,H,W]`` float32 (new tensor, values clamped to 0..1).

    Accepts ``[B,H,W]``, ``[H,W]`` and ``[B,1,H,W]``. Raises TypeError/ValueError naming the shape.
    """
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name}: expected a ComfyUI MASK tensor [B,H,W], got {type(mask).__name__}.")
    if mask.dtype == torch.bool:
        mask = mask.float()
    if not torch.is_floating_point(mask):
        raise TypeError(f"{name}: expected a float MASK (values 0..1), got dtype {mask.dtype}.")
    if mask.dim() == 2:
        mask = mask.unsqueeze(0)
    elif mask.dim() == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.dim() != 3:
        raise ValueError(f"{name}: expected a ComfyUI MASK of shape [B,H,W] or [H,W], got shape {_shape(mask)}.")
    if mask.shape[0] == 0 or mask.shape[1] == 0 or mask.shape[2] == 0:
        raise ValueError(f"{name}: the MASK is empty (shape {_shape(mask)}).")
    return mask.to(torch.float32).clamp(0.0, 1.0)


def match_mask(mask, image, mask_name: str = "mask", image_name: str = "image", mode: str = "bilinear"
               ) -> torch.Tensor:
    """Fit a MASK to an IMAGE batch: returns ``[B,H,W]`` float32 for an image ``[B,H,W,C]``.

    Rules: a mask batch of 1 is broadcast over the image batch; a mask batch equal to the image batch
    is used as is; a mask of another height/width is resized to the image size (``mode`` "bilinear"
    for soft masks, "nearest" for trimaps so their 0/0.5/1 levels survive). Any other batch size gives a
    ValueError naming both shapes. The result is a new tensor on the image's device. ``image`` must be a
    ComfyUI IMAGE (see :func:`check_image`); only its batch and spatial size are read.
    """
    img = check_image(image, image_name)
    b, h, w = img.shape[0], img.shape[1], img.shape[2]
    # on the image's device: under --gpu-only our masks arrive on the GPU while Load Image's images are on the CPU
    m = check_mask(mask, mask_name).to(img.device)
    if m.shape[0] not in (1, b):
        raise ValueError(f"{mask_name} has batch size {m.shape[0]} (shape {_shape(m)}) but {image_name} has batch "
                         f"size {b} (shape {_shape(img)}): give one mask for all images or one mask per image.")
    if m.shape[1:] != (h, w):
        m = resize_maps(m, h, w, mode)
    if m.shape[0] != b:
        m = m.expand(b, h, w)
    return m.contiguous()


def resize_maps(maps: torch.Tensor, height: int, width: int, mode: str = "bilinear") -> torch.Tensor:
    """Resize ``[B,H,W]`` maps to ``[B,height,width]`` (bilinear with antialias when shrinking, or nearest)."""
    x = maps.unsqueeze(1).to(torch.float32)
    if mode == "nearest":
        y = F.interpolate(x, size=(height, width), mode="nearest-exact")
    elif mode == "bilinear":
        shrink = height < x.shape[-2] or width < x.shape[-1]
        y = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=shrink)
    else:
        raise ValueError(f"resize mode must be 'bilinear' or 'nearest', got {mode!r}")
    return y[:, 0].clamp(0.0, 1.0)


def compose_output(foreground: torch.Tensor, alpha: torch.Tensor, mode: str, colour: str) -> torch.Tensor:
    """Build the IMAGE output from a foreground ``[B,3,H,W]`` 0..1 and alpha ``[B,H,W]`` 0..1.

    mode "RGBA": ``[B,H,W,4]`` = foreground colours + alpha as 4th channel (a cut-out).
    mode "RGB": ``[B,H,W,3]`` = foreground composited over ``colour`` (text, see
    :func:`ben_core.compose.parse_colour`). Returns float32 on the inputs' device (a new tensor).
    """
    if mode == "RGBA":
        bg = None
    elif mode == "RGB":
        bg = parse_colour(colour)
    else:
        raise ValueError(f"output mode must be 'RGBA' or 'RGB', got {mode!r}")
    out = composite(foreground.permute(0, 2, 3, 1), alpha, bg)   # channels-last [B,H,W,C]
    return out.to(torch.float32).contiguous()
