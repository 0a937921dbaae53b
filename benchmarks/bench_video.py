"""Does video memory stay flat, and how fast is it? ``python -m benchmarks.bench_video``.

Writes deterministic H.264 clips (``--size``, ``--fps``, an AAC track; a soft disc moving over a moving
texture) of each ``--seconds`` length, then runs the CLI on each in a fresh process, as a user would
(``python -m ben_core CLIP -o OUT --checkpoint synthetic --temporal --video-format F --working-size S``,
model load included), and prints one table row per run: frames, wall time, frames/s (frames / wall, so
the model load counts against short clips), the process's peak RSS (its own VmHWM, polled from /proc:
``ru_maxrss`` would include this parent's), and the ratio of each peak to the shortest clip's at the same
settings.

The issue's check: a 20 s clip may not take more than 1.3x the memory of a 2 s clip (same size and fps).
Not a test: at working size 512 the synthetic-weights network takes seconds per frame on 2 cores.
Run from the repository root with nothing else loading the machine.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def make_clip(path: Path, seconds: float, width: int, height: int, fps: int) -> int:
    """A deterministic clip with audio; returns its frame count."""
    import av

    n = int(round(seconds * fps))
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    texture = np.kron(texture, np.ones((8, 8, 1), np.uint8))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=Fraction(fps))
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"preset": "veryfast", "crf": "20"}
        aus = c.add_stream("aac", rate=48000)
        aus.layout = "stereo"
        for i in range(n):
            shift = (2 * i) % 8
            bg = texture[shift:shift + height, shift:shift + width]
            cx, cy = width * (0.3 + 0.4 * (i / max(n - 1, 1))), height * 0.5
            d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) - 0.3 * height
            a = np.clip(0.5 - d / 6.0, 0, 1)[..., None]
            frame = (a * np.array([230, 180, 150], np.float32) + (1 - a) * bg).astype(np.uint8)
            c.mux(vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        c.mux(vs.encode(None))
        t = np.arange(int(48000 * n / fps)) / 48000
        tone = (0.2 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            fr = av.AudioFrame.from_ndarray(np.stack([tone[start:start + 1024]] * 2), format="fltp", layout="stereo")
            fr.sample_rate, fr.pts = 48000, start
            c.mux(aus.encode(fr))
        c.mux(aus.encode(None))
    return n


def write_checkpoint(path: Path) -> None:
    """The synthetic-weights BEN2 checkpoint (official key names) as safetensors."""
    from safetensors.torch import save_file

    sys.path.insert(0, str(REPO))
    from tests.helpers import synth_sd

    save_file({k: v.contiguous() for k, v in synth_sd(0).items()}, str(path))


def _vmhwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def run_cli(clip: Path, out: Path, ckpt: Path, working_size: int, fmt: str, batch_size: int) -> dict:
    """One CLI run in a fresh process: wall time (s) and peak RSS (KiB)."""
    cmd = [sys.executable, "-m", "ben_core", str(clip), "-o", str(out), "--checkpoint", str(ckpt), "--device", "cpu",
           "--working-size", str(working_size), "--temporal", "--video-format", fmt, "--batch-size", str(batch_size)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _vmhwm_kib(proc.pid) or 0)
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err}")
    return {"wall": wall, "peak_kib": peak}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=[2.0, 20.0])
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--fps", type=int, default=5, help="frames per second of the clips (same for all)")
    ap.add_argument("--working-sizes", type=int, nargs="+", default=[512])
    ap.add_argument("--formats", nargs="+", default=["webm"])
    ap.add_argument("--batch-size", type=int, default=4)
    args = ap.parse_args(argv)
    width, height = map(int, args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="ben_video_") as tmp:
        tmp = Path(tmp)
        ckpt = tmp / "synth.safetensors"
        write_checkpoint(ckpt)
        clips = []
        for s in args.seconds:
            clip = tmp / f"clip_{s:g}s.mp4"
            clips.append((s, clip, make_clip(clip, s, width, height, args.fps)))
        print(f"clips {width}x{height} @ {args.fps} fps, batch size {args.batch_size}, torch threads "
              f"{os.environ.get('OMP_NUM_THREADS', 'default')}; synthetic weights, CPU", flush=True)
        print("| working size | format | clip | frames | wall (s) | frames/s | peak RSS (GiB) | vs shortest |")
        print("|---|---|---|---|---|---|---|---|")
        for ws in args.working_sizes:
            for fmt in args.formats:
                base = None
                for s, clip, n in clips:
                    r = run_cli(clip, tmp / f"out_{ws}_{fmt}_{s:g}", ckpt, ws, fmt, args.batch_size)
                    gib = r["peak_kib"] / 2 ** 20
                    base = base or gib
                    print(f"| {ws} | {fmt} | {s:g} s | {n} | {r['wall']:.1f} | {n / r['wall']:.3f} | {gib:.2f} | "
                          f"{gib / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
