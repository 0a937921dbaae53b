"""BENPredictor: images of any size in, alpha mattes at the original size out.

Per chunk of ``batch_size`` images: float RGB 0..1 on the model's device (:mod:`ben_core.io.inputs`) ->
resize to the working size (bilinear, anti-aliased) -> ImageNet normalisation -> network -> logits ->
sigmoid (float32) -> resize back to each image's size (bilinear, anti-aliased when shrinking). The raw
sigmoid is returned (no min-max stretch), so a constant image gives a constant, finite mask.

Two layers, as in segment-anything's predictor: :meth:`BENPredictor.predict_alpha` takes the user's
images in any accepted form and returns float32 CPU alpha; :meth:`BENPredictor.predict_chunk` takes a
validated chunk (``ben_core.io.batches.ImageBatch.chunk``) and leaves the alpha on the predictor's device
(what the cut-out pipeline calls).

Precision: ``dtype=torch.float16`` / ``torch.bfloat16`` runs the network under ``torch.autocast`` on the
predictor's device (weights may be fp32 or already half; autocast keeps norms/softmax in fp32). If a
chunk's logits contain NaN/inf in half precision, that chunk is recomputed in fp32 (with a temporary
fp32 copy of the network if its weights are half) and ``fallback_count`` is incremented.

Host synchronisation: the finiteness of a chunk's logits is decided on the device; with
``predict_chunk(..., deferred=True)`` the caller reads the verdict once, when it needs the chunk's
outputs on the host anyway, so nothing in between waits for the device.

Compilation: ``compile="default"`` runs the network through ``torch.compile`` (inductor),
``"reduce-overhead"`` also captures CUDA graphs for each input shape, ``"max-autotune"`` tunes kernels.
Off by default: it pays off only where it was measured to (see ``benchmarks/gpu_check.py``); compiled
code is cached per input shape in the process and on disk by inductor across processes. A compiled
predictor sees one input shape, ``[batch_size, 3, S, S]``: a shorter last chunk is padded with copies of
its last image (the padding's outputs are dropped), so it is compiled once, not once more per chunk length
(each shape counts against dynamo's recompile limit, past which the network silently runs uncompiled).
The first call of each shape (the compilation) is timed in ``first_call_seconds``.
"""
from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional, Tuple, Union

import torch

from .callbacks import Cancelled, check_stop, current_stop, report, stop_scope
from .devices import same_device
from .io.batches import Chunk, ImageBatch
from .io.inputs import resize, to_float_rgb
from .model.ben2 import IMAGENET_MEAN, IMAGENET_STD, BENBase

__all__ = ["BENPredictor", "PredictionCancelled", "IMAGENET_MEAN", "IMAGENET_STD"]

_HALF_DTYPES = (torch.float16, torch.bfloat16)

#: Raised when ``should_stop()`` returns True (the same class as :class:`ben_core.callbacks.Cancelled`).
PredictionCancelled = Cancelled

#: ``torch.compile`` modes the predictor accepts (None = eager).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")




