"""The one place that touches ComfyUI (``comfy_api``, ``folder_paths``, ``comfy.*``).

The V3 node API (``comfy_api.latest``: ``io``, ``ui``) is imported here, once; every other ComfyUI module is
looked up lazily at call time, so the nodes can be called with stand-ins in ``sys.modules`` (CI has no
ComfyUI; the tests provide a small ``comfy_api`` and ``folder_paths``). Without ``comfy.*`` there is no
progress bar and no interrupt, devices are ben_core's defaults.

API differences between cores are bridged here and nowhere else: fields only newer cores know
(``Schema.search_aliases``, ``advanced`` inputs, ``io.BackgroundRemoval``, ``CoreModelPatcher`` /
dynamic VRAM, ``intermediate_dtype``) are used where present and left out where not. ComfyUI's private
state (a VIDEO's crop and trim: :func:`video_crop`, :func:`video_trim`) is read here only, each function
naming the core file it mirrors and what it gives where that state is absent.

Model folder: ``BEN`` (``ComfyUI/models/BEN``), every checkpoint extension ben_core reads. Paths that
the yaml declared for ``BEN`` are kept, in their order; ours is appended (or put first only if nothing was
there). Which yaml: some 2026 cores read ``extra_paths.yaml`` and ignore ``extra_model_paths.yaml`` when both
exist (``main.py``'s ``apply_custom_paths`` @ 02018c7eb588), others (@ 4f8cf3e29518) and 0.3.64
``extra_model_paths.yaml`` only; either way core applies it to ``folder_paths`` before custom nodes are
imported, and this module only ever reads ``folder_paths``.

Interrupts: ComfyUI's ``InterruptProcessingException`` is a ``BaseException`` in 2026 cores and an
``Exception`` in 0.3.64; code that turns errors into messages re-raises it first (:func:`is_interrupt`).
"""
from __future__ import annotations

import dataclasses
import importlib
import io as io_bytes
import logging
import os
import uuid
from typing import Callable, List, Optional, Tuple

import torch

try:
    from comfy_api.latest import io
except ImportError as _exc:  # ComfyUI older than the V3 node API
    raise ImportError("the BEN2 nodes need ComfyUI 0.3.64 or newer (comfy_api.latest, the V3 node API); update "
                      "ComfyUI") from _exc

from ..ben_core.devices import resolve_device, same_device
from ..ben_core.io.files import atomic_output
from ..ben_core.model.weights import SUPPORTED_EXTENSIONS

log = logging.getLogger("ComfyUI-BEN2")

FOLDER_NAME = "BEN"
MODEL_EXTENSIONS = frozenset(SUPPORTED_EXTENSIONS)

#: The socket type of core's background-removal model (ComfyUI 2026 cores; a custom type of the same name
#: elsewhere, so Load BEN's output keeps its type on every core).
BACKGROUND_REMOVAL = getattr(io, "BackgroundRemoval", None) or io.Custom("BACKGROUND_REMOVAL")


def schema(**fields) -> "io.Schema":
    """``io.Schema(**fields)`` without the fields this core's Schema does not have (``search_aliases``
    arrived in 2026 cores: older ones get the node without aliases rather than an error)."""
    known = {f.name for f in dataclasses.fields(io.Schema)}
    return io.Schema(**{k: v for k, v in fields.items() if k in known})


def advanced(inp):
    """Mark an input as an expert knob (2026 frontends fold such inputs away; older ones show it).

    Written into the input's ``extra_dict`` (what newer cores' ``advanced=True`` writes to the node
    definition), which every V3 core passes through."""
    inp.extra_dict["advanced"] = True
    return inp


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


def intermediate_dtype() -> torch.dtype:
    """dtype of node outputs passed between nodes (fp16 with ``--fp16-intermediates`` in 2026 cores)."""
    mm = model_management()
    if mm is not None and hasattr(mm, "intermediate_dtype"):
        return mm.intermediate_dtype()
    return torch.float32


