"""BEN2's weights: the official files on the Hugging Face Hub, and reading any checkpoint into BENBase.

The hub half (PramaLLC/BEN2 only, with clear offline errors): nothing is downloaded at import time;
``huggingface_hub`` is imported only when a function needs it. The Hub library reads ``HF_HUB_OFFLINE`` /
``HF_HUB_CACHE`` / ``HF_HOME`` when it is first imported; pass ``cache_dir`` to override the cache location
per call.

The checkpoint half reads ``.pth`` (via ``torch.load(weights_only=True)``) and ``.safetensors``:
  * ``BEN2_Base.pth``: ``{'model_state_dict': {...}, 'optimizer_state_dict': ...}`` (everything but the
    model state dict is ignored); a flat ``.pth``/``.pt``/``.ckpt``/``.bin`` state dict works too, and
    so does a ``{'state_dict': ...}`` wrapper or ``module.``-prefixed keys (DataParallel).
  * ``model.safetensors``: flat keys.
Pickles are only ever read with ``weights_only=True``: a file that needs arbitrary Python objects is
refused (CheckpointError), never loaded unsafely. The format is recognised from the file's first bytes.
"""
from __future__ import annotations

import logging
import os
import re
import struct
import warnings
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

import torch

from .ben2 import UNUSED_KEYS, BENBase, checkpoint_filter_fn

__all__ = [
    "OFFICIAL_REPO",
    "OFFICIAL_FILENAME",
    "OFFICIAL_PTH_FILENAME",
    "OFFICIAL_FILENAMES",
    "OFFICIAL_REVISION",
    "WeightsNotFoundError",
    "download_official_weights",
    "find_cached_weights",
    "missing_weights_message",
    "offline_mode",
    "CheckpointError",
    "read_state_dict",
    "check_state_dict",
    "load_weights",
    "load_ben",
    "SUPPORTED_EXTENSIONS",
]

OFFICIAL_REPO = "PramaLLC/BEN2"
OFFICIAL_FILENAME = "model.safetensors"
OFFICIAL_PTH_FILENAME = "BEN2_Base.pth"
#: The revision of PramaLLC/BEN2 downloaded by default. Pass ``revision=<commit hash>`` to pin the exact
#: files (a reproducible, integrity-pinned download); the branch follows the publisher's updates.
OFFICIAL_REVISION = "main"
OFFICIAL_FILENAMES = (OFFICIAL_FILENAME, OFFICIAL_PTH_FILENAME)

PathLike = Union[str, "os.PathLike[str]"]

log = logging.getLogger("ben_core")


class WeightsNotFoundError(FileNotFoundError):
    """The BEN2 weights are neither where they were looked for nor downloadable (offline, no network)."""


def _official_url(filename: str) -> str:
    return f"https://huggingface.co/{OFFICIAL_REPO}/resolve/main/{filename}"


def _hf_cache_dir(cache_dir: Optional[PathLike]) -> str:
    if cache_dir is not None:
        return str(Path(cache_dir).expanduser())
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:
        return os.path.join(os.path.expanduser("~"), ".cache", "huggingface", "hub")


def offline_mode() -> bool:
    """Whether Hugging Face's offline mode is on (``HF_HUB_OFFLINE``), as huggingface_hub reads it."""
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def missing_weights_message(searched: Iterable[PathLike] = (), *, reason: Optional[str] = None,
                            put_here: Optional[PathLike] = None, filename: str = OFFICIAL_FILENAME,
                            cache_dir: Optional[PathLike] = None) -> str:
    """Human-readable text for missing BEN2 weights: where we looked, where to put the file, where to get it.

    ``searched``: paths that were checked; ``put_here``: the file path the caller expects (first
    suggestion); ``reason``: why downloading did not work (offline, network error ...).
    """
    lines = ["BEN2 weights not found."]
    searched = [p if isinstance(p, str) and not os.path.isabs(p) else str(Path(p).expanduser()) for p in searched]
    if searched:
        lines.append("Looked for:")
        lines.extend(f"  - {p}" for p in searched)
    if reason:
        lines.append(f"Download not possible: {reason}")
    lines.append("Get the official weights from the Hugging Face repo " + OFFICIAL_REPO + " (only this repo):")
    lines.append(f"  - {_official_url(OFFICIAL_FILENAME)}  (safetensors, recommended)")
    lines.append(f"  - {_official_url(OFFICIAL_PTH_FILENAME)}  (PyTorch .pth, same weights)")
    if put_here is not None:
        lines.append(f"and put the file here: {Path(put_here).expanduser()}")
    else:
        lines.append("and pass the file's path explicitly (e.g. python -m ben_core --checkpoint PATH).")
    lines.append(f"Or fill the Hugging Face cache ({_hf_cache_dir(cache_dir)}) on a machine that is online with "
                 f"`hf download {OFFICIAL_REPO} {filename}` (older huggingface_hub: `huggingface-cli download "
                 f"{OFFICIAL_REPO} {filename}`) and copy that folder here.")
    return "\n".join(lines)


