"""The temporal stabiliser: the recursion, motion compensation, cuts, both modes, chunking invariance,
memory, the OpenCV dependency, bad input, and its effect on the benchmark's synthetic clip."""
from __future__ import annotations

import logging
import math
import sys

import pytest
import torch
import torch.nn.functional as F

from ben_core.matting.temporal import (
    AlphaStabilizer,
    StabilizerOptions,
    TemporalDependencyError,
    make_stabilizer,
    stabilize_alpha,
)

try:
    import cv2  # optional: the motion compensation (flow="dis", what flow="auto" picks when it is there)
except ImportError:
    cv2 = None

# Only the tests of the motion compensation itself skip without OpenCV (CI installs it); everything else,
# the fallback to flow="none" included, runs either way.
needs_cv2 = pytest.mark.skipif(cv2 is None, reason="motion compensation needs OpenCV: "
                                                   "pip install opencv-python-headless")



def _bits(x):
    return x.contiguous().view(torch.int32)


def _clip(t=7, h=20, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(t, 3, h, w, generator=g)
    alphas = torch.rand(t, h, w, generator=g)
    return frames, alphas


def _texture(h, w, seed=0):
    """[3, h, w] a smooth random texture with detail at a few pixels (what optical flow can follow)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, h // 4 + 2, w // 4 + 2, generator=g)
    x = F.interpolate(x, size=(h + 8, w + 8), mode="bicubic", align_corners=False)[0, :, 4:4 + h, 4:4 + w]
    return x.clamp(0, 1)


def _panning_clip(t=8, h=64, w=96, step=3, seed=0):
    """A textured scene panning ``step`` px per frame to the right, and a soft disc moving with it whose
    edge ring's alpha flickers from frame to frame. Returns frames [t,3,h,w], true alpha, flickering alpha."""
    big = _texture(h, w + step * t + 8, seed)
    yy = torch.arange(h, dtype=torch.float32).view(h, 1)
    xx = torch.arange(w, dtype=torch.float32).view(1, w)
    frames, truth = [], []
    for i in range(t):
        off = step * (t - i)  # the view moves left over the scene: the picture moves right by `step`
        frames.append(big[:, :, off:off + w].clone())
        cx = w / 2 - step * t / 2 + step * i
        r = torch.sqrt((xx - cx) ** 2 + (yy - h / 2) ** 2)
        truth.append(torch.sigmoid((14 - r) / 2.0))
    frames, truth = torch.stack(frames), torch.stack(truth)
    frames = truth[:, None] * 0.8 + (1 - truth[:, None]) * frames  # the disc is bright: an edge to see
    g = torch.Generator().manual_seed(seed + 1)
    unsure = 4 * truth * (1 - truth)
    pred = (truth + 0.25 * unsure * (torch.rand(t, 1, 1, generator=g) * 2 - 1)).clamp(0, 1)
    return frames, truth, pred


# -- the recursion -------------------------------------------------------------------------------

def test_recursion_on_a_still_clip_matches_the_formula():
    """Identical frames: the carried state stays where it is and is trusted everywhere, so
    out[t] = a[t] + strength * unsure(a[t]) * (out[t-1] - a[t]), computed here independently in float64."""
    h, w = 6, 5
    frame = torch.rand(3, h, w, generator=torch.Generator().manual_seed(1))
    frames = frame.expand(5, 3, h, w).clone()
    alphas = torch.rand(5, h, w, generator=torch.Generator().manual_seed(2))
    alphas[1, 0, 0], alphas[2, 0, 0] = 0.0, 1.0  # sure pixels
    o = StabilizerOptions()
    got = stabilize_alpha(frames, alphas)
    prev = alphas[0].double()
    assert torch.equal(got[0], alphas[0])  # the first frame is the per-frame alpha
    for t in range(1, 5):
        a = alphas[t].double()
        unsure = torch.minimum(a - o.sure_background, o.sure_foreground - a) / o.confidence_ramp
        want = a + o.strength * unsure.clamp(0, 1) * (prev - a)
        torch.testing.assert_close(got[t].double(), want, atol=1e-6, rtol=0)
        prev = want
    assert got[1, 0, 0] == 0.0 and got[2, 0, 0] == 1.0


def test_bidirectional_is_the_mean_of_a_forward_and_a_backward_pass():
    """Identical frames (trusted everywhere): the forward recursion as above, the same backwards from the
    last frame (over the float16 values the buffer holds), and their mean, computed here in float64."""
    h, w, t = 5, 7, 9
    frames = torch.rand(3, h, w, generator=torch.Generator().manual_seed(3)).expand(t, 3, h, w).clone()
    alphas = torch.rand(t, h, w, generator=torch.Generator().manual_seed(4))
    o = StabilizerOptions()

    def step(a, prev):
        unsure = (torch.minimum(a - o.sure_background, o.sure_foreground - a) / o.confidence_ramp).clamp(0, 1)
        return a + o.strength * unsure * (prev - a)

    a = alphas.double()
    held = alphas.half().double()  # the buffer holds the alpha and the forward pass as float16
    fwd, bwd = [a[0]], [held[-1]]
    for i in range(1, t):
        fwd.append(step(a[i], fwd[-1]))
        bwd.append(step(held[t - 1 - i], bwd[-1]))
    want = (torch.stack(fwd).half().double() + torch.stack(bwd[::-1])) / 2
    got = stabilize_alpha(frames, alphas, mode="bidirectional", lookahead=16)  # one block: the whole clip
    assert got.shape == alphas.shape and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["causal", "bidirectional"])
