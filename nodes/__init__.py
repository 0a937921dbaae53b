"""ComfyUI nodes of the BEN2 pack (adapters over ben_core).

Each node module is imported on its own: if one fails (a missing optional dependency, say), the error
is logged and the other nodes still register. Nothing heavy happens at import: no model load, no
download; only the BEN model folder is registered with ComfyUI's folder_paths (when present). Which nodes
there are, their ids and display names: :mod:`.catalogue`.
"""
from __future__ import annotations

import importlib
import logging

from . import catalogue as _catalogue

log = logging.getLogger("ComfyUI-BEN2")

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

for _node in _catalogue.NODES:
    try:
        _mod = importlib.import_module(f".{_node.module}", __name__)
        NODE_CLASS_MAPPINGS[_node.node_id] = getattr(_mod, _node.class_name)
        NODE_DISPLAY_NAME_MAPPINGS[_node.node_id] = _node.display_name
    except Exception as _exc:  # keep the rest of the pack usable
        log.error("BEN2: node %s is unavailable: %s: %s", _node.node_id, type(_exc).__name__, _exc)

try:
    from . import comfy_env as _comfy_env

    _comfy_env.register_model_folder()
except Exception as _exc:  # never take the pack down over folder registration
    log.error("BEN2: could not register the 'BEN' model folder: %s", _exc)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
