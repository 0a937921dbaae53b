"""Load BEN node: a BEN2 checkpoint from models/BEN -> BEN_MODEL (cached and shared)."""
from __future__ import annotations

import logging
import os

import torch

from ..ben_core.devices import PRECISIONS
from ..ben_core.devices import resolve_precision as _resolve_precision
from ..ben_core.model.ben2 import BENBase
from ..ben_core.model.weights import OFFICIAL_FILENAME
from . import catalogue, comfy_env, model_cache, widgets
from .comfy_env import io

log = logging.getLogger("ComfyUI-BEN2")

DEVICES = ["auto", "cpu"]
PRECISION_CHOICES = ["auto"] + list(PRECISIONS)
#: Load BEN's compile widget -> the predictor's torch.compile mode.
COMPILE_CHOICES = {"off": None, "torch.compile": "default", "torch.compile + CUDA graphs": "reduce-overhead"}
#: The resolutions BEN2 runs at, in words for a tooltip ("A, B or C", best first).
_SIZES_IN_WORDS = ", ".join(map(str, BENBase.working_sizes[:-1])) + f" or {BENBase.working_sizes[-1]}"


def resolve_device(choice: str) -> torch.device:
    """"auto" -> ComfyUI's compute device (CUDA/MPS/XPU/... or CPU), "cpu" -> CPU."""
    if choice == "auto":
        return comfy_env.torch_device()
    if choice == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device must be one of {DEVICES}, got {choice!r}")


def resolve_precision(choice: str, device: torch.device) -> torch.dtype:
    """Inference dtype for a precision choice on ``device``: ``ben_core.devices.resolve_precision`` asking
    ComfyUI whether fp16 / bf16 is advisable on that GPU ("auto": fp16, else bf16, else fp32; on the CPU
    bf16 where it has native bf16, else fp32). An explicit fp16 becomes fp32 on the CPU and on GPUs ComfyUI
    advises against fp16 for (GTX 16xx...). The predictor recomputes any chunk with a non-finite
    half-precision result in fp32."""
    fp16_ok, bf16_ok = comfy_env.half_precision_checks()
    if choice == "fp16" and device.type != "cpu" and fp16_ok is not None and not fp16_ok(device):
        log.warning("BEN2: ComfyUI advises against fp16 on %s (e.g. GTX 16xx, where BEN2 gives blank masks in "
                    "fp16); using fp32", device)
        return torch.float32
    return _resolve_precision(choice, device, fp16_ok=fp16_ok, bf16_ok=bf16_ok)


def model_choices() -> list:
    """Files in the BEN model folders, plus the official file name (downloadable) if it is missing."""
    files = comfy_env.list_model_files()
    if OFFICIAL_FILENAME not in files:
        files = files + [OFFICIAL_FILENAME]
    return files


def find_or_download(model_name: str, download: bool) -> str:
    """Full path of ``model_name``; downloads the official weights when allowed and missing."""
    try:
        return comfy_env.resolve_model_path(model_name)
    except FileNotFoundError:
        if not download or model_name != OFFICIAL_FILENAME:
            hint = (f"Turn on 'download_official_weights' to fetch {OFFICIAL_FILENAME} from "
                    "huggingface.co/PramaLLC/BEN2, or put" if model_name == OFFICIAL_FILENAME else "Put")
            raise FileNotFoundError(
                f"BEN model {model_name!r} is not in {comfy_env.model_folders()}. {hint} the checkpoint "
                "(BEN2_Base.pth or model.safetensors) into one of these folders and refresh (press 'r').") from None
    from ..ben_core.model.weights import download_official_weights

    target = comfy_env.download_folder()
    os.makedirs(target, exist_ok=True)
    log.info("BEN2: downloading the official weights (PramaLLC/BEN2) into %s", target)
    return str(download_official_weights(local_dir=target))


