"""Remove Video Background node: BEN_MODEL + VIDEO -> VIDEO, streamed.

The clip is decoded, cut out and encoded a few frames at a time (:func:`ben_core.video.remove_background_video`):
no IMAGE batch of the whole clip is ever made, so memory does not grow with its length. The result is written
once, in the chosen format, into ComfyUI's output folder (or the temp folder for a preview), and passed on
as a VIDEO of that file. Audio, frame timing (variable frame rates too) and orientation are kept; Cancel
leaves no file behind. A trimmed or cropped VIDEO of a newer core is read with its edits (:mod:`.video_input`).

Why our own save: core's Save Video writes MP4 (H.264 or a stream copy into .mp4), which has no alpha channel,
so a transparent VIDEO saved with it loses its alpha; this node's file keeps it.
"""
from __future__ import annotations

import logging

from ..ben_core import video as ben_video
from ..ben_core.io.video_writers import check_format
from ..ben_core.model.ben2 import BENBase
from . import catalogue, comfy_env, widgets
from .comfy_env import io
from .video_input import stream_source

#: Formats the node writes (a PNG sequence is not a VIDEO: use the CLI, or Remove Background + Save Image).
NODE_FORMATS = ["webm", "mov", "mp4"]
#: Formats the browser plays, so the node shows a preview of them.
_PREVIEWABLE = {"webm", "mp4"}

log = logging.getLogger("ComfyUI-BEN2")


class BEN2RemoveVideoBackground(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_env.schema(
            **catalogue.REMOVE_VIDEO_BACKGROUND.schema_names(),
            category=widgets.CATEGORY,
            description=(
                "Removes the background of a whole video with BEN2, streamed a few frames at a time: memory stays "
                "flat however long the clip. Writes the result once (webm = VP9 with alpha, plays in browsers; "
                "mov = ProRes 4444 with alpha, what DaVinci Resolve, Premiere and After Effects import; mp4 = over "
                "a colour) into the output folder and passes it on as a VIDEO. Keeps audio, frame timing and "
                "orientation. Do not re-save a transparent result with core's Save Video: it writes MP4, which "
                "has no alpha."),
            search_aliases=widgets.SEARCH_ALIASES + ["video matting", "remove video background"],
            inputs=[
                widgets.BEN_MODEL.Input("ben_model", tooltip="The network from Load BEN (BEN2)."),
                io.Video.Input("video", tooltip="The clip, e.g. from core's Load Video. It is read as a stream, "
                                                "never loaded whole."),
                io.Combo.Input("video_format", options=NODE_FORMATS, default="webm",
                               tooltip="webm: VP9 with alpha (small, previews in the browser, read by Blender, OBS, "
                                       "ffmpeg). mov: ProRes 4444 with alpha (large; the format editors import, no "
                                       "browser preview). mp4: H.264 over background_colour (needs output_mode RGB "
                                       "or matte_only; an odd width/height is padded by one pixel to stay 4:2:0)."),
                widgets.output_mode_input(),
                widgets.background_colour_input(),
                widgets.refine_foreground_input(),
                io.Boolean.Input("matte_only", default=False,
                                 tooltip="Write the matte (grey, white = foreground) instead of the cut-out, e.g. "
                                         "as a luma matte for an editor."),
                io.Boolean.Input("temporal_stabilize", default=True,
                                 tooltip="Steady the matte from frame to frame, following the motion: damps "
                                         "flicker at hair and soft edges on still and moving shots, without lag "
                                         "(see temporal_mode)."),
                io.Boolean.Input("save_output", default=True,
                                 tooltip="On: write into ComfyUI's output folder. Off: a preview in the temp "
                                         "folder (emptied when ComfyUI starts)."),
                io.String.Input("filename_prefix", default="video/BEN2",
                                tooltip="Name of the saved file: <prefix>_00001_.<format>, numbered like Save "
                                        "Video; may hold a sub-folder and %date%-style variables."),
                comfy_env.advanced(io.Int.Input(
                    "batch_size", default=4, min=1, max=64,
                    tooltip="Frames per network call, and the most frames held in memory at once. Larger is "
                            "faster on a big GPU and needs more VRAM (measured: ~0.25 GB more per frame at "
                            f"{BENBase.native_size} in fp16, besides the frames' own full-size tensors).")),
                widgets.working_size_input("The output is always at the video's size."),
                comfy_env.advanced(widgets.temporal_mode_input()),
            ],
            outputs=[
                io.Video.Output(display_name="video", tooltip=(
                    "The written file as a VIDEO (other video nodes accept it). Nodes that turn it into IMAGE "
                    "frames (Get Video Components) see the colours without the alpha.")),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, ben_model, video, video_format="webm", output_mode="RGBA", background_colour="#FFFFFF",
                refine_foreground=True, matte_only=False, temporal_stabilize=True, save_output=True,
                filename_prefix="video/BEN2", batch_size=4, working_size=widgets.DEFAULT_WORKING_SIZE,
                temporal_mode="causal"):
        # every check before the slow part
        if video_format not in NODE_FORMATS:
            raise ValueError(f"video_format must be one of {NODE_FORMATS}, got {video_format!r}")
        bg = None if matte_only else widgets.background(output_mode, background_colour)
        try:  # the format's rule is ben_core's; the fix is said in this node's widgets
            check_format(video_format, "matte" if matte_only else ("rgb" if bg is not None else "rgba"),
                         fix="set output_mode to RGB (over background_colour), or video_format to webm or mov "
                             "(both keep the alpha)")
        except ValueError as e:
            raise ValueError(f"video_format {video_format}: {e}") from None
        widgets.check_network_settings(ben_model, batch_size, working_size)
        temporal = widgets.temporal_setting(temporal_stabilize, temporal_mode)
        if not hasattr(video, "get_stream_source"):
            raise TypeError(f"video must be a VIDEO (e.g. from Load Video), got {type(video).__name__}")
        if not str(filename_prefix).strip():
            raise ValueError("filename_prefix is empty: give a name such as video/BEN2")
        try:
            width, height = video.get_dimensions()
        except Exception:  # only used for %width%/%height% in the prefix
            width, height = 0, 0
        target = comfy_env.new_output_file(str(filename_prefix), video_format, temp=not save_output,
                                           width=width, height=height)
        predictor = ben_model.predictor(batch_size=int(batch_size), working_size=int(working_size),
                                        image_hw=(int(height), int(width)) if width and height else None)
        with stream_source(video) as source:
            ben_video.remove_background_video(
                predictor, source, target["path"], video_format=video_format, background=bg,
                batch_size=int(batch_size), refine_foreground=bool(refine_foreground), mask_only=bool(matte_only),
                progress=comfy_env.progress_callback(None), should_stop=comfy_env.should_stop,
                temporal=temporal)
        ref = {k: target[k] for k in ("filename", "subfolder", "type")}
        ui = {"images": [ref], "animated": (True,)} if video_format in _PREVIEWABLE else None
        return io.NodeOutput(comfy_env.video_from_file(target["path"]), ui=ui)
