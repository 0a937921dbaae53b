"""ben_core.matting.compose: one colour parser and one compositing function for the CLI, video and nodes."""
import numpy as np
import pytest
import torch

from ben_core.matting.compose import composite, parse_colour, to_uint8


def colour_to_uint8(colour):
    """The test's own reading of a parsed colour as 0..255 ints (rounded to nearest)."""
    return tuple(int(round(v * 255.0)) for v in colour)


# ------------------------------------------------------------------------------------------------
# parse_colour
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("#00FF00", (0, 255, 0)),
    ("00ff00", (0, 255, 0)),
    ("  #0a0B0c ", (10, 11, 12)),
    ("#fff", (255, 255, 255)),
    ("f80", (255, 136, 0)),
    ("10,20,30", (10, 20, 30)),
    (" 255 , 0 ,  7 ", (255, 0, 7)),
    ("0,0,0", (0, 0, 0)),
])
def test_parse_forms(text, expected):
    got = parse_colour(text)
    assert len(got) == 3 and all(isinstance(v, float) for v in got)
    assert got == pytest.approx(tuple(v / 255.0 for v in expected), abs=1e-12)
    assert colour_to_uint8(got) == expected
    # the transparent switch does not change how colours are read
    assert parse_colour(text, allow_transparent=True) == got


def test_parse_fractional_rgb_values():
    assert parse_colour("127.5, 0, 255") == pytest.approx((0.5, 0.0, 1.0))


@pytest.mark.parametrize("word", ["transparent", "none", "alpha", " Transparent ", "NONE"])
def test_transparent_words_only_when_allowed(word):
    assert parse_colour(word, allow_transparent=True) is None
    with pytest.raises(ValueError, match="not a colour"):
        parse_colour(word)


@pytest.mark.parametrize("bad", ["", "green", "#12345", "#gg0000", "#1234567", "1,2", "1,2,3,4", "0,256,0",
                                 "-1,0,0", "a,b,c", "nan,0,0", "##fff"])
def test_bad_colours_raise_with_the_accepted_forms(bad):
    with pytest.raises(ValueError) as ei:
        parse_colour(bad)
    msg = str(ei.value)
    assert repr(bad) in msg
    for form in ("#RRGGBB", "#RGB", "r,g,b", "0..255", "#00FF00"):
        assert form in msg
    assert "transparent" not in msg  # not offered where the caller does not allow it
    with pytest.raises(ValueError) as ei:
        parse_colour(bad, allow_transparent=True)
    assert "'transparent'" in str(ei.value) and "#RRGGBB" in str(ei.value)


# ------------------------------------------------------------------------------------------------
# composite
# ------------------------------------------------------------------------------------------------

def _inputs(seed=0, shape=(2, 5, 7)):
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(*shape, 3, generator=g)
    alpha = torch.rand(*shape, generator=g)
    alpha[..., 0, 0] = 0.0
    alpha[..., 0, 1] = 1.0
    return rgb, alpha


def test_rgba_is_colour_plus_alpha_channel():
    rgb, alpha = _inputs()
    r0, a0 = rgb.clone(), alpha.clone()
    out = composite(rgb, alpha)
    assert out.shape == (2, 5, 7, 4) and out.dtype == torch.float32
    assert torch.equal(out[..., :3], rgb) and torch.equal(out[..., 3], alpha)
    assert torch.equal(rgb, r0) and torch.equal(alpha, a0)  # inputs untouched


def test_over_colour_matches_the_formula():
    rgb, alpha = _inputs(1)
    r0, a0 = rgb.clone(), alpha.clone()
    colour = (0.2, 0.6, 1.0)
    out = composite(rgb, alpha, colour)
    assert out.shape == (2, 5, 7, 3)
    bg = torch.tensor(colour).view(1, 1, 1, 3)
    expected = rgb * alpha[..., None] + bg * (1 - alpha[..., None])
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.equal(out[..., 0, 0, :], torch.tensor(colour).expand(2, 3))  # alpha 0: the colour
    assert torch.allclose(out[..., 0, 1, :], rgb[..., 0, 1, :])   # alpha 1: the foreground
    assert torch.equal(rgb, r0) and torch.equal(alpha, a0)


