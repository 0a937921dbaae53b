"""ViTMatte (Yao et al. 2024) refinement through ``transformers``, tiled over the unknown band.

``transformers`` is imported lazily (ComfyUI installs it; ``ben_core`` itself does not need it).
Weights come from the Hugging Face Hub (``hustvl/vitmatte-small-composition-1k`` by default) through
``huggingface_hub``, cached and usable offline.

Input encoding follows ``VitMatteImageProcessor``: RGB rescaled to 0..1 then normalised with mean 0.5 /
std 0.5, the trimap as a 4th channel in 0..1 (unknown = 128/255), zero padding on the bottom/right to
a multiple of 32. Large images are cut into tiles of ``tile_size`` whose central ``tile_size - 2*margin``
cores tile the unknown band's bounding box; only tiles whose core holds unknown pixels run.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from ..callbacks import Progress, ShouldStop, check_stop, report
from ..model.weights import WeightsNotFoundError, offline_mode

__all__ = ["VITMATTE_REPO", "VitMatteUnavailableError", "load_vitmatte", "vitmatte_refine", "vitmatte_tiles"]

VITMATTE_REPO = "hustvl/vitmatte-small-composition-1k"
#: Revision downloaded by default; pass ``revision=<commit hash>`` to load_vitmatte to pin the files.
VITMATTE_REVISION = "main"
_UNKNOWN_VALUE = 128.0 / 255.0
_PAD_MULTIPLE = 32


class VitMatteUnavailableError(ImportError):
    """``transformers`` (with ``VitMatteForImageMatting``) is not installed."""


def _vitmatte_class():
    try:
        from transformers import VitMatteForImageMatting
    except ImportError as exc:
        raise VitMatteUnavailableError(
            "method='vitmatte' needs the 'transformers' package (>= 4.35, with VitMatteForImageMatting); "
            "install it with `pip install transformers` (ComfyUI installs it) or use method='guided'") from exc
    return VitMatteForImageMatting


def load_vitmatte(repo_id: str = VITMATTE_REPO, *, local_dir: Optional[os.PathLike] = None,
                  cache_dir: Optional[os.PathLike] = None, local_files_only: Optional[bool] = None,
                  device="cpu", dtype: torch.dtype = torch.float32, revision: str = VITMATTE_REVISION):
    """Load a ViTMatte model (eval mode) from a local folder or the Hugging Face Hub cache.

    Args:
        repo_id: Hub repository (``hustvl/vitmatte-small-composition-1k`` or ``-base-composition-1k``).
        local_dir: a folder holding ``config.json`` + weights; used instead of the Hub when given.
        cache_dir: Hub cache folder (default: the huggingface_hub default).
        local_files_only: only use the cache (default: Hugging Face's offline mode, ``HF_HUB_OFFLINE``); when
            False/None the cache is tried first, then a download.
        device, dtype: where/how the model runs.
        revision: the Hub revision (branch or commit hash; pin a hash for reproducible files).

    Raises: :class:`VitMatteUnavailableError` without transformers; ``ben_core.model.weights.WeightsNotFoundError``
    when the weights are neither cached nor downloadable (the message says where to put them).
    """
    cls = _vitmatte_class()
    if local_dir is not None:
        path = Path(local_dir)
        if not (path / "config.json").is_file():
            raise WeightsNotFoundError(f"{path} has no config.json; put the files of "
                                       f"https://huggingface.co/{repo_id} there")
    else:
        from huggingface_hub import snapshot_download
        only_local = offline_mode() if local_files_only is None else bool(local_files_only)
        patterns = ["*.json", "*.safetensors", "*.bin"]
        try:
            path = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True,
                                          allow_patterns=patterns))
            if not (path / "config.json").is_file():
                raise FileNotFoundError(path)
        except Exception as exc:
            if only_local:
                raise WeightsNotFoundError(
                    f"ViTMatte weights '{repo_id}' are not in the Hugging Face cache ({cache_dir or 'default cache'}) "
                    f"and offline mode is on; download them once online (huggingface-cli download {repo_id}) "
                    "or pass local_dir= a folder with config.json and model.safetensors") from exc
            try:
                path = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=patterns))
            except Exception as exc2:
                raise WeightsNotFoundError(
                    f"could not download ViTMatte weights '{repo_id}' ({type(exc2).__name__}: {exc2}); "
                    f"download https://huggingface.co/{repo_id} into a folder and pass local_dir=") from exc2
    model = cls.from_pretrained(str(path))
    return model.to(device=device, dtype=dtype).eval()


def vitmatte_tiles(height: int, width: int, unknown: torch.Tensor, tile_size: int, margin: int):
    """Tiles covering the unknown pixels: list of ``(core, tile)`` boxes ``(y0, y1, x0, x1)``.

    Cores (``tile_size - 2*margin`` square, clipped to the image) partition the unknown band's
    bounding box; a tile is its core grown by ``margin`` (clipped). Cores without unknown pixels
    are skipped. ``unknown``: [H, W] bool.
    """
    if not bool(unknown.any()):
        return []
    if height <= tile_size and width <= tile_size:
        return [((0, height, 0, width), (0, height, 0, width))]
    core = tile_size - 2 * margin
    rows = unknown.any(1).nonzero()[:, 0]
    cols = unknown.any(0).nonzero()[:, 0]
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    out = []
    for cy in range(y0, y1, core):
        for cx in range(x0, x1, core):
            c = (cy, min(cy + core, y1), cx, min(cx + core, x1))
            if not bool(unknown[c[0]:c[1], c[2]:c[3]].any()):
                continue
            t = (max(0, c[0] - margin), min(height, c[1] + margin), max(0, c[2] - margin), min(width, c[3] + margin))
            out.append((c, t))
    return out


def vitmatte_refine(image: torch.Tensor, trimap: torch.Tensor, model=None, *, tile_size: int = 512, margin: int = 64,
                    repo_id: str = VITMATTE_REPO, progress: Progress = None,
                    should_stop: ShouldStop = None) -> torch.Tensor:
    """Alpha from ViTMatte inside the unknown band, computed tile by tile at full resolution.

    Args:
        image: ``[B, 3, H, W]`` float RGB 0..1.
        trimap: ``[B, H, W]`` float {0, 0.5, 1}.
        model: a ``VitMatteForImageMatting`` in eval mode (default: :func:`load_vitmatte` (repo_id)).
        tile_size: tile side in pixels (multiple of 32, >= 64); memory grows with its square.
        margin: context around each tile core (0 <= margin < tile_size / 4).
        progress, should_stop: after / before every tile (see :mod:`ben_core.callbacks`).

    Returns: ``[B, H, W]`` float32 alpha on image's device: the trimap where it is 0/1, ViTMatte's
    prediction (clamped to 0..1) on unknown pixels. Inputs are not modified.
    """
    if tile_size % _PAD_MULTIPLE or tile_size < 64:
        raise ValueError(f"tile_size must be a multiple of 32 and >= 64, got {tile_size}")
    if not 0 <= margin < tile_size // 4:
        raise ValueError(f"margin must be in [0, tile_size/4), got {margin}")
    if not (isinstance(image, torch.Tensor) and image.is_floating_point()
            and isinstance(trimap, torch.Tensor) and trimap.is_floating_point()):
        raise TypeError("image and trimap must be float tensors (RGB 0..1 and {0, 0.5, 1}); "
                        "convert uint8 with x.float() / 255")
    if image.dim() != 4 or image.shape[1] != 3 or trimap.shape != (image.shape[0], *image.shape[2:]):
        raise ValueError(f"need image [B,3,H,W] and trimap [B,H,W] of the same B, H, W; got {tuple(image.shape)} "
                         f"and {tuple(trimap.shape)} (channels-last images: image.permute(0, 3, 1, 2))")
    if model is None:
        model = load_vitmatte(repo_id)
    if getattr(model, "training", False):
        raise ValueError("the ViTMatte model is in training mode; call model.eval() first")
    p = next(model.parameters())
    mdev, mdt = p.device, p.dtype
    B, _, H, W = image.shape
    out = trimap.to(device=image.device, dtype=torch.float32, copy=True)
    plans = [vitmatte_tiles(H, W, trimap[i] == 0.5, tile_size, margin) for i in range(B)]
    total, done = sum(len(t) for t in plans), 0
    with torch.inference_mode():
        for i in range(B):
            for (c, t) in plans[i]:
                check_stop(should_stop, done, total, "tiles")
                img = image[i:i + 1, :, t[0]:t[1], t[2]:t[3]].to(device=mdev, dtype=torch.float32)
                tri = trimap[i:i + 1, t[0]:t[1], t[2]:t[3]].to(device=mdev, dtype=torch.float32)
                tri = torch.where(tri == 0.5, torch.full_like(tri, _UNKNOWN_VALUE), tri)
                x = torch.cat([(img - 0.5) / 0.5, tri.unsqueeze(1)], dim=1)
                h, w = x.shape[-2:]
                ph, pw = (-h) % _PAD_MULTIPLE, (-w) % _PAD_MULTIPLE
                if ph or pw:
                    x = F.pad(x, (0, pw, 0, ph))
                a = model(pixel_values=x.to(mdt)).alphas[0, 0, :h, :w].float()
                a = a[c[0] - t[0]:c[1] - t[0], c[2] - t[2]:c[3] - t[2]].clamp(0, 1).to(out.device)
                core = out[i, c[0]:c[1], c[2]:c[3]]
                u = trimap[i, c[0]:c[1], c[2]:c[3]] == 0.5
                out[i, c[0]:c[1], c[2]:c[3]] = torch.where(u.to(out.device), a, core)
                done += 1
                report(progress, done, total)
    return out