def _unreachable_reason(timeout: float = 5.0) -> Optional[str]:
    """Why the Hub endpoint (``HF_ENDPOINT``, default huggingface.co) cannot be reached - the name does
    not resolve, the connection is refused or times out - or None when a TCP connection opens. Behind a
    proxy (``HTTPS_PROXY`` / ``ALL_PROXY``) the check is left to the Hub client (None)."""
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    except (ImportError, AttributeError):
        endpoint = "https://huggingface.co"
    url = urlparse(endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"{host}:{port} is not reachable ({e.strerror or type(e).__name__}); check the network or proxy"
    return None


def _check_filename(filename: str) -> None:
    if filename not in OFFICIAL_FILENAMES:
        raise ValueError(f"filename must be one of the official files {OFFICIAL_FILENAMES} of {OFFICIAL_REPO}, "
                         f"got {filename!r}")


def _usable(path: Path) -> bool:
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def find_cached_weights(cache_dir: Optional[PathLike] = None, filename: Optional[str] = None,
                        local_dir: Optional[PathLike] = None) -> Optional[Path]:
    """Path of already-present official weights, or None. Never touches the network.

    Looks in ``local_dir`` (if given) for the file, then in the Hugging Face cache (``cache_dir`` or
    the library's default, honouring HF_HUB_CACHE/HF_HOME) via ``huggingface_hub.try_to_load_from_cache``
    for ``PramaLLC/BEN2``. ``filename=None`` tries ``model.safetensors`` then ``BEN2_Base.pth``.
    Returns a ``pathlib.Path`` to a non-empty file, or None.
    """
    names: Sequence[str] = OFFICIAL_FILENAMES if filename is None else (filename,)
    for name in names:
        _check_filename(name)
    if local_dir is not None:
        for name in names:
            candidate = Path(local_dir).expanduser() / name
            if _usable(candidate):
                return candidate
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for name in names:
        kwargs = {} if cache_dir is None else {"cache_dir": str(Path(cache_dir).expanduser())}
        try:
            hit = try_to_load_from_cache(OFFICIAL_REPO, name, **kwargs)
        except Exception as e:  # a malformed cache folder is "not cached", not a crash
            log.debug("ben_core: Hugging Face cache lookup of %s failed: %s", name, e)
            continue
        if isinstance(hit, (str, os.PathLike)) and _usable(Path(hit)):
            return Path(hit)
    return None


def download_official_weights(local_dir: Optional[PathLike] = None, filename: str = OFFICIAL_FILENAME, *,
                              cache_dir: Optional[PathLike] = None, revision: str = OFFICIAL_REVISION) -> Path:
    """Path of the official BEN2 weights, downloading ``PramaLLC/BEN2/<filename>`` if they are not present.

    ``local_dir``: download into this folder (file ends up at ``local_dir/filename``); if None the
    Hugging Face cache is used (``cache_dir`` or the library default). ``filename``:
    ``"model.safetensors"`` (default) or ``"BEN2_Base.pth"``. An existing non-empty file at the target
    (or in the cache) is returned without any network access. Downloads use
    ``huggingface_hub.hf_hub_download`` from the official repo only, at ``revision`` (a branch or a commit
    hash; see :data:`OFFICIAL_REVISION`).

    Raises:
        WeightsNotFoundError: offline (``HF_HUB_OFFLINE=1``), no network, the Hub refused, or
            huggingface_hub is missing; the message says where to put the file and where to get it.
        ValueError: ``filename`` is not an official file name.
    """
    _check_filename(filename)
    target = None if local_dir is None else Path(local_dir).expanduser() / filename
    found = find_cached_weights(cache_dir=cache_dir, filename=filename, local_dir=local_dir)
    if found is not None:
        return found
    searched = [target] if target is not None else []
    if local_dir is None:
        searched.append(f"the Hugging Face cache ({_hf_cache_dir(cache_dir)})")

    def fail(reason: str, cause: Optional[BaseException] = None) -> WeightsNotFoundError:
        err = WeightsNotFoundError(missing_weights_message(searched, reason=reason, put_here=target,
                                                           filename=filename, cache_dir=cache_dir))
        err.__cause__ = cause
        return err

    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:
        raise fail("the huggingface_hub package is not installed (pip install huggingface_hub)", e) from e
    kwargs = {}
    if local_dir is not None:
        Path(local_dir).expanduser().mkdir(parents=True, exist_ok=True)
        kwargs["local_dir"] = str(Path(local_dir).expanduser())
    if cache_dir is not None:
        kwargs["cache_dir"] = str(Path(cache_dir).expanduser())
    unreachable = None if offline_mode() else _unreachable_reason()
    if unreachable is not None:  # answer at once instead of the Hub client's retries (~25 s of warnings)
        raise fail(f"could not download: {unreachable}")
    try:
        path = hf_hub_download(OFFICIAL_REPO, filename, revision=revision, **kwargs)
    except Exception as e:  # offline / DNS / HTTP / disk errors all end in the same advice
        if offline_mode():
            raise fail("Hugging Face offline mode is on (HF_HUB_OFFLINE=1; unset it to allow the download)", e) from e
        first = str(e).splitlines()[0] if str(e) else ""
        raise fail(f"could not download from huggingface.co ({type(e).__name__}: {first})", e) from e
    path = Path(path)
    if not _usable(path):
        raise fail(f"the download finished but {path} is missing or empty")
    return path


# --- reading a checkpoint into BENBase ---


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
