"""Video background removal, streamed through PyAV and :class:`ben_core.pipeline.CutoutPipeline`.

Frames are decoded (:mod:`ben_core.io.video_reader`), cut out and encoded (:mod:`ben_core.io.video_writers`)
in batches of ``batch_size``; the clip is never held in memory (peak memory does not grow with its length).
Outputs: ProRes 4444 ``.mov`` and VP9 ``.webm``/``.mkv`` with alpha, H.264 ``.mp4`` over a colour, numbered
PNG sequences, or the grey matte alone in any of them. Audio (the first track), frame timestamps (variable
frame rates included) are kept. A rotation tag (phone videos) is applied before the network sees the
frames, and the output holds the upright frames, so it displays as the input did. Other streams
(subtitles, data, further audio tracks) are not carried over.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .io import video_writers
from .io.video_reader import VideoDependencyError, expected_frames, frame_batches, frame_rate, import_av, rotation_turns

__all__ = ["VideoDependencyError", "VideoInfo", "remove_background_video"]


@dataclass
class VideoInfo:
    """What was written: frame count, frame rate (average), output size, how audio was handled (None: no
    audio), the path (a folder for a PNG sequence), the format and the rotation applied."""

    frames: int
    fps: Fraction
    width: int
    height: int
    audio: str | None
    path: Path
    format: str = "webm"
    rotation: int = 0  # degrees counter-clockwise applied to the decoded frames (a rotation tag)


def remove_background_video(
    predictor,
    src,
    dst: str | Path,
    *,
    video_format: str | None = None,
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
    src: a video file path, or a binary file object (``io.BytesIO``) holding one.
    dst: the output file, or the folder of a PNG sequence. Its format is ``video_format`` ("webm",
      "mov", "mp4", "mkv", "png"; see :mod:`ben_core.io.video_writers`), by default the one its extension
      names.
    background: None -> transparent output (webm/mkv VP9 with alpha, mov ProRes 4444, RGBA PNGs; MP4 is
      refused); (r, g, b) floats 0..1 -> composited over that colour.
    batch_size: frames per network batch (memory holds at most this many decoded frames).
    refine_foreground: blur-fusion foreground colours (ben_core.matting.foreground.estimate_foreground).
    mask_only: write the alpha matte as grey frames instead.
    temporal: False (per-frame mattes); True or "causal" (steadied with ben_core.matting.temporal's defaults, frame by
      frame); "bidirectional" (a backward pass too: frames are written ``lookahead`` to ``2 * lookahead - 1``
      frames later, memory holds that many); a ``ben_core.matting.temporal.StabilizerOptions`` (causal) or an
      ``AlphaStabilizer`` (used as it is). The stabiliser's state runs through the whole clip.
    progress(done_frames, expected_frames_or_None) after each batch; should_stop() before each batch
      (see ben_core.callbacks; nothing is left under ``dst`` or a temporary name when it stops).
    Returns a VideoInfo. Raises VideoDependencyError without PyAV, ValueError for unusable inputs and
    options (checked before any frame is decoded).
    """
    from .pipeline import CutoutOptions, CutoutPipeline

    av = import_av()
    dst = Path(dst)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if mask_only and background is not None:
        raise ValueError("mask_only writes the alpha matte; do not give a background colour too")
    fmt = video_writers.format_for_path(dst, video_format)
    mode = "matte" if mask_only else ("rgb" if background is not None else "rgba")
    video_writers.check_format(fmt, mode)
    if fmt == "png":
        video_writers.check_replaceable_sequence(dst)
    pipeline = CutoutPipeline(predictor, CutoutOptions(foreground=refine_foreground and not mask_only,
                                                       background=background, image=not mask_only))
    stabilizer = None
    if temporal is not None and temporal is not False:
        from .matting.temporal import make_stabilizer

        stabilizer = make_stabilizer(temporal)

    name = getattr(src, "name", None) or ("<video in memory>" if hasattr(src, "read") else str(src))
    try:
        inp = av.open(src if hasattr(src, "read") else str(src))
    except Exception as e:
        raise ValueError(f"{name}: cannot be opened as a video ({type(e).__name__}: {e})") from e
    job = None
    try:
        if not inp.streams.video:
            raise ValueError(f"{name}: no video stream")
        vin = inp.streams.video[0]
        ain = inp.streams.audio[0] if inp.streams.audio else None
        vin.thread_type = "AUTO"
        rate = frame_rate(vin)
        total = expected_frames(vin)
        if total is None and inp.duration:  # Matroska/WebM headers often give only the container's duration
            total = max(int(round(inp.duration / 1_000_000 * float(rate))), 1)
        dst.parent.mkdir(parents=True, exist_ok=True)
        job = _VideoJob(av, name, dst, fmt, mode, vin, ain, rate, pipeline, stabilizer, batch_size, should_stop)
        for frames in frame_batches(inp, vin, ain, rate, batch_size, job.on_audio):
            job.feed(frames)
            if progress is not None:
                progress(job.frames_done, total)
        info = job.finish()
        job = None
        if progress is not None and total != info.frames:  # the header's estimate was off: end at 100 %
            progress(info.frames, info.frames)
        return info
    finally:
        try:
            if job is not None:
                job.abort()
        finally:
            inp.close()


