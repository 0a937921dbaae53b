"""BENPredictor: inputs, sizes, chunking, callbacks, precision fallback; stand-in networks plus the real one."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import DATA_DIR, synth_sd
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode

from ben_core.predictor import IMAGENET_MEAN, IMAGENET_STD, BENPredictor, PredictionCancelled

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


class RedDetector(torch.nn.Module):
    """Stand-in network: logit = gain * (red - 0.5), red recovered from the normalised input.

    Records every input batch it sees (shape, dtype, de-normalised pixels)."""

    def __init__(self, gain: float = 20.0):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(gain), requires_grad=False)
        self.seen = []

    def forward(self, x):
        rgb = x.float() * STD.to(x.device) + MEAN.to(x.device)
        self.seen.append((tuple(x.shape), x.dtype, rgb.detach().clone()))
        return self.scale * (rgb[:, :1] - 0.5)


class ConstantLogit(torch.nn.Module):
    def __init__(self, value: float = 0.0):
        super().__init__()
        self.value = torch.nn.Parameter(torch.tensor(value), requires_grad=False)

    def forward(self, x):
        return self.value.expand(x.shape[0], 1, x.shape[2], x.shape[3]).float() + 0 * x[:, :1].float()


class NaNUnlessFP32(torch.nn.Module):
    """A conv whose output is NaN whenever it was not computed in float32 (as an fp16 overflow would be)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)
        torch.nn.init.constant_(self.conv.weight, 0.3)
        torch.nn.init.constant_(self.conv.bias, -0.1)
        self.calls = []

    def forward(self, x):
        y = self.conv(x)
        self.calls.append(y.dtype)
        return y if y.dtype == torch.float32 else y * float("nan")


class PrecisionProbe(torch.nn.Module):
    """Stand-in network that computes in whatever precision it is run in: a 1x1 conv giving the logit
    gain * (red - 0.5) from the normalised input (under autocast the conv runs in the autocast dtype; with
    half weights it runs in half). Records, per call, the dtype its forward received, its weights' dtype,
    the autocast dtype in force (None when off) and the dtype the conv computed in."""

    def __init__(self, gain: float = 3.0):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0] = gain * IMAGENET_STD[0]  # red = x * std + mean
            self.conv.bias.fill_(gain * (IMAGENET_MEAN[0] - 0.5))
        self.calls = []

    def forward(self, x):
        kind = x.device.type
        y = self.conv(x)
        self.calls.append(dict(input=x.dtype, weights=self.conv.weight.dtype, compute=y.dtype,
                               autocast=torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None))
        return y


class ExplicitPrecision(torch.nn.Module):
    """The reference for :class:`PrecisionProbe`: the same conv, its input and weights cast to ``dtype`` by
    hand (what autocast does to a conv), meant to run in a float32 predictor (no autocast)."""

    def __init__(self, probe: PrecisionProbe, dtype: torch.dtype):
        super().__init__()
        self.weight = torch.nn.Parameter(probe.conv.weight.detach().float().clone(), requires_grad=False)
        self.bias = torch.nn.Parameter(probe.conv.bias.detach().float().clone(), requires_grad=False)
        self.dtype = dtype

    def forward(self, x):
        assert x.dtype == torch.float32 and not torch.is_autocast_enabled(x.device.type)
        return torch.nn.functional.conv2d(x.to(self.dtype), self.weight.to(self.dtype), self.bias.to(self.dtype))


