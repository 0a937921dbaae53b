"""Benchmark of the Confidence-Guided Matting pieces: ``python -m benchmarks.bench_matting [--quick]``.

Prints markdown tables:
1. confidence_trimap (bounded passes) vs the naive Algorithm 1+2 loop: time and identity check.
2. SAD (thousands) / MSE inside the unknown band for the coarse alpha, ``guided`` and ``vitmatte``
   (structure only: a tiny randomly initialised ViTMatte, no real weights) on the synthetic benchmark
   and on pymatting's lemur photo (tests/data/lemur; its alpha is an estimate, a sanity check only).
3. A radius / eps / unknown-weight sweep of the guided filter (the measurement behind the defaults).
4. 4K (3840x2160) guided refinement: time and peak RSS, in a fresh subprocess.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ben_core.matting.refine import DEFAULT_EPS, default_radius, refine_alpha
from ben_core.matting.trimap import confidence_trimap
from tests.helpers import load_lemur, naive_confidence_trimap, tiny_vitmatte

from .synthetic_matting import band_mse, band_sad, coarsen_alpha, make_synthetic_matte

REPO = Path(__file__).resolve().parent.parent
MODEL_FACTOR = 3840 / 1024  # a 4K image seen through a 1024^2 model


def _timeit(fn, repeat=3):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def trimap_table(sizes) -> str:
    """Markdown table: naive Algorithm 1+2 loop vs confidence_trimap on soft/sharp [H, W] maps of ``sizes``
    (list of (H, W)); times in seconds and whether trimap and final thresholds are identical."""
    g = torch.Generator().manual_seed(0)
    lines = ["| map | size | naive steps | naive loop (s) | confidence_trimap (s) | speed-up | identical |",
             "|---|---|---|---|---|---|---|"]
    for H, W in sizes:
        yy = torch.linspace(-1, 1, H).reshape(H, 1)
        xx = torch.linspace(-1, 1, W).reshape(1, W)
        d = torch.sqrt(xx ** 2 + yy ** 2) - 0.5 + 0.02 * torch.randn(H, 1, generator=g)
        maps = {"soft edge": torch.sigmoid(-d * 60), "sharp edge": torch.sigmoid(-d * 2000)}
        for name, p in maps.items():
            p = p.float()
            # _timeit calls these at once, in this iteration; p is bound explicitly all the same
            tn, (ref, tl, th, steps) = _timeit(lambda p=p: naive_confidence_trimap(p), repeat=1)
            tf, (tri, lo, hi) = _timeit(lambda p=p: confidence_trimap(p), repeat=2)
            same = bool((tri.double().numpy() == ref).all()) and float(lo[0]) == tl and float(hi[0]) == th
            lines.append(f"| {name} | {W}x{H} | {steps} | {tn:.3f} | {tf:.3f} | {tn / tf:.1f}x | {same} |")
    return "\n".join(lines)


def cases(quick: bool):
    """Benchmark cases: list of ``(name, image [1,3,H,W], truth [1,H,W], coarse [1,H,W], trimap [1,H,W])``,
    all float 0..1 (three synthetic samples, 960x540 with ``quick`` else 1920x1080, plus the lemur twice)."""
    out = []
    sz = [(540, 960)] if quick else [(1080, 1920)]
    for H, W in sz:
        for seed in (0, 1, 2):
            s = make_synthetic_matte(H, W, seed=seed, model_size=round(max(H, W) / MODEL_FACTOR))
            tri = confidence_trimap(s["coarse"])[0]
            out.append((f"synthetic {W}x{H} seed {seed}", s["image"], s["alpha"], s["coarse"], tri))
    img, gt, given = load_lemur()
    H, W = gt.shape[-2:]
    coarse = coarsen_alpha(gt, model_size=round(max(H, W) / MODEL_FACTOR))
    out.append((f"lemur {W}x{H}, confidence trimap", img, gt, coarse, confidence_trimap(coarse)[0]))
    out.append((f"lemur {W}x{H}, given trimap", img, gt, coarse, given))
    return out


def quality_table(cs, vit) -> str:
    """Markdown table of band SAD / MSE for coarse, guided and (if ``vit`` is a model) vitmatte on ``cs``
    (as :func:`cases` returns)."""
    lines = ["| case | unknown px | method | SAD band | MSE band | MSE cut | time (s) |",
             "|---|---|---|---|---|---|---|"]
    for name, img, gt, coarse, tri in cs:
        unk = tri == 0.5
        base = torch.where(unk, coarse, tri)
        m0 = band_mse(base, gt, unk)
        rows = [("coarse", base, 0.0)]
        t = time.perf_counter()
        rows.append(("guided", refine_alpha(img, coarse, tri), time.perf_counter() - t))
        if vit is not None:
            t = time.perf_counter()
            rows.append(("vitmatte (tiny random)", refine_alpha(img, coarse, tri, method="vitmatte", model=vit),
                         time.perf_counter() - t))
        for meth, pred, dt in rows:
            m = band_mse(pred, gt, unk)
            lines.append(f"| {name} | {int(unk.sum())} | {meth} | {band_sad(pred, gt, unk):.2f} | {m:.5f} | "
                         f"{100 * (1 - m / m0):+.1f}% | {dt:.2f} |")
    return "\n".join(lines)


def sweep_table(cs) -> str:
    """Markdown table of the band-MSE cut for a sweep of radius / eps / unknown_weight on ``cs``."""
    lines = ["| radius x default | eps | unknown_weight | " + " | ".join(c[0] for c in cs) + " | mean |",
             "|---" * (4 + len(cs)) + "|"]
    configs = [(1.0, None, 0.3), (0.5, None, 0.3), (2.0, None, 0.3), (1.0, 1e-5, 0.3), (1.0, 1e-3, 0.3),
               (1.0, None, 1.0), (1.0, None, 0.1)]
    for mult, eps, wu in configs:
        cuts = []
        for _name, img, gt, coarse, tri in cs:
            H, W = gt.shape[-2:]
            unk = tri == 0.5
            base = torch.where(unk, coarse, tri)
            r = max(1, round(default_radius(H, W) * mult))
            pred = refine_alpha(img, coarse, tri, radius=r, eps=eps, unknown_weight=wu)
            cuts.append(1 - band_mse(pred, gt, unk) / band_mse(base, gt, unk))
        e = DEFAULT_EPS if eps is None else eps
        lines.append(f"| {mult} | {e:g} | {wu} | " + " | ".join(f"{100 * c:+.1f}%" for c in cuts)
                     + f" | {100 * sum(cuts) / len(cuts):+.1f}% |")
    return "\n".join(lines)


def _vm_hwm_mb() -> float:
    """Peak resident set of this process (VmHWM, MB); ru_maxrss would include the parent's before exec."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _child_4k(path: str) -> None:
    d = torch.load(path, weights_only=True)
    reset = _reset_peak()
    rss0 = _vm_hwm_mb()
    t = time.perf_counter()
    out = refine_alpha(d["image"], d["coarse"], d["trimap"])
    dt = time.perf_counter() - t
    rss1 = _vm_hwm_mb()
    unk = d["trimap"] == 0.5
    base = torch.where(unk, d["coarse"], d["trimap"])
    print(json.dumps({"time_s": dt, "rss_after_load_mb": rss0, "peak_rss_mb": rss1, "peak_reset": reset,
                      "unknown": int(unk.sum()),
                      "radius": default_radius(*d["coarse"].shape[-2:]),
                      "mse_coarse": band_mse(base, d["alpha"], unk), "mse_guided": band_mse(out, d["alpha"], unk),
                      "sad_coarse": band_sad(base, d["alpha"], unk), "sad_guided": band_sad(out, d["alpha"], unk)}))