class BENPredictor:
    """Runs a BEN2 network (``ben_core.model.BENBase`` or anything with the same forward contract) on images.

    Args:
        model: ``nn.Module`` mapping ImageNet-normalised ``[B,3,S,S]`` to logits ``[B,1,S,S]``. It is put in
            eval mode and, if ``device`` differs from where its parameters are, moved there (in place).
        device: where the network runs; None = the device of the model's parameters.
        dtype: compute precision, ``torch.float32`` (default), ``torch.float16`` or ``torch.bfloat16``
            (autocast; see the module docstring for the fp32 fallback on non-finite logits). Half weights
            need the same half ``dtype`` (or float32); fp16 weights with bf16 (or the reverse) raise ValueError.
        working_size: S, the square size the network sees; None: the model's ``native_size`` (1024 for
            BEN2; 512/768 are faster), else BEN2's. Must be a multiple of the model's ``size_multiple``
            attribute and at least its ``min_size`` (128 and 384 for ``BENBase``; 64 for a model without these
            attributes).
        batch_size: images per forward pass (>= 1). Every image is processed whatever B is.
        compile: None (eager), or a ``torch.compile`` mode of :data:`COMPILE_MODES` (see the module docstring).

    Attributes: ``model``, ``device``, ``dtype``, ``working_size``, ``batch_size``, ``compile``,
    ``fallback_count`` (chunks recomputed in fp32 so far), ``first_call_seconds`` (``{(input shape,
    dtype): seconds}`` of the first network call per shape: the compilation, when compiled).
    """

    def __init__(self, model: torch.nn.Module, device: Optional[Union[str, torch.device]] = None,
                 dtype: torch.dtype = torch.float32, working_size: Optional[int] = None, batch_size: int = 1,
                 compile: Optional[str] = None):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module (e.g. from ben_core.model.weights.load_ben), "
                            f"got {type(model).__name__}")
        if dtype not in (torch.float32,) + _HALF_DTYPES:
            raise ValueError(f"dtype must be torch.float32, torch.float16 or torch.bfloat16, got {dtype!r}")
        if working_size is None:
            working_size = int(getattr(model, "native_size", BENBase.native_size))
        multiple = int(getattr(model, "size_multiple", 64))
        minimum = max(multiple, int(getattr(model, "min_size", multiple)))
        if isinstance(working_size, bool) or not isinstance(working_size, int) or working_size < minimum \
                or working_size % multiple:
            raise ValueError(f"working_size must be a multiple of {multiple} and at least {minimum} for "
                             f"{type(model).__name__} (native size: {getattr(model, 'native_size', 'not given')}), "
                             f"got {working_size!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if compile is not None and compile not in COMPILE_MODES:
            raise ValueError(f"compile must be None or one of {COMPILE_MODES}, got {compile!r}")
        param = next(model.parameters(), None)
        if device is None:
            device = param.device if param is not None else torch.device("cpu")
        device = torch.device(device)
        if param is not None and param.device.type == "meta":
            raise ValueError("the model's weights are on the meta device (not loaded); load them first")
        if param is not None and not same_device(param.device, device):
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
        self.compile = compile
        self.first_call_seconds: dict = {}
        # torch.compile wraps the same module (no copy of the weights); it compiles on the first call
        self._net = model if compile is None else torch.compile(model, mode=compile, dynamic=False)
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
        if dtype == torch.float32 and (self.dtype != torch.float32 or self._param_dtype != torch.float32):
            model = self._fp32_model()  # the half-precision fallback (rare): eager, never compiled
            with torch.autocast(device_type=self.device.type, enabled=False):
                return model(x.to(torch.float32))
        n = x.shape[0]
        if self.compile is not None and n < self.batch_size:
            # one input shape per predictor: a shorter (last) chunk is padded with copies of its last image, so
            # the compiled network is not compiled again for it (dynamo's recompile limit is shared by every
            # shape the network has been compiled for); images of a batch do not affect each other
            x = torch.cat([x, x[-1:].expand(self.batch_size - n, -1, -1, -1)])
        key = (tuple(x.shape), dtype)
        first = key not in self.first_call_seconds
        t0 = time.perf_counter()
        with torch.autocast(device_type=self.device.type, dtype=dtype, enabled=dtype != torch.float32), \
                self._stoppable(current_stop()):
            logits = self._net(x.to(self._param_dtype))
        if self.compile == "reduce-overhead":  # a CUDA-graph output is overwritten by the next replay
            logits = logits.clone()
        logits = logits[:n]
        if first:  # timing the first call of a shape costs one sync, once
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.first_call_seconds[key] = time.perf_counter() - t0
        return logits

    @contextmanager
    def _stoppable(self, should_stop) -> Iterator[None]:
        """Inside the block, ``should_stop()`` is also checked before each block of the network (its direct
        children and the members of its module lists: the Swin blocks, the decoder's stages), so a stop
        asked during a forward of several seconds is taken within a fraction of one. Only where a forward
        is that long and runs eagerly: the CPU and MPS, not compiled (hooks would break the graph)."""
        if should_stop is None or self.compile is not None or self.device.type not in ("cpu", "mps"):
            yield
            return

        def check(module, args) -> None:
            check_stop(should_stop, 0, 1, "forward passes")

        points = list(self.model.children())
        points += [m for lst in self.model.modules() if isinstance(lst, torch.nn.ModuleList) for m in lst]
        handles = [m.register_forward_pre_hook(check) for m in points]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _logits(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(float32 logits, ok)`` without a host sync: ``ok`` is a 0-dim bool on the device, False when
        half-precision logits hold NaN/inf (recompute in fp32) or fp32 logits hold NaN (broken weights)."""
        logits = self._run(x, self.dtype)
        ok = torch.isfinite(logits).all() if self.dtype != torch.float32 else ~torch.isnan(logits).any()
        return logits.to(torch.float32), ok

    def _fp32_logits(self, x: torch.Tensor) -> torch.Tensor:
        """After a failed check: the fp32 recomputation (half precision), or the broken-weights error."""
        if self.dtype == torch.float32:
            raise RuntimeError("the network produced NaN logits in float32: the weights are probably broken "
                               "(reload the checkpoint)")
        self.fallback_count += 1
        logits = self._run(x, torch.float32).to(torch.float32)
        if bool(torch.isnan(logits).any()):
            raise RuntimeError("the network produced NaN logits in float32 (after a half-precision chunk came out "
                               "non-finite): the weights are probably broken (reload the checkpoint)")
        return logits

    @torch.inference_mode()
    def predict_logits_batch(self, x_normalised: torch.Tensor) -> torch.Tensor:
        """Network logits for one batch, with the half-precision fallback.

        ``x_normalised``: float ``[B,3,S,S]`` ImageNet-normalised (any device; moved to ``self.device``).
        Returns float32 logits ``[B,1,S,S]`` on ``self.device``. In fp16/bf16, a batch whose logits
        contain NaN/inf is recomputed in fp32. Raises RuntimeError if fp32 logits contain NaN (broken
        weights). Reads the check on the host (one sync).
        """
        if not isinstance(x_normalised, torch.Tensor) or x_normalised.dim() != 4 or x_normalised.shape[1] != 3:
            shape = tuple(x_normalised.shape) if isinstance(x_normalised, torch.Tensor) else type(x_normalised)
            raise ValueError(f"expected a float tensor [B,3,S,S], got {shape}")
        if not x_normalised.is_floating_point():
            raise TypeError(f"expected a float tensor, got {x_normalised.dtype}")
        x = x_normalised.to(self.device)
        logits, ok = self._logits(x)
        return logits if bool(ok) else self._fp32_logits(x)

    # -- images -----------------------------------------------------------------------------------

    def _network_input(self, chunk: Chunk) -> torch.Tensor:
        """``[n, 3, S, S]`` normalised network input, converted and resized one image at a time so at
        most one full-resolution float copy exists at once."""
        s = self.working_size
        x = torch.cat([resize(to_float_rgb(im[None].to(self.device, non_blocking=True)), (s, s)) for im in chunk])
        return (x - self._mean) / self._std

    def _alpha(self, logits: torch.Tensor, sizes: list) -> Chunk:
        probs = torch.sigmoid(logits)  # float32 [n,1,S,S]
        if len(set(sizes)) == 1:
            return resize(probs, sizes[0])[:, 0].clamp_(0.0, 1.0)
        return [resize(probs[j:j + 1], size)[0, 0].clamp_(0.0, 1.0) for j, size in enumerate(sizes)]

    @torch.inference_mode()
    def predict_chunk(self, chunk: Chunk, *, deferred: bool = False):
        """Alpha for one chunk of images, left on ``self.device`` (the pipeline's step).

        ``chunk``: validated images, channels last (what ``ben_core.io.batches.ImageBatch.chunk`` returns):
        ``[n, H, W, C]`` uint8 / bool / float 0..1, or a list of ``[H_i, W_i, C]`` (sizes may differ), on
        any device. All images go through the network as one batch; the full-resolution float copies
        made for the resize are freed before the network runs. Returns float32 alpha 0..1 (raw sigmoid)
        on ``self.device``: ``[n, H, W]``, or a list of ``[H_i, W_i]`` when the sizes differ.
        ``chunk`` is not modified.

        ``deferred=False``: the logits are checked before returning (one host sync). ``deferred=True``:
        returns ``(alpha, check)`` without waiting for the device; ``check()`` (call it when the chunk's
        results are needed on the host) returns None when the alpha is good, else the alpha recomputed
        in fp32 (half precision) -- or raises RuntimeError for NaN in fp32 (broken weights).
        """
        sizes = [tuple(im.shape[:2]) for im in chunk]
        logits, ok = self._logits(self._network_input(chunk))
        alpha = self._alpha(logits, sizes)
        del logits

        def check() -> Optional[Chunk]:
            if bool(ok):
                return None
            with torch.inference_mode():
                return self._alpha(self._fp32_logits(self._network_input(chunk)), sizes)

        if deferred:
            return alpha, check
        redo = check()
        return alpha if redo is None else redo

    @torch.inference_mode()
    def predict_alpha(self, images, progress: Optional[Callable[[int, int], None]] = None,
                      should_stop: Optional[Callable[[], bool]] = None
                      ) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Alpha mattes (1 = foreground) for ``images`` at their original sizes.

        ``images``: anything :class:`ben_core.io.batches.ImageBatch` accepts: torch tensor or numpy array
        ``[B,H,W,C]`` or ``[H,W,C]`` (or ``[H,W]`` grey), uint8 0..255 or float 0..1 (numpy uint16
        0..65535 too); C = 3 RGB, 4 RGBA (alpha ignored), 1 grey, 2 grey+alpha. Or a PIL image (any
        mode; 16-bit and float modes scaled to 0..1), or a list of PIL images / single-image arrays,
        sizes may differ. Floats must be finite and within -0.5..1.5 (values are clamped to 0..1);
        anything else raises ValueError/TypeError before any work.
        ``progress(done, total)`` after every chunk; ``should_stop()`` before every chunk (see
        :mod:`ben_core.callbacks`: True raises PredictionCancelled, and it may raise itself).

        Returns float32 CPU alpha in 0..1 (raw sigmoid): ``[B,H,W]`` for a batch, ``[1,H,W]`` for a single
        image, and for a list either ``[N,H,W]`` (all the same size) or a list of ``[H_i,W_i]`` tensors
        (mixed sizes). The inputs are never modified.
        """
        batch = ImageBatch(images)
        total = len(batch)
        # preallocated when uniform: a long clip's alphas are never held twice
        out = torch.empty((total, *batch.sizes[0])) if batch.uniform else [None] * total
        for start, end, chunk in batch.chunks(self.batch_size, self.device):
            check_stop(should_stop, start, total)
            with stop_scope(should_stop):
                alpha = self.predict_chunk(chunk)
            if batch.uniform:
                out[start:end] = alpha
            else:
                out[start:end] = [a.cpu() for a in alpha]
            report(progress, end, total)
        return out
