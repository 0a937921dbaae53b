"""Reading video files with PyAV: decoded frames in batches, audio packets passed on, rotation tags.

PyAV (``pip install av``; ComfyUI installs it) is an optional dependency of ben_core: :func:`import_av`
imports it only when a video is processed, with a clear error when missing.
"""
from __future__ import annotations

import logging
from fractions import Fraction
from typing import Callable, Iterator

log = logging.getLogger("ben_core")

__all__ = ["VideoDependencyError", "import_av", "frame_batches", "rotation_turns", "expected_frames", "frame_rate"]


class VideoDependencyError(ImportError):
    """PyAV is not installed."""


def import_av():
    """The ``av`` module (PyAV); VideoDependencyError naming the install command when it is missing."""
    try:
        import av  # noqa: F401
    except ImportError as e:
        raise VideoDependencyError(
            "video support needs PyAV: install it with `pip install av` (ComfyUI ships it)") from e
    return av


def frame_rate(vin) -> Fraction:
    """A video stream's frame rate: its average, else guessed, else base rate, else 30."""
    return vin.average_rate or vin.guessed_rate or vin.base_rate or Fraction(30)


def frame_batches(inp, vin, ain, rate: Fraction, batch_size: int, on_audio: Callable) -> Iterator[list]:
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


def rotation_turns(frame) -> int:
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
