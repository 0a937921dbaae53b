"""Peak memory of the cut-out pipeline on large photos: ``python -m benchmarks.bench_memory``.

Runs :class:`ben_core.pipeline.CutoutPipeline` (foreground colours on) on one synthetic photo per
configuration, each in a fresh subprocess, and prints a table: configuration, peak RSS of the child
(its ``VmHWM``), the RSS the child held before the pipeline ran (the photo, the
network, torch itself), wall time of ``pipeline.run`` and the largest difference of the output against
the ``--before`` checkout's output for the same configuration.

Configurations (``--configs``):

* ``cli``: uint8 photo in, RGBA uint8 out (what ``python -m ben_core --refine-foreground`` writes);
* ``node``: float32 photo in, RGBA float32 out (what Remove Background returns to ComfyUI);
* ``rgb``: uint8 photo in, RGB over a colour, uint8 out.

The network is a stand-in (``--net bright``: logits from the brightness of the working-size input, like
``tests/test_nodes.py``'s ``Bright``) or the real BENBase with the synthetic test weights
(``--net benbase``); it works at ``--working-size`` (512 by default), so its memory does not grow with
the photo. ``--before DIR`` names an older checkout (``git worktree add /tmp/mem_before HEAD`` or an
unpacked ``git archive``) whose ``ben_core`` is imported by the "before" children; ``--after`` defaults
to this checkout. ``--malloc-mmap`` also runs every configuration with ``MALLOC_MMAP_THRESHOLD_=131072``
(glibc then returns large freed blocks at once, so the peak RSS follows the live memory).

Run it from the repository root; not a test (a 8000x6000 run takes ~10-40 s on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ("cli", "node", "rgb")
_STRIP = 256  # rows generated at a time: the photo is built without full-size float temporaries


def make_photo(height: int, width: int, dtype):
    """A deterministic photo ``[1, H, W, 3]`` (uint8, or float32 0..1): a bright textured subject with
    a soft edge on a darker textured background, built ``_STRIP`` rows at a time."""
    import torch

    out = torch.empty((1, height, width, 3), dtype=dtype)
    xx = torch.linspace(0, 1, width).view(1, width)
    for r0 in range(0, height, _STRIP):
        r1 = min(height, r0 + _STRIP)
        yy = torch.linspace(0, 1, height)[r0:r1].view(-1, 1)
        d = ((xx - 0.47) ** 2 + ((yy - 0.52) * 0.8) ** 2).sqrt()
        wobble = 0.02 * torch.sin(40 * xx + 13 * yy) * torch.cos(29 * yy)
        subject = torch.sigmoid((0.3 + wobble - d) * 80)
        bg = torch.stack([0.25 + 0.2 * torch.sin(23 * xx + 7 * yy), 0.3 + 0.15 * torch.cos(17 * yy - 5 * xx),
                          0.2 + 0.1 * torch.sin(31 * xx * yy + 1)], -1)
        fg = torch.stack([0.85 + 0.1 * torch.sin(50 * yy + 3 * xx), (0.75 + 0.1 * torch.cos(60 * xx)).expand_as(d),
                          (0.6 + 0.3 * yy).expand_as(d)], -1)
        rows = (subject[..., None] * fg + (1 - subject[..., None]) * bg).clamp(0, 1)
        out[0, r0:r1] = (rows * 255).round().to(torch.uint8) if dtype == torch.uint8 else rows
    return out


def _bright_net():
    import torch

    class Bright(torch.nn.Module):
        """Stand-in for BENBase: logits = 40 * (mean brightness - 0.5) of the de-normalised input."""

        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(1))
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

        def forward(self, x):
            rgb = x.float() * self.std + self.mean
            return ((rgb.mean(1, keepdim=True) - 0.5) * 40.0 + self.bias).to(x.dtype)

    return Bright()


def _benbase_net():
    sys.path.insert(1, str(REPO))
    from ben_core.model import BENBase
    from tests.helpers import synth_sd

    model = BENBase()
    model.load_state_dict(synth_sd(0), strict=False)
    return model.eval()


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _hwm_mb() -> float:
    """This process's peak RSS (VmHWM). Not ``ru_maxrss``: Linux carries that across fork + exec, so a child
    would report at least the RSS its parent had when it forked (the parent reads large outputs)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc/self/status")


def _worker(spec: dict) -> int:
    """One configuration in this (fresh) process: build, run ``spec['repeats']`` times, save the output."""
    sys.path.insert(0, spec["pack"])  # the checkout's ben_core, before this repository's
    import numpy as np
    import torch

    from ben_core.pipeline import CutoutOptions, CutoutPipeline
    from ben_core.predictor import BENPredictor

    if spec["pack"] not in str(Path(sys.modules["ben_core"].__file__).resolve()):
        raise RuntimeError(f"imported ben_core from {sys.modules['ben_core'].__file__}, not {spec['pack']}")
    config = spec["config"]
    photo = make_photo(spec["h"], spec["w"], torch.float32 if config == "node" else torch.uint8)
    net = _benbase_net() if spec["net"] == "benbase" else _bright_net()
    predictor = BENPredictor(net, working_size=spec["working_size"])
    options = CutoutOptions(foreground=True, background=(0.1, 0.8, 0.3) if config == "rgb" else None)
    pipeline = CutoutPipeline(predictor, options)
    out_dtype = torch.float32 if config == "node" else torch.uint8
    rss0 = _rss_mb()
    times = []
    with torch.inference_mode():
        for _ in range(spec["repeats"]):
            t = time.perf_counter()
            cut = pipeline.run(photo, out_dtype=out_dtype)
            times.append(time.perf_counter() - t)
            if len(times) < spec["repeats"]:
                del cut
    peak_mb = _hwm_mb()
    if spec.get("out"):
        np.save(spec["out"], cut.image[0].numpy())
        if config == "rgb":
            np.save(spec["out"] + ".alpha.npy", cut.alpha[0].numpy())
    sys.stdout.write(json.dumps({"times": times, "rss_before_mb": rss0, "peak_mb": peak_mb}) + "\n")
    return 0


