"""Video background removal, streamed through PyAV and :class:`ben_core.pipeline.CutoutPipeline`.

Frames are decoded, cut out and encoded in batches of ``batch_size``; the clip is never held in memory
(peak memory does not grow with its length). Outputs (see :mod:`ben_core.video_writers`): ProRes 4444
``.mov`` and VP9 ``.webm``/``.mkv`` with alpha, H.264 ``.mp4`` over a colour, numbered PNG sequences, or
the grey matte alone in any of them. Audio (the first track), frame timestamps (variable frame rates
included) are kept. A rotation tag (phone videos) is applied before the network sees the frames, and the
output holds the upright frames, so it displays as the input did. Other streams (subtitles, data, further
audio tracks) are not carried over.

PyAV (``pip install av``; ComfyUI installs it) is an optional dependency of ben_core: it is imported
only when a video is processed, with a clear error when missing.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from . import video_writers

log = logging.getLogger("ben_core")


class VideoDependencyError(ImportError):
    """PyAV is not installed."""


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


def _import_av():
    try:
        import av  # noqa: F401
    except ImportError as e:
        raise VideoDependencyError(
            "video support needs PyAV: install it with `pip install av` (ComfyUI ships it)") from e
    return av


def _frame_batches(inp, vin, ain, rate: Fraction, batch_size: int, on_audio: Callable) -> Iterator[list]:
    """Demux ``inp``: audio packets of ``ain`` go to ``on_audio(packet)`` as they come, decoded video
    frames of ``vin`` are yielded in lists of ``batch_size`` (the last one shorter). A frame without a
    timestamp gets the previous one plus one frame duration, in the stream's time base."""
    pending: list = []
    time_base = vin.time_base or 1 / rate
    step = max(1, int(round(1 / (rate * time_base))))  # one frame in time_base ticks
    next_pts = 0
    for packet in inp.demux([vin] + ([ain] if ain is not None else [])):
        if packet.stream.type != "video":
            on_audio(packet)
            continue
        for frame in packet.decode():
            if frame.pts is None:
                frame.pts, frame.time_base = next_pts, time_base
            next_pts = frame.pts + step
            pending.append(frame)
            if len(pending) >= batch_size:
                yield pending
                pending = []
    if pending:
        yield pending


