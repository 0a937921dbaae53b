"""A batch of the caller's images, validated up front and handed out chunk by chunk on a device.

:class:`ImageBatch` holds ``[B, H, W, C]`` or a list of single images of any sizes (the one input policy
of :mod:`ben_core.io.inputs`); on CUDA the next chunk's upload (pinned memory, a side stream) overlaps the
work on the current one.
"""
from __future__ import annotations

from typing import Iterator, List, Optional, Tuple, Union

import numpy as np
import torch

from .inputs import check_array, check_values, image_tensor, is_pil, numpy_to_tensor, pil_to_tensor

__all__ = ["Chunk", "ImageBatch"]

#: A chunk of validated images on one device, channels last, in their own dtype (uint8, bool or float):
#: ``[n, H, W, C]``, or a list of ``[H_i, W_i, C]``.
Chunk = Union[torch.Tensor, List[torch.Tensor]]


def _pinned(t: torch.Tensor) -> torch.Tensor:
    """``t`` in page-locked memory for an asynchronous upload; ``t`` itself where the platform refuses
    to pin (e.g. WSL's small pinned-memory limit): the copy is then synchronous, the result the same."""
    try:
        return t.pin_memory()
    except RuntimeError:
        return t


class ImageBatch:
    """The caller's images, validated up front and converted chunk by chunk.

    ``images``: torch tensor or numpy array ``[B, H, W, C]`` / ``[H, W, C]`` / ``[H, W]``, a PIL image,
    or a list of PIL images / single-image arrays (sizes may differ). Arrays are validated here (cheap);
    PIL images in a list are converted when their chunk is asked for.

    Attributes: ``sizes`` (``(H, W)`` per image), ``single`` (one image was given, not a batch).
    """

    def __init__(self, images):
        self.stacked: Optional[torch.Tensor] = None
        self.items: List = []
        self.single = False
        if is_pil(images):
            images, self.single = [images], True
        if isinstance(images, (list, tuple)):
            if len(images) == 0:
                raise ValueError("empty list of images: nothing to predict")
            self.items = list(images)
            self.sizes = []
            for i, im in enumerate(self.items):
                if is_pil(im):
                    if im.width == 0 or im.height == 0:
                        raise ValueError(f"images[{i}]: empty PIL image ({im.width}x{im.height})")
                    self.sizes.append((im.height, im.width))
                else:
                    self.items[i] = image_tensor(im, f"images[{i}]")
                    self.sizes.append(tuple(self.items[i].shape[:2]))
            return
        if isinstance(images, np.ndarray):
            t = numpy_to_tensor(images)
        elif isinstance(images, torch.Tensor):
            t = images
        else:
            raise TypeError("images must be a torch tensor or numpy array [B,H,W,C] / [H,W,C], a PIL image, or a "
                            f"list of those; got {type(images).__name__}")
        if t.dim() == 2:
            t = t.unsqueeze(-1)
        if t.dim() == 3:
            t, self.single = t.unsqueeze(0), True
        if t.dim() != 4:
            raise ValueError(f"images must be [B,H,W,C] or [H,W,C] (channels last), got shape {tuple(t.shape)}")
        if t.shape[0] == 0:
            raise ValueError("empty batch (B = 0): nothing to predict")
        check_array(t, "images")
        check_values(t, "images")
        self.stacked = t
        self.sizes = [tuple(t.shape[1:3])] * t.shape[0]

    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def uniform(self) -> bool:
        """All images have the same size."""
        return len(set(self.sizes)) == 1

    def _host(self, start: int, end: int) -> Chunk:
        if self.stacked is not None:
            return self.stacked[start:end]
        return [pil_to_tensor(item) if is_pil(item) else item for item in self.items[start:end]]

    def chunk(self, start: int, end: int, device) -> Chunk:
        """Images ``start .. end-1`` on ``device`` as given (no conversion; PIL images become tensors):
        ``[n, H, W, C]`` for a stacked batch, else a list of ``[H_i, W_i, C]``. Validated already."""
        part = self._host(start, end)
        return part.to(device) if isinstance(part, torch.Tensor) else [t.to(device) for t in part]

    def chunks(self, batch_size: int, device) -> Iterator[Tuple[int, int, Chunk]]:
        """``(start, end, chunk)`` for consecutive chunks of ``batch_size`` images on ``device``.

        On a CUDA device, images held in CPU memory go up through pinned memory with non-blocking
        copies on a side stream, and the next chunk's upload is issued before the current chunk is
        handed out, so it overlaps the caller's work on the current one. Elsewhere: :meth:`chunk`.
        """
        device = torch.device(device)
        bounds = [(s, min(s + batch_size, len(self))) for s in range(0, len(self), batch_size)]
        if device.type != "cuda":
            for start, end in bounds:
                yield start, end, self.chunk(start, end, device)
            return
        side = torch.cuda.Stream(device)

        def upload(start: int, end: int) -> Chunk:
            part = self._host(start, end)
            parts = [part] if isinstance(part, torch.Tensor) else part
            with torch.cuda.stream(side):
                up = [_pinned(t).to(device, non_blocking=True) if t.device.type == "cpu" else t.to(device)
                      for t in parts]
            return up[0] if isinstance(part, torch.Tensor) else up

        ahead = upload(*bounds[0])
        for i, (start, end) in enumerate(bounds):
            current = ahead
            main = torch.cuda.current_stream(device)
            main.wait_stream(side)  # the current chunk's copy is done before anything reads it
            for t in ([current] if isinstance(current, torch.Tensor) else current):
                t.record_stream(main)  # its memory is not reused while the main stream works on it
            if i + 1 < len(bounds):
                ahead = upload(*bounds[i + 1])
            yield start, end, current
