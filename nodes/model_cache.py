"""The networks the nodes load, kept once per (kind, file, device, precision) and handed to ComfyUI's
model management.

``get_model(path, device, dtype)`` returns the same :class:`LoadedBEN` for the same file (same path,
size and modification time), device and precision while anything still holds it, so two Load BEN nodes
or two runs reuse one copy of the weights; a file changed on disk is reloaded. The cache holds BEN
networks *weakly*: their lifetime is that of the node outputs holding them, i.e. core's (its output cache
keeps Load BEN's outputs between runs, and a 2026 core's RAM-pressure cache drops outputs holding a
``.patcher`` first), so when core lets go of them the weights are freed, in RAM and VRAM.
``vitmatte_model(device)`` does the same for Refine Mask's ViTMatte network, which no node output holds:
the one ViTMatte network is kept (strongly) until another device asks for it. Inside ComfyUI every
network is wrapped in a ``ModelPatcher`` and loaded with ``comfy.model_management.load_models_gpu`` right
before use, so ComfyUI can offload it when other models need the VRAM; it is never pinned on the GPU by
this cache.
"""
from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import OrderedDict
from typing import Callable, Optional

import torch

from ..ben_core.model.ben2 import BENBase
from . import comfy_env

log = logging.getLogger("ComfyUI-BEN2")

#: Most ViTMatte networks kept alive at once (one per device asked for; BEN networks are held weakly).
MAX_STRONG = 1

_lock = threading.RLock()
#: key -> (version, weakref or the value itself when held strongly)
_cache: "OrderedDict[tuple, object]" = OrderedDict()


class PatcherModule(torch.nn.Module):
    """The module given to ComfyUI's ModelPatcher: holds the network as ``net``.

    ModelPatcher sets bookkeeping attributes on its model (``device`` among them, a read-only
    property of transformers models), so the network itself is not handed over.
    """

    def __init__(self, net: torch.nn.Module, dtype: torch.dtype):
        super().__init__()
        self.net = net
        self._dtype = dtype

    def get_dtype(self) -> torch.dtype:
        return self._dtype


class _Managed:
    """A network, where it runs, where it is parked, and its ModelPatcher (None outside ComfyUI)."""

    def __init__(self, net: torch.nn.Module, device: torch.device, dtype: torch.dtype,
                 offload_device: Optional[torch.device] = None, dynamic: bool = True):
        self.net = net
        self.device = torch.device(device)
        self.dtype = dtype
        self.offload_device = torch.device(offload_device) if offload_device is not None else self.device
        self.patcher = comfy_env.make_patcher(PatcherModule(net, dtype), self.device, self.offload_device,
                                              dynamic=dynamic)
        #: Where the weights are after the last :meth:`_to_device`: where the network runs.
        self.run_device = self.device

    def _to_device(self, memory_required: int = 0) -> torch.nn.Module:
        """Put the weights on ``self.device`` (through ComfyUI when present, asking it to free
        ``memory_required`` bytes for activations); returns ``net``.

        Afterwards :attr:`run_device` is where every weight really is, which the inputs must follow: the
        load device, unless a core left them elsewhere (then they are all put back on the offload device by
        core's own ``detach`` if they were spread over two devices, and the network runs there, with a
        warning), so a VRAM state never produces a device mismatch."""
        if self.patcher is None:
            self.net.to(self.device)
            self.run_device = self.device
            return self.net
        comfy_env.load_models_gpu([self.patcher], memory_required)
        where = comfy_env.weights_device(self.net)
        if where is None:
            self.patcher.detach()
            where = comfy_env.weights_device(self.net) or self.offload_device
        if not comfy_env.same_device(where, self.device):
            log.warning("BEN2: ComfyUI left %s's weights on %s instead of %s; running it there",
                        type(self.net).__name__, where, self.device)
        self.run_device = where
        return self.net


