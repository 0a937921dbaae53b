"""The prepared device check: ``python -m benchmarks.gpu_check [--out DIR] [--upstream BEN2.py]``.

One run, on a bare GPU machine where nothing can be installed (torch + CUDA, this repository's files
alone; the synthetic weights and the stored conformance vectors come from ``tests/data``). Writes
``gpu_check.json`` and ``gpu_check.md`` (the printed tables) into ``--out`` (default ``$OUT``, else
``./gpu_check_out``). Sections:

1. correctness: fp32 with TF32 off against the stored upstream vectors (512² and 1024², <= 1e-4);
   fp16 / bf16 max |Δprob| and mask IoU at 0.5 against fp32; the half-precision NaN fallback forced
   once (a hook makes the half logits infinite) and checked against fp32;
2. attention: every ``scaled_dot_product_attention`` call of one forward, grouped by call site and
   signature (shapes, dtypes, strides, mask), the backend the dispatcher picks (read from the profiler)
   and, per backend, whether it accepts the call and torch's reason when it does not;
3. network throughput: images/s and peak memory at batch 1 / 4 / 16, fp16 and bf16, eager vs
   ``torch.compile`` vs ``torch.compile`` + CUDA graphs (compile rows as the time budget allows; the
   first call, i.e. the compilation, is timed separately);
4. the Remove Background path: a batch of 1080p images on the host through ``CutoutPipeline``
   (predict -> foreground colours -> RGBA composite -> back to the host), seconds per image, and the CUDA
   peak besides the weights against what the node asks ComfyUI for (``ben_core.memory``: calibrates it);
5. upstream ``BEN2.py`` (``--upstream``, loaded with the CPU benchmark's loader) on the same weights,
   side by side with ours at batch 1 and 16, run last (it sets global torch state at import);
6. dynamic VRAM and Cancel (benchmarks/dynamic_vram_check.py): the nodes through the stand-in of a 2026
   core with dynamic VRAM: load -> run -> offload -> run again (device memory held and returned, identical
   masks, seconds of each prepare), and a Cancel in the middle of every long node (no file left, the
   device memory back after core's offload); then every VRAM state (normal and --novram also with CUDA
   graphs): load -> run -> unload -> reload -> run, weights where the inputs go, identical masks.

7. the video stabiliser (``ben_core.matting.temporal``, causal and bidirectional) on 1080p frames on the device
   (the optical flow itself runs on the host): ms per frame, beside the Remove Background path's.
8. onnxruntime (where the machine has it, with onnx and onnxscript): the ONNX export (fp32 and fp16) run by
   its TensorRT and CUDA providers at batch 1, ms per image and max |Δalpha| against torch fp32, beside the
   eager rows; a row saying why when the packages or providers are missing (nothing is installed).

``--device cpu --quick`` runs every section small on the CPU (512², batch 1, bf16, no compile rows)
so the script is tested where there is no GPU; CPU figures are not GPU figures.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import inspect
import json
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a file as well as with -m
    sys.path.insert(0, str(REPO))

from ben_core import memory  # noqa: E402
from ben_core.model.ben2 import IMAGENET_MEAN, IMAGENET_STD, BENBase, checkpoint_filter_fn  # noqa: E402
from ben_core.pipeline import CutoutOptions, CutoutPipeline  # noqa: E402
from ben_core.predictor import BENPredictor  # noqa: E402
from tests.helpers import DATA_DIR, synth_sd  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MODES = {"eager": None, "compile": "default", "cudagraphs": "reduce-overhead"}


# ------------------------------------------------------------------------------------------- helpers

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    """Peak allocated device memory since the last reset (CUDA), else the process's peak RSS (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def normalise(images_u8: np.ndarray, device) -> torch.Tensor:
    x = torch.from_numpy(images_u8).float().div(255).permute(0, 3, 1, 2)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous().to(device)


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    fa, fb = a > 0.5, b > 0.5
    union = (fa | fb).sum().item()
    return 1.0 if union == 0 else (fa & fb).sum().item() / union


