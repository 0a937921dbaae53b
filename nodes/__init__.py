"""ComfyUI nodes of the BEN2 pack (adapters over ben_core).

Each node module is imported on its own: if one fails (a missing optional dependency, say), the error
is logged and the other nodes still register. Nothing heavy happens at import: no model load, no
download; only the BEN model folder is registered with ComfyUI's folder_paths (when present).
"""
from __future__ import annotations

import importlib
import logging

log = logging.getLogger("ComfyUI-BEN2")

#: (module, class name, node id, display name)
_NODES = [
    ("load_ben", "BEN2LoadModel", "BEN2_LoadModel", "Load BEN (BEN2)"),
    ("remove_background", "BEN2RemoveBackground", "BEN2_RemoveBackground", "Remove Background (BEN2)"),
    ("show_trimap", "BEN2ShowTrimap", "BEN2_ShowTrimap", "Show Trimap (BEN2)"),
    ("refine_mask", "BEN2RefineMask", "BEN2_RefineMask", "Refine Mask (BEN2)"),
    ("refine_mask", "BEN2RefineMaskViTMatte", "BEN2_RefineMaskViTMatte", "Refine Mask with ViTMatte (BEN2)"),
    ("remove_video_background", "BEN2RemoveVideoBackground", "BEN2_RemoveVideoBackground",
     "Remove Video Background (BEN2)"),
]

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

for _module, _cls, _id, _name in _NODES:
    try:
        _mod = importlib.import_module(f".{_module}", __name__)
        NODE_CLASS_MAPPINGS[_id] = getattr(_mod, _cls)
        NODE_DISPLAY_NAME_MAPPINGS[_id] = _name
    except Exception as _exc:  # keep the rest of the pack usable
        log.error("BEN2: node %s is unavailable: %s: %s", _id, type(_exc).__name__, _exc)

try:
    from . import comfy_env as _comfy_env

    _comfy_env.register_model_folder()
except Exception as _exc:  # never take the pack down over folder registration
    log.error("BEN2: could not register the 'BEN' model folder: %s", _exc)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