def half_scene(h=60, w=200, b=1):
    """Left half pure red, right half black: uint8 [b,h,w,3]."""
    img = np.zeros((b, h, w, 3), np.uint8)
    img[:, :, : w // 2, 0] = 255
    return img


# ------------------------------------------------------------------------------------------------
# shapes, sizes, types
# ------------------------------------------------------------------------------------------------

def test_output_at_original_size_and_orientation():
    p = BENPredictor(RedDetector(), working_size=64)
    out = p.predict_alpha(torch.from_numpy(half_scene(60, 200, 2)))
    assert out.shape == (2, 60, 200) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert (out[:, :, :90] > 0.99).all() and (out[:, :, 110:] < 0.01).all()  # not transposed or flipped
    # tall image too
    tall = np.ascontiguousarray(half_scene(200, 60)[:, :, ::-1])  # red on the right
    out = p.predict_alpha(tall)
    assert out.shape == (1, 200, 60) and (out[0, :, 40:] > 0.99).all() and (out[0, :, :20] < 0.01).all()


def test_network_sees_working_size_normalised_antialiased():
    net = RedDetector()
    p = BENPredictor(net, working_size=128, batch_size=4)
    white = torch.ones(1, 50, 70, 3)
    p.predict_alpha(white)
    shape, dtype, rgb = net.seen[-1]
    assert shape == (1, 3, 128, 128) and dtype == torch.float32
    torch.testing.assert_close(rgb, torch.ones_like(rgb), atol=1e-5, rtol=0)  # exact ImageNet normalisation
    # a 1-px checkerboard shrunk 8x: anti-aliasing gives ~0.5 grey, not aliased 0/1 stripes
    yy, xx = np.meshgrid(np.arange(1024), np.arange(1024), indexing="ij")
    board = ((yy + xx) % 2).astype(np.float32)[..., None].repeat(3, -1)
    p.predict_alpha(board)
    rgb = net.seen[-1][2]
    assert abs(float(rgb.mean()) - 0.5) < 0.01 and float(rgb.std()) < 0.05


def test_uint8_float_numpy_torch_agree():
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (2, 37, 53, 3), dtype=np.uint8)
    p = BENPredictor(RedDetector(3.0), working_size=64)
    a = p.predict_alpha(u8)
    b = p.predict_alpha(torch.from_numpy(u8))
    c = p.predict_alpha(torch.from_numpy(u8).float() / 255)
    d = p.predict_alpha(u8.astype(np.float64) / 255)
    e = p.predict_alpha((u8.astype(np.uint16) * 257))  # 16-bit numpy
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    for other in (c, d, e):
        torch.testing.assert_close(a, other, atol=1e-5, rtol=0)


def test_grey_rgba_and_pil_modes():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    grey = rgb[..., :1]
    p = BENPredictor(RedDetector(3.0), working_size=64)
    ref_rgb = p.predict_alpha(rgb)
    # RGBA: alpha channel ignored
    rgba = np.concatenate([rgb, np.zeros((40, 30, 1), np.uint8)], -1)
    torch.testing.assert_close(p.predict_alpha(rgba), ref_rgb, atol=0, rtol=0)
    torch.testing.assert_close(p.predict_alpha(Image.fromarray(rgba, "RGBA")), ref_rgb, atol=0, rtol=0)
    torch.testing.assert_close(p.predict_alpha(Image.fromarray(rgb)), ref_rgb, atol=0, rtol=0)
    # grey: [H,W], [H,W,1] and PIL "L" all mean the grey value in every channel
    ref_grey = p.predict_alpha(grey.repeat(3, -1))
    for g in (grey, grey[..., 0], Image.fromarray(grey[..., 0], "L"), torch.from_numpy(grey)):
        torch.testing.assert_close(p.predict_alpha(g), ref_grey, atol=0, rtol=0)
    # 16-bit greyscale PIL
    g16 = Image.fromarray(grey[..., 0].astype(np.uint16) * 257)
    torch.testing.assert_close(p.predict_alpha(g16), ref_grey, atol=1e-5, rtol=0)