class BEN2LoadModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        choices = model_choices()
        return comfy_env.schema(
            **catalogue.LOAD_MODEL.schema_names(),
            category=widgets.CATEGORY,
            description=("Loads a BEN2 background-removal network from ComfyUI/models/BEN (also folders declared as "
                         "'BEN' in the extra-paths yaml your ComfyUI reads: extra_model_paths.yaml, or "
                         "extra_paths.yaml on "
                         "the newer cores that read it). The network is "
                         "loaded once and shared by every node and run that asks for the same file, device and "
                         "precision, and ComfyUI may offload it when other models need the VRAM. Its second output "
                         "feeds core's Remove Background node."),
            search_aliases=widgets.SEARCH_ALIASES + ["load model", "ben2"],
            inputs=[
                io.Combo.Input("model_name", options=choices, default=choices[0],
                               tooltip="Checkpoint in models/BEN: BEN2_Base.pth or model.safetensors from "
                                       "huggingface.co/PramaLLC/BEN2. 'model.safetensors' is listed even when absent; "
                                       "turn on download_official_weights to fetch it."),
                io.Combo.Input("device", options=DEVICES, default="auto",
                               tooltip="auto: the device ComfyUI computes on (your GPU if it has one); cpu: always "
                                       f"the CPU (slow: tens of seconds per image at {BENBase.native_size})."),
                io.Combo.Input("precision", options=PRECISION_CHOICES, default="auto",
                               tooltip="auto: fp16 on GPUs where ComfyUI uses fp16, else bf16 where it advises it, "
                                       "else fp32; on the CPU bf16 where the CPU has native bf16 (AVX512-BF16/AMX), "
                                       "else fp32. fp16 is never used where ComfyUI advises against it (GTX 16xx...: "
                                       "blank masks), even when chosen. A batch that comes out NaN/inf in fp16/bf16 "
                                       "is recomputed in fp32."),
                io.Boolean.Input("download_official_weights", default=False,
                                 tooltip="Opt-in: if model_name is 'model.safetensors' and it is missing, download it "
                                         "once from the official huggingface.co/PramaLLC/BEN2 repository into the "
                                         "first BEN model folder (ComfyUI/models/BEN unless extra_paths.yaml or "
                                         "extra_model_paths.yaml says otherwise)."),
                comfy_env.advanced(io.Combo.Input(
                    "compile", options=list(COMPILE_CHOICES), default="off", optional=True,
                    tooltip="Expert: run the network through torch.compile ('+ CUDA graphs' also captures a CUDA "
                            "graph per image size and batch). The first run of each size compiles (minutes); later "
                            "runs reuse it. Off by default: only worth it where measured faster "
                            "(benchmarks/gpu_check.py); on the CPU it is slower.")),
            ],
            outputs=[
                widgets.BEN_MODEL.Output(display_name="ben_model",
                                         tooltip="The loaded BEN2 network, for Remove Background (BEN2)."),
                comfy_env.BACKGROUND_REMOVAL.Output(
                    display_name="bg_removal_model",
                    tooltip="The same network as a background-removal model for core's Remove Background node "
                            f"(ComfyUI 2026 cores); its resolution should be {_SIZES_IN_WORDS} (others use the "
                            "nearest)."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, model_name, device="auto", precision="auto", download_official_weights=False,
                           compile="off"):
        """Fingerprint of the checkpoint file (path, size, mtime), so ComfyUI re-runs the loader when the file is
        replaced on disk instead of reusing its cached BEN_MODEL; "" while the file is missing (never raises)."""
        try:
            return ":".join(str(v) for v in model_cache.file_key(comfy_env.resolve_model_path(model_name)))
        except Exception:  # missing file: execute() reports it with the folders and the fix
            return ""

    @classmethod
    def execute(cls, model_name, device="auto", precision="auto", download_official_weights=False, compile="off"):
        if compile not in COMPILE_CHOICES:
            raise ValueError(f"compile must be one of {list(COMPILE_CHOICES)}, got {compile!r}")
        dev = resolve_device(device)
        dtype = resolve_precision(precision, dev)
        path = find_or_download(model_name, bool(download_official_weights))
        model = model_cache.get_model(path, dev, dtype, COMPILE_CHOICES[compile])
        return io.NodeOutput(model, model)
