"""confidence_trimap must equal a naive implementation of the BEN paper's Algorithms 1 + 2."""
from __future__ import annotations

import pytest
import torch
from helpers import naive_confidence_trimap

from ben_core.matting.trimap import (
    PAPER_DEFAULTS,
    auto_trimap,
    band_trimap,
    confidence_trimap,
    default_band_radius,
    default_min_unknown,
    make_trimap,
    snap_trimap,
    threshold_sequence,
)


def check_equal(probs, **kw):
    n_min = kw.pop("min_unknown", None)
    tri, lo, hi = confidence_trimap(probs, min_unknown=n_min, **kw)
    assert tri.shape == probs.shape and tri.dtype == probs.dtype
    H, W = probs.shape[-2:]
    flat = probs.reshape(-1, H, W)
    assert lo.shape == (flat.shape[0],) and lo.dtype == torch.float64 and hi.dtype == torch.float64
    args = dict(t_low=kw.get("t_low", 0.10), t_high=kw.get("t_high", 0.90), t_min=kw.get("t_min", 0.03),
                t_max=kw.get("t_max", 0.97), step=kw.get("step", 0.001))
    for i in range(flat.shape[0]):
        ref, rl, rh, _ = naive_confidence_trimap(flat[i], n_min=n_min, **args)
        assert torch.equal(tri.reshape(-1, H, W)[i].to(torch.float64), torch.from_numpy(ref)), f"map {i} differs"
        assert float(lo[i]) == rl and float(hi[i]) == rh, (i, float(lo[i]), rl, float(hi[i]), rh)
    return tri, lo, hi


def test_random_maps_batch_with_leading_dims():
    g = torch.Generator().manual_seed(1)
    # smooth-ish maps with many values near the thresholds, several leading dims
    base = torch.randn(2, 3, 1, 24, 32, generator=g)
    probs = torch.sigmoid(base * torch.tensor([3.0, 4.0, 4.5, 6.0, 9.0, 30.0]).reshape(2, 3, 1, 1, 1))
    check_equal(probs.float())
    tri, lo, hi = check_equal(probs.float(), min_unknown=400)
    assert len(set(lo.tolist())) > 2  # thresholds are per map


@pytest.mark.parametrize("n_min", [0, 1, 50, 300, 767, 768, 10 ** 6])
def test_given_min_unknown(n_min):
    g = torch.Generator().manual_seed(2)
    probs = torch.sigmoid(torch.randn(3, 24, 32, generator=g, dtype=torch.float64) * 4)
    check_equal(probs, min_unknown=n_min)


def test_values_exactly_on_thresholds():
    # put pixels exactly on every float64 threshold of the sequence (both sides)
    lows, highs = threshold_sequence()
    vals = torch.tensor(lows + highs + [0.0, 1.0, 0.5], dtype=torch.float64)
    probs = vals.repeat(3).reshape(3, -1)
    for n_min in (0, 5, 40, 100, 200, 10 ** 6):
        check_equal(probs, min_unknown=n_min)
    # float32 inputs near thresholds: comparisons are done in float64 on the float32 value
    p32 = torch.tensor(lows + highs, dtype=torch.float32).reshape(1, -1)
    for n_min in (0, 10, 60, 150):
        check_equal(p32, min_unknown=n_min)