def test_any_chunking_gives_the_whole_clip_bit_for_bit(mode):
    frames, truth, pred = _panning_clip(t=11, h=40, w=56)
    whole = stabilize_alpha(frames, pred, mode=mode, lookahead=3)
    for sizes in ((1,) * 11, (2, 3, 6), (5, 6), (10, 1)):
        stab, parts, start = AlphaStabilizer(mode=mode, lookahead=3), [], 0
        for n in sizes:
            parts.append(stab.update(frames[start:start + n], pred[start:start + n]))
            assert stab.held <= 2 * 3  # never more than 2 x lookahead frames held back
            start += n
        parts.append(stab.flush())
        assert torch.equal(_bits(torch.cat(parts)), _bits(whole)), sizes
    assert stab.frames_seen == 11 and stab.held == 0


def test_bidirectional_frames_come_out_in_blocks_after_their_lookahead():
    frames, truth, pred = _panning_clip(t=10, h=32, w=48)
    stab = AlphaStabilizer(mode="bidirectional", lookahead=3)
    assert stab.delay == 5
    counts = [len(stab.update(frames[i:i + 1], pred[i:i + 1])) for i in range(10)]
    assert counts == [0, 0, 0, 0, 0, 3, 0, 0, 3, 0]  # a block of 3 once 3 more stand behind it
    assert len(stab.flush()) == 4 and len(stab.flush()) == 0


# -- motion --------------------------------------------------------------------------------------

@needs_cv2
def test_a_pan_is_followed_flicker_damped_without_lag():
    """A panning shot with a flickering edge: the motion-compensated stabiliser damps the flicker and its
    edge stays where the truth is (no lag); without flow nothing is carried (everything moves)."""
    frames, truth, pred = _panning_clip(t=12)
    steady = stabilize_alpha(frames, pred)
    still_only = stabilize_alpha(frames, pred, flow="none")
    ring = (truth > 0.05) & (truth < 0.95)

    def flicker(x):
        return ((x[2:] - truth[2:]) - (x[1:-1] - truth[1:-1]))[ring[2:]].abs().mean()

    assert flicker(steady) < 0.5 * flicker(pred)
    assert flicker(still_only) > 0.9 * flicker(pred)  # a pan changes every pixel: nothing carried
    err = ((steady[2:] - truth[2:]) ** 2)[ring[2:]].mean()
    assert err < 0.5 * ((pred[2:] - truth[2:]) ** 2)[ring[2:]].mean()  # closer to the truth, not lagging it
    assert AlphaStabilizer().flow_used == "dis"