def _rotation_turns(frame) -> int:
    """Quarter turns counter-clockwise that make ``frame`` upright (its display matrix, as PyAV reads it;
    0 when this PyAV cannot read it). Angles that are not a multiple of 90 degrees are ignored."""
    degrees = getattr(frame, "rotation", 0) or 0
    if degrees % 90:
        log.warning("ben_core: rotation tag of %s degrees is not a multiple of 90: ignored", degrees)
        return 0
    return int(degrees // 90) % 4


def expected_frames(vin) -> int | None:
    """The stream's frame count from its header, or from its duration and frame rate; None if unknown."""
    if vin.frames:
        return int(vin.frames)
    rate = vin.average_rate or vin.guessed_rate
    if vin.duration and vin.time_base and rate:
        return max(int(round(float(vin.duration * vin.time_base * rate))), 1)
    return None


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
      "mov", "mp4", "mkv", "png"; see :mod:`ben_core.video_writers`), by default the one its extension
      names.
    background: None -> transparent output (webm/mkv VP9 with alpha, mov ProRes 4444, RGBA PNGs; MP4 is
      refused); (r, g, b) floats 0..1 -> composited over that colour.
    batch_size: frames per network batch (memory holds at most this many decoded frames).
    refine_foreground: blur-fusion foreground colours (ben_core.foreground.estimate_foreground).
    mask_only: write the alpha matte as grey frames instead.
    temporal: False (per-frame mattes); True or "causal" (steadied with ben_core.temporal's defaults, frame by
      frame); "bidirectional" (a backward pass too: frames are written ``lookahead`` to ``2 * lookahead - 1``
      frames later, memory holds that many); a ``ben_core.temporal.StabilizerOptions`` (causal) or an
      ``AlphaStabilizer`` (used as it is). The stabiliser's state runs through the whole clip.
    progress(done_frames, expected_frames_or_None) after each batch; should_stop() before each batch
      (see ben_core.callbacks; nothing is left under ``dst`` or a temporary name when it stops).
    Returns a VideoInfo. Raises VideoDependencyError without PyAV, ValueError for unusable inputs and
    options (checked before any frame is decoded).
    """
    from .pipeline import CutoutOptions, CutoutPipeline

    av = _import_av()
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
        from .temporal import make_stabilizer

        stabilizer = make_stabilizer(temporal)

    name = getattr(src, "name", None) or ("<video in memory>" if hasattr(src, "read") else str(src))
    try:
        inp = av.open(src if hasattr(src, "read") else str(src))
    except Exception as e:
        raise ValueError(f"{name}: cannot be opened as a video ({type(e).__name__}: {e})") from e
    writer = None
    try:
        if not inp.streams.video:
            raise ValueError(f"{name}: no video stream")
        vin = inp.streams.video[0]
        ain = inp.streams.audio[0] if inp.streams.audio else None
        vin.thread_type = "AUTO"
        rate = vin.average_rate or vin.guessed_rate or vin.base_rate or Fraction(30)
        total = expected_frames(vin)
        if total is None and inp.duration:  # Matroska/WebM headers often give only the container's duration
            total = max(int(round(inp.duration / 1_000_000 * float(rate))), 1)
        dst.parent.mkdir(parents=True, exist_ok=True)
        early_audio: list = []  # audio packets demuxed before the first video frame decides the output's size

        def on_audio(packet) -> None:
            if writer is None:
                early_audio.append(packet)
            else:
                writer.mux_audio(packet)

        held: list = []  # (frame [H, W, 3] uint8, pts) waiting for the stabiliser's steady alpha

        def write(rgb: np.ndarray, alpha, pts: list) -> None:
            """Cut out and encode frames in order (alpha None: predicted now)."""
            cut = pipeline.run(rgb, alpha, batch_size=batch_size, should_stop=should_stop, out_dtype=torch.uint8)
            writer.write(cut.alpha.numpy() if mask_only else cut.image.numpy(), pts, time_base)

        def write_steady(alphas: torch.Tensor) -> None:
            """The next ``len(alphas)`` held frames, with the stabiliser's alpha, a batch at a time."""
            for i in range(0, len(alphas), batch_size):
                part = held[:min(batch_size, len(alphas) - i)]
                del held[:len(part)]
                write(np.stack([f for f, _ in part]), alphas[i:i + len(part)], [p for _, p in part])

        frames_done, turns, size, time_base = 0, 0, None, None
        for frames in _frame_batches(inp, vin, ain, rate, batch_size, on_audio):
            sizes = {(f.height, f.width) for f in frames} | ({size} if size is not None else set())
            if len(sizes) > 1:
                (h0, w0), (h1, w1) = sorted(sizes)[:2]
                raise ValueError(f"{name}: frame size changed mid-stream ({w0}x{h0} and {w1}x{h1}); split the clip "
                                 "where it changes")
            if writer is None:  # the first frame decides the output: size, orientation, colour matrix
                colour = video_writers.colour_family(frames[0])
                matrix = video_writers.swscale_matrix(colour)
                turns = _rotation_turns(frames[0])
                size = (frames[0].height, frames[0].width)
                h, w = size[::-1] if turns % 2 else size
                writer = video_writers.open_writer(av, dst, fmt, mode, w, h, rate, vin.time_base, ain, colour)
                time_base = frames[0].time_base
                for packet in early_audio:
                    writer.mux_audio(packet)
                early_audio.clear()
            rgb = np.stack([f.to_ndarray(format="rgb24", src_colorspace=matrix) for f in frames])
            if turns:
                rgb = np.ascontiguousarray(np.rot90(rgb, turns, axes=(1, 2)))
            pts = [f.pts for f in frames]
            if stabilizer is None:
                write(rgb, None, pts)
            else:  # the steady alpha may come out later than its frame (bidirectional): hold the frames till then
                held.extend(zip(rgb, pts))
                write_steady(pipeline.steady_alpha(rgb, stabilizer, batch_size=batch_size, should_stop=should_stop,
                                                   end_of_clip=False))
            frames_done += len(frames)
            if progress is not None:
                progress(frames_done, total)
        if writer is None:
            raise ValueError(f"{name}: no decodable video frames")
        if stabilizer is not None:
            write_steady(stabilizer.flush())
        if progress is not None and total != frames_done:  # the header's estimate was off: end at 100 %
            progress(frames_done, frames_done)
        audio, (out_w, out_h) = writer.audio_description, writer.size
        writer.commit()
        writer = None
    finally:
        try:
            if writer is not None:
                writer.abort()
        finally:
            inp.close()
    return VideoInfo(frames=frames_done, fps=Fraction(rate), width=out_w, height=out_h, audio=audio, path=dst,
                     format=fmt, rotation=turns * 90)


def is_complete_video(path: str | Path) -> bool:
    """Whether ``path`` is a finished output (a video file with a video stream, or a PNG sequence folder);
    what a resumed job accepts as done: our outputs only appear under their final name when complete."""
    return video_writers.is_complete_output(Path(path))
