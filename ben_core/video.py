"""Video background removal, streamed through PyAV and :class:`ben_core.pipeline.CutoutPipeline`.

Frames are decoded, cut out and encoded in batches of ``batch_size``; the whole video is never held in
memory. Output is VP9 WebM with an alpha channel (``yuva420p``) when no background colour is given, or
H.264 MP4 (MPEG-4 Part 2 if libx264 is unavailable) / VP9 WebM composited over a colour. The first audio
stream is kept: copied when the output container accepts its codec, else transcoded (Opus for WebM,
AAC for MP4). Frame timestamps (hence the frame rate) are passed through unchanged. Other streams
(subtitles, data, further audio tracks) and rotation metadata are not carried over.

PyAV (``pip install av``; ComfyUI installs it) is an optional dependency of ben_core: it is imported
only when a video is processed, with a clear error when missing.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .files import temporary_path

# audio codecs each output container takes as-is (others are transcoded)
_REMUX_AUDIO = {
    "webm": {"opus", "vorbis"},
    "mp4": {"aac", "mp3", "opus", "ac3", "eac3", "alac", "flac"},
    "mov": {"aac", "mp3", "alac", "ac3", "pcm_s16le", "pcm_s24le"},
    "mkv": None,  # matroska takes nearly everything
}
_TRANSCODE_AUDIO = {"webm": ("libopus", 48000), "mp4": ("aac", None), "mov": ("aac", None), "mkv": ("libopus", 48000)}


log = logging.getLogger("ben_core")


class VideoDependencyError(ImportError):
    """PyAV is not installed."""


@dataclass
class VideoInfo:
    """What was written: frame count, frame rate, size and how audio was handled (None: no audio)."""

    frames: int
    fps: Fraction
    width: int
    height: int
    audio: str | None
    path: Path


def _import_av():
    try:
        import av  # noqa: F401
    except ImportError as e:
        raise VideoDependencyError(
            "video support needs PyAV: install it with `pip install av` (ComfyUI ships it)") from e
    return av


def _container_kind(path: Path) -> str:
    ext = path.suffix.lower()
    kinds = {".webm": "webm", ".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "mkv"}
    if ext not in kinds:
        raise ValueError(f"output {path}: unsupported video container {ext!r}; use .webm, .mp4, .mov or .mkv")
    return kinds[ext]


def _codec_available(av, name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:
        return False


def _add_video_stream(av, out, kind: str, rate: Fraction, width: int, height: int, time_base, alpha: bool):
    if kind in ("webm", "mkv") or alpha:
        if alpha and kind not in ("webm", "mkv"):
            raise ValueError("a transparent video needs a .webm (or .mkv) output; give --background #RRGGBB for MP4")
        stream = out.add_stream("libvpx-vp9", rate=rate)
        stream.pix_fmt = "yuva420p" if alpha else "yuv420p"
        # alt-ref frames drop the alpha plane in libvpx; constant quality keeps the file small but clean
        stream.options = {"auto-alt-ref": "0", "crf": "24", "b": "0", "row-mt": "1", "deadline": "good", "cpu-used": "4"}
    elif _codec_available(av, "libx264"):
        stream = out.add_stream("libx264", rate=rate)
        odd = width % 2 or height % 2
        stream.pix_fmt = "yuv444p" if odd else "yuv420p"  # 4:2:0 needs even sizes
        stream.options = {"crf": "18", "preset": "medium"}
    else:
        stream = out.add_stream("mpeg4", rate=rate)
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 8_000_000
    stream.width, stream.height = width, height
    if time_base is not None and (stream.codec_context.name != "mpeg4" or time_base.denominator < 65536):
        stream.codec_context.time_base = time_base
    return stream


def _add_audio_stream(av, out, kind: str, astream):
    name = astream.codec_context.name
    ok = _REMUX_AUDIO.get(kind)
    if ok is None or name in ok:
        try:
            return out.add_stream_from_template(astream), f"copied ({name})", False
        except Exception as e:  # the container refuses this codec as-is: transcode below
            log.info("ben_core: audio (%s) cannot be copied into %s, transcoding: %s", name, kind, e)
    codec, rate = _TRANSCODE_AUDIO[kind]
    if not _codec_available(av, codec):
        codec = "opus" if codec == "libopus" else codec
    s = out.add_stream(codec, rate=rate or astream.codec_context.sample_rate or 48000)
    try:
        s.layout = astream.codec_context.layout.name
    except Exception as e:  # an unnamed layout: the encoder's default (stereo) is used
        log.info("ben_core: audio layout not carried over: %s", e)
    return s, f"transcoded ({name} -> {codec})", True


def _frame_batches(inp, vin, ain, rate: Fraction, batch_size: int, on_audio: Callable) -> Iterator[list]:
    """Demux ``inp``: audio packets of ``ain`` go to ``on_audio(packet)`` as they come, decoded video
    frames of ``vin`` are yielded in lists of ``batch_size`` (the last one shorter). Frames without a
    timestamp get one from the frame rate."""
    pending: list = []
    next_pts = 0
    for packet in inp.demux([vin] + ([ain] if ain is not None else [])):
        if packet.stream.type != "video":
            on_audio(packet)
            continue
        for frame in packet.decode():
            if frame.pts is None:
                frame.pts = next_pts
                frame.time_base = 1 / rate
            next_pts = frame.pts + 1
            pending.append(frame)
            if len(pending) >= batch_size:
                yield pending
                pending = []
    if pending:
        yield pending


class _Output:
    """The output container: a video stream encoded from numpy frames and, if the input has audio, its
    first audio stream (packets copied, or decoded and re-encoded where the container needs it)."""

    def __init__(self, av, path: Path, kind: str, vin, ain, rate: Fraction, alpha: bool):
        self.av = av
        self.container = av.open(str(path), "w")
        try:
            self.video = _add_video_stream(av, self.container, kind, rate, vin.codec_context.width,
                                           vin.codec_context.height, vin.time_base, alpha)
            self.audio, self.audio_desc, self.transcode = None, None, False
            if ain is not None:
                self.audio, self.audio_desc, self.transcode = _add_audio_stream(av, self.container, kind, ain)
        except BaseException:
            self.container.close()
            raise

    def mux_audio(self, packet) -> None:
        if self.audio is None:
            return
        if not self.transcode:
            if packet.dts is not None:
                packet.stream = self.audio
                self.container.mux(packet)
            return
        for af in packet.decode():
            self.container.mux(self.audio.encode(af))

    def write(self, sources: list, data: np.ndarray, fmt: str) -> None:
        """Encode ``data`` (uint8 ``[n, H, W, C]`` frames of pixel format ``fmt``) with the timestamps of
        the decoded ``sources``."""
        for src_frame, arr in zip(sources, data):
            vf = self.av.VideoFrame.from_ndarray(arr, format=fmt)
            vf.pts, vf.time_base = src_frame.pts, src_frame.time_base
            self.container.mux(self.video.encode(vf))

    def finish(self) -> None:
        """Flush the encoders (the container is closed by :meth:`close`)."""
        self.container.mux(self.video.encode(None))
        if self.audio is not None and self.transcode:
            self.container.mux(self.audio.encode(None))

    def close(self) -> None:
        self.container.close()


def is_complete_video(path: str | Path) -> bool:
    """Whether ``path`` is a video file PyAV opens with at least one video stream (what a resumed job
    accepts as done; our own files only appear when complete)."""
    p = Path(path)
    try:
        if not p.is_file() or p.stat().st_size == 0:
            return False
        av = _import_av()
        with av.open(str(p)) as container:
            return len(container.streams.video) > 0
    except Exception:  # unreadable / truncated / no PyAV: not done
        return False


def remove_background_video(
    predictor,
    src: str | Path,
    dst: str | Path,
    *,
    background: tuple[float, float, float] | None = None,
    batch_size: int = 4,
    refine_foreground: bool = False,
    mask_only: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    temporal=False,
) -> VideoInfo:
    """Remove the background of every frame of ``src`` and write ``dst``.

    predictor: a ``BENPredictor`` (the pipeline runs on its device).
    background: None -> transparent output (``dst`` must be .webm/.mkv: VP9, yuva420p); (r, g, b)
      floats 0..1 -> composited over that colour (.mp4 H.264, or .webm/.mkv VP9 without alpha).
    batch_size: frames per network batch (memory holds at most this many decoded frames).
    refine_foreground: blur-fusion foreground colours (ben_core.foreground.estimate_foreground).
    mask_only: write the alpha matte as a greyscale video instead.
    temporal: False (per-frame mattes), True (steadied with ben_core.temporal's defaults) or a
      ``ben_core.temporal.StabilizerOptions``; the stabiliser's state runs through the whole clip.
    progress(done_frames, total_frames_or_None) after each batch; should_stop() before each batch
      (see ben_core.callbacks; the partial output file is removed).
    Returns a VideoInfo. Raises VideoDependencyError without PyAV, ValueError for unusable inputs.
    """
    from .pipeline import CutoutOptions, CutoutPipeline

    av = _import_av()
    src, dst = Path(src), Path(dst)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    kind = _container_kind(dst)
    if mask_only and background is not None:
        raise ValueError("mask_only writes the alpha matte; do not give a background colour too")
    pipeline = CutoutPipeline(predictor, CutoutOptions(foreground=refine_foreground and not mask_only,
                                                       background=background, image=not mask_only))
    fmt = "rgb24" if mask_only or background is not None else "rgba"
    stabilizer = None
    if temporal:
        from .temporal import AlphaStabilizer, StabilizerOptions

        stabilizer = AlphaStabilizer(temporal if isinstance(temporal, StabilizerOptions) else None)

    inp = av.open(str(src))
    try:
        if not inp.streams.video:
            raise ValueError(f"{src}: no video stream")
        vin = inp.streams.video[0]
        ain = inp.streams.audio[0] if inp.streams.audio else None
        vin.thread_type = "AUTO"
        rate = vin.average_rate or vin.guessed_rate or vin.base_rate or Fraction(30)
        total = vin.frames or None
        width, height = vin.codec_context.width, vin.codec_context.height
        dst.parent.mkdir(parents=True, exist_ok=True)
        partial = temporary_path(dst)  # renamed to dst only when complete
        out, frames_done, ok = None, 0, False
        try:
            out = _Output(av, partial, kind, vin, ain, rate, alpha=fmt == "rgba")
            for frames in _frame_batches(inp, vin, ain, rate, batch_size, out.mux_audio):
                rgb = np.stack([f.to_ndarray(format="rgb24") for f in frames])
                if rgb.shape[1:3] != (height, width):
                    raise ValueError(f"{src}: frame size changed mid-stream ({rgb.shape[2]}x{rgb.shape[1]})")
                cut = pipeline.run(rgb, batch_size=batch_size, should_stop=should_stop, out_dtype=torch.uint8,
                                   stabilizer=stabilizer)
                # the matte as grey RGB frames, or the cut-out
                out.write(frames, np.repeat(cut.alpha.numpy()[..., None], 3, axis=-1) if mask_only
                          else cut.image.numpy(), fmt)
                frames_done += len(frames)
                if progress is not None:
                    progress(frames_done, total)
            out.finish()
            if frames_done == 0:
                raise ValueError(f"{src}: no decodable video frames")
            ok = True
        finally:
            if out is not None:
                out.close()
            if ok:
                os.replace(partial, dst)
            elif os.path.lexists(partial):  # never a half-written file, under any name
                os.unlink(partial)
    finally:
        inp.close()
    return VideoInfo(frames=frames_done, fps=Fraction(rate), width=width, height=height, audio=out.audio_desc,
                     path=dst)