@contextlib.contextmanager
def tf32_off():
    """fp32 means fp32: no TF32 matmuls or convolutions (restored afterwards)."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


def synthetic_images(n: int, height: int, width: int) -> torch.Tensor:
    """``[n, H, W, 3]`` float 0..1: soft-edged discs over a smooth texture (deterministic)."""
    yy = torch.linspace(0, 1, height).view(height, 1)
    xx = torch.linspace(0, 1, width).view(1, width)
    out = []
    for i in range(n):
        subject = torch.sigmoid((0.3 - ((xx - 0.4 - 0.02 * i) ** 2 + (yy - 0.5) ** 2).sqrt()) * 60)[..., None]
        bg = torch.stack([0.5 + 0.4 * torch.sin(23 * xx + 7 * yy + i), (0.4 + 0.3 * torch.cos(17 * yy - 5 * xx)),
                          (0.5 + 0.2 * torch.sin(31 * xx * yy))], -1)
        fg = torch.tensor([0.9, 0.6, 0.3]).view(1, 1, 3)
        out.append((subject * fg + (1 - subject) * bg).clamp(0, 1))
    return torch.stack(out)


# ------------------------------------------------------------------------------------ 1. correctness

def check_correctness(model: BENBase, device: torch.device, sizes, half_dtypes, log) -> dict:
    res: dict = {"fp32_vs_stored": {}, "half_vs_fp32": {}}
    for size in sizes:
        data = np.load(DATA_DIR / f"ben2_seed0_{size}.npz")
        x = normalise(data["images"], device)
        with tf32_off(), torch.inference_mode():
            fp32 = torch.sigmoid(model(x).float())
        diff = float((fp32.cpu() - torch.from_numpy(data["probs"])).abs().max())
        res["fp32_vs_stored"][size] = {"max_abs_diff": diff, "ok": diff <= 1e-4}
        log(f"  fp32 {size}²: max|Δprob| vs stored upstream vectors {diff:.2e}")
        for name in half_dtypes:
            with torch.inference_mode(), torch.autocast(device.type, dtype=DTYPES[name]):
                half = torch.sigmoid(model(x).float())
            res["half_vs_fp32"][f"{name} {size}"] = {
                "max_abs_diff": float((half - fp32).abs().max()), "mean_abs_diff": float((half - fp32).abs().mean()),
                "iou_at_0.5": iou(half, fp32), "finite": bool(torch.isfinite(half).all())}
            log(f"  {name} {size}²: max|Δ| {res['half_vs_fp32'][f'{name} {size}']['max_abs_diff']:.3e}, "
                f"IoU {res['half_vs_fp32'][f'{name} {size}']['iou_at_0.5']:.5f}")
    return res


def check_nan_fallback(model: BENBase, device: torch.device, dtype: torch.dtype, size: int) -> dict:
    """Make the half logits infinite once: the predictor must recompute that chunk in fp32."""
    calls = []

    def poison(_module, _inputs, output):
        calls.append(output.dtype)
        return output * float("inf") if output.dtype in (torch.float16, torch.bfloat16) else output

    images = (synthetic_images(2, size, size) * 255).round().to(torch.uint8)
    with tf32_off():
        reference = BENPredictor(model, device, working_size=size, batch_size=2).predict_alpha(images)
        handle = model.register_forward_hook(poison)
        try:
            predictor = BENPredictor(model, device, dtype=dtype, working_size=size, batch_size=2)
            alpha = predictor.predict_alpha(images)
        finally:
            handle.remove()
    diff = float((alpha - reference).abs().max())
    return {"dtype": str(dtype).replace("torch.", ""), "fallback_count": predictor.fallback_count,
            "output_dtypes_seen": [str(d).replace("torch.", "") for d in calls], "max_abs_diff_vs_fp32": diff,
            "ok": predictor.fallback_count == 1 and bool(torch.isfinite(alpha).all()) and diff <= 1e-4}


# ----------------------------------------------------------------------------------- 2. attention

def _backends():
    from torch.nn.attention import SDPBackend

    names = ["FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"]
    return [(n.lower(), getattr(SDPBackend, n)) for n in names if hasattr(SDPBackend, n)]


def _describe(t: torch.Tensor | None):
    if t is None:
        return None
    return {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""), "stride": list(t.stride()),
            "contiguous": t.is_contiguous()}


def _picked_backend(q, k, v, mask) -> str:
    """The kernel the dispatcher runs for this call, read from the profiler's op names."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    names = " ".join(e.name for e in prof.events())
    for key, label in (("cudnn_attention", "cudnn"), ("flash_attention", "flash"),
                       ("efficient_attention", "efficient"), ("attention_math", "math")):
        if key in names:
            return label + ("_cpu" if "for_cpu" in names else "")
    return "unknown"