def fourk_table(H=2160, W=3840) -> str:
    """Markdown table: guided refinement of an ``H x W`` synthetic sample in a fresh subprocess
    (time, peak RSS, band MSE/SAD)."""
    s = make_synthetic_matte(H, W, seed=0, model_size=1024)
    tri = confidence_trimap(s["coarse"])[0]
    with tempfile.TemporaryDirectory() as td:
        p = os.path.join(td, "in.pt")
        torch.save({"image": s["image"], "coarse": s["coarse"], "trimap": tri, "alpha": s["alpha"]}, p)
        del s
        r = subprocess.run([sys.executable, "-m", "benchmarks.bench_matting", "--child-4k", p],
                           capture_output=True, text=True, check=True, cwd=str(REPO))
    d = json.loads(r.stdout.strip().splitlines()[-1])
    return "\n".join([
        "| size | unknown px | radius | time (s) | RSS with inputs loaded (MB) | peak RSS during refine (MB) | "
        "band MSE coarse -> guided | band SAD coarse -> guided |",
        "|---|---|---|---|---|---|---|---|",
        f"| {W}x{H} | {d['unknown']} | {d['radius']} | {d['time_s']:.1f} | {d['rss_after_load_mb']:.0f} | "
        f"{d['peak_rss_mb']:.0f} | {d['mse_coarse']:.5f} -> {d['mse_guided']:.5f} | "
        f"{d['sad_coarse']:.1f} -> {d['sad_guided']:.1f} |"])


def main(argv=None) -> None:
    """Command line entry: print the benchmark tables (``--quick``, ``--no-4k``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller synthetic images, no 4K, no naive 4K trimap")
    ap.add_argument("--no-4k", action="store_true", help="skip the 4K refinement measurement")
    ap.add_argument("--child-4k", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_4k:
        _child_4k(args.child_4k)
        return
    torch_threads = torch.get_num_threads()
    print(f"# ben_core matting benchmark (torch {torch.__version__}, {torch_threads} threads)\n")
    sizes = [(512, 512), (1024, 1024)] if args.quick else [(1024, 1024), (2160, 3840)]
    print("## confidence_trimap vs naive loop\n")
    print(trimap_table(sizes), "\n", flush=True)
    cs = cases(args.quick)
    print("## Unknown-band error (coarse = truth area-downsampled by 3.75x, blurred, upsampled)\n")
    try:
        vit = tiny_vitmatte()
    except ImportError:  # transformers is optional: the table then has no vitmatte rows
        vit = None
    print(quality_table(cs, vit), "\n", flush=True)
    print("## Guided-filter parameter sweep (band MSE cut vs coarse; defaults: radius=min(H,W)/45, eps=1e-4, "
          "unknown_weight=0.3)\n")
    print(sweep_table(cs), "\n", flush=True)
    if not (args.quick or args.no_4k):
        print("## 4K guided refinement (fresh subprocess, synthetic sample, model_size 1024)\n")
        print(fourk_table(), "\n", flush=True)


if __name__ == "__main__":
    main()
