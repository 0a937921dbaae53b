"""Stand-ins for the parts of ComfyUI the BEN2 nodes touch (folder_paths, comfy.model_management,
comfy.model_patcher, comfy.utils), written for these tests: small, recording, no ComfyUI needed.

Use ``make_folder_paths(models_dir)`` / ``install_comfy(monkeypatch)`` and put the returned modules
into ``sys.modules`` with monkeypatch so they vanish after the test.
"""
from __future__ import annotations

import os
import sys
import types

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
        # as ComfyUI does for extra_model_paths.yaml: a new entry gets an EMPTY extension set
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


class InterruptProcessingException(Exception):
    pass


def install_comfy(monkeypatch, device="cpu", interrupt_after=None, dynamic=False, fp16_ok=None, bf16_ok=None,
                  intermediate_dtype=None):
    """Install fake ``comfy``, ``comfy.model_management``, ``comfy.model_patcher``, ``comfy.utils``.

    Returns a namespace with: ``calls`` (list of (name, args) tuples recorded), ``progress`` (list of
    (value, total) updates), ``patchers`` (created ModelPatcher stand-ins), and ``interrupt`` (set
    ``.interrupt.after = n`` to raise InterruptProcessingException on the n-th check, 1-based).

    ``dynamic=True`` behaves like a 2026 core with dynamic VRAM on: ``comfy.model_patcher.CoreModelPatcher``
    is a ``ModelPatcherDynamic`` whose ``is_dynamic()`` is True; ``load_models_gpu`` loads it as core does for
    plain torch layers (every parameter and buffer replaced by a copy, the originals kept as backups) and
    ``unload_all_models`` puts the backups back. Otherwise the module is 0.3.64-like (``ModelPatcher`` only,
    no ``is_dynamic``, no ``intermediate_dtype``). ``fp16_ok`` / ``bf16_ok``: ``device -> bool`` for
    ``should_use_fp16`` / ``should_use_bf16`` (default: any non-CPU device); ``intermediate_dtype``: a dtype
    for ``intermediate_dtype()`` (2026 cores' ``--fp16-intermediates``).
    """
    ns = types.SimpleNamespace(calls=[], progress=[], patchers=[], checks=0)
    ns.interrupt_after = interrupt_after

    comfy = types.ModuleType("comfy")
    comfy.__path__ = []  # a package
    mm = types.ModuleType("comfy.model_management")
    mm.InterruptProcessingException = InterruptProcessingException
    mm.get_torch_device = lambda: torch.device(device)
    mm.intermediate_device = lambda: torch.device("cpu")
    mm.unet_offload_device = lambda: torch.device("cpu")
    gpu = (lambda d: torch.device(d).type != "cpu")
    mm.should_use_fp16 = lambda device=None, **kw: (fp16_ok or gpu)(device)
    mm.should_use_bf16 = lambda device=None, **kw: (bf16_ok or gpu)(device)
    if intermediate_dtype is not None:
        mm.intermediate_dtype = lambda: intermediate_dtype

    def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False):
        ns.calls.append(("load_models_gpu", list(models), memory_required, force_full_load))
        for patcher in models:
            if getattr(patcher, "is_dynamic", lambda: False)():
                patcher.partially_load(patcher.load_device)

    def unload_all_models():
        ns.calls.append(("unload_all_models",))
        for patcher in ns.patchers:
            if hasattr(patcher, "unload"):
                patcher.unload()

    def throw_exception_if_processing_interrupted():
        ns.checks += 1
        if ns.interrupt_after is not None and ns.checks >= ns.interrupt_after:
            raise InterruptProcessingException()

    mm.load_models_gpu = load_models_gpu
    mm.unload_all_models = unload_all_models
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted

    mp = types.ModuleType("comfy.model_patcher")

    class ModelPatcher:
        def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
            self.model, self.load_device, self.offload_device, self.size = model, load_device, offload_device, size
            self.detached = False
            ns.patchers.append(self)

        def detach(self, unpatch_all=True):
            self.detached = True
            return self.model

    mp.ModelPatcher = ModelPatcher

    class ModelPatcherDynamic(ModelPatcher):
        """Core's dynamic-VRAM patcher, for plain torch layers: loading swaps in copies, unloading swaps back."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.backup = {}

        def is_dynamic(self):
            return True

        def partially_load(self, device_to, extra_memory=0, force_patch_weights=False):
            self.unload()
            for name, tensor in list(self.model.named_parameters()) + list(self.model.named_buffers()):
                if tensor.device.type == "meta":
                    raise NotImplementedError(f"Cannot copy out of meta tensor {name}; no data!")
                owner, _, attr = name.rpartition(".")
                module = self.model.get_submodule(owner)
                self.backup[name] = (module, attr, tensor)
                copy = tensor.detach().to(device_to, copy=True)
                if isinstance(tensor, torch.nn.Parameter):
                    module._parameters[attr] = torch.nn.Parameter(copy, requires_grad=False)
                else:
                    module._buffers[attr] = copy
            ns.calls.append(("partially_load", self, str(device_to)))

        def unload(self):
            for module, attr, tensor in self.backup.values():
                target = module._parameters if attr in module._parameters else module._buffers
                target[attr] = tensor
            self.backup.clear()

    if dynamic:
        mp.ModelPatcherDynamic = ModelPatcherDynamic
        mp.CoreModelPatcher = ModelPatcherDynamic

    ut = types.ModuleType("comfy.utils")

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total, self.current = total, 0

        def update_absolute(self, value, total=None, preview=None):
            if total is not None:
                self.total = total
            self.current = min(value, self.total)
            ns.progress.append((self.current, self.total))

        def update(self, value):
            self.update_absolute(self.current + value)

    ut.ProgressBar = ProgressBar
    comfy.model_management, comfy.model_patcher, comfy.utils = mm, mp, ut
    for name, mod in (("comfy", comfy), ("comfy.model_management", mm), ("comfy.model_patcher", mp),
                      ("comfy.utils", ut)):
        monkeypatch.setitem(sys.modules, name, mod)
    return ns
