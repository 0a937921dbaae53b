"""0.3.0's guided refinement defaults against today's on the synthetic and lemur cases:
``python -m benchmarks.bench_refine_defaults`` (from the repository root).

Prints band MSE (inside the confidence trimap's unknown band, against the true alpha) of the coarse alpha,
of ``refine_alpha(scale=1, eps=1e-4)`` (the 0.3.0 default: the colour models fitted at full resolution),
of ``refine_alpha(scale=3.75)`` (the earlier default: fitted at 1/3.75, eps 1e-5) and of ``refine_alpha()``
(today: fitted at the coarse alpha's measured softness, small windows, blurred guides), with the cut against the
coarse alpha. The real-photo half of the evidence is ``benchmarks/bench_matting_real.py``.
"""
from __future__ import annotations

import torch

from ben_core.matting.refine import refine_alpha
from ben_core.matting.trimap import confidence_trimap
from tests.helpers import load_lemur

from .synthetic_matting import band_mse, coarsen_alpha, make_synthetic_matte


def main() -> None:
    cases = []
    for seed in range(4):
        for (H, W, ms) in [(540, 960, 256), (1080, 1920, 512)]:
            s = make_synthetic_matte(H, W, seed=seed, model_size=ms)
            cases.append((f"synthetic {W}x{H} seed {seed}", s["image"], s["coarse"], s["alpha"]))
    img, gt, _ = load_lemur()
    H, W = gt.shape[-2:]
    cases.append(("lemur", img, coarsen_alpha(gt, model_size=round(max(H, W) / 3.75)), gt))
    print("| case | coarse band MSE | 0.3.0 default (scale 1, eps 1e-4) | scale-3.75 default (eps 1e-5) | "
          "default now (measured scale) |")
    print("|---|---|---|---|---|")
    for name, img, coarse, gt in cases:
        tri = confidence_trimap(coarse)[0]
        unk = tri == 0.5
        base = band_mse(torch.where(unk, coarse, tri), gt, unk)
        old = band_mse(refine_alpha(img, coarse, tri, scale=1, eps=1e-4), gt, unk)
        mid = band_mse(refine_alpha(img, coarse, tri, scale=3.75), gt, unk)
        new = band_mse(refine_alpha(img, coarse, tri), gt, unk)
        print(f"| {name} | {base:.5f} | {old:.5f} ({1 - old / base:+.1%}) | {mid:.5f} ({1 - mid / base:+.1%}) | "
              f"{new:.5f} ({1 - new / base:+.1%}) |", flush=True)


if __name__ == "__main__":
    main()
