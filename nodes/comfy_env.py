"""The one place that touches ComfyUI (``folder_paths``, ``comfy.*``).

Everything is looked up lazily at call time, so the pack imports without ComfyUI and its nodes can be
called without it (CI does; tests put stand-in ``folder_paths`` / ``comfy.*`` modules into
``sys.modules``). Outside ComfyUI there is no progress bar and no interrupt, devices are ben_core's
defaults, and the model folder must come from a ``folder_paths`` module.

Model folder: ``BEN`` (``ComfyUI/models/BEN``), every checkpoint extension ben_core reads. Paths that
``extra_model_paths.yaml`` declared for ``BEN`` (ComfyUI applies the yaml before custom nodes are
imported) are kept, in their order; ours is appended (or put first only if nothing was there).
"""
from __future__ import annotations

import importlib
import logging
import os
from typing import Callable, List, Optional, Tuple

import torch

from ..ben_core.checkpoint import SUPPORTED_EXTENSIONS
from ..ben_core.devices import resolve_device

log = logging.getLogger("ComfyUI-BEN2")

FOLDER_NAME = "BEN"
MODEL_EXTENSIONS = frozenset(SUPPORTED_EXTENSIONS)


def _optional_module(name: str):
    """Import ``name`` if ComfyUI provides it, else None (never raises)."""
    try:
        return importlib.import_module(name)
    except Exception:  # ImportError, or a half-initialised ComfyUI: treat as absent
        return None


def folder_paths_module():
    """ComfyUI's ``folder_paths`` module, or None outside ComfyUI."""
    mod = _optional_module("folder_paths")
    if mod is None or not hasattr(mod, "folder_names_and_paths"):
        return None
    return mod


def model_management():
    """``comfy.model_management`` or None outside ComfyUI."""
    mod = _optional_module("comfy.model_management")
    if mod is None or not hasattr(mod, "get_torch_device"):
        return None
    return mod


# ----------------------------------------------------------------------------------------- folders

def register_model_folder() -> Optional[List[str]]:
    """Register the ``BEN`` model folder with ComfyUI's folder_paths without clobbering yaml entries.

    Idempotent. Keeps the existing path list object (and order) of an entry that
    ``extra_model_paths.yaml`` created, adds ``<models_dir>/BEN`` to the end if missing, makes sure
    ``.pth``/``.safetensors`` are accepted (an entry the yaml created has an empty extension set, which
    would list every file), and folds in a differently-cased ``ben``/``Ben`` entry from a yaml.
    Returns the registered folder list, or None outside ComfyUI.
    """
    fp = folder_paths_module()
    if fp is None:
        return None
    table = fp.folder_names_and_paths
    default_dir = os.path.join(fp.models_dir, FOLDER_NAME)
    entry = table.get(FOLDER_NAME)
    if entry is None:
        paths: list = []
        exts: set = set()
    else:
        paths, exts = entry[0], entry[1]
        if not isinstance(paths, list):
            paths = list(paths)
    for key in list(table.keys()):
        if key != FOLDER_NAME and key.lower() == FOLDER_NAME.lower():
            for p in table[key][0]:
                if p not in paths:
                    paths.append(p)
    if default_dir not in paths:
        paths.append(default_dir)
    new_exts = set(exts) | set(MODEL_EXTENSIONS)
    if entry is None or entry[0] is not paths or set(entry[1]) != new_exts:
        table[FOLDER_NAME] = (paths, new_exts)
        cache = getattr(fp, "filename_list_cache", None)
        if isinstance(cache, dict):
            cache.pop(FOLDER_NAME, None)
    return list(paths)


def _folder_paths_or_raise():
    fp = folder_paths_module()
    if fp is None:
        raise FileNotFoundError("the BEN model folder comes from ComfyUI's folder_paths, which is not available "
                                "here; outside ComfyUI use ben_core.load_ben(path) with the checkpoint's path")
    register_model_folder()
    return fp


def model_folders() -> List[str]:
    """Folders searched for BEN checkpoints, first = where downloads go."""
    return list(_folder_paths_or_raise().get_folder_paths(FOLDER_NAME))


def list_model_files() -> List[str]:
    """Sorted relative names of the checkpoint files in all BEN folders ([] outside ComfyUI: no folders)."""
    if folder_paths_module() is None:
        return []
    names = _folder_paths_or_raise().get_filename_list(FOLDER_NAME)
    return sorted(n for n in names if os.path.splitext(n)[1].lower() in MODEL_EXTENSIONS)


