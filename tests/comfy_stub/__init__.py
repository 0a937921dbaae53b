"""Stand-ins for the parts of ComfyUI the BEN2 nodes touch (folder_paths, comfy.model_management,
comfy.model_patcher, comfy.utils), written for these tests: small, recording, no ComfyUI needed, and no
kinder than the core they mirror (a kinder stand-in hides the bug users meet).

Mirrored core sources (Comfy-Org/ComfyUI, read through the search tool; own code, same rules):

* 2026 cores: ``comfy/model_patcher.py`` @ 08d0e510f4e539a1db39072589817136ac6cfa7d (ModelPatcher,
  ModelPatcherDynamic), ``comfy/model_management.py`` @ 02b2b3886164b1fa412d393a3ed0674b9d1cf010
  (load_models_gpu, free_memory, LoadedModel, InterruptProcessingException), ``main.py`` @
  02018c7eb5887b889ba26d0f5c43fc1041026e71 (apply_custom_paths: extra_paths.yaml / extra_model_paths.yaml),
  ``utils/extra_config.py`` @ e90d7f131a1fe13793e7f784d7c7e69cf39c72a8, ``folder_paths.py`` @
  1df2885ebd28b8510d3d40f6a96b68da1232adaa;
* ComfyUI 0.3.64 (a125cd84b054a57729b5eecab930ca9408719832): ``ModelPatcher`` only, no ``is_dynamic``,
  ``InterruptProcessingException(Exception)``.

Use ``make_folder_paths(models_dir)`` / ``install_comfy(monkeypatch)`` and put the returned modules
into ``sys.modules`` with monkeypatch so they vanish after the test.
"""
from __future__ import annotations

import os
import sys
import types
import weakref

import torch

PT_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}


def make_folder_paths(models_dir: str) -> types.ModuleType:
    """A fresh fake ``folder_paths`` with ComfyUI's semantics for the functions the pack uses."""
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(models_dir)
    fp.supported_pt_extensions = set(PT_EXTENSIONS)
    fp.folder_names_and_paths = {
        "checkpoints": ([os.path.join(models_dir, "checkpoints")], set(PT_EXTENSIONS)),
    }
    fp.filename_list_cache = {}
    temp_dir = os.path.join(os.path.dirname(str(models_dir)), "temp")

    def add_model_folder_path(folder_name, full_folder_path, is_default=False):
        # as ComfyUI does for extra_paths.yaml / extra_model_paths.yaml: a new entry gets an EMPTY extension set
        folder_name = {"unet": "diffusion_models", "clip": "text_encoders"}.get(folder_name, folder_name)
        if folder_name in fp.folder_names_and_paths:
            paths = fp.folder_names_and_paths[folder_name][0]
            if full_folder_path in paths:
                if is_default and paths[0] != full_folder_path:
                    paths.remove(full_folder_path)
                    paths.insert(0, full_folder_path)
            elif is_default:
                paths.insert(0, full_folder_path)
            else:
                paths.append(full_folder_path)
        else:
            fp.folder_names_and_paths[folder_name] = ([full_folder_path], set())

    def get_folder_paths(folder_name):
        return fp.folder_names_and_paths[folder_name][0][:]

    def get_filename_list(folder_name):
        paths, exts = fp.folder_names_and_paths[folder_name]
        out = set()
        for d in paths:
            if not os.path.isdir(d):
                continue
            for root, _dirs, files in os.walk(d):
                for f in files:
                    rel = os.path.relpath(os.path.join(root, f), d)
                    if len(exts) == 0 or os.path.splitext(rel)[1].lower() in exts:
                        out.add(rel)
        return sorted(out)

    def get_full_path(folder_name, filename):
        if folder_name not in fp.folder_names_and_paths:
            return None
        filename = os.path.relpath(os.path.join("/", filename), "/")
        for d in fp.folder_names_and_paths[folder_name][0]:
            p = os.path.join(d, filename)
            if os.path.isfile(p):
                return p
        return None

    output_dir = os.path.join(os.path.dirname(str(models_dir)), "output")

    def get_save_image_path(filename_prefix, output_dir_, image_width=0, image_height=0):
        # ComfyUI's numbering: the next counter after the highest "<filename>_<counter>_" in the folder
        filename_prefix = filename_prefix.replace("%width%", str(image_width)).replace("%height%", str(image_height))
        subfolder = os.path.dirname(os.path.normpath(filename_prefix))
        filename = os.path.basename(os.path.normpath(filename_prefix))
        full = os.path.join(output_dir_, subfolder)
        if os.path.commonpath((output_dir_, os.path.abspath(full))) != output_dir_:
            raise Exception("Saving image outside the output folder is not allowed.")
        counters = []
        for name in os.listdir(full) if os.path.isdir(full) else []:
            head, _, rest = name.partition(filename + "_")
            if head == "" and rest.split("_")[0].isdigit():
                counters.append(int(rest.split("_")[0]))
        os.makedirs(full, exist_ok=True)
        return full, filename, max(counters, default=0) + 1, subfolder, filename_prefix

    fp.get_temp_directory = lambda: temp_dir  # ComfyUI/temp: served by /view?type=temp
    fp.get_output_directory = lambda: output_dir
    fp.get_save_image_path = get_save_image_path
    fp.add_model_folder_path = add_model_folder_path
    fp.get_folder_paths = get_folder_paths
    fp.get_filename_list = get_filename_list
    fp.get_full_path = get_full_path
    return fp