class _VideoJob:
    """One clip on its way through: the writer (opened by the first frame), audio that came before it, the
    frames held until the stabiliser's steady alpha for them comes out (bidirectional), the count.
    ``vin`` / ``ain``: the input's video and audio (or None) streams, ``rate`` its frame rate."""

    def __init__(self, av, name: str, dst: Path, fmt: str, mode: str, vin, ain, rate: Fraction, pipeline,
                 stabilizer, batch_size: int, should_stop):
        self.av, self.name, self.dst, self.fmt, self.mode = av, name, dst, fmt, mode
        self.vin, self.ain, self.rate = vin, ain, rate
        self.pipeline, self.stabilizer = pipeline, stabilizer
        self.batch_size, self.should_stop = batch_size, should_stop
        self.writer = None
        self.early_audio: list = []  # audio packets demuxed before the first video frame opened the writer
        self.held: list = []         # (frame [H, W, 3] uint8, pts) waiting for their steady alpha
        self.frames_done = 0
        self.size = None
        self.turns = 0
        self.matrix = None
        self.time_base = None

    def on_audio(self, packet) -> None:
        """Mux an audio packet (kept until the writer exists)."""
        if self.writer is None:
            self.early_audio.append(packet)
        else:
            self.writer.mux_audio(packet)

    def _open(self, first) -> None:
        """The first frame decides the output: size, orientation, colour matrix."""
        colour = video_writers.colour_family(first)
        self.matrix = video_writers.swscale_matrix(colour)
        self.turns = rotation_turns(first)
        self.size = (first.height, first.width)
        h, w = self.size[::-1] if self.turns % 2 else self.size
        self.writer = video_writers.open_writer(self.av, self.dst, self.fmt, self.mode, w, h, self.rate,
                                                self.vin.time_base, self.ain, colour)
        self.time_base = first.time_base
        for packet in self.early_audio:
            self.writer.mux_audio(packet)
        self.early_audio.clear()

    def feed(self, frames: list) -> None:
        """Cut out and encode one decoded batch (or hold it for the stabiliser)."""
        sizes = {(f.height, f.width) for f in frames} | ({self.size} if self.size is not None else set())
        if len(sizes) > 1:
            (h0, w0), (h1, w1) = sorted(sizes)[:2]
            raise ValueError(f"{self.name}: frame size changed mid-stream ({w0}x{h0} and {w1}x{h1}); split the "
                             "clip where it changes")
        if self.writer is None:
            self._open(frames[0])
        rgb = np.stack([f.to_ndarray(format="rgb24", src_colorspace=self.matrix) for f in frames])
        if self.turns:
            rgb = np.ascontiguousarray(np.rot90(rgb, self.turns, axes=(1, 2)))
        pts = [f.pts for f in frames]
        if self.stabilizer is None:
            self._write(rgb, None, pts)
        else:  # the steady alpha may come out later than its frame (bidirectional): hold the frames till then
            self.held.extend(zip(rgb, pts, strict=True))
            self._write_steady(self.pipeline.steady_alpha(rgb, self.stabilizer, batch_size=self.batch_size,
                                                          should_stop=self.should_stop, end_of_clip=False))
        self.frames_done += len(frames)

    def _write(self, rgb: np.ndarray, alpha, pts: list) -> None:
        """Cut out and encode frames in order (alpha None: predicted now)."""
        cut = self.pipeline.run(rgb, alpha, batch_size=self.batch_size, should_stop=self.should_stop,
                                out_dtype=torch.uint8)
        self.writer.write(cut.alpha.numpy() if self.mode == "matte" else cut.image.numpy(), pts, self.time_base)

    def _write_steady(self, alphas: torch.Tensor) -> None:
        """The next ``len(alphas)`` held frames, with the stabiliser's alpha, a batch at a time."""
        for i in range(0, len(alphas), self.batch_size):
            part = self.held[:min(self.batch_size, len(alphas) - i)]
            del self.held[:len(part)]
            self._write(np.stack([f for f, _ in part]), alphas[i:i + len(part)], [p for _, p in part])

    def finish(self) -> VideoInfo:
        """Write what the stabiliser still holds and put the output under its final name."""
        if self.writer is None:
            raise ValueError(f"{self.name}: no decodable video frames")
        if self.stabilizer is not None:
            self._write_steady(self.stabilizer.flush())
        audio, (out_w, out_h) = self.writer.audio_description, self.writer.size
        self.writer.commit()
        self.writer = None
        return VideoInfo(frames=self.frames_done, fps=Fraction(self.rate), width=out_w, height=out_h, audio=audio,
                         path=self.dst, format=self.fmt, rotation=self.turns * 90)

    def abort(self) -> None:
        """Leave nothing behind: the writer's temporary output is removed."""
        if self.writer is not None:
            self.writer.abort()
            self.writer = None
