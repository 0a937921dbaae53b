"""Steady mattes, measured: ``python -m benchmarks.bench_temporal``.

On synthetic clips with ground-truth alpha (:mod:`benchmarks.synthetic_video`: still, a 3 px and an 8 px per
frame pan, a subject moving 4 px per frame over a still background, a cut; thin semi-transparent strands;
a simulated per-frame model that flickers), per segment and for the whole clip, the per-frame prediction
against :func:`ben_core.matting.temporal.stabilize_alpha` without motion compensation (``flow="none"``), causal and
bidirectional: dtSSD, dtSSD near the subject (pixels within 5 px of where the truth is > 0.01, beside the
flicker-free floor: the dtSSD of the model's stable part alone, which no stabiliser can remove), per-frame
MSE and MSE on moving edges (see ``synthetic_video.temporal_metrics``); then the targets (every moving
segment's and the still segment's dtSSD <= 0.5x the per-frame mattes', whole-clip MSE <= 0.9x, moving-edge
MSE <= 1.05x per moving segment) for both modes.

Then the cost on 1920x1080 frames: the stabiliser's ms per frame in both modes beside BENBase (synthetic
weights) on one 1080p frame at working size 512 and 1024, in the same process (``--no-network`` skips the
network). The stabiliser's defaults were chosen on seeds 0-2; the default seeds here are 3-5.

Not a test: a few minutes on 2 cores. Run it from the repository root.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
METHODS = ("per-frame", "no flow", "causal", "bidirectional")


def near_subject_dtssd(pred: torch.Tensor, gt: torch.Tensor, segment: list) -> dict:
    """dtSSD (x 100) over the pixels within 5 px of where the truth of either frame of a pair is > 0.01:
    ``{segment: value}``."""
    sums: dict = {}
    for i in range(1, len(segment)):
        near = ((gt[i] > 0.01) | (gt[i - 1] > 0.01)).float()[None, None]
        near = F.max_pool2d(near, 11, stride=1, padding=5)[0, 0] > 0
        err = ((pred[i] - pred[i - 1]) - (gt[i] - gt[i - 1]))[near]
        sums.setdefault(segment[i], []).append(float(err.square().mean().sqrt()) * 100)
    return {k: statistics.mean(v) for k, v in sums.items()}


def quality(seeds, height: int, width: int, per_segment: int, options: dict, shots=None) -> dict:
    """``{shot: {segment or "clip": {method: {metric: mean over seeds}}}}`` for the clips of
    :data:`synthetic_video.SHOTS` (all, or those named in ``shots``), plus each segment's flicker-free floor."""
    from ben_core.matting.temporal import stabilize_alpha

    from .synthetic_video import SHOTS, make_shot, temporal_metrics

    result = {}
    for shot in shots or SHOTS:
        acc: dict = {}
        for seed in seeds:
            clip, pred, floor = make_shot(shot, height, width, per_segment, seed=seed)
            truth, segment = clip["alpha"], clip["segment"]
            outs = {"per-frame": pred,
                    "no flow": stabilize_alpha(clip["frames"], pred, flow="none", **options),
                    "causal": stabilize_alpha(clip["frames"], pred, **options),
                    "bidirectional": stabilize_alpha(clip["frames"], pred, mode="bidirectional", **options)}
            floor_near = near_subject_dtssd(floor, truth, segment)
            for method, out in outs.items():
                metrics = temporal_metrics(out, truth, segment)
                near = near_subject_dtssd(out, truth, segment)
                for name, m in metrics.items():
                    row = acc.setdefault(name, {}).setdefault(method, {})
                    for key in ("dtssd", "mse", "moving_edge_mse"):
                        row.setdefault(key, []).append(m[key])
                    if name in near:
                        row.setdefault("near", []).append(near[name])
            for name, v in floor_near.items():
                acc[name].setdefault("floor", {}).setdefault("near", []).append(v)
        result[shot] = {name: {method: {k: statistics.mean(v) if all(x == x for x in v) else float("nan")
                                        for k, v in metrics.items()}
                               for method, metrics in methods.items()}
                        for name, methods in acc.items()}
    return result


def above_floor(segs: dict, name: str, method: str) -> float:
    """The dtSSD near the subject above the segment's flicker-free floor, ``sqrt(near^2 - floor^2)`` (0 where
    the method is at the floor): the flicker a stabiliser can remove. (The floor is the model's stable
    error; where the subject moves it moves too, and a stabiliser cannot go below it.)"""
    near, floor = segs[name][method]["near"], segs[name]["floor"]["near"]
    return max(near * near - floor * floor, 0.0) ** 0.5