def check_attention(model: BENBase, device: torch.device, dtype: torch.dtype, size: int) -> list:
    """Record every SDPA call of one forward, then probe each distinct signature backend by backend."""
    from torch.nn.attention import sdpa_kernel

    real = F.scaled_dot_product_attention
    seen: dict = {}

    def recording(q, k, v, attn_mask=None, *args, **kwargs):
        code = inspect.currentframe().f_back.f_code
        site = f"{Path(code.co_filename).stem}.{getattr(code, 'co_qualname', code.co_name)}"
        key = (site, tuple(q.shape), q.dtype, q.stride(), tuple(k.shape), k.stride(),
               None if attn_mask is None else (tuple(attn_mask.shape), attn_mask.dtype, attn_mask.stride()))
        if key not in seen:
            seen[key] = {"site": site, "calls": 0, "example": (q.clone(), k.clone(), v.clone(),
                                                              None if attn_mask is None else attn_mask.clone())}
        seen[key]["calls"] += 1
        return real(q, k, v, attn_mask, *args, **kwargs)

    x = normalise((synthetic_images(1, size, size) * 255).round().to(torch.uint8).numpy(), device)
    torch.nn.functional.scaled_dot_product_attention = recording
    try:
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            model(x)
    finally:
        torch.nn.functional.scaled_dot_product_attention = real
    rows = []
    with torch.inference_mode():
        for entry in seen.values():
            q, k, v, mask = entry.pop("example")
            row = {"site": entry["site"], "calls_per_forward": entry["calls"], "q": _describe(q), "k": _describe(k),
                   "mask": _describe(mask), "picked": _picked_backend(q, k, v, mask), "backends": {}}
            for name, backend in _backends():
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    try:
                        with sdpa_kernel([backend]):
                            F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                        row["backends"][name] = {"ok": True}
                    except Exception as e:  # the reasons torch gives (its warnings say why a kernel was refused)
                        reasons = [str(w.message).splitlines()[0] for w in caught][:4]
                        row["backends"][name] = {"ok": False, "error": str(e).splitlines()[0][:200], "why": reasons}
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------- 3. throughput

def bench_network(model: BENBase, device: torch.device, dtype: torch.dtype, batch: int, size: int, mode: str,
                  iters: int, warmup: int) -> dict:
    predictor = BENPredictor(model, device, dtype=dtype, working_size=size, batch_size=batch, compile=MODES[mode])
    x = normalise((synthetic_images(batch, size, size) * 255).round().to(torch.uint8).numpy(), device)
    sync(device)
    reset_peak(device)
    t = time.perf_counter()
    predictor.predict_logits_batch(x)  # the first call: compilation / capture where there is one
    sync(device)
    first = time.perf_counter() - t
    for _ in range(warmup):
        predictor.predict_logits_batch(x)
    sync(device)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        predictor.predict_logits_batch(x)
        sync(device)
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {"mode": mode, "dtype": str(dtype).replace("torch.", ""), "batch": batch, "size": size,
            "first_call_s": first, "median_s": med, "ms_per_image": 1e3 * med / batch, "images_per_s": batch / med,
            "peak_mib": peak_mib(device), "fallbacks": predictor.fallback_count, "times_s": times}


# ------------------------------------------------------------------------------ 4. remove background

