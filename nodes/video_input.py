"""Reading a VIDEO input as a stream, with the edits it carries.

A VIDEO from core's Load Video is a file and is streamed as it is. Newer cores' VIDEOs can carry edits that
their file does not contain yet: a trim (``as_trimmed``: ``get_active_trim_window()``), a crop
(``as_cropped``) and, in later cores, other frame edits (``has_pending_frame_edits()``). Their
``get_stream_source()`` is the *unedited* file, so streaming it would cut out the whole, untrimmed frame.

The cores stored as of 2026 (``comfy_api/latest/_input_impl/video_types.py`` @ 0c6cfff / 2802bf9) keep
the crop in the object (``VideoFromFile(file, crop=rect)``) and do not override
``has_pending_frame_edits()``: it answers False for a cropped VIDEO. So the edits are also read from the
object's own state (its ``__crop`` / ``__start_time`` / ``__duration``, read by
:func:`.comfy_env.video_crop` / :func:`.comfy_env.video_trim`), and a VIDEO whose reported size
differs from its stream's is treated as edited too (the test core's own ``VideoFromList.save_to``
makes before it copies a chunk's packets).

An edited VIDEO is rendered by core itself, with its own ``save_to`` (its crop, trim and audio rules
exactly; lossless H.264, ``crf=0``, where the core takes ``crf``) into a temporary MP4 in ComfyUI's temp
folder, streamed, and deleted after the run. A VIDEO without a stream of its own goes the same way: one
made of frames (Create Video: ``VideoFromComponents``) or joined from several (``VideoFromList``), whose
class leaves ``get_stream_source`` to core's base ``VideoInput``, which encodes the whole clip into an
in-memory MP4 without ``crf`` (lossy, and as large as the clip) -- 0.3.64's cannot even do that. A VIDEO
is streamed as it is only when its class gives its own stream: a file on disk, or the in-memory file a
``VideoFromFile`` holds (its original bytes).
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import os
import tempfile
from typing import List, Optional

from ..ben_core.io.files import temporary_path
from . import comfy_env

log = logging.getLogger("ComfyUI-BEN2")

#: What ``save_to`` is asked for when the core takes it: lossless, fast (the file only lives for the run).
LOSSLESS_SAVE = {"crf": 0, "preset": "ultrafast"}


def _ask(video, method: str):
    """``video.<method>()`` or None when it has no such method or asking fails (a Cancel is re-raised)."""
    fn = getattr(video, method, None)
    if not callable(fn):
        return None
    try:
        return fn()
    except Exception as e:
        if comfy_env.is_interrupt(e):
            raise
        log.info("BEN2: could not ask the VIDEO %s() (%s: %s)", method, type(e).__name__, e)
        return None


def pending_edits(video) -> List[str]:
    """The edits ``video`` carries that its stream source lacks, in words (empty: stream it as it is)."""
    edits = []
    if _ask(video, "has_pending_frame_edits"):
        edits.append("frame edits (has_pending_frame_edits)")
    crop = comfy_env.video_crop(video)
    if crop is not None:
        edits.append(f"crop {crop}")
    window = _ask(video, "get_active_trim_window")
    if window is None:  # a core without the method: its own state
        window = comfy_env.video_trim(video) or (0.0, 0.0)
    try:
        start, duration = (float(x) for x in window)
    except (TypeError, ValueError):
        start, duration = 0.0, 0.0
    if start or duration:
        edits.append(f"trim from {start:g} s" + (f" for {duration:g} s" if duration else ""))
    return edits


def has_own_stream(video) -> bool:
    """Whether ``video``'s class gives its own ``get_stream_source`` (``VideoFromFile``: its file or the bytes
    it holds) rather than core's base ``VideoInput``'s, which encodes the clip into a lossy in-memory MP4."""
    owner = next((cls for cls in type(video).__mro__ if "get_stream_source" in vars(cls)), None)
    return owner is not None and owner.__name__ != "VideoInput"


def _size_mismatch(video, source) -> Optional[str]:
    """Words for a VIDEO whose ``get_dimensions()`` is not its stream's size (upright or turned by a
    rotation tag), else None (also when either cannot be read)."""
    reported = _ask(video, "get_dimensions")
    if reported is None:
        return None
    try:
        import av

        with av.open(source) as container:
            stream = container.streams.video[0]
            coded = (int(stream.width), int(stream.height))
    except Exception as e:  # not readable here: ben_core.video reports it properly
        log.info("BEN2: could not read the VIDEO's stream header (%s: %s)", type(e).__name__, e)
        return None
    finally:
        if hasattr(source, "seek"):
            source.seek(0)
    reported = tuple(int(x) for x in reported)
    if reported in (coded, coded[::-1]):
        return None
    return f"size {reported[0]}x{reported[1]} (its stream is {coded[0]}x{coded[1]})"


def _save_kwargs(save_to) -> dict:
    """The lossless options of :data:`LOSSLESS_SAVE` that this core's ``save_to`` takes (0.3.64: none)."""
    try:
        params = inspect.signature(save_to).parameters
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in LOSSLESS_SAVE.items() if k in params}


@contextlib.contextmanager
def stream_source(video):
    """A file path or file object PyAV can open for ``video``, with its edits applied (see the module
    docstring); a temporary file made for it is deleted on leaving, whatever happens."""
    edits = pending_edits(video)
    source = None
    if not edits and not has_own_stream(video):
        edits.append(f"no file of its own ({type(video).__name__})")
    if not edits:
        try:
            source = video.get_stream_source()
        except Exception as e:  # core's VideoInput.get_stream_source on a VIDEO that is not a file
            if comfy_env.is_interrupt(e):
                raise
            log.info("BEN2: the VIDEO has no stream (%s: %s); saving it to a temporary MP4 first",
                     type(e).__name__, e)
        if source is not None:
            mismatch = _size_mismatch(video, source)
            if mismatch is not None:
                edits.append(mismatch)
                source = None
    if source is not None:
        yield source
        return
    if edits:
        log.info("BEN2: the VIDEO carries edits its file does not have, or has no file (%s); core renders it "
                 "losslessly to a temporary MP4 first", "; ".join(edits))
    folder = comfy_env.temp_directory() or tempfile.gettempdir()
    os.makedirs(folder, exist_ok=True)
    path = temporary_path(os.path.join(folder, "ben2_video_input.mp4"))
    try:
        try:
            video.save_to(str(path), **_save_kwargs(video.save_to))
        except Exception as e:
            if comfy_env.is_interrupt(e):
                raise
            raise ValueError(f"the VIDEO input could not be read as a stream nor saved as a file "
                             f"({type(e).__name__}: {e}); save it with Save Video and load that file with "
                             "Load Video") from e
        yield str(path)
    finally:
        if os.path.lexists(path):
            os.unlink(path)
