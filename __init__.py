"""ComfyUI-BEN2: BEN2 background removal, confidence trimaps and mask refinement for ComfyUI.

ComfyUI imports this folder as a package (its name may contain a hyphen) and ComfyUI has its own
top-level ``nodes`` module, so everything here is imported relatively.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