def node_outputs(*tensors):
    """Every IMAGE / MASK a node outputs, on ComfyUI's intermediate device and in its intermediate dtype
    (``--gpu-only``; fp16 with ``--fp16-intermediates`` in 2026 cores): the one place the nodes convert their
    outputs. Returns the tensors in order (a single one unwrapped); None stays None; inputs are not modified
    (a tensor already there is returned as it is)."""
    device, dtype = intermediate_device(), intermediate_dtype()
    out = tuple(None if t is None else t.to(device=device, dtype=dtype) for t in tensors)
    return out[0] if len(out) == 1 else out


def temp_directory() -> Optional[str]:
    """ComfyUI's temp folder (served by ``/view?type=temp``, emptied at start-up); None outside ComfyUI."""
    fp = folder_paths_module()
    if fp is None or not hasattr(fp, "get_temp_directory"):
        return None
    return fp.get_temp_directory()


def output_directory() -> Optional[str]:
    """ComfyUI's output folder; None outside ComfyUI."""
    fp = folder_paths_module()
    if fp is None or not hasattr(fp, "get_output_directory"):
        return None
    return fp.get_output_directory()


def new_output_file(filename_prefix: str, extension: str, temp: bool, width: int = 0, height: int = 0) -> dict:
    """A fresh file name for a saved result, numbered like core's Save nodes: ``<prefix>_00001_.<ext>`` in
    the output folder (``filename_prefix`` may hold a sub-folder and %date%-style variables) or, with
    ``temp``, in the temp folder. Returns ``{"path", "filename", "subfolder", "type"}`` (the last three are
    what the browser's ``/view`` takes). Raises RuntimeError outside ComfyUI."""
    fp = folder_paths_module()
    folder = temp_directory() if temp else output_directory()
    if fp is None or folder is None or not hasattr(fp, "get_save_image_path"):
        raise RuntimeError("ComfyUI's output and temp folders (folder_paths) are not available here")
    full_folder, filename, counter, subfolder, _ = fp.get_save_image_path(filename_prefix, folder, width, height)
    os.makedirs(full_folder, exist_ok=True)
    name = f"{filename}_{counter:05}_.{extension}"
    return {"path": os.path.join(full_folder, name), "filename": name, "subfolder": subfolder,
            "type": "temp" if temp else "output"}


def video_from_file(path: str):
    """Core's VIDEO object for a video file (``comfy_api.latest.InputImpl.VideoFromFile``)."""
    latest = importlib.import_module("comfy_api.latest")
    return latest.InputImpl.VideoFromFile(path)


# ---------------------------------------------------------------------------------------- VIDEO inputs

def _video_private(video, name: str):
    """``video``'s name-mangled private attribute ``__<name>`` of any class in its MRO (``_VideoFromFile__crop``
    on core's ``VideoFromFile`` and on subclasses of it), or None where no class of it has one."""
    for cls in type(video).__mro__:
        value = getattr(video, f"_{cls.__name__}__{name}", None)
        if value is not None:
            return value
    return None


def video_crop(video) -> Optional[tuple]:
    """The crop rectangle a VIDEO carries (``as_cropped``) that its ``get_stream_source()`` does not have yet,
    as a tuple; None when it carries none, or where this core keeps no such state.

    Mirrors ``comfy_api/latest/_input_impl/video_types.py`` @ 0c6cfff61c0a (also 2802bf9551c8):
    ``VideoFromFile`` keeps the crop in its private ``__crop`` (``VideoFromFile(file, crop=rect)``), which
    no public method reports (``has_pending_frame_edits()`` is not overridden there, so it answers the base
    class's False for a cropped VIDEO; later cores answer True, and the caller asks that first).
    Version gate: a core whose VIDEO has no ``__crop`` (0.3.64, which cannot crop; a core that renames it)
    gives None, and a crop there is still found by size: :func:`.video_input.stream_source` renders a VIDEO
    whose ``get_dimensions()`` is not its stream's size through core's ``save_to``."""
    crop = _video_private(video, "crop")
    return None if crop is None else tuple(crop)


