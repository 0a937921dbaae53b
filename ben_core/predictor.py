"""BENPredictor: images of any size in, alpha mattes at the original size out.

Pipeline per chunk of ``batch_size`` images: to float RGB 0..1 on the model's device -> resize to the
working size (bilinear, anti-aliased) -> ImageNet normalisation -> network -> logits -> sigmoid (float32)
-> resize back to each image's size (bilinear, anti-aliased when shrinking) -> float32 CPU. The raw
sigmoid is returned (no min-max stretch), so a constant image gives a constant, finite mask.

Precision: ``dtype=torch.float16`` / ``torch.bfloat16`` runs the network under ``torch.autocast`` on the
predictor's device (weights may be fp32 or already half; autocast keeps norms/softmax in fp32). If a
chunk's logits contain NaN/inf in half precision, that chunk is recomputed in fp32 (with a temporary
fp32 copy of the network if its weights are half) and ``fallback_count`` is incremented.
"""
from __future__ import annotations

import copy
import warnings
from typing import Callable, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["BENPredictor", "PredictionCancelled", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_HALF_DTYPES = (torch.float16, torch.bfloat16)
_FLOAT_RANGE = (-0.5, 1.5)  # floats outside this are almost surely 0..255 or normalised data, not 0..1


class PredictionCancelled(RuntimeError):
    """``should_stop()`` returned True: prediction was stopped between chunks."""


# ------------------------------------------------------------------------------------------------
# input normalisation: everything becomes "images" [H,W,C] (C in 1..4) torch tensors, lazily
# ------------------------------------------------------------------------------------------------

def _is_pil(x) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
    return isinstance(x, Image.Image)


def _pil_to_tensor(im) -> torch.Tensor:
    """PIL image -> [H,W,3] tensor (uint8, or float32 0..1 for 16-bit / float modes). Alpha is dropped."""
    mode = im.mode
    if mode == "RGB":
        arr = np.array(im)
    elif mode.startswith("I;16") or mode == "I":
        arr = np.array(im).astype(np.float32) / 65535.0
        arr = np.clip(arr, 0.0, 1.0)[..., None].repeat(3, axis=-1)
    elif mode == "F":
        arr = np.array(im).astype(np.float32)
        if not np.isfinite(arr).all():
            raise ValueError("PIL image (mode 'F') contains NaN/inf")
        arr = np.clip(arr, 0.0, 1.0)[..., None].repeat(3, axis=-1)
    else:  # L, LA, RGBA, P, PA, CMYK, YCbCr, 1, ...: PIL's own conversion (alpha is dropped, not composited)
        try:
            arr = np.array(im.convert("RGB"))
        except (ValueError, OSError) as e:
            raise TypeError(f"cannot convert a PIL image of mode {mode!r} to RGB ({e}); convert it first") from e
    return torch.from_numpy(np.ascontiguousarray(arr))


def _numpy_to_tensor(arr: np.ndarray) -> torch.Tensor:
    if arr.dtype == np.uint16:
        return torch.from_numpy(arr.astype(np.float32) / 65535.0)
    with warnings.catch_warnings():  # read-only arrays: we never write into the result
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return torch.from_numpy(np.ascontiguousarray(arr) if not arr.flags.c_contiguous else arr)


_OK_DTYPES = (torch.uint8, torch.bool, torch.float16, torch.bfloat16, torch.float32, torch.float64)


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


def _single_to_tensor(img, what: str) -> torch.Tensor:
    """One image (PIL, numpy or torch [H,W] / [H,W,C]) -> validated tensor [H,W,C]."""
    if _is_pil(img):
        if img.width == 0 or img.height == 0:
            raise ValueError(f"{what}: empty PIL image ({img.width}x{img.height})")
        return _pil_to_tensor(img)
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


def _to_float_rgb(raw: torch.Tensor) -> torch.Tensor:
    """[n,H,W,C] any supported dtype -> new float32 [n,3,H,W] in 0..1 (never aliases ``raw``)."""
    if raw.dtype == torch.uint8:
        x = raw.to(torch.float32).div_(255.0)
    elif raw.dtype == torch.bool:
        x = raw.to(torch.float32)
    else:
        x = raw.to(torch.float32).clamp(0.0, 1.0)  # clamp is out of place: a new tensor
    c = x.shape[-1]
    if c in (1, 2):
        x = x[..., :1].expand(*x.shape[:-1], 3)
    elif c == 4:
        x = x[..., :3]
    return x.permute(0, 3, 1, 2).contiguous()


def _resize(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of float [n,C,h,w] to ``size``; anti-aliased when shrinking (like PIL's BILINEAR)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    try:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    except (RuntimeError, NotImplementedError):  # a backend without anti-aliased bilinear: do it on the CPU
        if x.device.type == "cpu":
            raise
        return F.interpolate(x.cpu(), size=size, mode="bilinear", align_corners=False,
                             antialias=shrink).to(x.device)


class _Inputs:
    """The caller's images as chunks: a stacked [B,H,W,C] array or a list of single images."""

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
                else:  # arrays/tensors are validated up front (cheap), PIL images converted per chunk
                    self.items[i] = _single_to_tensor(im, f"images[{i}]")
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
        return len(set(self.sizes)) == 1

    def chunk(self, start: int, end: int, device: torch.device, size: int) -> torch.Tensor:
        """Images start..end-1 as float32 [n,3,size,size] in 0..1 on ``device`` (new tensor)."""
        if self.stacked is not None:
            return _resize(_to_float_rgb(self.stacked[start:end].to(device)), (size, size))
        parts = []
        for i in range(start, end):
            item = self.items[i]
            t = _pil_to_tensor(item) if _is_pil(item) else item
            parts.append(_resize(_to_float_rgb(t.unsqueeze(0).to(device)), (size, size)))
        return torch.cat(parts) if len(parts) > 1 else parts[0]


# ------------------------------------------------------------------------------------------------
# predictor
# ------------------------------------------------------------------------------------------------

def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type == "cpu":
        return True
    norm = lambda d: d.index if d.index is not None else (torch.cuda.current_device() if d.type == "cuda" else 0)
    return norm(a) == norm(b)


class BENPredictor:
    """Runs a BEN2 network (``ben_core.model.BENBase`` or anything with the same forward contract) on images.

    Args:
        model: ``nn.Module`` mapping ImageNet-normalised ``[B,3,S,S]`` to logits ``[B,1,S,S]``. It is put in
            eval mode and, if ``device`` differs from where its parameters are, moved there (in place).
        device: where the network runs; None = the device of the model's parameters.
        dtype: compute precision, ``torch.float32`` (default), ``torch.float16`` or ``torch.bfloat16``
            (autocast; see the module docstring for the fp32 fallback on non-finite logits). Half weights
            need the same half ``dtype`` (or float32); fp16 weights with bf16 (or the reverse) raise ValueError.
        working_size: S, the square size the network sees (1024 is BEN2's native size; 512/768 are faster).
            Must be a multiple of the model's ``size_multiple`` attribute and at least its ``min_size``
            (128 and 384 for ``BENBase``; 64 for a model without these attributes).
        batch_size: images per forward pass (>= 1). Every image is processed whatever B is.

    Attributes: ``model``, ``device``, ``dtype``, ``working_size``, ``batch_size``, ``fallback_count``
    (chunks recomputed in fp32 so far).
    """

    def __init__(self, model: torch.nn.Module, device: Optional[Union[str, torch.device]] = None,
                 dtype: torch.dtype = torch.float32, working_size: int = 1024, batch_size: int = 1):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module (e.g. from ben_core.checkpoint.load_ben), "
                            f"got {type(model).__name__}")
        if dtype not in (torch.float32,) + _HALF_DTYPES:
            raise ValueError(f"dtype must be torch.float32, torch.float16 or torch.bfloat16, got {dtype!r}")
        multiple = int(getattr(model, "size_multiple", 64))
        minimum = max(multiple, int(getattr(model, "min_size", multiple)))
        if isinstance(working_size, bool) or not isinstance(working_size, int) or working_size < minimum \
                or working_size % multiple:
            raise ValueError(f"working_size must be a multiple of {multiple} and at least {minimum} for "
                             f"{type(model).__name__} (1024 native, 512/768 faster), got {working_size!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        param = next(model.parameters(), None)
        if device is None:
            device = param.device if param is not None else torch.device("cpu")
        device = torch.device(device)
        if param is not None and param.device.type == "meta":
            raise ValueError("the model's weights are on the meta device (not loaded); load them first")
        if param is not None and not _same_device(param.device, device):
            model.to(device)
        if param is not None and param.dtype in _HALF_DTYPES and dtype in _HALF_DTYPES and param.dtype != dtype:
            # autocast to one half type over weights of the other fails inside BENBase (torch.cat /
            # layer_norm refuse the mix), so say so before any work.
            raise ValueError(f"the model's weights are {param.dtype} but dtype={dtype}: autocast cannot mix the two "
                             f"half types. Load the weights in float32 (load_ben(..., dtype=torch.float32), the "
                             f"robust choice) or in {dtype}, or pass dtype={param.dtype}")
        if model.training:
            model.eval()
        self.model = model
        self.device = device
        self.dtype = dtype
        self.working_size = working_size
        self.batch_size = batch_size
        self.fallback_count = 0
        self._param_dtype = param.dtype if param is not None else torch.float32
        self._fp32_copy: Optional[torch.nn.Module] = None
        self._mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    # -- network ----------------------------------------------------------------------------------

    def _fp32_model(self) -> torch.nn.Module:
        """The network with fp32 weights: the model itself, or a float32 copy when its weights are half.

        With ``dtype=torch.float32`` the copy is kept (every chunk needs it); for the rare half-precision
        fallback it is made per use and dropped, so the device holds the extra fp32 weights only briefly.
        """
        if self._param_dtype == torch.float32:
            return self.model
        if self._fp32_copy is not None:
            return self._fp32_copy
        copy_ = copy.deepcopy(self.model).float()
        if self.dtype == torch.float32:
            self._fp32_copy = copy_
        return copy_

    def _run(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if dtype == torch.float32:
            model = self._fp32_model()
            with torch.autocast(device_type=self.device.type, enabled=False):
                return model(x.to(torch.float32))
        with torch.autocast(device_type=self.device.type, dtype=dtype):
            return self.model(x.to(self._param_dtype))

    @torch.inference_mode()
    def predict_logits_batch(self, x_normalised: torch.Tensor) -> torch.Tensor:
        """Network logits for one batch, with the half-precision fallback.

        ``x_normalised``: float ``[B,3,S,S]`` ImageNet-normalised (any device; moved to ``self.device``).
        Returns float32 logits ``[B,1,S,S]`` on ``self.device``. In fp16/bf16, a batch whose logits
        contain NaN/inf is recomputed in fp32. Raises RuntimeError if fp32 logits contain NaN (broken
        weights).
        """
        if not isinstance(x_normalised, torch.Tensor) or x_normalised.dim() != 4 or x_normalised.shape[1] != 3:
            shape = tuple(x_normalised.shape) if isinstance(x_normalised, torch.Tensor) else type(x_normalised)
            raise ValueError(f"expected a float tensor [B,3,S,S], got {shape}")
        if not x_normalised.is_floating_point():
            raise TypeError(f"expected a float tensor, got {x_normalised.dtype}")
        x = x_normalised.to(self.device)
        logits = self._run(x, self.dtype)
        if self.dtype != torch.float32:
            if bool(torch.isfinite(logits).all()):  # finite implies no NaN: one check per chunk
                return logits.to(torch.float32)
            self.fallback_count += 1
            del logits
            logits = self._run(x, torch.float32)
        logits = logits.to(torch.float32)
        if bool(torch.isnan(logits).any()):
            raise RuntimeError("the network produced NaN logits in float32: the weights are probably broken "
                               "(reload the checkpoint)")
        return logits

    # -- images -----------------------------------------------------------------------------------

    @torch.inference_mode()
    def predict_alpha(self, images, progress: Optional[Callable[[int, int], None]] = None,
                      should_stop: Optional[Callable[[], bool]] = None
                      ) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Alpha mattes (1 = foreground) for ``images`` at their original sizes.

        ``images``: torch tensor or numpy array ``[B,H,W,C]`` or ``[H,W,C]`` (or ``[H,W]`` grey), uint8
        0..255 or float 0..1 (numpy uint16 0..65535 too); C = 3 RGB, 4 RGBA (alpha ignored), 1 grey, 2
        grey+alpha. Or a PIL image (any mode; 16-bit and float modes scaled to 0..1), or a list of PIL
        images / single-image arrays, sizes may differ. Floats must be finite and within -0.5..1.5
        (values are clamped to 0..1); anything else raises ValueError/TypeError before any work.
        ``progress(done, total)``: called after every chunk with images done so far and the total.
        ``should_stop()``: called before every chunk; it may raise (e.g. ComfyUI's interrupt), and a true
        return value raises PredictionCancelled.

        Returns float32 CPU alpha in 0..1 (raw sigmoid): ``[B,H,W]`` for a batch, ``[1,H,W]`` for a single
        image, and for a list either ``[N,H,W]`` (all the same size) or a list of ``[H_i,W_i]`` tensors
        (mixed sizes). The inputs are never modified.
        """
        inputs = _Inputs(images)
        total = len(inputs)
        uniform = inputs.uniform
        if uniform:
            h, w = inputs.sizes[0]
            out_t = torch.empty((total, h, w), dtype=torch.float32)
        else:
            out_list: List[Optional[torch.Tensor]] = [None] * total
        s = self.working_size
        for start in range(0, total, self.batch_size):
            if should_stop is not None and should_stop():
                raise PredictionCancelled(f"stopped after {start} of {total} images")
            end = min(start + self.batch_size, total)
            x = inputs.chunk(start, end, self.device, s)
            x.sub_(self._mean).div_(self._std)  # x is always a fresh tensor (see _Inputs.chunk)
            probs = torch.sigmoid(self.predict_logits_batch(x))  # float32 [n,1,S,S]
            del x
            if uniform:
                out_t[start:end] = _resize(probs, (h, w))[:, 0].clamp_(0.0, 1.0).cpu()
            else:
                for j in range(start, end):
                    out_list[j] = _resize(probs[j - start:j - start + 1], inputs.sizes[j])[0, 0] \
                        .clamp_(0.0, 1.0).cpu()
            del probs
            if progress is not None:
                progress(end, total)
        return out_t if uniform else out_list  # type: ignore[return-value]
