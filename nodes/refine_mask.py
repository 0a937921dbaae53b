"""Refine Mask nodes: refine any mask inside the unknown band of a trimap - Refine Mask (guided filter, or
ViTMatte through its method widget) and Refine Mask with ViTMatte (the same with ViTMatte only, marked
experimental: its quality on real photos is unmeasured here).

Without a trimap input the node makes one per image with ``ben_core.matting.trimap.make_trimap``
(``trimap_source``): ``confidence`` (the BEN paper's confidence trimap), ``band`` (an unknown band of
``band_radius`` pixels around the mask edge, for hard 0/1 masks) or ``auto`` (for a soft mask such as
BEN2's every pixel it is unsure of, 0.03 < mask < 0.97; the band for a hard one: SAM, a painted mask...), so
masks from any node get refined edges.
"""
from __future__ import annotations

from ..ben_core import memory
from ..ben_core.matting.refine import DEFAULT_EPS, METHODS
from ..ben_core.matting.trimap import TRIMAP_SOURCES, snap_trimap
from ..ben_core.pipeline import CutoutOptions, CutoutPipeline, Refinement
from . import catalogue, comfy_env, image_mask, model_cache, widgets
from .comfy_env import io


def _trimap_inputs() -> list:
    """How the trimap is made when none is connected (both nodes)."""
    return [
        io.Combo.Input("trimap_source", options=list(TRIMAP_SOURCES), default="auto",
                       tooltip="Only used when no trimap is connected. confidence: BEN paper trimap of the mask; band: "
                               "unknown band of band_radius px around the mask edge (for hard masks); "
                               "auto (best measured): "
                               "every pixel a soft mask (BEN2) is unsure of, 0.03 < mask < 0.97; band for hard 0/1 "
                               "masks (SAM, painted...)."),
        comfy_env.advanced(io.Int.Input(
            "band_radius", default=0, min=0, max=1024,
            tooltip="Half-width in pixels of the unknown band around the mask edge (band, and auto for hard masks); "
                    "0 = shorter image side / 90 (at least 2 px).")),
    ]


def _cutout_inputs() -> list:
    """The cut-out's colours and background, then the optional trimap socket (both nodes, in this order)."""
    return [
        widgets.refine_foreground_input(),
        widgets.output_mode_input(),
        widgets.background_colour_input(),
        io.Mask.Input("trimap", optional=True,
                      tooltip="Optional trimap (0 = background, 0.5 = unknown, 1 = foreground), e.g. from Show Trimap "
                              "(BEN2). Values are snapped to 0 / 0.5 / 1."),
    ]


#: The mask_working_size combo's options: measure the mask, or the square size BEN2 made it at.
MASK_WORKING_SIZES = ["auto"] + widgets.WORKING_SIZES


def _mask_working_size_input():
    """The ``mask_working_size`` combo (Refine Mask; advanced, optional, last: saved workflows load)."""
    return comfy_env.advanced(io.Combo.Input(
        "mask_working_size", options=MASK_WORKING_SIZES, default="auto", optional=True,
        tooltip="The size of the square map the mask was predicted at, so the guided filter fits its colour "
                "models where the mask's own detail ends. For a mask from Remove Background (BEN2) pick its "
                f"working_size ({widgets.DEFAULT_WORKING_SIZE} by default). auto: read from the mask's edge softness "
                "(SAM, painted and other masks; fuzzy hair can read too soft). Not used by vitmatte."))


def mask_working_size_setting(value) -> "int | None":
    """The ``working_size`` ``ben_core`` takes for the widget value: None for auto, else the int. Raises
    ValueError naming the widget for an unknown value, before any slow work."""
    if str(value) not in MASK_WORKING_SIZES:
        raise ValueError(f"mask_working_size must be one of {MASK_WORKING_SIZES}, got {value!r}")
    return None if str(value) == "auto" else int(value)


def _image_and_mask() -> list:
    return [
        io.Image.Input("image", tooltip="The images the mask belongs to (the guide for the refinement)."),
        io.Mask.Input("mask", tooltip="Mask to refine, 1 = foreground, from any node. One mask for all images or one "
                                      "per image; resized to the image if needed."),
    ]


def _outputs() -> list:
    return [
        io.Mask.Output(display_name="mask", tooltip="Refined alpha at the image size, float 0..1, 1 = foreground."),
        io.Image.Output(display_name="image", tooltip="Cut-out with the refined alpha: RGBA (4 channels; not for a "
                                                      "VAE) or RGB over background_colour."),
    ]


