"""Remove Background node: BEN_MODEL + IMAGE -> cut-out IMAGE + soft MASK (1 = foreground)."""
from __future__ import annotations

from ..ben_core.matting.temporal import make_stabilizer
from ..ben_core.model.ben2 import BENBase
from ..ben_core.pipeline import CutoutOptions, CutoutPipeline
from . import catalogue, comfy_env, image_mask, widgets
from .comfy_env import io


class BEN2RemoveBackground(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_env.schema(
            **catalogue.REMOVE_BACKGROUND.schema_names(),
            category=widgets.CATEGORY,
            description=("Removes the background of every image in the batch with BEN2. Outputs the cut-out "
                         "(transparent RGBA, or RGB over a colour) and the soft mask, 1 = foreground. Note: ComfyUI's "
                         "Load Image masks and Join Image with Alpha use the opposite polarity (1 = transparent): use "
                         "invert_mask or an Invert Mask node for them."),
            search_aliases=widgets.SEARCH_ALIASES,
            inputs=[
                widgets.BEN_MODEL.Input("ben_model", tooltip="The network from Load BEN (BEN2)."),
                io.Image.Input("image", tooltip="Images of any size; every image of the batch is processed. An alpha "
                                                "channel (RGBA input) is ignored."),
                widgets.output_mode_input(),
                widgets.background_colour_input(),
                widgets.refine_foreground_input(),
                io.Boolean.Input("invert_mask", default=False,
                                 tooltip="Output the MASK as 1 = background (the polarity of ComfyUI's Load Image "
                                         "masks and Join Image with Alpha). The IMAGE output is unaffected."),
                comfy_env.advanced(io.Int.Input(
                    "batch_size", default=1, min=1, max=64,
                    tooltip="How many images go through the network at once. Larger is faster on a big GPU but needs "
                            f"more VRAM (measured: ~0.25 GB more per image at {BENBase.native_size} in fp16, besides "
                            "the image's own full-size tensors). All images are processed either way.")),
                widgets.working_size_input("The mask is always returned at the image size.", optional=True),
                comfy_env.advanced(io.Boolean.Input(
                    "temporal_stabilize", default=False, optional=True,
                    tooltip="For a batch that is a video clip (frames in order, one size): steady the mask from frame "
                            "to frame, following the motion, which damps flicker at hair and soft edges without lag "
                            "(see temporal_mode). Leave off for unrelated images.")),
                comfy_env.advanced(widgets.temporal_mode_input()),
            ],
            outputs=[
                io.Image.Output(display_name="image", tooltip=(
                    "Cut-out at the input size: RGBA (4 channels, transparent background; save it with Save Image, "
                    "but 4-channel images do not go into a VAE: use the RGB mode or 'Join Image with Alpha' for that) "
                    "or RGB composited over background_colour. Always shows the foreground, whatever invert_mask "
                    "says.")),
                io.Mask.Output(display_name="mask", tooltip=(
                    "Soft alpha at the image size, float 0..1, 1 = foreground (0 = foreground if invert_mask is on). "
                    "Feed it to Show Trimap / Refine Mask (BEN2).")),
            ],
        )

    @classmethod
    def execute(cls, ben_model, image, output_mode="RGBA", background_colour="#FFFFFF", refine_foreground=True,
                invert_mask=False, batch_size=1, working_size=widgets.DEFAULT_WORKING_SIZE,
                temporal_stabilize=False, temporal_mode="causal"):
        bg = widgets.background(output_mode, background_colour)  # fails before the slow part
        widgets.check_network_settings(ben_model, batch_size, working_size)
        temporal = widgets.temporal_setting(temporal_stabilize, temporal_mode)
        image = image_mask.check_image(image)
        predictor = ben_model.predictor(batch_size=int(batch_size), working_size=int(working_size),
                                        image_hw=tuple(image.shape[1:3]))
        pipeline = CutoutPipeline(predictor,
                                  CutoutOptions(foreground=bool(refine_foreground), background=bg))
        stabilizer = make_stabilizer(temporal) if temporal else None
        cut = pipeline.run(image, progress=comfy_env.progress_callback(image.shape[0]),
                           should_stop=comfy_env.should_stop, out_device=comfy_env.intermediate_device(),
                           stabilizer=stabilizer)
        mask = 1.0 - cut.alpha if invert_mask else cut.alpha
        return io.NodeOutput(*comfy_env.node_outputs(cut.image, mask))
