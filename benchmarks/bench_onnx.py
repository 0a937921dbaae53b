"""onnxruntime against our torch path on this CPU: ``python -m benchmarks.bench_onnx``.

For each ``--sizes`` working size: the ONNX file of BEN2 (synthetic weights; exported into ``--files`` unless
it is there already) run by onnxruntime's CPU provider, beside ``BENBase`` in torch fp32 and under bf16
autocast (what ``--dtype auto`` runs on a CPU with native bf16). One forward of a real photo (the lemur,
resized to the working size), batch 1, the same threads for both; ``--repeats`` timed calls of each after
one untimed call, interleaved (torch fp32, torch bf16, onnxruntime, ...), median seconds.

Precision columns compare each alpha with torch fp32's on that photo: max |Δ|, mean |Δ| and the share of
pixels on the same side of 0.5 (the docs' rule: mean |Δ| ≤ 0.01 and ≥ 98 % on the same side).
``--int8`` also times onnxruntime's dynamic int8 quantisation of the fp32 file (``quantize_dynamic``, its
MatMul weights) and ``--fp16`` the fp16 export. onnxruntime runs with its CPU memory arena off (with it, the
peak grows from call to call: 5.7 then 10.0 GB at 1024). ``--memory`` also prints each runtime's peak
resident memory at each size, each measured in a fresh process that loads it and runs it twice. Not a test;
run it on a quiet machine (the load average is printed before and after).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def precision(alpha: np.ndarray, ref: np.ndarray) -> str:
    """``max |Δ|, mean |Δ|, same side %`` of ``alpha`` against ``ref`` (both 0..1)."""
    d = np.abs(alpha.astype(np.float64) - ref)
    side = ((alpha > 0.5) == (ref > 0.5)).mean() * 100
    return f"{d.max():.2e} | {d.mean():.2e} | {side:.2f}"


def torch_runner(net, image, mean, std, bf16: bool):
    """One call of the network in torch (fp32, or under bf16 autocast): alpha as numpy."""
    def run():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return torch.sigmoid(net((image - mean) / std).float()).numpy()
    return run


def ort_runner(session, image):
    """One call of an onnxruntime session on ``image``: alpha as numpy."""
    from ben_core.model.export import INPUT_NAME

    return lambda: session.run(None, {INPUT_NAME: image.numpy()})[0]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 768, 1024], help="working sizes to time")
    p.add_argument("--repeats", type=int, default=3, help="timed calls of each runtime per size")
    p.add_argument("--files", default="onnx-bench", help="folder of the exported files (kept between runs)")
    p.add_argument("--int8", action="store_true", help="also time onnxruntime's dynamic int8 quantisation")
    p.add_argument("--fp16", action="store_true", help="also time the fp16 export")
    p.add_argument("--memory", action="store_true", help="also measure each runtime's peak memory (fresh processes)")
    p.add_argument("--no-timing", action="store_true", help="skip the timed table (with --memory: memory only)")
    p.add_argument("--peak-of", default=None, help=argparse.SUPPRESS)  # the child of --memory: RUNTIME:SIZE:FILE
    return p


def session_options(threads: int):
    """onnxruntime's options here: ``threads`` intra-op threads, the CPU memory arena off."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.enable_cpu_mem_arena = False
    return opts


def peak_of(spec: str) -> int:
    """The child of ``--memory``: load one runtime, run it twice on a random image, print the peak RSS (GB)."""
    runtime, size, path = spec.split(":", 2)
    size = int(size)
    image = torch.rand(1, 3, size, size)
    if runtime == "onnxruntime":
        import onnxruntime as ort

        run = ort_runner(ort.InferenceSession(path, session_options(torch.get_num_threads()),
                                              providers=["CPUExecutionProvider"]), image)
    else:
        from ben_core.model import BENBase
        from ben_core.model.ben2 import IMAGENET_MEAN, IMAGENET_STD, checkpoint_filter_fn
        from tests.helpers import synth_sd

        net = BENBase().eval().requires_grad_(False)
        net.load_state_dict(checkpoint_filter_fn(synth_sd(0)))
        run = torch_runner(net, image, torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                           torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), bf16=runtime == "torch-bf16")
    run()
    run()
    print(json.dumps({"peak_gb": peak_rss_gb()}))
    return 0