def test_saturated_constant_tiny():
    check_equal(torch.zeros(2, 16, 16))
    check_equal(torch.ones(2, 16, 16))
    sat = (torch.rand(4, 20, 20, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    tri, lo, hi = check_equal(sat)
    assert torch.allclose(lo, torch.full_like(lo, 0.03)) and torch.allclose(hi, torch.full_like(hi, 0.97))
    for c in (0.03, 0.1, 0.5, 0.9, 0.97, 0.0305, 0.9695):
        check_equal(torch.full((9, 7), c, dtype=torch.float64), min_unknown=5)
    check_equal(torch.tensor([[0.5]]))
    check_equal(torch.tensor([[0.95]]), min_unknown=1)
    check_equal(torch.rand(1, 1, generator=torch.Generator().manual_seed(4)), min_unknown=1)
    check_equal(torch.rand(3, 1, 5, generator=torch.Generator().manual_seed(5)), min_unknown=2)


def test_custom_thresholds_and_step():
    g = torch.Generator().manual_seed(6)
    probs = torch.rand(2, 30, 30, generator=g)
    check_equal(probs, t_low=0.2, t_high=0.7, t_min=0.0, t_max=1.0, step=0.013, min_unknown=800)
    check_equal(probs, t_low=0.2, t_high=0.21, t_min=0.2, t_max=0.3, step=0.004, min_unknown=850)


def test_paper_defaults_at_1024():
    assert default_min_unknown(1024, 1024) == 60000
    assert default_min_unknown(512, 512) == 15000
    g = torch.Generator().manual_seed(7)
    # a sharp mask with a thin soft edge: needs widening of the thresholds
    x = torch.linspace(-1, 1, 1024)
    probs = torch.sigmoid(40 * (x[None, :] + 0.1 * torch.randn(1024, 1, generator=g))).unsqueeze(0)
    tri, lo, hi = check_equal(probs)
    assert float(lo[0]) < 0.10 and float(hi[0]) > 0.90


def test_does_not_mutate_input_and_keeps_device_dtype():
    probs = torch.rand(2, 10, 12, generator=torch.Generator().manual_seed(8))
    before = probs.clone()
    tri, _, _ = confidence_trimap(probs)
    assert torch.equal(probs, before)
    assert set(torch.unique(tri).tolist()) <= {0.0, 0.5, 1.0}
    t16 = confidence_trimap(probs.half())[0]
    assert t16.dtype == torch.float16


def test_plain_2d_map():
    probs = torch.rand(10, 12, generator=torch.Generator().manual_seed(9))
    tri, lo, hi = check_equal(probs)
    assert lo.shape == (1,)


@pytest.mark.parametrize("bad,exc", [
    (torch.tensor([[0.2, float("nan")]]), ValueError),
    (torch.tensor([[0.2, 1.5]]), ValueError),
    (torch.tensor([[-0.1, 0.5]]), ValueError),
    (torch.tensor([[float("inf"), 0.5]]), ValueError),
    (torch.rand(5), ValueError),
    (torch.ones(3, 3, dtype=torch.uint8), TypeError),
    ([[0.1, 0.2]], TypeError),
])
def test_bad_input(bad, exc):
    with pytest.raises(exc):
        confidence_trimap(bad)


@pytest.mark.parametrize("kw", [dict(t_low=0.9, t_high=0.1), dict(t_low=0.5, t_high=0.5), dict(step=0.0),
                                dict(step=-0.001), dict(t_min=0.2), dict(t_max=0.8), dict(t_low=float("nan")),
                                dict(t_max=1.5), dict(min_unknown=-1)])
def test_bad_parameters(kw):
    with pytest.raises(ValueError):
        confidence_trimap(torch.rand(4, 4), **kw)


def test_bad_parameter_types():
    with pytest.raises(TypeError):
        confidence_trimap(torch.rand(4, 4), min_unknown=3.5)
    with pytest.raises(TypeError):
        confidence_trimap(torch.rand(4, 4), t_low="0.1")


def naive_band(mask2d: torch.Tensor, r: int) -> torch.Tensor:
    fg = mask2d >= 0.5
    H, W = fg.shape
    out = fg.to(torch.float64).clone()
    for y in range(H):
        for x in range(W):
            win = fg[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1]
            if bool(win.any()) and not bool(win.all()):
                out[y, x] = 0.5
    return out


@pytest.mark.parametrize("r", [0, 1, 2, 5])
def test_band_trimap_matches_naive(r):
    g = torch.Generator().manual_seed(10 + r)
    m = torch.rand(2, 1, 13, 17, generator=g)
    m = torch.nn.functional.avg_pool2d(m.reshape(2, 1, 13, 17), 3, 1, 1).reshape(2, 1, 13, 17)
    tri = band_trimap(m, r)
    assert tri.shape == m.shape and tri.dtype == m.dtype
    for i in range(2):
        assert torch.equal(tri[i, 0].double(), naive_band(m[i, 0], r))


def test_band_trimap_properties():
    m = torch.zeros(1, 64, 80)
    m[:, 20:40, 30:50] = 1.0
    before = m.clone()
    tri = band_trimap(m, 3)
    assert torch.equal(m, before)
    assert int((tri == 0.5).sum()) == (26 * 26 - 14 * 14)
    assert float(tri[0, 30, 40]) == 1.0 and float(tri[0, 0, 0]) == 0.0
    # constant masks have no edge (the image border is not an edge)
    assert torch.equal(band_trimap(torch.ones(1, 8, 8), 3), torch.ones(1, 8, 8))
    assert torch.equal(band_trimap(torch.zeros(8, 8), 30), torch.zeros(8, 8))
    with pytest.raises(ValueError):
        band_trimap(m, -1)
    with pytest.raises(TypeError):
        band_trimap(m, 2.0)
    with pytest.raises(ValueError):
        band_trimap(torch.tensor([[float("nan")]]), 1)


@pytest.mark.slow
def test_band_trimap_4k_is_fast():
    import time
    m = torch.zeros(1, 2160, 3840)
    m[:, 500:1500, 1000:3000] = 1.0
    t = time.perf_counter()
    tri = band_trimap(m, 24)
    assert time.perf_counter() - t < 20.0
    assert int((tri == 0.5).sum()) == (1048 * 2048 - 952 * 1952)


def test_float32_neighbours_of_thresholds_and_half_inputs():
    import numpy as np
    lows, highs = threshold_sequence()
    vals = []
    for t in lows + highs:
        c = np.float32(t)
        vals += [float(np.nextafter(c, np.float32(-1))), float(c), float(np.nextafter(c, np.float32(2)))]
    p32 = torch.tensor(vals, dtype=torch.float32).reshape(3, -1)
    for n_min in (0, 7, 30, 90, 200, 400):
        check_equal(p32, min_unknown=n_min)
    g = torch.Generator().manual_seed(11)
    probs = torch.sigmoid(torch.randn(2, 40, 40, generator=g) * 6)
    for dt in (torch.float16, torch.bfloat16):
        check_equal(probs.to(dt), min_unknown=500)


def test_empty_maps_and_numpy_min_unknown():
    import numpy as np
    for shape in [(2, 0, 4), (3, 5, 0), (0, 4, 4), (2, 0, 3, 3)]:
        tri, lo, hi = confidence_trimap(torch.rand(shape))
        n = 1
        for d in shape[:-2]:
            n *= d
        assert tri.shape == shape and lo.shape == (n,) and hi.shape == (n,)
    probs = torch.rand(2, 9, 11, generator=torch.Generator().manual_seed(12))
    a = confidence_trimap(probs, min_unknown=np.int64(40))
    b = confidence_trimap(probs, min_unknown=40)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _soft_disc(h=64, w=64):
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    d = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2).sqrt()
    return torch.sigmoid((min(h, w) / 3 - d) / 3.0)[None]


def test_make_trimap_sources():
    """The trimap every door makes without one (moved here with the rule from the Refine Mask node)."""
    hard = torch.zeros(1, 64, 64)
    hard[:, 20:44, 20:44] = 1.0
    tri_hard = make_trimap(hard, "auto", 0)
    assert torch.equal(tri_hard, make_trimap(hard, "band", 0))  # a hard mask gets the edge band
    soft = _soft_disc(64, 64)
    tri_soft = make_trimap(soft, "auto", 0)
    assert torch.equal(tri_soft, auto_trimap(soft))
    assert not torch.equal(tri_soft, make_trimap(soft, "confidence", 0))  # the paper's start is narrower
    assert default_band_radius(1000, 3000) == 11 and default_band_radius(64, 64) == 2
    both = torch.cat([hard, soft])
    assert torch.equal(make_trimap(both, "auto", 0), auto_trimap(both))
    with pytest.raises(ValueError):
        make_trimap(hard, "magic", 0)


def test_snap_trimap_levels():
    x = torch.tensor([[0.0, 0.25, 0.26, 0.5, 0.74, 0.75, 1.0]])
    assert snap_trimap(x).tolist() == [[0.0, 0.0, 0.5, 0.5, 0.5, 1.0, 1.0]]
    assert snap_trimap(x.double()).dtype == torch.float64


def test_min_unknown_fraction_equals_the_pixel_count_rule():
    """``min_unknown_fraction`` f means N_min = round(f * H * W); the paper's default is 60,000 px at 1024^2."""
    paper_fraction = PAPER_DEFAULTS["min_unknown_fraction"]
    assert default_min_unknown(1024, 1024) == 60000 == default_min_unknown(1024, 1024, paper_fraction)
    g = torch.Generator().manual_seed(3)
    probs = torch.rand(2, 37, 53, generator=g)
    for f in (0.0, 0.1, 0.5, 1.0):
        a = confidence_trimap(probs, min_unknown_fraction=f)
        b = confidence_trimap(probs, min_unknown=round(f * 37 * 53))
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    with pytest.raises(ValueError, match="min_unknown_fraction"):
        confidence_trimap(probs, min_unknown_fraction=1.5)
    with pytest.raises(TypeError, match="not both"):
        confidence_trimap(probs, min_unknown=3, min_unknown_fraction=0.1)


def test_auto_trimap_of_a_soft_mask_is_every_unsure_pixel():
    """auto (the refinement's default): a soft mask's pixels strictly between t_min and t_max are unknown,
    >= t_max foreground, <= t_min background, whatever N_min (written out here, not through
    confidence_trimap); the paper's 0.10 / 0.90 start calls a translucent 0.92 sure instead."""
    g = torch.Generator().manual_seed(4)
    soft = torch.rand(2, 48, 64, generator=g)
    soft[:, :8] = 0.92                               # a translucent flag
    soft[0, 8, :4] = torch.tensor([0.03, 0.97, 0.0300001, 0.9699999])  # the limits themselves
    want = torch.where(soft.double() >= 0.97, 1.0, torch.where(soft.double() <= 0.03, 0.0, 0.5)).float()
    got = auto_trimap(soft)
    assert torch.equal(got, want)
    assert got[0, 8, :4].tolist() == [0.0, 1.0, 0.5, 0.5]
    assert bool((got[:, :8] == 0.5).all())
    assert bool((make_trimap(soft, "confidence")[:, :8] == 1).all())  # the paper's trimap snaps the flag
    half = soft.half()
    assert got.dtype == soft.dtype and auto_trimap(half).dtype == torch.float16
