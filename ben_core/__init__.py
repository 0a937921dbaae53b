"""ben_core: pure-PyTorch BEN2 background removal (network, checkpoints, pipeline, matting).

No ComfyUI import anywhere in this package. The public names below are imported lazily, so
``import ben_core`` is cheap and loads nothing (no weights, no download)::

    from ben_core import load_ben, BENPredictor, CutoutPipeline
    model = load_ben("model.safetensors")
    predictor = BENPredictor(model)
    alpha = predictor.predict_alpha(images)                 # [B, H, W] float 0..1
    cut = CutoutPipeline(predictor).run(images)             # cut.image [B, H, W, 4] RGBA, cut.alpha

Conventions. Images are channels last wherever you hand them in or get them back: the predictor, the
pipeline and its ``Cutout`` and ``matting.compose`` take and give ``[B, H, W, C]`` (uint8 0..255 or float
0..1; PIL images too). The matting steps the pipeline calls on the network's side take float ``[B, 3, H,
W]`` RGB 0..1, channels first: ``refine_alpha``, ``estimate_foreground`` and the frames of
``stabilize_alpha`` / ``AlphaStabilizer`` (``[T, 3, H, W]``). Masks, alpha and trimaps are ``[B, H, W]``
float 0..1 with 1 = foreground; colours are float ``(r, g, b)`` 0..1. Long loops take ``progress(done, total)`` /
``should_stop()`` callbacks (:mod:`ben_core.callbacks`). The package's rooms: ``model`` (network and
weights), ``matting``, ``io``, ``apps`` (the programs), under ``predictor`` / ``pipeline`` / ``video``.
"""
from __future__ import annotations

import importlib

from . import _moved

_EXPORTS = {
    "BENBase": ".model",
    "read_state_dict": ".model.weights",
    "load_ben": ".model.weights",
    "CheckpointError": ".model.weights",
    "download_official_weights": ".model.weights",
    "find_cached_weights": ".model.weights",
    "WeightsNotFoundError": ".model.weights",
    "export_onnx": ".model.export",
    "BENPredictor": ".predictor",
    "CutoutPipeline": ".pipeline",
    "CutoutOptions": ".pipeline",
    "Refinement": ".pipeline",
    "Cancelled": ".callbacks",
    "estimate_foreground": ".matting.foreground",
    "confidence_trimap": ".matting.trimap",
    "band_trimap": ".matting.trimap",
    "make_trimap": ".matting.trimap",
    "refine_alpha": ".matting.refine",
    "stabilize_alpha": ".matting.temporal",
    "AlphaStabilizer": ".matting.temporal",
    "StabilizerOptions": ".matting.temporal",
    "make_stabilizer": ".matting.temporal",
}

__all__ = sorted(_EXPORTS)

_moved.install(__name__)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ben_core' has no attribute {name!r}")
    # Relative import: inside ComfyUI this package lives under the pack's folder name.
    return getattr(importlib.import_module(module, __name__), name)


def __dir__():
    return sorted(list(globals()) + __all__)
