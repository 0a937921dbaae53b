"""Guided-filter refinement: correctness against a naive reference, invariants, and quality."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import load_lemur

from ben_core.matting.guided_filter import (
    _mean_coefficients,
    box_mean,
    box_sum,
    fast_guided_filter,
    gaussian_blur,
    guided_filter,
    window_count,
)
from ben_core.matting.refine import default_radius, fit_scale, mask_softness, refine_alpha
from ben_core.matting.trimap import auto_trimap, confidence_trimap
from benchmarks.synthetic_matting import band_mse, band_sad, coarsen_alpha, make_synthetic_matte


def naive_guided(guide: np.ndarray, p: np.ndarray, r: int, eps: float, w: np.ndarray | None = None) -> np.ndarray:
    """He et al. colour guided filter with explicit windows (weighted least squares when w is given)."""
    _, H, W = guide.shape
    if w is None:
        w = np.ones((H, W))
    A = np.zeros((3, H, W))
    Bc = np.zeros((H, W))
    for y in range(H):
        for x in range(W):
            ys, xs = slice(max(0, y - r), y + r + 1), slice(max(0, x - r), x + r + 1)
            ww = w[ys, xs].ravel()
            Iw = guide[:, ys, xs].reshape(3, -1)
            pw = p[ys, xs].ravel()
            mI = (Iw * ww).sum(1) / ww.sum()
            mp = (pw * ww).sum() / ww.sum()
            d = Iw - mI[:, None]
            cov = (d * ww) @ d.T / ww.sum()
            cip = (d * ww) @ (pw - mp) / ww.sum()
            a = np.linalg.solve(cov + eps * np.eye(3), cip)
            A[:, y, x] = a
            Bc[y, x] = mp - a @ mI
    q = np.zeros((H, W))
    for y in range(H):
        for x in range(W):
            ys, xs = slice(max(0, y - r), y + r + 1), slice(max(0, x - r), x + r + 1)
            q[y, x] = (A[:, ys, xs].mean((1, 2)) * guide[:, y, x]).sum() + Bc[ys, xs].mean()
    return q


def test_box_mean_matches_naive():
    x = torch.rand(2, 7, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    m = box_mean(x, 2)
    for y in range(7):
        for c in range(9):
            ref = x[:, max(0, y - 2):y + 3, max(0, c - 2):c + 3].mean((1, 2))
            assert torch.allclose(m[:, y, c], ref)


@pytest.mark.parametrize("r", [0, 1, 3, 20])
def test_box_sum_and_window_count_match_naive(r):
    mask = torch.rand(9, 14, generator=torch.Generator().manual_seed(r)) > 0.6
    for dim, n in ((0, 9), (1, 14)):
        s32 = box_sum(mask, r, dim, dtype=torch.int32)
        assert s32.dtype == torch.int32 and box_sum(mask, r, dim).dtype == torch.int64
        cnt = window_count(n, r)
        for i in range(n):
            lo, hi = max(0, i - r), min(n, i + r + 1)
            ref = mask.narrow(dim, lo, hi - lo).sum(dim)
            assert torch.equal(s32.select(dim, i), ref.to(torch.int32))
            assert int(cnt[i]) == hi - lo


@pytest.mark.parametrize("weighted", [False, True])
def test_guided_filter_matches_naive(weighted):
    g = torch.Generator().manual_seed(1)
    guide = torch.rand(3, 11, 13, generator=g, dtype=torch.float64)
    p = torch.rand(11, 13, generator=g, dtype=torch.float64)
    w = (0.2 + torch.rand(11, 13, generator=g, dtype=torch.float64)) if weighted else None
    q = guided_filter(guide, p, 2, 1e-3, weight=w)
    ref = naive_guided(guide.numpy(), p.numpy(), 2, 1e-3, None if w is None else w.numpy())
    assert np.allclose(q.numpy(), ref, atol=1e-9)


def test_guided_filter_strips_do_not_change_result():
    g = torch.Generator().manual_seed(2)
    guide = torch.rand(3, 64, 40, generator=g)
    p = torch.rand(64, 40, generator=g)
    w = torch.rand(64, 40, generator=g) + 0.1
    full = guided_filter(guide, p, 3, 1e-4, weight=w, strip_rows=1000)
    for rows in (1, 5, 17):
        assert torch.allclose(guided_filter(guide, p, 3, 1e-4, weight=w, strip_rows=rows), full, atol=1e-6)


def test_guided_filter_reproduces_linear_alpha():
    # if alpha is an exact linear function of the colour, the filter returns it (eps -> small)
    g = torch.Generator().manual_seed(3)
    guide = torch.rand(3, 30, 30, generator=g, dtype=torch.float64)
    p = 0.2 * guide[0] + 0.5 * guide[1] - 0.1 * guide[2] + 0.1
    assert torch.allclose(guided_filter(guide, p, 4, 1e-9), p, atol=1e-5)


def test_fast_guided_filter_scale_one_is_the_filter_and_linear_alpha_is_kept():
    g = torch.Generator().manual_seed(4)
    guide = torch.rand(3, 60, 90, generator=g, dtype=torch.float64)
    p = torch.rand(60, 90, generator=g, dtype=torch.float64)
    w = torch.rand(60, 90, generator=g, dtype=torch.float64) + 0.1
    assert torch.equal(fast_guided_filter(guide, p, 5, 1e-4, 1, weight=w), guided_filter(guide, p, 5, 1e-4, weight=w))
    # an alpha that is one linear function of the colour everywhere: fitted at low resolution (area
    # averages keep the relation), applied at full resolution, it comes back unchanged
    lin = 0.2 * guide[0] + 0.5 * guide[1] - 0.1 * guide[2] + 0.1
    copies = (guide.clone(), lin.clone())
    out = fast_guided_filter(guide, lin, 8, 1e-9, 3.0)
    assert torch.allclose(out, lin, atol=1e-4)
    assert torch.equal(guide, copies[0]) and torch.equal(lin, copies[1])
    with pytest.raises(ValueError, match="scale"):
        fast_guided_filter(guide, lin, 8, 1e-4, 0.5)


def test_refine_scale_choices():
    s = _sample(0)
    tri = confidence_trimap(s["coarse"])[0]
    full = refine_alpha(s["image"], s["coarse"], tri, scale=1)
    fast = refine_alpha(s["image"], s["coarse"], tri)
    assert not torch.equal(full, fast)  # the default fits at the measured scale
    known = tri != 0.5
    assert torch.equal(fast[known], tri[known]) and torch.equal(full[known], tri[known])
    for bad in (0.5, "2", True):
        with pytest.raises(ValueError, match="scale"):
            refine_alpha(s["image"], s["coarse"], tri, scale=bad)


def _sample(seed=0):
    return make_synthetic_matte(270, 480, seed=seed, model_size=128)


def test_known_pixels_exact_and_inputs_untouched():
    s = _sample(0)
    img, coarse = s["image"], s["coarse"]
    tri = confidence_trimap(coarse)[0]
    copies = [t.clone() for t in (img, coarse, tri)]
    out = refine_alpha(img, coarse, tri)
    for t, c in zip((img, coarse, tri), copies, strict=True):
        assert torch.equal(t, c)
    assert out.shape == coarse.shape and out.dtype == coarse.dtype
    known = tri != 0.5
    assert torch.equal(out[known], tri[known])
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.equal(out[~known], coarse[~known])


@pytest.mark.slow
def test_strip_rows_invariance_and_batch():
    s0, s1 = _sample(1), _sample(2)
    img = torch.cat([s0["image"], s1["image"]])
    a = torch.cat([s0["coarse"], s1["coarse"]])
    tri = confidence_trimap(a)[0]
    out = refine_alpha(img, a, tri)
    assert torch.allclose(out, refine_alpha(img, a, tri, strip_rows=13), atol=1e-6)
    assert torch.allclose(out[1:], refine_alpha(img[1:], a[1:], tri[1:]), atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_refined_beats_coarse_on_synthetic(seed):
    s = make_synthetic_matte(540, 960, seed=seed, model_size=256)
    coarse, gt = s["coarse"], s["alpha"]
    tri = confidence_trimap(coarse)[0]
    unk = tri == 0.5
    base = torch.where(unk, coarse, tri)
    out = refine_alpha(s["image"], coarse, tri)
    # the defaults cut the band MSE by >= 20% (measured: 45-70%)
    assert band_mse(out, gt, unk) < 0.8 * band_mse(base, gt, unk)
    assert band_sad(out, gt, unk) < band_sad(base, gt, unk)


def test_refined_beats_coarse_on_lemur():
    img, gt, _ = load_lemur()
    H, W = gt.shape[-2:]
    coarse = coarsen_alpha(gt, model_size=round(max(H, W) / 3.75))
    tri = confidence_trimap(coarse)[0]
    unk = tri == 0.5
    out = refine_alpha(img, coarse, tri)
    base = torch.where(unk, coarse, tri)
    assert band_mse(out, gt, unk) < 0.8 * band_mse(base, gt, unk)
    assert band_sad(out, gt, unk) < band_sad(base, gt, unk)


def test_auto_trimap_for_soft_and_hard_masks():
    s = _sample(3)
    soft_tri = auto_trimap(s["coarse"])
    # a soft mask: the confidence trimap started at its limits (every pixel the mask is unsure of)
    assert torch.equal(soft_tri, confidence_trimap(s["coarse"], t_low=0.03, t_high=0.97)[0])
    hard = (s["coarse"] > 0.5).float()
    hard_tri = auto_trimap(hard)
    assert int((hard_tri == 0.5).sum()) > 0
    out = refine_alpha(s["image"], hard)  # trimap=None on a hard mask: band trimap
    assert torch.equal(out[hard_tri != 0.5], hard_tri[hard_tri != 0.5])


def test_default_radius_scales():
    assert default_radius(2160, 3840) > default_radius(1080, 1920) > default_radius(440, 680) >= 2


def test_bad_inputs():
    img = torch.rand(1, 3, 16, 16)
    a = torch.rand(1, 16, 16)
    with pytest.raises(ValueError):
        refine_alpha(img[0], a)
    with pytest.raises(ValueError):
        refine_alpha(img, a[:, :8])
    with pytest.raises(ValueError):
        refine_alpha(img, a * 2)
    with pytest.raises(ValueError):
        refine_alpha(img, a, torch.full_like(a, 0.3))
    with pytest.raises(ValueError):
        refine_alpha(img, a, method="closed_form")
    with pytest.raises(ValueError):
        refine_alpha(img, a, radius=0)
    with pytest.raises(ValueError):
        refine_alpha(img, a, eps=0.0)
    with pytest.raises(TypeError):
        refine_alpha((img * 255).byte(), a)
    with pytest.raises(TypeError, match="method='guided' only"):
        refine_alpha(img, a, method="vitmatte", radius=4)
    nan = a.clone()
    nan[0, 0, 0] = float("nan")
    with pytest.raises(ValueError):
        refine_alpha(img, nan)


def test_guided_filter_rejects_non_float_inputs():
    guide, p = torch.rand(3, 8, 8), torch.rand(8, 8)
    with pytest.raises(TypeError, match="guide"):
        guided_filter((guide * 255).byte(), p, 2, 1e-4)
    with pytest.raises(TypeError, match="src"):
        guided_filter(guide, p.numpy(), 2, 1e-4)
    with pytest.raises(TypeError, match="weight"):
        guided_filter(guide, p, 2, 1e-4, weight=torch.ones(8, 8, dtype=torch.int64))


@pytest.mark.parametrize("shape", [(0, 16, 16), (1, 0, 16), (1, 16, 0)])
def test_empty_input_is_a_clear_error(shape):
    b, h, w = shape
    with pytest.raises(ValueError, match="empty input"):
        refine_alpha(torch.rand(b, 3, h, w), torch.rand(b, h, w))


def test_device_mismatch_is_a_clear_error():
    img, a = torch.rand(1, 3, 8, 8), torch.rand(1, 8, 8)
    with pytest.raises(ValueError, match="one device"):
        refine_alpha(img, a.to("meta"))
    with pytest.raises(ValueError, match="one device"):
        refine_alpha(img, a, torch.full((1, 8, 8), 0.5, device="meta"))


def test_auto_trimap_band_radius_for_hard_masks():
    """A hard mask gets the edge band of the requested radius (default_band_radius when None)."""
    from ben_core.matting.trimap import band_trimap

    hard = torch.zeros(1, 96, 128)
    hard[:, 30:70, 40:90] = 1.0
    assert torch.equal(auto_trimap(hard, band_radius=5), band_trimap(hard, 5))
    assert not torch.equal(auto_trimap(hard, band_radius=5), auto_trimap(hard, band_radius=2))
    assert torch.equal(auto_trimap(hard), band_trimap(hard, 2))  # default_band_radius(96, 128) == 2


def _interpolate_reference(guide, src, radius, eps, scale, weight):
    """The fast guided filter as the scale-3.75 default wrote it: coefficients upsampled by torch's bilinear
    interpolate."""
    H, W = src.shape
    size = (max(1, round(H / scale)), max(1, round(W / scale)))

    def area(x):
        return F.interpolate(x.float(), size=size, mode="area")

    I_low = area(guide[None])[0].double() - 0.5
    w_low = area(weight[None, None])[0, 0].double()
    p_low = area((src * weight)[None, None])[0, 0].double() / w_low
    ma, mb = _mean_coefficients(I_low, p_low, max(1, round(radius / scale)), eps, w_low)
    co = F.interpolate(torch.cat([ma, mb[None]]).float()[None], size=(H, W), mode="bilinear", align_corners=False)[0]
    return (co[:3] * (guide - 0.5)).sum(0) + co[3]


@pytest.mark.parametrize("scale", [2.0, 3.75, 7.3])
def test_fast_guided_filter_strips_and_bilinear_match_interpolate(scale):
    g = torch.Generator().manual_seed(5)
    guide = torch.rand(3, 103, 157, generator=g)
    p = torch.rand(103, 157, generator=g)
    w = torch.rand(103, 157, generator=g) + 0.1
    copies = [t.clone() for t in (guide, p, w)]
    out = fast_guided_filter(guide, p, 9, 1e-4, scale, weight=w)
    # the row-strip bilinear upsampling is torch's bilinear interpolate, to float rounding
    assert torch.allclose(out, _interpolate_reference(guide, p, 9, 1e-4, scale, w), atol=2e-6)
    for kw in ({}, {"fit_sigma": 1.0, "apply_sigma": 0.8}):
        whole = fast_guided_filter(guide, p, 9, 1e-4, scale, weight=w, **kw)
        strips = fast_guided_filter(guide, p, 9, 1e-4, scale, weight=w, strip_rows=7, **kw)
        assert torch.allclose(whole, strips, atol=1e-6)
    for t, c in zip((guide, p, w), copies, strict=True):
        assert torch.equal(t, c)
    with pytest.raises(ValueError, match="fit_sigma"):
        fast_guided_filter(guide, p, 9, 1e-4, scale, fit_sigma=-1)
    with pytest.raises(ValueError, match="apply_sigma"):
        fast_guided_filter(guide, p, 9, 1e-4, scale, apply_sigma=float("nan"))
    with pytest.raises(ValueError, match="strip_rows"):
        fast_guided_filter(guide, p, 9, 1e-4, scale, strip_rows=0)


def test_gaussian_blur_rows_equal_the_whole_image():
    x = torch.rand(3, 41, 23, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    whole = gaussian_blur(x, 1.7)
    assert whole.shape == x.shape
    parts = torch.cat([gaussian_blur(x, 1.7, (y, min(41, y + 6))) for y in range(0, 41, 6)], 1)
    assert torch.equal(whole, parts)
    c = torch.full((1, 9, 5), 0.25, dtype=torch.float64)
    assert torch.allclose(gaussian_blur(c, 3.0), c)  # a constant stays constant (replicated border)
    assert torch.equal(gaussian_blur(x, 0), x)


def test_mask_softness_reads_the_blur_of_an_edge():
    xx = torch.arange(400, dtype=torch.float64)
    for sigma in (2.0, 4.0, 12.0):  # central differences read a 1.5 px edge 7% soft
        edge = 0.5 * (1 + torch.erf((xx - 200) / (sigma * 2 ** 0.5)))
        m = edge[None].expand(60, 400).contiguous()
        assert mask_softness(m) == pytest.approx(sigma, rel=0.05)
        assert mask_softness(m, strip_rows=7) == mask_softness(m)
    assert mask_softness(torch.zeros(20, 20)) == 0.0 and fit_scale(torch.zeros(20, 20)) == 1.0
    hard = torch.zeros(50, 50)
    hard[:, 25:] = 1
    assert mask_softness(hard) == 0.0 and fit_scale(hard) == 1.0  # no fractional pixel: fit at full resolution
    unknown = torch.zeros(60, 400, dtype=torch.bool)
    assert mask_softness(m, unknown) == 0.0  # only the unknown pixels count


def test_working_size_sets_the_scale_and_checks():
    s = _sample(0)
    img, coarse = s["image"], s["coarse"]
    tri = confidence_trimap(coarse)[0]
    known = tri != 0.5
    a = refine_alpha(img, coarse, tri, working_size=128)   # 480 px wide: fit at 1/3.75
    b = refine_alpha(img, coarse, tri, working_size=480)   # fit at full resolution
    assert not torch.equal(a, b)
    assert torch.equal(a[known], tri[known]) and torch.equal(b[known], tri[known])
    assert torch.equal(refine_alpha(img, coarse, tri, working_size=4096), b)  # never finer than the image
    for bad in (0, -5, 2.5, True, "1024"):
        with pytest.raises(ValueError, match="working_size"):
            refine_alpha(img, coarse, tri, working_size=bad)
    with pytest.raises(TypeError, match="not both"):
        refine_alpha(img, coarse, tri, working_size=128, scale=2)
    with pytest.raises(TypeError, match="working_size"):
        refine_alpha(img, coarse, tri, method="vitmatte", working_size=128)


def test_default_keeps_dtype_sure_pixels_and_inputs_in_float64():
    s = _sample(4)
    img, coarse = s["image"].double(), s["coarse"].double()
    tri = confidence_trimap(coarse)[0]
    copies = [t.clone() for t in (img, coarse, tri)]
    out = refine_alpha(img, coarse, tri)
    assert out.dtype == torch.float64 and out.shape == coarse.shape
    known = tri != 0.5
    assert torch.equal(out[known], tri[known])
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    for t, c in zip((img, coarse, tri), copies, strict=True):
        assert torch.equal(t, c)
    # strips change the result by float rounding only
    assert torch.allclose(out, refine_alpha(img, coarse, tri, strip_rows=11), atol=1e-6)


def _bright_edge_scene(h: int, w: int):
    """A bright, slightly noisy photo with an edge down the middle, a two-level alpha and random fit weights:
    large second moments with small window variances, what a float32 accumulator cancels away."""
    g = torch.Generator().manual_seed(1)
    image = (0.9 + 0.02 * torch.randn(3, h, w, generator=g)).clamp(0, 1)
    image[:, :, w // 2:] -= 0.3
    alpha = (torch.rand(h, w, generator=g) > 0.5).float() * 0.2 + 0.7
    alpha[:, w // 2:] = 0.1
    return image, alpha, torch.rand(h, w, generator=g)


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_guided_filter_with_a_float32_accumulator_matches_float64(monkeypatch, scale):
    """Where float64 is missing (MPS) the filter accumulates in float32: centred second moments and box sums
    restarted per block keep it within 0.005 of the float64 result (it was off by up to 40 on this 256x1024
    scene, from E[I^2] - E[I]^2 and running sums over whole rows cancelling)."""
    import ben_core.matting.guided_filter as gf

    image, alpha, weight = _bright_edge_scene(256, 1024)
    want = fast_guided_filter(image, alpha, 1, 1e-5, scale, weight=weight)
    assert gf.accumulator_dtype(image.device) == torch.float64
    monkeypatch.setattr(gf, "accumulator_dtype", lambda device: torch.float32)
    got = fast_guided_filter(image, alpha, 1, 1e-5, scale, weight=weight)
    diff = (got - want).abs()
    assert float(diff.max()) < 5e-3 and float(diff.mean()) < 1e-4


@pytest.mark.parametrize("r", [0, 1, 5, 40, 200])
def test_box_sums_restarted_per_block_equal_the_running_sum(r):
    x = torch.randn(3, 50, 301, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for dim in (-1, -2, 1):
        want = box_sum(x, r, dim)
        got = box_sum(x.float(), r, dim)  # float32: the blocked sums
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=0)