def resolve_model_path(name: str) -> str:
    """Full path of the model file ``name`` (as listed by list_model_files); FileNotFoundError if absent."""
    path = _folder_paths_or_raise().get_full_path(FOLDER_NAME, name)
    if path:
        return path
    raise FileNotFoundError(
        f"BEN model {name!r} not found in {model_folders()}. Put BEN2_Base.pth or model.safetensors "
        "(https://huggingface.co/PramaLLC/BEN2) into one of these folders, or choose "
        "'download official weights' in the Load BEN node.")


def download_folder() -> str:
    """Folder the official weights are downloaded into: the first BEN folder (ComfyUI's default rule)."""
    return model_folders()[0]


# ----------------------------------------------------------------------------------------- devices

def torch_device() -> torch.device:
    """ComfyUI's compute device; outside ComfyUI ben_core's choice (CUDA, else MPS, else CPU)."""
    mm = model_management()
    if mm is not None:
        return torch.device(mm.get_torch_device())
    return resolve_device("auto")


def offload_device() -> torch.device:
    """Where ComfyUI parks model weights when not in use (CPU outside ComfyUI)."""
    mm = model_management()
    if mm is not None and hasattr(mm, "unet_offload_device"):
        return torch.device(mm.unet_offload_device())
    return torch.device("cpu")


def intermediate_device() -> torch.device:
    """Device for node outputs passed between nodes (CPU unless ComfyUI runs --gpu-only)."""
    mm = model_management()
    if mm is not None and hasattr(mm, "intermediate_device"):
        return torch.device(mm.intermediate_device())
    return torch.device("cpu")


def half_precision_checks() -> Tuple[Optional[Callable], Optional[Callable]]:
    """ComfyUI's ``(should_use_fp16, should_use_bf16)`` as ``device -> bool`` predicates for
    ``ben_core.devices.resolve_precision``, so fp16 is never used where ComfyUI marks it broken
    (GTX 16xx...); ``(None, None)`` outside ComfyUI (ben_core's defaults then apply)."""
    mm = model_management()
    if mm is None:
        return None, None

    def ask(name: str) -> Optional[Callable]:
        fn = getattr(mm, name, None)
        if fn is None:
            return None

        def check(device: torch.device) -> bool:
            try:
                return bool(fn(device))
            except Exception:  # an older/newer signature: never half precision by accident
                return False

        return check

    return ask("should_use_fp16"), ask("should_use_bf16")


# ----------------------------------------------------------------------------- model management

def make_patcher(model: torch.nn.Module, load_device: torch.device, offload: torch.device):
    """Wrap ``model`` in ComfyUI's ModelPatcher so ComfyUI can load/offload it; None outside ComfyUI."""
    mp = _optional_module("comfy.model_patcher")
    if mp is None or not hasattr(mp, "ModelPatcher"):
        return None
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return mp.ModelPatcher(model, load_device=load_device, offload_device=offload, size=size)


def load_models_gpu(patchers: list, memory_required: int = 0) -> None:
    """Ask ComfyUI to put the patchers' weights on their load device (freeing other models' VRAM).

    ``force_full_load``: the BEN network has plain torch layers (no comfy.ops casting), so it must be
    loaded completely, never partially.
    """
    mm = model_management()
    if mm is None:
        return
    mm.load_models_gpu(patchers, memory_required=memory_required, force_full_load=True)


def should_stop() -> bool:
    """ben_core's ``should_stop`` callback inside ComfyUI: raises ComfyUI's InterruptProcessingException
    when the user pressed Cancel (so ComfyUI reports the run as interrupted), else False."""
    mm = model_management()
    if mm is not None and hasattr(mm, "throw_exception_if_processing_interrupted"):
        mm.throw_exception_if_processing_interrupted()
    return False


def progress_callback(total: int) -> Optional[Callable[[int, int], None]]:
    """ben_core's ``progress(done, total)`` callback driving ``comfy.utils.ProgressBar(total)``;
    None outside ComfyUI (ben_core's callbacks are optional)."""
    utils = _optional_module("comfy.utils")
    if utils is None or not hasattr(utils, "ProgressBar"):
        return None
    bar = utils.ProgressBar(total)

    def progress(done: int, total_: int) -> None:
        bar.update_absolute(int(done), int(total_))

    return progress
