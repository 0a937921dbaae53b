"""BEN2 as an ONNX file: the same network, traced on its export path, for onnxruntime, rembg and TensorRT.

The file computes, for ``image`` float32 ``[batch, 3, S, S]`` (RGB, channels first, 0..1; the batch is a
dynamic dimension, ``S`` the working size it was exported at), ``alpha`` float32 ``[batch, 1, S, S]``
in 0..1 (the raw sigmoid, 1 = foreground): ImageNet normalisation, the network and the sigmoid are in
the graph. Resizing to and from ``S`` is the caller's (as :class:`ben_core.predictor.BENPredictor` does).
``target="rembg"`` makes the input what rembg's ``ben_custom`` session feeds (the image scaled by its
maximum, minus 0.5: -0.5..0.5 at ``S = 1024``); the output is the same.

``dtype="fp16"`` stores the weights and runs the network in float16 (half the file); the input, the
normalisation and the sigmoid stay float32, so the contract is the same. The contract is also written in
the file's metadata (:data:`METADATA_KEYS`).

The network is traced by ``torch.onnx.export`` (``torch.export`` then onnxscript) on its export path
(:func:`ben_core.model.ops.export_path`): static sizes for the working size, a symbolic batch, the same
arithmetic as the fast kernels (``tests/test_onnx.py`` checks them equal). ``onnx`` and ``onnxscript``
are needed only here, imported when an export runs. Nothing is downloaded.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Union

import torch
from torch import Tensor, nn

from ..io.files import atomic_output
from .ben2 import IMAGENET_MEAN, IMAGENET_STD, BENBase
from .ops import export_path

__all__ = ["AlphaGraph", "export_onnx", "check_request", "input_offset", "METADATA_KEYS", "TARGETS", "DTYPES",
           "INPUT_NAME", "OUTPUT_NAME", "ONNX_MISSING"]

INPUT_NAME, OUTPUT_NAME = "image", "alpha"
#: What the input is prepared for: ben_core's contract (0..1) or rembg's ``ben_custom`` session (0..1 - 0.5).
TARGETS = ("ben_core", "rembg")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
#: Metadata written into every exported file (``onnx.ModelProto.metadata_props``).
METADATA_KEYS = ("ben2.input", "ben2.output", "ben2.working_size", "ben2.dtype", "ben2.target", "ben2.exporter")
ONNX_MISSING = ("the ONNX export needs the packages onnx and onnxscript: pip install onnx onnxscript "
                "(or pip install 'comfyui-ben2[onnx]'); onnxruntime runs the file")


def input_offset(target: str) -> float:
    """What the graph adds to its input to get RGB 0..1: 0 for ``ben_core``, 0.5 for ``rembg`` (whose
    ``ben_custom`` session subtracts 0.5 with std 1.0)."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    return 0.5 if target == "rembg" else 0.0


class AlphaGraph(nn.Module):
    """What an exported file computes: ``image [B, 3, S, S]`` float32 (RGB 0..1, or 0..1 - 0.5 for rembg)
    -> ``alpha [B, 1, S, S]`` float32 0..1, with the network in ``dtype`` (its weights cast once).

    Args:
        net: a loaded :class:`BENBase` (not modified when ``dtype`` is float32; cast in place otherwise).
        dtype: float32 or float16, the network's precision.
        target: ``"ben_core"`` or ``"rembg"`` (see :func:`input_offset`).
    """

    def __init__(self, net: BENBase, dtype: torch.dtype = torch.float32, target: str = "ben_core") -> None:
        super().__init__()
        self.offset = input_offset(target)
        self.net = net.to(dtype)
        self.dtype = dtype
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: Tensor) -> Tensor:  # noqa: D102 - see class docstring
        x = image + self.offset if self.offset else image
        x = ((x - self.mean) / self.std).to(self.dtype)
        return torch.sigmoid(self.net(x).to(torch.float32))


def _contract(size: int, dtype: str, target: str) -> Dict[str, str]:
    """The metadata of one file (:data:`METADATA_KEYS`)."""
    if target == "rembg":
        source = ("RGB scaled by the image's maximum, minus 0.5 (-0.5..0.5): what rembg's ben_custom session "
                  "feeds")
    else:
        source = "RGB 0..1 (not normalised: the ImageNet mean/std is in the graph)"
    return {
        "ben2.input": f"{INPUT_NAME}: float32 [batch, 3, {size}, {size}], channels first, {source}",
        "ben2.output": f"{OUTPUT_NAME}: float32 [batch, 1, {size}, {size}], 0..1 (sigmoid), 1 = foreground",
        "ben2.working_size": str(size),
        "ben2.dtype": dtype,
        "ben2.target": target,
        "ben2.exporter": f"ben_core (torch {torch.__version__.split('+')[0]})",
    }