def video_trim(video) -> Optional[Tuple[float, float]]:
    """``(start, duration)`` in seconds (0 = unset) of the trim (``as_trimmed``) a VIDEO keeps in its private
    state, for a core whose VIDEO has no public ``get_active_trim_window()``; None where it keeps none.

    Mirrors ``comfy_api/latest/_input_impl/video_types.py`` @ 0c6cfff61c0a: ``VideoFromFile``'s private
    ``__start_time`` / ``__duration``. Cores that have ``get_active_trim_window()``
    (``comfy_api/latest/_input/video_types.py`` @ df63641786f4) report the trim there, and the caller asks
    that first. Version gate: a core without either attribute (0.3.64, which cannot trim) gives None: no
    trim (the VIDEO is its file)."""
    start, duration = _video_private(video, "start_time"), _video_private(video, "duration")
    if start is None and duration is None:
        return None
    return start or 0.0, duration or 0.0


def save_temp_file(data: bytes, prefix: str, extension: str) -> dict:
    """Write ``data`` into ComfyUI's temp folder under a new unique name ``<prefix>_<hex>.<extension>``, the way
    core's previews travel; returns ``{"filename", "subfolder", "type": "temp"}`` for the browser's ``/view``.

    Written with :func:`ben_core.io.files.atomic_output` (under a temporary name, renamed into place), so
    ``/view`` never serves half a file. ComfyUI empties its temp folder at start-up.
    """
    folder = temp_directory()
    if folder is None:
        raise RuntimeError("ComfyUI's temp folder (folder_paths.get_temp_directory) is not available here")
    name = f"{prefix}_{uuid.uuid4().hex[:16]}.{extension}"
    with atomic_output(os.path.join(folder, name)) as partial:
        with open(partial, "wb") as f:
            f.write(data)
    return {"filename": name, "subfolder": "", "type": "temp"}


def save_temp_jpeg(rgb, prefix: str, quality: int = 85) -> dict:
    """:func:`save_temp_file` of ``rgb`` (uint8 numpy ``[H, W, 3]``) encoded as a JPEG of that ``quality``."""
    from PIL import Image

    buf = io_bytes.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="JPEG", quality=int(quality))
    return save_temp_file(buf.getvalue(), prefix, "jpg")


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

def make_patcher(model: torch.nn.Module, load_device: torch.device, offload: torch.device, dynamic: bool = True):
    """Wrap ``model`` so ComfyUI can load/offload it; None outside ComfyUI.

    2026 cores: ``comfy.model_patcher.CoreModelPatcher`` (a ``ModelPatcherDynamic`` when dynamic VRAM is
    on, read at call time because core swaps it at start-up; core itself hands a CPU load device a plain
    ``ModelPatcher``); 0.3.64: ``ModelPatcher``. ``dynamic=False`` asks for the plain ``ModelPatcher``
    everywhere: a dynamic patcher copies the weights to the GPU afresh on every load (core's
    ``load()`` starts with ``restore_loaded_backups()``), which a CUDA graph, recorded against the weights'
    addresses, would have to re-record. A model that is not :func:`leaf_owned` (transformers' ViTMatte: its
    ``position_embeddings``) also gets the plain one: the dynamic patcher would leave such parameters on the
    GPU, unaccounted, when it offloads.
    """
    mp = _optional_module("comfy.model_patcher")
    if mp is None or not hasattr(mp, "ModelPatcher"):
        return None
    if dynamic and not leaf_owned(model):
        log.debug("BEN2: %s has parameters on modules with children; plain ModelPatcher", type(model).__name__)
        dynamic = False
    cls = (getattr(mp, "CoreModelPatcher", None) if dynamic else None) or mp.ModelPatcher
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return cls(model, load_device=load_device, offload_device=offload, size=size)


def leaf_owned(model: torch.nn.Module) -> bool:
    """Whether every parameter of ``model`` is held by a module without parameterised children: what core's
    dynamic-VRAM patcher copies to the GPU and takes back. A parameter of a module *with* such children is
    moved in place and never moved back (``ModelPatcher._load_list(for_dynamic=True, default_device=...)``,
    2026 cores)."""
    for module in model.modules():
        own = set(dict(module.named_parameters(recurse=False)))
        if own and any(name not in own for name, _ in module.named_parameters()):
            return False
    return True