def test_pil_lists_mixed_and_uniform_sizes():
    p = BENPredictor(RedDetector(), working_size=64, batch_size=2)
    ims = [Image.fromarray(half_scene(h, w)[0]) for h, w in [(30, 50), (64, 64), (20, 90)]]
    out = p.predict_alpha(ims)
    assert isinstance(out, list) and [tuple(o.shape) for o in out] == [(30, 50), (64, 64), (20, 90)]
    for o in out:
        assert o.dtype == torch.float32 and (o[:, : o.shape[1] // 2 - 3] > 0.99).all()
    same = p.predict_alpha([ims[0], ims[0], ims[0]])
    assert isinstance(same, torch.Tensor) and same.shape == (3, 30, 50)
    torch.testing.assert_close(same[1], out[0])
    # one image in a list equals the image alone; lists may hold arrays too
    torch.testing.assert_close(p.predict_alpha([ims[1]])[0], p.predict_alpha(ims[1])[0])
    mixed = p.predict_alpha([half_scene(30, 50)[0], ims[0]])
    torch.testing.assert_close(mixed[0], mixed[1])


def test_every_image_processed_in_chunks_with_progress():
    net = RedDetector()
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, (5, 33, 47, 3), dtype=np.uint8)
    calls = []
    p = BENPredictor(net, working_size=64, batch_size=2)
    out = p.predict_alpha(imgs, progress=lambda d, t: calls.append((d, t)))
    assert [s[0][0] for s in net.seen] == [2, 2, 1]
    assert calls == [(2, 5), (4, 5), (5, 5)]
    for bs in (1, 5, 8):
        other = BENPredictor(RedDetector(), working_size=64, batch_size=bs).predict_alpha(imgs)
        torch.testing.assert_close(other, out, atol=1e-6, rtol=0)
    # image i's alpha depends on image i only
    torch.testing.assert_close(p.predict_alpha(imgs[3]), out[3:4], atol=1e-6, rtol=0)


def test_should_stop_between_chunks():
    net = RedDetector()
    p = BENPredictor(net, working_size=64, batch_size=2)
    asked, done = [], []

    def stop_second():
        asked.append(1)
        return len(asked) >= 2

    with pytest.raises(PredictionCancelled):
        p.predict_alpha(half_scene(20, 20, 5), progress=lambda d, t: done.append(d), should_stop=stop_second)
    assert len(asked) == 2 and done == [2] and len(net.seen) == 1

    class Interrupted(Exception):
        pass

    def raise_now():
        raise Interrupted()

    with pytest.raises(Interrupted):
        p.predict_alpha(half_scene(20, 20, 3), should_stop=raise_now)
    out = p.predict_alpha(half_scene(20, 20, 3), should_stop=lambda: False)
    assert out.shape == (3, 20, 20)


def test_raw_sigmoid_no_stretch_and_constant_images():
    p = BENPredictor(ConstantLogit(0.0), working_size=64)
    for img in (np.zeros((1, 30, 40, 3), np.uint8), np.full((1, 30, 40, 3), 255, np.uint8), np.zeros((1, 30, 40, 3))):
        out = p.predict_alpha(img)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, torch.full_like(out, 0.5), atol=1e-6, rtol=0)
    q = BENPredictor(ConstantLogit(-2.0), working_size=64)
    torch.testing.assert_close(q.predict_alpha(np.zeros((20, 20, 3), np.uint8)),
                               torch.full((1, 20, 20), float(torch.sigmoid(torch.tensor(-2.0)))), atol=1e-6, rtol=0)


def test_inputs_never_modified():
    rng = np.random.default_rng(4)
    f32 = torch.from_numpy(rng.random((2, 64, 64, 3)).astype(np.float32))  # already the working size
    u8 = torch.from_numpy(rng.integers(0, 256, (2, 30, 30, 3), dtype=np.uint8))
    arr = rng.random((30, 30, 3)).astype(np.float32)
    arr.setflags(write=False)  # read-only arrays work too
    keep = (f32.clone(), u8.clone(), arr.copy())
    p = BENPredictor(RedDetector(), working_size=64)
    p.predict_alpha(f32)
    p.predict_alpha(u8)
    p.predict_alpha(arr)
    p.predict_alpha([f32[0], u8[1]])
    assert torch.equal(f32, keep[0]) and torch.equal(u8, keep[1]) and np.array_equal(arr, keep[2])
    x = (f32.permute(0, 3, 1, 2) - MEAN) / STD
    x_keep = x.clone()
    p.predict_logits_batch(x)
    assert torch.equal(x, x_keep)


@pytest.mark.parametrize("images,exc,match", [
    (torch.zeros(0, 10, 10, 3), ValueError, "empty batch"),
    ([], ValueError, "empty list"),
    (torch.zeros(2, 3, 10, 10), ValueError, "channels-first"),
    (torch.zeros(2, 10, 10, 5), ValueError, "channels last"),
    (torch.zeros(1, 2, 10, 10, 3), ValueError, r"\[B,H,W,C\]"),
    (torch.zeros(10), ValueError, r"\[B,H,W,C\]"),
    (torch.zeros(1, 0, 10, 3), ValueError, "empty image"),
    (torch.full((1, 8, 8, 3), float("nan")), ValueError, "NaN"),
    (torch.full((1, 8, 8, 3), float("inf")), ValueError, "NaN or inf"),
    (torch.full((1, 8, 8, 3), 200.0), ValueError, "0..1"),
    (torch.full((1, 8, 8, 3), -2.0), ValueError, "0..1"),
    (torch.zeros(1, 8, 8, 3, dtype=torch.int64), TypeError, "dtype"),
    ("image.png", TypeError, "PIL image"),
    ([Image.new("RGB", (8, 8)), "x"], TypeError, r"images\[1\]"),
    ([np.zeros((8, 8, 7))], ValueError, r"images\[0\]"),
])
def test_bad_inputs(images, exc, match):
    p = BENPredictor(RedDetector(), working_size=64)
    with pytest.raises(exc, match=match):
        p.predict_alpha(images)


