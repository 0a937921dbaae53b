"""The one place that touches ComfyUI (``folder_paths``, ``comfy.*``), with plain fallbacks without it.

Everything is looked up lazily at call time, so the pack imports (and its nodes run) without ComfyUI,
and tests can put stand-in ``folder_paths`` / ``comfy.model_management`` modules into ``sys.modules``.

Model folder: ``BEN`` (``ComfyUI/models/BEN``), files ``.pth`` and ``.safetensors``. Paths that
``extra_model_paths.yaml`` declared for ``BEN`` (ComfyUI applies the yaml before custom nodes are
imported) are kept, in their order; ours is appended (or put first only if nothing was there).
Without ComfyUI the folders come from the ``BEN2_MODELS_DIR`` environment variable (os.pathsep-separated),
else ``~/.cache/comfyui-ben2/BEN``.
"""
from __future__ import annotations

import importlib
import logging
import os
from typing import Callable, List, Optional

import torch

log = logging.getLogger("ComfyUI-BEN2")

FOLDER_NAME = "BEN"
MODEL_EXTENSIONS = frozenset({".pth", ".safetensors"})
OFFICIAL_DOWNLOAD_NAME = "model.safetensors"


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

def _fallback_dirs() -> List[str]:
    env = os.environ.get("BEN2_MODELS_DIR", "").strip()
    if env:
        return [os.path.abspath(os.path.expanduser(p)) for p in env.split(os.pathsep) if p.strip()]
    return [os.path.join(os.path.expanduser("~"), ".cache", "comfyui-ben2", FOLDER_NAME)]


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


def model_folders() -> List[str]:
    """Folders searched for BEN checkpoints, first = where downloads go."""
    fp = folder_paths_module()
    if fp is None:
        return _fallback_dirs()
    register_model_folder()
    return list(fp.get_folder_paths(FOLDER_NAME))


def _walk(folder: str) -> List[str]:
    out = []
    if not os.path.isdir(folder):
        return out
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for f in files:
            if os.path.splitext(f)[1].lower() in MODEL_EXTENSIONS:
                out.append(os.path.relpath(os.path.join(root, f), folder).replace(os.sep, "/"))
    return out


def list_model_files() -> List[str]:
    """Sorted relative names of the ``.pth``/``.safetensors`` files in all BEN folders."""
    fp = folder_paths_module()
    if fp is None:
        names = set()
        for d in _fallback_dirs():
            names.update(_walk(d))
        return sorted(names)
    register_model_folder()
    names = fp.get_filename_list(FOLDER_NAME)
    return sorted(n for n in names if os.path.splitext(n)[1].lower() in MODEL_EXTENSIONS)


def resolve_model_path(name: str) -> str:
    """Full path of the model file ``name`` (as listed by list_model_files); FileNotFoundError if absent."""
    fp = folder_paths_module()
    if fp is not None:
        register_model_folder()
        path = fp.get_full_path(FOLDER_NAME, name)
        if path:
            return path
    else:
        rel = os.path.normpath(name)
        if os.path.isabs(rel) or rel.startswith(".."):
            raise FileNotFoundError(f"model name {name!r} must be a file name inside the BEN model folder")
        for d in _fallback_dirs():
            p = os.path.join(d, rel)
            if os.path.isfile(p):
                return p
    raise FileNotFoundError(
        f"BEN model {name!r} not found in {model_folders()}. Put BEN2_Base.pth or model.safetensors "
        "(https://huggingface.co/PramaLLC/BEN2) into one of these folders, or choose "
        "'download official weights' in the Load BEN node.")


def download_folder() -> str:
    """Folder the official weights are downloaded into: the first BEN folder (ComfyUI's default rule)."""
    return model_folders()[0]


# ----------------------------------------------------------------------------------------- devices

def torch_device() -> torch.device:
    """ComfyUI's compute device, or CUDA if available, else CPU."""
    mm = model_management()
    if mm is not None:
        return torch.device(mm.get_torch_device())
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


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


def supports_fp16(device: torch.device) -> bool:
    """Whether fp16 inference is advisable on ``device`` (ComfyUI's should_use_fp16 when present)."""
    if device.type == "cpu":
        return False
    mm = model_management()
    if mm is not None and hasattr(mm, "should_use_fp16"):
        try:
            return bool(mm.should_use_fp16(device))
        except Exception:
            return False
    return device.type == "cuda" and torch.cuda.is_available()


def supports_bf16(device: torch.device) -> bool:
    """Whether bf16 inference is advisable on ``device`` (ComfyUI's should_use_bf16 when present)."""
    if device.type == "cpu":
        return False
    mm = model_management()
    if mm is not None and hasattr(mm, "should_use_bf16"):
        try:
            return bool(mm.should_use_bf16(device))
        except Exception:
            return False
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


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


def check_interrupt() -> None:
    """Raise ComfyUI's InterruptProcessingException if the user pressed Cancel (no-op outside ComfyUI)."""
    mm = model_management()
    if mm is not None and hasattr(mm, "throw_exception_if_processing_interrupted"):
        mm.throw_exception_if_processing_interrupted()


class _NullProgress:
    def __init__(self, total: int):
        self.total = total
        self.current = 0

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        self.current = min(value, self.total)

    def update(self, value):
        self.update_absolute(self.current + value)


def progress_bar(total: int):
    """``comfy.utils.ProgressBar(total)`` inside ComfyUI, a silent stand-in outside."""
    utils = _optional_module("comfy.utils")
    if utils is not None and hasattr(utils, "ProgressBar"):
        return utils.ProgressBar(total)
    return _NullProgress(total)


def progress_callback(total: int) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback (the ben_core predictor's signature) driving a ProgressBar."""
    bar = progress_bar(total)

    def progress(done: int, total_: int) -> None:
        bar.update_absolute(int(done), int(total_))

    return progress
