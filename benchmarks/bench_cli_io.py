"""Does reading and writing files overlap with the network? ``python -m benchmarks.bench_cli_io``.

Runs ``python -m ben_core FOLDER -o OUT`` (RGBA PNG out, the default) on ``--images`` deterministic
``--size`` JPEGs with the synthetic-weights checkpoint, at each ``--working-sizes``, in three variants,
a fresh process per run (model load included, as a user sees it), the variants in rotating order:

* ``serial``: the checkout at ``--before`` (e.g. ``git worktree add /tmp/io_before <commit>``), whose
  CLI reads, predicts and writes one after the other (skipped without ``--before``);
* ``io-threads 0``: this checkout with the overlap switched off (its own serial loop);
* ``io-threads 2``: this checkout as shipped (decode and encode on two threads beside the network);
* with ``--ray``: ``python -m ben_core distributed`` on a local Ray (started by each run, included in its
  time) with 1 actor x 2 CPUs and with 2 actors x 1 CPU (needs ``ray[data]``).

Prints every run and a table: median wall time, images/s, the ratio to ``serial`` (or to
``io-threads 0``), peak RSS (``os.wait4``), and whether every output is byte-identical to the first
variant's. Not a test: 50 photos take minutes per run on 2 cores. Run from the repository root.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_photos(folder: Path, n: int, width: int, height: int, quality: int = 90) -> None:
    """``n`` deterministic photo-like JPEGs: a soft-edged subject over fine texture and sensor noise (so
    decode and encode cost what real photos cost)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy /= height
    xx /= width
    for i in range(n):
        d = np.sqrt((xx - 0.4 - 0.005 * i) ** 2 + ((yy - 0.5) * 0.8) ** 2)
        subject = 1.0 / (1.0 + np.exp(-(0.28 - d) * 70))
        bg = np.stack([0.4 + 0.3 * np.sin(90 * xx + 11 * yy + i), 0.5 + 0.2 * np.cos(70 * yy - 9 * xx),
                       0.35 + 0.2 * np.sin(150 * xx * yy)], -1)
        fg = np.stack([0.85 + 0.1 * np.sin(200 * yy), 0.6 + 0.1 * np.cos(230 * xx), 0.4 + 0.3 * yy], -1)
        img = subject[..., None] * fg + (1 - subject[..., None]) * bg
        img += rng.normal(0, 0.03, img.shape).astype(np.float32)
        Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8)).save(folder / f"photo_{i:03d}.jpg",
                                                                                  quality=quality)


def write_checkpoint(path: Path) -> None:
    """The synthetic-weights BEN2 checkpoint (official key names) as safetensors."""
    sys.path.insert(0, str(REPO))
    from safetensors.torch import save_file

    from tests.helpers import synth_sd

    save_file({k: v.contiguous() for k, v in synth_sd(0).items()}, str(path))


def run_cli(pack: Path, folder: Path, out: Path, ckpt: Path, size: int, extra: list,
            module: str = "ben_core") -> tuple[float, float]:
    """One CLI process from ``pack``'s root: ``(wall seconds, peak RSS MiB)``; raises on a non-zero exit.
    The peak RSS is ``ru_maxrss`` from ``os.wait4`` (for Ray runs the driver's, not the actors'); Linux
    carries it over fork + exec, so this parent stays small (the inputs are made in a child process)."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", module, str(folder), "-o", str(out), "--checkpoint", str(ckpt),
           "--working-size", str(size), "--device", "cpu", *extra]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=str(pack), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024.0


def digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_cli_io", description=__doc__.split("\n\n")[0])
    p.add_argument("--before", help="root of a checkout whose CLI has the old serial loop")
    p.add_argument("--images", type=int, default=50)
    p.add_argument("--size", default="3000x2000", help="WxH of the JPEGs")
    p.add_argument("--working-sizes", default="512,1024")
    p.add_argument("--rounds", type=int, default=1, help="runs per variant and working size (medians)")
    p.add_argument("--ray", action="store_true", help="also run ben_core.apps.distributed with 1 and 2 actors")
    p.add_argument("--skip", default="", help="comma-separated variant names to leave out (e.g. 'io-threads 0')")
    p.add_argument("--prepare", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.prepare:
        folder, ckpt, n, pw, ph = args.prepare
        make_photos(Path(folder), int(n), int(pw), int(ph))
        write_checkpoint(Path(ckpt))
        return 0
    w, h = (int(v) for v in args.size.lower().split("x"))
    variants = [("io-threads 0", REPO, ["--io-threads", "0"]), ("io-threads 2", REPO, ["--io-threads", "2"])]
    if args.ray:
        variants += [("ray 1 actor x 2 CPUs", REPO, ["ray", "--actors", "1", "--cpus-per-actor", "2", "-q"]),
                     ("ray 2 actors x 1 CPU", REPO, ["ray", "--actors", "2", "--cpus-per-actor", "1", "-q"])]
    if args.before:
        variants.insert(0, ("serial", Path(args.before).resolve(), []))
    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    variants = [v for v in variants if v[0] not in skip]
    print(f"# bench_cli_io: {args.images} JPEGs {w}x{h}, RGBA PNG out, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    table = ["| working size | variant | median wall | images/s | ratio | peak RSS | outputs |",
             "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="ben_io_") as tmp:
        tmp = Path(tmp)
        photos = tmp / "photos"
        photos.mkdir()
        ckpt = tmp / "synth.safetensors"
        # made in a child, so this process's RSS (inherited by every measured child) stays small
        subprocess.run([sys.executable, "-m", "benchmarks.bench_cli_io", "--prepare", str(photos), str(ckpt),
                        str(args.images), str(w), str(h)], cwd=str(REPO), check=True)
        for size in (int(s) for s in args.working_sizes.split(",")):
            walls = {name: [] for name, _, _ in variants}
            peaks = {name: [] for name, _, _ in variants}
            sums = {}
            for rnd in range(args.rounds):
                order = variants[rnd % len(variants):] + variants[:rnd % len(variants)]
                for name, pack, extra in order:
                    out = tmp / f"out_{name.replace(' ', '_')}"
                    module = "ben_core"
                    if extra[:1] == ["ray"]:
                        module, extra = "ben_core.apps.distributed", extra[1:]
                    wall, peak = run_cli(pack, photos, out, ckpt, size, extra, module)
                    walls[name].append(wall)
                    peaks[name].append(peak)
                    sums.setdefault(name, digests(out))
                    print(f"  {size}: {name}: {wall:.1f} s, peak {peak:.0f} MiB", flush=True)
            ref_name = variants[0][0]
            ref = statistics.median(walls[ref_name])
            for name, _, _ in variants:
                med = statistics.median(walls[name])
                same = "identical" if sums[name] == sums[ref_name] else "DIFFER"
                table.append(f"| {size} | {name} | {med:.1f} s | {args.images / med:.2f} | {ref / med:.3f}× | "
                             f"{max(peaks[name]) / 1024:.2f} GiB | {same if name != ref_name else '—'} |")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
