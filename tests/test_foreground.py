"""Blur-fusion foreground estimator against a direct (slow, obviously correct) NumPy implementation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ben_core.matting.foreground import box_blur, estimate_foreground

# ------------------------------------------------------------------------------------------------
# direct reference: cv2.blur semantics written out pixel by pixel (window offsets -(r//2)..r-1-r//2,
# BORDER_REFLECT_101 by OpenCV's borderInterpolate loop), then upstream's two-pass formula.
# ------------------------------------------------------------------------------------------------

def _reflect101(p: int, n: int) -> int:
    if n == 1:
        return 0
    while p < 0 or p >= n:
        p = -p if p < 0 else 2 * (n - 1) - p
    return p


def ref_blur(x: np.ndarray, r: int) -> np.ndarray:
    """Box mean of an [H,W,C] float64 array, one window at a time."""
    h, w = x.shape[:2]
    offs = range(-(r // 2), r - r // 2)
    out = np.zeros_like(x, dtype=np.float64)
    for i in range(h):
        for j in range(w):
            acc = np.zeros(x.shape[2:], dtype=np.float64)
            for di in offs:
                for dj in offs:
                    acc += x[_reflect101(i + di, h), _reflect101(j + dj, w)]
            out[i, j] = acc / (r * r)
    return out


def ref_pass(image, fg, bg, alpha, r):
    blurred_alpha = ref_blur(alpha, r)
    blurred_f = ref_blur(fg * alpha, r) / (blurred_alpha + 1e-5)
    blurred_b = ref_blur(bg * (1 - alpha), r) / ((1 - blurred_alpha) + 1e-5)
    new_fg = blurred_f + alpha * (image - alpha * blurred_f - (1 - alpha) * blurred_b)
    return np.clip(new_fg, 0, 1), blurred_b


def ref_estimate(image: np.ndarray, alpha: np.ndarray, radii=(90, 6)) -> np.ndarray:
    """image [H,W,3] float64, alpha [H,W] -> foreground [H,W,3] (upstream refine_foreground formula)."""
    a = alpha[:, :, None]
    fg, bg = image, image
    for r in radii:
        fg, bg = ref_pass(image, fg, bg, a, r)
    return fg


def _to_t(image_hwc, alpha_hw):
    return (torch.from_numpy(image_hwc).permute(2, 0, 1)[None].float(),
            torch.from_numpy(alpha_hw)[None].float())


# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("h,w,r", [(9, 7, 3), (8, 11, 4), (6, 5, 6), (5, 4, 9), (1, 6, 3), (7, 1, 2), (12, 10, 1)])
def test_box_blur_matches_direct_window_mean(h, w, r):
    rng = np.random.default_rng(h * 100 + w * 10 + r)
    x = rng.random((h, w, 2))
    want = ref_blur(x, r)
    got = box_blur(torch.from_numpy(x).permute(2, 0, 1), r).permute(1, 2, 0).double().numpy()
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)


def test_box_blur_large_image_blocks_and_zero_windows():
    """Wider than the internal cumulative-sum block: still the window mean; all-zero windows give exactly 0."""
    rng = np.random.default_rng(3)
    x = np.zeros((1, 20, 1300))
    x[0, :, :600] = rng.random((20, 600))
    got = box_blur(torch.from_numpy(x).float(), 7)[0].double().numpy()
    # direct mean for a handful of columns, including block boundaries
    for j in (0, 3, 511, 512, 513, 597, 601, 1024, 1299):
        for i in (0, 10, 19):
            win = [x[0, _reflect101(i + di, 20), _reflect101(j + dj, 1300)]
                   for di in range(-3, 4) for dj in range(-3, 4)]
            assert abs(got[i, j] - np.mean(win)) < 2e-6, (i, j)
    assert (got[:, 700:] == 0).all()


@pytest.mark.parametrize("radii", [(5, 2), (9, 3), (4,), (90, 6)])
def test_estimate_foreground_matches_direct_formula(radii):
    rng = np.random.default_rng(sum(radii))
    h, w = 13, 17  # (90, 6) on a 13x17 image exercises repeated border reflection
    image = rng.random((h, w, 3))
    alpha = np.clip(rng.random((h, w)) * 1.4 - 0.2, 0, 1)
    want = ref_estimate(image, alpha, radii)
    img_t, a_t = _to_t(image, alpha)
    got = estimate_foreground(img_t, a_t, radii=radii)[0].permute(1, 2, 0).double().numpy()
    np.testing.assert_allclose(got, want, atol=5e-5, rtol=0)


def test_matches_opencv_when_available():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(11)
    image = rng.random((70, 95, 3))
    alpha = np.clip(rng.random((70, 95)) * 1.4 - 0.2, 0, 1)

    def pass_cv(image, f, b, a, r):
        ba = cv2.blur(a, (r, r))[:, :, None]
        bf = cv2.blur(f * a, (r, r)) / (ba + 1e-5)
        bb = cv2.blur(b * (1 - a), (r, r)) / ((1 - ba) + 1e-5)
        return np.clip(bf + a * (image - a * bf - (1 - a) * bb), 0, 1), bb

    a3 = alpha[:, :, None]
    f, bb = pass_cv(image, image, image, a3, 90)
    want = pass_cv(image, f, bb, a3, 6)[0]
    img_t, a_t = _to_t(image, alpha)
    got = estimate_foreground(img_t, a_t)[0].permute(1, 2, 0).double().numpy()
    np.testing.assert_allclose(got, want, atol=5e-5, rtol=0)


def _composite_scene(h=96, w=128):
    """Red object with a soft 24-px edge over a blue/green background; returns I, alpha, F_true."""
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    alpha = np.clip((xx - 40) / 24.0, 0, 1)                          # soft vertical edge
    alpha = alpha * np.clip((yy - 10) / 6.0, 0, 1)                   # and a softer top edge
    fg = np.zeros((h, w, 3))
    fg[..., 0] = 0.9
    fg[..., 1] = 0.2 + 0.1 * (yy / h)
    bg = np.zeros((h, w, 3))
    bg[..., 2] = 0.8
    bg[..., 1] = 0.6 * (xx / w)
    image = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    return image, alpha, fg


def test_edges_carry_no_background_colour():
    """Upstream's (90, 6) passes on a red object with a 24-px soft edge over blue: the estimate at the edge
    is close to the true red, unlike the observed (mixed) colour, and recomposites cleanly."""
    image, alpha, fg_true = _composite_scene(256, 320)
    img_t, a_t = _to_t(image, alpha)
    est = estimate_foreground(img_t, a_t)[0].permute(1, 2, 0).double().numpy()
    edge = (alpha > 0.05) & (alpha < 0.95)
    assert edge.sum() > 3000
    err_est = np.abs(est - fg_true)[edge].mean()
    err_naive = np.abs(image - fg_true)[edge].mean()      # the observed colour used as foreground
    assert err_naive > 0.3
    assert err_est < 0.1 and err_est < 0.25 * err_naive, (err_est, err_naive)
    # the blue of the old background is (nearly) gone from the edge: it was up to 0.8 * (1 - alpha)
    assert est[..., 2][edge].max() < 0.15
    assert image[..., 2][edge].max() > 0.7
    # recompositing over white: visible error small, several times below the naive cut-out's
    a = alpha[..., None]
    comp_err = np.abs((est - fg_true) * a).max()
    naive_err = np.abs((image - fg_true) * a).max()
    assert comp_err < 0.06 and comp_err < naive_err / 3, (comp_err, naive_err)


def test_batch_shapes_dtype_device_and_no_mutation():
    rng = np.random.default_rng(5)
    image = torch.from_numpy(rng.random((2, 3, 20, 30))).to(torch.float64)
    alpha = torch.from_numpy(rng.random((2, 20, 30))).to(torch.float64)
    image_before, alpha_before = image.clone(), alpha.clone()
    out = estimate_foreground(image, alpha, radii=(7, 3))
    assert out.shape == (2, 3, 20, 30) and out.dtype == torch.float64 and out.device == image.device
    assert torch.equal(image, image_before) and torch.equal(alpha, alpha_before)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # each image is independent of its batch neighbours
    single = estimate_foreground(image[1:2], alpha[1:2], radii=(7, 3))
    torch.testing.assert_close(out[1:2], single)
    # [B,1,H,W] alpha and a [3,H,W] single image are accepted
    torch.testing.assert_close(estimate_foreground(image, alpha[:, None], radii=(7, 3)), out)
    torch.testing.assert_close(estimate_foreground(image[0], alpha[0], radii=(7, 3)), out[0])


def test_constant_alpha_is_finite():
    img = torch.rand(1, 3, 16, 16)
    for value in (0.0, 1.0):
        out = estimate_foreground(img, torch.full((1, 16, 16), value))
        assert torch.isfinite(out).all()
    # alpha == 1 everywhere: the foreground is the image itself
    torch.testing.assert_close(estimate_foreground(img, torch.ones(1, 16, 16)), img, atol=1e-4, rtol=0)


@pytest.mark.parametrize("image,alpha,exc", [
    (torch.rand(1, 3, 8, 8), torch.rand(1, 8, 9), ValueError),
    (torch.rand(1, 4, 8, 8), torch.rand(1, 8, 8), ValueError),
    (torch.rand(2, 3, 8, 8), torch.rand(1, 8, 8), ValueError),
    ((torch.rand(1, 3, 8, 8) * 255).to(torch.uint8), torch.rand(1, 8, 8), TypeError),
    (np.zeros((1, 3, 8, 8)), torch.rand(1, 8, 8), TypeError),
    (torch.full((1, 3, 8, 8), float("nan")), torch.rand(1, 8, 8), ValueError),
])
def test_bad_inputs(image, alpha, exc):
    with pytest.raises(exc):
        estimate_foreground(image, alpha)


@pytest.mark.parametrize("radii", [(), (0,), (6.5,), (-3, 6)])
def test_bad_radii(radii):
    with pytest.raises(ValueError):
        estimate_foreground(torch.rand(1, 3, 8, 8), torch.rand(1, 8, 8), radii=radii)


def test_column_pass_variants_agree():
    """The CPU column pass (running row sum) and the cumulative-sum pass used on GPUs give the same box."""
    from ben_core.matting import foreground as fgm

    x = torch.rand(3, 700, 9)
    for r in (1, 2, 6, 17, 90):
        want = fgm._box_rows_sliding(x, r)
        torch.testing.assert_close(fgm._box_along(x, r, 1), want, atol=2e-6, rtol=0)
        if r > 1:
            torch.testing.assert_close(fgm._box_direct(x, r, 1), want, atol=2e-6, rtol=0)


# ------------------------------------------------------------------------------------------------
# strips: bit-identical to the whole image at once, whatever the strip height
# ------------------------------------------------------------------------------------------------

def whole_image(image: torch.Tensor, alpha: torch.Tensor, radii=(90, 6)) -> torch.Tensor:
    """The estimator as it was before strips: every pass over the whole image ([3,H,W], [H,W] float32)."""
    img = image.clamp(0.0, 1.0)
    a = alpha.clamp(0.0, 1.0)[None]
    fg, bg = img, img
    for r in radii:
        blurred = box_blur(torch.cat([fg * a, bg * (1.0 - a), a]), r)
        bf = blurred[0:3] / (blurred[6:7] + 1e-5)
        bb = blurred[3:6] / ((1.0 - blurred[6:7]) + 1e-5)
        fg, bg = (bf + a * (img - a * bf - (1.0 - a) * bb)).clamp(0.0, 1.0), bb
    return fg


def _scene(h, w, seed):
    """Random colours and an alpha with hard 0/1 areas, soft values and sigmoid tails (tiny values)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, h, w, generator=g)
    alpha = (torch.rand(h, w, generator=g) * 1.4 - 0.2).clamp(0, 1)
    alpha[: h // 3] = torch.sigmoid(torch.randn(h // 3, w, generator=g) * 30)
    return image, alpha


def _bits(x):
    return x.contiguous().view(torch.int32)


def test_halo_of_the_default_passes():
    """Row i's foreground depends on rows i - sum(r // 2) .. i + sum(r - 1 - r // 2)."""
    from ben_core.matting.foreground import foreground_halo

    assert foreground_halo() == (48, 46)            # (90 // 2 + 6 // 2, 44 + 2)
    assert foreground_halo((9, 4)) == (6, 5)
    assert foreground_halo((7,)) == (3, 3)


def test_halo_is_exact_on_the_direct_reference():
    """On the direct float64 reference (each window summed on its own): changing the image or alpha in
    the row just outside the halo leaves the row unchanged bit for bit, in the halo's last row it does not."""
    from ben_core.matting.foreground import foreground_halo

    radii, i = (9, 4), 15
    above, below = foreground_halo(radii)
    rng = np.random.default_rng(8)
    image = 0.3 + 0.4 * rng.random((32, 4, 3))      # no clamping anywhere: every input change shows
    alpha = 0.2 + 0.6 * rng.random((32, 4))
    base = ref_estimate(image, alpha, radii)[i]

    def changed(row, what):
        img, a = image.copy(), alpha.copy()
        if what == "image":
            img[row] += 0.05
        else:
            a[row] += 0.05
        return not np.array_equal(ref_estimate(img, a, radii)[i], base)

    for what in ("image", "alpha"):
        assert changed(i - above, what) and changed(i + below, what)
        assert not changed(i - above - 1, what) and not changed(i + below + 1, what)


@pytest.mark.parametrize("h,w", [(517, 300), (300, 517), (61, 7)])
def test_strips_are_bit_identical_to_the_whole_image(h, w):
    """Strip heights from 1 row (far below the 48/46-row halo) to the whole image, odd sizes, radii
    with even and odd boxes and a 1-px pass: every bit of every strip split equals the whole image."""
    image, alpha = _scene(h, w, seed=h + w)
    for radii in ((90, 6), (8, 3), (1, 5)):
        want = whole_image(image, alpha, radii)
        heights = (1, 2, 7, 47, 48, 49, 95, h - 1, h, h + 5) if radii == (90, 6) and h == 300 else (5, 48, h // 2 + 1)
        for rows in heights:
            got = estimate_foreground(image, alpha, radii=radii, strip_rows=rows)
            assert torch.equal(_bits(got), _bits(want)), (radii, rows, float((got - want).abs().max()))


def test_strips_are_bit_identical_with_cumulative_sums(monkeypatch):
    """The column pass used off the CPU (cumulative sums over 512-row blocks; strips end on block
    boundaries there) is also strip-invariant; forced here on the CPU."""
    from ben_core.matting import foreground as fgm

    image, alpha = _scene(1100, 9, seed=3)
    monkeypatch.setattr(fgm, "_running_sums", lambda device: False)
    for radii in ((90, 6), (20, 17)):
        whole = estimate_foreground(image, alpha, radii=radii, strip_rows=2000)
        for rows in (1, 300, 512, 513, 1099):
            got = estimate_foreground(image, alpha, radii=radii, strip_rows=rows)
            assert torch.equal(_bits(got), _bits(whole)), (radii, rows)


def test_strips_read_a_bounded_window_and_never_write():
    """Each strip reads only its rows and the halo around them (memory stays a strip's), never writes into
    what ``rows`` returns, and the strips tile the image in order."""
    from ben_core.matting.foreground import estimate_foreground_strips

    image, alpha = _scene(517, 30, seed=5)
    before, alpha_before = image.clone(), alpha.clone()
    calls = []

    def rows(lo, hi):
        calls.append((lo, hi))
        return image[:, lo:hi]           # a view of the caller's tensor: must stay untouched

    strips = list(estimate_foreground_strips(rows, alpha, strip_rows=40))
    assert [(r0, r1) for r0, r1, _ in strips] == [(r, min(517, r + 40)) for r in range(0, 517, 40)]
    assert torch.equal(image, before) and torch.equal(alpha, alpha_before)
    assert max(hi - lo for lo, hi in calls) <= 40 + 96
    assert torch.equal(torch.cat([fg for _, _, fg in strips], dim=1), whole_image(image, alpha))


def test_strips_stop_between_strips_and_check_arguments():
    from ben_core.callbacks import Cancelled
    from ben_core.matting.foreground import estimate_foreground_strips

    image, alpha = _scene(100, 8, seed=6)
    asked = []
    gen = estimate_foreground_strips(lambda lo, hi: image[:, lo:hi], alpha, strip_rows=10,
                                     should_stop=lambda: asked.append(1) or len(asked) >= 2)
    next(gen)
    next(gen)
    with pytest.raises(Cancelled):
        next(gen)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="strip_rows"):
            estimate_foreground_strips(lambda lo, hi: image[:, lo:hi], alpha, strip_rows=bad)
    with pytest.raises(ValueError, match="alpha"):
        estimate_foreground_strips(lambda lo, hi: image[:, lo:hi], alpha[None])
    with pytest.raises(ValueError, match="radii"):
        estimate_foreground_strips(lambda lo, hi: image[:, lo:hi], alpha, radii=(0,))