def test_nan_reported_before_any_work():
    net = RedDetector()
    imgs = torch.rand(4, 16, 16, 3)
    imgs[3, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"images\[3\]"):
        BENPredictor(net, working_size=64).predict_alpha(imgs)
    assert net.seen == []


@pytest.mark.parametrize("kwargs", [dict(working_size=100), dict(working_size=0), dict(batch_size=0),
                                    dict(batch_size=1.5), dict(dtype=torch.float64), dict(dtype="fp16")])
def test_bad_settings(kwargs):
    with pytest.raises(ValueError):
        BENPredictor(RedDetector(), **kwargs)


def test_working_size_checked_against_the_model_multiple():
    """BENBase needs a multiple of 128, at least 384: bad sizes fail at construction, not in the first forward."""
    from ben_core.model import BENBase

    with torch.device("meta"):
        net = BENBase()
    for bad in (576, 256):  # not a multiple of 128; below BENBase.min_size
        with pytest.raises(ValueError, match="multiple of 128 and at least 384"):
            BENPredictor(net, working_size=bad)


def test_not_a_module():
    with pytest.raises(TypeError):
        BENPredictor(lambda x: x)


# ------------------------------------------------------------------------------------------------
# precision
# ------------------------------------------------------------------------------------------------

def test_half_precision_nan_chunk_recomputed_in_fp32():
    """bf16 autocast on CPU makes the stand-in return NaN; every chunk must be recomputed in fp32."""
    imgs = np.random.default_rng(5).random((3, 40, 40, 3)).astype(np.float32)
    ref = BENPredictor(NaNUnlessFP32(), working_size=64).predict_alpha(imgs)
    net = NaNUnlessFP32()
    p = BENPredictor(net, dtype=torch.bfloat16, working_size=64, batch_size=2)
    out = p.predict_alpha(imgs)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    assert p.fallback_count == 2
    assert net.calls == [torch.bfloat16, torch.float32, torch.bfloat16, torch.float32]


def test_half_weights_fallback_uses_fp32_copy_and_keeps_model():
    imgs = np.random.default_rng(6).random((2, 40, 40, 3)).astype(np.float32)
    net = NaNUnlessFP32()
    ref = BENPredictor(net, working_size=64).predict_alpha(imgs)
    net.to(torch.bfloat16)
    p = BENPredictor(net, dtype=torch.bfloat16, working_size=64)
    out = p.predict_alpha(imgs)
    assert torch.isfinite(out).all() and p.fallback_count == 2
    torch.testing.assert_close(out, ref, atol=2e-2, rtol=0)  # fp32 compute on bf16-rounded weights
    assert net.conv.weight.dtype == torch.bfloat16  # the caller's network was not converted


def test_fp32_requested_with_half_weights():
    imgs = np.random.default_rng(8).random((3, 40, 40, 3)).astype(np.float32)
    net = NaNUnlessFP32()
    ref = BENPredictor(net, working_size=64).predict_alpha(imgs)
    net.to(torch.bfloat16)
    n_before = len(net.calls)
    p = BENPredictor(net, dtype=torch.float32, working_size=64)
    out = p.predict_alpha(imgs)
    torch.testing.assert_close(out, ref, atol=2e-2, rtol=0)
    assert p.fallback_count == 0 and net.conv.weight.dtype == torch.bfloat16
    assert len(net.calls) == n_before  # the bf16 module itself never ran ...
    assert p._fp32_copy.calls[n_before:] == [torch.float32] * 3  # ... one fp32 copy, made once, did


@pytest.mark.parametrize("weights, dtype", [(torch.float16, torch.bfloat16), (torch.bfloat16, torch.float16)])
def test_half_weights_with_the_other_half_dtype_rejected(weights, dtype):
    """BENBase under autocast to one half type with weights of the other fails deep in the forward
    ('Unexpected floating ScalarType in at::autocast::prioritize'); the predictor refuses it upfront."""
    with pytest.raises(ValueError, match="cannot mix the two half types"):
        BENPredictor(NaNUnlessFP32().to(weights), dtype=dtype, working_size=64)
    BENPredictor(NaNUnlessFP32().to(weights), dtype=weights, working_size=64)  # same half type: fine