def test_results_are_clamped():
    rgb = torch.tensor([[[[1.5, -0.5, 0.5]]]])
    alpha = torch.tensor([[[1.0]]])
    assert torch.equal(composite(rgb, alpha), torch.tensor([[[[1.0, 0.0, 0.5, 1.0]]]]))
    assert torch.equal(composite(rgb, alpha, (0, 0, 0)), torch.tensor([[[[1.0, 0.0, 0.5]]]]))


def test_numpy_in_numpy_out_same_values():
    rgb, alpha = _inputs(2, shape=(6, 4))  # a single [H, W] image
    rn, an = rgb.numpy().copy(), alpha.numpy().copy()
    rn0, an0 = rn.copy(), an.copy()
    for colour in (None, (1.0, 0.0, 0.5)):
        out = composite(rn, an, colour)
        assert isinstance(out, np.ndarray) and out.dtype == np.float32
        np.testing.assert_array_equal(out, composite(rgb, alpha, colour).numpy())
    # the numpy float32 formula the CLI and video writer used before, bit for bit
    bg = np.asarray((255, 0, 128), dtype=np.float32) / 255.0
    direct = np.clip(rn * an[..., None] + bg * (1.0 - an[..., None]), 0, 1)
    np.testing.assert_array_equal(composite(rn, an, (255 / 255.0, 0.0, 128 / 255.0)), direct)
    np.testing.assert_array_equal(rn, rn0)
    np.testing.assert_array_equal(an, an0)
    ro = rn.copy()
    ro.setflags(write=False)  # read-only arrays (np.asarray of a PIL image) are accepted
    assert composite(ro, an).shape == (6, 4, 4)


def test_half_precision_keeps_dtype():
    rgb, alpha = _inputs(3)
    out = composite(rgb.half(), alpha, (0.0, 1.0, 0.0))
    assert out.dtype == torch.float16
    assert torch.allclose(out.float(), composite(rgb, alpha, (0.0, 1.0, 0.0)), atol=2e-3)


def test_bad_inputs_raise():
    rgb, alpha = _inputs()
    with pytest.raises(ValueError, match=r"\[\.\.\., H, W, 3\]"):
        composite(rgb.permute(0, 3, 1, 2), alpha)        # channels-first
    with pytest.raises(ValueError, match="alpha"):
        composite(rgb, alpha[:, :4])
    with pytest.raises(TypeError, match="float"):
        composite((rgb * 255).to(torch.uint8), alpha)
    with pytest.raises(TypeError, match="tensor or numpy"):
        composite(rgb.tolist(), alpha)
    with pytest.raises(ValueError, match="colour"):
        composite(rgb, alpha, (0, 255, 0))               # 0..255 instead of 0..1
    with pytest.raises(ValueError, match="colour"):
        composite(rgb, alpha, (0.0, 1.0))


def test_to_uint8_rounds_and_clamps():
    x = np.array([-0.1, 0.0, 0.5 / 255, 1.5 / 255, 0.5, 1.0, 2.0], dtype=np.float32)
    expected = np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8)
    got_np = to_uint8(x)
    got_t = to_uint8(torch.from_numpy(x))
    assert got_np.dtype == np.uint8 and got_t.dtype == torch.uint8
    np.testing.assert_array_equal(got_np, expected)
    np.testing.assert_array_equal(got_t.numpy(), expected)
    assert got_np.tolist() == [0, 0, 0, 2, 128, 255, 255]


def test_background_text_to_0_255():
    """What ``--background`` accepts (moved from the CLI's former parse_background)."""
    assert parse_colour("transparent", allow_transparent=True) is None
    assert colour_to_uint8(parse_colour("#00FF00", allow_transparent=True)) == (0, 255, 0)
    assert colour_to_uint8(parse_colour("0a0B0c", allow_transparent=True)) == (10, 11, 12)
    assert colour_to_uint8(parse_colour("#fff", allow_transparent=True)) == (255, 255, 255)
    for bad in ("#12345", "green", "#gg0000", ""):
        with pytest.raises(ValueError):
            parse_colour(bad, allow_transparent=True)
