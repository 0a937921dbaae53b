"""``python -m ben_core export-onnx``: BEN2 as an ONNX file for onnxruntime, rembg and TensorRT.

Exit codes: 0 written (and, with ``--verify``, checked), 1 the check failed (the file is kept: it is
complete), 2 bad usage, 3 the checkpoint or the ONNX packages could not be loaded.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path
from typing import Optional, Sequence

from .jobs import EXIT_FAILED, EXIT_MODEL, EXIT_OK, UsageError, run_program

#: The precision rule of the docs for a half-precision file, and fp32's bound against torch.
FP32_MAX_ABS = 1e-4
HALF_MEAN_ABS, HALF_SAME_SIDE = 0.01, 0.98


def build_parser() -> argparse.ArgumentParser:
    """The ``export-onnx`` command line."""
    from ..model.ben2 import BENBase
    from ..model.export import DTYPES, TARGETS

    p = argparse.ArgumentParser(
        prog="python -m ben_core export-onnx",
        description="Write BEN2 as an ONNX file (input: float32 [batch, 3, S, S] RGB 0..1; output: alpha "
                    "[batch, 1, S, S] 0..1; the batch is dynamic). Needs onnx and onnxscript; never downloads.")
    p.add_argument("-o", "--output", required=True, metavar="FILE.onnx", help="the file to write")
    p.add_argument("--checkpoint", metavar="PATH", default=None,
                   help="BEN2_Base.pth, model.safetensors or any state dict under the official names; default: "
                        "the official weights if they are already cached (nothing is downloaded)")
    p.add_argument("--working-size", type=int, default=BENBase.native_size, choices=sorted(BENBase.working_sizes),
                   help=f"the square size S the file takes (default {BENBase.native_size}, BEN2's native size)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp32",
                   help="the network's precision in the file (default fp32; fp16 halves the file, for GPUs)")
    p.add_argument("--for", dest="target", choices=TARGETS, default="ben_core",
                   help="ben_core (default): input RGB 0..1; rembg: the input rembg's ben_custom session feeds "
                        "(0..1 minus 0.5, working size 1024)")
    p.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset (default: torch's)")
    p.add_argument("--force", action="store_true", help="replace FILE.onnx if it exists")
    p.add_argument("--verify", action="store_true",
                   help="run the file in onnxruntime on a test image and compare it with the torch network "
                        "(exit 1 when it is outside the documented precision)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return p


def _checkpoint(path: Optional[str]) -> Path:
    if path is not None:
        p = Path(path).expanduser()
        if not p.exists():
            raise UsageError(f"--checkpoint {path}: no such file")
        return p
    from ..model import weights

    cached = weights.find_cached_weights()
    if cached is None:
        raise FileNotFoundError(
            "no BEN2 weights are cached and export-onnx never downloads: pass --checkpoint PATH (BEN2_Base.pth "
            "or model.safetensors), or run `python -m ben_core photo.jpg` once to fetch the official weights")
    return Path(cached)


def verify(path: Path, net, working_size: int, dtype: str, target: str) -> tuple[bool, str]:
    """Run ``path`` in onnxruntime on a smooth random test image and compare its alpha with ``net``'s fp32
    alpha: ``(passed, one line of figures)``. fp32 must agree within :data:`FP32_MAX_ABS`; fp16 within
    the precision rule (mean |Δ| ≤ 0.01, ≥ 98 % of pixels on the same side of 0.5)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from ..model.ben2 import IMAGENET_MEAN, IMAGENET_STD
    from ..model.export import INPUT_NAME, input_offset

    g = torch.Generator().manual_seed(0)
    image = torch.nn.functional.interpolate(torch.rand(1, 3, 16, 16, generator=g), size=(working_size,) * 2,
                                            mode="bicubic", align_corners=False).clamp(0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = torch.sigmoid(net((image - mean) / std)).numpy().astype(np.float64)
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = False  # with the arena a 1024 run holds twice the memory it needs
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    alpha = session.run(None, {INPUT_NAME: (image - input_offset(target)).numpy()})[0]
    d = np.abs(alpha - ref)
    side = float(((alpha > 0.5) == (ref > 0.5)).mean())
    if dtype == "fp32":
        ok = float(d.max()) <= FP32_MAX_ABS
    else:
        ok = float(d.mean()) <= HALF_MEAN_ABS and side >= HALF_SAME_SIDE
    return ok, f"max |Δ| {d.max():.2e}, mean |Δ| {d.mean():.2e}, {side * 100:.2f} % on the same side of 0.5"


def _body(args, log) -> int:
    from ..model.export import check_request, export_onnx

    try:
        out = check_request(args.output, working_size=args.working_size, dtype=args.dtype, target=args.target,
                            force=args.force)
    except (ValueError, OSError) as e:
        raise UsageError(str(e)) from None
    if args.verify:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise UsageError("--verify runs the file in onnxruntime: pip install onnxruntime") from None
    try:
        from ..model.export import _require_onnx

        _require_onnx()
        from ..model.weights import CheckpointError, load_ben

        source = _checkpoint(args.checkpoint)
        log(f"loading {source}")
        net = load_ben(source)
    except (ImportError, FileNotFoundError, CheckpointError) as e:
        print(f"python -m ben_core export-onnx: error: {e}", file=sys.stderr)
        return EXIT_MODEL
    log(f"exporting at {args.working_size}x{args.working_size}, {args.dtype}, for {args.target} "
        "(a minute or more on a CPU) ...")
    with contextlib.redirect_stdout(io.StringIO()) if args.quiet else contextlib.nullcontext():
        export_onnx(net, out, working_size=args.working_size, dtype=args.dtype, target=args.target,
                    force=args.force, opset=args.opset)
    size_mb = out.stat().st_size / 2 ** 20
    log(f"wrote {out} ({size_mb:.0f} MB)")
    if args.verify:
        ok, figures = verify(out, net, args.working_size, args.dtype, args.target)
        log(f"onnxruntime against torch fp32: {figures}: {'ok' if ok else 'OUTSIDE the documented precision'}")
        if not ok:
            return EXIT_FAILED
    return EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m ben_core export-onnx`` (``ben2 export-onnx``); returns the exit code."""
    return run_program(build_parser(), argv, _body)
