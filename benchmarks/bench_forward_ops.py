"""Where one CPU forward's time goes, beside this machine's GEMM floor: ``python -m benchmarks.bench_forward_ops``.

BEN2 (synthetic weights) on a random ``--size``² image, batch 1, on the CPU:

* **GEMM floor**: the rate of a 2048³ ``torch.matmul`` in fp32 and in bf16 (best of 3, this process's
  threads), and the forward's floating-point operations (``torch.utils.flop_counter``, matmuls and
  convolutions): the floor is the time those operations take at that rate;
* **forward**: seconds per forward (median of ``--repeats`` after one untimed call) in fp32 and under bf16
  autocast (as ``--dtype bf16`` runs it), and its ratio to the floor;
* **where it goes**: one profiled bf16 forward (``torch.profiler``), self CPU time per operator group.

``--attention flash`` runs the decoder's large cross-attentions with the CPU's flash kernel (SDPA) instead
of :func:`ben_core.model.ops.attention`'s query blocks: the "before" column of the comparison. ``--ab N``
also times N bf16 forwards of each, interleaved (flash, blocked, flash, ...), and prints both medians: on
a shared machine only side-by-side figures compare. Not a test; run it on a quiet machine (the load
average is printed before and after).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

GROUPS = (  # (group, operator name fragments), first match wins
    ("attention", ("scaled_dot_product", "softmax", "bmm")),
    ("linear (GEMM)", ("addmm", "aten::mm", "matmul", "linear")),
    ("convolution", ("convolution", "conv2d")),
    ("dtype casts (copy_)", ("copy_", "aten::to", "_to_copy")),
    ("norms", ("norm",)),
    ("activations", ("gelu", "sigmoid")),
)


def gemm_rate(dtype: torch.dtype, n: int = 2048) -> float:
    """FLOP/s of an ``n``³ matmul in ``dtype`` (best of 3)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def group_of(name: str) -> str:
    for group, fragments in GROUPS:
        if any(f in name for f in fragments):
            return group
    return "other"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1024, help="working size (512, 768 or 1024)")
    p.add_argument("--repeats", type=int, default=3, help="timed forwards per precision")
    p.add_argument("--attention", choices=("blocked", "flash"), default="blocked",
                   help="the decoder's large bf16 cross-attentions: query blocks (default) or SDPA's flash kernel")
    p.add_argument("--ab", type=int, default=0, metavar="N",
                   help="also time N interleaved bf16 forwards with each attention and print both medians")
    args = p.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from ben_core.devices import cpu_native_bf16
    from ben_core.model import BENBase, ops
    from tests.helpers import synth_sd

    blocked, flash = ops._BLOCKED_MIN_SCORES, 1 << 62  # the thresholds that turn the query blocks on / off
    if args.attention == "flash":
        ops._BLOCKED_MIN_SCORES = flash
    print(f"# bench_forward_ops: {platform.processor() or platform.machine()}, native bf16 {cpu_native_bf16()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, size {args.size}, attention {args.attention}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    model = BENBase().eval()
    model.load_state_dict(synth_sd(0), strict=False)
    x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    rates = {"fp32": gemm_rate(torch.float32), "bf16": gemm_rate(torch.bfloat16)}
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode():
        counter = FlopCounterMode(display=False)
        with counter:
            model(x)
        flops = counter.get_total_flops()
        times = {}
        for name in ("fp32", "bf16"):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16"):
                model(x)
                runs = []
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    model(x)
                    runs.append(time.perf_counter() - t)
            times[name] = statistics.median(runs)
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.profiler.profile() as prof:
            model(x)
        ab: dict = {}
        threshold = ops._BLOCKED_MIN_SCORES
        for variant in ("flash", "blocked") * args.ab:
            ops._BLOCKED_MIN_SCORES = blocked if variant == "blocked" else flash
            with torch.autocast("cpu", dtype=torch.bfloat16):
                t = time.perf_counter()
                model(x)
                ab.setdefault(variant, []).append(time.perf_counter() - t)
        ops._BLOCKED_MIN_SCORES = threshold
    print(f"\nforward: {flops / 1e9:.0f} GFLOP (matmuls and convolutions)\n")
    print("| precision | GEMM rate (2048³) | floor | forward (median) | × floor |")
    print("|---|---|---|---|---|")
    for name in ("fp32", "bf16"):
        floor = flops / rates[name]
        print(f"| {name} | {rates[name] / 1e9:.0f} GFLOP/s | {floor:.2f} s | {times[name]:.2f} s "
              f"| {times[name] / floor:.2f} |")
    groups: dict = {}
    for e in prof.key_averages():
        groups[group_of(e.key)] = groups.get(group_of(e.key), 0.0) + e.self_cpu_time_total / 1e6
    total = sum(groups.values())
    print("\n| operator group (one bf16 forward, profiled) | self CPU time | share |")
    print("|---|---|---|")
    for group, t in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"| {group} | {t:.2f} s | {100 * t / total:.0f} % |")
    if ab:
        print(f"\ninterleaved bf16 forwards, median of {args.ab}: "
              f"SDPA flash kernel {statistics.median(ab['flash']):.2f} s, "
              f"query blocks {statistics.median(ab['blocked']):.2f} s")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
