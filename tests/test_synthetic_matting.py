"""The synthetic matting generator and the band metrics."""
from __future__ import annotations

import pytest
import torch

from benchmarks.synthetic_matting import band_mse, band_sad, coarsen_alpha, gaussian_blur, make_synthetic_matte


def test_generator_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = make_synthetic_matte(128, 192, seed=5, model_size=64)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = make_synthetic_matte(128, 192, seed=5, model_size=64)
    c = make_synthetic_matte(128, 192, seed=6, model_size=64)
    for k in a:
        assert torch.equal(a[k], b[k])
    assert not torch.equal(a["alpha"], c["alpha"])


def test_sample_content():
    s = make_synthetic_matte(300, 400, seed=1, model_size=100)
    img, alpha, fg, bg, coarse = (s[k] for k in ("image", "alpha", "fg", "bg", "coarse"))
    assert img.shape == (1, 3, 300, 400) and alpha.shape == coarse.shape == (1, 300, 400)
    for t in s.values():
        assert t.dtype == torch.float32 and float(t.min()) >= 0 and float(t.max()) <= 1
    # composite equation
    assert torch.allclose(img, alpha[:, None] * fg + (1 - alpha[:, None]) * bg, atol=1e-6)
    # soft alpha: solid core, empty background, many fractional pixels (strands, veil)
    assert float((alpha == 1).float().mean()) > 0.05 and float((alpha == 0).float().mean()) > 0.3
    soft = (alpha > 0.02) & (alpha < 0.98)
    assert int(soft.sum()) > 2000
    assert int(((alpha > 0.3) & (alpha < 0.7)).sum()) > 500
    # the coarse mask is close to the truth on average but loses detail
    assert float((coarse - alpha).abs().mean()) < 0.05
    assert float((coarse - alpha).abs()[soft].mean()) > 0.02


def test_coarsen_alpha_behaviour():
    a = torch.zeros(1, 200, 300)
    a[:, 50:150, 100:200] = 1
    before = a.clone()
    c = coarsen_alpha(a, model_size=50)
    assert torch.equal(a, before)
    assert c.shape == a.shape
    assert float(c[0, 100, 150]) == pytest.approx(1.0, abs=1e-5) and float(c[0, 5, 5]) == pytest.approx(0.0, abs=1e-6)
    edge = c[0, 100, 80:121]
    assert float(edge.min()) < 0.1 and float(edge.max()) > 0.9 and ((edge > 0.05) & (edge < 0.95)).sum() >= 3


def test_gaussian_blur_preserves_constants_and_mass():
    x = torch.full((1, 2, 20, 30), 0.4)
    assert torch.allclose(gaussian_blur(x, 1.5), x)
    d = torch.zeros(1, 1, 41, 41)
    d[0, 0, 20, 20] = 1
    y = gaussian_blur(d, 2.0)
    assert float(y.sum()) == pytest.approx(1.0, abs=1e-5) and float(y[0, 0, 20, 20]) < 0.1
    for h, w in ((1, 1), (3, 3), (2, 9), (5, 4)):  # sides shorter than the kernel radius
        x = torch.full((1, 1, h, w), 0.6)
        assert torch.allclose(gaussian_blur(x, 1.5), x, atol=1e-6)


def test_metrics():
    gt = torch.zeros(1, 4, 5)
    pred = gt.clone()
    pred[0, 0, 0] = 0.5
    pred[0, 3, 4] = 1.0
    region = torch.zeros(1, 4, 5, dtype=torch.bool)
    region[0, 0] = True
    assert band_sad(pred, gt) == pytest.approx(1.5 / 1000)
    assert band_sad(pred, gt, region) == pytest.approx(0.5 / 1000)
    assert band_mse(pred, gt, region) == pytest.approx(0.25 / 5)
    assert band_mse(pred, gt, torch.zeros_like(region)) == 0.0
    with pytest.raises(ValueError):
        band_sad(pred, gt[..., :3])


def test_bad_size():
    with pytest.raises(ValueError):
        make_synthetic_matte(32, 400)
