"""ViTMatte path, structure only: a tiny randomly initialised config (no real weights here)."""
from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from helpers import tiny_vitmatte  # noqa: E402

from ben_core.matting.refine import refine_alpha  # noqa: E402
from ben_core.matting.trimap import band_trimap  # noqa: E402
from ben_core.matting.vitmatte import VitMatteUnavailableError, load_vitmatte, vitmatte_refine, vitmatte_tiles  # noqa: E402


def _inputs(H=150, W=230, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(B, 3, H, W, generator=g)
    m = torch.zeros(B, H, W)
    m[:, H // 4: 3 * H // 4, W // 5: 3 * W // 5] = 1
    return img, m, band_trimap(m, 6)


def test_single_tile_equals_direct_forward():
    model = tiny_vitmatte()
    img, m, tri = _inputs(B=1)
    out = vitmatte_refine(img, tri, model, tile_size=256, margin=32)
    x = torch.cat([(img - 0.5) / 0.5, torch.where(tri == 0.5, 128 / 255, tri).unsqueeze(1)], 1)
    x = F.pad(x, (0, 256 - 230, 0, 160 - 150))
    with torch.no_grad():
        ref = model(pixel_values=x).alphas[0, 0, :150, :230].clamp(0, 1)
    unk = tri[0] == 0.5
    assert torch.allclose(out[0][unk], ref[unk], atol=1e-6)
    assert torch.equal(out[0][~unk], tri[0][~unk])


def test_tiles_cover_unknown_and_skip_empty():
    unk = torch.zeros(700, 900, dtype=torch.bool)
    unk[100:110, 50:800] = True
    unk[600, 880] = True
    plan = vitmatte_tiles(700, 900, unk, 128, 16)
    cover = torch.zeros_like(unk)
    for c, t in plan:
        assert cover[c[0]:c[1], c[2]:c[3]].sum() == 0  # cores do not overlap
        cover[c[0]:c[1], c[2]:c[3]] = True
        assert t[0] <= c[0] and t[1] >= c[1] and t[1] - t[0] <= 128 and t[3] - t[2] <= 128
        assert unk[c[0]:c[1], c[2]:c[3]].any()
    assert bool(cover[unk].all())
    assert len(plan) < 30  # the empty middle of the bounding box is skipped
    assert vitmatte_tiles(10, 10, torch.zeros(10, 10, dtype=torch.bool), 64, 8) == []


def test_tiled_refine_through_refine_alpha():
    model = tiny_vitmatte(1)
    img, m, tri = _inputs(H=300, W=420, B=2, seed=1)
    before = [img.clone(), m.clone(), tri.clone()]
    calls = []
    out = refine_alpha(img, m, tri, method="vitmatte", model=model, tile_size=128, margin=16,
                       progress=lambda d, t: calls.append((d, t)))
    assert torch.equal(img, before[0]) and torch.equal(m, before[1]) and torch.equal(tri, before[2])
    assert out.shape == m.shape and out.dtype == m.dtype
    known = tri != 0.5
    assert torch.equal(out[known], tri[known])
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert calls and calls[-1][0] == calls[-1][1] == len(calls)
    assert not torch.equal(out[~known], m[~known])  # the network wrote the unknown band


def test_training_mode_rejected():
    model = tiny_vitmatte().train()
    img, m, tri = _inputs(B=1)
    with pytest.raises(ValueError):
        vitmatte_refine(img, tri, model)


def test_weights_not_cached_offline(tmp_path):
    with pytest.raises(FileNotFoundError) as ei:
        load_vitmatte(cache_dir=tmp_path, local_files_only=True)
    assert "vitmatte" in str(ei.value).lower()
    with pytest.raises(FileNotFoundError):
        load_vitmatte(local_dir=tmp_path)
    from ben_core.model.weights import WeightsNotFoundError
    with pytest.raises(WeightsNotFoundError, match="config.json"):
        load_vitmatte(local_dir=tmp_path)


def test_missing_transformers_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(VitMatteUnavailableError) as ei:
        load_vitmatte(local_dir=".")
    assert "pip install transformers" in str(ei.value)


def test_bad_tile_arguments():
    model = tiny_vitmatte()
    img, m, tri = _inputs(B=1)
    with pytest.raises(ValueError):
        vitmatte_refine(img, tri, model, tile_size=100)
    with pytest.raises(ValueError):
        vitmatte_refine(img, tri, model, tile_size=128, margin=40)
    with pytest.raises(TypeError, match="float"):
        vitmatte_refine((img * 255).byte(), tri, model)
    with pytest.raises(ValueError, match="same B, H, W"):
        vitmatte_refine(img, tri[:, :-1], model)
