"""BENBase: the BEN2 base network (Swin-B backbone + MVANet-style decoder), returning logits.

``BENBase().load_state_dict(sd, strict=True)`` accepts the 535 keys of the official BEN2 base
checkpoint (``BEN2_Base.pth['model_state_dict']`` / ``model.safetensors``).

Forward pass for an image batch ``x [B, 3, S, S]`` (ImageNet-normalised):

1. The backbone sees ``5*B`` images of side ``S/2``: the four quadrants of every image and
   the image downscaled by 2 (bilinear), grouped per image.
2. The decoder refines the five feature levels (MCLM on the deepest one, then four
   MCRM + conv stages), stitches the quadrants back and fuses the global view.
3. A head upsamples to ``S`` with a shallow full-resolution branch (a 3x3 conv of the input)
   and a final conv gives one logit per pixel (apply ``sigmoid`` for probabilities).
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .decoder import (MCLM, MCRM, ConvNormGELU, channel_stats, from_nhwc, image_to_patches,
                      instance_norm_gelu_, stitch_nhwc, to_nhwc)
from .swin import SwinTransformer, gelu_

__all__ = ["BENBase"]


def _resize_bilinear(x: Tensor, size: Tuple[int, int]) -> Tensor:
    """Bilinear resize (``align_corners=False``, no antialias), identity when already ``size``."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def conv3x3_then_box_down(x: Tensor, weight: Tensor, bias: Tensor, factor: int) -> Tensor:
    """``bilinear_resize(conv3x3(x, pad=1), size=S/factor)`` for ``factor`` in {2, 4}, without
    the full-resolution conv output.

    Bilinear downsampling by exactly 2 or 4 (``align_corners=False``) averages a 2x2 block of
    the conv output (rows ``f*i + f/2 - 1`` and ``f*i + f/2``), so the composition is a single
    4x4 convolution with stride ``factor`` whose kernel is the 3x3 kernel box-filtered 2x2. With
    padding 1 (factor 2) or 0 (factor 4) it touches exactly the zero padding the 3x3 conv did.

    Args:
        x: ``[B, Cin, S, S]``; weight ``[Cout, Cin, 3, 3]``; bias ``[Cout]``.

    Returns:
        ``[B, Cout, S/factor, S/factor]``.
    """
    if factor not in (2, 4):
        raise ValueError(f"factor must be 2 or 4, got {factor}")
    k = weight.new_zeros(weight.shape[0], weight.shape[1], 4, 4)
    for dy in (0, 1):
        for dx in (0, 1):
            k[:, :, dy:dy + 3, dx:dx + 3] += weight
    k.mul_(0.25)
    return F.conv2d(x, k, bias, stride=factor, padding=1 if factor == 2 else 0)


def _subpixel_kernels(weight: Tensor) -> dict:
    """3x3 kernel ``[Co, Ci, 3, 3]`` -> the four 2x2 kernels of nearest-2x-upsample + conv.

    After nearest 2x upsampling, output pixel ``(2i+a, 2j+c)`` of a 3x3 conv only sees input
    rows ``i-1+a .. i+a`` and columns ``j-1+c .. j+c``, with the 3x3 taps summed accordingly
    (rows ``{0},{1,2}`` for ``a=0``, ``{0,1},{2}`` for ``a=1``; the same for columns).

    Returns:
        ``{(a, c): [Co, Ci, 2, 2]}``.
    """
    taps = ((0,), (1, 2)), ((0, 1), (2,))
    kernels = {}
    for a in (0, 1):
        rows = torch.stack([weight[:, :, list(t)].sum(2) for t in taps[a]], dim=2)  # [Co, Ci, 2, 3]
        for c in (0, 1):
            kernels[a, c] = torch.stack([rows[..., list(t)].sum(3) for t in taps[c]], dim=3)
    return kernels


def _subpixel_band(x: Tensor, kernels: dict, bias: Tensor, i0: int, i1: int):
    """Sub-pixel outputs of ``conv3x3(nearest_up2(x))`` for input rows ``i0 .. i1-1``.

    Yields ``(a, c, phase)`` with ``phase [B, Co, i1-i0, w]`` = output pixels
    ``(2i+a, 2j+c)``, channels-last.
    """
    h, w = x.shape[-2:]
    # Input rows i0-1 .. i1 and columns -1 .. w, zero outside the image (the conv's padding).
    lo, hi = max(i0 - 1, 0), min(i1 + 1, h)
    band = F.pad(x[:, :, lo:hi], (1, 1, lo - (i0 - 1), (i1 + 1) - hi))
    band = band.contiguous(memory_format=torch.channels_last)
    for (a, c), k in kernels.items():
        yield a, c, F.conv2d(band[:, :, a:a + (i1 - i0) + 1, c:c + w + 1], k, bias)