def refine(image, mask, method, radius, eps, trimap_source, band_radius, refine_foreground, output_mode,
           background_colour, trimap, working_size="auto") -> "io.NodeOutput":
    """Both nodes' work: IMAGE ``[B,H,W,C]`` + MASK (+ optional trimap MASK) -> ``(mask [B,H,W], image
    [B,H,W,3|4])``, every image refined on ComfyUI's compute device. ``working_size``: the
    mask_working_size widget's value. Widget values are checked first, before any slow work."""
    bg = widgets.background(output_mode, background_colour)
    size = mask_working_size_setting(working_size)
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if trimap_source not in TRIMAP_SOURCES:
        raise ValueError(f"trimap_source must be one of {list(TRIMAP_SOURCES)}, got {trimap_source!r}")
    image = image_mask.check_image(image)
    alpha = image_mask.match_mask(mask, image)
    if trimap is not None:
        trimap = snap_trimap(image_mask.match_mask(trimap, image, mask_name="trimap", mode="nearest"))
    device = comfy_env.torch_device()  # both methods run per image on ComfyUI's compute device
    hw = tuple(image.shape[1:3])
    if method == "guided":  # no model of ours there: ask core for the room the refinement needs
        comfy_env.reserve(memory.with_margin(memory.refine_bytes(hw)), device)
    refinement = Refinement(method=method, trimap_source=trimap_source, band_radius=int(band_radius) or None,
                            radius=int(radius) or None, eps=float(eps) or None,
                            working_size=size if method == "guided" else None,
                            vitmatte=model_cache.vitmatte_model(device, hw) if method == "vitmatte" else None)
    pipeline = CutoutPipeline(None, CutoutOptions(foreground=bool(refine_foreground), background=bg,
                                                  refine=refinement), device=device)
    cut = pipeline.run(image, alpha, trimap, batch_size=1, progress=comfy_env.progress_callback(image.shape[0]),
                       should_stop=comfy_env.should_stop, out_device=comfy_env.intermediate_device())
    return io.NodeOutput(*comfy_env.node_outputs(cut.alpha, cut.image))


class BEN2RefineMask(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_env.schema(
            **catalogue.REFINE_MASK.schema_names(),
            category=widgets.CATEGORY,
            description=("Refines a mask from any node (BEN2, SAM, a painted mask...) inside the unknown band of a "
                         "trimap: sure foreground/background stay exactly 1/0, only unknown pixels change. 'guided' is "
                         "a colour guided filter (fast, any size); 'vitmatte' (experimental, also its own node) runs "
                         "the ViTMatte matting network (needs the transformers package and downloads hustvl/vitmatte "
                         "weights once). Without a trimap input the node makes one (trimap_source). Also outputs the "
                         "cut-out with re-estimated edge colours."),
            search_aliases=widgets.SEARCH_ALIASES + ["refine", "trimap", "guided filter", "hair"],
            inputs=_image_and_mask() + [
                io.Combo.Input("method", options=list(METHODS), default="guided",
                               tooltip="guided: colour guided filter on the unknown band (fast, CPU or GPU). vitmatte "
                                       "(experimental): the ViTMatte trimap-based matting network, tiled over the "
                                       "unknown band (slower, needs transformers; its real quality is unmeasured "
                                       "here)."),
                comfy_env.advanced(io.Int.Input(
                    "radius", default=0, min=0, max=256,
                    tooltip="Guided-filter window radius in image pixels; 0 = automatic (measured best: 3x3 "
                            "windows at the "
                            "resolution the colour models are fitted at, i.e. a radius of about image side / the "
                            "mask's working size in image pixels). Not used by vitmatte.")),
                comfy_env.advanced(io.Float.Input(
                    "eps", default=0.0, min=0.0, max=1.0, step=0.000001, round=0.000001,
                    tooltip="Guided-filter regularisation (smaller follows image edges more closely); "
                            f"0 = automatic ({DEFAULT_EPS:g}). Not used by vitmatte.")),
            ] + _trimap_inputs() + _cutout_inputs() + [_mask_working_size_input()],
            outputs=_outputs(),
        )

    @classmethod
    def execute(cls, image, mask, method="guided", radius=0, eps=0.0, trimap_source="auto", band_radius=0,
                refine_foreground=True, output_mode="RGBA", background_colour="#FFFFFF", trimap=None,
                mask_working_size="auto"):
        return refine(image, mask, method, radius, eps, trimap_source, band_radius, refine_foreground, output_mode,
                      background_colour, trimap, mask_working_size)


class BEN2RefineMaskViTMatte(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_env.schema(
            **catalogue.REFINE_MASK_VITMATTE.schema_names(),
            category=widgets.CATEGORY,
            description=("Experimental: refines a mask with the ViTMatte matting network "
                         "(hustvl/vitmatte-small-composition-1k) inside the unknown band of a trimap, tiled, sure "
                         "regions kept exactly. Needs the transformers package and downloads the ViTMatte weights "
                         "once. The same as Refine Mask with method = vitmatte; its quality on real photos has not "
                         "been measured here, so compare it with Refine Mask's guided filter on your images."),
            search_aliases=widgets.SEARCH_ALIASES + ["vitmatte", "refine", "trimap", "hair"],
            is_experimental=True,
            inputs=_image_and_mask() + _trimap_inputs() + _cutout_inputs(),
            outputs=_outputs(),
        )

    @classmethod
    def execute(cls, image, mask, trimap_source="auto", band_radius=0, refine_foreground=True, output_mode="RGBA",
                background_colour="#FFFFFF", trimap=None):
        return refine(image, mask, "vitmatte", 0, 0.0, trimap_source, band_radius, refine_foreground, output_mode,
                      background_colour, trimap)
