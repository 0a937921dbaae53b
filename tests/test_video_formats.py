"""Video outputs editors read (ProRes 4444 .mov, VP9 WebM with alpha, MP4 4:2:0, PNG sequences, matte-only),
odd sizes, rotation tags, variable frame rates, audio, in-memory sources and cancellation; each output is
checked by decoding it with PyAV."""
from __future__ import annotations

import io
import os
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

av = pytest.importorskip("av")

from test_video import DiskPredictor, make_clip  # noqa: E402

from ben_core import video  # noqa: E402
from ben_core.callbacks import Cancelled  # noqa: E402
from ben_core.io import video_writers  # noqa: E402

FPS = Fraction(12)


def write_clip(path, frames, fps=FPS, pts_ms=None, rotation=None, audio_seconds=None):
    """H.264 (yuv444p for odd sizes) clip of ``frames`` (uint8 [n, H, W, 3]); ``pts_ms``: timestamps in
    milliseconds (variable frame rate); ``rotation``: display rotation tag in degrees counter-clockwise;
    ``audio_seconds``: an AAC sine track of that length."""
    n, h, w, _ = frames.shape
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height = w, h
        vs.pix_fmt = "yuv444p" if (w % 2 or h % 2) else "yuv420p"
        vs.options = {"crf": "10"}
        if pts_ms is not None:
            vs.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            vs.set_display_rotation(rotation)
        aus = None
        if audio_seconds:
            aus = c.add_stream("aac", rate=44100)
            aus.layout = "mono"
        for i, img in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            if pts_ms is not None:
                vf.pts, vf.time_base = pts_ms[i], Fraction(1, 1000)
            c.mux(vs.encode(vf))
        c.mux(vs.encode(None))
        if aus is not None:
            t = np.arange(int(44100 * audio_seconds)) / 44100
            samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for start in range(0, len(samples), 1024):
                fr = av.AudioFrame.from_ndarray(samples[start:start + 1024][None], format="fltp", layout="mono")
                fr.sample_rate, fr.pts = 44100, start
                c.mux(aus.encode(fr))
            c.mux(aus.encode(None))
    return path


def ramp_frames(n, h, w):
    f = np.zeros((n, h, w, 3), np.uint8)
    f[..., 0] = (15 * np.arange(n) % 256)[:, None, None]
    f[..., 1] = np.linspace(0, 255, w, dtype=np.uint8)[None, None]
    f[..., 2] = 128
    return f


