"""One shared BEN2 network per (file, device, precision), wrapped in ComfyUI's model management.

``get_model(path, device, dtype)`` returns the same :class:`BENModel` object for the same file
(same path, size and modification time), device and precision, so two Load BEN nodes or two runs
reuse one copy of the weights. Inside ComfyUI the network is wrapped in a ``ModelPatcher`` and
``BENModel.prepare()`` calls ``comfy.model_management.load_models_gpu`` before inference, so
ComfyUI can offload it when other models need VRAM. A changed file on disk is reloaded.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from typing import Callable, Optional

import torch

from . import comfy_env

log = logging.getLogger("ComfyUI-BEN2")

#: Most networks kept alive at once (least recently used ones are dropped beyond this).
MAX_CACHED = 3

_lock = threading.RLock()
_cache: "OrderedDict[tuple, BENModel]" = OrderedDict()

#: Rough activation memory of one 1024x1024 forward pass in a 2-byte dtype (bytes), for ComfyUI's
#: free-memory request; it scales with working area, batch size and element size.
_ACTIVATION_BYTES_1024_HALF = 1_600_000_000


class _Holder(torch.nn.Module):
    """Thin container given to ComfyUI's ModelPatcher (which sets bookkeeping attributes on it)."""

    def __init__(self, net: torch.nn.Module, dtype: torch.dtype):
        super().__init__()
        self.net = net
        self._ben_dtype = dtype

    def get_dtype(self) -> torch.dtype:
        return self._ben_dtype

    def forward(self, x):  # pragma: no cover - the predictor calls .net directly
        return self.net(x)


class BENModel:
    """The BEN_MODEL value passed between nodes: a loaded network plus where/how it runs.

    Attributes: ``path`` (str), ``device`` (torch.device for inference), ``offload_device``,
    ``dtype`` (inference precision), ``net`` (the ``torch.nn.Module``; logits ``[B,1,S,S]`` from
    ImageNet-normalised ``[B,3,S,S]``), ``patcher`` (ComfyUI ModelPatcher or None).
    """

    def __init__(self, path: str, net: torch.nn.Module, device: torch.device, dtype: torch.dtype,
                 offload_device: Optional[torch.device] = None):
        self.path = path
        self.net = net
        self.device = torch.device(device)
        self.dtype = dtype
        self.offload_device = torch.device(offload_device) if offload_device is not None else self.device
        self._holder = _Holder(net, dtype)
        # inside ComfyUI (also in --cpu mode) ComfyUI manages the weights; None outside ComfyUI
        self.patcher = comfy_env.make_patcher(self._holder, self.device, self.offload_device)

    def __repr__(self) -> str:
        return f"BENModel({os.path.basename(self.path)!r}, device={self.device}, dtype={self.dtype})"

    def memory_estimate(self, batch_size: int, working_size: int) -> int:
        """Rough bytes of activations for one chunk (asked from ComfyUI before loading the weights)."""
        elem = torch.tensor([], dtype=self.dtype).element_size()
        return int(_ACTIVATION_BYTES_1024_HALF * batch_size * (working_size / 1024.0) ** 2 * elem / 2)

    def prepare(self, batch_size: int = 1, working_size: int = 1024) -> torch.nn.Module:
        """Make sure the weights sit on ``self.device`` (through ComfyUI when present); returns ``net``."""
        if self.patcher is not None:
            comfy_env.load_models_gpu([self.patcher], self.memory_estimate(batch_size, working_size))
        else:
            p = next(self.net.parameters(), None)
            if p is not None and p.device != self.device:
                self.net.to(self.device)
        return self.net

    def predictor(self, batch_size: int = 1, working_size: int = 1024):
        """A ``ben_core`` BENPredictor over this network (weights loaded to the device first)."""
        from ..ben_core.predictor import BENPredictor

        net = self.prepare(batch_size, working_size)
        return BENPredictor(net, device=self.device, dtype=self.dtype, working_size=working_size,
                            batch_size=batch_size)


def _file_key(path: str) -> tuple:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns)


def default_loader(path: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Load the checkpoint with ben_core (eval mode, validated keys) onto ``device``."""
    from ..ben_core.checkpoint import load_ben

    return load_ben(path, device=device, dtype=weights_dtype(dtype))


def weights_dtype(dtype: torch.dtype) -> torch.dtype:
    """Storage dtype of the weights for an inference precision: always float32.

    fp16/bf16 run under autocast in the ben_core predictor (norms and softmax stay fp32), and a chunk
    with non-finite half-precision logits is recomputed in fp32 without copying the network. The cost
    is ~190 MB more VRAM than half weights, small next to the activations of a 1024x1024 pass.
    """
    return torch.float32


def get_model(path: str, device: torch.device, dtype: torch.dtype,
              loader: Optional[Callable[[str, torch.device, torch.dtype], torch.nn.Module]] = None) -> BENModel:
    """The shared BENModel for (file, device, dtype), loading it on first use.

    ``path``: checkpoint file; ``device``: inference device; ``dtype``: torch.float32/float16/bfloat16.
    The weights are first loaded to ComfyUI's offload device (CPU normally) and moved to ``device``
    by :meth:`BENModel.prepare`. ``loader`` replaces the ben_core loader (tests).
    Raises FileNotFoundError / ben_core CheckpointError for missing or bad files.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"BEN checkpoint not found: {path}")
    device = torch.device(device)
    fkey = _file_key(path)
    key = (fkey[0], str(device), str(dtype))
    with _lock:
        hit = _cache.get(key)
        if hit is not None and getattr(hit, "_file_key", None) == fkey:
            _cache.move_to_end(key)
            return hit
        if hit is not None:
            log.info("BEN2: %s changed on disk, reloading", path)
            _drop(key)
        offload = comfy_env.offload_device() if device.type != "cpu" else device
        net = (loader or default_loader)(path, offload, dtype)
        model = BENModel(path, net, device, dtype, offload_device=offload)
        model._file_key = fkey
        _cache[key] = model
        while len(_cache) > MAX_CACHED:
            _drop(next(iter(_cache)))
        return model


def _drop(key) -> None:
    model = _cache.pop(key, None)
    if model is not None and model.patcher is not None:
        try:
            model.patcher.detach()
        except Exception:  # already unloaded by ComfyUI
            pass


def clear_cache() -> None:
    """Forget every cached network (ComfyUI may still hold its own weak references until GC)."""
    with _lock:
        for key in list(_cache):
            _drop(key)


def cached_models() -> list:
    """The currently cached BENModel objects (oldest first)."""
    with _lock:
        return list(_cache.values())