def bench_remove_background(model: BENBase, device: torch.device, dtype: torch.dtype, n: int, height: int,
                            width: int, batch: int, size: int) -> dict:
    images = synthetic_images(n, height, width)  # on the host, as ComfyUI hands them over
    predictor = BENPredictor(model, device, dtype=dtype, working_size=size, batch_size=batch)
    pipeline = CutoutPipeline(predictor, CutoutOptions(foreground=True, background=None))
    pipeline.run(images[:batch])  # warm-up
    sync(device)
    reset_peak(device)
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else None  # weights and constants
    t = time.perf_counter()
    cut = pipeline.run(images)
    sync(device)
    seconds = time.perf_counter() - t
    # the memory the node asks ComfyUI for besides the weights (ben_core.memory) against what this run took
    half_copies = sum(p.numel() * 2 for p in model.parameters()) if dtype != torch.float32 else 0
    estimate = memory.cutout_bytes(batch, size, dtype, (height, width), half_copies) / 2**20
    used = None if before is None else peak_mib(device) - before / 2**20
    # the prefetching chunk iterator against one chunk put on the device directly
    direct = predictor.predict_chunk(images[:batch].to(device))
    diff = float((cut.alpha[:batch] - direct.cpu()).abs().max())
    return {"images": n, "size": f"{width}x{height}", "batch": batch, "working_size": size,
            "dtype": str(dtype).replace("torch.", ""), "seconds": seconds, "ms_per_image": 1e3 * seconds / n,
            "images_per_s": n / seconds, "peak_mib": peak_mib(device), "alpha_vs_direct_chunk_max_abs_diff": diff,
            "image_shape": list(cut.image.shape), "asked_mib": estimate, "used_besides_weights_mib": used,
            "asked_covers_used": None if used is None else bool(estimate >= used),
            "used_over_asked": None if used is None else used / estimate}


# ------------------------------------------------------------------------------------ 7. stabiliser