def decode(path, fmt="rgba"):
    """(frames as arrays of ``fmt``, stream info dict) of the first video stream; VP9 is decoded with
    libvpx so that its alpha plane is read."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        info = {"codec": vs.codec_context.name, "pix_fmt": vs.codec_context.pix_fmt, "width": vs.codec_context.width,
                "height": vs.codec_context.height, "container": c.format.name,
                "audio": [a.codec_context.name for a in c.streams.audio], "duration": c.duration,
                "time_base": vs.time_base, "profile": vs.codec_context.profile}
        if vs.codec_context.name == "vp9":
            ctx = av.CodecContext.create("libvpx-vp9", "r")
            decoded = [f for pkt in c.demux(vs) for f in ctx.decode(pkt)]
        else:
            decoded = list(c.decode(vs))
        info["frame_formats"] = {f.format.name for f in decoded}
        info["pts_seconds"] = [float(f.pts * f.time_base) for f in decoded]
        info["rotation"] = {getattr(f, "rotation", 0) for f in decoded}
        return [f.to_ndarray(format=fmt) for f in decoded], info


def disc_checks(alpha):
    """The stand-in's disc: opaque centre, transparent corners, on every frame."""
    a = np.stack(alpha).astype(np.float32)
    h, w = a.shape[1:3]
    assert a[:, h // 2, w // 2].min() > 230
    assert a[:, 1, 1].max() < 25 and a[:, -2, -2].max() < 25


def test_prores_4444_mov_keeps_alpha_audio_and_odd_size(tmp_path):
    src = write_clip(tmp_path / "clip.mp4", ramp_frames(9, 47, 63), audio_seconds=0.75)
    info = video.remove_background_video(DiskPredictor(), src, tmp_path / "out.mov", batch_size=4)
    assert (info.format, info.frames, info.width, info.height) == ("mov", 9, 63, 47)
    frames, meta = decode(tmp_path / "out.mov")
    assert meta["codec"] == "prores" and meta["profile"] == "4444"
    assert all(f.startswith("yuva444p") for f in meta["frame_formats"])  # an alpha plane editors read
    assert (meta["width"], meta["height"]) == (63, 47) and len(frames) == 9
    assert meta["audio"] == ["aac"] and info.audio.startswith("copied")
    assert abs(meta["duration"] / 1e6 - 0.75) < 0.1
    disc_checks([f[..., 3] for f in frames])
    assert abs(frames[0][23, 31, 2].astype(int) - 128) < 12  # the source's colour inside the disc


def test_odd_sized_webm_keeps_alpha_and_size(tmp_path):
    src = write_clip(tmp_path / "clip.mp4", ramp_frames(5, 47, 63))
    info = video.remove_background_video(DiskPredictor(), src, tmp_path / "out.webm", batch_size=2)
    frames, meta = decode(tmp_path / "out.webm")
    assert (info.width, info.height, meta["width"], meta["height"]) == (63, 47, 63, 47)
    assert meta["frame_formats"] == {"yuva420p"} and len(frames) == 5
    disc_checks([f[..., 3] for f in frames])


def test_odd_sized_mp4_is_padded_to_even_and_stays_420(tmp_path):
    src = write_clip(tmp_path / "clip.mp4", ramp_frames(5, 47, 63))
    info = video.remove_background_video(DiskPredictor(), src, tmp_path / "out.mp4", background=(1.0, 0.0, 1.0))
    frames, meta = decode(tmp_path / "out.mp4", fmt="rgb24")
    assert meta["pix_fmt"] == "yuv420p" and (meta["width"], meta["height"]) == (64, 48)
    assert (info.width, info.height) == (64, 48)  # documented: one column and row repeated
    f = np.stack(frames).astype(int)
    np.testing.assert_allclose(f[:, :47, 63], f[:, :47, 62], atol=12)  # the pad repeats the edge
    np.testing.assert_allclose(f[:, 47, :63], f[:, 46, :63], atol=12)


@pytest.mark.parametrize("background,mode,channels", [(None, "RGBA", 4), ((0.0, 0.0, 1.0), "RGB", 3)])
def test_png_sequence_is_numbered_with_audio_beside_it(tmp_path, background, mode, channels):
    src = write_clip(tmp_path / "clip.mp4", ramp_frames(7, 47, 63), audio_seconds=0.5)
    dst = tmp_path / "out" / "clip"
    info = video.remove_background_video(DiskPredictor(), src, dst, video_format="png", background=background,
                                         batch_size=3)
    assert info.frames == 7 and info.format == "png" and info.path == dst
    names = sorted(os.listdir(dst))
    assert names == sorted([f"clip_{i:06d}.png" for i in range(1, 8)] + ["clip.wav"])
    assert sorted(os.listdir(tmp_path / "out")) == ["clip"]  # no temporary folder left beside it
    img = Image.open(dst / "clip_000004.png")
    assert img.mode == mode and img.size == (63, 47)
    a = np.asarray(img)
    if channels == 4:
        disc_checks([a[..., 3]])
    else:
        assert a[1, 1].tolist() == [0, 0, 255]
    with av.open(str(dst / "clip.wav")) as c:
        assert c.streams.audio[0].codec_context.name == "pcm_s16le"
        assert abs(c.duration / 1e6 - 0.5) < 0.1
    assert video_writers.is_complete_output(dst)


@pytest.mark.parametrize("name,fmt,codec", [("m.mov", None, "prores"), ("m.webm", None, "vp9"),
                                            ("m.mp4", None, "h264"), ("m", "png", None)])
def test_matte_only_in_every_format(tmp_path, name, fmt, codec):
    src = make_clip(tmp_path / "clip.mp4", audio=False, n=4)
    dst = tmp_path / name
    video.remove_background_video(DiskPredictor(), src, dst, video_format=fmt, mask_only=True)
    if codec is None:
        frames = [np.asarray(Image.open(dst / f)) for f in sorted(os.listdir(dst))]
        assert Image.open(dst / "m_000001.png").mode == "L"
    else:
        frames, meta = decode(dst, fmt="gray")
        assert meta["codec"] == codec and not any("a" in f.replace("yuv", "") for f in meta["frame_formats"])
    assert len(frames) == 4
    disc_checks(frames)


class RecordingPredictor(DiskPredictor):
    """DiskPredictor that keeps every chunk it was given."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def predict_chunk(self, chunk, deferred=False):
        self.seen.append(chunk.clone())
        return super().predict_chunk(chunk, deferred)


@pytest.mark.skipif(not hasattr(av.video.stream.VideoStream, "set_display_rotation"),
                    reason="this PyAV cannot write a rotation tag")
@pytest.mark.parametrize("rotation", [-90, 90, 180])
def test_rotation_tag_is_applied_for_the_network_and_the_output(tmp_path, rotation):
    """A phone clip: stored landscape with a rotation tag. The network sees the upright frames, and the
    output holds them upright (no tag), so it displays as the input did."""
    upright = np.zeros((3, 64, 48, 3), np.uint8)  # portrait: 48 wide, 64 high
    upright[..., 1] = 90
    upright[:, :12, :12] = (255, 0, 0)  # red square at the top left as displayed
    stored = np.ascontiguousarray(np.rot90(upright, -rotation // 90, axes=(1, 2)))  # what the camera wrote
    src = write_clip(tmp_path / "phone.mp4", stored, rotation=rotation)
    pred = RecordingPredictor()
    info = video.remove_background_video(pred, src, tmp_path / "out.mov", batch_size=3)
    seen = pred.seen[0][0].numpy().astype(int)
    assert seen.shape == (64, 48, 3)
    assert seen[4, 4, 0] > 200 and seen[4, 4, 1] < 60  # red at the top left: upright
    assert seen[-5, -5, 0] < 60
    assert info.rotation % 360 == rotation % 360 and (info.width, info.height) == (48, 64)
    frames, meta = decode(tmp_path / "out.mov")
    assert (meta["width"], meta["height"]) == (48, 64) and meta["rotation"] == {0}
    assert frames[0][4, 4, 0] > 200 and frames[0][-5, -5, 0] < 60


@pytest.mark.parametrize("name,fmt", [("out.mov", None), ("out.webm", None), ("out.mp4", "mp4")])
def test_variable_frame_rate_timestamps_are_kept(tmp_path, name, fmt):
    pts_ms = [0, 40, 80, 200, 240, 400, 440, 480]
    src = write_clip(tmp_path / "vfr.mp4", ramp_frames(len(pts_ms), 48, 64), pts_ms=pts_ms)
    _, src_meta = decode(src, fmt="rgb24")
    background = (0.0, 1.0, 0.0) if fmt == "mp4" else None
    video.remove_background_video(DiskPredictor(), src, tmp_path / name, background=background, batch_size=3)
    frames, meta = decode(tmp_path / name, fmt="rgb24")
    assert len(frames) == len(pts_ms)
    start = meta["pts_seconds"][0] - src_meta["pts_seconds"][0]
    np.testing.assert_allclose(np.array(meta["pts_seconds"]) - start, src_meta["pts_seconds"], atol=0.0015)


def test_in_memory_source(tmp_path):
    """ComfyUI's VIDEO may hand over a BytesIO (VideoInput.get_stream_source)."""
    src = make_clip(tmp_path / "clip.mp4", audio=True, n=5)
    buf = io.BytesIO(src.read_bytes())
    info = video.remove_background_video(DiskPredictor(), buf, tmp_path / "out.webm", batch_size=2)
    assert info.frames == 5 and info.audio is not None
    frames, _ = decode(tmp_path / "out.webm")
    assert len(frames) == 5


@pytest.mark.parametrize("name,fmt", [("out.mov", None), ("seq", "png")])
def test_stop_mid_clip_leaves_nothing(tmp_path, name, fmt):
    src = make_clip(tmp_path / "clip.mp4", audio=True, n=10)
    out = tmp_path / "out"
    out.mkdir()
    calls = []

    def should_stop():
        calls.append(1)
        if len(calls) > 2:
            raise Cancelled("stop")
        return False

    with pytest.raises(Cancelled):
        video.remove_background_video(DiskPredictor(), src, out / name, video_format=fmt, batch_size=2,
                                      should_stop=should_stop)
    assert os.listdir(out) == []  # neither the output nor a temporary file/folder


def test_a_png_sequence_replaces_an_older_one_only_when_complete(tmp_path):
    src = make_clip(tmp_path / "clip.mp4", audio=False, n=3)
    dst = tmp_path / "seq"
    dst.mkdir()
    (dst / "seq_000001.png").write_bytes(b"old")
    (dst / "seq_000099.png").write_bytes(b"old")
    def stop_at_once():
        raise Cancelled("stop")

    with pytest.raises(Cancelled):
        video.remove_background_video(DiskPredictor(), src, dst, video_format="png", should_stop=stop_at_once)
    assert sorted(os.listdir(dst)) == ["seq_000001.png", "seq_000099.png"]  # untouched
    video.remove_background_video(DiskPredictor(), src, dst, video_format="png")
    assert sorted(os.listdir(dst)) == [f"seq_{i:06d}.png" for i in (1, 2, 3)]
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4", "seq"]


@pytest.mark.parametrize("name,fmt,kw,match", [
    ("out.mp4", None, {}, "MP4 cannot store transparency"),
    ("out.gif", None, {}, "unsupported video container"),
    ("out.png", "png", {}, "folder"),
    ("out.webm", "mov", {}, "extension .mov"),
    ("out.mov", "avi", {}, "video_format must be one of"),
    ("out.mov", None, {"mask_only": True, "background": (0, 0, 0)}, "mask_only"),
])
def test_bad_output_choices_fail_before_decoding(tmp_path, name, fmt, kw, match):
    pred = RecordingPredictor()
    with pytest.raises(ValueError, match=match):
        video.remove_background_video(pred, tmp_path / "missing.mp4", tmp_path / name, video_format=fmt, **kw)
    assert pred.seen == [] and os.listdir(tmp_path) == []


def test_unreadable_source_names_the_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(ValueError, match="broken.mp4.*cannot be opened"):
        video.remove_background_video(DiskPredictor(), bad, tmp_path / "out.webm")
    assert sorted(os.listdir(tmp_path)) == ["broken.mp4"]


def test_network_gets_uint8_channels_last_chunks(tmp_path):
    """The pipeline gets uint8 channels-last chunks of the (rotated) frame size."""
    src = make_clip(tmp_path / "clip.mp4", audio=False, n=3)
    pred = RecordingPredictor()
    video.remove_background_video(pred, src, tmp_path / "o.webm", batch_size=3)
    assert all(c.dtype == torch.uint8 and c.shape[1:] == (64, 96, 3) for c in pred.seen)


def test_progress_total_from_a_webm_without_frame_count(tmp_path):
    """WebM headers carry no frame count: the total comes from the container's duration."""
    src = make_clip(tmp_path / "clip.mp4", audio=False, n=9)
    video.remove_background_video(DiskPredictor(), src, tmp_path / "a.webm")
    with av.open(str(tmp_path / "a.webm")) as c:
        assert not c.streams.video[0].frames  # the case this covers
    seen = []
    video.remove_background_video(DiskPredictor(), tmp_path / "a.webm", tmp_path / "b.webm", batch_size=4,
                                  progress=lambda done, total: seen.append((done, total)))
    assert seen == [(4, 9), (8, 9), (9, 9)]


def test_a_png_sequence_never_replaces_a_folder_of_other_files(tmp_path):
    src = make_clip(tmp_path / "clip.mp4", audio=False, n=2)
    mine = tmp_path / "shots"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    pred = RecordingPredictor()
    with pytest.raises(ValueError, match="already holds other files"):
        video.remove_background_video(pred, src, mine, video_format="png")
    assert pred.seen == [] and os.listdir(mine) == ["notes.txt"]
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        video.remove_background_video(pred, src, tmp_path / "afile", video_format="png")


class Opaque(DiskPredictor):
    """Alpha 1 everywhere: the output's colours are the input's."""

    def predict_chunk(self, chunk, deferred=False):
        alpha = torch.ones(chunk.shape[:3])
        return (alpha, lambda: None) if deferred else alpha


@pytest.mark.parametrize("tag,expected", [(1, 1), (None, 6)])
def test_colour_matrix_is_kept_and_tagged(tmp_path, tag, expected):
    """A BT.709-tagged clip comes out BT.709-tagged; an untagged small one as BT.601 (what players assume
    below 720 lines); either way the colours survive the YUV round trip (the encoder's matrix is tagged)."""
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, :32] = (200, 40, 40)
    img[:, 32:] = (40, 180, 60)
    src = tmp_path / "clip.mp4"
    with av.open(str(src), "w") as c:
        vs = c.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt, vs.options = 64, 48, "yuv420p", {"crf": "1"}
        if tag:
            vs.codec_context.colorspace, vs.codec_context.color_range = tag, 1
        for _ in range(3):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            c.mux(vs.encode(f.reformat(format="yuv420p", dst_colorspace=5 if tag is None else tag)))
        c.mux(vs.encode(None))
    for name, bg in (("o.mov", None), ("o.webm", None), ("o.mp4", (0.0, 0.0, 0.0))):
        video.remove_background_video(Opaque(), src, tmp_path / name, background=bg)
        with av.open(str(tmp_path / name)) as c:
            f = next(c.decode(video=0))
            assert f.colorspace == expected, name
            out = f.to_ndarray(format="rgb24").astype(int)
        assert np.abs(out[10, 10] - [200, 40, 40]).max() <= 6 and np.abs(out[10, 50] - [40, 180, 60]).max() <= 6
