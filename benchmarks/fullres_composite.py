"""Full-resolution matting test images from a low-resolution photo set and full-resolution truth:
``python -m benchmarks.fullres_composite LOWRES_DIR GT_DIR OUT_DIR [--noise 0.01] [--mode composite|upsampled]``.

For benchmark sets whose full-resolution ground-truth mattes are at hand but whose full-resolution photos
are not (the alphamatting.com training set: the 27 high-resolution mattes are ~1 MB each, the photos ~15 MB,
and only the mattes and the ~800 px photos could be had here), this writes ``OUT_DIR/image/NAME.png`` and
``OUT_DIR/alpha/NAME.png`` (the full-resolution truth, copied as 8-bit grey) for
:mod:`benchmarks.bench_matting_real`:

* ``composite`` (default): the photo re-made at full resolution by the compositing equation the set's truth
  was measured with, ``I = a F + (1 - a) B`` with ``a`` the **real full-resolution matte**, and ``F``, ``B``
  the foreground and background colours estimated from the real low-resolution photo and its matte
  (:func:`ben_core.matting.foreground.estimate_foreground` on ``a`` and on ``1 - a``), upsampled bicubically; plus
  Gaussian noise of standard deviation ``--noise`` (0..1 units, default 0.01, about 2.5/255: a sensor's
  per-pixel noise, which the 4x reduction of the low-resolution photos averaged away) and 8-bit rounding.
  Hair, fur and edges are where the real matte puts them, at full-resolution pixel scale; colour texture finer
  than the low-resolution photo (strand-to-strand colour, background grain) is not there, nor lens blur
  beyond the matte's own.
* ``upsampled``: the real low-resolution photo upsampled bicubically to the matte's size (real colours, but
  without any detail finer than ~4 full-resolution pixels: a lower bound for a refiner that reads detail
  from the image).

Both are *made* images, to be labelled as such next to any figure measured on them. Pairs are matched by
file name (``LOWRES_DIR/image/NAME.*``, ``LOWRES_DIR/alpha/NAME.*``, ``GT_DIR/NAME.*``). Seeded: the same
inputs give the same files.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ben_core.matting.foreground import estimate_foreground

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MODES = ("composite", "upsampled")


def read_alpha(path) -> np.ndarray:
    """A matte file as float32 ``[H, W]`` in 0..1 (grey, palette or RGB(A) with equal channels: the first)."""
    from PIL import Image

    im = Image.open(path)
    if im.mode == "P":
        im = im.convert("RGB")
    a = np.asarray(im)
    a = (a[..., 0] if a.ndim == 3 else a).astype(np.float32)
    return a / (65535 if a.max() > 255 else 255)


def read_rgb(path) -> np.ndarray:
    """An RGB image as float32 ``[H, W, 3]`` in 0..1."""
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255


def _bicubic(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False).clamp(0, 1)


def make_image(image_lr: np.ndarray, alpha_lr: np.ndarray, alpha_hr: np.ndarray, mode: str = "composite",
               noise: float = 0.01, seed: int = 0) -> np.ndarray:
    """The full-resolution image (uint8 ``[H, W, 3]``) for one pair (see the module docstring).

    image_lr ``[h, w, 3]``, alpha_lr ``[h, w]``, alpha_hr ``[H, W]``: float in 0..1.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    H, W = alpha_hr.shape
    img = torch.from_numpy(image_lr).permute(2, 0, 1)[None].float()
    if mode == "upsampled":
        out = _bicubic(img, (H, W))[0]
    else:
        a = torch.from_numpy(alpha_lr)[None].float()
        fg = estimate_foreground(img, a)
        bg = estimate_foreground(img, 1 - a)  # the background is the "foreground" of 1 - alpha
        fb = _bicubic(torch.cat([fg, bg], 1), (H, W))[0]
        ah = torch.from_numpy(alpha_hr)[None].float()
        out = ah * fb[:3] + (1 - ah) * fb[3:]
        if noise > 0:
            g = torch.Generator().manual_seed(seed)
            out = out + float(noise) * torch.randn(out.shape, generator=g)
    return (out.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()


def _find(d: Path, stem: str):
    c = [p for p in d.glob(stem + ".*") if p.suffix.lower() in IMAGE_EXTS]
    return c[0] if c else None


def main(argv=None) -> None:
    """Command line entry (see the module docstring)."""
    from PIL import Image

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lowres_dir", help="folder with image/ and alpha/ (the low-resolution photos and mattes)")
    ap.add_argument("gt_dir", help="folder of full-resolution mattes, named as the photos")
    ap.add_argument("out_dir", help="writes out_dir/image/ and out_dir/alpha/")
    ap.add_argument("--mode", choices=MODES, default="composite")
    ap.add_argument("--noise", type=float, default=0.01, help="noise standard deviation, 0..1 units (composite)")
    ap.add_argument("--names", nargs="+", help="only these stems")
    args = ap.parse_args(argv)
    lo, gt, out = Path(args.lowres_dir), Path(args.gt_dir), Path(args.out_dir)
    (out / "image").mkdir(parents=True, exist_ok=True)
    (out / "alpha").mkdir(parents=True, exist_ok=True)
    for k, p in enumerate(sorted((lo / "image").iterdir())):
        if p.suffix.lower() not in IMAGE_EXTS or (args.names and p.stem not in args.names):
            continue
        pa, pg = _find(lo / "alpha", p.stem), _find(gt, p.stem)
        if pa is None or pg is None:
            print(f"skip {p.stem}: no low-resolution or full-resolution matte", file=sys.stderr)
            continue
        a_hr = read_alpha(pg)
        img = make_image(read_rgb(p), read_alpha(pa), a_hr, args.mode, args.noise, seed=k)
        Image.fromarray(img).save(out / "image" / (p.stem + ".png"))
        Image.fromarray((a_hr * 255 + 0.5).astype(np.uint8)).save(out / "alpha" / (p.stem + ".png"))
        print(f"{p.stem}: {a_hr.shape[1]}x{a_hr.shape[0]}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
