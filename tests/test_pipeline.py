"""ben_core.pipeline: the one cut-out pipeline (predict -> refine -> foreground -> composite), checked
against the separate ben_core steps it strings together, with a stand-in network behind the real
BENPredictor."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ben_core.callbacks import Cancelled
from ben_core.matting.compose import composite, to_uint8
from ben_core.matting.foreground import estimate_foreground
from ben_core.matting.refine import refine_alpha
from ben_core.matting.trimap import make_trimap
from ben_core.pipeline import CutoutOptions, CutoutPipeline, Refinement
from ben_core.predictor import IMAGENET_MEAN, IMAGENET_STD, BENPredictor
from benchmarks.synthetic_matting import make_synthetic_matte

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


class SoftRed(torch.nn.Module):
    """Stand-in network: logit = 8 * (red - 0.5) of the de-normalised input (soft edges)."""

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(8.0), requires_grad=False)

    def forward(self, x):
        return self.gain * ((x.float() * STD + MEAN)[:, :1] - 0.5)


def images(b=3, h=40, w=56, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, h, w, 3, generator=g)


def predictor(batch_size=2):
    return BENPredictor(SoftRed(), working_size=64, batch_size=batch_size)


def reference(pred, imgs, foreground=True, background=None):
    """The pipeline's result computed step by step with the separate ben_core functions."""
    alpha = pred.predict_alpha(imgs)
    rgb = imgs.permute(0, 3, 1, 2)
    colours = estimate_foreground(rgb, alpha) if foreground else rgb
    return alpha, composite(colours.permute(0, 2, 3, 1), alpha, background)


@pytest.mark.parametrize("foreground", [True, False])
@pytest.mark.parametrize("background", [None, (0.1, 0.8, 0.3)])
def test_run_equals_the_separate_steps(foreground, background):
    pred = predictor()
    imgs = images()
    before = imgs.clone()
    cut = CutoutPipeline(pred, CutoutOptions(foreground=foreground, background=background)).run(imgs)
    alpha, image = reference(pred, imgs, foreground, background)
    assert torch.equal(imgs, before)
    assert cut.alpha.shape == (3, 40, 56) and cut.alpha.dtype == torch.float32
    assert cut.image.shape == (3, 40, 56, 4 if background is None else 3)
    torch.testing.assert_close(cut.alpha, alpha, atol=0, rtol=0)
    torch.testing.assert_close(cut.image, image, atol=1e-6, rtol=0)


def test_foreground_policy_everywhere():
    """One policy at every door: blur-fusion colours over the whole image. Where alpha is 1 that is the
    image itself; at soft edges the colours carry less of the old background than the image does."""
    s = make_synthetic_matte(270, 480, seed=4, model_size=128)
    rgb, alpha = s["image"], s["coarse"]
    opts = CutoutOptions(refine=Refinement(), foreground=True)
    cut = CutoutPipeline(None, opts).run(rgb.permute(0, 2, 3, 1), alpha)
    colours = cut.image[..., :3].permute(0, 3, 1, 2)
    assert torch.equal(cut.image[..., 3], cut.alpha)
    refined = refine_alpha(rgb, alpha, make_trimap(alpha))
    torch.testing.assert_close(cut.alpha, refined, atol=0, rtol=0)
    torch.testing.assert_close(colours, estimate_foreground(rgb, refined), atol=1e-6, rtol=0)
    solid = (refined == 1).unsqueeze(1).expand_as(rgb)
    assert solid.any() and (colours[solid] - rgb[solid]).abs().max() < 1e-5
    soft = ((refined > 0.05) & (refined < 0.95)).unsqueeze(1).expand_as(rgb)
    assert (colours - s["fg"]).abs()[soft].mean() < (rgb - s["fg"]).abs()[soft].mean()


