"""Video outputs editors read: the container/codec rules and the writers behind
:func:`ben_core.video.remove_background_video`.

==========  =====================================  ==========================  ===========================
format      transparent cut-out                    over a colour               matte only (grey)
==========  =====================================  ==========================  ===========================
``webm``    VP9 ``yuva420p`` (browsers, Blender,   VP9 ``yuv420p``             VP9 ``yuv420p``
            OBS, ffmpeg; most NLEs ignore alpha)
``mov``     ProRes 4444 ``yuva444p10le`` (Resolve, ProRes 422 HQ              ProRes 422 HQ
            Premiere, After Effects, Final Cut)
``mp4``     refused: MP4 has no alpha              H.264 ``yuv420p``           H.264 ``yuv420p``
``mkv``     VP9 ``yuva420p``                       VP9 ``yuv420p``             VP9 ``yuv420p``
``png``     folder of numbered RGBA PNGs           RGB PNGs                    greyscale PNGs
==========  =====================================  ==========================  ===========================

Odd sizes (641x479) are written as they are by every format except ``mp4``: 4:2:0 H.264 needs even sizes
(an odd-sized 4:4:4 stream plays in few browsers and players), so the last column/row is repeated to make
them even and the output is one pixel wider/taller (documented; nothing is cropped).

The first audio stream is kept: copied when the container takes its codec, else transcoded (Opus for
WebM/MKV, AAC for MP4/MOV); a PNG sequence gets it as ``<name>.wav`` beside the frames. Frame timestamps
are passed through, so variable frame rates survive in every container (a PNG sequence has only frame
numbers: its timing is the frame rate the caller records).

Every output appears under its final name only when complete: files are written under a hidden temporary
name (:func:`ben_core.io.files.temporary_path`), a PNG sequence into a hidden temporary folder, then renamed.
"""
from __future__ import annotations

import logging
import os
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Optional

import numpy as np

from .files import temporary_path

log = logging.getLogger("ben_core")

#: Output formats and their file extension ("" for the PNG sequence's folder).
VIDEO_FORMATS = {"webm": ".webm", "mov": ".mov", "mp4": ".mp4", "mkv": ".mkv", "png": ""}
#: FFmpeg muxer per format (named, not guessed from the extension: .m4v would pick the iPod muxer).
_MUXERS = {"webm": "webm", "mov": "mov", "mp4": "mp4", "mkv": "matroska"}
_SUFFIX_FORMAT = {".webm": "webm", ".mov": "mov", ".mp4": "mp4", ".m4v": "mp4", ".mkv": "mkv"}
_FILE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".gif", ".avi"}
#: What a frame holds: the RGBA cut-out, RGB over a colour, or the grey matte.
FRAME_MODES = ("rgba", "rgb", "matte")

# audio codecs each container takes as-is (None: nearly everything) and what it transcodes to otherwise
_REMUX_AUDIO = {
    "webm": {"opus", "vorbis"},
    "mp4": {"aac", "mp3", "opus", "ac3", "eac3", "alac", "flac"},
    "mov": {"aac", "mp3", "alac", "ac3", "pcm_s16le", "pcm_s24le", "pcm_s16be", "pcm_s24be", "pcm_s32le",
            "pcm_s32be", "pcm_f32le", "pcm_f32be"},
    "mkv": None,
    "wav": {"pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le"},
}
_TRANSCODE_AUDIO = {"webm": ("libopus", 48000), "mp4": ("aac", None), "mov": ("aac", None),
                    "mkv": ("libopus", 48000), "wav": ("pcm_s16le", None)}


def format_for_path(dst: Path, video_format: Optional[str]) -> str:
    """The output format: ``video_format`` when given (checked against ``dst``'s extension), else the one
    ``dst``'s extension names. ValueError naming the choices otherwise."""
    suffix_fmt = _SUFFIX_FORMAT.get(dst.suffix.lower())
    if video_format is None:
        if suffix_fmt is None:
            raise ValueError(f"output {dst}: unsupported video container {dst.suffix!r}; use .webm, .mov, .mp4 or "
                             ".mkv, or video_format='png' for a PNG sequence (dst is then a folder)")
        return suffix_fmt
    if video_format not in VIDEO_FORMATS:
        raise ValueError(f"video_format must be one of {sorted(VIDEO_FORMATS)}, got {video_format!r}")
    if video_format == "png":
        if suffix_fmt is not None or dst.suffix.lower() in _FILE_SUFFIXES:
            raise ValueError(f"a PNG sequence is written into a folder: give a folder name, not {dst.name!r}")
    elif suffix_fmt != video_format:
        raise ValueError(f"output {dst}: a {video_format} video needs the extension {VIDEO_FORMATS[video_format]}")
    return video_format


