"""Benchmark: ``python -m benchmarks.bench [--upstream PATH/TO/BEN2.py] [options]``.

Prints a table with, for our BEN2 network at the working size (1024² by default) on the current device:
median forward time per image over ``--repeats`` runs, images/s, effective GFLOP/s (FLOPs counted once
with ``torch.utils.flop_counter.FlopCounterMode`` on the meta device: ~2.15 TFLOP per 1024² image) and
peak memory (process peak RSS on CPU, ``torch.cuda.max_memory_allocated`` on CUDA); and for the
foreground estimator at 1024², 1080p and 4K.

Every configuration runs in its own fresh worker subprocess so memory peaks are not polluted by other
configurations. With ``--upstream`` the upstream ``BEN_Base`` (PramaLLC/BEN2 ``BEN2.py``, a path you
supply; it is never bundled) runs in a second worker on the same weights and the same input, the two
workers alternating run by run (ABBA order), and the table adds upstream/ours ratios and the largest
probability difference between the two outputs. Upstream seeds global RNGs and sets the matmul
precision at import, which is why it lives in its own process.

Weights: ``--weights PATH`` (any checkpoint ben_core reads), else the synthetic conformance weights
(``tests/data/synth_weights.py``, through ``tests/helpers.py``); timing does not depend on the values.
Run it from the repository root (benchmarks are not part of the shipped package).
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

FG_SIZES = {"1024²": (1024, 1024), "1080p": (1920, 1080), "4K": (3840, 2160)}


# --------------------------------------------------------------------------------------------------
# helpers shared by parent and workers
# --------------------------------------------------------------------------------------------------

def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (VmHWM on Linux, ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0


def current_rss_mb() -> float:
    """Current resident set size in MiB (Linux; NaN elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


def make_input(batch: int, size: int, device="cpu"):
    """Deterministic smooth test images (no RNG), ImageNet-normalised: float32 [batch, 3, size, size]."""
    import torch

    from ben_core.predictor import IMAGENET_MEAN, IMAGENET_STD

    lin = torch.linspace(0.0, 1.0, size)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    imgs = []
    for i in range(batch):
        disc = (((xx - 0.5 - 0.05 * i) ** 2 + (yy - 0.55) ** 2) < 0.09).float()
        r = 0.5 + 0.4 * torch.sin(11.0 * xx + 5.0 * yy + i)
        g = 0.5 + 0.4 * torch.cos(7.0 * xx - 9.0 * yy) * (1 - disc) + 0.3 * disc
        b = 0.3 + 0.6 * disc * yy
        imgs.append(torch.stack([r, g, b]).clamp(0, 1))
    x = torch.stack(imgs)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).to(device)