@pytest.mark.parametrize("half_weights", [False, True], ids=["fp32-weights", "half-weights"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_without_problems_runs_in_half(dtype, half_weights):
    """The requested half dtype reaches the network: fp32 weights run under autocast to ``dtype`` (the
    forward gets the float32 input, the conv computes in ``dtype``), half weights get a ``dtype`` input.
    The alpha is what the network computed in that precision (the same conv cast to ``dtype`` by hand),
    which differs measurably from the fp32 alpha."""
    imgs = np.random.default_rng(7).random((2, 30, 30, 3)).astype(np.float32)
    net = PrecisionProbe()
    fp32 = BENPredictor(PrecisionProbe(), working_size=64).predict_alpha(imgs)
    want = BENPredictor(ExplicitPrecision(net, dtype), working_size=64).predict_alpha(imgs)
    if half_weights:
        net.to(dtype)
    p = BENPredictor(net, dtype=dtype, working_size=64)
    out = p.predict_alpha(imgs)
    assert p.fallback_count == 0 and p._fp32_copy is None
    assert net.calls == [dict(input=dtype if half_weights else torch.float32, weights=dtype if half_weights else
                              torch.float32, compute=dtype, autocast=dtype)] * 2  # one image per call
    assert out.dtype == torch.float32 and out.shape == (2, 30, 30)
    torch.testing.assert_close(out, want, atol=1e-6, rtol=0)
    assert float((out - fp32).abs().max()) > 1e-5  # the half-precision rounding shows: not an fp32 result


def test_nan_in_fp32_is_an_error():
    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(float("nan")), requires_grad=False)

        def forward(self, x):
            return self.w * x[:, :1]

    with pytest.raises(RuntimeError, match="NaN"):
        BENPredictor(Broken(), working_size=64).predict_alpha(np.zeros((8, 8, 3), np.uint8))


def test_model_put_in_eval_mode():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1), torch.nn.Dropout(0.9))
    net.train()
    p = BENPredictor(net, working_size=64)
    assert not net.training and p.device == torch.device("cpu")
    a = p.predict_alpha(np.full((16, 16, 3), 128, np.uint8))
    b = p.predict_alpha(np.full((16, 16, 3), 128, np.uint8))
    torch.testing.assert_close(a, b, atol=0, rtol=0)


# ------------------------------------------------------------------------------------------------
# the real network with synthetic weights
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_model():
    from ben_core.model.ben2 import BENBase, checkpoint_filter_fn

    model = BENBase()
    model.load_state_dict(checkpoint_filter_fn(synth_sd(0)), strict=True)
    return model.eval().requires_grad_(False)


@pytest.mark.slow
def test_real_network_matches_conformance_probs(real_model):
    """At the working size no resize happens: predict_alpha must equal the stored reference probs."""
    data = np.load(DATA_DIR / "ben2_seed0_512.npz")
    p = BENPredictor(real_model, working_size=512)
    out = p.predict_alpha(data["images"])
    assert out.shape == (data["images"].shape[0], 512, 512)
    np.testing.assert_allclose(out.numpy(), data["probs"][:, 0], atol=1e-4, rtol=0)


@pytest.mark.slow
def test_real_network_constant_and_odd_sized_images(real_model):
    p = BENPredictor(real_model, working_size=512, batch_size=2)
    imgs = [Image.new("RGB", (300, 170), (0, 0, 0)), Image.new("L", (97, 611), 255)]
    out = p.predict_alpha(imgs)
    assert [tuple(o.shape) for o in out] == [(170, 300), (611, 97)]
    for o in out:
        assert torch.isfinite(o).all() and float(o.min()) >= 0 and float(o.max()) <= 1


@pytest.mark.slow
def test_real_network_bf16_autocast(real_model):
    """Half precision through the real network (CPU bf16 autocast): runs, finite, close to fp32."""
    data = np.load(DATA_DIR / "ben2_seed0_512.npz")
    p = BENPredictor(real_model, dtype=torch.bfloat16, working_size=512)
    out = p.predict_alpha(data["images"]).numpy()
    ref = data["probs"][:, 0]
    assert np.isfinite(out).all()
    assert np.abs(out - ref).mean() < 0.02 and np.abs(out - ref).max() < 0.3
    assert next(real_model.parameters()).dtype == torch.float32  # weights untouched