def nearest_up2_conv3x3(x: Tensor, weight: Tensor, bias: Tensor, band_rows: int = 128) -> Tensor:
    """``conv3x3(nearest_upsample_2x(x), pad=1)`` computed as four 2x2 sub-pixel convolutions.

    Needs 4/9 of the multiply-adds of the direct form and never builds the upsampled input
    (see :func:`_subpixel_kernels`). Work is done in bands of ``band_rows`` input rows.

    Args:
        x: ``[B, Cin, h, w]``; weight ``[Cout, Cin, 3, 3]``; bias ``[Cout]``.

    Returns:
        ``[B, Cout, 2h, 2w]`` (channels-last memory).
    """
    b, _, h, w = x.shape
    kernels = _subpixel_kernels(weight)
    out = None
    for i0 in range(0, h, band_rows):
        i1 = min(i0 + band_rows, h)
        for a, c, phase in _subpixel_band(x, kernels, bias, i0, i1):
            if out is None:  # dtype of the conv result (autocast may change it)
                out = torch.empty((b, weight.shape[0], 2 * h, 2 * w), dtype=phase.dtype,
                                  device=x.device, memory_format=torch.channels_last)
            out[:, :, 2 * i0 + a:2 * i1:2, c::2] = phase
    return out


def _merge_dtype(device: torch.device) -> torch.dtype:
    """Accumulator dtype for merging per-band statistics: float64, but float32 on MPS (which has no
    float64; ``.double()`` there raises)."""
    return torch.float32 if device.type == "mps" else torch.float64


def upsample_norm_gelu_conv(x: Tensor, up: nn.Conv2d, out_conv: nn.Conv2d, band_rows: int = 64,
                            eps: float = 1e-5) -> Tensor:
    """``out_conv(GELU(InstanceNorm(up(nearest_up2(x)))))`` without the full-resolution tensor.

    The full-resolution activation (``[B, C, 2h, 2w]``, 512 MB at 1024^2) is the largest
    tensor of the network. Pass 1 runs the sub-pixel convolution band by band and merges exact
    per-band statistics (Chan et al.'s parallel variance, float64; float32 on MPS); pass 2 recomputes each band
    with a one-row halo, normalises it, applies GELU and the final 3x3 conv (zero padding at
    the image border, exactly like the full-size computation).

    Args:
        x: ``[B, C, h, w]``; up: 3x3 conv ``C -> C``; out_conv: 3x3 conv ``C -> Co``.

    Returns:
        ``[B, Co, 2h, 2w]``.
    """
    b, _, h, w = x.shape
    c_out = up.weight.shape[0]
    kernels = _subpixel_kernels(up.weight)

    acc = _merge_dtype(x.device)
    count, mean, m2 = 0, None, None  # pass 1: statistics
    for i0 in range(0, h, band_rows):
        i1 = min(i0 + band_rows, h)
        for _, _, phase in _subpixel_band(x, kernels, up.bias, i0, i1):
            var_b, mean_b = channel_stats(phase)
            n_b = phase.shape[2] * phase.shape[3]
            var_b, mean_b = var_b.to(acc), mean_b.to(acc)
            if mean is None:
                count, mean, m2 = n_b, mean_b, var_b * n_b
                continue
            delta, total = mean_b - mean, count + n_b
            mean = mean + delta * (n_b / total)
            m2 = m2 + var_b * n_b + delta * delta * (count * n_b / total)
            count = total
    stat_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    rstd = torch.rsqrt(m2 / count + eps).to(stat_dtype)
    mean = mean.to(stat_dtype)

    result = None  # pass 2: recompute with a halo, normalise, GELU, final conv
    for i0 in range(0, h, band_rows):
        i1 = min(i0 + band_rows, h)
        lo, hi = max(i0 - 1, 0), min(i1 + 1, h)
        u = None
        for a, c, phase in _subpixel_band(x, kernels, up.bias, lo, hi):
            if u is None:
                u = torch.empty((b, c_out, 2 * (hi - lo), 2 * w), dtype=phase.dtype, device=x.device,
                                memory_format=torch.channels_last)
            u[:, :, a::2, c::2] = phase
        u.sub_(mean.to(u.dtype)).mul_(rstd.to(u.dtype))
        u = gelu_(u)
        # Full-resolution rows 2*lo .. 2*hi-1; padding=1 is exact at the image border and the
        # rows next to inner band edges (wrongly zero-padded) are cropped away.
        y = out_conv(u)[:, :, 2 * (i0 - lo):2 * (i1 - lo)]
        if result is None:
            result = torch.empty((b, y.shape[1], 2 * h, 2 * w), dtype=y.dtype, device=x.device)
        result[:, :, 2 * i0:2 * i1] = y
    return result


