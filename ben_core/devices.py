"""Devices and precisions: the one resolver behind ``--device`` / ``--dtype``, Load BEN's widgets and the
benchmarks, and the accumulator dtype of numerically delicate sums.
"""
from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Callable, Optional

import torch

__all__ = ["PRECISIONS", "same_device", "accumulator_dtype", "cpu_native_bf16", "device_native_bf16", "mps_available",
           "resolve_device", "resolve_precision"]

#: Precision names users pick from, and the torch dtype each means.
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def accumulator_dtype(device) -> torch.dtype:
    """Dtype for sums that cancel badly in float32 (variances, merged statistics): float64, but
    float32 on MPS, which has no float64 (``.double()`` there raises)."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def mps_available() -> bool:
    """Whether Apple's MPS backend is usable in this PyTorch build."""
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def same_device(a: Optional[torch.device], b: Optional[torch.device]) -> bool:
    """Whether two devices are the same one (``cuda`` and ``cuda:<current>`` are, ``cpu`` and ``cpu:0`` are);
    False if either is None."""
    if a is None or b is None:
        return False
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return (a.index or 0) == (b.index or 0)

    def index(d: torch.device) -> int:
        return d.index if d.index is not None else torch.cuda.current_device()

    return index(a) == index(b)


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else MPS if available, else the CPU; any other name
    (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) -> that device, checked.

    Raises ValueError naming the device and the fix when it is not available here.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown device {name!r} ({e}); use auto, cpu, cuda or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name}: no CUDA device is available to this PyTorch build; use cpu")
    if device.type == "mps" and not mps_available():
        raise ValueError(f"device {name}: MPS is not available on this machine; use cpu")
    return device


#: /proc/cpuinfo flags of x86 bf16 matrix instructions (AVX512-BF16: Cooper Lake, Sapphire Rapids and later,
#: AMD Zen 4 and later; AMX-BF16: Sapphire Rapids and later).
_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def _cpuinfo_flags() -> frozenset:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


@lru_cache(maxsize=1)
def cpu_native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively (x86 AVX512-BF16 or AMX-BF16), where bf16
    autocast runs BEN2 faster than fp32; elsewhere PyTorch emulates bf16 and it is several times slower.

    Asks PyTorch's own CPU checks (``torch.cpu._is_avx512_bf16_supported`` / ``_is_amx_tile_supported``,
    what inductor asks) and, in builds without them, the flags of /proc/cpuinfo. Arm CPUs report False:
    their bf16 speed with BEN2 has not been measured. Cached: the CPU does not change while running.
    """
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(c is None for c in checks):
        return bool(_cpuinfo_flags() & _BF16_CPU_FLAGS)
    for check in checks:
        try:
            if check is not None and check():
                return True
        except RuntimeError:  # a build whose check cannot run here: treat as absent
            continue
    return False


def device_native_bf16(device) -> bool:
    """Whether ``device`` computes bf16 itself (not emulated): the CPU per :func:`cpu_native_bf16`; CUDA / ROCm
    per ``torch.cuda.is_bf16_supported(including_emulation=False)`` (the current CUDA device: NVIDIA from
    Ampere on); MPS from macOS 14 on (``torch.backends.mps.is_macos_or_newer(14, 0)``); XPU per
    ``torch.xpu.is_bf16_supported()``; any other device: False. Never raises."""
    device = torch.device(device)
    try:
        if device.type == "cpu":
            return cpu_native_bf16()
        if device.type == "cuda":
            try:
                return bool(torch.cuda.is_bf16_supported(including_emulation=False))
            except TypeError:  # a torch without the keyword
                return bool(torch.cuda.is_bf16_supported())
        if device.type == "mps":
            newer = getattr(torch.backends.mps, "is_macos_or_newer", None)
            return bool(newer(14, 0)) if newer is not None else False
        if device.type == "xpu":
            return bool(torch.xpu.is_bf16_supported())
    except (RuntimeError, AssertionError, AttributeError):  # no such device in this build or machine
        return False
    return False


def _default_fp16_ok(device: torch.device) -> bool:
    return device.type == "cuda"


def _default_bf16_ok(device: torch.device) -> bool:
    return False


def resolve_precision(name: str, device, *, fp16_ok: Optional[Callable[[torch.device], bool]] = None,
                      bf16_ok: Optional[Callable[[torch.device], bool]] = None) -> torch.dtype:
    """The compute dtype for a precision name on ``device``.

    ``"auto"``: on the CPU, bfloat16 where the CPU has native bf16 (:func:`cpu_native_bf16`), else float32
    (``benchmarks/bench_precision.py``, docs/performance.md: bf16 masks agree with fp32's within mean |Δ|
    0.01 and >= 98 % of pixels on the same side of 0.5; with native bf16 it is faster, without it several
    times slower); elsewhere float16 where ``fp16_ok(device)`` (default: CUDA), else
    bfloat16 where ``bf16_ok(device)`` (default: never), else float32. ComfyUI passes its own
    ``should_use_fp16`` / ``should_use_bf16`` here, so GPUs it marks fp16-broken never get fp16.
    ``"fp32"`` / ``"fp16"`` / ``"bf16"``: that dtype, except fp16 on the CPU, which becomes float32
    with a warning (CPU half-precision convolutions are several times slower than fp32, or missing), and
    bf16 on another device that does not support it, which becomes float32 with a warning: ``bf16_ok(device)``
    decides where given (ComfyUI's ``should_use_bf16``: no bf16 on NVIDIA before Ampere, AMD RDNA2 and older,
    MPS before macOS 14, DirectML, ``--force-fp32``), else :func:`device_native_bf16`. bf16 on a CPU without
    native bf16 is kept as asked but warns that it is slow there; nothing else warns.
    Raises ValueError for another name.
    """
    device = torch.device(device)
    if name == "auto":
        if device.type == "cpu":
            return torch.bfloat16 if cpu_native_bf16() else torch.float32
        if (fp16_ok or _default_fp16_ok)(device):
            return torch.float16
        if (bf16_ok or _default_bf16_ok)(device):
            return torch.bfloat16
        return torch.float32
    if name not in PRECISIONS:
        raise ValueError(f"precision must be auto or one of {list(PRECISIONS)}, got {name!r}")
    if name == "fp16" and device.type == "cpu":
        warnings.warn("fp16 on the CPU is slower than fp32 (or unsupported); using fp32", stacklevel=2)
        return torch.float32
    if name == "bf16" and device.type != "cpu" and not (bf16_ok or device_native_bf16)(device):
        warnings.warn(f"bf16 is not supported on {device} (emulated or missing there); using fp32", stacklevel=2)
        return torch.float32
    if name == "bf16" and device.type == "cpu" and not cpu_native_bf16():
        warnings.warn("bf16 on this CPU (no native bf16: AVX512-BF16 / AMX) is several times slower than fp32 "
                      "(BEN2's network 5-8x on a 2-core AVX2 CPU, docs/performance.md); choose fp32 or auto",
                      stacklevel=2)
    return PRECISIONS[name]