def _subject_shot(t=10, h=72, w=120, subject_step=0, background_step=4, plain=False, seed=0):
    """A clean clip (no sensor noise): a textured background sliding ``background_step`` px per frame to the
    right, and a soft-edged disc (textured, or one plain colour) moving ``subject_step`` px per frame in the
    picture. The disc's edge band flickers as a per-frame network's does: the edge moves in and out by up to
    1 px, a new random amount in each of 8 sectors, every frame. Returns frames, true alpha, flickering alpha."""
    span = abs(background_step) * t + 8
    big = _texture(h, w + span, seed)
    own = _texture(h, w + abs(subject_step) * t + 40, seed + 3) * 0.5 + 0.3
    yy = torch.arange(h, dtype=torch.float32).view(h, 1)
    xx = torch.arange(w, dtype=torch.float32).view(1, w)
    g = torch.Generator().manual_seed(seed + 1)
    frames, truth, pred = [], [], []
    for i in range(t):
        off = background_step * (t - i) if background_step > 0 else -background_step * i
        bg = big[:, :, off:off + w]
        cx = w / 2 - subject_step * t / 2 + subject_step * i
        r = torch.sqrt((xx - cx) ** 2 + (yy - h / 2) ** 2)
        theta = torch.atan2(yy - h / 2, xx - cx)
        a = torch.sigmoid((16 - r) / 1.5)
        if plain:
            fg = torch.tensor([0.2, 0.35, 0.7]).view(3, 1, 1).expand(3, h, w)
        else:  # the disc's own texture moves with it
            s0 = int(round(subject_step * t / 2 - subject_step * i)) + 20 + max(0, abs(subject_step) * t // 2 - 20)
            fg = own[:, :, s0:s0 + w]
        frames.append(a * fg + (1 - a) * bg)
        truth.append(a)
        jitter = (torch.rand(8, generator=g) * 2 - 1)[((theta + math.pi) / (2 * math.pi) * 8).long().clamp(0, 7)]
        pred.append(torch.sigmoid((16 + jitter - r) / 1.5))
    return torch.stack(frames).clamp(0, 1), torch.stack(truth), torch.stack(pred)


def _band_flicker(x, truth):
    """Mean |temporal-gradient error| over the pixels where the truth is unsure (from the 3rd frame on)."""
    ring = (truth > 0.05) & (truth < 0.95)
    return float(((x[2:] - truth[2:]) - (x[1:-1] - truth[1:-1]))[ring[2:]].abs().mean())


def _band_error(x, truth):
    ring = (truth > 0.05) & (truth < 0.95)
    return float(((x[2:] - truth[2:]) ** 2)[ring[2:]].mean())


@needs_cv2
@pytest.mark.parametrize("mode", ["causal", "bidirectional"])
@pytest.mark.parametrize("background_step", [3, 8])
def test_a_still_subject_under_a_panning_background_keeps_its_matte(mode, background_step):
    """A tracking shot: the subject stays put in the picture while the background slides behind it. Its edge
    band mixes the subject with a moving background, yet its matte is the subject's: the flicker is damped
    there as on a still shot, and the matte stays where the truth is."""
    frames, truth, pred = _subject_shot(background_step=background_step)
    steady = stabilize_alpha(frames, pred, mode=mode)
    assert _band_flicker(steady, truth) < 0.5 * _band_flicker(pred, truth)
    assert _band_error(steady, truth) < 0.6 * _band_error(pred, truth)


@needs_cv2
@pytest.mark.parametrize("mode", ["causal", "bidirectional"])
@pytest.mark.parametrize("plain", [False, True])
def test_a_moving_subject_s_matte_moves_with_it_not_with_the_background(mode, plain):
    """The subject walks 4 px per frame one way while the camera pans 3 px per frame the other (the subject
    textured, or one plain colour with no texture of its own to follow): its matte goes with the subject,
    so the flicker is damped without lag or ghost edge (the error in the edge band falls, it does not grow)."""
    frames, truth, pred = _subject_shot(subject_step=4, background_step=-3, plain=plain)
    steady = stabilize_alpha(frames, pred, mode=mode)
    # a plain subject's motion is read off its flickering outline alone: less is steadied
    assert _band_flicker(steady, truth) < (0.8 if plain else 0.6) * _band_flicker(pred, truth)
    assert _band_error(steady, truth) < 0.8 * _band_error(pred, truth)
    # no ghost: where the disc was two frames ago and the background is now, nothing of the disc is carried
    uncovered = (truth[:-2] > 0.5) & (truth[2:] < 0.1)
    assert int(uncovered.sum()) > 20
    assert float((steady[2:] - pred[2:])[uncovered].max()) < 0.08  # a ghost edge would carry tens of percent


@needs_cv2
@pytest.mark.parametrize("mode", ["causal", "bidirectional"])
def test_a_rigid_pan_keeps_the_exact_per_pixel_motion_near_the_subject(mode):
    """Subject and background pan together (3 and 8 px a frame): each edge pixel's own flow is exact, and the
    subject's motion spread from its inside must not replace it with a smoother one that resamples the
    strands: near the subject the flicker above the model's floor stays what per-pixel motion leaves
    (subject_reach=0). The benchmark's clip (a head with thin strands, sensor noise), whose strands show
    the difference; the disc clips above do not."""
    from benchmarks.bench_temporal import near_subject_dtssd
    from benchmarks.synthetic_video import make_shot

    clip, pred, floor = make_shot("classic", 180, 320, 8, seed=0)
    keep = [i for i, s in enumerate(clip["segment"]) if s in ("still", "pan3", "pan8")]
    frames, truth, segment = clip["frames"][keep], clip["alpha"][keep], [clip["segment"][i] for i in keep]
    pred, floor = pred[keep], floor[keep]
    steady = stabilize_alpha(frames, pred, mode=mode)
    per_pixel = stabilize_alpha(frames, pred, mode=mode, subject_reach=0)
    near_floor = near_subject_dtssd(floor, truth, segment)

    def above(x, seg):
        return max(near_subject_dtssd(x, truth, segment)[seg] ** 2 - near_floor[seg] ** 2, 0.0) ** 0.5

    for seg in ("pan3", "pan8"):
        assert above(steady, seg) <= 1.1 * above(per_pixel, seg) + 0.05 * above(pred, seg), seg
        assert above(steady, seg) < 0.5 * above(pred, seg), seg


def test_disoccluded_background_takes_the_new_alpha():
    """A disc moves 4 px a frame over a still background: behind it the background reappears, and there the
    output is the new frame's alpha (nothing of the disc is carried into it: no ghost)."""
    h, w, t = 48, 80, 6
    bg = _texture(h, w, seed=5)
    yy = torch.arange(h, dtype=torch.float32).view(h, 1)
    xx = torch.arange(w, dtype=torch.float32).view(1, w)
    frames, alphas = [], []
    for i in range(t):
        r = torch.sqrt((xx - 20 - 4 * i) ** 2 + (yy - h / 2) ** 2)
        a = torch.sigmoid((10 - r) / 1.5)
        frames.append(a * torch.tensor([0.9, 0.2, 0.2]).view(3, 1, 1) + (1 - a) * bg)
        alphas.append(a * 0.9)  # unsure everywhere on the disc: all of it could be carried
    frames, alphas = torch.stack(frames), torch.stack(alphas)
    steady = stabilize_alpha(frames, alphas)
    uncovered = (alphas[:-1] > 0.3) & (alphas[1:] < 0.05)  # disc in the previous frame, background now
    assert int(uncovered.sum()) > 20
    assert float((steady[1:] - alphas[1:]).abs()[uncovered].max()) < 0.02


def test_a_cut_starts_again_from_the_new_frame():
    h, w = 40, 60
    a_scene, b_scene = _texture(h, w, seed=7), _texture(h, w, seed=8)
    frames = torch.stack([a_scene] * 4 + [b_scene] * 4)
    alphas = torch.rand(8, h, w, generator=torch.Generator().manual_seed(9)) * 0.6 + 0.2
    for mode in ("causal", "bidirectional"):
        stab = AlphaStabilizer(mode=mode)
        out = torch.cat([stab.update(frames, alphas), stab.flush()])
        assert stab.cuts == 1
        if mode == "causal":
            assert torch.equal(out[4], alphas[4])  # the new shot's first frame is its own alpha
            assert not torch.equal(out[5], alphas[5])  # and the new shot is steadied from there
        else:  # neither pass carries anything across the cut
            solo = torch.cat([stabilize_alpha(frames[:4], alphas[:4], mode=mode),
                              stabilize_alpha(frames[4:], alphas[4:], mode=mode)])
            torch.testing.assert_close(out, solo, atol=0, rtol=0)
    stab.reset()
    assert stab.frames_seen == 0 and stab.cuts == 0


def test_a_fade_is_not_motion():
    """A still picture getting brighter frame by frame (a fade) is still steadied."""
    frames, _ = _clip(t=8, h=32, w=32, seed=10)
    frames = frames[:1].expand(8, 3, 32, 32) * 0.5 + torch.linspace(0, 0.3, 8).view(8, 1, 1, 1)
    alphas = torch.full((8, 32, 32), 0.5) + 0.2 * (torch.arange(8) % 2).view(8, 1, 1).float()
    out = stabilize_alpha(frames, alphas)
    assert (out[2:] - out[1:-1]).abs().mean() < 0.5 * (alphas[2:] - alphas[1:-1]).abs().mean()


# -- contracts -------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["causal", "bidirectional"])
def test_sure_pixels_pass_through_and_inputs_are_not_modified(mode):
    frames, truth, pred = _panning_clip(t=6, h=32, w=48)
    pred[:, :4] = 0.0       # sure background
    pred[:, 4:8] = 0.995    # sure foreground
    f0, a0 = frames.clone(), pred.clone()
    out = stabilize_alpha(frames, pred, mode=mode)
    assert torch.equal(frames, f0) and torch.equal(pred, a0)
    torch.testing.assert_close(out[:, :8], pred[:, :8], atol=1e-3 if mode == "bidirectional" else 0, rtol=0)


def test_strength_zero_is_per_frame():
    frames, alphas = _clip(seed=5)
    assert torch.equal(stabilize_alpha(frames, alphas, strength=0.0), alphas)


@pytest.mark.parametrize("mode", ["causal", "bidirectional"])
def test_output_is_finite_in_0_1_on_degenerate_clips(mode):
    """Black, white and constant frames, alpha exactly 0/1 and constant: no NaN (nothing divides by the
    picture's contrast), values in 0..1, one output per input frame."""
    h, w = 24, 32
    cases = [torch.zeros(6, 3, h, w), torch.ones(6, 3, h, w), torch.full((6, 3, h, w), 0.5)]
    alphas = [torch.zeros(6, h, w), torch.ones(6, h, w), torch.full((6, h, w), 0.5)]
    for frames in cases:
        for a in alphas:
            out = stabilize_alpha(frames, a, mode=mode)
            assert out.shape == a.shape and bool(torch.isfinite(out).all())
            assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_causal_memory_does_not_grow_with_the_clip():
    """The causal state is the previous output and frame: what the stabiliser holds after 4 frames and after
    40 is the same set of tensors of the same sizes."""
    frames, truth, pred = _panning_clip(t=40, h=32, w=48)
    stab = AlphaStabilizer()

    def held_bytes():
        total = 0
        for v in vars(stab).values():
            for x in (v if isinstance(v, list) else [v]):
                x = getattr(x, "rgb", x)
                if isinstance(x, torch.Tensor):
                    total += x.numel() * x.element_size()
        return total

    stab.update(frames[:4], pred[:4])
    after_4 = held_bytes()
    for i in range(4, 40, 6):
        stab.update(frames[i:i + 6], pred[i:i + 6])
    assert held_bytes() == after_4 > 0 and stab.held == 0 and stab.frames_seen == 40


def test_without_opencv_dis_says_how_to_install_it_and_auto_falls_back(monkeypatch, caplog):
    """Runs with or without OpenCV: with ``import cv2`` failing (as where it is not installed), flow="dis"
    names the install and the default flow="auto" steadies without motion compensation, as flow="none"
    does, saying so in the log (both modes, the stabiliser and stabilize_alpha)."""
    frames, truth, pred = _panning_clip(t=6, h=32, w=48)
    want = {mode: stabilize_alpha(frames, pred, mode=mode, flow="none") for mode in ("causal", "bidirectional")}
    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` raises ImportError
    with pytest.raises(TemporalDependencyError, match="pip install opencv-python-headless"):
        AlphaStabilizer(flow="dis")
    with pytest.raises(TemporalDependencyError, match="pip install opencv-python-headless"):
        stabilize_alpha(frames, pred, flow="dis")
    for mode in ("causal", "bidirectional"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ben_core"):
            stab = AlphaStabilizer(mode=mode)
        assert stab.flow_used == "none" and "opencv-python-headless" in caplog.text, mode
        assert torch.equal(torch.cat([stab.update(frames, pred), stab.flush()]), want[mode]), mode
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ben_core"):
            assert torch.equal(stabilize_alpha(frames, pred, mode=mode), want[mode]), mode
        assert "opencv-python-headless" in caplog.text, mode
    assert isinstance(TemporalDependencyError("x"), ImportError)


@needs_cv2
def test_with_opencv_auto_uses_the_optical_flow(caplog):
    """flow="auto" takes OpenCV's DIS flow when OpenCV is there, silently, and it changes the result on a pan."""
    frames, truth, pred = _panning_clip(t=6, h=32, w=48)
    with caplog.at_level(logging.WARNING, logger="ben_core"):
        stab = AlphaStabilizer()
    assert stab.flow_used == "dis" and caplog.text == ""
    assert not torch.equal(stab.update(frames, pred), stabilize_alpha(frames, pred, flow="none"))


def test_make_stabilizer_reads_every_door_setting():
    assert make_stabilizer(True).mode == "causal"
    assert make_stabilizer("bidirectional").mode == "bidirectional"
    opts = StabilizerOptions(strength=0.5)
    assert make_stabilizer(opts).options is opts
    stab = AlphaStabilizer()
    assert make_stabilizer(stab) is stab
    with pytest.raises(ValueError, match="temporal must be"):
        make_stabilizer("forwards")


def test_reset_starts_a_new_clip_and_sizes_must_match():
    frames, alphas = _clip(seed=6)
    stab = AlphaStabilizer()
    stab.update(frames[:3], alphas[:3])
    with pytest.raises(ValueError, match="call reset"):
        stab.update(frames[:, :, :10], alphas[:, :10])
    stab.reset()
    again = stab.update(frames[3:5], alphas[3:5])
    assert torch.equal(again[0], alphas[3])


@pytest.mark.parametrize("kwargs,match", [
    ({"strength": 1.0}, "strength"), ({"strength": -0.1}, "strength"),
    ({"motion_low": 0.1, "motion_high": 0.05}, "motion_low"),
    ({"window": 4}, "window"), ({"analysis_size": 8}, "analysis_size"), ({"flow": "farneback"}, "flow"),
    ({"flow_tolerance": 0}, "flow_tolerance"), ({"cut_fraction": 0}, "cut_fraction"), ({"lookahead": 0}, "lookahead"),
    ({"sure_background": 0.9, "sure_foreground": 0.1}, "sure_background"), ({"confidence_ramp": 0}, "confidence_ramp"),
    ({"subject_reach": -1}, "subject_reach"), ({"subject_reach": 2.5}, "subject_reach"),
    ({"alpha_low": 0.5, "alpha_high": 0.5}, "alpha_low"),
    ({"mode": "both"}, "mode"),
])
def test_bad_options_name_the_setting(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AlphaStabilizer(**kwargs)


def test_bad_inputs_say_what_is_expected():
    frames, alphas = _clip(seed=7)
    with pytest.raises(TypeError, match="unknown stabiliser option"):
        AlphaStabilizer(strenght=0.5)
    with pytest.raises(ValueError, match=r"frames must be \[n, 3, H, W\]"):
        stabilize_alpha(frames.permute(0, 2, 3, 1), alphas)
    with pytest.raises(ValueError, match="alphas must be"):
        stabilize_alpha(frames, alphas[:, :5])
    with pytest.raises(ValueError, match="float 0..1"):
        stabilize_alpha((frames * 255).to(torch.uint8), alphas)
    bad = alphas.clone()
    bad[2, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="alphas contain NaN"):
        stabilize_alpha(frames, bad)
    bad = frames.clone()
    bad[1, 0, 0, 0] = math.inf
    with pytest.raises(ValueError, match="frames contain NaN"):
        stabilize_alpha(bad, alphas)


# -- the benchmark's clip --------------------------------------------------------------------------

@needs_cv2
def test_synthetic_clip_meets_the_targets_at_small_size():
    """The benchmark's clip (both pans, a moving subject, a cut, thin strands) at a small size: every moving
    segment's dtSSD at most half the per-frame mattes', the still segment's too, whole-clip MSE at most 0.9x,
    moving-edge MSE at most 1.05x per moving segment."""
    from benchmarks.synthetic_video import MOVING_SEGMENTS, make_clip, simulate_model, temporal_metrics

    clip = make_clip(120, 212, frames_per_segment=10, seed=0)
    pred = simulate_model(clip["alpha"], seed=100)
    steady = stabilize_alpha(clip["frames"], pred)
    raw = temporal_metrics(pred, clip["alpha"], clip["segment"])
    st = temporal_metrics(steady, clip["alpha"], clip["segment"])
    moving = [name for name in MOVING_SEGMENTS if name in raw]
    for name in ["still"] + moving:
        assert st[name]["dtssd"] <= 0.5 * raw[name]["dtssd"], name
    for name in moving:
        assert st[name]["moving_edge_mse"] <= 1.05 * raw[name]["moving_edge_mse"], name
    assert st["clip"]["mse"] <= 0.9 * raw["clip"]["mse"]


@pytest.mark.parametrize("h, w, r", [(5, 7, 1), (9, 4, 3), (30, 41, 12), (6, 8, 24)])
def test_the_fast_window_filters_equal_torch_s_pooling(h, w, r):
    from ben_core.matting import temporal

    x = torch.rand(h, w, generator=torch.Generator().manual_seed(h * w + r))
    k = 2 * r + 1
    if k <= 2 * min(h, w) + 1:  # torch's pooling refuses a pad wider than half its kernel only; larger r: below
        want_max = F.max_pool2d(x[None, None], k, stride=1, padding=r)[0, 0]
        assert torch.equal(temporal._box_max(x, r), want_max)
        assert torch.equal(temporal._box_min(x, r), -F.max_pool2d(-x[None, None], k, stride=1, padding=r)[0, 0])
        once = F.avg_pool2d(x[None, None], k, stride=1, padding=r, count_include_pad=False)
        twice = F.avg_pool2d(once, k, stride=1, padding=r, count_include_pad=False)[0, 0]
        torch.testing.assert_close(temporal._box_mean(x, r), twice, rtol=0, atol=1e-6)
    if r >= max(h, w):  # the window covers the whole picture from every pixel
        assert torch.equal(temporal._box_max(x, r), torch.full_like(x, x.max().item()))
        torch.testing.assert_close(temporal._box_mean(x, r), torch.full_like(x, x.mean().item()), rtol=0, atol=1e-6)
    want3 = F.avg_pool2d(F.pad(x[None, None], [1] * 4, mode="replicate"), 3, stride=1)[0, 0]
    torch.testing.assert_close(temporal._mean3(x), want3, rtol=0, atol=1e-6)


def test_the_box_filter_needs_no_float64():
    """MPS has no float64: the subject path's box filter on a float32 tensor never makes a float64 one (it
    uses ben_core.matting.guided_filter's blocked running sums), and stays within float32 rounding of torch's
    pooling."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from ben_core.matting import temporal

    class Dtypes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    self.seen.add(t.dtype)
            return out

    x = torch.rand(40, 64, generator=torch.Generator().manual_seed(5))
    with Dtypes() as mode:
        got = temporal._box_mean(x, 12)
    assert torch.float32 in mode.seen and torch.float64 not in mode.seen, mode.seen
    once = F.avg_pool2d(x[None, None], 25, stride=1, padding=12, count_include_pad=False)
    want = F.avg_pool2d(once, 25, stride=1, padding=12, count_include_pad=False)[0, 0]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