def peak_rss_gb() -> float:
    """This process's peak resident memory: VmHWM (Linux; ru_maxrss would start from the parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2 ** 20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def time_runtimes(args, size, net, image, mean, std, bf16, files, opts):
    """The timed rows of one working size (exports what is missing); returns ``(runners, outputs)``."""
    import onnxruntime as ort

    from ben_core.model.export import export_onnx

    runners = {"torch fp32": torch_runner(net, image, mean, std, bf16=False)}
    if bf16:
        runners["torch bf16 (auto)"] = torch_runner(net, image, mean, std, bf16=True)
    variants = [("fp32", "onnxruntime fp32")] + ([("fp16", "onnxruntime fp16")] if args.fp16 else [])
    for dtype, name in variants:
        path = files / f"ben2-synthetic-{size}-{dtype}.onnx"
        if not path.exists():
            t = time.perf_counter()
            export_onnx(net, path, working_size=size, dtype=dtype)
            print(f"# exported {path} in {time.perf_counter() - t:.0f} s")
        runners[name] = ort_runner(ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]),
                                   image)
        if dtype == "fp32" and args.int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            q = files / f"ben2-synthetic-{size}-int8.onnx"
            if not q.exists():  # MatMul only: the convolutions' kernels are computed in the graph
                quantize_dynamic(str(path), str(q), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
            session = ort.InferenceSession(str(q), opts, providers=["CPUExecutionProvider"])
            runners["onnxruntime int8 (dynamic, MatMul)"] = ort_runner(session, image)
    outputs = {name: run() for name, run in runners.items()}  # the untimed call
    times = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, run in runners.items():
            t = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t)
    ref = outputs["torch fp32"].astype(np.float64)
    base = statistics.median(times["torch fp32"])
    for name in runners:
        med = statistics.median(times[name])
        print(f"| {size} | {name} | {med:.2f} | {base / med:.2f}x | {precision(outputs[name], ref)} |")
    return runners, outputs


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    sys.path.insert(0, str(REPO))
    if args.peak_of:
        return peak_of(args.peak_of)
    import onnxruntime as ort

    from ben_core.devices import cpu_native_bf16
    from ben_core.io.inputs import resize
    from ben_core.model import BENBase
    from ben_core.model.ben2 import IMAGENET_MEAN, IMAGENET_STD, checkpoint_filter_fn
    from ben_core.model.export import export_onnx
    from tests.helpers import load_lemur, synth_sd

    threads = torch.get_num_threads()
    bf16 = cpu_native_bf16()
    print(f"# bench_onnx: {platform.processor() or platform.machine()}, native bf16 {bf16}, torch "
          f"{torch.__version__}, onnxruntime {ort.__version__}, {threads} threads, load {os.getloadavg()[0]:.2f}")
    net = BENBase().eval().requires_grad_(False)
    net.load_state_dict(checkpoint_filter_fn(synth_sd(0)))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    photo = load_lemur()[0]
    files = Path(args.files)
    files.mkdir(parents=True, exist_ok=True)
    opts = session_options(threads)
    peaks = []

    if not args.no_timing:
        print("\n| size | runtime | s / forward | vs torch fp32 | max abs Δ | mean abs Δ | same side % |")
        print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        image = resize(photo, (size, size)).clamp(0, 1)
        if args.no_timing:
            path = files / f"ben2-synthetic-{size}-fp32.onnx"
            if not path.exists():
                export_onnx(net, path, working_size=size)
            runners, outputs = {}, {}
        else:
            runners, outputs = time_runtimes(args, size, net, image, mean, std, bf16, files, opts)
        del runners, outputs
        if args.memory:
            fp32_file = files / f"ben2-synthetic-{size}-fp32.onnx"
            for runtime in ("torch-fp32",) + (("torch-bf16",) if bf16 else ()) + ("onnxruntime",):
                child = subprocess.run([sys.executable, "-m", "benchmarks.bench_onnx", "--peak-of",
                                        f"{runtime}:{size}:{fp32_file}"], cwd=REPO, capture_output=True, text=True)
                peak = json.loads(child.stdout.strip().splitlines()[-1])["peak_gb"] if child.returncode == 0 else None
                peaks.append((size, runtime, peak))
    if peaks:
        print("\n| size | runtime | peak resident memory (GB), load + 2 calls |\n|---|---|---|")
        for size, runtime, peak in peaks:
            print(f"| {size} | {runtime} | {'failed' if peak is None else f'{peak:.1f}'} |")
    print(f"\n# load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
