"""Steady mattes, measured: ``python -m benchmarks.bench_temporal``.

On synthetic clips with ground-truth alpha (:mod:`benchmarks.synthetic_video`: a still segment, a camera
pan, a slow walk and fast motion; a simulated per-frame model that flickers), compares the per-frame
prediction with :func:`ben_core.temporal.stabilize_alpha` per segment and for the whole clip: dtSSD,
per-frame MSE and the MSE on moving edges (see ``synthetic_video.temporal_metrics``), and checks the
targets (still: dtSSD at least 50 % lower; clip: dtSSD and MSE no worse; moving edges at most 10 % worse).
Then times the stabiliser on 1080p frames against BENBase (synthetic weights) on one 1080p frame at
working size 512 and 1024, in the same process (``--no-network`` skips the network).

Not a test: the timings take a minute or two on 2 cores. Run it from the repository root.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def quality_table(seeds, height: int, width: int, per_segment: int, options: dict) -> tuple[list, bool]:
    from ben_core.temporal import stabilize_alpha

    from .synthetic_video import SEGMENTS, make_clip, simulate_model, temporal_metrics

    rows = ["| clip | segment | dtSSD per-frame → steady | MSE×1e3 per-frame → steady | moving-edge MSE×1e3 per-frame → steady |",
            "|---|---|---|---|---|"]
    ok = True
    totals = {name: {"raw": [], "steady": []} for name in list(SEGMENTS) + ["clip"]}
    for seed in seeds:
        clip = make_clip(height, width, per_segment, seed=seed)
        pred = simulate_model(clip["alpha"], seed=seed + 100)
        steady = stabilize_alpha(clip["frames"], pred, **options)
        raw_m = temporal_metrics(pred, clip["alpha"], clip["segment"])
        st_m = temporal_metrics(steady, clip["alpha"], clip["segment"])
        for name in list(SEGMENTS) + ["clip"]:
            r, s = raw_m[name], st_m[name]
            totals[name]["raw"].append(r)
            totals[name]["steady"].append(s)

            def pair(key):
                a, b = r[key], s[key]
                if a != a:  # nan: no moving pixels
                    return "—"
                return f"{a:.3f} → {b:.3f} ({(b - a) / a * 100:+.0f} %)"

            rows.append(f"| seed {seed} | {name} | {pair('dtssd')} | {pair('mse')} | {pair('moving_edge_mse')} |")
    checks = []
    for name, t in totals.items():
        def mean(key, which):
            vals = [m[key] for m in t[which] if m[key] == m[key]]
            return statistics.mean(vals) if vals else float("nan")
        d_raw, d_st = mean("dtssd", "raw"), mean("dtssd", "steady")
        m_raw, m_st = mean("mse", "raw"), mean("mse", "steady")
        e_raw, e_st = mean("moving_edge_mse", "raw"), mean("moving_edge_mse", "steady")
        rows.append(f"| **mean** | **{name}** | {d_raw:.3f} → {d_st:.3f} ({(d_st - d_raw) / d_raw * 100:+.0f} %) | "
                    f"{m_raw:.3f} → {m_st:.3f} ({(m_st - m_raw) / m_raw * 100:+.0f} %) | "
                    + (f"{e_raw:.3f} → {e_st:.3f} ({(e_st - e_raw) / e_raw * 100:+.0f} %) |" if e_raw == e_raw else "— |"))
        if name == "still":
            checks.append(("still: dtSSD at least 50 % lower", d_st <= 0.5 * d_raw))
        if name == "clip":
            checks.append(("clip: dtSSD no worse", d_st <= d_raw))
            checks.append(("clip: MSE no worse", m_st <= m_raw))
            checks.append(("clip: moving-edge MSE at most 10 % worse", e_st <= 1.1 * e_raw))
        if name in ("pan", "walk", "fast"):
            checks.append((f"{name}: moving-edge MSE at most 10 % worse", not (e_st > 1.1 * e_raw)))
    for label, passed in checks:
        ok &= bool(passed)
        rows.append(f"| target | {label} | {'met' if passed else 'NOT MET'} | | |")
    return rows, ok


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cost_table(repeats: int, network: bool) -> list:
    from ben_core.temporal import AlphaStabilizer

    torch.manual_seed(0)
    h, w, n = 1080, 1920, 8
    frames = torch.rand(n, 3, h, w)
    alphas = torch.rand(n, h, w)
    stab = AlphaStabilizer()
    stab.update(frames[:1], alphas[:1])  # state primed: every timed frame takes the full path

    def steady():
        stab.update(frames[1:], alphas[1:])

    per_frame = _median_time(steady, repeats) / (n - 1)
    rows = ["| step, one 1920×1080 frame | median time | stabiliser / step |", "|---|---|---|",
            f"| stabiliser (`AlphaStabilizer.update`) | {per_frame * 1000:.1f} ms | — |"]
    if network:
        sys.path.insert(0, str(REPO))
        from ben_core.model import BENBase
        from ben_core.predictor import BENPredictor
        from tests.helpers import synth_sd

        model = BENBase()
        model.load_state_dict(synth_sd(0), strict=False)
        frame = (torch.rand(1, h, w, 3) * 255).to(torch.uint8)
        for size in (512, 1024):
            pred = BENPredictor(model.eval(), working_size=size)
            with torch.inference_mode():
                pred.predict_alpha(frame)  # warm-up
                t = _median_time(lambda: pred.predict_alpha(frame), max(1, repeats // 2))
            rows.append(f"| BEN2 network + resize, working size {size} | {t * 1000:.0f} ms | "
                        f"{per_frame / t * 100:.1f} % |")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_temporal", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--size", default="480x270", help="WxH of the quality clips")
    p.add_argument("--frames-per-segment", type=int, default=24)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-network", action="store_true", help="skip timing the network")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="a StabilizerOptions override (repeatable), e.g. strength=0.9")
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    options = {}
    for item in args.option:
        k, v = item.split("=", 1)
        options[k] = int(v) if v.isdigit() else float(v)
    torch.set_grad_enabled(False)
    rows, ok = quality_table([int(s) for s in args.seeds.split(",")], h, w, args.frames_per_segment, options)
    print(f"# bench_temporal: {w}x{h}, {args.frames_per_segment} frames per segment, options {options or 'default'}")
    print("\n".join(rows))
    print()
    print("\n".join(cost_table(args.repeats, not args.no_network)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
