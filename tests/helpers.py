"""Fixtures shared by the tests and the benchmarks (``from helpers import ...`` in tests,
``from tests.helpers import ...`` in ``benchmarks/``): the pack loader, the synthetic-weights loader,
the lemur photo, a naive Algorithms 1 + 2 loop used as an oracle, and a tiny randomly initialised ViTMatte.

Everything here reads ``tests/data`` only; nothing reads ``../shared`` at run time.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "tests" / "data"
LEMUR_DIR = DATA_DIR / "lemur"
PACK_NAME = "ComfyUI-BEN2"


def install_comfy_api_stub(newer: bool = False) -> None:
    """Put the ``comfy_api`` stand-in (``tests/comfy_stub/comfy_api.py``) into ``sys.modules`` unless a real
    ComfyUI's is importable (CI has none). The nodes bind ``io`` when they are imported, so this stays."""
    if "comfy_api.latest" in sys.modules:
        return
    try:
        importlib.import_module("comfy_api.latest")
        return
    except ImportError:
        pass
    spec = importlib.util.spec_from_file_location("ben2_comfy_api_stub", REPO_ROOT / "tests" / "comfy_stub" /
                                                  "comfy_api.py")
    stub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stub)
    sys.modules.update(stub.make_comfy_api(newer=newer))


def load_pack(name: str = PACK_NAME):
    """Import the repo root as a package called ``name`` (what ComfyUI's custom-node loader does), with the
    ``comfy_api`` stand-in installed first when there is no real one.

    The name may contain a hyphen, so only relative imports inside the pack can work.
    """
    if name in sys.modules:
        return sys.modules[name]
    install_comfy_api_stub()
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(REPO_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


@lru_cache(maxsize=None)
def synth_module():
    """``tests/data/synth_weights.py`` (a copy of the shared conformance generator) as a module."""
    spec = importlib.util.spec_from_file_location("ben2_synth_weights", DATA_DIR / "synth_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synth_sd(seed: int = 0) -> dict:
    """The 535-key synthetic BEN2 state dict (official key names), fresh tensors on every call."""
    return synth_module().synth_state_dict(seed)


def load_lemur():
    """pymatting's lemur photo (CC0): ``(image [1,3,H,W], alpha [1,H,W], trimap [1,H,W])``, float 0..1.

    The given trimap is snapped to {0, 0.5, 1}; the alpha is pymatting's estimate, not ground truth.
    """
    from PIL import Image

    def read(name: str, mode: str) -> torch.Tensor:
        return torch.from_numpy(np.array(Image.open(LEMUR_DIR / name).convert(mode))).float() / 255

    image = read("lemur.png", "RGB").permute(2, 0, 1)
    alpha = read("lemur_alpha.png", "L")
    given = read("lemur_trimap.png", "L")
    trimap = torch.where(given < 0.25, 0.0, torch.where(given > 0.75, 1.0, 0.5))
    return image[None], alpha[None], trimap[None]


def naive_confidence_trimap(probs, t_low=0.10, t_high=0.90, t_min=0.03, t_max=0.97, step=0.001, n_min=None):
    """The literal loop of the BEN paper's Algorithms 1 + 2 on one ``[H, W]`` map (torch or numpy).

    Float64 comparisons with Python-float thresholds, one full re-threshold per step; ``n_min``
    defaults to ``round(60000 * H * W / 1024**2)``. Returns ``(trimap float64 numpy [H, W] with
    0 / 0.5 / 1, final t_low, final t_high, number of widening steps)``.
    """
    p = probs.double().cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs, np.float64)
    H, W = p.shape
    if n_min is None:
        n_min = round(60000 * H * W / 1024 ** 2)

    def threshold(tl, th):
        tri = np.where(p >= th, 1.0, np.where(p <= tl, 0.0, 0.5))
        return tri, int((tri == 0.5).sum())

    tl, th = float(t_low), float(t_high)
    tri, n = threshold(tl, th)
    steps = 0
    while n < n_min and (tl > t_min or th < t_max):
        tl = max(tl - step, t_min)
        th = min(th + step, t_max)
        tri, n = threshold(tl, th)
        steps += 1
    return tri, tl, th, steps


def tiny_vitmatte(seed: int = 0, layers: int = 2):
    """A tiny randomly initialised ``VitMatteForImageMatting`` in eval mode (structure only, no real
    weights); seeded without touching the global RNG. Needs ``transformers``."""
    from transformers import VitDetConfig, VitMatteConfig, VitMatteForImageMatting

    backbone = VitDetConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, mlp_ratio=2,
                            num_channels=4, image_size=64, pretrain_image_size=64, patch_size=16,
                            out_features=[f"stage{layers}"])
    config = VitMatteConfig(backbone_config=backbone, hidden_size=32, convstream_hidden_sizes=[8, 16, 16],
                            fusion_hidden_sizes=[16, 16, 8, 8])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VitMatteForImageMatting(config).eval()


def small_model(seed: int = 0):
    """A narrow, shallow ``BENBase`` (same code paths) with deterministic random weights."""
    from ben_core.model import BENBase

    g = torch.Generator().manual_seed(seed)
    m = BENBase(embed_dim=32, depths=(1, 2, 1, 2), num_heads=(1, 2, 2, 4)).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() > 1:
                p.normal_(0, 1.0 / np.sqrt(p[0].numel()), generator=g)
            elif name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.normal_(0, 0.05, generator=g)
    return m