def target_checks(res: dict) -> list:
    """``[(label, met)]``: the targets for both modes in every shot: each moving segment's flicker above the
    floor (:func:`above_floor`) <= 0.5x the per-frame mattes', the still segment's dtSSD <= 0.4x, whole-clip
    MSE <= 0.9x, moving-edge MSE <= 1.0x in each moving segment that has moving edges; and, in the
    ``classic`` clip (0.3's targets), each moving segment's whole-frame dtSSD <= 0.5x."""
    from .synthetic_video import MOVING_SEGMENTS

    checks = []
    for mode in ("causal", "bidirectional"):
        for shot, segs in res.items():
            def ratio(name, key, segs=segs, mode=mode):  # called only in this iteration; the binding made explicit
                return segs[name][mode][key] / segs[name]["per-frame"][key]

            for name in segs:
                if name == "still":
                    checks.append((f"{mode}: {shot} still dtSSD ≤ 0.4×", ratio(name, "dtssd") <= 0.4))
                elif name in MOVING_SEGMENTS:
                    raw = above_floor(segs, name, "per-frame")
                    checks.append((f"{mode}: {shot} {name} flicker above the floor ≤ 0.5×",
                                   above_floor(segs, name, mode) <= 0.5 * raw))
                    if shot == "classic":
                        checks.append((f"{mode}: {shot} {name} dtSSD ≤ 0.5×", ratio(name, "dtssd") <= 0.5))
                    if segs[name]["per-frame"]["moving_edge_mse"] == segs[name]["per-frame"]["moving_edge_mse"]:
                        checks.append((f"{mode}: {shot} {name} moving-edge MSE ≤ 1.0×",
                                       ratio(name, "moving_edge_mse") <= 1.0))
            checks.append((f"{mode}: {shot} clip MSE ≤ 0.9×", ratio("clip", "mse") <= 0.9))
    return checks


