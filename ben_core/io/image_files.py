"""Image files read fully and safely: EXIF orientation applied, the first frame, the colour profile.

:func:`read_image_file` is what the CLI, ``eval`` and the distributed stage read a file with;
:func:`load_image_file` returns just its pixels. Pixels follow :func:`ben_core.io.inputs.pil_to_tensor`.
Pillow's decompression-bomb guard stays on: an image over ``PIL.Image.MAX_IMAGE_PIXELS`` is refused with
a message naming how to allow it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from .inputs import pil_to_tensor

__all__ = ["ImageFile", "read_image_file", "load_image_file"]


@dataclass(frozen=True)
class ImageFile:
    """An image file as read by :func:`read_image_file`: ``pixels`` (``[H, W, 3]`` uint8, or float32 0..1
    for 16-bit / float files), ``icc_profile`` (the embedded colour profile's bytes, or None; an output
    in the same colour space should carry it) and ``frames`` (> 1 for animations / multi-page files, of
    which only the first frame is in ``pixels``)."""

    pixels: torch.Tensor
    icc_profile: Optional[bytes]
    frames: int


def _open(source):
    """``PIL.Image.open`` with its refusals told in words: an empty file, an unknown format, a bomb."""
    import io

    from PIL import Image, UnidentifiedImageError

    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ValueError("empty file (0 bytes)")
        source = io.BytesIO(bytes(source))
    elif Path(source).stat().st_size == 0:
        raise ValueError("empty file (0 bytes)")
    try:
        return Image.open(source)
    except UnidentifiedImageError:
        raise UnidentifiedImageError("not an image file Pillow can read (unknown format or corrupt)") from None
    except Image.DecompressionBombError as e:
        raise ValueError(f"{e} If you trust this file, allow larger images: --max-image-pixels N on the "
                         "command line (0: no limit), or PIL.Image.MAX_IMAGE_PIXELS = N in Python") from None


def read_image_file(source: Union[str, Path, bytes]) -> ImageFile:
    """Read an image file (a path, or the file's bytes) fully: truncated files raise, the EXIF orientation
    is applied, the first frame is returned as :func:`ben_core.io.inputs.pil_to_tensor` does, with the
    colour profile and frame count (one open, one decode).

    Raises ValueError for an empty (0-byte) file or one over Pillow's decompression-bomb limit (naming
    how to allow it), OSError / PIL.UnidentifiedImageError for unreadable ones.
    """
    from PIL import ImageOps

    with _open(source) as im:
        frames = max(1, int(getattr(im, "n_frames", 1)))
        im.load()
        icc = im.info.get("icc_profile") or None
        return ImageFile(pil_to_tensor(ImageOps.exif_transpose(im)), icc, frames)


def load_image_file(path: Union[str, Path]) -> torch.Tensor:
    """:func:`read_image_file`'s pixels: ``[H, W, 3]`` uint8, or float32 0..1 for 16-bit / float files."""
    return read_image_file(path).pixels