def is_dynamic(patcher) -> bool:
    """Whether ``patcher`` streams weights (dynamic VRAM, 2026 cores): its model's state dict is then
    loaded with ``assign=True`` (the checkpoint's tensors become the parameters, no copies)."""
    return bool(patcher is not None and getattr(patcher, "is_dynamic", lambda: False)())


def load_models_gpu(patchers: list, memory_required: int = 0) -> None:
    """Ask ComfyUI to put the patchers' weights on their load device (freeing other models' VRAM).

    ``force_full_load``: the BEN and ViTMatte networks have plain torch layers (no comfy.ops casting, so
    core cannot stream them), so they must be loaded completely, never partially. Core still gives every
    model a budget of 0.1 byte under ``--novram`` (``load_models_gpu``: NO_VRAM overrides force_full_load),
    within which ``ModelPatcher.load`` moves no plain module; a plain patcher whose weights are then not
    all on its load device is asked for the rest as core's own ``LoadedModel.model_load`` asks for an
    unlimited budget (``partially_load(load_device, 1e32)``): a complete load that core counts and can
    offload again, as it does for the upscale models it moves to the GPU under every VRAM state.
    A dynamic patcher (2026) already copies every plain module to its load device.
    """
    mm = model_management()
    if mm is None:
        return
    mm.load_models_gpu(patchers, memory_required=memory_required, force_full_load=True)
    for patcher in patchers:
        if is_dynamic(patcher) or same_device(weights_device(patcher.model), patcher.load_device):
            continue
        log.info("BEN2: core left %s's weights off %s (--novram); loading them completely",
                 type(patcher.model).__name__, patcher.load_device)
        patcher.partially_load(patcher.load_device, 1e32)


def weights_device(module: torch.nn.Module) -> Optional[torch.device]:
    """The one device that holds every parameter and buffer of ``module``; None when they are spread over
    several devices (or there are none)."""
    devices = {t.device for t in module.parameters()} | {t.device for t in module.buffers()}
    first = next(iter(devices), None)
    if first is None or any(not same_device(d, first) for d in devices):
        return None
    return first




def reserve(nbytes: int, device: torch.device) -> None:
    """Ask ComfyUI to make ``nbytes`` free on ``device`` (offloading other models as needed) before work that
    keeps no model of ours there (Refine Mask's guided filter); nothing on the CPU or outside ComfyUI."""
    mm = model_management()
    device = torch.device(device)
    if mm is None or device.type == "cpu" or not hasattr(mm, "free_memory"):
        return
    mm.free_memory(int(nbytes), device)


def is_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is ComfyUI's Cancel (``InterruptProcessingException``: an ``Exception`` in 0.3.64, so an
    ``except Exception`` that reports errors must let it through unchanged)."""
    mm = model_management()
    cls = getattr(mm, "InterruptProcessingException", None) if mm is not None else None
    return isinstance(cls, type) and isinstance(exc, cls)


def should_stop() -> bool:
    """ben_core's ``should_stop`` callback inside ComfyUI: raises ComfyUI's InterruptProcessingException
    when the user pressed Cancel (so ComfyUI reports the run as interrupted), else False."""
    mm = model_management()
    if mm is not None and hasattr(mm, "throw_exception_if_processing_interrupted"):
        mm.throw_exception_if_processing_interrupted()
    return False


def progress_callback(total: Optional[int]) -> Optional[Callable[[int, Optional[int]], None]]:
    """ben_core's ``progress(done, total)`` callback driving ``comfy.utils.ProgressBar(total)``;
    None outside ComfyUI (ben_core's callbacks are optional). A total that is not known in advance
    (None: a video whose header has no frame count) follows the work done."""
    utils = _optional_module("comfy.utils")
    if utils is None or not hasattr(utils, "ProgressBar"):
        return None
    bar = utils.ProgressBar(total or 1)

    def progress(done: int, total_: Optional[int]) -> None:
        bar.update_absolute(int(done), int(max(total_ or 0, done, 1)))

    return progress
