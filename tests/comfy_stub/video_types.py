"""A stand-in for a 2026 core's VIDEO file type: ``comfy_api.latest.InputImpl.VideoFromFile`` with the
crop and trim it carries, written for these tests after Comfy-Org/ComfyUI's
``comfy_api/latest/_input_impl/video_types.py`` @ 0c6cfff61c0a77fa004b5a96df082c594401990a (also the same
in 2802bf9551c8dea95c7d4607d2412e3d955e9f86), ``comfy_api/latest/_input/video_types.py`` and
``comfy_api/latest/_util/video_types.py`` @ df63641786f497f181b847d5893c3788223f3180 (own code, same rules):

* the edits live in the object's private state (``_VideoFromFile__start_time``, ``__duration``,
  ``__crop``); ``as_cropped`` / ``as_trimmed`` return a new VideoFromFile of the *same* file;
* ``get_stream_source()`` is that file, unedited; ``has_pending_frame_edits()`` is not overridden, so it
  answers the base class's False even for a cropped VIDEO (the stored cores' behaviour);
  ``get_active_trim_window()`` reports the trim; ``get_dimensions()`` the cropped size;
* crop rectangles are normalised as core does (clamped to the frame, even x/y/width/height; a whole-frame
  or empty rectangle is no crop); a crop of a cropped VIDEO is relative to the first one;
* ``save_to`` renders the edits as core's transcoding path does: the frames with ``start_pts <= pts <
  end_pts``, cropped, re-encoded with H.264 (``crf`` / ``preset`` passed to the encoder, ``crf=0``
  lossless), timestamps rebased to 0; audio from ``start_time`` on, capped at ``duration``, as AAC.

:class:`LaterVideoFromFile` is a later core's (whose tests expect ``as_cropped(...)
.has_pending_frame_edits() is True``): the same class with the method answering for its crop. Not
covered here: rotated sources (core crops after rotating).

:class:`VideoFromComponents` (Create Video) and :class:`VideoFromList` (Concatenate Video) as in
``_input_impl/video_types.py`` @ 0c6cfff: neither overrides ``get_stream_source``, so the base class's
(``_input/video_types.py`` @ df63641) ``save_to(BytesIO())`` with the defaults runs: an H.264 MP4 in memory,
encoded without ``crf`` (lossy). ``VideoFromList`` saves every chunk that is not a VideoFromFile to an
in-memory MKV (core's ``__init__``); its ``save_to`` here always re-encodes (core copies packets when the
chunks match and no ``crf`` is asked, re-encodes otherwise: with ``crf=0``, as the pack asks, both agree).
Every ``save_to`` is recorded in ``saves`` as ``(where, crf)``, ``where`` "memory" or the path.
"""
from __future__ import annotations

import io
import math
import os
from fractions import Fraction
from typing import Optional

import av
import numpy as np


def normalize_crop_rect(x, y, width, height, source_width, source_height) -> Optional[tuple]:
    """``(x, y, w, h)`` inside a ``source_width x source_height`` frame with even x, y, w, h (what 4:2:0
    encoding needs); None for an empty rectangle or one that covers the whole frame."""
    if int(width) <= 0 or int(height) <= 0:
        return None
    x = min(max(int(x), 0), source_width - 1)
    y = min(max(int(y), 0), source_height - 1)
    x, y = x - x % 2, y - y % 2
    w, h = min(int(width), source_width - x), min(int(height), source_height - y)
    if (x, y, w, h) == (0, 0, source_width, source_height):
        return None
    w, h = w - w % 2, h - h % 2
    return None if w <= 0 or h <= 0 else (x, y, w, h)


class VideoInput:
    """The parts of core's ``VideoInput`` base class these tests need (``get_stream_source``: the base's
    default, an in-memory MP4 from ``save_to`` with the defaults)."""

    def get_stream_source(self):
        buffer = io.BytesIO()
        self.save_to(buffer)
        buffer.seek(0)
        return buffer

    def has_pending_frame_edits(self) -> bool:
        return False

    def get_active_trim_window(self) -> tuple:
        return 0.0, 0.0


