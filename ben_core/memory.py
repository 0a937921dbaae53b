"""How much device memory a run needs besides the weights: what the ComfyUI nodes ask ComfyUI to free
before they run (``load_models_gpu(memory_required=)`` / ``free_memory``), so that neither a batch nor a
4K image runs out of memory and no other model is evicted for nothing.

The figures were measured on the CPU by ``python -m benchmarks.bench_node_memory`` (2026-12-07): the
network's activations with every tensor on torch's ``meta`` device (real sizes, no data: BEN2 at full size
for batch 1/2/4, working size 512/768/1024, float32 and float16), and the pipeline's full-resolution
tensors (the image's float copy, alpha, foreground colours, the cut-out) by tracking every tensor the
pipeline allocates, for 1920x1080 and 3840x2160 at batch 1 and 2; the refinement likewise, and one
ViTMatte-small tile on meta. Both grow
linearly (network: with batch x working area, within 0.3 %; pipeline: with batch x image area). The
formulas below bound every measured peak and add :data:`MARGIN` for what the CPU cannot show: the CUDA
caching allocator's rounding, cuDNN workspaces, the fp16 copies of the weights autocast keeps during a
forward. ``benchmarks/gpu_check.py`` compares them with the peak CUDA measures, so the first GPU run
calibrates them.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

__all__ = ["FIXED_BYTES", "MARGIN", "VITMATTE_TILE_BYTES", "cutout_bytes", "network_bytes", "pipeline_bytes",
           "refine_bytes", "vitmatte_bytes", "with_margin"]

#: Factor on every measured figure (allocator rounding, cuDNN workspaces; see the module docstring).
MARGIN = 1.5

#: Fixed bytes on top (the normalisation constants, small index tensors, the allocator's first blocks).
FIXED_BYTES = 128 * 2 ** 20

#: Network activations per image per working-size pixel, by element size (float32: at most 435 B measured,
#: float16: 231 B).
_NETWORK_BYTES_PER_PX = {4: 436.0, 2: 231.0}

#: Pipeline per full-resolution pixel: the first image of a chunk (strip buffers, blur fusion) and every
#: image of it (its float copy and the prefetched next chunk's, alpha, foreground, the RGBA cut-out).
_PIPELINE_FIRST_BYTES_PER_PX = 60.0
_PIPELINE_EACH_BYTES_PER_PX = 72.0

#: Refinement (guided filter at the fit's resolution, applied in strips; foreground colours) per pixel.
_REFINE_BYTES_PER_PX = 150.0


def _element_size(dtype: torch.dtype) -> int:
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be torch.float32, torch.float16 or torch.bfloat16, got {dtype!r}")
    return 4 if dtype == torch.float32 else 2


def _check_positive(**values) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")


def network_bytes(batch_size: int, working_size: int, dtype: torch.dtype = torch.float32) -> int:
    """Peak activation bytes of one BEN2 forward pass of ``batch_size`` images ``[B, 3, S, S]`` at
    ``working_size`` S in ``dtype`` (half precision: float16 / bfloat16 activations), without the margin."""
    _check_positive(batch_size=batch_size, working_size=working_size)
    return int(_NETWORK_BYTES_PER_PX[_element_size(dtype)] * batch_size * working_size * working_size)


def pipeline_bytes(batch_size: int, image_hw: Tuple[int, int]) -> int:
    """Peak bytes of the cut-out pipeline's full-resolution tensors for a chunk of ``batch_size`` images of
    ``image_hw`` = (H, W) (the largest image of the batch), without the margin."""
    _check_positive(batch_size=batch_size, height=int(image_hw[0]), width=int(image_hw[1]))
    area = int(image_hw[0]) * int(image_hw[1])
    return int((_PIPELINE_FIRST_BYTES_PER_PX + _PIPELINE_EACH_BYTES_PER_PX * batch_size) * area)


def refine_bytes(image_hw: Tuple[int, int]) -> int:
    """Peak bytes of Refine Mask (guided filter and foreground colours) for one image of ``image_hw`` =
    (H, W), without the margin."""
    _check_positive(height=int(image_hw[0]), width=int(image_hw[1]))
    return int(_REFINE_BYTES_PER_PX * int(image_hw[0]) * int(image_hw[1]))


#: One ViTMatte-small tile of 640x640 (tile 512 + 2 x margin 64), float32, measured on meta: 366.4 MiB.
VITMATTE_TILE_BYTES = 367 * 2 ** 20


def vitmatte_bytes(image_hw: Tuple[int, int]) -> int:
    """Peak bytes of Refine Mask with ViTMatte for one image of ``image_hw`` = (H, W): one tile's activations
    plus the refinement's full-resolution tensors (:func:`refine_bytes`), without the margin."""
    return VITMATTE_TILE_BYTES + refine_bytes(image_hw)


def with_margin(nbytes: int) -> int:
    """``nbytes`` times :data:`MARGIN` plus :data:`FIXED_BYTES`: what to ask ComfyUI for."""
    return int(MARGIN * nbytes) + FIXED_BYTES


def cutout_bytes(batch_size: int, working_size: int, dtype: torch.dtype,
                 image_hw: Optional[Sequence[int]] = None, half_weight_copies: int = 0) -> int:
    """What a Remove Background run needs besides the weights: :func:`network_bytes` + :func:`pipeline_bytes`
    (for ``image_hw`` = (H, W) of the largest image; None: the network alone), times :data:`MARGIN`, plus
    ``half_weight_copies`` (bytes of the half-precision weight copies autocast makes over float32 weights:
    half the weights' bytes in fp16/bf16, else 0) and :data:`FIXED_BYTES`."""
    need = network_bytes(batch_size, working_size, dtype)
    if image_hw is not None:
        need += pipeline_bytes(batch_size, (int(image_hw[0]), int(image_hw[1])))
    return with_margin(need) + int(half_weight_copies)
