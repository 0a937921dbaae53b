"""Sockets, widgets and checks the BEN2 nodes share (one definition each: same input, same meaning, every
node). Node modules import from here, never from each other.
"""
from __future__ import annotations

from typing import Optional, Tuple

from ..ben_core.matting.compose import parse_colour
from ..ben_core.matting.temporal import MODES as TEMPORAL_MODES
from ..ben_core.model.ben2 import BENBase
from .comfy_env import advanced, io

CATEGORY = "image/BEN2"
OUTPUT_MODES = ["RGBA", "RGB"]
#: What users type in the node search (2026 cores; older ones ignore it).
SEARCH_ALIASES = ["rembg", "matting", "cut out", "background", "remove background", "bg removal"]

#: The working_size combo's options: the square sizes BEN2 runs at (best first).
WORKING_SIZES = [str(s) for s in BENBase.working_sizes]
#: The working_size combo's default: BEN2's native size.
DEFAULT_WORKING_SIZE = str(BENBase.native_size)

#: The loaded network passed from Load BEN to the other nodes.
BEN_MODEL = io.Custom("BEN_MODEL")


def output_mode_input():
    """The ``output_mode`` combo (RGBA cut-out or RGB over a colour)."""
    return io.Combo.Input("output_mode", options=OUTPUT_MODES, default="RGBA",
                          tooltip="RGBA: transparent cut-out (4 channels; don't feed it to a VAE). RGB: the foreground "
                                  "composited over background_colour (3 channels, works everywhere).")


def background_colour_input():
    """The ``background_colour`` text widget (used in RGB mode)."""
    return io.String.Input("background_colour", default="#FFFFFF",
                           tooltip="Colour behind the foreground in RGB mode: #RRGGBB, #RGB or r,g,b (0-255).")


def refine_foreground_input():
    """The ``refine_foreground`` toggle (foreground colour estimation)."""
    return io.Boolean.Input("refine_foreground", default=True,
                            tooltip="Estimate the true foreground colours (blur fusion, as upstream BEN2's "
                                    "refine_foreground) so semi-transparent edges and hair carry no old-background "
                                    "colour; also extends the subject's colours under transparent pixels, so a resized "
                                    "RGBA cut-out gets no halo. Costs a little time at full resolution. Off: the "
                                    "image's own colours.")


def working_size_input(output_size: str, optional: bool = False):
    """The ``working_size`` combo (advanced): :data:`WORKING_SIZES`, default :data:`DEFAULT_WORKING_SIZE`.
    ``output_size``: the tooltip's last sentence, the size the node's result comes out at."""
    faster = "/".join(s for s in WORKING_SIZES if s != DEFAULT_WORKING_SIZE)
    return advanced(io.Combo.Input(
        "working_size", options=WORKING_SIZES, default=DEFAULT_WORKING_SIZE, optional=optional,
        tooltip=f"Square size the network sees. {DEFAULT_WORKING_SIZE} is BEN2's native size (best quality); "
                f"{faster} are faster with coarser edges. {output_size}"))


def temporal_mode_input():
    """The ``temporal_mode`` combo (advanced, optional, last): how ``temporal_stabilize`` steadies the mask."""
    return io.Combo.Input(
        "temporal_mode", options=list(TEMPORAL_MODES), default="causal", optional=True,
        tooltip="With temporal_stabilize on. causal: each frame's mask is steadied with the frames before it, "
                "following the motion (optical flow; OpenCV needed for moving shots: pip install "
                "opencv-python-headless, else only still parts are steadied). bidirectional: the frames after "
                "it as well (steadier; for renders: frames come out up to 31 frames late and that many are "
                "held in memory).")


def temporal_setting(temporal_stabilize, temporal_mode) -> object:
    """What ``ben_core`` takes as ``temporal`` for the two widgets: False, or the mode's name. Raises
    ValueError naming the widget for an unknown mode, before any slow work."""
    if temporal_mode not in TEMPORAL_MODES:
        raise ValueError(f"temporal_mode must be one of {list(TEMPORAL_MODES)}, got {temporal_mode!r}")
    return temporal_mode if temporal_stabilize else False


def background(output_mode: str, colour_text: str) -> Optional[Tuple[float, float, float]]:
    """The pipeline's background for the output_mode / background_colour widgets: None for RGBA, the
    parsed colour (floats 0..1) for RGB. Raises ValueError naming the widget for a bad value, before
    any slow work."""
    if output_mode not in OUTPUT_MODES:
        raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
    if output_mode == "RGBA":
        return None
    try:
        return parse_colour(colour_text)
    except ValueError as e:
        raise ValueError(f"background_colour: {e}") from None


def check_network_settings(ben_model, batch_size, working_size) -> None:
    """The checks every node that runs BEN2 makes before any slow work: ``working_size`` one of
    :data:`WORKING_SIZES`, ``batch_size`` >= 1, ``ben_model`` from Load BEN. Raises ValueError/TypeError
    naming the widget or socket."""
    if str(working_size) not in WORKING_SIZES:
        raise ValueError(f"working_size must be one of {WORKING_SIZES}, got {working_size!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not hasattr(ben_model, "predictor"):
        raise TypeError(f"ben_model must come from Load BEN (BEN2), got {type(ben_model).__name__}")