def check_format(fmt: str, mode: str, fix: str | None = None) -> None:
    """ValueError naming the fix if ``fmt`` cannot hold frames of ``mode`` (the one place of the rule that MP4
    has no alpha). ``fix``: the remedy in the caller's own words (its options or widgets); default: the
    library's (another format, or a background colour)."""
    if mode not in FRAME_MODES:
        raise ValueError(f"frame mode must be one of {FRAME_MODES}, got {mode!r}")
    if fmt == "mp4" and mode == "rgba":
        raise ValueError("MP4 cannot store transparency: " + (fix or (
            "use .mov (ProRes 4444, what Resolve, Premiere and After Effects import), .webm (VP9 with alpha) or a "
            "PNG sequence, or give a background colour to composite over")))


#: (matrix, primaries, transfer) tags (FFmpeg's AVCOL_* numbers) and the swscale matrix for each family.
_COLOUR = {"bt709": ((1, 1, 1), 1), "bt601": ((6, 6, 6), 5), "bt2020": ((9, 9, 14), 9)}


def colour_family(frame) -> str:
    """The YUV matrix family of a decoded frame: its tag (BT.709, BT.601, BT.2020) or, untagged, what
    players assume: BT.709 from 720 lines up, BT.601 below."""
    spc = getattr(frame, "colorspace", 2)
    if spc == 1:
        return "bt709"
    if spc in (5, 6):
        return "bt601"
    if spc in (9, 10):
        return "bt2020"
    return "bt709" if min(frame.width, frame.height) >= 720 else "bt601"


def swscale_matrix(family: str) -> int:
    """The swscale colorspace constant (``src_colorspace``/``dst_colorspace`` of PyAV's reformat)."""
    return _COLOUR[family][1]


def codec_available(av, name: str) -> bool:
    """Whether this FFmpeg build has the encoder ``name``."""
    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:
        return False


def _add_audio_stream(av, out, kind: str, astream):
    """An output audio stream for ``astream``: (stream, description, transcode?)."""
    name = astream.codec_context.name
    ok = _REMUX_AUDIO.get(kind)
    if ok is None or name in ok:
        try:
            return out.add_stream_from_template(astream), f"copied ({name})", False
        except Exception as e:  # the container refuses this codec as-is: transcode below
            log.info("ben_core: audio (%s) cannot be copied into %s, transcoding: %s", name, kind, e)
    codec, rate = _TRANSCODE_AUDIO[kind]
    if not codec_available(av, codec):
        codec = "opus" if codec == "libopus" else codec
    s = out.add_stream(codec, rate=rate or astream.codec_context.sample_rate or 48000)
    try:
        s.layout = astream.codec_context.layout.name
    except Exception as e:  # an unnamed layout: the encoder's default (stereo) is used
        log.info("ben_core: audio layout not carried over: %s", e)
    return s, f"transcoded ({name} -> {codec})", True


class _AudioTrack:
    """The first input audio stream written into ``container`` (copied packets or re-encoded frames)."""

    def __init__(self, av, container, kind: str, astream):
        self.container = container
        self.stream, self.description, self.transcode = _add_audio_stream(av, container, kind, astream)

    def mux(self, packet) -> None:
        if not self.transcode:
            if packet.dts is not None:
                packet.stream = self.stream
                self.container.mux(packet)
            return
        for frame in packet.decode():
            self.container.mux(self.stream.encode(frame))

    def flush(self) -> None:
        if self.transcode:
            self.container.mux(self.stream.encode(None))


def _video_stream(av, out, fmt: str, mode: str, rate: Fraction, width: int, height: int, time_base):
    """Add the encoder for ``fmt``/``mode`` to the open container ``out``; returns (stream, pixel format
    of the numpy frames it takes)."""
    if fmt in ("webm", "mkv"):
        stream = out.add_stream("libvpx-vp9", rate=rate)
        stream.pix_fmt = "yuva420p" if mode == "rgba" else "yuv420p"
        # alt-ref frames drop the alpha plane in libvpx; constant quality keeps the file small but clean
        stream.options = {"auto-alt-ref": "0", "crf": "24", "b": "0", "row-mt": "1", "deadline": "good",
                          "cpu-used": "4"}
    elif fmt == "mov":
        stream = out.add_stream("prores_ks", rate=rate)
        if mode == "rgba":
            stream.pix_fmt = "yuva444p10le"
            stream.options = {"profile": "4444", "vendor": "apl0", "alpha_bits": "16"}
        else:
            stream.pix_fmt = "yuv422p10le"
            stream.options = {"profile": "hq", "vendor": "apl0"}
    elif codec_available(av, "libx264"):
        stream = out.add_stream("libx264", rate=rate)
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "medium"}
    else:
        stream = out.add_stream("mpeg4", rate=rate)
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 8_000_000
    stream.width, stream.height = width, height
    if time_base is not None and (stream.codec_context.name != "mpeg4" or time_base.denominator < 65536):
        stream.codec_context.time_base = time_base
    return stream, {"rgba": "rgba", "rgb": "rgb24", "matte": "gray"}[mode]


