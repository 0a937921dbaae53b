"""Every node of the pack, written once: its module, class, node id and display name.

The node id is what a saved workflow stores for the node (``"type"``), so an id never changes; the display
name is what the node is called in the menus and search. Both are read from here, and from nowhere else:
by ``nodes/__init__.py`` (``NODE_CLASS_MAPPINGS``, ``NODE_DISPLAY_NAME_MAPPINGS``, and the log line naming
a node whose module could not be imported) and by each node's schema
(``comfy_env.schema(**catalogue.LOAD_MODEL.schema_names(), ...)``). The other places that name a node (the
frozen id list of the tests, the docs, the example workflows, ``web/js``) are checked against these by the
tests.

Imports nothing, so the ids are known even when a node module (or ComfyUI's API) cannot be imported.
"""
from __future__ import annotations

from typing import NamedTuple


class NodeName(NamedTuple):
    """One node: ``nodes.<module>.<class_name>``, registered as ``node_id``, shown as ``display_name``."""

    module: str
    class_name: str
    node_id: str
    display_name: str

    def schema_names(self) -> dict:
        """``{"node_id", "display_name"}`` for the node's ``io.Schema``."""
        return {"node_id": self.node_id, "display_name": self.display_name}


LOAD_MODEL = NodeName("load_ben", "BEN2LoadModel", "BEN2_LoadModel", "Load BEN (BEN2)")
REMOVE_BACKGROUND = NodeName("remove_background", "BEN2RemoveBackground", "BEN2_RemoveBackground",
                             "Remove Background (BEN2)")
SHOW_TRIMAP = NodeName("show_trimap", "BEN2ShowTrimap", "BEN2_ShowTrimap", "Show Trimap (BEN2)")
REFINE_MASK = NodeName("refine_mask", "BEN2RefineMask", "BEN2_RefineMask", "Refine Mask (BEN2)")
REFINE_MASK_VITMATTE = NodeName("refine_mask", "BEN2RefineMaskViTMatte", "BEN2_RefineMaskViTMatte",
                                "Refine Mask with ViTMatte (BEN2)")
REMOVE_VIDEO_BACKGROUND = NodeName("remove_video_background", "BEN2RemoveVideoBackground",
                                   "BEN2_RemoveVideoBackground", "Remove Video Background (BEN2)")

#: The pack's nodes, in the order they are registered.
NODES = (LOAD_MODEL, REMOVE_BACKGROUND, SHOW_TRIMAP, REFINE_MASK, REFINE_MASK_VITMATTE, REMOVE_VIDEO_BACKGROUND)