class VideoFromFile(VideoInput):
    """A 2026 core's VideoFromFile (see the module docstring)."""

    def __init__(self, file, *, start_time: float = 0, duration: float = 0, crop: Optional[tuple] = None):
        self.__file = file
        self.__start_time = start_time
        self.__duration = duration
        self.__crop = crop

    # -- the file, its size and length
    def get_stream_source(self):
        if isinstance(self.__file, io.BytesIO):
            self.__file.seek(0)
        return self.__file

    def _open(self):
        return av.open(self.get_stream_source(), mode="r")

    def _display_dimensions(self) -> tuple:
        with self._open() as c:
            vs = c.streams.video[0]
            return vs.width, vs.height  # (rotated sources are not covered by this stand-in)

    def _raw_duration(self) -> float:
        with self._open() as c:
            if c.duration is not None:
                return float(c.duration / av.time_base)
            vs = c.streams.video[0]
            return float(vs.frames / vs.average_rate)

    def get_active_trim_window(self) -> tuple:
        start = self.__start_time
        if start < 0:
            start = max(self._raw_duration() + start, 0.0)
        return float(start), float(self.__duration)

    def get_dimensions(self) -> tuple:
        width, height = self._display_dimensions()
        if self.__crop is None:
            return width, height
        rect = normalize_crop_rect(*self.__crop, width, height)
        return (rect[2], rect[3]) if rect is not None else (width, height)

    def get_duration(self) -> float:
        raw = self._raw_duration()
        left = min(raw, -self.__start_time) if self.__start_time < 0 else raw - self.__start_time
        return min(self.__duration, left) if self.__duration else left

    # -- edits: new VIDEOs of the same file
    def as_trimmed(self, start_time: float = 0, duration: float = 0, strict_duration: bool = True):
        trimmed = type(self)(self.get_stream_source(), start_time=start_time + self.__start_time,
                             duration=duration, crop=self.__crop)
        if strict_duration and duration and trimmed.get_duration() < duration:
            return None
        return trimmed

    def as_cropped(self, x: int = 0, y: int = 0, width: int = 0, height: int = 0):
        if int(width) <= 0 or int(height) <= 0:
            return self
        dw, dh = self._display_dimensions()
        outer = normalize_crop_rect(*self.__crop, dw, dh) if self.__crop is not None else None
        if outer is None:
            rect = normalize_crop_rect(x, y, width, height, dw, dh)
        else:
            inner = normalize_crop_rect(x, y, width, height, outer[2], outer[3])
            rect = None if inner is None else (outer[0] + inner[0], outer[1] + inner[1], inner[2], inner[3])
        if rect is None:
            return self
        return type(self)(self.get_stream_source(), start_time=self.__start_time, duration=self.__duration,
                          crop=rect)

    # -- rendering the edits
    def save_to(self, path, format="auto", codec="auto", metadata=None, bit_depth=None, crf=None,
                color_space=None, preset=None):
        """Write the edited clip to ``path`` (.mp4 or .mkv): H.264 video, AAC audio (see the module
        docstring). A half-written file is removed when it fails (or is interrupted)."""
        ext = os.path.splitext(str(path))[1].lower()
        muxer = {".mp4": "mp4", ".mkv": "matroska"}.get(ext)
        if muxer is None:
            raise ValueError(f"the stand-in writes .mp4 or .mkv, not {ext!r}")
        start, duration = self.get_active_trim_window()
        out = None
        try:
            with self._open() as inp:
                vin = inp.streams.video[0]
                ain = next((s for s in reversed(inp.streams.audio) if s.codec_context is not None), None)
                tb = vin.time_base
                start_pts = int(start / tb)
                end_pts = int((start + duration) / tb) if duration else None
                if start_pts:
                    inp.seek(start_pts, stream=vin)
                rate = Fraction(vin.average_rate) if vin.average_rate else Fraction(1)
                pix_fmt = "yuv420p10le" if (bit_depth or 8) >= 10 else "yuv420p"
                crop, crop_graph, offset, last_pts = None, None, None, None
                resampler = av.AudioResampler(format="fltp", layout="stereo" if ain is None or
                                              ain.codec_context.channels != 1 else "mono",
                                              rate=ain.codec_context.sample_rate if ain is not None else 44100)
                sample_rate = ain.codec_context.sample_rate if ain is not None else 0
                cap = math.ceil(duration * sample_rate) if duration and ain is not None else None
                written, audio_started, pending = 0, False, []
                vout = aout = None
                video_done = False
                for packet in inp.demux(*[s for s in (vin, ain) if s is not None]):
                    if packet.stream.type == "video":
                        if video_done:
                            continue
                        for frame in packet.decode():
                            if frame.pts is not None and frame.pts < start_pts:
                                continue
                            if end_pts is not None and frame.pts is not None and frame.pts >= end_pts:
                                video_done = True
                                break
                            if out is None:
                                w, h = frame.width, frame.height
                                if self.__crop is not None:
                                    crop = normalize_crop_rect(*self.__crop, w, h)
                                if crop is None and (w % 2 or h % 2):
                                    crop = (0, 0, w - w % 2, h - h % 2)
                                ow, oh = (crop[2], crop[3]) if crop is not None else (w, h)
                                out = av.open(str(path), mode="w", format=muxer)
                                vout = out.add_stream("libx264", rate=rate)
                                vout.width, vout.height, vout.pix_fmt = ow, oh, pix_fmt
                                options = {}
                                if crf is not None:
                                    options["crf"] = str(crf)
                                if preset is not None:
                                    options["preset"] = preset
                                vout.options = options
                                vout.codec_context.max_b_frames = 0
                                vout.codec_context.time_base = tb
                                if ain is not None:
                                    aout = out.add_stream("aac", rate=sample_rate, layout=resampler.layout.name)
                                if crop is not None:
                                    g = av.filter.Graph()
                                    src = g.add_buffer(width=w, height=h, format=frame.format.name, time_base=tb)
                                    cut = g.add("crop", f"{crop[2]}:{crop[3]}:{crop[0]}:{crop[1]}")
                                    sink = g.add("buffersink")
                                    src.link_to(cut)
                                    cut.link_to(sink)
                                    g.configure()
                                    crop_graph = (src, sink)
                            if crop_graph is not None:
                                crop_graph[0].push(frame)
                                frame = crop_graph[1].pull()
                            frame = frame.reformat(format=pix_fmt)
                            offset = frame.pts if offset is None else offset
                            frame.pts -= offset
                            if last_pts is not None and frame.pts <= last_pts:
                                frame.pts = last_pts + 1
                            last_pts = frame.pts
                            frame.time_base = tb
                            frame.pict_type = 0
                            for p in vout.encode(frame):
                                out.mux(p)
                    elif ain is not None:
                        for decoded in packet.decode():
                            for frame in resampler.resample(decoded):
                                t0 = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
                                data = frame.to_ndarray()
                                if not audio_started:
                                    skip = max(0, int((start - t0) * sample_rate))
                                    if skip >= data.shape[-1]:
                                        continue
                                    data, audio_started = data[..., skip:], True
                                pending.append(data)
                    if video_done and (ain is None or (cap is not None and sum(d.shape[-1] for d in pending) >= cap)):
                        break
                if out is None:
                    raise ValueError("no decodable video frames in the window")
                for p in vout.encode(None):
                    out.mux(p)
                if aout is not None and pending:
                    samples = np.concatenate(pending, axis=-1)
                    if cap is not None:
                        samples = samples[..., :cap]
                    for first in range(0, samples.shape[-1], 1024):
                        chunk = np.ascontiguousarray(samples[..., first:first + 1024]).astype(np.float32)
                        af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=resampler.layout.name)
                        af.sample_rate, af.pts, af.time_base = sample_rate, written, Fraction(1, sample_rate)
                        written += chunk.shape[-1]
                        for p in aout.encode(af):
                            out.mux(p)
                    for p in aout.encode(None):
                        out.mux(p)
        except BaseException:
            if out is not None:
                out.close()
                if os.path.exists(str(path)):
                    os.remove(str(path))
            raise
        out.close()