def count_flops(size: int = 1024, model=None, x=None) -> int:
    """FLOPs of one forward pass of our network on a [1,3,size,size] input (FMA = 2 FLOPs).

    Without ``model``/``x`` the count runs on the meta device (no compute; fails if the network uses
    data-dependent ops such as ``nonzero``). With them it runs that real forward under the counter.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    if model is None:
        from ben_core.model import BENBase

        with torch.device("meta"):
            model = BENBase().eval()
            x = torch.empty(1, 3, size, size)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(x[:1])
    return int(counter.get_total_flops())


def prepare_weights(dst: Path) -> str:
    """Write benchmark weights (official key names) to ``dst`` as safetensors; returns their origin."""
    from safetensors.torch import save_file

    from tests.helpers import synth_sd

    sd = synth_sd(0)
    origin = "synthetic (tests/data/synth_weights.py, seed 0)"
    save_file({k: v.detach().contiguous().clone() for k, v in sd.items()}, str(dst))
    return origin


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


# --------------------------------------------------------------------------------------------------
# workers (run as `python -m benchmarks.bench --worker JSON`)
# --------------------------------------------------------------------------------------------------

def _emit(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _net_worker(spec: dict) -> int:
    """Interactive network worker: READY, then one reply per command (run / profile / done)."""
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = spec["device"]
    impl = spec["impl"]
    t0 = time.perf_counter()
    flops, flops_note = None, None
    if spec.get("count_flops") and impl == "ours":
        try:
            flops = count_flops(spec["size"])
        except Exception as e:  # data-dependent ops: count on the real forward below instead
            flops_note = (f"ours cannot run on the meta device ({type(e).__name__}: data-dependent op)"
                          + ("; counting on a real (untimed) forward" if spec["count_flops"] == "full" else ""))
    from safetensors.torch import load_file

    if impl == "ours":
        from ben_core.model import BENBase

        model = BENBase()
    else:
        import copy

        from .upstream_loader import load_upstream

        model = load_upstream(spec["upstream"]).BEN_Base()
        if spec.get("count_flops"):  # upstream's graph runs on meta once built (its __init__ needs real tensors)
            meta = copy.deepcopy(model).eval().to("meta")
            flops = count_flops(spec["size"], meta, torch.empty(1, 3, spec["size"], spec["size"], device="meta"))
            del meta
    sd = load_file(spec["weights"])  # the parent wrote flat official keys
    if impl == "ours":
        from ben_core.model.ben2 import checkpoint_filter_fn

        sd = checkpoint_filter_fn(sd)
    model.load_state_dict(sd, strict=True)
    del sd
    model = model.to(device).eval()
    x = make_input(spec["batch"], spec["size"], device)
    from ben_core.devices import PRECISIONS

    dtype = PRECISIONS[spec["dtype"]]

    def forward():
        if impl == "ours":
            with torch.inference_mode():
                if dtype != torch.float32:
                    with torch.autocast(device_type=device.split(":")[0], dtype=dtype):
                        return model(x).float().sigmoid()
                return model(x).float().sigmoid()
        return model(x).float()  # upstream returns probabilities (fp16 autocast on CUDA, its own choice)

    rss_loaded = current_rss_mb()
    warmed = False
    if spec.get("count_flops") == "full" and flops is None:
        flops = count_flops(spec["size"], model, x)
        warmed = True
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()  # peak of the timed runs (weights and input included)
    _emit({"ready": True, "load_s": time.perf_counter() - t0, "rss_after_load_mb": rss_loaded,
           "flops": flops, "flops_note": flops_note, "warmed": warmed, "torch_threads": torch.get_num_threads()})
    y = None
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "run":
            _sync(device)
            t = time.perf_counter()
            y = forward()
            _sync(device)
            _emit({"t": time.perf_counter() - t})
        elif cmd == "profile":
            from torch.profiler import ProfilerActivity, profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
            with profile(activities=acts) as prof:
                y = forward()
                _sync(device)
            avg = prof.key_averages()
            table = None
            keys = ["self_device_time_total", "self_cuda_time_total"] if device.startswith("cuda") else []
            for key in keys + ["self_cpu_time_total"]:
                try:
                    table = avg.table(sort_by=key, row_limit=18, max_name_column_width=48)
                    break
                except Exception:
                    continue
            _emit({"table": table})
        elif cmd == "done":
            out = None
            if y is not None and spec.get("out"):
                import numpy as np

                np.save(spec["out"], y[0, 0].float().cpu().numpy())
                out = spec["out"]
            peak_cuda = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
            _emit({"peak_rss_mb": peak_rss_mb(), "peak_cuda_mb": peak_cuda, "out": out})
            return 0
    return 1


def _fg_worker(spec: dict) -> int:
    """Foreground-estimator worker: median time of estimate_foreground at one size, peak memory."""
    import torch

    from ben_core.matting.foreground import estimate_foreground

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = spec["device"]
    w, h = spec["w"], spec["h"]
    lin_y = torch.linspace(0, 1, h).view(h, 1)
    lin_x = torch.linspace(0, 1, w).view(1, w)
    img = torch.stack([(lin_x * lin_y).expand(h, w), (1 - lin_x).expand(h, w), lin_y.expand(h, w)])[None]
    alpha = ((((lin_x - 0.5) ** 2) + (lin_y - 0.5) ** 2) < 0.1).float()
    alpha = torch.nn.functional.avg_pool2d(alpha[None, None], 9, 1, 4)[0]  # soft edges
    img, alpha = img.to(device).contiguous(), alpha.to(device).contiguous()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    rss0 = current_rss_mb()
    times = []
    for i in range(spec["warmup"] + spec["repeats"]):
        _sync(device)
        t = time.perf_counter()
        with torch.inference_mode():
            estimate_foreground(img, alpha)
        _sync(device)
        if i >= spec["warmup"]:
            times.append(time.perf_counter() - t)
    peak_cuda = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    _emit({"times": times, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": rss0, "peak_cuda_mb": peak_cuda})
    return 0


class _Worker:
    """Parent-side handle of an interactive network worker subprocess."""

    def __init__(self, spec: dict, env: dict):
        self.spec = spec
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench", "--worker", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
        self.ready = self._read()
        self.times: list[float] = []

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise RuntimeError(f"{self.spec['impl']} worker exited with code {code} (see its stderr above)")
        return json.loads(line)

    def ask(self, cmd: str) -> dict:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._read()

    def run(self) -> float:
        t = self.ask("run")["t"]
        self.times.append(t)
        return t

    def finish(self) -> dict:
        res = self.ask("done")
        self.proc.wait(timeout=120)
        return res

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------------------------------
# parent
# --------------------------------------------------------------------------------------------------

def _worker_env() -> dict:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _fmt_time(s: float) -> str:
    return f"{s:8.2f} s " if s >= 1 else f"{s * 1e3:8.1f} ms"


def _fmt_mem(mb: float | None) -> str:
    if mb is None or mb != mb:
        return "-"
    return f"{mb / 1024:.2f} GiB" if mb >= 1024 else f"{mb:.0f} MiB"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--size", type=int, default=1024, choices=[512, 768, 1024], help="network input size")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed forward runs per configuration, median reported (default: 3 on CPU, 20 on GPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs first (default: 0 on CPU, 3 on GPU)")
    p.add_argument("--dtypes", nargs="+", default=None, choices=["fp32", "fp16", "bf16"],
                   help="ours: default fp32 on CPU, fp16 bf16 on CUDA (autocast)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=None, help="default 1 on CPU, 1 8 on CUDA")
    p.add_argument("--upstream", metavar="BEN2.py", help="upstream PramaLLC/BEN2 BEN2.py to run side by side")
    p.add_argument("--weights", metavar="PATH", help="checkpoint to benchmark with (default synthetic)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in every worker")
    p.add_argument("--no-network", action="store_true", help="skip the network rows")
    p.add_argument("--no-foreground", action="store_true", help="skip the foreground-estimator rows")
    p.add_argument("--fg-sizes", nargs="+", default=list(FG_SIZES), choices=list(FG_SIZES))
    p.add_argument("--fg-repeats", type=int, default=5)
    p.add_argument("--profile", action="store_true",
                   help="after timing, profile one forward of ours (and upstream) and print the top ops")
    p.add_argument("--json", metavar="PATH", help="also write the raw results as JSON")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def _bench_network(args, device: str, tmp: Path, log) -> list[dict]:
    weights = tmp / "weights.safetensors"
    if args.weights:
        from safetensors.torch import save_file

        from ben_core.model.weights import read_state_dict

        sd = read_state_dict(args.weights)
        save_file({k: v.contiguous() for k, v in sd.items()}, str(weights))
        origin = f"checkpoint {args.weights}"
        del sd
    else:
        origin = prepare_weights(weights)
    log(f"weights: {origin}")
    on_gpu = device.startswith("cuda") or device == "mps"
    dtypes = args.dtypes or (["fp16", "bf16"] if on_gpu else ["fp32"])
    batches = args.batch_sizes or ([1, 8] if on_gpu else [1])
    warmup = args.warmup if args.warmup is not None else (3 if on_gpu else 0)
    repeats = args.repeats if args.repeats is not None else (20 if on_gpu else 3)
    env = _worker_env()
    rows: list[dict] = []
    flops, flops_src, flops_ours = None, None, None
    for b in batches:
        for dt in dtypes:
            base = {"device": device, "size": args.size, "batch": b, "weights": str(weights), "threads": args.threads}
            # FLOPs: upstream's graph on meta when given (cheap, the nominal 2.15 TFLOP at 1024²), else ours
            # (meta, or a real untimed forward if our network uses data-dependent ops)
            ours_spec = dict(base, impl="ours", dtype=dt, out=str(tmp / f"ours_{b}_{dt}.npy"),
                             count_flops=(("meta" if args.upstream else "full") if flops is None else False))
            up_spec = (dict(base, impl="upstream", upstream=str(Path(args.upstream).resolve()),
                            dtype="fp16" if device.startswith("cuda") else "fp32", out=str(tmp / f"up_{b}_{dt}.npy"),
                            count_flops=flops is None)
                       if args.upstream else None)
            workers = []
            try:
                log(f"[batch {b}, {dt}] loading ours ...")
                ours = _Worker(ours_spec, env)
                workers.append(ours)
                up = None
                if up_spec:
                    log(f"[batch {b}, {dt}] loading upstream ...")
                    up = _Worker(up_spec, env)
                    workers.append(up)
                if ours.ready.get("flops") and not ours.ready.get("warmed"):
                    flops_ours = ours.ready["flops"]
                if flops is None:
                    if up is not None and up.ready["flops"]:
                        flops, flops_src = up.ready["flops"], "upstream graph, FlopCounterMode on meta"
                    elif ours.ready["flops"]:
                        flops = ours.ready["flops"]
                        flops_src = ("ours, FlopCounterMode on meta" if not ours.ready.get("warmed")
                                     else "ours, FlopCounterMode on a real forward (executed FLOPs)")
                order = [ours] + ([up] if up else [])
                if ours.ready.get("flops_note"):
                    log(f"  FLOPs: {ours.ready['flops_note']}")
                if ours.ready.get("warmed") and up is not None and warmup == 0:
                    log("  one untimed upstream run (ours had one while counting FLOPs) ...")
                    up.ask("run")
                for _ in range(warmup):
                    for w in order:
                        w.ask("run")
                for i in range(repeats):
                    seq = order if i % 2 == 0 else order[::-1]  # ABBA: neither side always goes first
                    for w in seq:
                        t = w.run()
                        log(f"  {w.spec['impl']:8s} run {i + 1}/{repeats}: {t:.3f} s")
                profiles = {}
                if args.profile:
                    for w in order:
                        log(f"  profiling {w.spec['impl']} ...")
                        profiles[w.spec["impl"]] = w.ask("profile")["table"]
                finals = [w.finish() for w in order]
            finally:
                for w in workers:
                    w.kill()
            for w, fin in zip(order, finals, strict=True):
                med = statistics.median(w.times)
                rows.append({
                    "impl": w.spec["impl"],
                    "dtype": w.spec["dtype"] + (" (its autocast)" if w.spec["impl"] == "upstream"
                                                and device.startswith("cuda") else ""),
                    "batch": b, "size": args.size, "device": device, "times_s": w.times, "median_s": med,
                    "s_per_image": med / b, "images_per_s": b / med,
                    "gflops": (flops * b / med / 1e9) if flops else None,
                    "peak_rss_mb": fin["peak_rss_mb"], "rss_after_load_mb": w.ready["rss_after_load_mb"],
                    "peak_cuda_mb": fin["peak_cuda_mb"], "threads": w.ready["torch_threads"],
                    "profile": profiles.get(w.spec["impl"]), "out": fin["out"], "flops_per_image": flops,
                    "flops_source": flops_src, "flops_executed_ours": flops_ours,
                })
            if up is not None:
                import numpy as np

                a, c = np.load(rows[-2]["out"]), np.load(rows[-1]["out"])
                rows[-1]["max_abs_prob_diff_vs_ours"] = float(np.abs(a - c).max())
                rows[-1]["time_ratio_upstream_over_ours"] = rows[-1]["median_s"] / rows[-2]["median_s"]
                rows[-1]["best_time_ratio_upstream_over_ours"] = min(rows[-1]["times_s"]) / min(rows[-2]["times_s"])
                rows[-1]["rss_ratio_ours_over_upstream"] = rows[-2]["peak_rss_mb"] / rows[-1]["peak_rss_mb"]
                if rows[-1]["peak_cuda_mb"]:
                    rows[-1]["cuda_mem_ratio_ours_over_upstream"] = rows[-2]["peak_cuda_mb"] / rows[-1]["peak_cuda_mb"]
    return rows


def _bench_foreground(args, device: str, log) -> list[dict]:
    env = _worker_env()
    rows = []
    on_gpu = device != "cpu"
    for name in args.fg_sizes:
        w, h = FG_SIZES[name]
        spec = {"kind": "fg", "device": device, "w": w, "h": h, "repeats": args.fg_repeats,
                "warmup": 2 if on_gpu else 1, "threads": args.threads}
        log(f"foreground estimator at {name} ({w}x{h}) ...")
        r = subprocess.run([sys.executable, "-m", "benchmarks.bench", "--worker", json.dumps(spec)],
                           stdout=subprocess.PIPE, text=True, env=env, timeout=1800)
        if r.returncode != 0:
            raise RuntimeError(f"foreground worker failed at {name} (exit {r.returncode})")
        res = json.loads(r.stdout.strip().splitlines()[-1])
        med = statistics.median(res["times"])
        rows.append({"name": name, "w": w, "h": h, "device": device, "times_s": res["times"], "median_s": med,
                     "megapixels_per_s": w * h / med / 1e6, "peak_rss_mb": res["peak_rss_mb"],
                     "rss_before_mb": res["rss_before_mb"], "peak_cuda_mb": res["peak_cuda_mb"]})
    return rows


def format_report(net_rows: list[dict], fg_rows: list[dict], device: str) -> str:
    """The result tables as text."""
    import torch

    lines = []
    cpu = device == "cpu"
    mem_hdr = "peak RSS" if cpu else "peak GPU mem"
    if net_rows:
        size = net_rows[0]["size"]
        fl = net_rows[0]["flops_per_image"]
        lines.append(f"BEN2 network forward, {size}x{size}, device {device}, torch {torch.__version__}, "
                     f"{net_rows[0]['threads']} threads" + (f", {fl / 1e12:.3f} TFLOP/image" if fl else ""))
        if fl:
            fe = net_rows[0].get("flops_executed_ours")
            lines.append(f"(FLOPs: {net_rows[0]['flops_source']}; GFLOP/s = these FLOPs / time for every row"
                         + (f"; ours executes {fe / 1e12:.3f} TFLOP/image" if fe and fe != fl else "") + ")")
        hdr = (f"{'impl':9s} {'dtype':21s} {'batch':>5s} {'median/img':>12s} {'img/s':>7s} {'GFLOP/s':>8s} "
               f"{mem_hdr:>12s} {'RSS idle':>9s}  runs (s)")
        lines += [hdr, "-" * len(hdr)]
        for r in net_rows:
            mem = r["peak_rss_mb"] if cpu else r["peak_cuda_mb"]
            lines.append(
                f"{r['impl']:9s} {r['dtype']:21s} {r['batch']:5d} {_fmt_time(r['s_per_image']):>12s} "
                f"{r['images_per_s']:7.3f} {(r['gflops'] or float('nan')):8.1f} {_fmt_mem(mem):>12s} "
                f"{_fmt_mem(r['rss_after_load_mb']):>9s}  " + ", ".join(f"{t:.2f}" for t in r["times_s"]))
            if "time_ratio_upstream_over_ours" in r:
                extra = (f"  -> ours is {r['time_ratio_upstream_over_ours']:.2f}x faster than upstream "
                         f"(medians; best runs {r['best_time_ratio_upstream_over_ours']:.2f}x); "
                         f"ours' peak RSS = {100 * r['rss_ratio_ours_over_upstream']:.0f}% of upstream's")
                if r.get("cuda_mem_ratio_ours_over_upstream"):
                    extra += f"; GPU mem {100 * r['cuda_mem_ratio_ours_over_upstream']:.0f}%"
                extra += f"; max |prob diff| {r['max_abs_prob_diff_vs_ours']:.2e}"
                lines.append(extra)
        lines.append("(peak RSS: whole worker process incl. weights; RSS idle: after loading, before any forward)")
    if fg_rows:
        lines.append("")
        lines.append(f"Foreground estimator (blur fusion, radii 90 then 6), device {device}")
        hdr = f"{'size':8s} {'pixels':>11s} {'median':>11s} {'MPix/s':>8s} {mem_hdr:>12s}  runs"
        lines += [hdr, "-" * len(hdr)]
        for r in fg_rows:
            mem = r["peak_rss_mb"] if cpu else r["peak_cuda_mb"]
            lines.append(f"{r['name']:8s} {str(r['w']) + 'x' + str(r['h']):>11s} {_fmt_time(r['median_s']):>11s} "
                         f"{r['megapixels_per_s']:8.1f} {_fmt_mem(mem):>12s}  "
                         + ", ".join(f"{t * 1e3:.0f}ms" for t in r["times_s"]))
    for r in net_rows:
        if r.get("profile"):
            lines += ["", f"torch.profiler, one forward of {r['impl']} (batch {r['batch']}, {r['dtype']}):",
                      r["profile"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        return _fg_worker(spec) if spec.get("kind") == "fg" else _net_worker(spec)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.upstream and not Path(args.upstream).is_file():
        print(f"error: --upstream {args.upstream}: no such file (fetch BEN2.py from github.com/PramaLLC/BEN2)",
              file=sys.stderr)
        return 2
    if args.repeats is not None and args.repeats < 1:
        print("error: --repeats must be >= 1", file=sys.stderr)
        return 2
    from ben_core.devices import resolve_device

    try:
        device = str(resolve_device(args.device))
    except ValueError as e:
        print(f"error: --device {args.device}: {e}", file=sys.stderr)
        return 2
    net_rows, fg_rows = [], []
    with tempfile.TemporaryDirectory(prefix="ben_bench_") as tmp:
        if not args.no_network:
            net_rows = _bench_network(args, device, Path(tmp), log)
        if not args.no_foreground:
            fg_rows = _bench_foreground(args, device, log)
    print(format_report(net_rows, fg_rows, device))
    if args.json:
        Path(args.json).write_text(json.dumps({"network": net_rows, "foreground": fg_rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