def load_extra_path_config(fp: types.ModuleType, yaml_path: str) -> None:
    """``utils.extra_config.load_extra_path_config``: every ``<section>: {base_path, is_default, <folder>:
    "path\\npath"}`` entry of the yaml goes to ``folder_paths.add_model_folder_path`` (relative paths
    against ``base_path``, else against the yaml's own folder)."""
    import yaml

    with open(yaml_path, encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    here = os.path.dirname(os.path.abspath(yaml_path))
    for section in config.values():
        if not section:
            continue
        section = dict(section)
        base = section.pop("base_path", None)
        if base is not None:
            base = os.path.expandvars(os.path.expanduser(base))
            base = base if os.path.isabs(base) else os.path.abspath(os.path.join(here, base))
        is_default = section.pop("is_default", False)
        for folder, paths in section.items():
            for line in str(paths).split("\n"):
                if not line:
                    continue
                full = os.path.join(base, line) if base else (line if os.path.isabs(line) else
                                                              os.path.abspath(os.path.join(here, line)))
                fp.add_model_folder_path(folder, os.path.normpath(full), is_default)


def apply_custom_paths(fp: types.ModuleType, install_dir: str) -> None:
    """``main.py``'s ``apply_custom_paths`` (2026), run before any custom node is imported:
    ``extra_paths.yaml`` when present (then ``extra_model_paths.yaml`` is ignored, with a warning),
    else ``extra_model_paths.yaml``."""
    new, old = os.path.join(install_dir, "extra_paths.yaml"), os.path.join(install_dir, "extra_model_paths.yaml")
    if os.path.isfile(new):
        load_extra_path_config(fp, new)
    elif os.path.isfile(old):
        load_extra_path_config(fp, old)


class InterruptProcessingException(BaseException):
    """2026 cores (``comfy/model_management.py`` @ 02b2b38): a BaseException, so ``except Exception`` does
    not swallow a Cancel."""


class LegacyInterruptProcessingException(Exception):
    """ComfyUI 0.3.64's ``InterruptProcessingException`` (an ``Exception``): what ``core="0.3.64"`` raises."""


CORES = ("2026", "0.3.64")


def _set_attr(obj, path: str, value, buffer: bool = False):
    """``comfy.utils.set_attr_param`` / ``set_attr_buffer``: replace the tensor at a dotted path (a fresh
    frozen Parameter, or a registered buffer); returns the previous one."""
    owner, _, name = path.rpartition(".")
    module = obj.get_submodule(owner)
    prev = getattr(module, name)
    if buffer:
        module.register_buffer(name, value, persistent=name not in module._non_persistent_buffers_set)
    else:
        setattr(module, name, torch.nn.Parameter(value, requires_grad=False))
    return prev


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


#: ComfyUI's VRAM command-line states, as ``install_comfy(vram=...)`` takes them: ``--gpu-only``,
#: ``--highvram``, none (normal), ``--lowvram``, ``--novram``, ``--cpu``.
VRAM_STATES = ("gpu-only", "highvram", "normal", "lowvram", "novram", "cpu")


class _WeakList:
    """``ns.patchers``: every patcher made, in order, held weakly (a record must not keep a model alive that
    core would free); an entry is None once its patcher was freed."""

    def __init__(self):
        self._refs = []

    def append(self, item):
        self._refs.append(weakref.ref(item))

    def __len__(self):
        return len(self._refs)

    def __getitem__(self, index):
        return self._refs[index]()

    def __iter__(self):
        return (ref() for ref in self._refs)


def install_comfy(monkeypatch, device="cpu", interrupt_after=None, dynamic=False, fp16_ok=None, bf16_ok=None,
                  intermediate_dtype=None, core="2026", vram="normal"):
    """Install fake ``comfy``, ``comfy.model_management``, ``comfy.model_patcher``, ``comfy.utils``.

    Returns a namespace with: ``calls`` (list of (name, args) tuples recorded), ``progress`` (list of
    (value, total) updates), ``patchers`` (created ModelPatcher stand-ins), ``loaded`` (core's
    ``current_loaded_models``), ``checks`` (interrupt checks so far), ``interrupt_after`` (the user presses
    Cancel at the n-th check, 1-based) and ``interrupt_when`` (``ns -> bool``, checked at every check until
    it is true once: then the user presses Cancel), ``interrupted`` (core's ``interrupt_processing`` flag) and
    ``cancel()`` (press Cancel now: ``interrupt_current_processing()``). As in core
    (``comfy/model_management.py`` 0.3.64 @ a125cd84 lines 1406-1430, 2026 @ 02b2b38 the same), one Cancel
    raises once: ``throw_exception_if_processing_interrupted`` clears the flag when it raises, so code that
    swallowed the exception would run on.
    ``ns.InterruptProcessingException`` is the class raised. As in core, every progress-bar update is also
    an interrupt check (main.py's progress hook calls ``throw_exception_if_processing_interrupted``).

    ``core="2026"`` (default): ``InterruptProcessingException`` is a BaseException, ModelPatcher has
    ``is_dynamic()``, ``comfy.model_patcher.CoreModelPatcher`` exists (``ModelPatcher``, or with
    ``dynamic=True`` the ``ModelPatcherDynamic`` main.py swaps in when dynamic VRAM is on) and
    ``intermediate_dtype()`` exists. ``core="0.3.64"``: ModelPatcher only, no ``is_dynamic``, no
    ``intermediate_dtype``, an ``Exception`` interrupt.

    The patchers follow core's rules for plain torch layers (no ``comfy.ops`` casting):

    * ``ModelPatcher``: a full load moves every module (``model.to``), an already loaded model is not
      loaded again, ``partially_unload`` moves leaf modules back, ``detach`` moves everything back.
    * ``ModelPatcherDynamic``: a CPU load device gets a plain ``ModelPatcher`` (``__new__``); ``load`` first
      puts earlier copies back (``restore_loaded_backups``), then copies every parameter of a *leaf* module
      and every buffer to the device (originals kept as backups, the copies counted as loaded memory) and
      moves parameters owned by modules *with* children in place (``param.data = ...``), without a backup
      and uncounted; offloading puts the backups back and leaves those in place.
    * ``load_models_gpu`` loads a model again on every call (core's ``LoadedModel.model_load``); the
      stand-in's devices never run out of memory, so loading unloads nothing else; ``unload_all_models``
      frees everything (``free_memory(1e30, device)`` on every device).

    ``fp16_ok`` / ``bf16_ok``: ``device -> bool`` for ``should_use_fp16`` / ``should_use_bf16`` (default:
    any non-CPU device); ``intermediate_dtype``: what ``intermediate_dtype()`` returns (2026's
    ``--fp16-intermediates``; float32 otherwise).

    ``vram``: one of :data:`VRAM_STATES`, the command-line flag core was started with, mapped to core's
    ``vram_state`` as ``comfy/model_management.py`` does at import (0.3.64 @ a125cd84 lines 380-402, the same
    in 2026 @ 02b2b38): ``--lowvram`` LOW_VRAM, ``--novram`` NO_VRAM, ``--highvram`` / ``--gpu-only``
    HIGH_VRAM, ``--cpu`` (or a CPU torch device) DISABLED with the CPU as torch device. It decides
    ``unet_offload_device()`` (the torch device under HIGH_VRAM, else the CPU), ``intermediate_device()``
    (the torch device with ``--gpu-only``) and each model's weight budget in ``load_models_gpu`` (0.3.64
    lines 668-686, 2026 the same rule): 0 (= load completely) unless LOW/NORMAL without
    ``force_full_load`` (not modelled: the stand-in has no free-memory figures and raises), and **0.1 byte
    under NO_VRAM even with force_full_load**, within which ``ModelPatcher.load`` moves no plain torch
    module at all (0.3.64 lines 636-735: only a module that fits the budget, or one with
    ``comfy_cast_weights``, which streams, is handled) yet records ``model.device = device_to``.
    """
    if core not in CORES:
        raise ValueError(f"core must be one of {CORES}")
    newer = core == "2026"
    if dynamic and not newer:
        raise ValueError("dynamic VRAM exists in 2026 cores only")
    if vram not in VRAM_STATES:
        raise ValueError(f"vram must be one of {VRAM_STATES}")
    if vram == "cpu":
        device = "cpu"  # --cpu: cpu_state CPU, get_torch_device() is the CPU
    interrupt_cls = InterruptProcessingException if newer else LegacyInterruptProcessingException
    ns = types.SimpleNamespace(calls=[], progress=[], patchers=_WeakList(), checks=0, loaded=[],
                               InterruptProcessingException=interrupt_cls)
    ns.interrupt_after, ns.interrupt_when, ns.interrupted = interrupt_after, None, False

    comfy = types.ModuleType("comfy")
    comfy.__path__ = []  # a package
    mm = types.ModuleType("comfy.model_management")
    mm.InterruptProcessingException = interrupt_cls
    mm.get_torch_device = lambda: torch.device(device)

    class VRAMState:
        """core's VRAMState enum (the values the stand-in uses)."""
        DISABLED, NO_VRAM, LOW_VRAM, NORMAL_VRAM, HIGH_VRAM = 0, 1, 2, 3, 4

    mm.VRAMState = VRAMState
    if torch.device(device).type == "cpu":  # cpu_state != GPU -> DISABLED
        mm.vram_state = VRAMState.DISABLED
    else:
        mm.vram_state = {"gpu-only": VRAMState.HIGH_VRAM, "highvram": VRAMState.HIGH_VRAM,
                         "normal": VRAMState.NORMAL_VRAM, "lowvram": VRAMState.LOW_VRAM,
                         "novram": VRAMState.NO_VRAM}[vram]
    # intermediate_device(): the torch device with --gpu-only; unet_offload_device(): it under HIGH_VRAM
    mm.intermediate_device = lambda: torch.device(device) if vram == "gpu-only" else torch.device("cpu")
    mm.unet_offload_device = lambda: (torch.device(device) if mm.vram_state == VRAMState.HIGH_VRAM
                                      else torch.device("cpu"))
    mm.is_device_type = lambda d, t: getattr(d, "type", None) == t
    mm.is_device_cpu = lambda d: mm.is_device_type(d, "cpu")
    mm.module_size = lambda m: sum(_nbytes(t) for t in m.state_dict().values())
    def gpu(d):
        return torch.device(d).type != "cpu"

    mm.should_use_fp16 = lambda device=None, **kw: (fp16_ok or gpu)(device)
    mm.should_use_bf16 = lambda device=None, **kw: (bf16_ok or gpu)(device)
    if newer:
        mm.intermediate_dtype = lambda: intermediate_dtype or torch.float32
    elif intermediate_dtype is not None:
        raise ValueError("intermediate_dtype() exists in 2026 cores only")

    class LoadedModel:
        """core's LoadedModel: one entry of current_loaded_models (equal when it holds the same patcher). It
        holds its patcher weakly (model_management.py 0.3.64 lines 448-470, ``_set_model``: ``weakref.ref``):
        core's list keeps no model alive; an entry whose patcher was freed is dead and dropped
        (``cleanup_models``)."""

        def __init__(self, patcher):
            self._model, self.device = weakref.ref(patcher), patcher.load_device

        @property
        def model(self):
            return self._model()

        def __eq__(self, other):
            return self.model is other.model

        def model_load(self, lowvram_model_memory=0, force_patch_weights=False):
            self.model.partially_load(self.device, lowvram_model_memory or 1e32, force_patch_weights)
            return self.model.model

        def model_unload(self, memory_to_free=None, unpatch_weights=True):
            if memory_to_free is not None and memory_to_free < self.model.loaded_size():
                if self.model.partially_unload(self.model.offload_device, memory_to_free) >= memory_to_free:
                    return False
            self.model.detach(unpatch_weights)
            return True

    def cleanup_models():
        ns.loaded[:] = [e for e in ns.loaded if e.model is not None]

    def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False):
        cleanup_models()
        ns.calls.append(("load_models_gpu", list(models), memory_required, force_full_load))
        to_load = []
        for patcher in dict.fromkeys(models):
            entry = LoadedModel(patcher)
            to_load.append(ns.loaded[ns.loaded.index(entry)] if entry in ns.loaded else entry)
        for entry in to_load:  # the model itself is a clone of itself: taken out and loaded again
            for old in [e for e in ns.loaded if entry.model.is_clone(e.model)]:
                ns.loaded.remove(old)
                old.model.detach(unpatch_all=False)
        for entry in to_load:  # model_management.py 0.3.64 lines 668-687
            state = VRAMState.DISABLED if mm.is_device_cpu(entry.model.load_device) else mm.vram_state
            lowvram_model_memory = 0
            if state in (VRAMState.LOW_VRAM, VRAMState.NORMAL_VRAM) and not force_full_load:
                raise NotImplementedError("the stand-in has no free-memory figures for a partial load (the pack "
                                          "asks for force_full_load)")
            if state == VRAMState.NO_VRAM:
                lowvram_model_memory = 0.1
            entry.model_load(lowvram_model_memory, force_patch_weights)
            ns.loaded.insert(0, entry)

    def free_memory(memory_required, device, keep_loaded=(), for_dynamic=False, **kw):
        """core's free_memory on a device with no free memory of its own: unload until memory_required is
        free (a dynamic model is left alone when the memory is for another dynamic model)."""
        ns.calls.append(("free_memory", memory_required, str(device)))
        cleanup_models()
        unloaded = []
        for entry in list(ns.loaded):
            if (device is not None and entry.device != device) or entry in keep_loaded:
                continue
            if for_dynamic and getattr(entry.model, "is_dynamic", lambda: False)():
                continue
            if entry.model_unload(memory_required):
                ns.loaded.remove(entry)
                unloaded.append(entry)
        return unloaded

    def unload_all_models():
        ns.calls.append(("unload_all_models",))
        for dev in dict.fromkeys(e.device for e in ns.loaded):
            free_memory(1e30, dev)

    def interrupt_current_processing(value=True):
        ns.interrupted = bool(value)

    def throw_exception_if_processing_interrupted():
        ns.checks += 1
        if ns.interrupt_after is not None and ns.checks == ns.interrupt_after:
            interrupt_current_processing()  # the user's Cancel, once
        if ns.interrupt_when is not None and ns.interrupt_when(ns):
            ns.interrupt_when = None
            interrupt_current_processing()
        if ns.interrupted:  # core: clear the flag, then raise
            ns.interrupted = False
            raise interrupt_cls()

    mm.load_models_gpu = load_models_gpu
    mm.load_model_gpu = lambda model: load_models_gpu([model])
    mm.free_memory = free_memory
    mm.unload_all_models = unload_all_models
    mm.loaded_models = lambda only_currently_used=False: [e.model for e in ns.loaded if e.model is not None]
    mm.cleanup_models = cleanup_models
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.processing_interrupted = lambda: ns.interrupted
    mm.interrupt_current_processing = interrupt_current_processing
    ns.cancel = interrupt_current_processing

    mp = types.ModuleType("comfy.model_patcher")

    class ModelPatcher:
        """core's ModelPatcher for plain torch layers, full loads (what the pack asks for)."""

        def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False,
                     fast_disk=False):
            self.model, self.load_device, self.offload_device, self.size = model, load_device, offload_device, size
            self.backup, self.backup_buffers, self.patches, self.parent = {}, {}, {}, None
            self.detached = False
            if getattr(model, "device", None) is None:
                model.device = offload_device
            for attr, value in (("model_loaded_weight_memory", 0), ("model_lowvram", False)):
                if not hasattr(model, attr):
                    setattr(model, attr, value)
            ns.patchers.append(self)

        def model_size(self):
            if self.size <= 0:
                self.size = mm.module_size(self.model)
            return self.size

        def loaded_size(self):
            return self.model.model_loaded_weight_memory

        def current_loaded_device(self):
            return self.model.device

        def is_clone(self, other):
            return hasattr(other, "model") and self.model is other.model

        def model_patches_models(self):
            return []

        def _load_list(self, for_dynamic=False, default_device=None):
            """core's _load_list: ``(module_mem, name, module, own params)`` of every module whose parameters
            are all its own (leaf modules); a module with children *and* own parameters is left out, and
            with ``default_device`` its own parameters are moved there in place (no backup)."""
            out = []
            for name, module in self.model.named_modules():
                own = dict(module.named_parameters(recurse=False))
                non_leaf = any(n not in own for n, _ in module.named_parameters(recurse=True))
                if non_leaf and default_device is not None:
                    for param in own.values():
                        param.data = param.data.to(device=default_device)
                if not non_leaf and own:
                    out.append((mm.module_size(module), name, module, own))
            return out

        def load(self, device_to=None, lowvram_model_memory=0, force_patch_weights=False, full_load=False):
            """model_patcher.py 0.3.64 lines 636-735 for plain torch modules (2026: the same, with a stricter
            fit that also counts a stream buffer): the largest modules first, a module is loaded completely
            only if it fits the budget (or ``full_load``); a plain module never streams, so no module is
            "lowvram" and the model counts as completely loaded, with ``model.device = device_to``, even
            when nothing moved."""
            mem_counter, load_completely = 0, []
            for module_mem, _, module, _ in sorted(self._load_list(), key=lambda e: (e[0], e[1]), reverse=True):
                if hasattr(module, "comfy_cast_weights"):
                    raise NotImplementedError("the stand-in covers plain torch layers only")
                if full_load or mem_counter + module_mem < lowvram_model_memory:
                    mem_counter += module_mem
                    load_completely.append(module)
            for module in load_completely:
                module.comfy_patched_weights = True
                module.to(device_to)
            self.model.model_lowvram = False  # lowvram_counter == 0: "loaded completely"
            if full_load:
                self.model.to(device_to)  # everything, non-leaf parameters included
                mem_counter = self.model_size()
            self.model.device = device_to
            self.model.model_loaded_weight_memory = mem_counter

        def partially_load(self, device_to, extra_memory=0, force_patch_weights=False):
            # model_patcher.py 0.3.64 lines 865-888: a completely loaded model stays; else load within what
            # is loaded + extra_memory, completely when that exceeds the model's size
            ns.calls.append(("partially_load", self, str(device_to)))
            if not self.model.model_lowvram and self.model.model_loaded_weight_memory > 0:
                return 0  # already loaded: nothing moves
            used = self.model.model_loaded_weight_memory
            self.load(device_to, used + extra_memory, force_patch_weights,
                      full_load=used + extra_memory > self.model_size())
            return self.model.model_loaded_weight_memory - used

        def partially_unload(self, device_to, memory_to_free=0, force_patch_weights=False):
            freed = 0
            for mem, _, module, _ in sorted(self._load_list(), key=lambda e: e[0]):
                if freed > memory_to_free:
                    break
                if getattr(module, "comfy_patched_weights", False):
                    module.to(device_to)  # leaf modules only: a non-leaf module's parameters stay
                    module.comfy_patched_weights = False
                    freed += mem
            self.model.model_lowvram = True
            self.model.model_loaded_weight_memory -= freed
            return freed

        def unpatch_model(self, device_to=None, unpatch_weights=True):
            if unpatch_weights:
                if device_to is not None:
                    self.model.to(device_to)
                    self.model.device = device_to
                self.model.model_loaded_weight_memory, self.model.model_lowvram = 0, False
                for module in self.model.modules():
                    module.__dict__.pop("comfy_patched_weights", None)

        def detach(self, unpatch_all=True):
            self.detached = True
            if unpatch_all:
                self.unpatch_model(self.offload_device, unpatch_weights=True)
            return self.model

    if newer:
        ModelPatcher.is_dynamic = lambda self: False

    class ModelPatcherDynamic(ModelPatcher):
        """core's dynamic-VRAM patcher, for plain torch layers (see install_comfy's docstring)."""

        def __new__(cls, model=None, load_device=None, offload_device=None, size=0, weight_inplace_update=False,
                    fast_disk=False):
            if load_device is not None and mm.is_device_cpu(load_device):
                return ModelPatcher(model, load_device, offload_device, size, weight_inplace_update, fast_disk)
            return super().__new__(cls)

        def is_dynamic(self):
            return True

        def restore_loaded_backups(self):
            restored = self.model.model_loaded_weight_memory
            for key in list(self.backup):
                _set_attr(self.model, key, self.backup.pop(key))
            for key in list(self.backup_buffers):
                _set_attr(self.model, key, self.backup_buffers.pop(key), buffer=True)
            self.model.model_loaded_weight_memory = 0
            return restored

        def load(self, device_to=None, lowvram_model_memory=0, force_patch_weights=False, full_load=False,
                 dirty=False):
            assert not force_patch_weights and not full_load and device_to == self.load_device
            self.restore_loaded_backups()
            for _, name, module, own in self._load_list(for_dynamic=True, default_device=device_to):
                if hasattr(module, "comfy_cast_weights"):
                    raise NotImplementedError("the stand-in covers plain torch layers only")
                for pname, weight in own.items():
                    key = f"{name}.{pname}" if name else pname
                    self.backup.setdefault(key, weight)
                    copy = weight.to(device=device_to)
                    _set_attr(self.model, key, copy)
                    self.model.model_loaded_weight_memory += _nbytes(copy)
            for key, buf in list(self.model.named_buffers(recurse=True)):
                self.backup_buffers.setdefault(key, buf)
                copy = buf.to(device=device_to)
                _set_attr(self.model, key, copy, buffer=True)
                self.model.model_loaded_weight_memory += _nbytes(copy)
            self.model.device = device_to

        def partially_load(self, device_to, extra_memory=0, force_patch_weights=False):
            ns.calls.append(("partially_load", self, str(device_to)))
            self.unpatch_model(self.offload_device, unpatch_weights=False)
            self.load(device_to)
            return None

        def partially_unload(self, device_to, memory_to_free=0, force_patch_weights=False):
            assert self.load_device != torch.device("cpu")
            return self.restore_loaded_backups() if memory_to_free > 0 else 0  # (no vbar weights here)

        def unpatch_model(self, device_to=None, unpatch_weights=True):
            if unpatch_weights:
                self.partially_unload(None, 1e32)

    mp.ModelPatcher = ModelPatcher
    if newer:
        mp.ModelPatcherDynamic = ModelPatcherDynamic
        mp.CoreModelPatcher = ModelPatcherDynamic if dynamic else ModelPatcher

    ut = types.ModuleType("comfy.utils")

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total, self.current = total, 0

        def update_absolute(self, value, total=None, preview=None):
            if total is not None:
                self.total = total
            self.current = min(value, self.total)
            ns.progress.append((self.current, self.total))
            # main.py's progress hook (hijack_progress) checks for a Cancel on every update
            throw_exception_if_processing_interrupted()

        def update(self, value):
            self.update_absolute(self.current + value)

    ut.ProgressBar = ProgressBar
    ut.set_attr_param = lambda obj, attr, value: _set_attr(obj, attr, value)
    ut.set_attr_buffer = lambda obj, attr, value: _set_attr(obj, attr, value, buffer=True)
    comfy.model_management, comfy.model_patcher, comfy.utils = mm, mp, ut
    for name, mod in (("comfy", comfy), ("comfy.model_management", mm), ("comfy.model_patcher", mp),
                      ("comfy.utils", ut)):
        monkeypatch.setitem(sys.modules, name, mod)
    return ns