class LaterVideoFromFile(VideoFromFile):
    """A later core's VideoFromFile: ``has_pending_frame_edits()`` answers True for a cropped VIDEO (its own
    edits; a trim is still only reported through ``get_active_trim_window()``)."""

    def has_pending_frame_edits(self) -> bool:
        return self._VideoFromFile__crop is not None


def _h264_options(crf, preset) -> dict:
    """core's ``video_encoder_options`` for H.264: ``crf`` / ``preset`` only when given."""
    options = {}
    if crf is not None:
        options["crf"] = str(int(crf)) if float(crf).is_integer() else str(crf)
    if preset is not None:
        options["preset"] = str(preset)
    return options


def _encode_frames(path, frames, rate, crf, preset, muxer="mp4"):
    """Encode ``[H, W, 3]`` uint8 frames as H.264 (yuv420p) into ``path`` (a path or a BytesIO)."""
    frames = list(frames)
    with av.open(path, mode="w", format=muxer) as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = _h264_options(crf, preset)
        for img in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                                  .reformat(format="yuv420p")))
        out.mux(stream.encode(None))


class VideoFromComponents(VideoInput):
    """A 2026 core's VideoFromComponents (Create Video): frames ``[N, H, W, 3]`` float 0..1 (torch) and a
    frame rate; no ``get_stream_source`` of its own (see the module docstring)."""

    def __init__(self, images, frame_rate=Fraction(12)):
        self.__images = images
        self.__frame_rate = Fraction(frame_rate)
        self.saves = []

    def get_components(self):
        return self.__images, self.__frame_rate

    def get_dimensions(self) -> tuple:
        return int(self.__images.shape[2]), int(self.__images.shape[1])

    def save_to(self, path, format="auto", codec="auto", metadata=None, bit_depth=None, crf=None,
                color_space=None, preset=None):
        self.saves.append(("memory" if isinstance(path, io.BytesIO) else str(path), crf))
        frames = ((img * 255).clamp(0, 255).byte().cpu().numpy() for img in self.__images)
        muxer = "matroska" if str(format) in ("mkv", "VideoContainer.MKV") else "mp4"
        _encode_frames(path, frames, Fraction(round(self.__frame_rate * 1000), 1000), crf, preset, muxer)


class VideoFromList(VideoInput):
    """A 2026 core's VideoFromList (Concatenate Video; see the module docstring)."""

    def __init__(self, videos):
        self.videos = []
        for video in videos:
            if isinstance(video, VideoFromList):
                self.videos.extend(video.videos)
            elif not isinstance(video, VideoFromFile):
                buffer = io.BytesIO()
                video.save_to(buffer, format="mkv")
                self.videos.append(VideoFromFile(buffer))
            else:
                self.videos.append(video)
        self.saves = []

    def get_dimensions(self) -> tuple:
        return self.videos[0].get_dimensions()

    def save_to(self, path, format="auto", codec="auto", metadata=None, bit_depth=None, crf=None,
                color_space=None, preset=None):
        self.saves.append(("memory" if isinstance(path, io.BytesIO) else str(path), crf))

        def frames():
            for video in self.videos:
                with av.open(video.get_stream_source()) as c:
                    for frame in c.decode(video=0):
                        yield frame.to_ndarray(format="rgb24")

        with av.open(self.videos[0].get_stream_source()) as c:
            rate = Fraction(c.streams.video[0].average_rate or 12)
        _encode_frames(path, frames(), rate, crf, preset)
