"""The README's picture and the docs' plots: ``python -m benchmarks.make_figures [--out docs/images]``.

* ``lemur_refine.jpg``: pymatting's lemur photo (tests/data/lemur, CC0), a coarse mask, its trimap in the
  widget's colours, the refined matte, the cut-out over a colour and a detail of the fur. The coarse
  mask is **not BEN2's** (the official weights cannot be fetched here; synthetic weights give noise): it
  is the photo's estimated alpha degraded as a 1024² network sees a 3840-px photo (``coarsen_alpha``,
  as ``benchmarks/bench_matting.py`` makes it). Trimap, refinement and cut-out are the one pipeline's
  (``CutoutPipeline`` with ``Refinement()``: Refine Mask's defaults), so the picture follows the code.
* ``memory_vs_size.png`` and ``refine_band_mse.png``: the shapes of two tables of the docs, drawn from
  the tables themselves (docs/performance.md "Large photos: memory", docs/refinement.md per image), so a
  plot cannot disagree with the figures it shows; re-run this after a benchmark updates its table.
  (``benchmarks/bench_precision.py --plot`` draws its own plot from its run.)

Needs matplotlib: ``pip install -r requirements-bench.txt``. Deterministic; runs in seconds.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
#: Show Trimap's widget colours (web/js/trimap_core.js): sure foreground, sure background, unknown.
WIDGET_COLOURS = {1.0: (0, 200, 83), 0.0: (41, 98, 255), 0.5: (255, 171, 0)}
BACKGROUND = (0.20, 0.55, 0.62)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("benchmarks.make_figures needs matplotlib: pip install -r requirements-bench.txt") from None
    return plt


def markdown_table(text: str, header_start: str) -> list[list[str]]:
    """The body rows of the first markdown table in ``text`` whose header row starts with ``header_start``:
    cells stripped, an escaped ``\\|`` kept inside its cell as ``|``. Raises ValueError when there is none."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(header_start):
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                cells = re.split(r"(?<!\\)\|", row.strip().strip("|"))
                rows.append([c.strip().replace("\\|", "|") for c in cells])
            return rows
    raise ValueError(f"no table whose header starts with {header_start!r}")


def doc_table(page: str, header_start: str) -> list[list[str]]:
    """:func:`markdown_table` of ``docs/<page>``, naming the page when the table is missing."""
    try:
        return markdown_table((DOCS / page).read_text(encoding="utf-8"), header_start)
    except ValueError as e:
        raise ValueError(f"docs/{page}: {e}") from None


def lemur_panels() -> dict:
    """The lemur's panels as float numpy arrays (H, W, 3) or (H, W), all from the one pipeline."""
    import torch

    from ben_core import CutoutOptions, CutoutPipeline, Refinement
    from ben_core.matting.trimap import make_trimap
    from tests.helpers import load_lemur

    from .bench_matting import MODEL_FACTOR
    from .synthetic_matting import coarsen_alpha

    image, estimated, _ = load_lemur()
    H, W = estimated.shape[-2:]
    coarse = coarsen_alpha(estimated, model_size=round(max(H, W) / MODEL_FACTOR))
    trimap = make_trimap(coarse)
    rgb = image.permute(0, 2, 3, 1).contiguous()
    pipeline = CutoutPipeline(None, CutoutOptions(background=BACKGROUND, refine=Refinement()))
    cut = pipeline.run(rgb, alpha=coarse, trimap=trimap)
    colours = torch.zeros(H, W, 3)
    for value, colour in WIDGET_COLOURS.items():
        colours[trimap[0] == value] = torch.tensor(colour, dtype=torch.float32) / 255
    overlay = 0.5 * rgb[0] + 0.5 * colours
    return {"photo": rgb[0].numpy(), "coarse": coarse[0].numpy(), "trimap": overlay.numpy(),
            "refined": cut.alpha[0].numpy(), "cutout": cut.image[0].numpy(),
            "unknown": float((trimap == 0.5).float().mean())}


