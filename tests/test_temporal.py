"""The temporal stabiliser: exact recursion, chunking invariance, gates, and its effect on a synthetic clip."""
from __future__ import annotations

import pytest
import torch

from ben_core.temporal import AlphaStabilizer, StabilizerOptions, stabilize_alpha


def _bits(x):
    return x.contiguous().view(torch.int32)


def _clip(t=7, h=20, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(t, 3, h, w, generator=g)
    alphas = torch.rand(t, h, w, generator=g)
    return frames, alphas


def test_any_chunking_gives_the_whole_clip_bit_for_bit():
    frames, alphas = _clip(t=9)
    frames[3:6] = frames[2]  # a still stretch, so the carried weights are not all zero
    whole = stabilize_alpha(frames, alphas)
    for sizes in ((1,) * 9, (2, 3, 4), (4, 5), (8, 1)):
        stab, parts, start = AlphaStabilizer(), [], 0
        for n in sizes:
            parts.append(stab.update(frames[start:start + n], alphas[start:start + n]))
            start += n
        assert torch.equal(_bits(torch.cat(parts)), _bits(whole)), sizes
    assert stab.frames_seen == 9


def test_recursion_on_a_still_clip_matches_the_formula():
    """Identical frames: still = 1 everywhere, so out[t] = a[t] + strength * unsure(a[t]) * (out[t-1] - a[t]),
    computed here independently, pixel by pixel, in float64."""
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
        wgt = o.strength * unsure.clamp(0, 1)
        want = a + wgt * (prev - a)
        torch.testing.assert_close(got[t].double(), want, atol=1e-6, rtol=0)
        prev = want
    assert got[1, 0, 0] == 0.0 and got[2, 0, 0] == 1.0


def test_sure_pixels_and_moving_pixels_pass_through():
    frames, alphas = _clip(t=4, h=16, w=16, seed=3)
    frames[1:] = frames[0]
    alphas = alphas.clone()
    alphas[:, :4] = 0.0          # sure background
    alphas[:, 4:8] = 0.995       # sure foreground
    out = stabilize_alpha(frames, alphas)
    assert torch.equal(out[:, :8], alphas[:, :8])
    # the image changes strongly everywhere: every pixel is moving, the alpha is taken as it is
    moving = frames.clone()
    moving[1::2] = 1.0 - moving[1::2]
    out = stabilize_alpha(moving, alphas, analysis_size=16)
    assert torch.equal(out, alphas)


def test_flicker_on_a_still_scene_is_damped_and_a_real_change_is_not_lagged():
    h = w = 32
    frame = torch.full((3, h, w), 0.5)
    t = 40
    g = torch.Generator().manual_seed(4)
    truth = torch.full((t, h, w), 0.5)
    pred = (truth + 0.2 * (torch.rand(t, h, w, generator=g) - 0.5)).clamp(0, 1)
    frames = frame.expand(t, 3, h, w).clone()
    out = stabilize_alpha(frames, pred)
    raw_flicker = (pred[1:] - pred[:-1]).abs().mean()
    steady_flicker = (out[1:] - out[:-1]).abs().mean()
    assert steady_flicker < 0.35 * raw_flicker
    assert ((out[5:] - truth[5:]) ** 2).mean() < 0.5 * ((pred[5:] - truth[5:]) ** 2).mean()
    # a subject appears (the image and the alpha change together): the new alpha is there at once
    frames2 = frames.clone()
    alphas2 = pred.clone()
    frames2[20:, :, :, 16:] = 0.95
    alphas2[20:, :, 16:] = 0.6
    out2 = stabilize_alpha(frames2, alphas2, analysis_size=32, window=1)
    assert torch.allclose(out2[20, :, 18:], alphas2[20, :, 18:])


def test_strength_zero_is_per_frame_and_inputs_are_not_modified():
    frames, alphas = _clip(seed=5)
    f0, a0 = frames.clone(), alphas.clone()
    assert torch.equal(stabilize_alpha(frames, alphas, strength=0.0), alphas)
    stabilize_alpha(frames, alphas)
    assert torch.equal(frames, f0) and torch.equal(alphas, a0)


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
    ({"strength": 1.0}, "strength"), ({"strength": -0.1}, "strength"), ({"motion_low": 0.1, "motion_high": 0.05}, "motion_low"),
    ({"window": 4}, "window"), ({"analysis_size": 8}, "analysis_size"),
    ({"sure_background": 0.9, "sure_foreground": 0.1}, "sure_background"), ({"confidence_ramp": 0}, "confidence_ramp"),
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
    with pytest.raises(ValueError, match="NaN"):
        stabilize_alpha(frames, bad)


def test_synthetic_clip_meets_the_targets_at_small_size():
    """The benchmark's clip at a small size: still-segment dtSSD at least 50 % lower, clip dtSSD and MSE no
    worse, moving-edge MSE at most 10 % worse."""
    from benchmarks.synthetic_video import make_clip, simulate_model, temporal_metrics

    clip = make_clip(90, 160, frames_per_segment=10, seed=0)
    pred = simulate_model(clip["alpha"], seed=100)
    steady = stabilize_alpha(clip["frames"], pred)
    raw = temporal_metrics(pred, clip["alpha"], clip["segment"])
    st = temporal_metrics(steady, clip["alpha"], clip["segment"])
    assert st["still"]["dtssd"] <= 0.5 * raw["still"]["dtssd"]
    assert st["clip"]["dtssd"] <= raw["clip"]["dtssd"] and st["clip"]["mse"] <= raw["clip"]["mse"]
    assert st["clip"]["moving_edge_mse"] <= 1.1 * raw["clip"]["moving_edge_mse"]
