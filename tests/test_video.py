"""Video background removal on a short clip generated here, with a stand-in predictor."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

from ben_core import video  # noqa: E402

W, H, N_FRAMES, FPS = 96, 64, 14, Fraction(12)


class DiskPredictor:
    """Stand-in for BENPredictor: alpha 1 inside a centred disc, 0 outside; records every batch size."""

    device = torch.device("cpu")
    batch_size = 1

    def __init__(self):
        self.calls = []

    def predict_chunk(self, chunk, deferred=False):
        assert isinstance(chunk, torch.Tensor) and chunk.dtype == torch.uint8
        assert chunk.dim() == 4 and chunk.shape[-1] == 3
        self.calls.append(chunk.shape[0])
        b, h, w, _ = chunk.shape
        yy, xx = np.mgrid[0:h, 0:w]
        inside = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < (min(h, w) / 3) ** 2
        alpha = torch.from_numpy(np.repeat(inside[None].astype(np.float32), b, axis=0))
        return (alpha, lambda: None) if deferred else alpha


def make_clip(path, audio=True, fps=FPS, n=N_FRAMES):
    """Write a small H.264/MPEG-4 MP4 (grey ramp frames) with an AAC sine track."""
    with av.open(str(path), "w") as c:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        vs = c.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        if audio:
            aus = c.add_stream("aac", rate=44100)
            aus.layout = "mono"
        for i in range(n):
            img = np.zeros((H, W, 3), np.uint8)
            img[..., 0] = 15 * i
            img[..., 1] = np.linspace(0, 255, W, dtype=np.uint8)[None]
            img[..., 2] = 128
            c.mux(vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(vs.encode(None))
        if audio:
            secs = float(n / fps)
            t = np.arange(int(44100 * secs)) / 44100
            samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for start in range(0, len(samples), 1024):
                chunk = samples[start:start + 1024][None]
                fr = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                fr.sample_rate = 44100
                fr.pts = start
                c.mux(aus.encode(fr))
            c.mux(aus.encode(None))
    return path


def decode_video(path, alpha=False):
    """(frames as uint8 arrays, average fps, has_audio); alpha=True decodes VP9 with libvpx to keep alpha."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        fps = vs.average_rate
        has_audio = bool(c.streams.audio)
        frames = []
        if alpha:
            ctx = av.CodecContext.create("libvpx-vp9", "r")
            for pkt in c.demux(vs):
                for f in ctx.decode(pkt):
                    frames.append(f)
            return [f.to_ndarray(format="rgba") for f in frames], fps, has_audio, [f.format.name for f in frames]
        for f in c.decode(vs):
            frames.append(f.to_ndarray(format="rgb24"))
        return frames, fps, has_audio, None