def _spawn(spec: dict, mmap: bool) -> dict:
    """Run one worker in a fresh process; its JSON line (times, RSS before the run, peak RSS)."""
    env = dict(os.environ)
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    if mmap:
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_memory", "--worker", json.dumps(spec)],
                            cwd=str(REPO), env=env, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    code = proc.wait()
    if code != 0:
        raise RuntimeError(f"worker {spec} exited with code {code}")
    return json.loads(out.strip().splitlines()[-1])


def max_abs_diff(a_path: str, b_path: str, rows: int = 512) -> float:
    """Largest |a - b| of two saved outputs (as floats; uint8 in 0..255 units), read a few rows at a time."""
    import numpy as np

    a = np.load(a_path, mmap_mode="r")
    b = np.load(b_path, mmap_mode="r")
    if a.shape != b.shape:
        raise ValueError(f"outputs differ in shape: {a.shape} vs {b.shape}")
    worst = 0.0
    for r0 in range(0, a.shape[0], rows):
        d = np.abs(a[r0:r0 + rows].astype(np.float64) - b[r0:r0 + rows].astype(np.float64))
        worst = max(worst, float(d.max()))
    return worst


def _parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--before", help="root of the older checkout (e.g. a git worktree of HEAD)")
    p.add_argument("--after", default=str(REPO), help="root of the newer checkout (default: this one)")
    p.add_argument("--sizes", default="8000x6000,3840x2160,1920x1080,1024x1024", help="WxH,WxH,...")
    p.add_argument("--configs", default="cli,node", help=f"comma-separated, of {', '.join(CONFIGS)}")
    p.add_argument("--net", choices=("bright", "benbase"), default="bright")
    p.add_argument("--working-size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=1, help="pipeline runs per process (time: median)")
    p.add_argument("--rounds", type=int, default=1, help="processes per checkout and configuration, alternating")
    p.add_argument("--malloc-mmap", action="store_true", help="also run with MALLOC_MMAP_THRESHOLD_=131072")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return _worker(json.loads(args.worker))
    packs = {"after": str(Path(args.after).resolve())}
    if args.before:
        packs = {"before": str(Path(args.before).resolve()), **packs}
    configs = [c for c in args.configs.split(",") if c]
    if any(c not in CONFIGS for c in configs):
        p.error(f"--configs takes {', '.join(CONFIGS)}")
    sizes = [_parse_size(s) for s in args.sizes.split(",") if s]
    print(f"# bench_memory: {', '.join(f'{k} = {v}' for k, v in packs.items())}; net {args.net} at "
          f"{args.working_size}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}", flush=True)
    rows = ["| size | config | malloc | checkout | peak RSS | RSS before run | time (median) "
            "| max abs diff vs before |",
            "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="ben_mem_") as tmp:
        for w, h in sizes:
            for config in configs:
                for mmap in (False, True) if args.malloc_mmap else (False,):
                    res = {k: [] for k in packs}
                    outs = {}
                    for rnd in range(args.rounds):
                        order = list(packs) if rnd % 2 == 0 else list(packs)[::-1]
                        for k in order:
                            out = str(Path(tmp) / f"{k}.npy") if rnd == 0 else None
                            spec = {"pack": packs[k], "h": h, "w": w, "config": config, "net": args.net,
                                    "working_size": args.working_size, "repeats": args.repeats, "out": out}
                            r = _spawn(spec, mmap)
                            res[k].append(r)
                            if out:
                                outs[k] = out
                            print(f"  {w}x{h} {config} {'mmap ' if mmap else ''}{k}: peak {r['peak_mb']:.0f} MiB, "
                                  f"times {', '.join(f'{t:.2f}' for t in r['times'])} s", flush=True)
                    for k in packs:
                        diff = "—"
                        if k != "before" and "before" in outs:
                            diff = f"{max_abs_diff(outs['before'], outs[k]):.3g}"
                            if config == "rgb":
                                alpha_diff = max_abs_diff(outs["before"] + ".alpha.npy", outs[k] + ".alpha.npy")
                                diff += f" (alpha {alpha_diff:.3g})"
                        peak = max(r["peak_mb"] for r in res[k])
                        before_run = statistics.median(r["rss_before_mb"] for r in res[k])
                        t = statistics.median(t for r in res[k] for t in r["times"])
                        rows.append(f"| {w}x{h} | {config} | {'mmap 128K' if mmap else 'default'} | {k} | "
                                    f"{peak / 1024:.2f} GiB | {before_run / 1024:.2f} GiB | {t:.2f} s | {diff} |")
                    for path in list(outs.values()):
                        for f in (path, path + ".alpha.npy"):
                            if os.path.exists(f):
                                os.remove(f)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
