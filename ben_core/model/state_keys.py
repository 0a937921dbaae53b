"""State-dict key aliases: a module keeps the official checkpoint's key names for tensors held by its children.

Why children at all: ComfyUI's dynamic-VRAM loader (``ModelPatcherDynamic`` in 2026 cores,
``comfy/model_patcher.py``) copies the parameters of *leaf* modules to the GPU and puts the originals back
when it offloads, but it moves a parameter owned by a module *with* children in place, without a backup
(``_load_list(for_dynamic=True, default_device=...)``): such a tensor stays on the GPU after offloading,
outside ComfyUI's accounting. So every parameter of BEN2 lives on a leaf module, and the one module that
changed shape for it (a Swin window attention holding its relative-position table, a decoder attention
holding its packed q/k/v projection) declares here the official names its children's tensors go by.

:func:`keep_official_keys` is the only renaming rule: ``state_dict()`` writes the official names (same keys,
same order as the PramaLLC/BEN2 checkpoint), ``load_state_dict()`` reads them (strict checking and the
missing/unexpected key lists speak official names too) and never changes the caller's dict.
"""
from __future__ import annotations

from typing import Mapping

from torch import nn

__all__ = ["keep_official_keys"]

_ATTR = "_official_state_keys"


def keep_official_keys(module: nn.Module, aliases: Mapping[str, str]) -> None:
    """Make ``module``'s state dict use ``aliases``: ``{internal key: official key}``, both relative to
    ``module`` (e.g. ``{"in_proj.weight": "in_proj_weight"}``). Call once, in ``__init__``, after the
    children exist."""
    table = dict(aliases)
    for internal in table:
        owner, _, name = internal.rpartition(".")
        child = module.get_submodule(owner)
        if name not in child._parameters and name not in child._buffers:
            raise KeyError(f"{type(module).__name__}: no tensor {internal!r} to alias")
    setattr(module, _ATTR, table)
    register = getattr(module, "register_state_dict_post_hook", None) or module._register_state_dict_hook
    register(_write_official)
    if hasattr(module, "register_load_state_dict_pre_hook"):
        module.register_load_state_dict_pre_hook(_read_official)
    else:  # torch < 2.3
        module._register_load_state_dict_pre_hook(_read_official, with_module=True)
    module.register_load_state_dict_post_hook(_report_official)


def _renamed(state_dict, prefix: str, table: Mapping[str, str]) -> None:
    """Rename ``prefix + key`` to ``prefix + table[key]`` in place, keeping every key's position."""
    if not any(prefix + k in state_dict for k in table):
        return
    items = [((prefix + table[k[len(prefix):]]) if k.startswith(prefix) and k[len(prefix):] in table else k, v)
             for k, v in state_dict.items()]
    state_dict.clear()
    state_dict.update(items)


def _write_official(module, state_dict, prefix, local_metadata):
    _renamed(state_dict, prefix, getattr(module, _ATTR))


def _read_official(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    table = getattr(module, _ATTR)
    inverse = {official: internal for internal, official in table.items()}
    # a key already given under its internal name is left alone (the official one then counts as unexpected)
    _renamed(state_dict, prefix, {o: i for o, i in inverse.items() if prefix + i not in state_dict})


def _report_official(module, incompatible_keys):
    """Missing / unexpected keys are reported with their official names (the hook gets no prefix: the
    internal names end in a child's name, so the suffix identifies them)."""
    table = getattr(module, _ATTR)
    for keys in (incompatible_keys.missing_keys, incompatible_keys.unexpected_keys):
        for i, key in enumerate(keys):
            for internal, official in table.items():
                if key == internal or key.endswith("." + internal):
                    keys[i] = key[: len(key) - len(internal)] + official
                    break