#: The oldest torch whose ``torch.onnx.export(dynamo=True, dynamic_shapes=...)`` the export is written for
#: (it is tested with 2.13).
MIN_TORCH = (2, 6)


def _require_onnx() -> None:
    version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    if version < MIN_TORCH:
        raise ImportError(f"the ONNX export needs torch >= {'.'.join(map(str, MIN_TORCH))} (torch.onnx's "
                          f"torch.export-based exporter); this is torch {torch.__version__}")
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError(f"{ONNX_MISSING} ({e})") from None


def check_request(path: Union[str, "os.PathLike[str]"], *, working_size: int, dtype: str, target: str,
                  force: bool) -> Path:
    """What :func:`export_onnx` refuses before any work (the command line asks before loading the weights):
    a size, dtype or target not offered (ValueError), rembg at a size other than 1024 (ValueError), ``path``
    a folder (IsADirectoryError) or an existing file without ``force`` (FileExistsError). Returns ``path``
    expanded."""
    if working_size not in BENBase.working_sizes:
        raise ValueError(f"working size must be one of {', '.join(map(str, sorted(BENBase.working_sizes)))}, "
                         f"got {working_size!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    input_offset(target)
    if target == "rembg" and working_size != 1024:
        raise ValueError(f"rembg's ben_custom session always feeds 1024 x 1024: --for rembg needs --working-size "
                         f"1024, not {working_size}")
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the file to write, e.g. {path / 'ben2.onnx'}")
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass force=True (--force) to replace it, or choose another name")
    return path


def export_onnx(net: BENBase, path: Union[str, "os.PathLike[str]"], *, working_size: int = BENBase.native_size,
                dtype: str = "fp32", target: str = "ben_core", force: bool = False,
                opset: Optional[int] = None) -> Path:
    """Write ``net`` as an ONNX file at ``path`` (see the module docstring for the file's contract).

    Args:
        net: a loaded :class:`BENBase` on the CPU in float32 (e.g. ``load_ben(checkpoint)``); used, not kept:
            an fp16 export casts a copy of its weights.
        path: the output file; written under a temporary name and renamed when complete.
        working_size: ``S``, one of ``BENBase.working_sizes`` (512, 768, 1024; 1024 for rembg, which
            always feeds 1024 x 1024).
        dtype: ``"fp32"`` or ``"fp16"``.
        target: ``"ben_core"`` or ``"rembg"``.
        force: replace an existing file at ``path``.
        opset: the ONNX opset (None: torch's default).

    Returns:
        ``path``. Raises ValueError for a size, dtype or target not offered, FileExistsError when ``path``
        exists without ``force``, ImportError naming the packages when onnx/onnxscript are missing.
    """
    path = check_request(path, working_size=working_size, dtype=dtype, target=target, force=force)
    param = next(net.parameters())
    if param.device.type != "cpu" or param.dtype != torch.float32:
        raise ValueError(f"export from the float32 network on the CPU (load_ben(checkpoint)), not "
                         f"{param.dtype} on {param.device}; --dtype fp16 makes the half-precision file")
    _require_onnx()

    with torch.no_grad(), export_path():
        net.eval()
        # the backbone sees the quadrants and the global view at half the working size
        net.backbone.build_export_layouts((working_size // 2, working_size // 2), torch.device("cpu"))
        graph = AlphaGraph(net if dtype == "fp32" else _copy(net), DTYPES[dtype], target).eval()
        # A batch of 2 as the example: torch.export specialises a dimension of size 1.
        example = torch.zeros(2, 3, working_size, working_size)
        program = torch.onnx.export(
            graph, (example,), None, dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1, max=4096)}}, opset_version=opset,
            external_data=False, verbose=False)
    program.model.metadata_props.update(_contract(working_size, dtype, target))
    with atomic_output(path) as tmp:
        program.save(tmp, external_data=False)
    return path


def _copy(net: BENBase) -> BENBase:
    """A copy of ``net`` sharing nothing (an fp16 export casts it, never the caller's network); the caches
    of index bookkeeping come along."""
    import copy

    return copy.deepcopy(net)