class LoadedBEN(_Managed):
    """The BEN_MODEL value passed between nodes: a loaded BEN2 network plus where/how it runs.

    Attributes: ``path`` (str), ``device`` (inference device), ``offload_device``, ``dtype`` (inference
    precision), ``compile`` (None or a ``torch.compile`` mode), ``net`` (``ben_core.model.BENBase``),
    ``patcher`` (ComfyUI ModelPatcher or None).

    The weights stay float32 whatever the precision: fp16/bf16 run under autocast in the predictor (norms
    and softmax stay fp32), and a chunk with non-finite half-precision logits is recomputed in fp32 without
    copying the network (~190 MB more VRAM than half weights, small next to the activations).

    It is also core's background-removal model, for Load BEN's ``bg_removal_model`` output: besides
    :meth:`encode_image` it has what core's own ``BackgroundRemovalModel`` exposes to the nodes that take
    that type (``comfy/bg_removal_model.py`` @ 9f3cd1584985777ff815c18f0f3ff0158703985f): ``image_size``,
    ``image_mean``, ``image_std``, ``model_type``, ``config``, ``load_device``, ``dtype``, ``model``,
    ``patcher`` and :meth:`get_sd`. (Not ``load_sd``: this network is shared by every node that loaded the
    file; load other weights with Load BEN.)

    With ``compile="reduce-overhead"`` (CUDA graphs) the plain ``ModelPatcher`` is used even where dynamic
    VRAM is on, so the weights keep their addresses between runs (see :func:`comfy_env.make_patcher`).
    """

    #: ``model_type`` of core's background-removal config.
    model_type = "ben2"

    def __init__(self, path: str, net: torch.nn.Module, device: torch.device, dtype: torch.dtype,
                 offload_device: Optional[torch.device] = None, compile: Optional[str] = None):
        super().__init__(net, device, dtype, offload_device, dynamic=compile != "reduce-overhead")
        self.path = path
        self.compile = compile
        self._predictors: dict = {}

    # -- what core's BackgroundRemovalModel exposes
    @property
    def image_size(self) -> int:
        """The square working size the network was trained at (core's default resolution):
        ``BENBase.native_size``."""
        return BENBase.native_size

    @property
    def image_mean(self) -> list:
        """Per-channel RGB mean the input is normalised with (ImageNet's, values 0..1)."""
        from ..ben_core.model.ben2 import IMAGENET_MEAN

        return list(IMAGENET_MEAN)

    @property
    def image_std(self) -> list:
        """Per-channel RGB standard deviation the input is normalised with (ImageNet's)."""
        from ..ben_core.model.ben2 import IMAGENET_STD

        return list(IMAGENET_STD)

    @property
    def config(self) -> dict:
        """Core's background-removal config keys for this network (a fresh dict; ``working_sizes``: the
        resolutions BEN2 runs at, others go to the nearest)."""
        return {"model_type": self.model_type, "image_size": self.image_size, "image_mean": self.image_mean,
                "image_std": self.image_std, "working_sizes": list(BENBase.working_sizes)}

    @property
    def load_device(self) -> torch.device:
        """The device the network runs on (core's name for :attr:`device`)."""
        return self.device

    @property
    def model(self) -> torch.nn.Module:
        """The network (``ben_core.model.BENBase``; core's name for :attr:`net`)."""
        return self.net

    def get_sd(self) -> dict:
        """The network's state dict (the official checkpoint's key names)."""
        return self.net.state_dict()

    def __repr__(self) -> str:
        return (f"LoadedBEN({os.path.basename(self.path)!r}, device={self.device}, dtype={self.dtype}"
                f"{', compile=' + self.compile if self.compile else ''})")

    def memory_estimate(self, batch_size: int, working_size: int, image_hw: Optional[tuple] = None) -> int:
        """Bytes asked from ComfyUI besides the weights for a chunk of ``batch_size`` images at ``working_size``
        whose largest is ``image_hw`` = (H, W) (None: the network alone): ``ben_core.memory.cutout_bytes``
        (measured, with its margin), plus the half-precision weight copies autocast makes over float32
        weights."""
        from ..ben_core import memory

        half_copies = 0
        if self.dtype != torch.float32 and next(self.net.parameters()).dtype == torch.float32:
            half_copies = sum(p.numel() * 2 for p in self.net.parameters())
        return memory.cutout_bytes(batch_size, working_size, self.dtype, image_hw, half_copies)

    def prepare(self, batch_size: int = 1, working_size: int = BENBase.native_size, image_hw: Optional[tuple] = None
                ) -> torch.nn.Module:
        """Make sure the weights sit on ``self.device`` with room for a chunk's work (:meth:`memory_estimate`);
        returns ``net``."""
        return self._to_device(self.memory_estimate(batch_size, working_size, image_hw))

    def predictor(self, batch_size: int = 1, working_size: int = BENBase.native_size, image_hw: Optional[tuple] = None):
        """The ``ben_core`` BENPredictor over this network for these settings (weights loaded to the device
        first, with room for images of ``image_hw`` = (H, W), the largest; None: the network alone). One per
        (batch_size, working_size) is kept, so a compiled network stays compiled from run to run."""
        from ..ben_core.predictor import BENPredictor

        net = self.prepare(batch_size, working_size, image_hw)
        key = (batch_size, working_size, str(self.run_device))
        if key not in self._predictors and self.compile is not None:
            self._warn_past_recompile_limit(len({k[:2] for k in self._predictors} | {key[:2]}))
        if key not in self._predictors:
            self._predictors[key] = BENPredictor(net, device=self.run_device, dtype=self.dtype,
                                                 working_size=working_size, batch_size=batch_size, compile=self.compile)
        return self._predictors[key]

    def _warn_past_recompile_limit(self, shapes: int) -> None:
        """Log a warning when ``shapes`` (batch size, working size) pairs of this compiled network pass dynamo's
        recompile limit (each is one compilation of the same network: past the limit torch runs the new shape
        uncompiled, silently)."""
        config = getattr(getattr(torch, "_dynamo", None), "config", None)
        limit = getattr(config, "recompile_limit", None) or getattr(config, "cache_size_limit", None)
        if isinstance(limit, int) and shapes > limit:
            log.warning("BEN2: %d batch_size/working_size pairs of one compiled network are more than torch.compile "
                        "compiles (torch._dynamo.config.recompile_limit = %d); the new one runs uncompiled",
                        shapes, limit)

    def working_size_for(self, image_size: Optional[int]) -> int:
        """The working size for a requested resolution: BEN2's native size for None, the size itself when
        BEN2 runs at it (``BENBase.working_sizes``), else the nearest of those, with a warning in the log."""
        if image_size is None:
            return BENBase.native_size
        size = int(image_size)
        if size in BENBase.working_sizes:
            return size
        nearest = min(BENBase.working_sizes, key=lambda s: (abs(s - size), -s))
        log.warning("BEN2: resolution %d is not one BEN2 runs at (%s); using %d", size,
                    "/".join(map(str, BENBase.working_sizes)), nearest)
        return nearest

    def encode_image(self, image: torch.Tensor, image_size: Optional[int] = None) -> torch.Tensor:
        """Core's background-removal contract (``RemoveBackground`` in 2026 cores calls this): the soft mask
        of every image of a ComfyUI IMAGE ``[B, H, W, C]`` at its own size, ``[B, H, W]`` 0..1 with
        1 = foreground, on ComfyUI's intermediate device and dtype. ``image_size``: the working size
        (:meth:`working_size_for`)."""
        from ..ben_core.pipeline import CutoutOptions, CutoutPipeline
        from .image_mask import check_image

        image = check_image(image)
        pipeline = CutoutPipeline(self.predictor(1, self.working_size_for(image_size), tuple(image.shape[1:3])),
                                  CutoutOptions(image=False))
        cut = pipeline.run(image, progress=comfy_env.progress_callback(image.shape[0]),
                           should_stop=comfy_env.should_stop, out_device=comfy_env.intermediate_device())
        return comfy_env.node_outputs(cut.alpha)