def test_refinement_with_given_alpha_and_trimap():
    s = make_synthetic_matte(120, 160, seed=1, model_size=64)
    rgb, coarse = s["image"], s["coarse"]
    trimap = make_trimap(coarse, "band", 3)
    opts = CutoutOptions(refine=Refinement(radius=4, eps=1e-3), foreground=False, background=(0.0, 0.0, 0.0))
    cut = CutoutPipeline(None, opts).run(rgb.permute(0, 2, 3, 1), coarse, trimap)
    ref = refine_alpha(rgb, coarse, trimap, radius=4, eps=1e-3)
    torch.testing.assert_close(cut.alpha, ref, atol=0, rtol=0)
    torch.testing.assert_close(cut.image, composite(rgb.permute(0, 2, 3, 1), ref, (0.0, 0.0, 0.0)), atol=1e-6, rtol=0)
    assert torch.all(cut.alpha[trimap == 1] == 1) and torch.all(cut.alpha[trimap == 0] == 0)


def soft_scene(h=150, w=200, seed=5):
    """Frames ``[2, h, w, 3]`` whose red channel (SoftRed's alpha) is a soft blob, with texture around it."""
    s = make_synthetic_matte(h, w, seed=seed, model_size=40)
    rgb = s["image"].permute(0, 2, 3, 1)
    return torch.cat([rgb, rgb.flip(2)]).clamp(0, 1)


def test_predicted_alpha_is_refined_at_the_predictors_working_size():
    """The pipeline knows the map its own alpha was predicted at: the refinement fits there (refine_alpha's
    working_size), not at the scale it would measure on the mask. A given alpha is measured, unless the
    Refinement names its working size; an alpha the pipeline predicts keeps the predictor's."""
    pred = predictor()  # working size 64 for 200 px wide frames: fit at 1/3.125
    imgs = soft_scene()
    rgb = imgs.permute(0, 3, 1, 2)
    alpha = pred.predict_alpha(imgs)
    trimap = make_trimap(alpha)
    known = refine_alpha(rgb, alpha, trimap, working_size=64)
    measured = refine_alpha(rgb, alpha, trimap)
    assert not torch.allclose(known, measured, atol=1e-4)  # the two scales give different mattes here
    opts = CutoutOptions(refine=Refinement(), foreground=False)
    torch.testing.assert_close(CutoutPipeline(pred, opts).run(imgs).alpha, known, atol=0, rtol=0)
    told = CutoutOptions(refine=Refinement(working_size=512), foreground=False)  # about given masks only
    torch.testing.assert_close(CutoutPipeline(pred, told).run(imgs).alpha, known, atol=0, rtol=0)
    # a given alpha: measured, or the caller's working size
    torch.testing.assert_close(CutoutPipeline(None, opts).run(imgs, alpha).alpha, measured, atol=0, rtol=0)
    mine = CutoutOptions(refine=Refinement(working_size=64), foreground=False)
    torch.testing.assert_close(CutoutPipeline(None, mine).run(imgs, alpha).alpha, known, atol=0, rtol=0)
    torch.testing.assert_close(CutoutPipeline(pred, opts).run(imgs, alpha).alpha, measured, atol=0, rtol=0)


def test_steadied_alpha_is_refined_at_the_predictors_working_size():
    """Video frames steadied by a stabiliser are still the pipeline's own prediction: refined at its size."""
    from ben_core.matting.temporal import AlphaStabilizer, stabilize_alpha

    pred = predictor()
    imgs = soft_scene()
    steady = stabilize_alpha(imgs.permute(0, 3, 1, 2), pred.predict_alpha(imgs))
    want = refine_alpha(imgs.permute(0, 3, 1, 2), steady, make_trimap(steady), working_size=64)
    cut = CutoutPipeline(pred, CutoutOptions(refine=Refinement(), foreground=False)).run(
        imgs, stabilizer=AlphaStabilizer())
    torch.testing.assert_close(cut.alpha, want, atol=0, rtol=0)


@pytest.mark.parametrize("bad", [0, -3, 1.5, True, "1024"])
def test_refinement_working_size_is_checked(bad):
    with pytest.raises(ValueError, match="working_size"):
        Refinement(working_size=bad)


