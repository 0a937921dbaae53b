"""The memory the nodes ask ComfyUI for, measured on the CPU: ``python -m benchmarks.bench_node_memory``.

Three measurements, each with :class:`LiveBytes` (a ``TorchDispatchMode`` that adds up the storage of every
tensor an operation returns on one device type and subtracts it when the last tensor on it is freed; the
peak of that sum is the peak of live tensor memory, what ``torch.cuda.max_memory_allocated`` reports on a
GPU, before the allocator's rounding):

* ``network``: BEN2 (full size) on torch's ``meta`` device, so no data is computed and a 1024² batch of 4
  takes seconds: batch 1/2/4 x working size 512/768/1024 x float32/float16 (a half network over half
  inputs; the nodes run half precision under autocast);
* ``pipeline``: the cut-out pipeline (foreground colours on, RGBA) on the CPU with a stand-in network at
  512, on 1920x1080 and 3840x2160 images, batch 1 and 2 (the network's own memory is the first table's);
* ``refine``: Refine Mask's guided filter with foreground colours, one image of each size;
* ``vitmatte``: one ViTMatte-small tile (640x640) on meta (needs ``transformers``; no download).

Each row is printed beside :mod:`ben_core.memory`'s figure for it (without the margin, plus the fixed
part), and the run fails (exit 1) if a measured peak exceeds it. ``--quick``: the smallest rows only.
"""
from __future__ import annotations

import argparse
import sys
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ben_core import memory  # noqa: E402

MIB = 2 ** 20


class LiveBytes(TorchDispatchMode):
    """Peak bytes of live tensor storage on ``device_type`` while the mode is on (see the module docstring)."""

    def __init__(self, device_type: str):
        super().__init__()
        self.device_type = device_type
        self.live: dict = {}
        self.current = 0
        self.peak = 0

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage._cdata
        entry = self.live.get(key)
        if entry is None:
            entry = self.live[key] = [storage.nbytes(), 0]
            self.current += entry[0]
            self.peak = max(self.peak, self.current)
        entry[1] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key) -> None:
        entry = self.live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == self.device_type:
                self._track(t)
        return out


def network_peak(batch: int, size: int, dtype: torch.dtype) -> int:
    """Peak activation bytes of one BENBase forward ``[batch, 3, size, size]`` in ``dtype``, on meta."""
    from ben_core.model.ben2 import BENBase

    with torch.device("meta"):
        net = BENBase().eval().to(dtype)
    x = torch.empty(batch, 3, size, size, device="meta", dtype=dtype)
    with torch.inference_mode():
        tracker = LiveBytes("meta")
        with tracker:
            out = net(x)
            del out
    return tracker.peak


class _Stand(torch.nn.Module):
    """A stand-in network (logits from the brightness): the pipeline's memory without the network's."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x.mean(1, keepdim=True) * 4 + self.bias


def pipeline_peak(batch: int, height: int, width: int) -> int:
    """Peak bytes of the cut-out pipeline's tensors (RGBA, foreground colours) for ``batch`` images."""
    from ben_core.pipeline import CutoutOptions, CutoutPipeline
    from ben_core.predictor import BENPredictor

    images = torch.rand(batch, height, width, 3, generator=torch.Generator().manual_seed(0))
    pipeline = CutoutPipeline(BENPredictor(_Stand().eval(), device="cpu", working_size=512, batch_size=batch),
                              CutoutOptions(foreground=True))
    with torch.inference_mode():
        tracker = LiveBytes("cpu")
        with tracker:
            cut = pipeline.run(images, out_device=torch.device("cpu"))
            del cut
    return tracker.peak


def refine_peak(height: int, width: int) -> int:
    """Peak bytes of Refine Mask's work (guided filter, foreground colours, RGBA) on one image."""
    from ben_core.pipeline import CutoutOptions, CutoutPipeline, Refinement

    image = torch.rand(1, height, width, 3, generator=torch.Generator().manual_seed(0))
    alpha = torch.zeros(1, 1, height, width)
    alpha[..., height // 4:3 * height // 4, width // 4:3 * width // 4] = 1
    alpha = torch.nn.functional.avg_pool2d(alpha, 31, 1, 15)[0]
    pipeline = CutoutPipeline(None, CutoutOptions(foreground=True, refine=Refinement(method="guided")),
                              device=torch.device("cpu"))
    with torch.inference_mode():
        tracker = LiveBytes("cpu")
        with tracker:
            cut = pipeline.run(image, alpha, None, batch_size=1, out_device=torch.device("cpu"))
            del cut
    return tracker.peak


def vitmatte_tile_peak(side: int = 640) -> int:
    """Peak activation bytes of ViTMatte-small (hustvl/vitmatte-small-composition-1k's configuration, built on
    meta: no download) on one ``side`` x ``side`` tile, float32."""
    from transformers import VitDetConfig, VitMatteConfig, VitMatteForImageMatting

    backbone = VitDetConfig(hidden_size=384, num_attention_heads=6, num_hidden_layers=12, mlp_ratio=4, num_channels=4,
                            image_size=512, pretrain_image_size=224, patch_size=16, out_features=["stage12"],
                            window_block_indices=[0, 1, 3, 4, 6, 7, 9, 10], residual_block_indices=[2, 5, 8, 11],
                            use_relative_position_embeddings=True, window_size=14)
    config = VitMatteConfig(backbone_config=backbone, hidden_size=384, convstream_hidden_sizes=[48, 96, 192],
                            fusion_hidden_sizes=[256, 128, 64, 32])
    with torch.device("meta"):
        net = VitMatteForImageMatting(config).eval()
    x = torch.empty(1, 4, side, side, device="meta")
    with torch.inference_mode():
        tracker = LiveBytes("meta")
        with tracker:
            out = net(pixel_values=x)
            del out
    return tracker.peak


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_node_memory", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the smallest rows only (the test's run)")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    sizes, batches = ((512,), (1,)) if args.quick else ((512, 768, 1024), (1, 2, 4))
    images = ((270, 480),) if args.quick else ((1080, 1920), (2160, 3840))
    rows, over = [], 0
    for dtype in (torch.float32, torch.float16):
        for size in sizes:
            for batch in batches:
                got = network_peak(batch, size, dtype)
                want = memory.network_bytes(batch, size, dtype) + memory.FIXED_BYTES
                rows.append((f"network {str(dtype)[6:]} batch {batch} at {size}", got, want))
    for h, w in images:
        for batch in ((1,) if args.quick else (1, 2)):
            rows.append((f"pipeline {w}x{h} batch {batch}", pipeline_peak(batch, h, w),
                         memory.pipeline_bytes(batch, (h, w)) + memory.FIXED_BYTES))
        rows.append((f"refine {w}x{h}", refine_peak(h, w), memory.refine_bytes((h, w)) + memory.FIXED_BYTES))
    try:
        rows.append(("ViTMatte-small tile 640x640 (512 + 2 x 64)", vitmatte_tile_peak(),
                     memory.VITMATTE_TILE_BYTES))
    except ImportError:
        print("(ViTMatte row skipped: transformers is not installed)")
    print("| what | measured peak | ben_core.memory (no margin) | measured / formula |")
    print("|---|---|---|---|")
    for name, got, want in rows:
        over += got > want
        print(f"| {name} | {got / MIB:.1f} MiB | {want / MIB:.1f} MiB | {got / want:.2f} |")
    print(f"\nmargin on top for the nodes: x{memory.MARGIN}; {over} row(s) above the formula")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