def file_key(path: str) -> tuple:
    """``(real path, size, modification time)`` of a checkpoint: a replaced file gets a new key."""
    st = os.stat(path)
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns)


def _cached(key: tuple, version, make: Callable[[], object], strong: bool = False):
    """The cached entry for ``key`` if it was made from the same ``version`` and is still alive, else a new one
    from ``make``. ``strong``: keep the value alive here (at most :data:`MAX_STRONG` such, the least recently
    used dropped first); otherwise only a weak reference is kept and the callers' references decide."""
    with _lock:
        hit = _cache.get(key)
        value = _alive(hit)
        if value is not None and hit[0] == version:
            _cache.move_to_end(key)
            return value
        if value is not None:
            log.info("BEN2: %s changed, reloading", key[1])
            _drop(key)
        _cache.pop(key, None)
        value = make()
        _cache[key] = (version, value if strong else weakref.ref(value, lambda _ref, key=key: _forget(key, _ref)),
                       strong)
        while sum(1 for entry in _cache.values() if entry[2]) > MAX_STRONG:
            _drop(next(k for k, entry in _cache.items() if entry[2]))
        return value


def _alive(entry) -> Optional[object]:
    """The value of a cache entry ``(version, value or weak reference, strong)``; None if there is no entry or
    its weakly held value was freed."""
    if entry is None:
        return None
    return entry[1] if entry[2] else entry[1]()