def bench_stabilizer(device: torch.device, height: int, width: int, frames: int) -> list:
    """ms per frame of ``AlphaStabilizer`` in both modes on ``frames`` frames of a textured picture panning
    2 px a frame (alpha unsure everywhere, so every pixel is carried), tensors on ``device``."""
    from ben_core.matting.temporal import AlphaStabilizer
    from benchmarks.bench_temporal import moving_frames

    clip = moving_frames(frames, height, width).to(device)
    alphas = (torch.rand(frames, height, width, generator=torch.Generator().manual_seed(1)) * 0.6 + 0.2).to(device)
    rows = []
    for mode in ("causal", "bidirectional"):
        stab = AlphaStabilizer(mode=mode, lookahead=max(1, (frames - 1) // 2))
        first = len(stab.update(clip[:1], alphas[:1]))  # nothing to carry yet; bidirectional holds it
        sync(device)
        t = time.perf_counter()
        n = first + len(stab.update(clip[1:], alphas[1:])) + len(stab.flush())
        sync(device)
        rows.append({"mode": mode, "size": f"{width}x{height}", "frames": frames, "flow": stab.flow_used,
                     "ms_per_frame": 1e3 * (time.perf_counter() - t) / (frames - 1), "frames_out": n})
    return rows


# ---------------------------------------------------------------------------------------- 5. upstream

def bench_upstream(path: str, device: torch.device, batches, size: int, iters: int, warmup: int,
                   ours: dict) -> list:
    from benchmarks.upstream_loader import load_upstream

    module = load_upstream(path)  # seeds RNGs / sets matmul precision at import: this section runs last
    net = module.BEN_Base().eval()
    net.load_state_dict(synth_sd(0), strict=True)
    net = net.to(device)
    rows = []
    for batch in batches:
        x = normalise((synthetic_images(batch, size, size) * 255).round().to(torch.uint8).numpy(), device)
        half = device.type == "cuda"  # upstream's own inference: fp16 autocast on CUDA, fp32 elsewhere

        def forward(x=x, half=half):  # called only in this iteration; the binding made explicit
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=half):
                return net(x)

        reset_peak(device)
        for _ in range(max(1, warmup)):
            forward()
        sync(device)
        times = []
        for _ in range(iters):
            t = time.perf_counter()
            forward()
            sync(device)
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        row = {"impl": "upstream", "dtype": "fp16 (its autocast)" if half else "fp32", "batch": batch, "size": size,
               "median_s": med, "ms_per_image": 1e3 * med / batch, "images_per_s": batch / med,
               "peak_mib": peak_mib(device)}
        mine = ours.get((batch, "fp16" if half else "fp32"))
        if mine:
            row["ours_speedup"] = mine["images_per_s"] / row["images_per_s"]
        rows.append(row)
    return rows


# -------------------------------------------------------------------------------------------- report

def _fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def report(result: dict) -> str:
    env = result["environment"]
    lines = [f"# BEN2 device check, {env['date']}", "",
             f"{env['device_name']} · torch {env['torch']} · CUDA {env['cuda']} · {env['python']} · "
             f"`{env['command']}`", ""]
    c = result.get("correctness")
    if c:
        lines += ["## Correctness", "", "| check | value | ok |", "|---|---|---|"]
        for size, r in c["fp32_vs_stored"].items():
            lines.append(f"| fp32 (TF32 off) vs stored upstream, {size}² | max abs {r['max_abs_diff']:.2e} "
                         f"| {r['ok']} |")
        for key, r in c["half_vs_fp32"].items():
            lines.append(f"| {key}² vs fp32 | max abs {r['max_abs_diff']:.3e}, mean {r['mean_abs_diff']:.2e}, "
                         f"IoU@0.5 {r['iou_at_0.5']:.5f} | {r['finite']} |")
        fb = c.get("nan_fallback")
        if fb:
            lines.append(f"| forced non-finite {fb['dtype']} chunk -> fp32 | fallbacks {fb['fallback_count']}, "
                         f"max abs vs fp32 {fb['max_abs_diff_vs_fp32']:.1e} | {fb['ok']} |")
        lines.append("")
    a = result.get("attention")
    if a:
        lines += ["## Attention (scaled_dot_product_attention, one forward, grouped by call site)", "",
                  "| site | calls | signatures | q (first) | mask | picked | "
                  + " | ".join(n for n, _ in _backends()) + " |",
                  "|---|---|---|---|---|---|" + "---|" * len(_backends())]
        for site in dict.fromkeys(r["site"] for r in a):
            group = [r for r in a if r["site"] == site]
            first = group[0]
            cells = []
            for name, _ in _backends():
                refused = [r["backends"].get(name, {}) for r in group if not r["backends"].get(name, {}).get("ok")]
                if not refused:
                    cells.append("yes")
                    continue
                why = refused[0].get("why") or [refused[0].get("error", "")]
                cells.append(f"no ({len(refused)}/{len(group)}): " + "; ".join(why)[:160].replace("|", "/"))
            mask = "none" if first["mask"] is None else f"{first['mask']['shape']} {first['mask']['dtype']}"
            picked = ", ".join(sorted({r["picked"] for r in group}))
            lines.append(f"| {site} | {sum(r['calls_per_forward'] for r in group)} | {len(group)} | "
                         f"{first['q']['shape']} {first['q']['dtype']} "
                         f"{'contig' if first['q']['contiguous'] else 'strided'} "
                         f"| {mask} | {picked} | " + " | ".join(cells) + " |")
        lines.append("")
    t = result.get("throughput")
    if t:
        lines += ["## Network throughput (working size {}², synthetic weights)".format(t[0]["size"]), "",
                  "| mode | dtype | batch | ms / image | images / s | first call (s) | peak MiB |",
                  "|---|---|---|---|---|---|---|"]
        for r in t:
            if "skipped" in r:
                lines.append(f"| {r['mode']} | {r['dtype']} | {r['batch']} | skipped: {r['skipped']} | | | |")
            else:
                lines.append(f"| {r['mode']} | {r['dtype']} | {r['batch']} | {r['ms_per_image']:.2f} | "
                             f"{r['images_per_s']:.1f} | {r['first_call_s']:.2f} | {_fmt(r['peak_mib'], '.0f')} |")
        lines.append("")
    rb = result.get("remove_background")
    if rb:
        lines += ["## Remove Background path (host images -> predict -> foreground -> RGBA -> host)", "",
                  f"{rb['images']} x {rb['size']}, batch {rb['batch']}, working size {rb['working_size']}, "
                  f"{rb['dtype']}: **{rb['ms_per_image']:.1f} ms / image** ({rb['images_per_s']:.1f} images/s), "
                  f"peak {_fmt(rb['peak_mib'], '.0f')} MiB; prefetched vs direct chunk max |Δalpha| "
                  f"{rb['alpha_vs_direct_chunk_max_abs_diff']:.1e}", "",
                  f"Memory the node asks ComfyUI for besides the weights (ben_core.memory): "
                  f"{rb['asked_mib']:.0f} MiB; this run used {_fmt(rb['used_besides_weights_mib'], '.0f')} MiB "
                  f"besides the weights (ratio {_fmt(rb['used_over_asked'], '.2f')}; covered: "
                  f"{rb['asked_covers_used']})", ""]
    up = result.get("upstream")
    if up:
        lines += ["## Upstream BEN2.py, same weights and inputs", "",
                  "| impl | dtype | batch | ms / image | images / s | peak MiB | ours faster by |",
                  "|---|---|---|---|---|---|---|"]
        for r in up:
            lines.append(f"| {r['impl']} | {r['dtype']} | {r['batch']} | {r['ms_per_image']:.2f} "
                         f"| {r['images_per_s']:.1f} | "
                         f"{_fmt(r['peak_mib'], '.0f')} | {_fmt(r.get('ours_speedup'))}x |")
        lines.append("")
    st = result.get("stabilizer")
    if st:
        lines += ["## Video stabiliser (ben_core.matting.temporal; the optical flow on the host)", "",
                  "| mode | frames | flow | ms / frame |", "|---|---|---|---|"]
        for r in st:
            lines.append(f"| {r['mode']} | {r['frames']} × {r['size']} | {r['flow']} | {r['ms_per_frame']:.1f} |")
        lines.append("")
    ox = result.get("onnxruntime")
    if ox:
        lines += ["## onnxruntime (the ONNX export, batch 1, synthetic weights)", "",
                  "| provider | dtype | ms / image | first call (s) | max abs Δalpha vs torch fp32 | mean abs Δ |",
                  "|---|---|---|---|---|---|"]
        for r in ox:
            if "skipped" in r:
                lines.append(f"| {r['provider']} | {r['dtype']} | skipped: {r['skipped']} | | | |")
            else:
                lines.append(f"| {r['provider']} | {r['dtype']} | {r['ms_per_image']:.2f} | {r['first_call_s']:.1f} "
                             f"| {r['max_abs_diff']:.2e} | {r['mean_abs_diff']:.2e} |")
        lines.append("")
    dv = result.get("dynamic_vram")
    if dv:
        from benchmarks import dynamic_vram_check

        lines += dynamic_vram_check.report_lines(dv)
    if result.get("errors"):
        lines += ["## Errors", ""] + [f"- {e}" for e in result["errors"]] + [""]
    lines.append(f"total {result['seconds']:.0f} s")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ 8. onnxruntime

def bench_onnxruntime(model: BENBase, device: torch.device, size: int, iters: int, warmup: int, out: Path,
                      log, dtypes=("fp32", "fp16")) -> list:
    """The exported file in onnxruntime's GPU providers (rows of ms / image and max |Δalpha| vs torch fp32)."""
    try:
        import onnxruntime as ort

        from ben_core.model.export import INPUT_NAME, export_onnx
    except ImportError as e:
        return [{"provider": "-", "dtype": "-", "skipped": f"not installed here ({e})"}]
    wanted = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in ort.get_available_providers()]
    if device.type == "cpu":
        wanted = ["CPUExecutionProvider"]
    if not wanted:
        return [{"provider": "-", "dtype": "-", "skipped": f"no GPU provider (have {ort.get_available_providers()})"}]
    cpu_model = copy.deepcopy(model).cpu().float()  # the export runs on the CPU in fp32
    image = synthetic_images(1, size, size).permute(0, 3, 1, 2).contiguous()  # the file's [B, 3, S, S]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = torch.sigmoid(cpu_model((image - mean) / std)).numpy()
    rows = []
    for dtype in dtypes:
        path = out / f"ben2-{size}-{dtype}.onnx"
        t = time.perf_counter()
        try:
            export_onnx(cpu_model, path, working_size=size, dtype=dtype, force=True)
        except ImportError as e:
            return [{"provider": "-", "dtype": dtype, "skipped": f"cannot export here ({e})"}]
        log(f"  exported {dtype} in {time.perf_counter() - t:.0f} s")
        for provider in wanted:
            session = ort.InferenceSession(str(path), providers=[provider])
            feed = {INPUT_NAME: image.numpy()}
            t = time.perf_counter()
            alpha = session.run(None, feed)[0]  # the first call builds TensorRT's engine
            first = time.perf_counter() - t
            for _ in range(warmup):
                session.run(None, feed)
            times = []
            for _ in range(iters):
                t = time.perf_counter()
                session.run(None, feed)
                times.append(time.perf_counter() - t)
            rows.append({"provider": provider, "dtype": dtype, "first_call_s": first,
                         "ms_per_image": 1e3 * statistics.median(times), "max_abs_diff": float(abs(alpha - ref).max()),
                         "mean_abs_diff": float(abs(alpha - ref).mean())})
        path.unlink()
    return rows


