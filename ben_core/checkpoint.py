"""Reading BEN2 checkpoints safely (.pth via ``torch.load(weights_only=True)``, .safetensors) and loading BENBase.

Supported files:
  * ``BEN2_Base.pth``: ``{'model_state_dict': {...}, 'optimizer_state_dict': ...}`` (everything but the
    model state dict is ignored); a flat ``.pth``/``.pt``/``.ckpt``/``.bin`` state dict works too, and
    so does a ``{'state_dict': ...}`` wrapper or ``module.``-prefixed keys (DataParallel).
  * ``model.safetensors``: flat keys.
Pickles are only ever read with ``weights_only=True``: a file that needs arbitrary Python objects is
refused (CheckpointError), never loaded unsafely. The format is recognised from the file's first bytes.
"""
from __future__ import annotations

import os
import re
import struct
import warnings
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

import torch

from .hub import OFFICIAL_FILENAMES, WeightsNotFoundError, missing_weights_message
from .model.ben2 import UNUSED_KEYS, BENBase, checkpoint_filter_fn

__all__ = ["CheckpointError", "read_state_dict", "check_state_dict", "load_weights", "load_ben", "SUPPORTED_EXTENSIONS"]

PathLike = Union[str, "os.PathLike[str]"]

SUPPORTED_EXTENSIONS = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
_PICKLE_EXTENSIONS = (".pth", ".pt", ".ckpt", ".bin")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: corrupt, truncated, unsafe, or not a BEN2 base checkpoint."""


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------

def _sniff(path: Path, size: int) -> str:
    """'zip' (torch.save), 'pickle' (legacy torch.save), 'safetensors', 'lfs', 'html' or 'unknown'."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"version https://git-lfs") or head.startswith(b"version https://hawser"):
        return "lfs"
    stripped = head.lstrip().lower()
    if stripped.startswith(b"<!doctype html") or stripped.startswith(b"<html") or stripped.startswith(b"<?xml"):
        return "html"
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 0 < header_len <= 100_000_000:
            return "safetensors"  # (possibly truncated: the reader says so)
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    return "unknown"


def _safety_refusal(e: BaseException) -> Optional[str]:
    text = str(e)
    if "Weights only load failed" not in text and "weights_only" not in text:
        return None
    m = re.search(r"Unsupported global: GLOBAL (\S+)", text) or re.search(r"GLOBAL (\S+)", text)
    culprit = f" It references the Python object {m.group(1)}." if m else ""
    return ("it contains pickled Python objects that torch.load(weights_only=True) refuses to load "
            f"for safety.{culprit} BEN2 checkpoints contain only tensors, so this file is either not a "
            "BEN2 checkpoint or was saved with extra objects; ben_core never falls back to unsafe "
            "loading. Use the official model.safetensors (huggingface.co/PramaLLC/BEN2), or, if you trust "
            "the file, re-save only its tensors: torch.save(state_dict, path).")


def _load_pickle(path: Path) -> object:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TorchScript archive.*")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as e:  # a refused pickle (UnpicklingError), a truncated zip, TorchScript, garbage...
        if "TorchScript" in str(e):
            raise CheckpointError(f"{path} is a TorchScript archive (torch.jit.save), not a state dict; ben_core "
                                  "loads weights only: use model.safetensors or BEN2_Base.pth from "
                                  "huggingface.co/PramaLLC/BEN2.") from None
        why = _safety_refusal(e)
        if why is not None:
            raise CheckpointError(f"Refusing to load {path}: {why}") from None
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} is truncated or corrupt, or not a PyTorch checkpoint ({type(e).__name__}: "
                              f"{first}). If it was downloaded, the download was probably interrupted: "
                              "download it again.") from e


def _load_safetensors(path: Path) -> dict:
    try:
        from safetensors.torch import load_file
    except ImportError as e:  # pragma: no cover - safetensors is a dependency
        raise CheckpointError(f"{path}: reading .safetensors needs the 'safetensors' package "
                              "(pip install safetensors)") from e
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # SafetensorError (rust), OSError, ...
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} is truncated or corrupt ({type(e).__name__}: {first}). "
                              "The download was probably interrupted: download it again.") from e