class BENBase(nn.Module):
    """The BEN2 base network.

    Args:
        embed_dim: decoder width and Swin embedding width (128 for the official model).
        depths, num_heads, window_size: Swin backbone configuration (Swin-B, window 12).

    ``forward(x)``: ``x`` float ``[B, 3, S, S]`` ImageNet-normalised (square, S a multiple of
    ``size_multiple`` = 128 and at least ``min_size`` = 384; the model is trained at 1024), returns
    logits ``[B, 1, S, S]`` of ``x``'s dtype.
    """

    #: The input side must be a multiple of this (the predictor checks its working size against it).
    size_multiple = 128
    #: Smallest side: below it MCLM's coarsest pooled view of the S/64 feature map rounds to 0x0
    #: (one attention source silently vanishes and the backward pass fails).
    min_size = 384

    def __init__(self, embed_dim: int = 128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
                 window_size: int = 12) -> None:
        super().__init__()
        c = embed_dim
        self.backbone = SwinTransformer(embed_dim, depths, num_heads, window_size)
        feats = self.backbone.num_features  # 128, 256, 512, 1024
        # Deep-supervision heads of training; kept for checkpoint compatibility, unused here.
        for i in range(5, 0, -1):
            self.add_module(f"sideout{i}", nn.Sequential(nn.Conv2d(c, 1, kernel_size=3, padding=1)))
        self.output5 = ConvNormGELU(feats[3], c)
        self.output4 = ConvNormGELU(feats[2], c)
        self.output3 = ConvNormGELU(feats[1], c)
        self.output2 = ConvNormGELU(feats[0], c)
        self.output1 = ConvNormGELU(embed_dim, c)
        self.multifieldcrossatt = MCLM(c, 1, (1, 4, 8))
        self.conv1 = ConvNormGELU(c, c)
        self.conv2 = ConvNormGELU(c, c)
        self.conv3 = ConvNormGELU(c, c)
        self.conv4 = ConvNormGELU(c, c)
        self.dec_blk1 = MCRM(c, 1, (2, 4, 8))
        self.dec_blk2 = MCRM(c, 1, (2, 4, 8))
        self.dec_blk3 = MCRM(c, 1, (2, 4, 8))
        self.dec_blk4 = MCRM(c, 1, (2, 4, 8))
        self.insmask_head = nn.Sequential(
            nn.Conv2d(c, 3 * c, kernel_size=3, padding=1), nn.InstanceNorm2d(3 * c), nn.GELU(),
            nn.Conv2d(3 * c, 3 * c, kernel_size=3, padding=1), nn.InstanceNorm2d(3 * c), nn.GELU(),
            nn.Conv2d(3 * c, c, kernel_size=3, padding=1),
        )
        self.shallow = nn.Sequential(nn.Conv2d(3, c, kernel_size=3, padding=1))
        self.upsample1 = ConvNormGELU(c, c)
        self.upsample2 = ConvNormGELU(c, c)
        self.output = nn.Sequential(nn.Conv2d(c, 1, kernel_size=3, padding=1))

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _check_input(x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"BENBase expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"BENBase expects x of shape [B, 3, S, S], got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError("BENBase got an empty batch (B = 0); pass at least one image")
        if not x.is_floating_point():
            raise TypeError(f"BENBase expects a float tensor (ImageNet-normalised), got {x.dtype}")
        h, w = x.shape[-2:]
        m = BENBase.size_multiple
        if h % m or w % m or h == 0 or w == 0:
            raise ValueError(
                f"BENBase needs a side that is a multiple of {m} (e.g. 512, 768, 1024), got {h}x{w}; "
                "resize the image first (BENPredictor does this)")
        if h < BENBase.min_size or w < BENBase.min_size:
            raise ValueError(
                f"BENBase needs a side of at least {BENBase.min_size} (512, 768 or 1024 recommended), got "
                f"{h}x{w}; resize the image up first (BENPredictor does this)")
        if h != w:
            raise ValueError(
                f"BENBase expects a square input [B, 3, S, S], got {h}x{w}; resize the image to S x S "
                "first (BENPredictor does this and resizes the alpha back)")

    @staticmethod
    def _backbone_input(x: Tensor) -> Tensor:
        """``[B, 3, S, S] -> [5B, 3, S/2, S/2]``: per image 4 quadrants (TL, TR, BL, BR) + global view."""
        b, _, h, w = x.shape
        glb = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
        views = torch.cat([image_to_patches(x), glb[:, None]], dim=1)  # [B, 5, 3, S/2, S/2]
        return views.reshape(b * 5, 3, h // 2, w // 2)

    def forward_features(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Backbone features of the 5 views of each image.

        Args:
            x: ``[B, 3, S, S]`` ImageNet-normalised.

        Returns:
            ``(f0, ..., f4)``, each ``[5B, C_k, h_k, w_k]`` with views grouped per image (4 quadrants
            then the global view): C = 128, 128, 256, 512, 1024 at S/8, S/8, S/16, S/32, S/64.
        """
        self._check_input(x)
        return self.backbone(self._backbone_input(x))

    # ------------------------------------------------------------------ decoder
    def _decode(self, feats: Tuple[Tensor, ...], b: int) -> Tensor:
        """Decoder: five feature levels of ``5B`` views -> fused map ``[B, C, S/4, S/4]``."""
        f0, f1, f2, f3, f4 = feats

        def refine(block: nn.Module, e: Tensor) -> Tensor:  # [5B, C, h, w] -> same, via NHWC
            t = to_nhwc(e)
            n, h, w, c = t.shape
            return from_nhwc(block(t.view(b, 5, h, w, c)).view(n, h, w, c))

        e5 = refine(self.multifieldcrossatt, self.output5(f4))
        e4 = self.output4(f3)
        e4 = self.conv4(refine(self.dec_blk4, e4.add_(_resize_bilinear(e5, e4.shape[-2:]))))
        e3 = self.output3(f2)
        e3 = self.conv3(refine(self.dec_blk3, e3.add_(_resize_bilinear(e4, e3.shape[-2:]))))
        e2 = self.output2(f1)
        e2 = self.conv2(refine(self.dec_blk2, e2.add_(_resize_bilinear(e3, e2.shape[-2:]))))
        e1 = self.output1(f0)
        e1 = self.conv1(refine(self.dec_blk1, e1.add_(_resize_bilinear(e2, e1.shape[-2:]))))

        t = to_nhwc(e1)
        n, h, w, c = t.shape
        t = t.view(b, 5, h, w, c)
        stitched = from_nhwc(stitch_nhwc(t[:, :4]))  # [B, C, 2h, 2w]
        return stitched.add_(_resize_bilinear(from_nhwc(t[:, 4]), stitched.shape[-2:]))

    def _head(self, x: Tensor, fused: Tensor) -> Tensor:
        """Full-resolution head: ``fused [B, C, S/4, S/4]`` + input ``x`` -> logits ``[B, 1, S, S]``.

        Upstream order: insmask_head; + shallow (bilinear to S/4); nearest 2x; upsample1;
        + shallow (bilinear to S/2); nearest 2x; upsample2; output conv. ``shallow`` is a 3x3
        conv of the input; its bilinear downsamplings and the nearest-upsample + conv pairs are
        computed in closed form (see :func:`conv3x3_then_box_down`, :func:`nearest_up2_conv3x3`),
        and the last full-resolution stage runs in bands (:func:`upsample_norm_gelu_conv`).
        """
        head = self.insmask_head
        y = instance_norm_gelu_(head[0](fused))
        y = instance_norm_gelu_(head[3](y))
        y = head[6](y)
        sw, sb = self.shallow[0].weight, self.shallow[0].bias
        y = y.add_(conv3x3_then_box_down(x, sw, sb, 4))
        y = instance_norm_gelu_(nearest_up2_conv3x3(y, self.upsample1[0].weight, self.upsample1[0].bias))
        y = y.add_(conv3x3_then_box_down(x, sw, sb, 2))
        if y.requires_grad:
            # Autograd path (weights or only the input recording grad): the banded recompute below
            # works in place and is for inference only.
            y = instance_norm_gelu_(nearest_up2_conv3x3(y, self.upsample2[0].weight, self.upsample2[0].bias))
            return self.output(y).contiguous()
        return upsample_norm_gelu_conv(y, self.upsample2[0], self.output[0])

    def forward(self, x: Tensor) -> Tensor:
        """Args:
            x: ``[B, 3, S, S]`` float, ImageNet-normalised (mean 0.485/0.456/0.406, std
                0.229/0.224/0.225), S a multiple of 128 (512, 768, 1024; native 1024).

        Returns:
            logits ``[B, 1, S, S]`` (same dtype as the computation), foreground where > 0.
            ``x`` is not modified.
        """
        self._check_input(x)
        b = x.shape[0]
        feats = self.backbone(self._backbone_input(x))
        fused = self._decode(feats, b)
        del feats
        return self._head(x, fused)