# ---------------------------------------------------------------------------------------------- main

def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out", help="output folder (default $OUT)")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--quick", action="store_true", help="small sizes, batch 1, no compile rows (CPU smoke test)")
    p.add_argument("--upstream", metavar="BEN2.py", help="upstream PramaLLC/BEN2 BEN2.py to run side by side")
    p.add_argument("--budget-s", type=float, default=450.0,
                   help="compile rows are skipped once the run is this old (default 450 s: the whole check < 8 min)")
    p.add_argument("--compile-rows", nargs="*", default=["cudagraphs:bf16:16", "compile:bf16:16",
                                                         "cudagraphs:fp16:1", "compile:fp16:1"],
                   help="compiled rows MODE:DTYPE:BATCH, in order of importance")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here; use --device cpu --quick for the CPU smoke test", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f}s] {msg}", flush=True)

    quick = args.quick
    size = 512 if quick else 1024
    half = ["bf16"] if (quick and device.type == "cpu") else ["fp16", "bf16"]
    result: dict = {"environment": {
        "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "command": "python -m benchmarks.gpu_check " + " ".join(argv or sys.argv[1:]),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "capability": list(torch.cuda.get_device_capability(device)) if device.type == "cuda" else None,
        "threads": torch.get_num_threads()}, "errors": []}

    def section(name: str, fn):
        try:
            return fn()
        except Exception as e:  # one broken section must not cost the others (one run on a lent machine)
            result["errors"].append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            traceback.print_exc()
            return None

    log(f"device {result['environment']['device_name']}, torch {torch.__version__}; building synthetic weights")
    model = BENBase().eval().requires_grad_(False)
    model.load_state_dict(checkpoint_filter_fn(synth_sd(0)), strict=True)
    model = model.to(device)

    log("1. correctness")
    correctness = section("correctness", lambda: check_correctness(model, device, [512] if quick else [512, 1024],
                                                                  half, log))
    if correctness is not None:
        correctness["nan_fallback"] = section("nan fallback", lambda: check_nan_fallback(
            model, device, DTYPES[half[-1]], 512 if quick else 1024))
    result["correctness"] = correctness

    log("2. attention backends")
    result["attention"] = section("attention", lambda: check_attention(model, device, DTYPES[half[-1]], size))

    log("3. network throughput")
    rows = []
    batches = [1] if quick else [1, 4, 16]
    iters, warmup = (1, 0) if quick else (20, 3)
    for batch in batches:
        for name in half:
            # section() calls the lambda at once; name and batch are bound explicitly all the same
            r = section(f"eager {name} b{batch}", lambda name=name, batch=batch: bench_network(
                model, device, DTYPES[name], batch, size, "eager", iters, warmup))
            if r:
                rows.append(r)
                log(f"  eager {name} batch {batch}: {r['ms_per_image']:.2f} ms/image, {r['images_per_s']:.1f} img/s, "
                    f"peak {_fmt(r['peak_mib'], '.0f')} MiB")
    result["throughput"] = rows

    log("4. Remove Background path")
    n_images = 2 if quick else 16
    result["remove_background"] = section("remove background", lambda: bench_remove_background(
        model, device, DTYPES[half[-1]], n_images, 540 if quick else 1080, 960 if quick else 1920,
        min(n_images, 16), size))

    log("7. video stabiliser")
    result["stabilizer"] = section("stabiliser", lambda: bench_stabilizer(
        device, 180 if quick else 1080, 320 if quick else 1920, 5 if quick else 17))

    log("6. dynamic VRAM and Cancel")
    from benchmarks import dynamic_vram_check

    result["dynamic_vram"] = section("dynamic vram", lambda: dynamic_vram_check.run(device, DTYPES[half[-1]], quick,
                                                                                   log))
    if result["dynamic_vram"] is not None and not result["dynamic_vram"]["ok"]:
        result["errors"].append("dynamic vram: a check failed (see the table)")

    log("3b. compiled rows")
    for spec in ([] if quick and device.type == "cpu" else args.compile_rows):
        mode, name, batch = spec.split(":")
        batch = int(batch)
        elapsed = time.perf_counter() - t_start
        if elapsed > args.budget_s:
            rows.append({"mode": mode, "dtype": name, "batch": batch, "skipped": f"time budget ({elapsed:.0f} s used)"})
            continue
        # section() calls the lambda at once; mode, name and batch are bound explicitly all the same
        r = section(f"{mode} {name} b{batch}", lambda mode=mode, name=name, batch=batch: bench_network(
            model, device, DTYPES[name], batch, size, mode, iters, warmup))
        if r:
            rows.append(r)
            log(f"  {mode} {name} batch {batch}: {r['ms_per_image']:.2f} ms/image ({r['images_per_s']:.1f} img/s), "
                f"first call {r['first_call_s']:.1f} s, peak {_fmt(r['peak_mib'], '.0f')} MiB")
    if quick and device.type == "cpu":
        rows.append({"mode": "compile / cudagraphs", "dtype": "-", "batch": "-",
                     "skipped": "--quick on the CPU (inductor takes minutes here; "
                                "tests/test_predictor.py checks parity)"})

    log("8. onnxruntime")
    if quick and device.type == "cpu":
        result["onnxruntime"] = [{"provider": "-", "dtype": "-", "skipped": "--quick on the CPU (an export takes a "
                                  "minute here; tests/test_onnx.py checks the files)"}]
    elif time.perf_counter() - t_start > args.budget_s:
        result["onnxruntime"] = [{"provider": "-", "dtype": "-", "skipped": "time budget"}]
    else:
        result["onnxruntime"] = section("onnxruntime", lambda: bench_onnxruntime(model, device, size, iters, warmup,
                                                                                 out, log))

    if args.upstream:
        log("5. upstream BEN2.py")
        short = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}
        ours = {(r["batch"], short[r["dtype"]]): r for r in rows if r.get("mode") == "eager" and "skipped" not in r}
        if device.type == "cpu" and (1, "fp32") not in ours:
            r = section("eager fp32 b1", lambda: bench_network(model, device, torch.float32, 1, size, "eager", iters,
                                                               warmup))
            if r:
                ours[(1, "fp32")] = r
                rows.append(r)
        result["upstream"] = section("upstream", lambda: bench_upstream(
            args.upstream, device, [1] if quick else [1, 16], size, iters, warmup, ours))

    result["seconds"] = time.perf_counter() - t_start
    text = report(result)
    print("\n" + text)
    (out / "gpu_check.md").write_text(text + "\n")
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2, default=str))
    log(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