def _unwrap(obj: object, path: Path) -> dict:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict (a mapping of names to "
                              "tensors); it is not a BEN2 checkpoint.")
    for wrapper in ("model_state_dict", "state_dict"):
        inner = obj.get(wrapper)
        if isinstance(inner, Mapping):
            obj = inner
            break
    sd = {}
    bad = []
    for k, v in obj.items():
        if isinstance(v, torch.Tensor) and isinstance(k, str):
            sd[k] = v
        else:
            bad.append(f"{k!r} ({type(v).__name__})")
    if bad:
        shown = ", ".join(bad[:5]) + (f", ... ({len(bad)} in all)" if len(bad) > 5 else "")
        raise CheckpointError(f"{path} is not a flat state dict of tensors and has no 'model_state_dict' entry: "
                              f"non-tensor entries {shown}. Top-level keys: {list(obj)[:8]}.")
    if not sd:
        raise CheckpointError(f"{path} contains no tensors; it is not a BEN2 checkpoint.")
    if all(k.startswith("module.") for k in sd):  # saved from nn.DataParallel
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def read_state_dict(path: PathLike, *, search_locations: Sequence[PathLike] = ()) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict on the CPU (no model involved).

    ``path``: ``.safetensors``, ``.pth``, ``.pt``, ``.ckpt`` or ``.bin``. Pickles are read with
    ``torch.load(map_location="cpu", weights_only=True)`` only. A ``{'model_state_dict': ...}`` (or
    ``{'state_dict': ...}``) wrapper is unwrapped and other entries (optimizer, epoch ...) ignored.
    ``search_locations``: other places the caller looked, listed in the error if the file is missing.

    Returns a dict of CPU tensors with the checkpoint's dtypes (keys not validated: see load_ben).

    Raises:
        WeightsNotFoundError (a FileNotFoundError): no such file; the message lists ``path``,
            ``search_locations`` and the official download source.
        CheckpointError (a ValueError): not a checkpoint / unsupported extension, truncated or corrupt,
            refused by ``weights_only`` for safety, or no tensors in it.
    """
    p = Path(path).expanduser()
    if not p.exists():
        searched = [p] + [Path(s) for s in search_locations if Path(s) != p]
        raise WeightsNotFoundError(missing_weights_message(searched, put_here=p))
    if p.is_dir():
        inside = [n for n in OFFICIAL_FILENAMES if (p / n).is_file()]
        hint = f" It contains {inside[0]}: pass {p / inside[0]}." if inside else ""
        raise CheckpointError(f"{p} is a folder, not a checkpoint file.{hint}")
    ext = p.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise CheckpointError(f"{p}: unsupported file type {ext or '(no extension)'!r}. BEN2 checkpoints are "
                              f"{' / '.join(SUPPORTED_EXTENSIONS)} files (official: model.safetensors or "
                              "BEN2_Base.pth from huggingface.co/PramaLLC/BEN2); ONNX/TensorRT exports are not "
                              "supported.")
    size = p.stat().st_size
    if size == 0:
        raise CheckpointError(f"{p} is empty (0 bytes): the download did not complete. Download it again.")
    kind = _sniff(p, size)
    if kind == "lfs":
        raise CheckpointError(f"{p} is a Git LFS pointer ({size} bytes), not the weights. Download the real file "
                              "(e.g. huggingface.co/PramaLLC/BEN2/resolve/main/model.safetensors) or run "
                              "`git lfs pull`.")
    if kind == "html":
        raise CheckpointError(f"{p} is an HTML/XML page ({size} bytes), not a checkpoint: the download saved an "
                              "error or login page. Download the file again from huggingface.co/PramaLLC/BEN2.")
    if kind == "unknown":
        raise CheckpointError(f"{p} is not a PyTorch or safetensors checkpoint (unrecognised content, {size} "
                              "bytes); it may be corrupt or a different kind of file.")
    obj = _load_safetensors(p) if kind == "safetensors" else _load_pickle(p)
    return _unwrap(obj, p)


# ------------------------------------------------------------------------------------------------
# validation and model loading
# ------------------------------------------------------------------------------------------------

_OTHER_MODELS = (
    # (description, predicate over the key set)
    ("BiRefNet (e.g. RMBG-2.0, BiRefNet_HR)",
     lambda ks: any(k.startswith(("bb.", "squeeze_module.")) or ".ipt_blk" in k or "decoder.gdt_" in k for k in ks)),
    ("RMBG-1.4 / IS-Net / U^2-Net (BRIA or DIS)",
     lambda ks: any(k.startswith(("stage1.rebnconvin", "conv_in.", "stage6.")) or ".rebnconv" in k for k in ks)),
    ("a Stable Diffusion / diffusers model",
     lambda ks: any(k.startswith(("model.diffusion_model.", "first_stage_model.", "down_blocks.")) for k in ks)),
    ("a segment-anything (SAM) model",
     lambda ks: any(k.startswith(("image_encoder.", "mask_decoder.", "prompt_encoder.")) for k in ks)),
)


def _looks_like(keys: Iterable[str]) -> Optional[str]:
    ks = list(keys)
    for name, pred in _OTHER_MODELS:
        if pred(ks):
            return name
    return None


def _show(names: Sequence[str], n: int = 5) -> str:
    names = sorted(names)
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def check_state_dict(state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                     source: str = "checkpoint", unused: Iterable[str] = UNUSED_KEYS) -> None:
    """Raise CheckpointError unless ``state_dict`` has exactly the keys of ``expected`` plus ``unused``,
    with the shapes of ``expected``.

    ``expected`` is a model's ``state_dict()`` (meta tensors are fine); ``unused``: keys the file must
    hold but the model drops by name (default: BEN2's training-only heads,
    ``model.ben2.UNUSED_KEYS``). The message names a few missing / unexpected keys with counts, shape
    mismatches, and which other model the file looks like, if any.
    """
    have, want = set(state_dict), set(expected) | set(unused)
    missing, unexpected = want - have, have - want
    if missing or unexpected:
        parts = [f"{source} is not a BEN2 base checkpoint: its keys do not match the network "
                 f"({len(have & want)} of {len(want)} expected keys present)."]
        if missing:
            parts.append(f"Missing {len(missing)} keys: {_show(missing)}.")
        if unexpected:
            parts.append(f"Unexpected {len(unexpected)} keys: {_show(unexpected)}.")
        other = _looks_like(have)
        if other:
            parts.append(f"It looks like {other} checkpoint, which this loader does not run.")
        parts.append("Use the official BEN2 base weights: model.safetensors or BEN2_Base.pth from "
                     "huggingface.co/PramaLLC/BEN2.")
        raise CheckpointError(" ".join(parts))
    shape_bad = [(k, tuple(state_dict[k].shape), tuple(expected[k].shape)) for k in sorted(expected)
                 if tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    if shape_bad:
        shown = "; ".join(f"{k}: file {s} vs network {e}" for k, s, e in shape_bad[:5])
        more = f" (and {len(shape_bad) - 5} more)" if len(shape_bad) > 5 else ""
        raise CheckpointError(f"{source} has the BEN2 key names but {len(shape_bad)} tensors have the wrong shape: "
                              f"{shown}{more}. It is a different variant or a damaged file; use the official "
                              "BEN2 base weights (huggingface.co/PramaLLC/BEN2).")
    kind_bad = [k for k in sorted(expected) if state_dict[k].is_floating_point() != expected[k].is_floating_point()]
    if kind_bad:
        raise CheckpointError(f"{source}: {len(kind_bad)} tensors have the wrong kind of dtype (float vs integer), "
                              f"e.g. {_show(kind_bad, 3)}; the file is damaged or not a BEN2 checkpoint.")
    # a float64 sum is finite iff every element is (fp32/fp16 values cannot overflow it): one cheap pass
    nonfinite = [k for k in sorted(expected) if state_dict[k].is_floating_point()
                 and not bool(torch.isfinite(state_dict[k].sum(dtype=torch.float64)))]
    if nonfinite:
        raise CheckpointError(f"{source}: {len(nonfinite)} tensors contain NaN or inf, e.g. {_show(nonfinite, 3)}; "
                              "the file is damaged. Download it again.")


def load_weights(model: "BENBase", path: PathLike, *, assign: bool = False,
                 search_locations: Sequence[PathLike] = ()) -> "BENBase":
    """Load a BEN2 checkpoint into an existing ``BENBase`` (as built by its owner: on a device, in a
    ComfyUI model patcher...) and return it.

    The file must hold exactly the official keys; the training-only ones are dropped by name
    (``model.ben2.checkpoint_filter_fn``) and the rest loaded strictly. ``assign=True`` makes the file's
    tensors the parameters (no copy; what ComfyUI's dynamic-VRAM patchers expect), so nothing of the
    model's own initialisation - meta tensors included - survives.
    Raises WeightsNotFoundError / CheckpointError as :func:`read_state_dict` and :func:`check_state_dict`.
    """
    sd = read_state_dict(path, search_locations=search_locations)
    own = model.state_dict()
    check_state_dict(sd, own, source=str(Path(path).expanduser()))
    sd = checkpoint_filter_fn(sd)
    if assign:  # the model keeps its own dtype and device (a no-op, no copy, when they already match)
        sd = {k: v.to(device=own[k].device if own[k].device.type != "meta" else v.device, dtype=own[k].dtype)
              for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=assign)
    return model


def load_ben(path: PathLike, device: Union[str, torch.device] = "cpu", dtype: torch.dtype = torch.float32, *,
             search_locations: Sequence[PathLike] = ()):
    """Load a BEN2 base checkpoint into a ready-to-run ``BENBase``.

    ``path``: checkpoint (see read_state_dict); ``device``: where the weights go; ``dtype``: floating
    parameter dtype (float32, float16 or bfloat16; integer buffers keep their dtype). For mixed
    precision, fp32 weights plus ``BENPredictor(dtype=torch.float16)`` (autocast) is the robust choice;
    half weights also work and save memory.

    Returns the network in eval mode with ``requires_grad`` off on every parameter.

    Raises WeightsNotFoundError (missing file) or CheckpointError (bad file, wrong model, wrong shapes,
    NaN weights); see :func:`load_weights`.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype (float32, float16, bfloat16), got {dtype!r}")
    device = torch.device(device)
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:  # before reading ~400 MB
        raise ValueError(f"device {device} is not available here ({e})") from e
    model = load_weights(BENBase(), path, search_locations=search_locations)
    model.requires_grad_(False)
    model.eval()
    return model.to(device=device, dtype=dtype)