# ------------------------------------------------------------------------------------------------
# host synchronisation, deferred checks, compilation
# ------------------------------------------------------------------------------------------------

def test_deferred_check_recomputes_a_non_finite_chunk_in_fp32():
    imgs = np.random.default_rng(8).random((2, 40, 40, 3)).astype(np.float32)
    ref = BENPredictor(NaNUnlessFP32(), working_size=64).predict_alpha(imgs)
    p = BENPredictor(NaNUnlessFP32(), dtype=torch.bfloat16, working_size=64, batch_size=2)
    chunk = torch.from_numpy(imgs)
    alpha, check = p.predict_chunk(chunk, deferred=True)
    assert p.fallback_count == 0 and torch.isnan(alpha).all()  # nothing was decided yet
    redo = check()
    assert p.fallback_count == 1
    torch.testing.assert_close(redo, ref, atol=1e-6, rtol=0)
    good = BENPredictor(RedDetector(), working_size=64)
    alpha, check = good.predict_chunk(chunk, deferred=True)
    assert check() is None
    torch.testing.assert_close(alpha, good.predict_alpha(imgs), atol=0, rtol=0)


def test_fp32_nan_is_an_error_when_the_check_is_read():
    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(float("nan")), requires_grad=False)

        def forward(self, x):
            return self.w * x[:, :1]

    alpha, check = BENPredictor(Broken(), working_size=64).predict_chunk(torch.zeros(1, 8, 8, 3), deferred=True)
    with pytest.raises(RuntimeError, match="broken"):
        check()


class HostSyncs(TorchDispatchMode):
    """Records every way the code it watches would make the host wait for the device.

    There is no accelerator here (and on the CPU nothing waits), so the ways in are watched instead:
    * the Python entry points that read a tensor's values on the host: ``bool()`` / ``float()`` /
      ``int()`` / ``complex()`` / ``operator.index()`` of a tensor, ``.item()``, ``.tolist()``, ``.numpy()``,
      ``np.asarray()`` (``__array__``), ``.cpu()``, printing or formatting a tensor; and the explicit waits
      ``torch.cuda.synchronize()``, ``torch.accelerator.synchronize()``, a stream's or an event's
      ``synchronize()``;
    * below them, every aten op dispatched while watching (a ``TorchDispatchMode``), so a sync reached
      through any other door (inside a torch function, a library) is seen too: the ops whose result is a
      device value read on the host (``_local_scalar_dense``: what item/bool/float/int come down to,
      ``equal``, ``allclose``, ``is_nonzero``), the ops whose output size depends on the data
      (``nonzero``, ``masked_select``, ``unique``, boolean-mask indexing, ``repeat_interleave`` without
      ``output_size``, ``bincount``), and blocking copies from a device to the CPU.
    A Python entry point is recorded once, under its own name (the ops it runs are part of it)."""

    TENSOR_READS = ("__bool__", "__float__", "__int__", "__complex__", "__index__", "item", "tolist", "numpy",
                    "__array__", "cpu", "__repr__", "__str__", "__format__")
    DATA_DEPENDENT_OPS = {"_local_scalar_dense", "equal", "allclose", "is_nonzero", "nonzero", "nonzero_numpy",
                          "argwhere", "masked_select", "_unique", "_unique2", "unique_dim", "unique_consecutive",
                          "unique_dim_consecutive", "bincount"}
    MASK_INDEXING_OPS = {"index", "index_put", "index_put_", "_index_put_impl_"}

    def __init__(self, monkeypatch):
        super().__init__()
        self.events = []
        self._watching = 0
        self._in_python_read = 0
        for name in self.TENSOR_READS:
            monkeypatch.setattr(torch.Tensor, name, self._counted(getattr(torch.Tensor, name), name))
        for owner, name in [(torch.cuda, "synchronize"), (torch.cuda.Stream, "synchronize"),
                            (torch.cuda.Event, "synchronize"), (getattr(torch, "accelerator", None), "synchronize"),
                            (getattr(torch, "mps", None), "synchronize")]:
            original = getattr(owner, name, None)
            if original is not None:
                monkeypatch.setattr(owner, name, self._counted(original, f"{owner.__name__}.{name}"))

    def _counted(self, original, name):
        def counted(*a, **k):
            if self._watching and not self._in_python_read:
                self.events.append(name)
            self._in_python_read += 1
            try:
                return original(*a, **k)
            finally:
                self._in_python_read -= 1
        return counted

    def watch(self, fn):
        """``fn`` whose calls (and everything they call) are watched."""
        def watched(*a, **k):
            self._watching += 1
            try:
                if self._watching > 1:  # a nested call (the chunk redone in fp32): the mode is already on
                    return fn(*a, **k)
                with self:
                    return fn(*a, **k)
            finally:
                self._watching -= 1
        return watched

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self._in_python_read:
            why = self._sync(func, args, kwargs)
            if why is not None:
                self.events.append(why)
        return func(*args, **kwargs)

    def _sync(self, func, args, kwargs):
        name = func.overloadpacket.__name__
        if name in self.DATA_DEPENDENT_OPS:
            return name
        if name == "repeat_interleave" and func._overloadname in ("Tensor", "self_Tensor") \
                and kwargs.get("output_size") is None:
            return "repeat_interleave without output_size"
        if name in self.MASK_INDEXING_OPS:
            masks = [t for t in args[1] if isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8)]
            # aten's index_put_ turns one mask on the tensor's device and a one-element CPU value into a
            # masked_fill_ (canDispatchToMaskedFill): x[mask] = 0.0 does not wait; x[mask] and x[mask] = y do
            value = args[2] if len(args) > 2 else None
            fill = (name != "index" and len(masks) == 1 and all(t is None or t is masks[0] for t in args[1])
                    and masks[0].device == args[0].device and value.numel() == 1 and value.device.type == "cpu")
            if masks and not fill:
                return f"{name} with a boolean mask"
        if name == "_to_copy" and args[0].device.type != "cpu" and torch.device(kwargs.get("device") or
                                                                            args[0].device).type == "cpu":
            return "copy to the CPU"
        if name == "copy_" and args[0].device.type == "cpu" and args[1].device.type != "cpu" \
                and not (kwargs.get("non_blocking") or (len(args) > 2 and args[2])):
            return "copy to the CPU"
        return None