def _forget(key, ref) -> None:
    """A weakly held network was freed: remove its entry (unless a newer one took the key)."""
    with _lock:
        entry = _cache.get(key)
        if entry is not None and entry[1] is ref:
            del _cache[key]


def _drop(key) -> None:
    value = _alive(_cache.pop(key, None))
    patcher = getattr(value, "patcher", None)
    if patcher is not None:
        try:
            patcher.detach()
        except Exception as e:  # already unloaded by ComfyUI
            log.debug("BEN2: detaching %s: %s", key, e)


def get_model(path: str, device: torch.device, dtype: torch.dtype, compile: Optional[str] = None,
              loader: Optional[Callable[[str, torch.device, torch.dtype], torch.nn.Module]] = None) -> LoadedBEN:
    """The shared LoadedBEN for (file, device, dtype, compile mode), loading it on first use.

    ``path``: checkpoint file; ``device``: inference device; ``dtype``: torch.float32/float16/bfloat16;
    ``compile``: None or a ``torch.compile`` mode (``ben_core.predictor.COMPILE_MODES``).
    The weights are first loaded to ComfyUI's offload device (CPU normally) and moved to ``device``
    when a node runs. ``loader(path, device, dtype)`` returns the network instead of the checkpoint (e.g. a stand-in).
    Raises FileNotFoundError / ben_core CheckpointError for missing or bad files.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"BEN checkpoint not found: {path}")
    device = torch.device(device)
    fkey = file_key(path)
    offload = comfy_env.offload_device() if device.type != "cpu" else device

    def make() -> LoadedBEN:
        if loader is not None:
            return LoadedBEN(path, loader(path, offload, dtype), device, dtype, offload_device=offload, compile=compile)
        # as core builds its background-removal models: the network where ComfyUI parks it, its patcher,
        # then the weights, assigned (not copied) when the patcher streams them (dynamic VRAM)
        from ..ben_core.model.weights import load_weights

        model = LoadedBEN(path, BENBase().to(offload), device, dtype, offload_device=offload, compile=compile)
        load_weights(model.net, path, assign=comfy_env.is_dynamic(model.patcher))
        model.net.requires_grad_(False).eval()
        return model

    return _cached(("ben", fkey[0], str(device), str(dtype), compile), fkey, make)


def vitmatte_model(device: torch.device, image_hw: Optional[tuple] = None) -> torch.nn.Module:
    """The ViTMatte network (``hustvl/vitmatte-small-composition-1k`` from the Hugging Face cache,
    downloaded once if missing), loaded once and returned with its weights on ``device``, ComfyUI asked for
    room to refine images of ``image_hw`` = (H, W) (``ben_core.memory.vitmatte_bytes``; None: one tile)."""
    from ..ben_core import memory
    from ..ben_core.matting import vitmatte

    device = torch.device(device)
    offload = comfy_env.offload_device() if device.type != "cpu" else device

    def make() -> _Managed:
        return _Managed(vitmatte.load_vitmatte(device=offload), device, torch.float32, offload_device=offload)

    need = memory.vitmatte_bytes(image_hw) if image_hw is not None else memory.VITMATTE_TILE_BYTES
    return _cached(("vitmatte", vitmatte.VITMATTE_REPO, str(device)), None, make,
                   strong=True)._to_device(memory.with_margin(need))
