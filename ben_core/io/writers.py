"""What a cut-out job writes for an image: the file format rules and the encoder, shared by the CLI and
the distributed stage (so both write byte-identical files).

* transparent cut-out (no background): RGBA PNG, or RGBA WebP with ``image_format="webp"``; JPEG has no
  alpha, so asking for it without a background is an error, never a silent PNG;
* composited over a colour: RGB in the chosen format (PNG, JPEG, WebP);
* ``mask_only``: the alpha matte as a greyscale image in the chosen format.

The input's ICC colour profile is carried to colour outputs (the pixels were never converted, so they are
still in that colour space); a greyscale matte carries none. Files are written with
:func:`ben_core.io.files.atomic_output`.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch

from .files import atomic_output

IMAGE_FORMATS = ("png", "jpg", "webp")
#: Pillow format name and save options per format (quality 95 for the lossy ones).
_SAVE = {
    "png": ("PNG", {}),
    "jpg": ("JPEG", {"quality": 95}),
    "webp": ("WEBP", {"quality": 95}),
}


@dataclass(frozen=True)
class OutputFormat:
    """How a cut-out is written: ``background`` None (transparent) or ``(r, g, b)`` floats 0..1,
    ``image_format`` one of :data:`IMAGE_FORMATS`, ``mask_only`` for the greyscale matte."""

    background: Optional[Tuple[float, float, float]] = None
    image_format: str = "png"
    mask_only: bool = False

    def check(self) -> "OutputFormat":
        """Raise ValueError (naming the option and the fix) for a combination that cannot be written."""
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image format must be one of {IMAGE_FORMATS}, got {self.image_format!r}")
        if self.mask_only and self.background is not None:
            raise ValueError("--mask-only writes the alpha matte; it cannot be combined with --background")
        if self.image_format == "jpg" and self.background is None and not self.mask_only:
            raise ValueError("--format jpg cannot store transparency: give --background '#RRGGBB' to composite "
                             "over a colour, or use --format png / webp for a transparent cut-out")
        return self

    @property
    def suffix(self) -> str:
        """The output file's extension, with the dot."""
        return "." + self.image_format

    @property
    def mode(self) -> str:
        """The PIL mode written: L (matte), RGBA (transparent) or RGB (over a colour)."""
        if self.mask_only:
            return "L"
        return "RGBA" if self.background is None else "RGB"


def _array(t: Union[torch.Tensor, np.ndarray]) -> np.ndarray:
    arr = t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    if arr.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixels, got {arr.dtype}")
    return arr


def encode_cutout(alpha, image, fmt: OutputFormat, icc_profile: Optional[bytes] = None) -> bytes:
    """The file's bytes for one cut-out.

    ``alpha``: uint8 ``[H, W]`` (0 = background); ``image``: uint8 ``[H, W, 4]`` (transparent) or
    ``[H, W, 3]`` (over a colour), None with ``mask_only``; tensors or numpy arrays on the CPU.
    """
    from PIL import Image

    fmt.check()
    if fmt.mask_only:
        pixels = Image.fromarray(_array(alpha), "L")
        if fmt.image_format == "webp":  # WebP has no grey mode
            pixels = pixels.convert("RGB")
    else:
        pixels = Image.fromarray(_array(image), fmt.mode)
    name, options = _SAVE[fmt.image_format]
    options = dict(options)
    if icc_profile and not fmt.mask_only:
        options["icc_profile"] = icc_profile
    buf = io.BytesIO()
    pixels.save(buf, format=name, **options)
    return buf.getvalue()


def write_file(dst: Union[str, Path], data: bytes) -> None:
    """Write ``data`` to ``dst`` atomically (see :func:`ben_core.io.files.atomic_output`)."""
    with atomic_output(dst) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def is_complete_image(path: Union[str, Path]) -> bool:
    """Whether ``path`` is a whole PNG / JPEG / WebP file (what ``--skip-existing`` accepts as done).

    A cheap structural check - the format's signature at the start and its end marker (PNG IEND chunk,
    JPEG EOI) or declared length (WebP RIFF) at the end - so resuming a job over tens of thousands of files
    reads a few bytes of each, and a file truncated by an older version or another tool is redone.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if not p.is_file() or size < 16:
            return False
        with open(p, "rb") as f:
            head = f.read(12)
            f.seek(size - 12)
            tail = f.read(12)
    except OSError:
        return False
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return tail == _PNG_END
    if head.startswith(b"\xff\xd8"):
        return tail.endswith(b"\xff\xd9")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return int.from_bytes(head[4:8], "little") + 8 == size
    return False
