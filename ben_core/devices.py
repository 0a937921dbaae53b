"""Devices and precisions: the one resolver behind ``--device`` / ``--dtype``, Load BEN's widgets and the
benchmarks, and the accumulator dtype of numerically delicate sums.
"""
from __future__ import annotations

import warnings
from typing import Callable, Optional

import torch

__all__ = ["PRECISIONS", "accumulator_dtype", "mps_available", "resolve_device", "resolve_precision"]

#: Precision names users pick from, and the torch dtype each means.
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def accumulator_dtype(device) -> torch.dtype:
    """Dtype for sums that cancel badly in float32 (variances, merged statistics): float64, but
    float32 on MPS, which has no float64 (``.double()`` there raises)."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def mps_available() -> bool:
    """Whether Apple's MPS backend is usable in this PyTorch build."""
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


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


def _default_fp16_ok(device: torch.device) -> bool:
    return device.type == "cuda"


def _default_bf16_ok(device: torch.device) -> bool:
    return False


def resolve_precision(name: str, device, *, fp16_ok: Optional[Callable[[torch.device], bool]] = None,
                      bf16_ok: Optional[Callable[[torch.device], bool]] = None) -> torch.dtype:
    """The compute dtype for a precision name on ``device``.

    ``"auto"``: float32 on the CPU; elsewhere float16 where ``fp16_ok(device)`` (default: CUDA), else
    bfloat16 where ``bf16_ok(device)`` (default: never), else float32. ComfyUI passes its own
    ``should_use_fp16`` / ``should_use_bf16`` here, so GPUs it marks fp16-broken never get fp16.
    ``"fp32"`` / ``"fp16"`` / ``"bf16"``: that dtype, except fp16 on the CPU, which becomes float32
    with a warning (CPU half-precision convolutions are several times slower than fp32, or missing), and
    bf16 on the CPU, which is kept as asked but warns: on CPUs without native bf16 matrix units it is
    several times slower than fp32 (7.1x at working size 512 on this project's 2-core test machine).
    Raises ValueError for another name.
    """
    device = torch.device(device)
    if name == "auto":
        if device.type == "cpu":
            return torch.float32
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
    if name == "bf16" and device.type == "cpu":
        warnings.warn("bf16 on the CPU is usually several times slower than fp32 (7.1x measured at working "
                      "size 512) and less exact; choose fp32 or auto unless this CPU has native bf16 support",
                      stacklevel=2)
    return PRECISIONS[name]
