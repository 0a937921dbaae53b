"""Images in every form users have, as validated tensors: the one input policy of ben_core.

* :func:`read_image_file` reads an image file (EXIF orientation applied, first frame, its colour
  profile) for the CLI and the distributed stage; :func:`load_image_file` returns just its pixels.
* :func:`image_tensor` turns one PIL image / numpy array / torch tensor into ``[H, W, C]``.
* :class:`ImageBatch` holds a batch (``[B, H, W, C]`` or a list of single images of any sizes) and
  hands out chunks on a device, as they are (:data:`Chunk`); :func:`to_float_rgb` turns images into
  float RGB ``[n, 3, H, W]`` in 0..1 where a step needs it, one image at a time in the library, so a
  chunk never exists as full-resolution float copies all at once.
* :func:`resize` is the one resize of images and maps (bilinear, anti-aliased when shrinking).

Accepted pixel formats, everywhere: uint8 0..255; float 0..1 (finite; values in -0.5..1.5 are clamped,
anything further out is refused as probably 0..255 or normalised data); bool; 16-bit (numpy uint16,
PIL ``I;16*``) and 32-bit integer PIL images (``I``) scaled by 1/65535; PIL float images (``F``) clamped
to 0..1. Channels: 3 RGB, 4 RGBA (alpha ignored, not composited), 1 grey, 2 grey + alpha. Nothing here
modifies its argument.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ImageBatch", "Chunk", "ImageFile", "image_tensor", "read_image_file", "load_image_file", "frame_count",
           "to_float_rgb", "resize"]

#: A chunk of validated images on one device, channels last, in their own dtype (uint8, bool or float):
#: ``[n, H, W, C]``, or a list of ``[H_i, W_i, C]``.
Chunk = Union[torch.Tensor, List[torch.Tensor]]

_FLOAT_RANGE = (-0.5, 1.5)  # floats outside this are almost surely 0..255 or normalised data, not 0..1
_OK_DTYPES = (torch.uint8, torch.bool, torch.float16, torch.bfloat16, torch.float32, torch.float64)
_WIDE_INT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_U16_MAX = 65535.0


def _is_pil(x) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
    return isinstance(x, Image.Image)


def pil_to_tensor(im) -> torch.Tensor:
    """PIL image -> ``[H, W, 3]`` tensor: uint8 for 8-bit modes, float32 0..1 for 16/32-bit integer
    (scaled by 1/65535, clipped) and float modes (clipped). Alpha is dropped, not composited."""
    mode = im.mode
    if mode == "RGB":
        arr = np.array(im)
    elif mode in _WIDE_INT_MODES or mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        if mode == "F" and not np.isfinite(arr).all():
            raise ValueError("PIL image (mode 'F') contains NaN/inf")
        if mode != "F":
            arr = arr / _U16_MAX
        arr = np.clip(arr, 0.0, 1.0)[..., None].repeat(3, axis=-1)
    else:  # L, LA, RGBA, P, PA, CMYK, YCbCr, 1, ...: PIL's own conversion
        try:
            if mode == "P" and "transparency" in im.info:  # PIL warns converting such palettes straight to RGB
                im = im.convert("RGBA")
            arr = np.array(im.convert("RGB"))
        except (ValueError, OSError) as e:
            raise TypeError(f"cannot convert a PIL image of mode {mode!r} to RGB ({e}); convert it first") from e
    return torch.from_numpy(np.ascontiguousarray(arr))


@dataclass(frozen=True)
class ImageFile:
    """An image file as read by :func:`read_image_file`: ``pixels`` (``[H, W, 3]`` uint8, or float32 0..1
    for 16-bit / float files), ``icc_profile`` (the embedded colour profile's bytes, or None; an output
    in the same colour space should carry it) and ``frames`` (> 1 for animations / multi-page files, of
    which only the first frame is in ``pixels``)."""

    pixels: torch.Tensor
    icc_profile: Optional[bytes]
    frames: int


def read_image_file(source: Union[str, Path, bytes]) -> ImageFile:
    """Read an image file (a path, or the file's bytes) fully: truncated files raise, the EXIF orientation
    is applied, the first frame is returned as :func:`pil_to_tensor` does, with the colour profile and
    frame count (one open, one decode).

    Raises ValueError for an empty (0-byte) file, OSError / PIL.UnidentifiedImageError for unreadable ones.
    """
    import io

    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ValueError("empty file (0 bytes)")
        try:
            opened = Image.open(io.BytesIO(bytes(source)))
        except UnidentifiedImageError:
            raise UnidentifiedImageError("not an image file Pillow can read (unknown format or corrupt)") from None
    else:
        if Path(source).stat().st_size == 0:
            raise ValueError("empty file (0 bytes)")
        opened = Image.open(source)
    with opened as im:
        frames = max(1, int(getattr(im, "n_frames", 1)))
        im.load()
        icc = im.info.get("icc_profile") or None
        return ImageFile(pil_to_tensor(ImageOps.exif_transpose(im)), icc, frames)


def load_image_file(path: Union[str, Path]) -> torch.Tensor:
    """:func:`read_image_file`'s pixels: ``[H, W, 3]`` uint8, or float32 0..1 for 16-bit / float files."""
    return read_image_file(path).pixels


def frame_count(path: Union[str, Path]) -> int:
    """Frames in an image file (animated GIF/WebP/PNG, multi-page TIFF > 1); 1 otherwise or if unknown."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return max(1, int(getattr(im, "n_frames", 1)))
    except Exception:  # only needed for a warning; reading errors are reported by load_image_file
        return 1


def _numpy_to_tensor(arr: np.ndarray) -> torch.Tensor:
    if arr.dtype == np.uint16:
        return torch.from_numpy(arr.astype(np.float32) / _U16_MAX)
    with warnings.catch_warnings():  # read-only arrays: we never write into the result
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return torch.from_numpy(np.ascontiguousarray(arr) if not arr.flags.c_contiguous else arr)


def _check_array(t: torch.Tensor, what: str) -> None:
    if t.dtype not in _OK_DTYPES:
        raise TypeError(f"{what}: unsupported dtype {t.dtype}; pass uint8 (0..255) or float (0..1) images")
    if t.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"{what}: expected channels last [..., H, W, C] with C = 3 (RGB), 4 (RGBA), 1 or 2 "
                         f"(grey, grey+alpha); got shape {tuple(t.shape)}"
                         + (" -- this looks channels-first: permute to [B,H,W,C]"
                            if t.dim() >= 3 and t.shape[-3] in (1, 3, 4) else ""))
    if t.shape[-2] == 0 or t.shape[-3] == 0:
        raise ValueError(f"{what}: empty image (shape {tuple(t.shape)})")


def _check_values(t: torch.Tensor, what: str) -> None:
    """Floats must be finite and (roughly) 0..1; checked one image at a time (no full-batch temporaries)."""
    if not t.is_floating_point():
        return
    batch = t if t.dim() == 4 else t.unsqueeze(0)
    for i in range(batch.shape[0]):
        lo, hi = torch.aminmax(batch[i])
        lo, hi = float(lo), float(hi)
        name = what if t.dim() == 3 else f"{what}[{i}]"
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(f"{name} contains NaN or inf values; fix the upstream node/image")
        if lo < _FLOAT_RANGE[0] or hi > _FLOAT_RANGE[1]:
            raise ValueError(f"{name}: float images must be in 0..1, got values in [{lo:.3g}, {hi:.3g}] "
                             "(0..255 floats: divide by 255 or pass uint8; normalised tensors: undo the "
                             "normalisation)")


def image_tensor(img, what: str = "image") -> torch.Tensor:
    """One image (PIL, numpy or torch ``[H, W]`` / ``[H, W, C]`` / ``[1, H, W, C]``) -> validated
    ``[H, W, C]`` tensor (a view where possible; uint8, bool or float). Raises TypeError/ValueError
    naming ``what`` for anything not accepted (see the module docstring)."""
    if _is_pil(img):
        if img.width == 0 or img.height == 0:
            raise ValueError(f"{what}: empty PIL image ({img.width}x{img.height})")
        return pil_to_tensor(img)
    if isinstance(img, np.ndarray):
        t = _numpy_to_tensor(img)
    elif isinstance(img, torch.Tensor):
        t = img
    else:
        raise TypeError(f"{what}: expected a PIL image, numpy array or torch tensor, got {type(img).__name__}")
    if t.dim() == 2:
        t = t.unsqueeze(-1)
    if t.dim() == 4 and t.shape[0] == 1:  # a one-image batch [1,H,W,C]
        t = t[0]
    if t.dim() != 3:
        raise ValueError(f"{what}: expected one image [H,W,C] or [H,W], got shape {tuple(t.shape)}")
    _check_array(t, what)
    _check_values(t, what)
    return t


def to_float_rgb(raw: torch.Tensor) -> torch.Tensor:
    """``[n, H, W, C]`` of any accepted dtype -> new float32 ``[n, 3, H, W]`` in 0..1 (never aliases ``raw``).

    uint8 is divided by 255, floats are clamped to 0..1, grey is repeated, alpha is dropped. The result
    is the only full-size tensor made: converted and laid out channels-first in one copy.
    """
    n, h, w, c = raw.shape
    src = raw.permute(0, 3, 1, 2)
    src = src[:, :1].expand(n, 3, h, w) if c in (1, 2) else src[:, :3]
    x = torch.empty((n, 3, h, w), dtype=torch.float32, device=raw.device)
    x.copy_(src)
    if raw.dtype == torch.uint8:
        x.div_(255.0)
    elif raw.dtype != torch.bool:
        x.clamp_(0.0, 1.0)
    return x


def resize(x: torch.Tensor, size: Tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize float ``[n, C, h, w]`` to ``size = (H, W)``: the one resize of images, alpha and masks.

    ``mode="bilinear"``: ``align_corners=False``, anti-aliased when shrinking (like PIL's BILINEAR);
    on a backend without anti-aliased bilinear the resize runs on the CPU and comes back.
    ``mode="nearest"``: nearest-exact (keeps discrete levels, e.g. trimaps). Returns ``x`` itself when
    it already has that size, else a new tensor on ``x``'s device.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest-exact")
    if mode != "bilinear":
        raise ValueError(f"resize mode must be 'bilinear' or 'nearest', got {mode!r}")
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    try:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    except (RuntimeError, NotImplementedError):
        if x.device.type == "cpu":
            raise
        return F.interpolate(x.cpu(), size=size, mode="bilinear", align_corners=False,
                             antialias=shrink).to(x.device)


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
        if _is_pil(images):
            images, self.single = [images], True
        if isinstance(images, (list, tuple)):
            if len(images) == 0:
                raise ValueError("empty list of images: nothing to predict")
            self.items = list(images)
            self.sizes = []
            for i, im in enumerate(self.items):
                if _is_pil(im):
                    if im.width == 0 or im.height == 0:
                        raise ValueError(f"images[{i}]: empty PIL image ({im.width}x{im.height})")
                    self.sizes.append((im.height, im.width))
                else:
                    self.items[i] = image_tensor(im, f"images[{i}]")
                    self.sizes.append(tuple(self.items[i].shape[:2]))
            return
        if isinstance(images, np.ndarray):
            t = _numpy_to_tensor(images)
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
        _check_array(t, "images")
        _check_values(t, "images")
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
        return [pil_to_tensor(item) if _is_pil(item) else item for item in self.items[start:end]]

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
