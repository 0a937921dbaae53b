"""CPU precision, decided by measurement: ``python -m benchmarks.bench_precision``.

Measures BEN2 on the CPU in fp32, bf16 (autocast, as ``--dtype bf16`` runs it) and int8 (PyTorch's
dynamic quantisation of the backbone's ``nn.Linear`` layers, ``torch.ao.quantization.quantize_dynamic``; the CLI
has no int8 option, so its process runs go through this module's own ``--cli-int8`` entry, which loads
the checkpoint, quantises it and hands it to ``ben_core.apps.cli.main``) at each ``--sizes`` working size:

* **network**: seconds per image (batch 1, median of ``--repeats`` after ``--warmup`` untimed calls,
  the precisions in rotating order) on pymatting's lemur photo (tests/data/lemur, CC0), in this process;
* **whole process**: ``python -m ben_core PHOTOS -o OUT --mask-only --dtype X`` on ``--images``
  photo-like 1920x1080 JPEGs, a fresh process per run (model load included, as a user sees it),
  median of ``--process-repeats``;
* **agreement with fp32**: mean |Δalpha| and the fraction of pixels on the same side of 0.5, on the
  lemur's float alpha and on the CLI's 8-bit masks of the photos; the worst image is what counts
  (``ben_core.devices`` lets ``auto`` pick bf16 only where mean |Δ| <= 0.01 and >= 98 % agree).

Weights: ``--checkpoint`` (e.g. the official ``model.safetensors``), else the synthetic weights of the
conformance tests (official shapes, deterministic values). Synthetic weights give noise-like masks with
many pixels near 0.5 (printed as "fp32 near 0.5"), where any rounding flips the side: agreement on them
is a pessimistic stand-in for the trained network's mostly saturated masks, not BEN2's own figure.

Prints the CPU, its bf16 capability, the load average before and after (timings on a shared machine
wobble: run it on a quiet one), and one markdown table; ``--json FILE`` keeps every run, ``--plot FILE``
draws network time against working size (matplotlib, ``pip install -r requirements-bench.txt``).
Not a test: at 1024 one bf16 image takes minutes on a CPU without native bf16.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16", "int8")
#: What ``auto`` requires of a precision before it may replace fp32 (worst image of the run).
MAX_MEAN_DELTA = 0.01
MIN_SAME_SIDE = 0.98


def cpu_description() -> str:
    """CPU model name, core count and its bf16-related flags (the /proc/cpuinfo flags ben_core.devices reads)."""
    from ben_core.devices import _cpuinfo_flags

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.partition(":")[2].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    wanted = sorted(_cpuinfo_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    return f"{name}, {os.cpu_count()} CPUs, flags: {' '.join(wanted) or 'none of avx2/avx512/bf16'}"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def quantize_int8(model):
    """A copy of ``model`` whose Swin backbone has every ``nn.Linear`` dynamically quantised to int8 (weights
    int8, activations quantised per call): 99 % of BEN2's Linear weights. The decoder's attention reads its
    projections' weights directly, which a quantised module does not have, so it stays fp32, as do the
    convolutions and norms."""
    import copy

    import torch
    from torch.ao.quantization import quantize_dynamic

    model = copy.deepcopy(model)
    model.backbone = quantize_dynamic(model.backbone, {torch.nn.Linear}, dtype=torch.qint8)
    return model


def make_predictor(model, int8_model, precision: str, working_size: int):
    """A BENPredictor on the CPU for one precision name (int8 = the quantised copy run in fp32)."""
    import torch

    from ben_core.predictor import BENPredictor

    if precision == "int8":
        return BENPredictor(int8_model, device="cpu", dtype=torch.float32, working_size=working_size)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    return BENPredictor(model, device="cpu", dtype=dtype, working_size=working_size)


def agreement(alpha: np.ndarray, ref: np.ndarray) -> dict:
    """``alpha`` against the fp32 ``ref`` (same shape, 0..1): mean |Δ|, fraction on the same side of 0.5,
    and the fraction of ``ref`` within 0.1 of 0.5 (how much of the mask a rounding can flip)."""
    return {"mean_delta": float(np.abs(alpha - ref).mean()),
            "same_side": float(((alpha > 0.5) == (ref > 0.5)).mean()),
            "near_half": float((np.abs(ref - 0.5) < 0.1).mean())}


def time_network(model, int8_model, image: np.ndarray, sizes, precisions, repeats: int, warmup: int, log):
    """``{(size, precision): {"seconds": [...], "alpha": [H,W] float32}}`` for one image, batch 1."""
    out = {}
    for size in sizes:
        preds = {p: make_predictor(model, int8_model, p, size) for p in precisions}
        for p in precisions:
            out[(size, p)] = {"seconds": []}
            for _ in range(warmup):
                preds[p].predict_alpha([image])
        for r in range(repeats):
            order = precisions[r % len(precisions):] + precisions[:r % len(precisions)]
            for p in order:
                t = time.perf_counter()
                alpha = preds[p].predict_alpha([image])[0].numpy()
                out[(size, p)]["seconds"].append(time.perf_counter() - t)
                out[(size, p)]["alpha"] = alpha
                log(f"network {size} {p}: {out[(size, p)]['seconds'][-1]:.2f} s")
    return out


def run_process(precision: str, photos: Path, out: Path, ckpt: Path, size: int) -> float:
    """One CLI process (``--mask-only``, CPU) in ``precision``: wall seconds; raises on a non-zero exit."""
    shutil.rmtree(out, ignore_errors=True)
    common = [str(photos), "-o", str(out), "--checkpoint", str(ckpt), "--working-size", str(size),
              "--device", "cpu", "--mask-only", "-q"]
    if precision == "int8":
        cmd = [sys.executable, "-m", "benchmarks.bench_precision", "--cli-int8", *common]
    else:
        cmd = [sys.executable, "-m", "ben_core", *common, "--dtype", precision]
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=str(REPO), capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return wall


def read_masks(folder: Path) -> dict:
    from PIL import Image

    return {p.name: np.asarray(Image.open(p).convert("L"), np.float32) / 255 for p in sorted(folder.glob("*.png"))}


def time_processes(photos: Path, tmp: Path, ckpt: Path, sizes, precisions, repeats: int, log):
    """``{(size, precision): {"seconds": [...], "masks": {name: [H,W]}}}``, fresh processes, rotating order."""
    out = {}
    for size in sizes:
        for p in precisions:
            out[(size, p)] = {"seconds": []}
        for r in range(repeats):
            order = precisions[r % len(precisions):] + precisions[:r % len(precisions)]
            for p in order:
                dst = tmp / f"out_{size}_{p}"
                out[(size, p)]["seconds"].append(run_process(p, photos, dst, ckpt, size))
                out[(size, p)]["masks"] = read_masks(dst)
                log(f"process {size} {p}: {out[(size, p)]['seconds'][-1]:.2f} s")
    return out


def summarise(net: dict, proc: dict, sizes, precisions) -> list[dict]:
    """One row per (size, precision): medians, ratios to fp32, worst-image agreement with fp32."""
    rows = []
    for size in sizes:
        for p in precisions:
            row = {"working_size": size, "precision": p,
                   "network_s": statistics.median(net[(size, p)]["seconds"])}
            row["network_vs_fp32"] = row["network_s"] / statistics.median(net[(size, "fp32")]["seconds"])
            images = [agreement(net[(size, p)]["alpha"], net[(size, "fp32")]["alpha"])]
            if proc:
                row["process_s"] = statistics.median(proc[(size, p)]["seconds"])
                row["process_vs_fp32"] = row["process_s"] / statistics.median(proc[(size, "fp32")]["seconds"])
                ref = proc[(size, "fp32")]["masks"]
                images += [agreement(m, ref[name]) for name, m in proc[(size, p)]["masks"].items()]
            row["mean_delta"] = max(a["mean_delta"] for a in images)
            row["same_side"] = min(a["same_side"] for a in images)
            row["near_half"] = max(a["near_half"] for a in images)
            row["agrees"] = row["mean_delta"] <= MAX_MEAN_DELTA and row["same_side"] >= MIN_SAME_SIDE
            rows.append(row)
    return rows


def markdown(rows: list[dict], n_images: int) -> str:
    """The table the docs quote."""
    head = ("| working size | precision | network s/image | × fp32 | CLI, %d images (s) | × fp32 | "
            "mean \\|Δ\\| vs fp32 (worst image) | same side of 0.5 (worst image) | fp32 near 0.5 | agrees |" % n_images)
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        proc = (f"{r['process_s']:.1f} | {r['process_vs_fp32']:.2f}" if "process_s" in r else "– | –")
        lines.append(f"| {r['working_size']} | {r['precision']} | {r['network_s']:.2f} | {r['network_vs_fp32']:.2f} | "
                     f"{proc} | {r['mean_delta']:.4f} | {100 * r['same_side']:.2f} % | {100 * r['near_half']:.1f} % | "
                     f"{'yes' if r['agrees'] else 'no'} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Network seconds per image against working size, one line per precision (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install -r requirements-bench.txt") from None
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    for p in dict.fromkeys(r["precision"] for r in rows):
        pts = [(r["working_size"], r["network_s"]) for r in rows if r["precision"] == p]
        ax.plot(*zip(*pts, strict=True), marker="o", label=p)
    ax.set_xlabel("working size (px)")
    ax.set_ylabel("network, s per image")
    ax.set_xticks(sorted({r["working_size"] for r in rows}))
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def cli_int8(argv) -> int:
    """``python -m ben_core`` with the checkpoint's Linear layers quantised to int8 (what the process
    column of int8 measures): the CLI's own argument parsing, job planning and writing."""
    import torch

    from ben_core.apps import cli
    from ben_core.model.weights import load_ben
    from ben_core.predictor import BENPredictor

    args = cli.build_parser().parse_args(argv)
    model = quantize_int8(load_ben(args.checkpoint, device="cpu"))
    predictor = BENPredictor(model, device="cpu", dtype=torch.float32, working_size=args.working_size,
                             batch_size=args.batch_size)
    return cli.main(argv, predictor=predictor)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_precision", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 768, 1024], help="working sizes")
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS,
                   help="fp32 is always measured (the reference)")
    p.add_argument("--repeats", type=int, default=3, help="timed network calls per size and precision")
    p.add_argument("--warmup", type=int, default=1, help="untimed network calls first")
    p.add_argument("--images", type=int, default=3, help="photos the CLI processes per run (0: no process runs)")
    p.add_argument("--process-repeats", type=int, default=1, help="CLI runs per size and precision")
    p.add_argument("--checkpoint", help="BEN2 weights (default: the synthetic conformance weights)")
    p.add_argument("--json", metavar="FILE", help="write every run and the table's rows")
    p.add_argument("--plot", metavar="FILE", help="draw network time vs working size (matplotlib)")
    p.add_argument("--cli-int8", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.cli_int8 is not None:
        return cli_int8(args.cli_int8)
    sys.path.insert(0, str(REPO))
    import torch
    from PIL import Image

    from ben_core.devices import cpu_native_bf16
    from ben_core.model.weights import load_ben

    from .bench_cli_io import make_photos, write_checkpoint

    precisions = ["fp32"] + [p for p in dict.fromkeys(args.precisions) if p != "fp32"]
    log = lambda msg: print(f"# {msg}", file=sys.stderr, flush=True)  # noqa: E731
    header = (f"# bench_precision: {cpu_description()}; native bf16 (ben_core.devices): {cpu_native_bf16()}; "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average before: {load_average()}")
    print(header, flush=True)
    with tempfile.TemporaryDirectory(prefix="ben_precision_") as tmp:
        tmp = Path(tmp)
        ckpt = Path(args.checkpoint) if args.checkpoint else tmp / "synthetic.safetensors"
        if not args.checkpoint:
            write_checkpoint(ckpt)
        weights = "given checkpoint" if args.checkpoint else "synthetic weights"
        model = load_ben(ckpt, device="cpu")
        int8_model = quantize_int8(model) if "int8" in precisions else None
        lemur = np.asarray(Image.open(REPO / "tests" / "data" / "lemur" / "lemur.png").convert("RGB"))
        net = time_network(model, int8_model, lemur, args.sizes, precisions, args.repeats, args.warmup, log)
        del model, int8_model
        proc = {}
        if args.images > 0:
            photos = tmp / "photos"
            photos.mkdir()
            make_photos(photos, args.images, 1920, 1080)
            proc = time_processes(photos, tmp, ckpt, args.sizes, precisions, args.process_repeats, log)
    rows = summarise(net, proc, args.sizes, precisions)
    print(f"# {weights}; network: median of {args.repeats} (lemur 680x440, batch 1); CLI: {args.images} photo-like "
          f"1920x1080 JPEGs, --mask-only, median of {args.process_repeats}; load average after: {load_average()}")
    print(markdown(rows, args.images))
    if args.json:
        runs = {f"{s} {p}": {"network_s": net[(s, p)]["seconds"], "process_s": proc[(s, p)]["seconds"] if proc else []}
                for s in args.sizes for p in precisions}
        Path(args.json).write_text(json.dumps({"header": header, "weights": weights, "rows": rows, "runs": runs},
                                              indent=1))
    if args.plot:
        cpu = cpu_description().split(",")[0]
        plot(rows, Path(args.plot), f"BEN2 network on {cpu} ({os.cpu_count()} CPUs, native bf16: "
                                    f"{'yes' if cpu_native_bf16() else 'no'}), {weights}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
