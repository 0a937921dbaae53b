"""A stand-in for the part of ComfyUI's ``comfy_api.latest`` (``io``, ``ui``) the BEN2 nodes use, written
for these tests after ComfyUI 0.3.64's ``comfy_api/latest/_io.py`` (Comfy-Org/ComfyUI @ a125cd84b054; same
constructor signatures, the same ``GET_NODE_INFO_V1`` format, the same Schema fields).
``make_comfy_api(newer=True)`` behaves like a 2026 core instead: ``Schema(search_aliases=...)``,
``Input(advanced=...)`` and an ``io.BackgroundRemoval`` type.

Compared with the real 0.3.64 on the pack's first five nodes (2026-12-01; Remove Video Background's
/object_info was read from a real 0.3.64 the same day: the widget order the tests assume): identical input types,
options, defaults, ``advanced`` flags, input order, outputs, names and tooltips; the real one also sends
``multiline``/``multiselect: false``, ``api_node``, ``python_module`` and an output node's hidden inputs.
"""
from __future__ import annotations

import dataclasses
import types
from typing import Any


def _prune(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def make_comfy_api(newer: bool = False) -> dict[str, types.ModuleType]:
    """``{"comfy_api": ..., "comfy_api.latest": ...}`` modules for ``sys.modules``."""
    io = types.ModuleType("comfy_api.latest.io")
    ui = types.ModuleType("comfy_api.latest.ui")

    class Input:
        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, extra_dict=None,
                     **newer_kwargs):
            if newer_kwargs and (not newer or set(newer_kwargs) - {"advanced", "raw_link"}):
                raise TypeError(f"Input.__init__() got an unexpected keyword argument {sorted(newer_kwargs)[0]!r}")
            self.id, self.display_name, self.optional = id, display_name, optional
            self.tooltip, self.lazy = tooltip, lazy
            self.extra_dict = extra_dict if extra_dict is not None else {}
            self.advanced = newer_kwargs.get("advanced")

        def as_dict(self):
            return _prune({"display_name": self.display_name, "optional": self.optional, "tooltip": self.tooltip,
                           "lazy": self.lazy, "advanced": self.advanced}) | _prune(self.extra_dict)

        def get_io_type(self):
            return self.Parent.io_type

    class WidgetInput(Input):
        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None,
                     socketless=None, widget_type=None, force_input=None, extra_dict=None, **newer_kwargs):
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, **newer_kwargs)
            self.default = default

        def as_dict(self):
            return super().as_dict() | _prune({"default": self.default})

    class Output:
        def __init__(self, id=None, display_name=None, tooltip=None, is_output_list=False):
            self.id, self.display_name, self.tooltip, self.is_output_list = id, display_name, tooltip, is_output_list

        def get_io_type(self):
            return self.Parent.io_type

    def comfytype(io_type, input_base=Input, extra=()):
        class Type:
            pass

        Type.io_type = io_type

        class _In(input_base):
            def __init__(self, id, *args, **kwargs):
                own = {k: kwargs.pop(k) for k in list(kwargs) if k in extra}
                super().__init__(id, *args, **kwargs)
                self.extra = own

            def as_dict(self):
                return super().as_dict() | _prune(self.extra)

        class _Out(Output):
            pass

        _In.Parent = _Out.Parent = Type
        Type.Input, Type.Output = _In, _Out
        return Type

    io.Image = comfytype("IMAGE")
    io.Mask = comfytype("MASK")
    io.Boolean = comfytype("BOOLEAN", WidgetInput, ("label_on", "label_off"))
    io.Int = comfytype("INT", WidgetInput, ("min", "max", "step", "control_after_generate", "display_mode"))
    io.Float = comfytype("FLOAT", WidgetInput, ("min", "max", "step", "round", "display_mode"))
    io.String = comfytype("STRING", WidgetInput, ("multiline", "placeholder", "dynamic_prompts"))
    io.Combo = comfytype("COMBO", WidgetInput, ("options", "control_after_generate"))
    io.Video = comfytype("VIDEO")
    io.Custom = lambda io_type: comfytype(io_type)
    if newer:
        io.BackgroundRemoval = comfytype("BACKGROUND_REMOVAL")

    fields = [("node_id", str), ("display_name", str, None), ("category", str, "sd"), ("inputs", list, None),
              ("outputs", list, None), ("hidden", list, None), ("description", str, ""),
              ("is_input_list", bool, False), ("is_output_node", bool, False), ("is_deprecated", bool, False),
              ("is_experimental", bool, False), ("is_api_node", bool, False), ("not_idempotent", bool, False),
              ("enable_expand", bool, False)]
    if newer:
        fields.append(("search_aliases", list, dataclasses.field(default_factory=list)))
    io.Schema = dataclasses.make_dataclass(
        "Schema", [f if len(f) == 2 else (f[0], f[1], f[2] if isinstance(f[2], dataclasses.Field)
                                          else dataclasses.field(default=f[2])) for f in fields])

    class NodeOutput:
        def __init__(self, *args: Any, ui=None, expand=None, block_execution=None):
            self.args, self.ui = args, ui

        @property
        def result(self):
            return self.args if self.args else None

        def __getitem__(self, index):
            return self.args[index]

    class ComfyNode:
        """What the tests need of V3's node base: the schema, execute, and the V1-format node info
        the server sends as /object_info (0.3.64's get_v1_info, combos as ["COMBO", {options}])."""

        @classmethod
        def GET_SCHEMA(cls):
            return cls.define_schema()

        @classmethod
        def GET_NODE_INFO_V1(cls) -> dict:
            s = cls.define_schema()
            inputs: dict = {"required": {}}
            for i in s.inputs or []:
                d = i.as_dict()
                d.pop("optional", None)
                inputs.setdefault("optional" if i.optional else "required", {})[i.id] = [i.get_io_type(), d]
            outs = s.outputs or []
            info = {
                "input": inputs, "input_order": {k: list(v) for k, v in inputs.items()},
                "output": [o.get_io_type() for o in outs], "output_is_list": [o.is_output_list for o in outs],
                "output_name": [o.display_name or o.get_io_type() for o in outs],
                "output_tooltips": [o.tooltip for o in outs], "name": s.node_id, "display_name": s.display_name,
                "description": s.description, "category": s.category, "output_node": s.is_output_node,
                "deprecated": s.is_deprecated, "experimental": s.is_experimental,
            }
            if newer:
                info["search_aliases"] = list(s.search_aliases)
            return info

    io.ComfyNode, io.NodeOutput = ComfyNode, NodeOutput
    io.Input, io.WidgetInput, io.Output = Input, WidgetInput, Output

    latest = types.ModuleType("comfy_api.latest")
    latest.io, latest.ui = io, ui
    latest.ComfyExtension = type("ComfyExtension", (), {})

    class VideoFromFile:
        """0.3.64's ``InputImpl.VideoFromFile`` (``_input_impl/video_types.py`` @ a125cd84b054: no trim, no crop):
        the parts the nodes use (a path or BytesIO as the stream source). A 2026 one: video_types.py here."""

        def __init__(self, file):
            self._file = file

        def get_stream_source(self):
            if hasattr(self._file, "seek"):
                self._file.seek(0)
            return self._file

        def get_dimensions(self):
            import av

            with av.open(self.get_stream_source()) as c:
                s = c.streams.video[0]
                return s.width, s.height

    latest.InputImpl = types.SimpleNamespace(VideoFromFile=VideoFromFile)
    root = types.ModuleType("comfy_api")
    root.__path__ = []
    root.latest = latest
    latest.__path__ = []
    return {"comfy_api": root, "comfy_api.latest": latest}
