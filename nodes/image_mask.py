"""ComfyUI IMAGE and MASK inputs: validation and the batch rules every node applies.

ComfyUI conventions: IMAGE is ``[B,H,W,C]`` float 0..1 (C = 3, sometimes 4 or 1), MASK is ``[B,H,W]``
float 0..1 (a single ``[H,W]`` mask also occurs). Batch rules: a mask batch of 1 is used for every image,
a mask of another size is resized to the image, any other mismatch is an error naming both shapes.

Nothing here modifies its arguments in place.
"""
from __future__ import annotations

import math

import torch

from ..ben_core.io.inputs import resize

#: Values an IMAGE may reach before it is refused: resampling filters (Lanczos, bicubic) overshoot 0..1 a
#: little and those images are fine (clamped when read); anything beyond is another convention (0..255).
IMAGE_RANGE_SLACK = (-0.5, 1.5)


def _shape(t) -> str:
    return "x".join(str(s) for s in t.shape) if isinstance(t, torch.Tensor) else type(t).__name__


def check_image(image, name: str = "image", check_values: bool = True) -> torch.Tensor:
    """Validate a ComfyUI IMAGE and return it as ``[B,H,W,C]`` (a view, never a copy-and-modify).

    Accepts ``[B,H,W,C]`` or ``[H,W,C]`` (batch of one) with C in {1, 3, 4}, floating point, values 0..1
    (slight resampling overshoot within :data:`IMAGE_RANGE_SLACK` is accepted). Raises TypeError for
    non-tensors / non-float dtypes and ValueError for bad shapes, empty images, NaN/inf, or values far
    outside 0..1 (e.g. 0..255 floats); ``check_values=False`` checks only the type and shape.
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
    if not check_values:
        return image
    low, high = (float(v) for v in torch.aminmax(image))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name}: the IMAGE contains NaN or infinite values; check the node that made it.")
    if low < IMAGE_RANGE_SLACK[0] or high > IMAGE_RANGE_SLACK[1]:
        hint = (" It looks like 0..255 values: divide by 255." if high > 2.0 and high <= 255.5 and low >= -0.5
                else "")
        raise ValueError(f"{name}: a ComfyUI IMAGE holds values 0..1, this one spans {low:g}..{high:g}.{hint}")
    return image


def check_mask(mask, name: str = "mask") -> torch.Tensor:
    """Validate a ComfyUI MASK and return it as ``[B,H,W]`` float32 (new tensor, values clamped to 0..1).

    Accepts ``[B,H,W]``, ``[H,W]`` and ``[B,1,H,W]``. Raises TypeError/ValueError naming ``name`` (the
    node's input) and the shape, or the NaN/inf values it contains.
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
    if not bool(torch.isfinite(mask).all()):
        raise ValueError(f"{name}: the MASK contains NaN or infinite values; check the node that made it.")
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
    img = check_image(image, image_name, check_values=False)  # only its size is used
    b, h, w = img.shape[0], img.shape[1], img.shape[2]
    # on the image's device: under --gpu-only our masks arrive on the GPU while Load Image's images are on the CPU
    m = check_mask(mask, mask_name).to(img.device)
    if m.shape[0] not in (1, b):
        raise ValueError(f"{mask_name} has batch size {m.shape[0]} (shape {_shape(m)}) but {image_name} has batch "
                         f"size {b} (shape {_shape(img)}): give one mask for all images or one mask per image.")
    if m.shape[1:] != (h, w):
        m = resize(m.unsqueeze(1), (h, w), mode)[:, 0].clamp(0.0, 1.0)
    if m.shape[0] != b:
        m = m.expand(b, h, w)
    return m.contiguous()