def quality_rows(res: dict) -> tuple[list, bool]:
    """The table (a row per shot, segment and metric; each method's value and its ratio to the per-frame
    mattes') and the target list; ``ok``: every target met."""
    def cell(segs, name, key, method):
        raw, v = segs[name]["per-frame"][key], segs[name][method][key]
        if v != v:
            return "—"
        return f"{v:.2f}" if method == "per-frame" else f"{v:.2f} ({v / raw:.2f}×)"

    rows = ["| shot | segment | metric | per-frame | no flow | causal | bidirectional |",
            "|---|---|---|---|---|---|---|"]
    labels = {"dtssd": "dtSSD", "near": "dtSSD near the subject", "mse": "MSE ×1e3",
              "moving_edge_mse": "moving-edge MSE ×1e3"}
    for shot, segs in res.items():
        for name in segs:
            for key, label in labels.items():
                if key not in segs[name]["per-frame"] or segs[name]["per-frame"][key] != segs[name]["per-frame"][key]:
                    continue
                extra = f" (flicker-free floor {segs[name]['floor']['near']:.2f})" if key == "near" else ""
                rows.append(f"| {shot} | {name} | {label}{extra} | "
                            + " | ".join(cell(segs, name, key, m) for m in METHODS) + " |")
                if key == "near" and name != "still" and name != "clip":
                    vals = [above_floor(segs, name, m) for m in METHODS]
                    rows.append(f"| {shot} | {name} | flicker above the floor | {vals[0]:.2f} | "
                                + " | ".join(f"{v:.2f} ({v / vals[0]:.2f}×)" if vals[0] else f"{v:.2f}"
                                             for v in vals[1:])
                                + " |")
    ok = True
    rows += ["", "| target | |", "|---|---|"]
    for label, passed in target_checks(res):
        ok &= bool(passed)
        rows.append(f"| {label} | {'met' if passed else 'NOT MET'} |")
    return rows, ok


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def moving_frames(n: int, h: int, w: int) -> torch.Tensor:
    """``[n, 3, h, w]`` a smooth textured picture panning 2 px per frame (the flow has work to do)."""
    g = torch.Generator().manual_seed(0)
    big = torch.rand(1, 3, h // 8 + 2, (w + 2 * n) // 8 + 2, generator=g)
    big = F.interpolate(big, size=(h, w + 2 * n), mode="bicubic", align_corners=False)[0].clamp(0, 1)
    return torch.stack([big[:, :, 2 * i:2 * i + w] for i in range(n)])


def cost_rows(repeats: int, network: bool) -> list:
    from ben_core.matting.temporal import AlphaStabilizer

    h, w, n = 1080, 1920, 9
    frames = moving_frames(n, h, w)
    alphas = torch.rand(n, h, w, generator=torch.Generator().manual_seed(1)) * 0.6 + 0.2  # unsure: all carried
    rows = ["| step, one 1920×1080 frame | median time | share of the network at 1024 |", "|---|---|---|"]
    times = {}
    for mode in ("causal", "bidirectional"):
        def steady(mode=mode):  # timed at once, in this iteration; the binding made explicit
            stab = AlphaStabilizer(mode=mode, lookahead=4)  # 8 frames: one block, its look-ahead, the flush
            stab.update(frames[:1], alphas[:1])
            stab.update(frames[1:], alphas[1:])
            stab.flush()

        times[mode] = _median_time(steady, repeats) / n
    net = {}
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
                net[size] = _median_time(lambda pred=pred: pred.predict_alpha(frame), max(1, repeats // 2))
    for mode, t in times.items():
        share = f"{t / net[1024] * 100:.1f} %" if 1024 in net else "—"
        rows.append(f"| stabiliser, {mode} | {t * 1000:.0f} ms | {share} |")
    for size, t in net.items():
        rows.append(f"| BEN2 network + resize, working size {size} | {t * 1000:.0f} ms "
                    f"| {t / net[1024] * 100:.0f} % |")
    return rows


def draw_strip(path: str, seed: int = 3, height: int = 360, width: int = 640, per_segment: int = 16) -> None:
    """A PNG of the tracking shot's ``track8`` segment (seed ``seed``, one not tuned on): four frames cropped
    round the subject, under each the per-frame alpha and the causal stabiliser's, then two x-t slices
    (one row through the subject's hair over every frame of the segment, time downwards): per-frame, then
    steadied. A flickering edge shows as a ragged border in the slice, a steady one as a smooth one."""
    from PIL import Image

    from ben_core.matting.temporal import stabilize_alpha

    from .synthetic_video import make_shot

    clip, pred, _ = make_shot("tracking", height, width, per_segment, seed=seed)
    steady = stabilize_alpha(clip["frames"], pred)
    idx = [i for i, name in enumerate(clip["segment"]) if name == "track8"]
    truth = clip["alpha"][idx[0]]
    ys, xs = torch.nonzero(truth > 0.5, as_tuple=True)
    cy, cx = int(ys.float().mean()), int(xs.float().mean())
    half = int(height * 0.3)
    y0, x0 = max(0, cy - half), max(0, cx - half)
    y1, x1 = min(height, y0 + 2 * half), min(width, x0 + 2 * half)

    def grey(a):
        return a[..., None].expand(*a.shape, 3)

    picks = idx[2::max(1, len(idx) // 4)][:4]
    rows = [torch.cat([clip["frames"][i].permute(1, 2, 0)[y0:y1, x0:x1] for i in picks], dim=1),
            torch.cat([grey(pred[i][y0:y1, x0:x1]) for i in picks], dim=1),
            torch.cat([grey(steady[i][y0:y1, x0:x1]) for i in picks], dim=1)]
    top = int(torch.nonzero(truth[:, cx] > 0.02)[0])  # the hair's tip above the head's centre
    row = min(height - 1, top + (cy - top) // 3)
    slices = [grey(x[idx, row, x0:x1]).repeat_interleave(6, dim=0) for x in (pred, steady)]
    gap = torch.ones(slices[0].shape[0], 8, 3)
    band = torch.cat([slices[0], gap, slices[1]], dim=1)
    pad = torch.ones(band.shape[0], rows[0].shape[1] - band.shape[1], 3)
    rows.append(torch.cat([band, pad], dim=1))
    img = torch.cat([torch.cat([r, torch.ones(6, r.shape[1], 3)]) for r in rows])
    Image.fromarray((img.clamp(0, 1) * 255).round().to(torch.uint8).numpy()).save(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_temporal", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="3,4,5", help="clip seeds (the defaults were chosen on 0,1,2)")
    p.add_argument("--shots", default="all", help="comma-separated clips of synthetic_video.SHOTS (default: all)")
    p.add_argument("--size", default="640x360", help="WxH of the quality clips")
    p.add_argument("--frames-per-segment", type=int, default=24)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-network", action="store_true", help="skip timing the network")
    p.add_argument("--no-cost", action="store_true", help="skip the 1080p timings")
    p.add_argument("--strip", metavar="PNG", help="also draw the tracking shot's frames, per-frame and steadied "
                   "alpha and their x-t slices into this PNG (docs/images/temporal_tracking.png)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="a StabilizerOptions override (repeatable), e.g. strength=0.9")
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    options = {}
    for item in args.option:
        k, v = item.split("=", 1)
        options[k] = int(v) if v.isdigit() else (float(v) if v.replace(".", "", 1).isdigit() else v)
    torch.set_grad_enabled(False)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.strip:
        draw_strip(args.strip, seed=seeds[0], height=h, width=w, per_segment=args.frames_per_segment)
    from .synthetic_video import SHOTS

    shots = list(SHOTS) if args.shots == "all" else args.shots.split(",")
    unknown = [s for s in shots if s not in SHOTS]
    if unknown:
        p.error(f"unknown shot(s) {unknown}; choose from {list(SHOTS)}")
    rows, ok = quality_rows(quality(seeds, h, w, args.frames_per_segment, options, shots))
    print(f"# bench_temporal: {w}x{h}, {args.frames_per_segment} frames per segment, seeds {seeds} (mean), "
          f"shots {shots}, options {options or 'default'}")
    print("\n".join(rows))
    if not args.no_cost:
        print()
        print("\n".join(cost_rows(args.repeats, not args.no_network)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
