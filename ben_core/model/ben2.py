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

from .decoder import (MCLM, MCRM, ConvNormGELU, from_nhwc, image_to_patches, instance_norm_gelu_,
                      stitch_nhwc, to_nhwc)
from .swin import SwinTransformer

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


def nearest_up2_conv3x3(x: Tensor, weight: Tensor, bias: Tensor, band_rows: int = 128) -> Tensor:
    """``conv3x3(nearest_upsample_2x(x), pad=1)`` computed as four 2x2 sub-pixel convolutions.

    After nearest 2x upsampling, output pixel ``(2i+a, 2j+c)`` of a 3x3 conv only sees input
    rows ``i-1+a .. i+a`` and columns ``j-1+c .. j+c``, with the 3x3 taps summed accordingly
    (rows ``{0},{1,2}`` for ``a=0``, ``{0,1},{2}`` for ``a=1``; the same for columns). This
    needs 4/9 of the multiply-adds and never builds the upsampled input. Work is done in bands
    of ``band_rows`` input rows so temporaries stay small.

    Args:
        x: ``[B, Cin, h, w]``; weight ``[Cout, Cin, 3, 3]``; bias ``[Cout]``.

    Returns:
        ``[B, Cout, 2h, 2w]`` (channels-last memory).
    """
    b, _, h, w = x.shape
    out = None
    taps = ((0,), (1, 2)), ((0, 1), (2,))  # 3x3 taps merged into each of the 2 sub-pixel taps
    kernels = {}
    for a in (0, 1):
        rows = torch.stack([weight[:, :, list(t)].sum(2) for t in taps[a]], dim=2)  # [Co, Ci, 2, 3]
        for c in (0, 1):
            kernels[a, c] = torch.stack([rows[..., list(t)].sum(3) for t in taps[c]], dim=3)
    for i0 in range(0, h, band_rows):
        i1 = min(i0 + band_rows, h)
        # Input rows i0-1 .. i1 (zero outside), columns -1 .. w (zero outside).
        lo, hi = max(i0 - 1, 0), min(i1 + 1, h)
        band = F.pad(x[:, :, lo:hi], (1, 1, lo - (i0 - 1), (i1 + 1) - hi))
        band = band.contiguous(memory_format=torch.channels_last)
        for (a, c), k in kernels.items():
            phase = F.conv2d(band[:, :, a:a + (i1 - i0) + 1], k, bias)  # [B, Co, i1-i0, w+1]
            if out is None:  # dtype of the conv result (autocast may change it)
                out = torch.empty((b, weight.shape[0], 2 * h, 2 * w), dtype=phase.dtype,
                                  device=x.device, memory_format=torch.channels_last)
            out[:, :, 2 * i0 + a:2 * i1:2, c::2] = phase[..., c:c + w]
    return out


class BENBase(nn.Module):
    """The BEN2 base network.

    Args:
        embed_dim: decoder width and Swin embedding width (128 for the official model).
        depths, num_heads, window_size: Swin backbone configuration (Swin-B, window 12).

    ``forward(x)``: ``x`` float ``[B, 3, S, S]`` ImageNet-normalised (S a multiple of 128; the
    model is trained at 1024), returns logits ``[B, 1, S, S]`` of ``x``'s dtype.
    """

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
        if h % 128 or w % 128 or h == 0 or w == 0:
            raise ValueError(
                f"BENBase needs a side that is a multiple of 128 (e.g. 512, 768, 1024), got {h}x{w}; "
                "resize the image first (the predictor does this)")

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
        computed in closed form (see :func:`conv3x3_then_box_down`, :func:`nearest_up2_conv3x3`).
        """
        head = self.insmask_head
        y = instance_norm_gelu_(head[0](fused))
        y = instance_norm_gelu_(head[3](y))
        y = head[6](y)
        sw, sb = self.shallow[0].weight, self.shallow[0].bias
        y = y.add_(conv3x3_then_box_down(x, sw, sb, 4))
        y = instance_norm_gelu_(nearest_up2_conv3x3(y, self.upsample1[0].weight, self.upsample1[0].bias))
        y = y.add_(conv3x3_then_box_down(x, sw, sb, 2))
        y = instance_norm_gelu_(nearest_up2_conv3x3(y, self.upsample2[0].weight, self.upsample2[0].bias))
        return self.output(y).contiguous()

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