def _waits(synchronize):
    """Call an explicit wait, which raises where there is no accelerator (after the recorder saw it)."""
    def call():
        try:
            synchronize()
        except (AssertionError, RuntimeError, AttributeError):  # "Torch not compiled with CUDA enabled", ...
            pass
    return call


def test_host_syncs_sees_every_way_in(monkeypatch):
    """The recorder itself: each way a host-device sync happens is recorded, ordinary device work is not."""
    syncs = HostSyncs(monkeypatch)
    x = torch.rand(4, 5)
    ways = {
        "bool": lambda: bool(x.sum() > 0), "float": lambda: float(x.sum()), "int": lambda: int(x[0, 0] * 3),
        "index": lambda: [0, 1, 2][x[0, 0].long()], "item": lambda: x.max().item(), "tolist": lambda: x.tolist(),
        "numpy": lambda: x.numpy(), "asarray": lambda: np.asarray(x), "cpu": lambda: x.cpu(),
        "print": lambda: print(x), "format": lambda: f"{x.mean():.3f}", "nonzero": lambda: x.nonzero(),
        "mask": lambda: x[x > 0.5], "masked_put": lambda: x.clone().__setitem__(x[:, 0] > 0.5, x[0]),
        "where": lambda: torch.where(x > 0.5), "unique": lambda: torch.unique(x), "equal": lambda: torch.equal(x, x),
        "allclose": lambda: torch.allclose(x, x), "in": lambda: 0.5 in x,
        "repeat": lambda: torch.repeat_interleave(x[0], torch.tensor([1, 2, 1, 0, 3])),
        "cuda.synchronize": _waits(torch.cuda.synchronize),
        "stream.synchronize": _waits(lambda: torch.cuda.Stream.synchronize(None)),
        "event.synchronize": _waits(lambda: torch.cuda.Event.synchronize(None)),
    }
    if hasattr(torch, "accelerator"):
        ways["accelerator.synchronize"] = _waits(torch.accelerator.synchronize)
    missed = []
    for way, fn in ways.items():
        syncs.events.clear()
        syncs.watch(fn)()
        if not syncs.events:
            missed.append(way)
    assert missed == []
    syncs.events.clear()
    syncs.watch(lambda: (torch.sigmoid(x).clamp(0, 1) * 2, torch.isfinite(x).all(), x.max(dim=0),
                         x.index_select(0, x[:, 0].argmax().view(1)), torch.where(x > 0.5, x, 0.0),
                         x.to(x.device), x.shape[0] * 2, x.masked_fill(x > 0.5, 1.0),
                         x.clone().__setitem__(x > 0.5, 0.0)))()  # a masked fill with a scalar does not wait
    assert syncs.events == []