def test_webm_with_alpha_keeps_frames_fps_size_audio(tmp_path):
    src = make_clip(tmp_path / "clip.mp4")
    pred = DiskPredictor()
    seen = []
    info = video.remove_background_video(pred, src, tmp_path / "out.webm", batch_size=4,
                                         progress=lambda d, t: seen.append(d))
    assert info.frames == N_FRAMES
    assert pred.calls == [4, 4, 4, 2]          # streamed in batches, never the whole clip
    assert seen == [4, 8, 12, 14]
    assert info.audio is not None and "transcoded" in info.audio  # AAC cannot go into WebM as-is

    with av.open(str(tmp_path / "out.webm")) as c:
        vs = c.streams.video[0]
        assert vs.codec_context.name == "vp9"
        assert (vs.codec_context.width, vs.codec_context.height) == (W, H)
        assert c.streams.audio and c.streams.audio[0].codec_context.name == "opus"
    frames, fps, has_audio, fmts = decode_video(tmp_path / "out.webm", alpha=True)
    assert len(frames) == N_FRAMES
    assert fps == FPS
    assert has_audio
    assert all(f == "yuva420p" for f in fmts)
    a = np.stack([f[..., 3] for f in frames]).astype(np.float32)
    # alpha follows the stand-in's disc: opaque centre, transparent corners
    assert a[:, H // 2, W // 2].min() > 230
    assert a[:, 2, 2].max() < 25
    assert a[:, -3, -3].max() < 25


def test_mp4_composited_over_colour_keeps_audio(tmp_path):
    src = make_clip(tmp_path / "clip.mp4")
    info = video.remove_background_video(DiskPredictor(), src, tmp_path / "out.mp4",
                                         background=(1.0, 0.0, 1.0), batch_size=5)
    assert info.frames == N_FRAMES and info.audio.startswith("copied")
    frames, fps, has_audio, _ = decode_video(tmp_path / "out.mp4")
    assert len(frames) == N_FRAMES and fps == FPS and has_audio
    f = np.stack(frames).astype(np.int32)
    assert f.shape[1:] == (H, W, 3)
    corner = f[:, 1:4, 1:4].reshape(-1, 3).mean(0)
    assert abs(corner[0] - 255) < 20 and corner[1] < 30 and abs(corner[2] - 255) < 20  # magenta background
    centre = f[:, H // 2, W // 2]  # the source colour (blue 128) survives in the foreground
    assert abs(centre[:, 2].mean() - 128) < 20


def test_video_without_audio_and_mask_only(tmp_path):
    src = make_clip(tmp_path / "clip.mp4", audio=False)
    info = video.remove_background_video(DiskPredictor(), src, tmp_path / "mask.mp4", mask_only=True, batch_size=3)
    assert info.audio is None and info.frames == N_FRAMES
    frames, _, has_audio, _ = decode_video(tmp_path / "mask.mp4")
    assert not has_audio
    f = np.stack(frames).astype(np.int32)
    assert f[:, H // 2, W // 2].min() > 230 and f[:, 2, 2].max() < 25


def test_transparent_mp4_is_refused_and_no_partial_file(tmp_path):
    src = make_clip(tmp_path / "clip.mp4", audio=False, n=2)
    with pytest.raises(ValueError, match="webm"):
        video.remove_background_video(DiskPredictor(), src, tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()
    with pytest.raises(ValueError, match="container"):
        video.remove_background_video(DiskPredictor(), src, tmp_path / "out.gif")


def test_missing_pyav_gives_clear_message(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name == "av" or name.startswith("av."):
            raise ImportError("No module named 'av'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(video.VideoDependencyError, match="pip install av"):
        video.remove_background_video(DiskPredictor(), "x.mp4", "y.webm")


class FlickerPredictor(DiskPredictor):
    """The disc, with an unsure ring whose value alternates from frame to frame (0.3 / 0.7): flicker."""

    def __init__(self):
        super().__init__()
        self.frame = 0

    def predict_chunk(self, chunk, deferred=False):
        alpha, _ = super().predict_chunk(chunk, deferred=True)
        b, h, w = alpha.shape
        yy, xx = np.mgrid[0:h, 0:w]
        d = np.sqrt((yy - h / 2) ** 2 + (xx - w / 2) ** 2)
        ring = torch.from_numpy((np.abs(d - min(h, w) / 3) < 4).astype(np.float32))
        for i in range(b):
            alpha[i] = torch.where(ring > 0, torch.tensor(0.3 if (self.frame + i) % 2 else 0.7), alpha[i])
        self.frame += b
        return (alpha, lambda: None) if deferred else alpha


def test_temporal_stabiliser_runs_through_the_whole_clip(tmp_path):
    """--temporal / temporal=True: the ring's frame-to-frame flicker is damped across batch boundaries (the
    clip's frames do not move), sure pixels are untouched, every frame is written."""
    src = make_clip(tmp_path / "clip.mp4", audio=False)
    swings = {}
    for temporal in (False, True):
        dst = tmp_path / f"mask_{temporal}.mp4"
        info = video.remove_background_video(FlickerPredictor(), src, dst, mask_only=True, batch_size=3,
                                             temporal=temporal)
        assert info.frames == N_FRAMES
        frames, _, _, _ = decode_video(dst)
        f = np.stack(frames).astype(np.float32)[..., 0]
        ring = f[:, H // 2, W // 2 + min(H, W) // 3]
        swings[temporal] = np.abs(np.diff(ring[4:])).mean()
        assert f[:, H // 2, W // 2].min() > 230 and f[:, 2, 2].max() < 25
    assert swings[True] < 0.5 * swings[False], swings


def test_bidirectional_stabiliser_writes_every_frame_in_order(tmp_path):
    """temporal="bidirectional": frames come out of the stabiliser late (blocks of its look-ahead), yet every
    frame is written once, with its own timestamp, and the flicker is damped as much as in causal mode."""
    from ben_core.matting.temporal import AlphaStabilizer

    src = make_clip(tmp_path / "clip.mp4", audio=False)
    ring = {}
    modes = (("causal", "causal"), ("bidirectional", AlphaStabilizer(mode="bidirectional", lookahead=3)))
    for label, temporal in modes:
        dst = tmp_path / "mask.mov"
        info = video.remove_background_video(FlickerPredictor(), src, dst, mask_only=True, batch_size=2,
                                             temporal=temporal)
        assert info.frames == N_FRAMES
        with av.open(str(dst)) as c:
            pts = [f.pts for f in c.decode(c.streams.video[0])]
        assert len(pts) == N_FRAMES and pts == sorted(pts) and len(set(pts)) == N_FRAMES
        frames, _, _, _ = decode_video(dst)
        f = np.stack(frames).astype(np.float32)[..., 0]
        ring[label] = np.abs(np.diff(f[4:, H // 2, W // 2 + min(H, W) // 3])).mean()
    assert ring["bidirectional"] <= 1.1 * ring["causal"], ring
    with pytest.raises(ValueError, match="temporal must be"):
        video.remove_background_video(FlickerPredictor(), src, tmp_path / "x.webm", temporal="sideways")
