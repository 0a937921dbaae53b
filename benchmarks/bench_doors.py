"""End-to-end timings of two doors, two checkouts side by side: ``python -m benchmarks.bench_doors``.

Compares the pack at ``--before`` (e.g. a ``git worktree`` of an older commit) with the pack at
``--after`` (default: this checkout) on the same synthetic-weights checkpoint and the same inputs:

* **Remove Background** (the ComfyUI node, called as ComfyUI calls it, on the CPU): one batch of
  ``--images`` 1920x1080 images, foreground colours on, RGBA out, working size 1024. Each checkout runs
  in its own persistent worker process (the model is loaded once); the runs alternate between the two
  workers (A B B A ...) so that neither always goes first; the worker's peak RSS is reported.
* **The CLI on a folder**: ``python -m ben_core FOLDER -o OUT --refine-foreground`` on
  ``--cli-images`` 1920x1080 JPEGs (working size ``--cli-size``), a fresh process per run (model load
  included, as a user sees it), alternating; peak RSS of that process (``os.wait4``).

Medians and every run are printed. Run it from the repository root; it needs nothing beyond the test
requirements. The inputs are deterministic smooth images with a soft-edged subject.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_images(n: int, height: int = 1080, width: int = 1920):
    """``n`` deterministic float RGB images [n, H, W, 3] in 0..1: a soft-edged disc on a textured background."""
    import torch

    yy = torch.linspace(0, 1, height).view(height, 1)
    xx = torch.linspace(0, 1, width).view(1, width)
    out = []
    for i in range(n):
        d = ((xx - 0.45 - 0.03 * i) ** 2 + (yy - 0.5) ** 2).sqrt()
        subject = torch.sigmoid((0.3 - d) * 60)
        r = 0.5 + 0.4 * torch.sin(23 * xx + 7 * yy + i)
        g = 0.4 + 0.3 * torch.cos(17 * yy - 5 * xx)
        b = 0.5 + 0.2 * torch.sin(31 * xx * yy)
        bg = torch.stack([r, g, b], -1)
        fg = torch.stack([0.9 * subject / subject.clamp(min=1e-3), 0.6 + 0 * d, 0.3 + 0.2 * yy.expand_as(d)], -1)
        out.append((subject[..., None] * fg + (1 - subject[..., None]) * bg).clamp(0, 1))
    return torch.stack(out)


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _emit(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _node_worker(spec: dict) -> int:
    """Load the pack at spec['pack'] as ComfyUI would (folder_paths stand-in), then time Remove Background."""
    import torch

    sys.path.insert(0, str(REPO / "tests"))
    from comfy_stub import make_folder_paths
    from helpers import install_comfy_api_stub

    sys.modules["folder_paths"] = make_folder_paths(spec["models"])
    install_comfy_api_stub()  # V3 packs (0.2.0 on) import comfy_api; V1 packs ignore it
    root = Path(spec["pack"])
    loader = importlib.util.spec_from_file_location("ComfyUI-BEN2", root / "__init__.py",
                                                    submodule_search_locations=[str(root)])
    pack = importlib.util.module_from_spec(loader)
    sys.modules["ComfyUI-BEN2"] = pack
    loader.loader.exec_module(pack)
    load_cls, remove_cls = (pack.NODE_CLASS_MAPPINGS[k] for k in ("BEN2_LoadModel", "BEN2_RemoveBackground"))
    if hasattr(load_cls, "define_schema"):  # V3 node classes (0.2.0 on)
        model = load_cls.execute("synth.safetensors", "cpu", "fp32", False).args[0]

        def remove(*args):
            return remove_cls.execute(*args).args
    else:  # V1 (0.1.0)
        (model,) = load_cls().load("synth.safetensors", "cpu", "fp32", False)
        remove = remove_cls().remove_background
    images = make_images(spec["images"])
    _emit({"ready": True})
    out = None
    for line in sys.stdin:
        if line.strip() == "run":
            t = time.perf_counter()
            out = remove(model, images, "RGBA", "#FFFFFF", True, False, spec["batch_size"], "1024")
            _emit({"t": time.perf_counter() - t})
        elif line.strip() == "done":
            torch.save({"image": out[0][:, ::8, ::8].clone(), "mask": out[1][:, ::8, ::8].clone()}, spec["out"])
            _emit({"peak_rss_mb": _peak_rss_mb()})
            return 0
    return 1


class _Worker:
    def __init__(self, spec: dict):
        self.spec = spec
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_doors", "--worker", json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, cwd=str(REPO))
        self.times: list[float] = []
        self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker for {self.spec['pack']} exited with code {self.proc.wait()}")
        return json.loads(line)

    def ask(self, cmd: str) -> dict:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._read()

    def run(self) -> None:
        self.times.append(self.ask("run")["t"])

    def finish(self) -> dict:
        res = self.ask("done")
        self.proc.wait(timeout=60)
        return res


def _cli_run(pack: Path, folder: Path, out: Path, ckpt: Path, size: int) -> tuple[float, float, int]:
    """One ``python -m ben_core`` process: (seconds, peak RSS MiB, exit code)."""
    cmd = [sys.executable, "-m", "ben_core", str(folder), "-o", str(out), "--checkpoint", str(ckpt),
           "--device", "cpu", "--working-size", str(size), "--refine-foreground", "-q"]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=str(pack), env=dict(os.environ, PYTHONPATH=str(pack)))
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t, usage.ru_maxrss / 1024.0, proc.returncode


def _row(name: str, times: list[float], rss: float) -> str:
    return (f"| {name} | {statistics.median(times):.2f} s | {min(times):.2f} s | {rss / 1024:.2f} GiB | "
            + ", ".join(f"{t:.2f}" for t in times) + " |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_doors", description=__doc__.split("\n\n")[0])
    p.add_argument("--before", required=False, help="root of the older checkout (a git worktree)")
    p.add_argument("--after", default=str(REPO), help="root of the newer checkout (default: this one)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--images", type=int, default=4, help="1080p images in the Remove Background batch")
    p.add_argument("--batch-size", type=int, default=1, help="Remove Background's batch_size widget")
    p.add_argument("--cli-images", type=int, default=6)
    p.add_argument("--cli-size", type=int, default=512, choices=[512, 768, 1024])
    p.add_argument("--skip-node", action="store_true")
    p.add_argument("--skip-cli", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return _node_worker(json.loads(args.worker))
    if not args.before:
        p.error("--before is required (e.g. `git worktree add /tmp/base <commit>` then --before /tmp/base)")
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from tests.helpers import synth_sd

    packs = {"before": Path(args.before).resolve(), "after": Path(args.after).resolve()}
    print(f"# doors, before = {packs['before']}, after = {packs['after']}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="ben_doors_") as tmp:
        tmp = Path(tmp)
        (tmp / "models" / "BEN").mkdir(parents=True)
        ckpt = tmp / "models" / "BEN" / "synth.safetensors"
        save_file(synth_sd(0), str(ckpt))
        lines = []
        if not args.skip_node:
            workers = {k: _Worker({"pack": str(v), "models": str(tmp / "models"), "images": args.images,
                                   "batch_size": args.batch_size, "out": str(tmp / f"node_{k}.pt")})
                       for k, v in packs.items()}
            order = [workers["before"], workers["after"]]
            for i in range(args.repeats):
                for w in (order if i % 2 == 0 else order[::-1]):
                    w.run()
                    print(f"  remove background, {Path(w.spec['pack']).name}: {w.times[-1]:.2f} s", flush=True)
            fin = {k: w.finish() for k, w in workers.items()}
            a, b = (torch.load(tmp / f"node_{k}.pt") for k in ("before", "after"))
            diff_img = float((a["image"] - b["image"]).abs().max())
            diff_mask = float((a["mask"] - b["mask"]).abs().max())
            lines += [f"Remove Background, {args.images} x 1920x1080, batch_size {args.batch_size}, working size 1024, "
                      "refine_foreground on, RGBA, CPU fp32 (times per batch)", "",
                      "| pack | median | best | peak RSS | runs (s) |", "|---|---|---|---|---|",
                      _row("before", workers["before"].times, fin["before"]["peak_rss_mb"]),
                      _row("after", workers["after"].times, fin["after"]["peak_rss_mb"]),
                      f"| after / before | "
                      f"{statistics.median(workers['after'].times) / statistics.median(workers['before'].times):.3f} "
                      f"| | {fin['after']['peak_rss_mb'] / fin['before']['peak_rss_mb']:.3f} | |", "",
                      f"max |difference| of the outputs (every 8th pixel): image {diff_img:.2e}, "
                      f"mask {diff_mask:.2e}", ""]
        if not args.skip_cli:
            folder = tmp / "photos"
            folder.mkdir()
            for i, im in enumerate(make_images(args.cli_images)):
                Image.fromarray((im.numpy() * 255 + 0.5).astype("uint8")).save(folder / f"p{i}.jpg", quality=92)
            runs = {"before": ([], []), "after": ([], [])}
            keys = ["before", "after"]
            for i in range(args.repeats):
                for k in (keys if i % 2 == 0 else keys[::-1]):
                    t, rss, code = _cli_run(packs[k], folder, tmp / f"out_{k}", ckpt, args.cli_size)
                    if code != 0:
                        raise RuntimeError(f"the CLI of {packs[k]} exited with {code}")
                    runs[k][0].append(t)
                    runs[k][1].append(rss)
                    print(f"  cli, {k}: {t:.2f} s, {rss:.0f} MiB", flush=True)
            same = all((tmp / "out_before" / f"p{i}.png").read_bytes() == (tmp / "out_after" / f"p{i}.png").read_bytes()
                       for i in range(args.cli_images))
            med = {k: statistics.median(v[0]) for k, v in runs.items()}
            lines += [f"CLI on a folder of {args.cli_images} 1920x1080 JPEGs, --working-size {args.cli_size}, "
                      "--refine-foreground, RGBA PNG out, CPU fp32 (whole process, model load included)", "",
                      "| pack | median | best | peak RSS | runs (s) |", "|---|---|---|---|---|",
                      _row("before", runs["before"][0], max(runs["before"][1])),
                      _row("after", runs["after"][0], max(runs["after"][1])),
                      f"| after / before | {med['after'] / med['before']:.3f} | | "
                      f"{max(runs['after'][1]) / max(runs['before'][1]):.3f} | |", "",
                      f"output PNGs byte-identical: {same}"]
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