def test_chunking_and_streaming_give_the_same_result():
    imgs = images(5, 24, 30, seed=2)
    ref = CutoutPipeline(predictor(batch_size=5)).run(imgs)
    for bs in (1, 2, 3):
        cut = CutoutPipeline(predictor(batch_size=bs)).run(imgs)
        torch.testing.assert_close(cut.image, ref.image, atol=1e-6, rtol=0)
    pipe = CutoutPipeline(predictor(batch_size=2))
    chunks = (imgs[i:i + 2] for i in range(0, 5, 2))
    parts = list(pipe.stream(chunks))
    assert [len(p) for p in parts] == [2, 2, 1]
    torch.testing.assert_close(torch.cat([p.image for p in parts]), ref.image, atol=1e-6, rtol=0)


def test_stream_reads_one_chunk_at_a_time():
    seen = []

    def chunks():
        for i in range(3):
            seen.append(i)
            yield images(1, 16, 16, seed=i)

    stream = CutoutPipeline(predictor()).stream(chunks())
    next(stream)
    assert seen == [0]  # the next chunk is not decoded before the first result is consumed
    assert len(list(stream)) == 2 and seen == [0, 1, 2]


def test_uint8_output_is_the_quantised_float_output():
    imgs = images(2, 20, 20, seed=3)
    pipe = CutoutPipeline(predictor())
    f32, u8 = pipe.run(imgs), pipe.run(imgs, out_dtype=torch.uint8)
    assert u8.image.dtype == torch.uint8 and u8.alpha.dtype == torch.uint8
    assert torch.equal(u8.image, to_uint8(f32.image)) and torch.equal(u8.alpha, to_uint8(f32.alpha))


def test_mixed_sizes_give_lists_and_one_network_batch():
    pred = predictor(batch_size=3)
    calls = []
    real = pred.predict_chunk
    pred.predict_chunk = lambda chunk, **kw: calls.append(len(chunk)) or real(chunk, **kw)
    imgs = [np.zeros((10, 20, 3), np.uint8), np.full((30, 15, 3), 255, np.uint8), np.zeros((10, 20, 3), np.uint8)]
    cut = CutoutPipeline(pred, CutoutOptions(background=(1.0, 1.0, 1.0))).run(imgs)
    assert calls == [3]
    assert isinstance(cut.image, list)
    assert [tuple(x.shape) for x in cut.image] == [(10, 20, 3), (30, 15, 3), (10, 20, 3)]
    assert [tuple(a.shape) for a in cut.alpha] == [(10, 20), (30, 15), (10, 20)]
    assert float(cut.alpha[1].min()) > 0.95 and float(cut.alpha[0].max()) < 0.05


def test_mask_only_makes_no_image():
    cut = CutoutPipeline(predictor(), CutoutOptions(image=False)).run(images(2, 8, 8))
    assert cut.image is None and cut.alpha.shape == (2, 8, 8)


def test_progress_and_should_stop():
    pipe = CutoutPipeline(predictor(batch_size=2))
    done = []
    pipe.run(images(5, 8, 8), progress=lambda d, t: done.append((d, t)))
    assert done == [(2, 5), (4, 5), (5, 5)]
    asked = []

    def stop_on_third_ask():
        asked.append(1)
        return len(asked) >= 3

    with pytest.raises(Cancelled):
        pipe.run(images(5, 8, 8), should_stop=stop_on_third_ask)

    class Interrupted(Exception):
        pass

    def interrupt():
        raise Interrupted()

    with pytest.raises(Interrupted):  # ComfyUI's interrupt raises its own exception: it passes through
        pipe.run(images(1, 8, 8), should_stop=interrupt)