class _AudioCarrier:
    """What both writers do with the input's audio (``self.audio``: an :class:`_AudioTrack` or None)."""

    audio: Optional[_AudioTrack] = None

    @property
    def audio_description(self) -> Optional[str]:
        """How the audio was written ("copied (aac)", "transcoded (...)"), None without audio."""
        return None if self.audio is None else self.audio.description

    def mux_audio(self, packet) -> None:
        """Write one demuxed input audio packet (dropped when the input has no audio track here)."""
        if self.audio is not None:
            self.audio.mux(packet)


class VideoFileWriter(_AudioCarrier):
    """A video file (webm/mov/mp4/mkv) written under a temporary name and renamed to ``dst`` by
    :meth:`commit`; :meth:`abort` removes it. Frames are uint8 numpy ``[n, H, W, C]`` (C = 4 rgba, 3 rgb)
    or ``[n, H, W]`` (matte), at the size given here."""

    def __init__(self, av, dst: Path, fmt: str, mode: str, width: int, height: int, rate: Fraction, time_base,
                 audio_stream=None, colour: str = "bt709"):
        check_format(fmt, mode)
        self.av, self.dst, self.fmt, self.mode = av, Path(dst), fmt, mode
        self.colour = colour
        self.pad = (height % 2, width % 2) if fmt == "mp4" else (0, 0)
        self.size = (width + self.pad[1], height + self.pad[0])  # (width, height) of the written frames
        self.partial = temporary_path(self.dst)
        self.container = av.open(str(self.partial), "w", format=_MUXERS[fmt])
        self.audio = None
        try:
            self.video, self.pix = _video_stream(av, self.container, fmt, mode, rate, *self.size, time_base)
            # tag what the RGB -> YUV conversion below uses, so players and editors decode it the same way
            (spc, pri, trc), _ = _COLOUR[colour]
            ctx = self.video.codec_context
            ctx.colorspace, ctx.color_primaries, ctx.color_trc, ctx.color_range = spc, pri, trc, 1
            if audio_stream is not None:
                self.audio = _AudioTrack(av, self.container, fmt, audio_stream)
        except BaseException:
            self.abort()
            raise

    def write(self, frames: np.ndarray, pts: list, time_base) -> None:
        """Encode ``frames`` with the timestamps ``pts`` (in ``time_base``)."""
        if any(self.pad):
            widths = ((0, 0), (0, self.pad[0]), (0, self.pad[1])) + ((0, 0),) * (frames.ndim - 3)
            frames = np.pad(frames, widths, mode="edge")
        for arr, t in zip(frames, pts, strict=True):
            vf = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format=self.pix)
            vf = vf.reformat(format=self.video.codec_context.pix_fmt, dst_colorspace=swscale_matrix(self.colour))
            vf.pts, vf.time_base = t, time_base
            self.container.mux(self.video.encode(vf))

    def commit(self) -> Path:
        """Flush the encoders, close the file and rename it to ``dst``."""
        try:
            self.container.mux(self.video.encode(None))
            if self.audio is not None:
                self.audio.flush()
            self.container.close()
            os.replace(self.partial, self.dst)
        finally:
            self.abort()
        return self.dst

    def abort(self) -> None:
        """Close and delete the temporary file (a no-op after :meth:`commit`)."""
        try:
            self.container.close()
        except Exception as e:  # closing a broken file: it is deleted below anyway
            log.debug("ben_core: closing %s failed: %s", self.partial, e)
        try:
            if os.path.lexists(self.partial):
                os.unlink(self.partial)
        except OSError as e:  # never hide the error that led here
            log.warning("ben_core: could not remove the temporary file %s: %s", self.partial, e)