def lemur_figure(path: Path) -> None:
    plt = _pyplot()
    p = lemur_panels()
    H, W = p["coarse"].shape
    # a detail of the fur on the lemur's flank: coarse | refined side by side, a grey line between
    y0, x0, h, w = int(0.32 * H), int(0.62 * W), int(0.36 * H), int(0.22 * W)
    detail = np.concatenate([p["coarse"][y0:y0 + h, x0:x0 + w], np.full((h, 3), 0.5),
                             p["refined"][y0:y0 + h, x0:x0 + w]], axis=1)
    panels = [("photo", p["photo"], None),
              ("coarse mask (simulated, not BEN2's)", p["coarse"], "gray"),
              (f"confidence trimap ({100 * p['unknown']:.0f} % unknown)", p["trimap"], None),
              ("refined matte (Refine Mask defaults)", p["refined"], "gray"),
              ("cut-out over a colour", p["cutout"], None),
              ("detail: coarse | refined", detail, "gray")]
    fig, axes = plt.subplots(2, 3, figsize=(12, 5.6), dpi=110)
    for ax, (title, data, cmap) in zip(axes.flat, panels, strict=True):
        ax.imshow(np.clip(data, 0, 1), cmap=cmap, vmin=0, vmax=1, interpolation="lanczos")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    axes.flat[0].add_patch(plt.Rectangle((x0, y0), w, h, fill=False, edgecolor="white", linewidth=1.2))
    fig.tight_layout()
    fig.savefig(path, pil_kwargs={"quality": 85, "optimize": True})
    plt.close(fig)


def _numbers(cell: str) -> list[float]:
    return [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", cell)]


def memory_plot(path: Path) -> None:
    """Peak RSS against megapixels, 0.2.0 and now, for the CLI and the node configurations."""
    plt = _pyplot()
    rows = doc_table("performance.md", "| size | config | peak RSS")
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    for config, colour in (("cli", "tab:blue"), ("node", "tab:orange")):
        pts = []
        for size, cfg, peak, _ in rows:
            if cfg == config:
                w, h = (int(v) for v in size.split("×"))
                before, now = _numbers(peak)[:2]
                pts.append((w * h / 1e6, before, now))
        pts.sort()
        mp = [q[0] for q in pts]
        ax.plot(mp, [q[1] for q in pts], "--", marker="o", color=colour, alpha=0.6, label=f"{config}, 0.2.0")
        ax.plot(mp, [q[2] for q in pts], "-", marker="o", color=colour, label=f"{config}, now (strips)")
    ax.set_xlabel("image size (megapixels)")
    ax.set_ylabel("peak RSS (GiB)")
    ax.set_title("Full-resolution steps: peak memory vs image size\n(docs/performance.md, bench_memory)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def band_mse_plot(path: Path) -> None:
    """Band MSE per image: the coarse alpha, the earlier default (scale 3.75) and the default now."""
    plt = _pyplot()
    rows = doc_table("refinement.md", "| image | band MSE coarse")
    names = [r[0] for r in rows]
    values = np.array([_numbers(r[1])[:3] for r in rows])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=120)
    for k, (label, colour) in enumerate((("coarse", "tab:gray"), ("earlier default (scale 3.75)", "tab:blue"),
                                         ("default now", "tab:green"))):
        ax.bar(x + (k - 1) * 0.27, values[:, k], width=0.27, color=colour, label=label)
    ax.set_xticks(x, [n.replace("GT", "") for n in names], fontsize=8)
    ax.set_xlabel("alphamatting.com training image (GT01 … GT27)")
    ax.set_ylabel("band MSE (lower is better)")
    ax.set_title("Refine Mask on 27 real photos, model-like coarse alpha (docs/refinement.md)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.make_figures", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(DOCS / "images"), help="folder for the images (default docs/images)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lemur_figure(out / "lemur_refine.jpg")
    memory_plot(out / "memory_vs_size.png")
    band_mse_plot(out / "refine_band_mse.png")
    for name in ("lemur_refine.jpg", "memory_vs_size.png", "refine_band_mse.png"):
        print(f"{out / name}: {(out / name).stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