def test_bad_input_is_named():
    pipe = CutoutPipeline(predictor())
    with pytest.raises(ValueError, match="alpha must hold one"):
        pipe.run(images(2, 8, 8), torch.rand(2, 8, 9))
    with pytest.raises(ValueError, match=r"alpha\[1\] must lie in 0..1"):
        pipe.run(images(2, 8, 8), torch.stack([torch.rand(8, 8), torch.rand(8, 8) * 255]))
    with pytest.raises(TypeError, match="float map"):
        pipe.run(images(1, 8, 8), torch.ones(1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="no predictor"):
        CutoutPipeline(None).run(images(1, 8, 8))
    with pytest.raises(ValueError, match="0..1"):
        pipe.run(images(1, 8, 8) * 255)
    with pytest.raises(ValueError, match="background"):
        CutoutPipeline(None, CutoutOptions(background=(0, 128, 255)))
    with pytest.raises(ValueError, match="out_dtype"):
        pipe.run(images(1, 8, 8), out_dtype=torch.float16)
    with pytest.raises(ValueError, match="batch_size"):
        pipe.run(images(1, 8, 8), batch_size=0)


def test_temporal_stabiliser_runs_before_the_colours_and_carries_across_chunks_and_streams():
    """pipeline.run / stream with an AlphaStabilizer = the per-frame alpha steadied over the whole clip,
    then the same foreground + composite; any batch size or chunking of the stream gives the same."""
    from ben_core.matting.temporal import AlphaStabilizer, stabilize_alpha

    pred = predictor(batch_size=2)
    frames = images(b=6, seed=3)
    frames[2:5] = frames[1]  # a still stretch: the stabiliser carries weight there
    frames[2:5, :, :, 0] += torch.linspace(-0.02, 0.02, 3).view(3, 1, 1)  # the model's answer wobbles a little
    frames = frames.clamp(0, 1)
    alpha = stabilize_alpha(frames.permute(0, 3, 1, 2), pred.predict_alpha(frames))
    rgb = frames.permute(0, 3, 1, 2)
    want = composite(estimate_foreground(rgb, alpha).permute(0, 2, 3, 1), alpha, None)
    pipeline = CutoutPipeline(pred, CutoutOptions(foreground=True))
    for bs in (1, 2, 4):
        cut = pipeline.run(frames, batch_size=bs, stabilizer=AlphaStabilizer())
        assert torch.equal(cut.alpha, alpha), bs
        torch.testing.assert_close(cut.image, want, atol=1e-6, rtol=0)
    parts = list(pipeline.stream([frames[:1], frames[1:4], frames[4:]], stabilizer=AlphaStabilizer()))
    assert torch.equal(torch.cat([p.alpha for p in parts]), alpha)
    assert not torch.equal(alpha, pred.predict_alpha(frames))  # the stabiliser did change something
    with pytest.raises(ValueError, match="one size"):
        pipeline.run([frames[0], frames[1, :20]], stabilizer=AlphaStabilizer())


def test_bidirectional_stabiliser_takes_the_whole_batch_and_is_refused_by_stream():
    """run() steadies the whole batch first (the batch is the clip), so a bidirectional stabiliser gives every
    frame, equal to stabilize_alpha on the clip; stream() must give each chunk at once: it refuses one."""
    from ben_core.matting.temporal import AlphaStabilizer, stabilize_alpha

    pred = predictor(batch_size=2)
    frames = images(b=7, seed=4)
    frames[2:6] = frames[1]
    want = stabilize_alpha(frames.permute(0, 3, 1, 2), pred.predict_alpha(frames), mode="bidirectional", lookahead=2)
    pipeline = CutoutPipeline(pred, CutoutOptions(foreground=False))
    stab = AlphaStabilizer(mode="bidirectional", lookahead=2)
    cut = pipeline.run(frames, stabilizer=stab)
    assert torch.equal(cut.alpha, want) and stab.held == 0
    steady = pipeline.steady_alpha(frames[:5], AlphaStabilizer(mode="bidirectional", lookahead=2), end_of_clip=False)
    assert len(steady) == 2  # one block of 2 has its 2 frames of look-ahead; 3 frames are still held
    with pytest.raises(ValueError, match="causal stabiliser only"):
        list(pipeline.stream([frames[:3], frames[3:]], stabilizer=AlphaStabilizer(mode="bidirectional")))
    held = AlphaStabilizer(mode="bidirectional")
    held.update(frames.permute(0, 3, 1, 2)[:2], want[:2])
    with pytest.raises(ValueError, match="flush"):
        pipeline.run(frames, stabilizer=held)