def test_one_host_read_per_chunk_in_the_pipeline(monkeypatch):
    """Inside the chunk loop nothing waits for the device but the network's verdict, read once per chunk
    after all of the chunk's work is queued: every way of syncing (see HostSyncs) is watched."""
    from ben_core.pipeline import CutoutOptions, CutoutPipeline

    imgs = torch.rand(5, 30, 40, 3)
    pipeline = CutoutPipeline(BENPredictor(RedDetector(), dtype=torch.bfloat16, working_size=64, batch_size=2),
                              CutoutOptions(foreground=True, background=(0.2, 0.4, 0.6)))
    syncs = HostSyncs(monkeypatch)
    monkeypatch.setattr(pipeline, "_cut_chunk", syncs.watch(pipeline._cut_chunk))  # what run() calls per chunk
    # outputs left on the device: with out_device="cpu" on an accelerator every strip's copy to the host
    # (pageable memory) is itself a blocking copy, which HostSyncs reports there as "copy to the CPU"
    cut = pipeline.run(imgs, out_device=pipeline.device)
    assert cut.image.shape == (5, 30, 40, 3)
    assert syncs.events == ["__bool__"] * 3, syncs.events  # 3 chunks of at most 2 images: the verdict's read


@pytest.mark.slow
def test_compiled_network_matches_eager():
    """torch.compile (inductor, here on the CPU) gives the eager result within fp32 tolerance; the first
    call of a shape is the compilation and is timed."""
    from ben_core.model import BENBase

    torch.manual_seed(0)
    net = BENBase(embed_dim=32, depths=(1, 2, 1, 2), num_heads=(1, 2, 2, 4)).eval()
    imgs = np.random.default_rng(9).integers(0, 256, (1, 50, 70, 3), dtype=np.uint8)
    eager = BENPredictor(net, working_size=384).predict_alpha(imgs)
    compiled = BENPredictor(net, working_size=384, compile="default")
    out = compiled.predict_alpha(imgs)
    again = compiled.predict_alpha(imgs)
    torch.testing.assert_close(out, eager, atol=1e-4, rtol=0)
    torch.testing.assert_close(again, out, atol=0, rtol=0)
    assert list(compiled.first_call_seconds) == [((1, 3, 384, 384), torch.float32)]
    with pytest.raises(ValueError, match="compile"):
        BENPredictor(net, working_size=384, compile="fast")


class PerImageConv(torch.nn.Module):
    """A small network whose images do not affect each other (as BEN2's in eval mode)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g))

    def forward(self, x):
        return self.conv(x)


def test_a_compiled_predictor_is_compiled_once_whatever_the_last_chunk(monkeypatch):
    """7 images in chunks of 3: the last chunk (1 image) is padded to 3, so torch.compile compiles the network
    once (counted by dynamo's CompileCounter backend), not once more for the shorter shape; the padding changes
    no output (beyond the last bits a different batch size may change)."""
    import torch._dynamo
    from torch._dynamo.testing import CompileCounter

    counter, real_compile = CompileCounter(), torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, mode=None, dynamic=None, **kw:
                        real_compile(model, backend=counter, dynamic=dynamic))
    torch._dynamo.reset()
    try:
        net = PerImageConv().eval()
        imgs = np.random.default_rng(5).integers(0, 256, (7, 40, 50, 3), dtype=np.uint8)
        compiled = BENPredictor(net, working_size=64, batch_size=3, compile="default")
        out = compiled.predict_alpha(imgs)
        again = compiled.predict_alpha(imgs[:2])
        eager = BENPredictor(net, working_size=64, batch_size=3).predict_alpha(imgs)
    finally:
        torch._dynamo.reset()
    assert counter.frame_count == 1
    assert list(compiled.first_call_seconds) == [((3, 3, 64, 64), torch.float32)]
    torch.testing.assert_close(out, eager, atol=1e-6, rtol=0)  # batch 3 vs 1: the same up to summation order
    torch.testing.assert_close(again, eager[:2], atol=1e-6, rtol=0)