def check_replaceable_sequence(dst: Path) -> None:
    """ValueError unless ``dst`` is absent, an empty folder, or a PNG sequence this module wrote (only
    ``<name>_NNNNNN.png`` frames and ``<name>.wav``): a PNG sequence never replaces anything else."""
    if not os.path.lexists(dst):
        return
    if not dst.is_dir() or dst.is_symlink():
        raise ValueError(f"{dst} exists and is not a folder: a PNG sequence is written into a folder of that name; "
                         "move it away or choose another output")
    name = dst.name
    for entry in os.listdir(dst):
        frame = entry.startswith(name + "_") and entry.endswith(".png") and entry[len(name) + 1:-4].isdigit()
        if not (frame or entry == name + ".wav"):
            raise ValueError(f"{dst} already holds other files ({entry!r}): a PNG sequence would replace the whole "
                             "folder; choose another output folder or name")


class PngSequenceWriter(_AudioCarrier):
    """A folder ``dst`` of numbered PNGs ``<name>_000001.png`` ... (RGBA, RGB or greyscale) and, if the
    input has audio, ``<name>.wav``. Written into a hidden temporary folder beside ``dst`` and renamed
    into place by :meth:`commit` (an older folder of that name is replaced only then)."""

    def __init__(self, av, dst: Path, mode: str, width: int, height: int, audio_stream=None,
                 compress_level: int = 1):
        check_format("png", mode)
        check_replaceable_sequence(Path(dst))
        self.av, self.dst, self.mode = av, Path(dst), mode
        self.size = (width, height)
        self.compress_level = int(compress_level)
        self.partial = temporary_path(self.dst)
        self.partial.mkdir(parents=True)
        self.count = 0
        self.audio_container = None
        self.audio = None
        try:
            if audio_stream is not None:
                self.audio_container = av.open(str(self.partial / f"{self.dst.name}.wav"), "w")
                self.audio = _AudioTrack(av, self.audio_container, "wav", audio_stream)
        except BaseException:
            self.abort()
            raise

    def frame_name(self, index: int) -> str:
        """File name of frame ``index`` (1-based)."""
        return f"{self.dst.name}_{index:06d}.png"

    def write(self, frames: np.ndarray, pts: list, time_base) -> None:
        """Write ``frames`` as the next numbered PNGs (timestamps are not stored)."""
        from PIL import Image

        pil_mode = {"rgba": "RGBA", "rgb": "RGB", "matte": "L"}[self.mode]
        for arr in frames:
            self.count += 1
            Image.fromarray(np.ascontiguousarray(arr), mode=pil_mode).save(
                self.partial / self.frame_name(self.count), format="PNG", compress_level=self.compress_level)

    def commit(self) -> Path:
        """Finish the audio file and rename the folder to ``dst``."""
        try:
            if self.audio is not None:
                self.audio.flush()
                self.audio_container.close()
                self.audio_container = None
            check_replaceable_sequence(self.dst)  # still only our frames (checked at the start too)
            old = None
            if os.path.lexists(self.dst):  # replace an earlier run's folder only now that this one is complete
                old = temporary_path(self.dst)
                os.replace(self.dst, old)
            try:
                os.replace(self.partial, self.dst)
            except BaseException:
                if old is not None:  # put the earlier sequence back
                    os.replace(old, self.dst)
                raise
        finally:
            self.abort()
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.dst

    def abort(self) -> None:
        """Delete the temporary folder (a no-op after :meth:`commit`)."""
        if self.audio_container is not None:
            try:
                self.audio_container.close()
            except Exception as e:  # a broken file: deleted below anyway
                log.debug("ben_core: closing the audio of %s failed: %s", self.partial, e)
            self.audio_container = None
        if os.path.lexists(self.partial):
            shutil.rmtree(self.partial, ignore_errors=True)


def open_writer(av, dst: Path, fmt: str, mode: str, width: int, height: int, rate: Fraction, time_base,
                audio_stream=None, colour: str = "bt709"):
    """A :class:`VideoFileWriter` (YUV matrix family ``colour``, tagged) or :class:`PngSequenceWriter` for ``fmt``."""
    if fmt == "png":
        return PngSequenceWriter(av, dst, mode, width, height, audio_stream)
    return VideoFileWriter(av, dst, fmt, mode, width, height, rate, time_base, audio_stream, colour)


def is_complete_output(path: Path) -> bool:
    """Whether ``path`` is a finished output: a video file PyAV opens with a video stream, or a PNG
    sequence folder with at least one frame (our outputs only appear when complete)."""
    p = Path(path)
    try:
        if p.is_dir():
            return any(f.suffix == ".png" for f in p.iterdir())
        if not p.is_file() or p.stat().st_size == 0:
            return False
        import av

        with av.open(str(p)) as container:
            return len(container.streams.video) > 0
    except Exception:  # unreadable / truncated / no PyAV: not done
        return False
